//! The agent under test: the release binary as a child process, bound to loopback on ephemeral
//! ports against the fake EKS Auth, exactly as `agent/tests/common` starts it, with production
//! logging (JSON, info, one line per request). Its stdout is read by a thread that picks the
//! `listening` lines and then discards (counting lines), so a full pipe never stalls the agent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use pod_identity_contracts::log_schema::AgentRequestLine;
use pod_identity_test_support::ChildGuard;
use pod_identity_test_support::agent_process::{loopback_server_args, node_environment};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::procfs::Memory;

/// How long the agent may take to bind its listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The agent's listeners, as named in its `listening` log lines.
const LISTENERS: [&str; 3] = ["credentials", "probes", "metrics"];
/// How much of the agent's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;

/// A running agent. Dropping it stops it (SIGTERM, then SIGKILL) through [`ChildGuard`].
#[derive(Debug)]
pub struct AgentProcess {
    child: ChildGuard,
    pid: u32,
    pub credentials_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    log_lines: Arc<AtomicU64>,
    capture: Arc<Capture>,
    stderr: Arc<Mutex<String>>,
    _home: tempfile::TempDir,
}

/// Raw stdout kept while capturing is on (only around the cold burst: a few hundred lines).
#[derive(Debug, Default)]
struct Capture {
    on: AtomicBool,
    bytes: Mutex<Vec<u8>>,
    /// Bytes read after the `listening` lines, kept or not.
    bytes_seen: AtomicU64,
}

/// The agent binary: `--agent`, else `pod-identity-agent` next to this binary (both are built
/// into `target/release` by `scripts/bench`).
pub fn resolve_binary(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locate this binary")?
            .with_file_name("pod-identity-agent"),
    };
    if !path.is_file() {
        bail!(
            "agent binary {} not found; build it with `cargo build --release -p pod-identity-agent` or pass --agent",
            path.display()
        );
    }
    Ok(path)
}

impl AgentProcess {
    /// `server -c <cluster> -b 127.0.0.1 -p 0 --probe-port 0 --metrics-address 127.0.0.1
    /// --metrics-port 0 --endpoint <endpoint>`, logging JSON at info (or through `log_filter`,
    /// for diagnostics); waits for the three `listening` lines.
    pub async fn start(
        binary: &Path,
        endpoint: &str,
        cluster: &str,
        log_filter: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_wrapped(binary, endpoint, cluster, log_filter, &[], START_TIMEOUT).await
    }

    /// [`start`](Self::start) under `wrapper` (a program and its arguments that runs the agent in
    /// the same process, such as `valgrind --tool=callgrind`), waiting up to `start_timeout`.
    pub async fn start_wrapped(
        binary: &Path,
        endpoint: &str,
        cluster: &str,
        log_filter: Option<&str>,
        wrapper: &[String],
        start_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let home = tempfile::tempdir().context("temporary HOME for the agent")?;
        let mut cmd = wrapped_command(binary, wrapper);
        cmd.args(["--log-format", "json", "--verbosity", "info"])
            .args(loopback_server_args(cluster, endpoint))
            .args(["--shutdown-grace", "2s"]);
        node_environment(&mut cmd, home.path());
        if let Some(filter) = log_filter {
            cmd.env("POD_IDENTITY_AGENT_LOG", filter);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("agent stdout")?;
        let stderr_pipe = child.stderr.take().context("agent stderr")?;
        let mut child = ChildGuard::new(child);

        let log_lines = Arc::new(AtomicU64::new(0));
        let capture = Arc::new(Capture::default());
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = oneshot::channel();
        {
            let log_lines = log_lines.clone();
            let capture = capture.clone();
            std::thread::Builder::new()
                .name("agent-stdout".into())
                .spawn(move || drain_stdout(stdout, ready_tx, &log_lines, &capture))?;
            let stderr = stderr.clone();
            std::thread::Builder::new()
                .name("agent-stderr".into())
                .spawn(move || keep_tail(stderr_pipe, &stderr))?;
        }

        let addrs = match tokio::time::timeout(start_timeout, ready_rx).await {
            Ok(Ok(Ok(addrs))) => addrs,
            outcome => {
                let why = match outcome {
                    Ok(Ok(Err(why))) => why,
                    Err(_) => format!("no `listening` lines within {start_timeout:?}"),
                    _ => "stdout reader ended".into(),
                };
                let _ = child.stop_async().await;
                let tail = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                bail!("agent did not start: {why}; stderr: {tail}");
            }
        };
        Ok(Self {
            child,
            pid,
            credentials_addr: addrs["credentials"],
            metrics_addr: addrs["metrics"],
            log_lines,
            capture,
            stderr,
            _home: home,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid)
    }

    /// Lines the agent has written to stdout so far (one per request at info).
    pub fn log_lines(&self) -> u64 {
        self.log_lines.load(Ordering::Relaxed)
    }

    /// Bytes the agent has written to stdout since its listeners were up.
    pub fn log_bytes(&self) -> u64 {
        self.capture.bytes_seen.load(Ordering::Relaxed)
    }

    /// Start keeping the agent's log lines (from the next chunk read).
    pub fn start_capture(&self) {
        if let Ok(mut b) = self.capture.bytes.lock() {
            b.clear();
        }
        self.capture.on.store(true, Ordering::SeqCst);
    }

    /// Stop keeping log lines and return the request lines kept since
    /// [`start_capture`](Self::start_capture).
    pub fn stop_capture(&self) -> Vec<AgentRequestLine> {
        self.capture.on.store(false, Ordering::SeqCst);
        let bytes = self
            .capture
            .bytes
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        bytes
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice::<AgentRequestLine>(l).ok())
            .filter(AgentRequestLine::is_request)
            .collect()
    }

    /// Fails with the agent's stderr if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
            bail!("the agent exited ({status}); stderr: {tail}");
        }
        Ok(())
    }

    /// SIGTERM, wait for the drain, reap.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.stop_async().await?;
        Ok(())
    }
}

/// `binary`, or `wrapper` (a program and its arguments) running `binary`.
pub(crate) fn wrapped_command(binary: &Path, wrapper: &[String]) -> Command {
    match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(binary);
            cmd
        }
        None => Command::new(binary),
    }
}

type Ready = Result<HashMap<&'static str, SocketAddr>, String>;

/// Read JSON lines until every listener has logged `listening`, report their addresses, then read
/// and discard the rest (keeping it only while `capture` is on), counting lines, until the agent
/// closes stdout.
fn drain_stdout(
    stdout: impl Read,
    ready: oneshot::Sender<Ready>,
    lines: &AtomicU64,
    capture: &Capture,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut addrs = HashMap::new();
    let mut recent: Vec<String> = Vec::new();
    let mut line = Vec::new();
    while addrs.len() < LISTENERS.len() {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                let _ = ready.send(Err(format!(
                    "stdout closed before every listener was up; last lines: {}",
                    recent.join("\n")
                )));
                return;
            }
            Ok(_) => {}
        }
        lines.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&line);
        if recent.len() == 10 {
            recent.remove(0);
        }
        recent.push(text.trim_end().chars().take(300).collect());
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v["message"] != "listening" {
            continue;
        }
        let name = LISTENERS.into_iter().find(|l| v["listener"] == *l);
        let addr = v["addr"]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        if let (Some(name), Some(addr)) = (name, addr) {
            addrs.insert(name, addr);
        }
    }
    let _ = ready.send(Ok(addrs));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                lines.fetch_add(newlines as u64, Ordering::Relaxed);
                capture.bytes_seen.fetch_add(n as u64, Ordering::Relaxed);
                if capture.on.load(Ordering::Relaxed)
                    && let Ok(mut kept) = capture.bytes.lock()
                {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// Keep the last [`STDERR_TAIL`] bytes of stderr.
fn keep_tail(mut stderr: impl Read, tail: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut t) = tail.lock() else { return };
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                if t.len() > STDERR_TAIL {
                    let mut cut = t.len() - STDERR_TAIL;
                    while !t.is_char_boundary(cut) {
                        cut += 1;
                    }
                    t.drain(..cut);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_listeners_then_counts_and_discards() {
        let out = concat!(
            "{\"message\":\"agent starting\"}\n",
            "not json\n",
            "{\"message\":\"listening\",\"listener\":\"credentials\",\"addr\":\"127.0.0.1:1\"}\n",
            "{\"message\":\"listening\",\"listener\":\"probes\",\"addr\":\"127.0.0.1:2\"}\n",
            "{\"message\":\"listening\",\"listener\":\"metrics\",\"addr\":\"127.0.0.1:3\"}\n",
            "{\"message\":\"credentials served\"}\n",
            "{\"message\":\"credentials served\"}\n",
        );
        let (tx, rx) = oneshot::channel();
        let lines = AtomicU64::new(0);
        let capture = Capture::default();
        capture.on.store(true, Ordering::Relaxed);
        drain_stdout(out.as_bytes(), tx, &lines, &capture);
        let addrs = rx.await.unwrap().unwrap();
        assert_eq!(addrs["metrics"].port(), 3);
        assert_eq!(lines.load(Ordering::Relaxed), 7);
        let kept = String::from_utf8(capture.bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(kept.matches("credentials served").count(), 2, "{kept}");

        let (tx, rx) = oneshot::channel();
        drain_stdout("{\"message\":\"boom\"}\n".as_bytes(), tx, &lines, &capture);
        assert!(rx.await.unwrap().unwrap_err().contains("boom"));
    }
}
