//! The command line: the official agent's subcommands, flags and defaults, with env fallbacks,
//! validated into a [`ServerConfig`] before anything binds a port.

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use pod_identity_contracts::constants::{
    AGENT_IPV4, AGENT_IPV6, AGENT_IPV6_HOST, AGENT_METRICS_PORT, AGENT_PORT, AGENT_PROBE_PORT,
};
use pod_identity_runtime::duration;
pub use pod_identity_runtime::flags::{LogFlags, ShutdownFlags};
pub use pod_identity_runtime::logger::LogFormat;

/// EKS Pod Identity Agent: serves pods' AWS credentials from the node.
#[derive(Debug, Parser)]
#[command(name = "pod-identity-agent", version = pod_identity_contracts::version::long(), about)]
pub struct Cli {
    /// `-v`/`--verbosity` as the official agent (panic, fatal, error, warn, info, debug,
    /// trace), also spelled `--log-level` as every service here; `--log-format`.
    #[command(flatten)]
    pub log: LogFlags,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve credentials to pods on the bind hosts.
    Server(ServerArgs),
    /// Prepare the node: the link-local addresses the agent serves on (run as an init container).
    Initialize(InitializeArgs),
    /// Print the version.
    Version,
}

/// Flags of `server`, named and defaulted as in the official agent.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Name of the EKS cluster the agent runs on.
    #[arg(short = 'c', long, env = "POD_IDENTITY_AGENT_CLUSTER_NAME")]
    pub cluster_name: String,

    /// Listening port of the credentials server.
    #[arg(short = 'p', long, default_value_t = AGENT_PORT, env = "POD_IDENTITY_AGENT_PORT")]
    pub port: u16,

    /// Health and readiness port, on localhost.
    #[arg(long, default_value_t = AGENT_PROBE_PORT, env = "POD_IDENTITY_AGENT_PROBE_PORT")]
    pub probe_port: u16,

    /// Metrics listening address.
    #[arg(
        long,
        default_value = "0.0.0.0",
        env = "POD_IDENTITY_AGENT_METRICS_ADDRESS"
    )]
    pub metrics_address: IpAddr,

    /// Metrics listening port.
    #[arg(long, default_value_t = AGENT_METRICS_PORT, env = "POD_IDENTITY_AGENT_METRICS_PORT")]
    pub metrics_port: u16,

    /// Hosts to bind the credentials server to. Repeatable; the first use replaces the defaults.
    #[arg(
        short = 'b',
        long = "bind-hosts",
        action = ArgAction::Append,
        default_values_t = [AGENT_IPV4.to_string(), AGENT_IPV6_HOST.to_string()],
        env = "POD_IDENTITY_AGENT_BIND_HOSTS",
        value_delimiter = ','
    )]
    pub bind_hosts: Vec<String>,

    /// Override for the EKS Auth endpoint (e.g. this project's eks-auth off EKS).
    #[arg(long, env = "POD_IDENTITY_AGENT_ENDPOINT")]
    pub endpoint: Option<String>,

    /// The agent's own projected service-account token (audience `eks-auth.podidentity.dev`),
    /// sent to eks-auth with each exchange so that eks-auth serves a pod token only through the
    /// agent on the pod's node. Off EKS only; re-read for every exchange.
    #[arg(long, env = "POD_IDENTITY_AGENT_IDENTITY_TOKEN_FILE")]
    pub identity_token_file: Option<std::path::PathBuf>,

    /// Longest time credentials are served before they are renewed (Go duration: 3h, 90m). 0 disables caching.
    #[arg(long, default_value = "3h", value_parser = duration::parse, env = "POD_IDENTITY_AGENT_MAX_CREDENTIAL_RETENTION")]
    pub max_credential_retention_before_renewal: Duration,

    /// Most distinct credentials kept. 0 disables caching.
    #[arg(
        long,
        default_value_t = 2000,
        env = "POD_IDENTITY_AGENT_MAX_CACHE_SIZE"
    )]
    pub max_cache_size: usize,

    /// Most background refreshes per second sent to EKS Auth. Requests from pods are never refused for it.
    #[arg(long, default_value_t = 3, env = "POD_IDENTITY_AGENT_MAX_SERVICE_QPS")]
    pub max_service_qps: u32,

    /// Re-read the node's shared credentials file every minute (hybrid nodes). Accepts `--rotate-credentials true` as the official chart passes it.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set, env = "POD_IDENTITY_AGENT_ROTATE_CREDENTIALS")]
    pub rotate_credentials: bool,

    /// Allow bind hosts other than loopback and the Pod Identity addresses. Dangerous: a routable
    /// address would offer every pod's credentials to the network.
    #[arg(long, default_value_t = false, hide = true)]
    pub allow_any_bind_host: bool,

    /// A client must send its request headers within this (slow-client protection).
    #[arg(long, default_value = "5s", value_parser = duration::parse, hide = true)]
    pub header_read_timeout: Duration,

    /// How often the background sweep refreshes due entries and drops those of gone pods.
    #[arg(long, default_value = "5s", value_parser = duration::parse, hide = true)]
    pub refresh_interval: Duration,

    #[command(flatten)]
    pub shutdown: ShutdownFlags,

    /// Threads serving requests [default: the node's CPUs, at most 2]. A cache hit costs about
    /// 12 µs of CPU, so two threads serve over 100,000 a second; each thread more keeps memory of
    /// its own (with 2000 identities cached, 8 threads held 2.8 MiB more than 2, 32 held 6.4).
    #[arg(long, env = "POD_IDENTITY_AGENT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

/// Default of `--worker-threads`.
pub const MAX_DEFAULT_WORKER_THREADS: usize = 2;

/// Flags of `initialize`.
#[derive(Debug, Clone, Args)]
pub struct InitializeArgs {
    /// Name of the link that holds the agent's addresses.
    #[arg(
        long,
        default_value = "pod-id-link0",
        env = "POD_IDENTITY_AGENT_LINK_NAME"
    )]
    pub link_name: String,

    /// Kind of link to create when it is absent: auto (dummy, else a veth pair where the kernel
    /// has no dummy links), dummy, veth, or existing (made by the operator; never created).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "POD_IDENTITY_AGENT_LINK_KIND"
    )]
    pub link_kind: crate::initialize::LinkKind,
}

/// Why a configuration was refused. The binary exits 64 (EX_USAGE) on these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--cluster-name must not be empty")]
    EmptyClusterName,
    #[error("--bind-hosts: {0:?} is not an IP address (IPv6 in brackets, e.g. [fd00:ec2::23])")]
    BadBindHost(String),
    #[error(
        "--bind-hosts: {0} is neither loopback nor a Pod Identity address ({AGENT_IPV4}, {AGENT_IPV6}); serving credentials on it would expose them to the network"
    )]
    UnsafeBindHost(IpAddr),
    #[error("--bind-hosts must name at least one host")]
    NoBindHosts,
    #[error("--endpoint {0:?} is not an http(s) URL")]
    BadEndpoint(String),
    #[error("--max-service-qps must be at least 1 (background refreshes would never run)")]
    ZeroQps,
    #[error("--refresh-interval and --header-read-timeout must be more than 0")]
    ZeroInterval,
    #[error("--worker-threads must be at least 1")]
    ZeroWorkers,
}

/// A bind host: the address to bind and the Host header value that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindHost {
    pub ip: IpAddr,
}

impl BindHost {
    /// Parse `169.254.170.23`, `[fd00:ec2::23]` or a bare IPv6 address.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let trimmed = raw.trim();
        let inner = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        let ip = if inner.eq_ignore_ascii_case("localhost") {
            IpAddr::from([127, 0, 0, 1])
        } else {
            inner
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::BadBindHost(raw.to_string()))?
        };
        Ok(Self { ip })
    }
}

/// The validated configuration of `server`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub cluster_name: String,
    pub port: u16,
    pub probe_port: u16,
    pub metrics_address: IpAddr,
    pub metrics_port: u16,
    pub bind_hosts: Vec<BindHost>,
    pub endpoint: Option<String>,
    pub identity_token_file: Option<std::path::PathBuf>,
    pub retention: Duration,
    pub max_cache_size: usize,
    pub max_service_qps: u32,
    pub rotate_credentials: bool,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub refresh_interval: Duration,
    pub worker_threads: usize,
}

impl ServerArgs {
    pub fn validate(self) -> Result<ServerConfig, ConfigError> {
        if self.cluster_name.trim().is_empty() {
            return Err(ConfigError::EmptyClusterName);
        }
        let mut bind_hosts = Vec::new();
        for raw in &self.bind_hosts {
            let host = BindHost::parse(raw)?;
            if !self.allow_any_bind_host && !is_safe_bind_ip(host.ip) {
                return Err(ConfigError::UnsafeBindHost(host.ip));
            }
            if !bind_hosts.contains(&host) {
                bind_hosts.push(host);
            }
        }
        if bind_hosts.is_empty() {
            return Err(ConfigError::NoBindHosts);
        }
        if let Some(ep) = &self.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(ConfigError::BadEndpoint(ep.clone()));
        }
        if self.refresh_interval.is_zero() || self.header_read_timeout.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        if self.max_service_qps == 0 {
            return Err(ConfigError::ZeroQps);
        }
        let worker_threads = match self.worker_threads {
            Some(0) => return Err(ConfigError::ZeroWorkers),
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_DEFAULT_WORKER_THREADS),
        };
        Ok(ServerConfig {
            cluster_name: self.cluster_name,
            port: self.port,
            probe_port: self.probe_port,
            metrics_address: self.metrics_address,
            metrics_port: self.metrics_port,
            bind_hosts,
            endpoint: self.endpoint,
            identity_token_file: self.identity_token_file,
            retention: self.max_credential_retention_before_renewal,
            max_cache_size: self.max_cache_size,
            max_service_qps: self.max_service_qps,
            rotate_credentials: self.rotate_credentials,
            shutdown_grace: self.shutdown.shutdown_grace,
            header_read_timeout: self.header_read_timeout,
            refresh_interval: self.refresh_interval,
            worker_threads,
        })
    }
}

/// Loopback or one of the two Pod Identity addresses.
pub fn is_safe_bind_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.to_string() == AGENT_IPV4 || ip.to_string() == AGENT_IPV6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(args: &[&str]) -> Result<ServerConfig, String> {
        let mut argv = vec!["pod-identity-agent", "server"];
        argv.extend_from_slice(args);
        let cli: Cli = pod_identity_runtime::flags::try_parse("POD_IDENTITY_AGENT", argv)
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Server(s) => s.validate().map_err(|e| e.to_string()),
            _ => Err("not server".into()),
        }
    }

    #[test]
    fn defaults_match_the_official_agent() {
        let c = server(&["--cluster-name", "lab"]).unwrap();
        assert_eq!(c.port, 80);
        assert_eq!(c.probe_port, 2703);
        assert_eq!(c.metrics_port, 2705);
        assert_eq!(c.metrics_address.to_string(), "0.0.0.0");
        let hosts: Vec<String> = c.bind_hosts.iter().map(|h| h.ip.to_string()).collect();
        assert_eq!(hosts, ["169.254.170.23", "fd00:ec2::23"]);
        assert_eq!(c.retention, Duration::from_secs(3 * 3600));
        assert_eq!(c.max_cache_size, 2000);
        assert_eq!(c.max_service_qps, 3);
        assert!(!c.rotate_credentials);
        assert!(c.endpoint.is_none());
        // Ours: at most two request threads unless told otherwise.
        assert!((1..=MAX_DEFAULT_WORKER_THREADS).contains(&c.worker_threads));
    }

    #[test]
    fn worker_threads_are_at_least_one() {
        assert_eq!(
            server(&["-c", "x", "--worker-threads", "8"])
                .unwrap()
                .worker_threads,
            8
        );
        let err = server(&["-c", "x", "--worker-threads", "0"]).unwrap_err();
        assert!(err.contains("--worker-threads"), "{err}");
    }

    #[test]
    fn official_chart_arguments_parse() {
        let c = server(&[
            "--port",
            "80",
            "--cluster-name",
            "prod",
            "--probe-port",
            "2703",
            "--metrics-port",
            "2705",
            "-v",
            "trace",
            "--rotate-credentials",
            "true",
        ])
        .unwrap();
        assert!(c.rotate_credentials);
        assert_eq!(c.cluster_name, "prod");
        let c = server(&["-c", "x", "--rotate-credentials", "-p", "8080"]).unwrap();
        assert!(c.rotate_credentials);
        assert_eq!(c.port, 8080);
    }

    #[test]
    fn bind_hosts_replace_the_defaults() {
        let c = server(&["-c", "x", "-b", "169.254.170.23"]).unwrap();
        assert_eq!(c.bind_hosts.len(), 1);
        let c = server(&["-c", "x", "-b", "127.0.0.1", "-b", "[::1]"]).unwrap();
        let hosts: Vec<String> = c.bind_hosts.iter().map(|h| h.ip.to_string()).collect();
        assert_eq!(hosts, ["127.0.0.1", "::1"]);
    }

    #[test]
    fn refuses_unsafe_or_bad_configuration_with_a_reason() {
        assert!(server(&[]).unwrap_err().contains("--cluster-name"));
        assert!(server(&["-c", " "]).unwrap_err().contains("cluster-name"));
        assert!(
            server(&["-c", "x", "-b", "0.0.0.0"])
                .unwrap_err()
                .contains("expose")
        );
        assert!(
            server(&["-c", "x", "-b", "10.0.0.5"])
                .unwrap_err()
                .contains("expose")
        );
        assert!(
            server(&["-c", "x", "-b", "node.local"])
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(
            server(&["-c", "x", "--endpoint", "eks-auth:443"])
                .unwrap_err()
                .contains("URL")
        );
        assert!(
            server(&["-c", "x", "--max-service-qps", "0"])
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            server(&[
                "-c",
                "x",
                "--max-credential-retention-before-renewal",
                "3 hours"
            ])
            .unwrap_err()
            .contains("unit")
        );
    }
}
