//! Helpers for the black-box tests of the `pod-identity-webhook` binary: the binary started on
//! 127.0.0.1 port 0 with its bound addresses read from its JSON log, and a TLS client that keeps
//! its connection open. The test CA that issues its certificates is test-support's.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
pub use pod_identity_test_support::tls::{Issued, TestCa, write_atomic};
use pod_identity_test_support::{ChildGuard, LogCapture};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

pub const ASSOCIATIONS: &str = "associations:
  - namespace: default
    serviceAccount: s3-reader
    roleArn: arn:aws:iam::111122223333:role/s3-reader
  - namespace: team-a
    serviceAccount: default
    roleArn: arn:aws:iam::111122223333:role/team-a-default
";

/// The webhook binary, serving.
pub struct Webhook {
    pub guard: ChildGuard,
    pub logs: LogCapture,
    /// Its stderr, when started by [`Webhook::start_with_env`] (inherited otherwise).
    pub stderr: Option<LogCapture>,
    pub admission: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Webhook {
    pub async fn start(issued: &Issued, extra: &[&str]) -> Self {
        Self::start_with_env(issued, extra, None).await
    }

    /// As [`Webhook::start`], with these variables set and stderr captured too when `env` is
    /// given.
    pub async fn start_with_env(
        issued: &Issued,
        extra: &[&str],
        env: Option<&[(&str, &str)]>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        let assoc_path = dir.path().join("associations.yaml");
        write_atomic(&cert_path, &issued.cert_pem);
        write_atomic(&key_path, &issued.key_pem);
        std::fs::write(&assoc_path, ASSOCIATIONS).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"));
        cmd.args(["serve", "--tls-cert"])
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .arg("--associations")
            .arg(&assoc_path)
            .args([
                "--address",
                "127.0.0.1",
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--reload-interval",
                "100ms",
            ])
            .args(extra)
            .stdout(Stdio::piped());
        if let Some(env) = env {
            cmd.envs(env.iter().copied()).stderr(Stdio::piped());
        }
        let mut guard = ChildGuard::new(cmd.spawn().unwrap());
        let logs = guard.capture_stdout();
        let stderr = env.map(|_| guard.capture_stderr());
        let addr_of = |listener: &'static str| {
            let logs = logs.clone();
            async move {
                let line = logs
                    .wait_for_json(
                        |l| l["message"] == "listening" && l["listener"] == listener,
                        Duration::from_secs(20),
                    )
                    .await
                    .unwrap();
                line["addr"]
                    .as_str()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            }
        };
        let admission = addr_of("admission").await;
        let metrics = addr_of("metrics").await;
        Self {
            guard,
            logs,
            stderr,
            admission,
            metrics,
            dir,
            cert_path,
            key_path,
        }
    }
}

/// Send raw bytes on a new TLS connection and read until the server closes or 2 s pass.
pub async fn raw_exchange(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// One TLS connection with an HTTP/1.1 client on it.
pub struct TlsClient {
    pub sender: SendRequest<Full<Bytes>>,
    pub peer_cert: CertificateDer<'static>,
    driver: tokio::task::JoinHandle<()>,
}

impl TlsClient {
    pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = TlsConnector::from(config)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let peer_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self {
            sender,
            peer_cert,
            driver,
        }
    }

    /// POST `body` to `/mutate`; the status and body.
    pub async fn post(&mut self, body: impl Into<Bytes>) -> (u16, Vec<u8>) {
        self.request("POST", "/mutate", body.into()).await
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Bytes) -> (u16, Vec<u8>) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, body)
    }
}

impl Drop for TlsClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}
