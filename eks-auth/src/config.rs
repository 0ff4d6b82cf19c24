//! The command line, with `EKS_AUTH_*` environment fallbacks, validated into a [`Config`]
//! before anything binds a port or makes a call.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pod_identity_contracts::constants::AUDIENCE;
use pod_identity_contracts::eks_auth::{CALLER_AUDIENCE, DEFAULT_CALLER_SERVICE_ACCOUNT};
use pod_identity_runtime::duration;
pub use pod_identity_runtime::flags::{LogFlags, ShutdownFlags};
pub use pod_identity_runtime::logger::LogFormat;
pub use pod_identity_runtime::tls::CertFiles;

pub use crate::caller::{CallerPolicy, ServiceAccountRef};

/// eks-auth: the EKS Auth `AssumeRoleForPodIdentity` API for any cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "eks-auth", version = pod_identity_contracts::version::long(), about)]
pub struct Cli {
    /// Name of the cluster this instance serves; requests for other names get
    /// ResourceNotFoundException.
    #[arg(long, env = "EKS_AUTH_CLUSTER_NAME")]
    pub cluster_name: String,

    /// ARN of the cluster, used in the `eks-cluster-arn` session tag and association ARNs.
    /// Default: `arn:<partition>:eks:<region>:<account>:cluster/<name>`, with the account and
    /// partition of eks-auth's own AWS identity (STS GetCallerIdentity at startup).
    #[arg(long, env = "EKS_AUTH_CLUSTER_ARN")]
    pub cluster_arn: Option<String>,

    /// The cluster's service-account issuer URL: tokens must carry it as `iss`, and (unless
    /// `--jwks-file` is given) its keys are found by OIDC discovery under it.
    #[arg(long, env = "EKS_AUTH_ISSUER")]
    pub issuer: String,

    /// Read the issuer's keys from this JWKS file instead of OIDC discovery (re-read on an unknown
    /// `kid`, rate-limited like a fetch).
    #[arg(long, env = "EKS_AUTH_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Extra CA bundle (PEM) to trust for OIDC discovery, e.g. the cluster CA when the issuer is
    /// the API server.
    #[arg(long, env = "EKS_AUTH_ISSUER_CA_FILE")]
    pub issuer_ca_file: Option<PathBuf>,

    /// Bearer token file sent on OIDC discovery requests (re-read each time), e.g. the pod's own
    /// service-account token when the issuer is the API server.
    #[arg(long, env = "EKS_AUTH_ISSUER_TOKEN_FILE")]
    pub issuer_token_file: Option<PathBuf>,

    /// Audience a token must contain.
    #[arg(long, default_value = AUDIENCE, env = "EKS_AUTH_AUDIENCE")]
    pub audience: String,

    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, default_value = "30s", value_parser = duration::parse, env = "EKS_AUTH_LEEWAY")]
    pub leeway: Duration,

    /// Longest token lifetime (`exp - iat`) accepted. Projected tokens live 24 h at most by
    /// default (the webhook asks for 24 h); a token minted to live longer is refused.
    #[arg(long, default_value = "24h", value_parser = duration::parse, env = "EKS_AUTH_MAX_TOKEN_LIFETIME")]
    pub max_token_lifetime: Duration,

    /// Audience of the node agents' own tokens, sent in `x-pod-identity-caller-token` (the
    /// agent's `--identity-token-file`). Must differ from --audience.
    #[arg(long, default_value = CALLER_AUDIENCE, env = "EKS_AUTH_CALLER_AUDIENCE")]
    pub caller_audience: String,

    /// ServiceAccounts (`namespace/name`, comma-separated) whose tokens may call: the agents'.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = DEFAULT_CALLER_SERVICE_ACCOUNT,
        env = "EKS_AUTH_CALLER_SERVICE_ACCOUNTS"
    )]
    pub caller_service_accounts: Vec<ServiceAccountRef>,

    /// Also serve callers that send no token of their own. Then a copied pod token buys
    /// credentials from anywhere that reaches eks-auth: for tests and bare EKS Auth clients only.
    #[arg(
        long,
        default_value_t = false,
        env = "EKS_AUTH_ALLOW_UNAUTHENTICATED_CALLERS"
    )]
    pub allow_unauthenticated_callers: bool,

    /// Also serve pod tokens that name no node (clusters before Kubernetes 1.30); such a token
    /// is not bound to the node that presents it.
    #[arg(
        long,
        default_value_t = false,
        env = "EKS_AUTH_ALLOW_TOKENS_WITHOUT_NODE"
    )]
    pub allow_tokens_without_node: bool,

    /// Shortest time between two key fetches triggered by unknown `kid`s (a flood of random
    /// `kid`s cannot hammer the issuer).
    #[arg(long, default_value = "30s", value_parser = duration::parse, env = "EKS_AUTH_JWKS_MIN_REFRESH")]
    pub jwks_min_refresh: Duration,

    /// Periodic key refresh.
    #[arg(long, default_value = "1h", value_parser = duration::parse, env = "EKS_AUTH_JWKS_REFRESH")]
    pub jwks_refresh: Duration,

    /// The associations file (YAML, hot-reloaded).
    #[arg(long, env = "EKS_AUTH_ASSOCIATIONS")]
    pub associations: Option<PathBuf>,

    /// Also watch `PodIdentityAssociation` custom resources (podidentity.dev) through the
    /// Kubernetes API (in-cluster config or kubeconfig). A file entry wins over a resource.
    /// Spelled as the webhook's flag; `--watch-crds`, its former name, still works.
    #[arg(
        long,
        alias = "watch-crds",
        default_value_t = false,
        env = "EKS_AUTH_WATCH_CUSTOM_RESOURCES"
    )]
    pub watch_custom_resources: bool,

    /// Before each exchange, ask the API server (TokenReview) whether the token is still valid:
    /// a bound token dies with its pod. Needs a Kubernetes client (in-cluster or kubeconfig) and
    /// `create` on `tokenreviews`. Fails closed: no answer, no credentials.
    #[arg(long, default_value_t = false, env = "EKS_AUTH_TOKEN_REVIEW")]
    pub token_review: bool,

    /// How often the associations and role policy files are checked for changes.
    #[arg(long, default_value = "5s", value_parser = duration::parse, env = "EKS_AUTH_ASSOCIATIONS_POLL")]
    pub associations_poll: Duration,

    /// STS endpoint override (moto in tests, the lab's STS). Default: the SDK's regional one.
    #[arg(long, env = "EKS_AUTH_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,

    /// Address of the API listener.
    #[arg(long, default_value = "0.0.0.0", env = "EKS_AUTH_BIND_ADDRESS")]
    pub bind_address: IpAddr,

    /// Port of the API listener (0: any free port, logged at startup).
    #[arg(long, default_value_t = 8080, env = "EKS_AUTH_PORT")]
    pub port: u16,

    /// PEM certificate chain of the API listener, which then serves HTTPS; re-read when it
    /// changes. Give it with --tls-key. Without both the API is plain HTTP, and pod tokens and
    /// the credentials they buy cross the network in clear.
    #[arg(long, env = "EKS_AUTH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert; re-read when it changes.
    #[arg(long, env = "EKS_AUTH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked for changes.
    #[arg(long, default_value = "5s", value_parser = duration::parse, env = "EKS_AUTH_TLS_POLL")]
    pub tls_poll: Duration,

    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, default_value = "0.0.0.0", env = "EKS_AUTH_METRICS_ADDRESS")]
    pub metrics_address: IpAddr,

    /// Port of the admin listener (0: any free port).
    #[arg(long, default_value_t = 9090, env = "EKS_AUTH_METRICS_PORT")]
    pub metrics_port: u16,

    #[command(flatten)]
    pub shutdown: ShutdownFlags,

    #[command(flatten)]
    pub log: LogFlags,

    /// The operator's role policy (YAML, hot-reloaded like --associations): which role ARNs each
    /// namespace's associations may name. An exchange for any other role is refused before STS.
    /// Required unless --allow-any-role.
    #[arg(long, env = "EKS_AUTH_ROLE_POLICY")]
    pub role_policy: Option<PathBuf>,

    /// Run without a role policy: whoever can write an association can then name any role that
    /// trusts eks-auth. An explicit choice, so forgetting --role-policy never means "allow all".
    #[arg(long, default_value_t = false, env = "EKS_AUTH_ALLOW_ANY_ROLE")]
    pub allow_any_role: bool,
}

/// Why a configuration was refused. The binary exits 64 (EX_USAGE) on these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--cluster-name {0:?} is not a cluster name (1-100 letters, digits, '-' or '_', starting with a letter or digit)"
    )]
    BadClusterName(String),
    #[error(
        "--cluster-arn {0:?} is not an EKS cluster ARN (arn:<partition>:eks:<region>:<account>:cluster/<name>)"
    )]
    BadClusterArn(String),
    #[error("--cluster-arn {arn:?} names cluster {in_arn:?}, not --cluster-name {name:?}")]
    ClusterArnMismatch {
        arn: String,
        in_arn: String,
        name: String,
    },
    #[error("--issuer {0:?} must be an http(s) URL without a query or fragment")]
    BadIssuer(String),
    #[error("--sts-endpoint {0:?} is not an http(s) URL")]
    BadStsEndpoint(String),
    #[error("--audience must not be empty")]
    EmptyAudience,
    /// With one audience, a pod token could pass as an agent's.
    #[error("--caller-audience must be non-empty and differ from --audience")]
    BadCallerAudience,
    #[error(
        "--caller-service-accounts is empty: no agent could call (give --allow-unauthenticated-callers to serve callers without a token)"
    )]
    NoCallers,
    #[error("no associations source: give --associations FILE, --watch-custom-resources, or both")]
    NoAssociations,
    #[error("--{0} must be more than 0")]
    Zero(&'static str),
    /// One half of the certificate pair: serving plain HTTP instead would hide the mistake.
    #[error("{0} is set but {1} is not: give both to serve HTTPS, or neither for plain HTTP")]
    HalfTls(&'static str, &'static str),
    #[error("{flag} {path}: {reason}")]
    File {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "no role policy: give --role-policy FILE (which roles each namespace may get), or --allow-any-role to let any association name any role eks-auth can assume"
    )]
    NoRolePolicy,
    #[error("--role-policy and --allow-any-role contradict each other; give one")]
    RolePolicyAndAllowAny,
}

/// Which roles associations may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolePolicyConfig {
    /// The operator's policy file (`--role-policy`).
    File(PathBuf),
    /// Any role (`--allow-any-role`).
    AllowAny,
}

/// The parts of an EKS cluster ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterArn {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub name: String,
}

impl ClusterArn {
    pub fn parse(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "eks" {
            return None;
        }
        let name = parts[5].strip_prefix("cluster/")?;
        let ok = parts[1].starts_with("aws")
            && !parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].bytes().all(|b| b.is_ascii_digit())
            && is_cluster_name(name);
        ok.then(|| ClusterArn {
            partition: parts[1].into(),
            region: parts[3].into(),
            account: parts[4].into(),
            name: name.into(),
        })
    }

    pub fn arn(&self) -> String {
        format!(
            "arn:{}:eks:{}:{}:cluster/{}",
            self.partition, self.region, self.account, self.name
        )
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster_name: String,
    pub cluster_arn: Option<ClusterArn>,
    pub issuer: String,
    pub key_source: KeySourceConfig,
    pub audience: String,
    pub leeway: Duration,
    pub max_token_lifetime: Duration,
    pub jwks_min_refresh: Duration,
    pub jwks_refresh: Duration,
    pub associations: Option<PathBuf>,
    pub watch_custom_resources: bool,
    pub token_review: bool,
    pub callers: CallerPolicy,
    pub associations_poll: Duration,
    pub sts_endpoint: Option<String>,
    pub bind_address: IpAddr,
    pub port: u16,
    /// The API listener's certificate: HTTPS when set, plain HTTP otherwise.
    pub tls: Option<CertFiles>,
    pub tls_poll: Duration,
    pub metrics_address: IpAddr,
    pub metrics_port: u16,
    pub shutdown_grace: Duration,
    pub role_policy: RolePolicyConfig,
}

/// Where the issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySourceConfig {
    File(PathBuf),
    Discovery {
        ca_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
    },
}

/// EKS cluster names: 1-100 of `[0-9A-Za-z_-]`, starting with a letter or digit.
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://"))
        && s.len() > "https://".len()
        && !s.contains(char::is_whitespace)
}

fn readable(flag: &'static str, path: &PathBuf) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map_err(|e| ConfigError::File {
            flag,
            path: path.clone(),
            reason: e.to_string(),
        })
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(ConfigError::File {
                    flag,
                    path: path.clone(),
                    reason: "not a regular file".into(),
                })
            }
        })
}

impl Cli {
    pub fn validate(self) -> Result<Config, ConfigError> {
        if !is_cluster_name(&self.cluster_name) {
            return Err(ConfigError::BadClusterName(self.cluster_name));
        }
        let cluster_arn = match &self.cluster_arn {
            None => None,
            Some(raw) => {
                let arn = ClusterArn::parse(raw)
                    .ok_or_else(|| ConfigError::BadClusterArn(raw.clone()))?;
                if arn.name != self.cluster_name {
                    return Err(ConfigError::ClusterArnMismatch {
                        arn: raw.clone(),
                        in_arn: arn.name,
                        name: self.cluster_name,
                    });
                }
                Some(arn)
            }
        };
        if !is_http_url(&self.issuer) || self.issuer.contains(['?', '#']) {
            return Err(ConfigError::BadIssuer(self.issuer));
        }
        if let Some(ep) = &self.sts_endpoint
            && !is_http_url(ep)
        {
            return Err(ConfigError::BadStsEndpoint(ep.clone()));
        }
        if self.audience.trim().is_empty() {
            return Err(ConfigError::EmptyAudience);
        }
        if self.caller_audience.trim().is_empty() || self.caller_audience == self.audience {
            return Err(ConfigError::BadCallerAudience);
        }
        if self.caller_service_accounts.is_empty() && !self.allow_unauthenticated_callers {
            return Err(ConfigError::NoCallers);
        }
        for (flag, v) in [
            ("jwks-refresh", self.jwks_refresh),
            ("associations-poll", self.associations_poll),
            ("tls-poll", self.tls_poll),
            ("max-token-lifetime", self.max_token_lifetime),
        ] {
            if v.is_zero() {
                return Err(ConfigError::Zero(flag));
            }
        }
        match &self.associations {
            Some(path) => readable("--associations", path)?,
            None if !self.watch_custom_resources => return Err(ConfigError::NoAssociations),
            None => {}
        }
        let key_source = match self.jwks_file {
            Some(path) => {
                readable("--jwks-file", &path)?;
                KeySourceConfig::File(path)
            }
            None => {
                if let Some(p) = &self.issuer_ca_file {
                    readable("--issuer-ca-file", p)?;
                }
                if let Some(p) = &self.issuer_token_file {
                    readable("--issuer-token-file", p)?;
                }
                KeySourceConfig::Discovery {
                    ca_file: self.issuer_ca_file,
                    token_file: self.issuer_token_file,
                }
            }
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(CertFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::HalfTls("--tls-cert", "--tls-key")),
            (None, Some(_)) => return Err(ConfigError::HalfTls("--tls-key", "--tls-cert")),
        };
        let role_policy = match (self.role_policy, self.allow_any_role) {
            (Some(path), false) => {
                readable("--role-policy", &path)?;
                RolePolicyConfig::File(path)
            }
            (None, true) => RolePolicyConfig::AllowAny,
            (None, false) => return Err(ConfigError::NoRolePolicy),
            (Some(_), true) => return Err(ConfigError::RolePolicyAndAllowAny),
        };
        Ok(Config {
            cluster_name: self.cluster_name,
            cluster_arn,
            issuer: self.issuer,
            key_source,
            audience: self.audience,
            leeway: self.leeway,
            max_token_lifetime: self.max_token_lifetime,
            jwks_min_refresh: self.jwks_min_refresh,
            jwks_refresh: self.jwks_refresh,
            associations: self.associations,
            watch_custom_resources: self.watch_custom_resources,
            token_review: self.token_review,
            callers: CallerPolicy {
                audience: self.caller_audience,
                service_accounts: self.caller_service_accounts,
                allow_unauthenticated: self.allow_unauthenticated_callers,
                allow_tokens_without_node: self.allow_tokens_without_node,
            },
            associations_poll: self.associations_poll,
            sts_endpoint: self.sts_endpoint,
            bind_address: self.bind_address,
            port: self.port,
            tls,
            tls_poll: self.tls_poll,
            metrics_address: self.metrics_address,
            metrics_port: self.metrics_port,
            shutdown_grace: self.shutdown.shutdown_grace,
            role_policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let assoc = dir.path().join("a.yaml");
        std::fs::write(&assoc, "associations: []").unwrap();
        let assoc = assoc.to_str().unwrap().to_string();
        let mut argv = vec![
            "eks-auth",
            "--cluster-name",
            "lab",
            "--issuer",
            "https://issuer.test",
            "--associations",
            &assoc,
        ];
        argv.extend_from_slice(args);
        if !args.contains(&"--role-policy") {
            argv.push("--allow-any-role");
        }
        let cli: Cli =
            pod_identity_runtime::flags::try_parse("EKS_AUTH", argv).map_err(|e| e.to_string())?;
        cli.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.metrics_port, 9090);
        assert_eq!(c.audience, "pods.eks.amazonaws.com");
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert!(matches!(c.key_source, KeySourceConfig::Discovery { .. }));
        assert!(c.cluster_arn.is_none());
        assert!(c.tls.is_none(), "plain HTTP unless asked");
        assert_eq!(c.tls_poll, Duration::from_secs(5));
        assert_eq!(c.max_token_lifetime, Duration::from_secs(86_400));
        assert_eq!(c.jwks_refresh, Duration::from_secs(3600));
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
    }

    #[test]
    fn durations_are_go_durations() {
        let c = parse(&["--leeway", "1m30s", "--jwks-refresh", "1.5h"]).unwrap();
        assert_eq!(c.leeway, Duration::from_secs(90));
        assert_eq!(c.jwks_refresh, Duration::from_secs(5400));
        let err = parse(&["--leeway", "30"]).unwrap_err();
        assert!(err.contains("missing unit"), "{err}");
    }

    #[test]
    fn tls_takes_both_files_or_neither() {
        let c = parse(&["--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key"]).unwrap();
        assert_eq!(
            c.tls,
            Some(CertFiles {
                cert: "/tls/tls.crt".into(),
                key: "/tls/tls.key".into()
            })
        );
        for (args, want) in [
            (
                ["--tls-cert", "/tls/tls.crt"],
                "--tls-cert is set but --tls-key is not",
            ),
            (
                ["--tls-key", "/tls/tls.key"],
                "--tls-key is set but --tls-cert is not",
            ),
            (["--tls-poll", "0s"], "--tls-poll must be more than 0"),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn cluster_arn_must_match_the_name() {
        let c = parse(&[
            "--cluster-arn",
            "arn:aws:eks:us-west-2:111122223333:cluster/lab",
        ])
        .unwrap();
        let arn = c.cluster_arn.unwrap();
        assert_eq!(arn.account, "111122223333");
        assert_eq!(arn.arn(), "arn:aws:eks:us-west-2:111122223333:cluster/lab");
        let e = parse(&[
            "--cluster-arn",
            "arn:aws:eks:us-west-2:111122223333:cluster/prod",
        ])
        .unwrap_err();
        assert!(e.contains("names cluster"), "{e}");
        assert!(
            parse(&["--cluster-arn", "arn:aws:iam::1:role/x"])
                .unwrap_err()
                .contains("not an EKS cluster ARN")
        );
    }

    #[test]
    fn refuses_bad_configuration_with_a_reason() {
        for (args, want) in [
            (vec!["--issuer", "issuer.test"], "--issuer"),
            (vec!["--issuer", "https://x/?a=b"], "--issuer"),
            (vec!["--sts-endpoint", "sts:443"], "--sts-endpoint"),
            (vec!["--jwks-file", "/nonexistent/jwks.json"], "--jwks-file"),
            (vec!["--audience", " "], "--audience"),
            (vec!["--jwks-refresh-seconds", "0"], "jwks-refresh-seconds"),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        let cli = Cli::try_parse_from([
            "eks-auth",
            "--cluster-name",
            "bad name",
            "--issuer",
            "https://i",
            "--associations",
            "/nonexistent",
        ])
        .unwrap();
        assert!(cli.validate().unwrap_err().to_string().contains("cluster"));
        let cli = Cli::try_parse_from([
            "eks-auth",
            "--cluster-name",
            "lab",
            "--issuer",
            "https://i",
            "--associations",
            "/nonexistent",
        ])
        .unwrap();
        assert!(
            cli.validate()
                .unwrap_err()
                .to_string()
                .contains("--associations /nonexistent")
        );
    }

    #[test]
    fn role_policy_is_a_file_or_an_explicit_allow_any() {
        assert_eq!(parse(&[]).unwrap().role_policy, RolePolicyConfig::AllowAny);
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("role-policy.yaml");
        std::fs::write(&policy, "rules: []").unwrap();
        let policy = policy.to_str().unwrap();
        assert_eq!(
            parse(&["--role-policy", policy]).unwrap().role_policy,
            RolePolicyConfig::File(policy.into())
        );
        for (args, want) in [
            (
                vec!["--role-policy", "/nonexistent/p.yaml"],
                "--role-policy /nonexistent/p.yaml",
            ),
            (
                vec!["--role-policy", policy, "--allow-any-role"],
                "contradict",
            ),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        let cli = Cli::try_parse_from([
            "eks-auth",
            "--cluster-name",
            "lab",
            "--issuer",
            "https://i",
            "--watch-crds",
        ])
        .unwrap();
        assert!(
            cli.validate()
                .unwrap_err()
                .to_string()
                .starts_with("no role policy: give --role-policy FILE")
        );
    }

    #[test]
    fn cluster_names() {
        for ok in ["lab", "a", "prod_1", "My-Cluster"] {
            assert!(is_cluster_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a b", "a/b", &"x".repeat(101)] {
            assert!(!is_cluster_name(bad), "{bad}");
        }
    }
}
