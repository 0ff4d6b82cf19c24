//! The ceiling: a bare hyper 1.x HTTP/1 server that answers every request with one fixed JSON
//! body (the agent's own credentials body, so the same length and headers). No routing, no
//! validation, no cache, no logging, no metrics, no header-read timer: what is left is the cost of
//! HTTP/1 and tokio on this machine, the most any server could do with this client.
//!
//! It runs as a child process of the benchmark (`pod-identity-bench ceiling`), on a default
//! multi-thread runtime as the agent's `main` builds, so it neither shares a runtime with the load
//! generator nor gets more threads than the agent.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pod_identity_test_support::ChildGuard;
use tokio::net::TcpListener;

use crate::cli::CeilingArgs;
use crate::procfs::Memory;

/// `pod-identity-bench ceiling`: read the body from stdin, bind `127.0.0.1:<port>`, print
/// `listening <addr>`, serve until killed.
pub fn serve(args: &CeilingArgs) -> anyhow::Result<()> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("read the body from stdin")?;
    let body = Bytes::from(body);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
        println!("listening {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let mut resp = Response::new(Full::new(body.clone()));
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The ceiling server running as a child of this process.
#[derive(Debug)]
pub struct CeilingProcess {
    child: ChildGuard,
    pid: u32,
    pub addr: SocketAddr,
}

impl CeilingProcess {
    /// Start `<this binary> ceiling --port 0`, hand it `body`, wait for its address.
    pub async fn start(body: &Bytes) -> anyhow::Result<Self> {
        Self::start_wrapped(body, &[], crate::agent::START_TIMEOUT).await
    }

    /// [`start`](Self::start) under `wrapper` (see [`AgentProcess::start_wrapped`]), waiting up
    /// to `start_timeout`.
    ///
    /// [`AgentProcess::start_wrapped`]: crate::agent::AgentProcess::start_wrapped
    pub async fn start_wrapped(
        body: &Bytes,
        wrapper: &[String],
        start_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locate this binary")?;
        let mut child = crate::agent::wrapped_command(&exe, wrapper)
            .args(["ceiling", "--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn the ceiling server")?;
        let pid = child.id();
        let mut stdin = child.stdin.take().context("ceiling stdin")?;
        let stdout = child.stdout.take().context("ceiling stdout")?;
        let mut child = ChildGuard::new(child);
        stdin.write_all(body)?;
        drop(stdin);
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = match tokio::time::timeout(start_timeout, line).await {
            Ok(Ok(Ok(line))) => line,
            _ => {
                let _ = child.stop_async().await;
                bail!("the ceiling server did not start");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected first line from the ceiling: {line:?}"))?;
        Ok(Self { child, pid, addr })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.stop_async().await?;
        Ok(())
    }
}
