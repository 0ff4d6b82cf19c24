//! The real `pod-identity-agent` binary on loopback, for black-box and cross-binary tests:
//! bound on ephemeral ports (read back from its `listening` log lines), with a node's
//! environment (static node credentials, a region, no IMDS, no profile files).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, LogCapture};
use pod_identity_contracts::log_schema::AgentRequestLine;
use serde::Deserialize as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running agent process bound to loopback on ephemeral ports.
#[derive(Debug)]
pub struct AgentProcess {
    pub child: ChildGuard,
    pub stdout: LogCapture,
    pub stderr: LogCapture,
    pub credentials_addr: SocketAddr,
    pub probe_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    _home: tempfile::TempDir,
}

/// How to run the agent, beyond where it exchanges tokens: see [`AgentProcess::launch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentLaunch<'a> {
    /// The executable.
    pub bin: &'a str,
    /// Arguments before `server` (`component agent` for the lab's multi-call binary).
    pub prefix: &'a [&'a str],
    /// Flags after the loopback ones.
    pub extra: &'a [&'a str],
    /// Variables set after the node's environment (so they can replace its credentials).
    pub env: &'a [(&'a str, &'a str)],
}

impl AgentProcess {
    /// `<bin> server -c <cluster> -b 127.0.0.1 -p 0 ... --endpoint <endpoint>` plus `extra`.
    pub async fn start(bin: &str, cluster: &str, endpoint: &str, extra: &[&str]) -> Self {
        let how = AgentLaunch {
            bin,
            extra,
            ..AgentLaunch::default()
        };
        Self::launch(&how, cluster, endpoint).await
    }

    /// As [`AgentProcess::start`], run as `how` says.
    pub async fn launch(how: &AgentLaunch<'_>, cluster: &str, endpoint: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(how.bin);
        cmd.args(how.prefix)
            .args(loopback_server_args(cluster, endpoint))
            .args(["--shutdown-grace", "5s"])
            .args(how.extra);
        node_environment(&mut cmd, home.path());
        cmd.envs(how.env.iter().copied());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard::new(cmd.spawn().expect("spawn pod-identity-agent"));
        let stdout = child.capture_stdout();
        let stderr = child.capture_stderr();
        let addr_of = |listener: &'static str| {
            let stdout = &stdout;
            let stderr = &stderr;
            async move {
                let line = stdout
                    .wait_for_json(
                        |v| v["message"] == "listening" && v["listener"] == listener,
                        START_TIMEOUT,
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!("agent did not listen ({e:?}); stderr: {}", stderr.text())
                    });
                line["addr"]
                    .as_str()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            }
        };
        let credentials_addr = addr_of("credentials").await;
        let probe_addr = addr_of("probes").await;
        let metrics_addr = addr_of("metrics").await;
        Self {
            child,
            stdout,
            stderr,
            credentials_addr,
            probe_addr,
            metrics_addr,
            _home: home,
        }
    }

    pub fn credentials_url(&self) -> String {
        format!("http://{}/v1/credentials", self.credentials_addr)
    }

    /// GET /v1/credentials with this token; returns (status, parsed JSON body).
    pub async fn fetch(&self, token: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(self.credentials_url())
            .header("Authorization", token)
            .send()
            .await
            .expect("agent answers");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("agent body is not JSON: {body:?}"));
        (status, json)
    }

    /// Requests the credentials listener answered so far, by status: the
    /// `pod_identity_http_response{code}` counters of `/metrics`.
    pub async fn responses(&self) -> std::collections::BTreeMap<u16, u64> {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("agent metrics")
            .text()
            .await
            .expect("agent metrics body");
        text.lines()
            .filter_map(|l| l.strip_prefix("pod_identity_http_response{code=\""))
            .filter_map(|l| {
                let (code, count) = l.split_once("\"} ")?;
                Some((code.parse().ok()?, count.trim().parse().ok()?))
            })
            .collect()
    }

    /// JSON log lines whose message is `message`.
    pub fn log_lines(&self, message: &str) -> Vec<Value> {
        self.stdout
            .json_lines()
            .into_iter()
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// The per-request log lines ([`AgentRequestLine::is_request`]), once there are at least `n`
    /// of them.
    pub async fn request_logs(&self, n: usize) -> Vec<AgentRequestLine> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let lines: Vec<AgentRequestLine> = self
                .stdout
                .json_lines()
                .iter()
                .filter_map(|v| AgentRequestLine::deserialize(v).ok())
                .filter(AgentRequestLine::is_request)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} request log lines, wanted {n}",
                lines.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `server` on loopback with every port ephemeral (read back from the `listening` lines),
/// exchanging tokens at `endpoint`.
pub fn loopback_server_args(cluster: &str, endpoint: &str) -> Vec<String> {
    [
        "server",
        "--cluster-name",
        cluster,
        "--port",
        "0",
        "--bind-hosts",
        "127.0.0.1",
        "--probe-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--endpoint",
        endpoint,
    ]
    .map(str::to_string)
    .to_vec()
}

/// The environment of a node: its own credentials for signing (static here), a region, and
/// nothing that could make the default chain wander off to IMDS or a real profile. The caller's
/// `AWS_*` and `POD_IDENTITY_AGENT_*` variables are removed, so no env fallback changes a flag.
pub fn node_environment(cmd: &mut Command, home: &std::path::Path) {
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") || key.starts_with("POD_IDENTITY_AGENT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "AKIDNODEROLEEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "NODESECRETKEYEXAMPLE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"));
}

/// Send raw bytes and read the whole answer (the connection is closed by `Connection: close`
/// or by the server). For requests a normal client would not send.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(START_TIMEOUT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of a raw HTTP/1.1 answer.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"))
}
