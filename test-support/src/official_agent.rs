//! AWS's official eks-pod-identity-agent (the Go agent ours replaces) on loopback, for tests that
//! hold our agent to its meaning, and the metric families the two share.
//!
//! The official binary is never built here and never exists in CI: a test that runs it is
//! `#[ignore]`d and takes its path from [`BIN_ENV`]. Two things differ from starting ours
//! ([`crate::AgentProcess`]): it cannot report a port it was given as 0, so the ports are picked
//! here; and it checks every request's Host against the Pod Identity addresses, whatever it binds
//! to, so requests to it carry [`HOST`].

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent_process::{START_TIMEOUT, node_environment};
use crate::{ChildGuard, LogCapture, wait_for_http_ok};

/// The variable that names the official binary.
pub const BIN_ENV: &str = "OFFICIAL_AGENT_BIN";

/// The Host the official agent accepts on any bind host (`configuration.DefaultIpv4TargetHost`).
pub const HOST: &str = "169.254.170.23";

/// The metric families both agents export under the same names, with the same labels.
pub const SHARED_FAMILIES: [&str; 3] = [
    "pod_identity_cache_state",
    "pod_identity_cache_errors",
    "pod_identity_http_response",
];

/// A running official agent on `127.0.0.1`, with a node's environment.
#[derive(Debug)]
pub struct OfficialAgentProcess {
    pub child: ChildGuard,
    pub stdout: LogCapture,
    pub stderr: LogCapture,
    pub credentials_addr: SocketAddr,
    pub probe_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    _home: tempfile::TempDir,
}

impl OfficialAgentProcess {
    /// `<bin> server -c <cluster> -b 127.0.0.1 -p <free> ... --endpoint <endpoint>` plus `extra`,
    /// once both its credentials and metrics listeners accept.
    pub async fn start(bin: &str, cluster: &str, endpoint: &str, extra: &[&str]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let [credentials, probe, metrics] = free_ports();
        let mut cmd = Command::new(bin);
        cmd.args([
            "server",
            "--cluster-name",
            cluster,
            "--bind-hosts",
            "127.0.0.1",
        ])
        .args(["--port", &credentials.to_string()])
        .args(["--probe-port", &probe.to_string()])
        .args(["--metrics-address", "127.0.0.1"])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--endpoint", endpoint])
        .args(extra);
        node_environment(&mut cmd, home.path());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard::new(cmd.spawn().expect("spawn the official agent"));
        let stdout = child.capture_stdout();
        let stderr = child.capture_stderr();
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let agent = Self {
            child,
            stdout,
            stderr,
            credentials_addr: at(credentials),
            probe_addr: at(probe),
            metrics_addr: at(metrics),
            _home: home,
        };
        agent.wait_until_listening().await;
        agent
    }

    /// The metrics listener answers (it starts beside the others), then the credentials one
    /// accepts. Fails at once with its output if it exited (it panics on flags it refuses).
    async fn wait_until_listening(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let died = |agent: &Self| {
            panic!(
                "the official agent exited; stdout:\n{}\nstderr:\n{}",
                agent.stdout.text(),
                agent.stderr.text()
            )
        };
        let metrics = format!("http://{}/metrics", self.metrics_addr);
        while wait_for_http_ok(&metrics, Duration::from_millis(200))
            .await
            .is_err()
        {
            if self.stdout.is_closed() {
                died(self);
            }
            assert!(Instant::now() < deadline, "official agent: no metrics");
        }
        while tokio::net::TcpStream::connect(self.credentials_addr)
            .await
            .is_err()
        {
            if self.stdout.is_closed() {
                died(self);
            }
            assert!(Instant::now() < deadline, "official agent: no credentials");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn credentials_url(&self) -> String {
        format!("http://{}/v1/credentials", self.credentials_addr)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }
}

/// Three distinct free ports on loopback, held together while picked so none repeats. Another
/// process could take one before the agent binds it; on loopback in a test that does not happen.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    [port(0), port(1), port(2)]
}

/// The samples of [`SHARED_FAMILIES`] in a text exposition, as `name{labels} value` lines with
/// the labels sorted by name, in order. Series at 0 are left out: our agent exports some before
/// their first count, the Go client only once counted, and a counter at 0 counted nothing.
pub fn shared_samples(exposition: &str) -> Vec<String> {
    let mut samples = BTreeMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if !SHARED_FAMILIES.contains(&name) {
            continue;
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a sample: {line:?}"));
        if value == 0.0 {
            continue;
        }
        // Label values here are codes and names: no commas or escaped quotes to split around.
        let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
        labels.sort_unstable();
        samples.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    samples
        .into_iter()
        .map(|(series, value)| format!("{series} {value}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_shared_families_sorted_without_zeros() {
        let text = "# HELP pod_identity_cache_state The state of credential in cache\n\
            # TYPE pod_identity_cache_state counter\n\
            pod_identity_cache_state{state=\"miss\"} 2\n\
            pod_identity_cache_state{state=\"hit\"} 0\n\
            pod_identity_cache_errors{type=\"Recoverable\",code=\"ServiceUnavailableException\"} 1\n\
            pod_identity_cache_requests{outcome=\"hit\"} 7\n\
            pod_identity_http_response{code=\"200\"} 3\n\
            process_open_fds 9\n";
        assert_eq!(
            shared_samples(text),
            [
                "pod_identity_cache_errors{code=\"ServiceUnavailableException\",type=\"Recoverable\"} 1",
                "pod_identity_cache_state{state=\"miss\"} 2",
                "pod_identity_http_response{code=\"200\"} 3",
            ]
        );
    }
}
