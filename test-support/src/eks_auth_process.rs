//! The real `eks-auth` binary as a child process, on loopback with ephemeral ports, for black-box
//! and end-to-end tests. The caller passes the binary (`CARGO_BIN_EXE_eks-auth` inside the
//! eks-auth crate, [`crate::workspace::workspace_bin`] elsewhere).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pod_identity_contracts::eks_auth::{CALLER_TOKEN_HEADER, ERROR_TYPE_HEADER, request_path};
use pod_identity_contracts::log_schema::ExchangeAuditLine;
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::moto::{CALLER_ACCESS_KEY_ID, CALLER_SECRET_ACCESS_KEY};
use crate::process::{ChildGuard, LogCapture, wait_for_http_ok};

pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags (and environment) for one eks-auth process.
#[derive(Debug, Clone, Default)]
pub struct EksAuthOptions {
    /// Arguments before the flags (`component eks-auth` for the lab's multi-call binary).
    pub prefix: Vec<String>,
    pub cluster_name: String,
    pub issuer: String,
    /// `--jwks-file`; discovery under `issuer` when `None`.
    pub jwks_file: Option<PathBuf>,
    pub associations: PathBuf,
    pub sts_endpoint: Option<String>,
    pub cluster_arn: Option<String>,
    pub extra: Vec<String>,
    /// Variables set after [`aws_environment`] (so they can replace its credentials), and after
    /// the API server's variables are removed (so `KUBECONFIG` here points `--token-review` at one).
    pub env: Vec<(String, String)>,
    /// Serve the API over HTTPS; plain HTTP when `None`.
    pub tls: Option<EksAuthTls>,
    /// `--role-policy`; `--allow-any-role` when `None`.
    pub role_policy: Option<PathBuf>,
}

/// The API over HTTPS: the files eks-auth serves (polled every second) and the CA that signed
/// them, which this helper's own requests trust (and nothing else).
#[derive(Debug, Clone)]
pub struct EksAuthTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
}

/// A running eks-auth. Stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct EksAuthProcess {
    pub child: ChildGuard,
    pub stdout: LogCapture,
    pub stderr: LogCapture,
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Sent as the agent's own token (`x-pod-identity-caller-token`) with every request of
    /// [`Self::exchange`] and [`Self::post`]; `None` sends none.
    pub caller_token: Option<String>,
    tls: Option<EksAuthTls>,
    _home: tempfile::TempDir,
}

/// One answer of the API: status, `x-amzn-errortype` (empty on success), JSON body.
#[derive(Debug, Clone)]
pub struct ApiAnswer {
    pub status: u16,
    pub error_type: String,
    pub body: Value,
}

impl EksAuthProcess {
    /// Start `bin` with `opts`, wait until both listeners are up and `/readyz` answers 200.
    pub async fn start(bin: &Path, opts: &EksAuthOptions) -> Self {
        let mut this = Self::spawn(bin, opts);
        let stdout = this.stdout.clone();
        let stderr = this.stderr.clone();
        let addr_of = |listener: &'static str| {
            let stdout = stdout.clone();
            let stderr = stderr.clone();
            async move {
                let line = stdout
                    .wait_for_json(
                        |v| v["message"] == "listening" && v["listener"] == listener,
                        START_TIMEOUT,
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "eks-auth did not listen ({e}); stdout: {}\nstderr: {}",
                            stdout.text(),
                            stderr.text()
                        )
                    });
                line["addr"]
                    .as_str()
                    .expect("listening line has addr")
                    .parse::<SocketAddr>()
                    .expect("addr parses")
            }
        };
        this.api_addr = addr_of("api").await;
        this.admin_addr = addr_of("admin").await;
        wait_for_http_ok(&this.admin_url("/readyz"), START_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("eks-auth not ready ({e}); stdout: {}", this.stdout.text()));
        this
    }

    /// Spawn without waiting (for tests of refused configurations).
    pub fn spawn(bin: &Path, opts: &EksAuthOptions) -> Self {
        let home = tempfile::tempdir().expect("temp home");
        let mut cmd = Command::new(bin);
        cmd.args(&opts.prefix);
        cmd.args([
            "--cluster-name",
            &opts.cluster_name,
            "--issuer",
            &opts.issuer,
            "--associations",
        ])
        .arg(&opts.associations)
        .args([
            "--bind-address",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--shutdown-grace",
            "5s",
        ]);
        if let Some(f) = &opts.jwks_file {
            cmd.arg("--jwks-file").arg(f);
        }
        if let Some(ep) = &opts.sts_endpoint {
            cmd.args(["--sts-endpoint", ep]);
        }
        if let Some(arn) = &opts.cluster_arn {
            cmd.args(["--cluster-arn", arn]);
        }
        match &opts.role_policy {
            Some(p) => cmd.arg("--role-policy").arg(p),
            None => cmd.arg("--allow-any-role"),
        };
        if let Some(tls) = &opts.tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .args(["--tls-poll", "1s"]);
        }
        cmd.args(&opts.extra);
        aws_environment(&mut cmd, home.path());
        // Hermetic: no API server unless a test configures one (`KUBECONFIG` in `opts.env`).
        for key in [
            "KUBECONFIG",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
        ] {
            cmd.env_remove(key);
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard::new(cmd.spawn().expect("spawn eks-auth"));
        let stdout = child.capture_stdout();
        let stderr = child.capture_stderr();
        Self {
            child,
            stdout,
            stderr,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            caller_token: None,
            tls: opts.tls.clone(),
            _home: home,
        }
    }

    /// `http://127.0.0.1:<port>` (`https://` when it serves TLS): the endpoint for EKS Auth
    /// clients (`--endpoint` of the agent).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.api_addr)
    }

    /// A client for the API: over TLS it trusts only the CA of [`EksAuthTls`].
    pub fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(tls) = &self.tls {
            let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).expect("CA PEM");
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca);
        }
        builder.build().expect("client")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// POST `{"token": token}` for `cluster`, with [`Self::caller_token`].
    pub async fn exchange(&self, cluster: &str, token: &str) -> ApiAnswer {
        self.exchange_as(cluster, token, self.caller_token.as_deref())
            .await
    }

    /// POST `{"token": token}` for `cluster`, with `caller` as the agent's own token.
    pub async fn exchange_as(&self, cluster: &str, token: &str, caller: Option<&str>) -> ApiAnswer {
        let body = json!({ "token": token }).to_string();
        self.post_as(cluster, "application/json", body.into_bytes(), caller)
            .await
    }

    /// POST any body with any content type, with [`Self::caller_token`].
    pub async fn post(&self, cluster: &str, content_type: &str, body: Vec<u8>) -> ApiAnswer {
        self.post_as(cluster, content_type, body, self.caller_token.as_deref())
            .await
    }

    async fn post_as(
        &self,
        cluster: &str,
        content_type: &str,
        body: Vec<u8>,
        caller: Option<&str>,
    ) -> ApiAnswer {
        let mut req = self
            .client()
            .post(format!("{}{}", self.url(), request_path(cluster)))
            .header("content-type", content_type);
        if let Some(caller) = caller {
            req = req.header(CALLER_TOKEN_HEADER, caller);
        }
        let resp = req.body(body).send().await.expect("eks-auth answers");
        let status = resp.status().as_u16();
        let error_type = resp
            .headers()
            .get(ERROR_TYPE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("eks-auth body is not JSON: {text:?}"));
        ApiAnswer {
            status,
            error_type,
            body,
        }
    }

    /// The audit lines (one per exchange, [`ExchangeAuditLine::is_audit`]) so far.
    pub fn audit_lines(&self) -> Vec<ExchangeAuditLine> {
        self.stdout
            .json_lines()
            .iter()
            .filter_map(|v| ExchangeAuditLine::deserialize(v).ok())
            .filter(ExchangeAuditLine::is_audit)
            .collect()
    }

    /// Waits until there are at least `n` audit lines and returns them.
    pub async fn wait_for_audit_lines(&self, n: usize) -> Vec<ExchangeAuditLine> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let lines = self.audit_lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} audit lines, wanted {n}: {}",
                lines.len(),
                self.stdout.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body")
    }
}

/// eks-auth's own AWS identity for moto: static keys, a region, nothing that could wander off
/// to IMDS or a real profile.
pub fn aws_environment(cmd: &mut Command, home: &Path) {
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", CALLER_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", CALLER_SECRET_ACCESS_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"));
}
