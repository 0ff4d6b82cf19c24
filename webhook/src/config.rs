//! The command line: `serve`, `mutate`, `audit`, `version`, each flag with a
//! `POD_IDENTITY_WEBHOOK_*` environment fallback, validated into a config before anything binds
//! a port or reads a pod.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pod_identity_runtime::duration;
pub use pod_identity_runtime::flags::{LogFlags, ShutdownFlags};
pub use pod_identity_runtime::logger::LogFormat;

use crate::mutate::Settings;

/// Default HTTPS port of `/mutate`.
pub const DEFAULT_PORT: u16 = 8443;
/// Default plain-HTTP port of `/healthz`, `/readyz`, `/metrics`.
pub const DEFAULT_METRICS_PORT: u16 = 9090;
/// Default largest AdmissionReview body (the API server's own request limit is 3 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// EKS Pod Identity webhook: injects the Pod Identity token and URL into pods whose
/// ServiceAccount has an association.
#[derive(Debug, Parser)]
#[command(name = "pod-identity-webhook", version = pod_identity_contracts::version::long(), about)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogFlags,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve `POST /mutate` over HTTPS, probes and metrics over plain HTTP.
    Serve(ServeArgs),
    /// Mutate one pod offline, through the same code path as `serve`; print the pod or the patch.
    Mutate(MutateArgs),
    /// List running pods whose ServiceAccount has an association but which lack the injection.
    Audit(AuditArgs),
    /// Without cert-manager: keep the serving certificate in a Secret (made or renewed as
    /// needed) and its CA in the MutatingWebhookConfiguration's caBundle; run before `serve`.
    Certs(CertsArgs),
    /// Print the version.
    Version,
}

/// What is injected; shared by every subcommand so `mutate` and `audit` see what `serve` does.
#[derive(Debug, Clone, Args)]
pub struct InjectionArgs {
    /// Region injected as AWS_DEFAULT_REGION and AWS_REGION (into containers that set neither).
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_AWS_DEFAULT_REGION")]
    pub aws_default_region: Option<String>,

    /// Inject the IPv6 agent URL http://[fd00:ec2::23]/v1/credentials (IPv6 clusters).
    #[arg(long, default_value_t = false, env = "POD_IDENTITY_WEBHOOK_IPV6")]
    pub ipv6: bool,

    /// The operator's role policy (YAML; `serve` re-reads it when it changes), the file eks-auth
    /// reads: a pod whose association names a role it does not allow the pod's namespace is not
    /// injected. Without it every association is injected (eks-auth still enforces its own).
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_ROLE_POLICY")]
    pub role_policy: Option<PathBuf>,
}

impl InjectionArgs {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let region = match self.aws_default_region.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(r)
                if r.len() <= 32
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Some(r.to_string())
            }
            Some(r) => return Err(ConfigError::BadRegion(r.to_string())),
        };
        Ok(Settings {
            region,
            ipv6: self.ipv6,
        })
    }
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// PEM certificate chain of the HTTPS listener; re-read when it changes.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key of the HTTPS listener; re-read when it changes.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_TLS_KEY")]
    pub tls_key: PathBuf,

    /// Associations file (YAML); re-read when it changes.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_ASSOCIATIONS")]
    pub associations: Option<PathBuf>,

    /// Also watch PodIdentityAssociation custom resources (in-cluster config or kubeconfig).
    /// On a conflict with the file, the file's entry wins.
    #[arg(
        long,
        default_value_t = false,
        env = "POD_IDENTITY_WEBHOOK_WATCH_CUSTOM_RESOURCES"
    )]
    pub watch_custom_resources: bool,

    /// Address of both listeners.
    #[arg(long, default_value = "0.0.0.0", env = "POD_IDENTITY_WEBHOOK_ADDRESS")]
    pub address: IpAddr,

    /// HTTPS port of `POST /mutate`.
    #[arg(long, default_value_t = DEFAULT_PORT, env = "POD_IDENTITY_WEBHOOK_PORT")]
    pub port: u16,

    /// Plain-HTTP port of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value_t = DEFAULT_METRICS_PORT, env = "POD_IDENTITY_WEBHOOK_METRICS_PORT")]
    pub metrics_port: u16,

    /// Largest AdmissionReview body accepted; larger ones get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES, env = "POD_IDENTITY_WEBHOOK_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,

    /// How often the certificate and associations files are checked for changes (5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = duration::parse, env = "POD_IDENTITY_WEBHOOK_RELOAD_INTERVAL")]
    pub reload_interval: Duration,

    #[command(flatten)]
    pub shutdown: ShutdownFlags,

    #[command(flatten)]
    pub injection: InjectionArgs,
}

/// Validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub associations: Option<PathBuf>,
    pub watch_custom_resources: bool,
    pub address: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    pub max_body_bytes: usize,
    pub reload_interval: Duration,
    pub shutdown_grace: Duration,
    pub settings: Settings,
    pub role_policy: Option<PathBuf>,
}

impl ServeArgs {
    pub fn validate(self) -> Result<ServeConfig, ConfigError> {
        let settings = self.injection.settings()?;
        if self.associations.is_none() && !self.watch_custom_resources {
            return Err(ConfigError::NoAssociationSource);
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::TinyBody);
        }
        if self.reload_interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        if self.port != 0 && self.port == self.metrics_port {
            return Err(ConfigError::SamePort(self.port));
        }
        Ok(ServeConfig {
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            associations: self.associations,
            watch_custom_resources: self.watch_custom_resources,
            address: self.address,
            port: self.port,
            metrics_port: self.metrics_port,
            max_body_bytes: self.max_body_bytes,
            reload_interval: self.reload_interval,
            shutdown_grace: self.shutdown.shutdown_grace,
            settings,
            role_policy: self.injection.role_policy,
        })
    }
}

/// What `mutate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MutateOutput {
    /// The mutated pod, as YAML.
    Pod,
    /// The JSONPatch the webhook would return, as JSON.
    Patch,
}

/// Flags of `mutate`.
#[derive(Debug, Clone, Args)]
pub struct MutateArgs {
    /// Associations file (YAML).
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_ASSOCIATIONS")]
    pub associations: PathBuf,

    /// The pod (YAML or JSON); `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Namespace of the pod when its metadata names none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,

    /// Print the mutated pod (YAML) or the JSONPatch.
    #[arg(short = 'o', long, default_value = "pod")]
    pub output: MutateOutput,

    #[command(flatten)]
    pub injection: InjectionArgs,
}

/// How `audit` prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditOutput {
    /// One line per pod.
    Text,
    /// One JSON object per pod, one per line.
    Json,
}

/// Flags of `audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Associations file (YAML), the same one `serve` reads.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_ASSOCIATIONS")]
    pub associations: Option<PathBuf>,

    /// Also read PodIdentityAssociation custom resources from the cluster (file wins on conflicts,
    /// as in `serve`).
    #[arg(long, default_value_t = false)]
    pub watch_custom_resources: bool,

    /// Only this namespace (default: all namespaces).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, default_value = "text")]
    pub output: AuditOutput,

    /// Include pods that have finished (Succeeded or Failed).
    #[arg(long, default_value_t = false)]
    pub include_finished: bool,

    #[command(flatten)]
    pub injection: InjectionArgs,
}

/// Flags of `certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Namespace of the Secret and the Service.
    #[arg(
        long,
        default_value = "pod-identity-system",
        env = "POD_IDENTITY_WEBHOOK_NAMESPACE"
    )]
    pub namespace: String,

    /// The `kubernetes.io/tls` Secret that holds the certificate (made if absent).
    #[arg(
        long,
        default_value = "pod-identity-webhook-tls",
        env = "POD_IDENTITY_WEBHOOK_TLS_SECRET"
    )]
    pub secret: String,

    /// The Service the API server calls; the certificate names its DNS names.
    #[arg(
        long,
        default_value = "pod-identity-webhook",
        env = "POD_IDENTITY_WEBHOOK_SERVICE"
    )]
    pub service: String,

    /// The MutatingWebhookConfiguration whose caBundle gets the CA.
    #[arg(
        long,
        default_value = "pod-identity-webhook",
        env = "POD_IDENTITY_WEBHOOK_CONFIGURATION"
    )]
    pub webhook_configuration: String,

    /// Another DNS name for the certificate (repeatable).
    #[arg(long)]
    pub dns_name: Vec<String>,

    /// An IP address for the certificate (repeatable), for a webhook the API server calls by URL.
    #[arg(long)]
    pub ip_address: Vec<IpAddr>,

    /// Also write tls.crt, tls.key and ca.crt here, for `serve --tls-cert/--tls-key`.
    #[arg(long, env = "POD_IDENTITY_WEBHOOK_CERTS_WRITE_DIR")]
    pub write_dir: Option<PathBuf>,
}

/// Why a configuration was refused. The binary exits 64 (EX_USAGE) on these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--aws-default-region {0:?} is not a region name (like us-west-2)")]
    BadRegion(String),
    #[error("no association source: give --associations FILE, --watch-custom-resources, or both")]
    NoAssociationSource,
    #[error("--max-body-bytes must be at least 1024")]
    TinyBody,
    #[error("--reload-interval must be more than 0")]
    ZeroInterval,
    #[error("--port and --metrics-port are both {0}; the probes need their own plain-HTTP port")]
    SamePort(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeConfig, String> {
        let mut argv = vec![
            "pod-identity-webhook",
            "serve",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--associations",
            "a.yaml",
        ];
        argv.extend_from_slice(args);
        let cli: Cli = pod_identity_runtime::flags::try_parse("POD_IDENTITY_WEBHOOK", argv)
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Serve(s) => s.validate().map_err(|e| e.to_string()),
            _ => Err("not serve".into()),
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let c = serve(&[]).unwrap();
        assert_eq!((c.port, c.metrics_port), (8443, 9090));
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.settings, Settings::default());
        let c = serve(&["--aws-default-region", "eu-west-1", "--ipv6"]).unwrap();
        assert_eq!(c.settings.region.as_deref(), Some("eu-west-1"));
        assert!(c.settings.ipv6);
        assert!(
            serve(&["--aws-default-region", "EU WEST"])
                .unwrap_err()
                .contains("region")
        );
        assert!(
            serve(&["--port", "9000", "--metrics-port", "9000"])
                .unwrap_err()
                .contains("own")
        );
        assert!(
            serve(&["--reload-interval", "soon"])
                .unwrap_err()
                .contains("unit")
        );
        let no_source = Cli::try_parse_from([
            "pod-identity-webhook",
            "serve",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ])
        .unwrap();
        match no_source.command {
            Command::Serve(s) => assert!(
                s.validate()
                    .unwrap_err()
                    .to_string()
                    .contains("--associations")
            ),
            _ => unreachable!(),
        }
        assert!(
            Cli::try_parse_from(["pod-identity-webhook", "serve"])
                .unwrap_err()
                .to_string()
                .contains("--tls-cert")
        );
    }

    #[test]
    fn durations_are_go_durations() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.reload_interval, Duration::from_secs(5));
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
        let c = serve(&["--reload-interval", "1.5s", "--shutdown-grace", "1m"]).unwrap();
        assert_eq!(c.reload_interval, Duration::from_millis(1500));
        assert_eq!(c.shutdown_grace, Duration::from_secs(60));
        for bad in ["", "5", "s", "5x"] {
            assert!(serve(&["--reload-interval", bad]).is_err(), "{bad}");
        }
    }
}
