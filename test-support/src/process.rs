//! Child processes in tests: stopped and reaped on drop, their output captured and searchable.
//!
//! ```no_run
//! # async fn demo() {
//! use std::process::{Command, Stdio};
//! use std::time::Duration;
//! use pod_identity_test_support::process::{ChildGuard, wait_for_http_ok};
//! let mut agent = ChildGuard::new(
//!     Command::new("target/debug/pod-identity-agent").stdout(Stdio::piped()).spawn().unwrap(),
//! );
//! let logs = agent.capture_stdout();
//! logs.wait_for_json(|l| l["message"] == "ready", Duration::from_secs(10)).await.unwrap();
//! wait_for_http_ok("http://127.0.0.1:2703/readyz", Duration::from_secs(10)).await.unwrap();
//! // ... exercise it ...
//! drop(agent); // SIGTERM, then SIGKILL after the grace period; always reaped
//! logs.assert_no_secrets(&["FAKESECRET..."]);
//! # }
//! ```

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;
use tokio::sync::watch;

use crate::{TimedOut, lock};

/// How long [`ChildGuard`] waits after SIGTERM before it sends SIGKILL, unless told otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

enum Child {
    Std(std::process::Child),
    Tokio(tokio::process::Child),
}

impl Child {
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            Child::Std(c) => c.try_wait(),
            Child::Tokio(c) => c.try_wait(),
        }
    }

    fn id(&self) -> Option<u32> {
        match self {
            Child::Std(c) => Some(c.id()),
            Child::Tokio(c) => c.id(),
        }
    }

    fn kill(&mut self) -> io::Result<()> {
        match self {
            Child::Std(c) => c.kill(),
            Child::Tokio(c) => c.start_kill(),
        }
    }
}

/// Owns a child process: on drop it sends SIGTERM, waits up to the grace period, sends
/// SIGKILL, and reaps it, so no test leaves a process behind.
pub struct ChildGuard {
    child: Child,
    grace: Duration,
}

impl fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildGuard")
            .field("pid", &self.child.id())
            .field("grace", &self.grace)
            .finish()
    }
}

impl From<std::process::Child> for ChildGuard {
    fn from(child: std::process::Child) -> Self {
        Self::new(child)
    }
}

impl From<tokio::process::Child> for ChildGuard {
    fn from(child: tokio::process::Child) -> Self {
        Self::from_tokio(child)
    }
}

impl ChildGuard {
    pub fn new(child: std::process::Child) -> Self {
        Self {
            child: Child::Std(child),
            grace: DEFAULT_GRACE,
        }
    }

    pub fn from_tokio(child: tokio::process::Child) -> Self {
        Self {
            child: Child::Tokio(child),
            grace: DEFAULT_GRACE,
        }
    }

    /// How long to wait after SIGTERM before SIGKILL.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The pid, unless a tokio child was already reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts capturing stdout (which must have been `Stdio::piped()`) line by line.
    pub fn capture_stdout(&mut self) -> LogCapture {
        let reader: Box<dyn Read + Send> = match &mut self.child {
            Child::Std(c) => Box::new(c.stdout.take().expect("child stdout is not piped")),
            Child::Tokio(c) => Box::new(std::fs::File::from(
                c.stdout
                    .take()
                    .expect("child stdout is not piped")
                    .into_owned_fd()
                    .expect("child stdout into a blocking fd"),
            )),
        };
        LogCapture::start(reader)
    }

    /// Starts capturing stderr (which must have been `Stdio::piped()`) line by line.
    pub fn capture_stderr(&mut self) -> LogCapture {
        let reader: Box<dyn Read + Send> = match &mut self.child {
            Child::Std(c) => Box::new(c.stderr.take().expect("child stderr is not piped")),
            Child::Tokio(c) => Box::new(std::fs::File::from(
                c.stderr
                    .take()
                    .expect("child stderr is not piped")
                    .into_owned_fd()
                    .expect("child stderr into a blocking fd"),
            )),
        };
        LogCapture::start(reader)
    }

    /// The exit status if it has exited (and reaps it), without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends SIGTERM and returns at once (to test graceful shutdown; then
    /// [`wait_for_exit`](Self::wait_for_exit)). Does nothing if it already exited.
    pub fn terminate(&mut self) -> io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // Not reaped yet, so the pid is still ours even if the process is a zombie.
        let pid = self
            .child
            .id()
            .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?))
            .ok_or_else(|| io::Error::other("child has no pid"))?;
        kill_process(pid, Signal::TERM).map_err(io::Error::from)
    }

    /// Waits for the process to exit on its own, polling without blocking the runtime.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus, TimedOut> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                other => {
                    return Err(TimedOut {
                        waited_for: format!("process {:?} to exit", self.child.id()),
                        after: timeout,
                        detail: format!("last poll: {other:?}"),
                    });
                }
            }
        }
    }

    /// SIGTERM, up to the grace period for it to exit, then SIGKILL; reaps it and returns how
    /// it ended. Blocks the thread: in async tests prefer [`stop_async`](Self::stop_async).
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.terminate()?;
        let deadline = Instant::now() + self.grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        self.child.kill()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
    }

    /// As [`stop`](Self::stop), but sleeps on the tokio timer between polls, so a child whose
    /// shutdown depends on servers in this runtime (e.g. a fake upstream) can finish.
    pub async fn stop_async(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.terminate()?;
        let deadline = Instant::now() + self.grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        self.child.kill()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("ChildGuard: could not stop pid {:?}: {e}", self.child.id());
        }
    }
}

struct Captured {
    lines: Vec<String>,
    closed: bool,
}

struct CaptureShared {
    state: Mutex<Captured>,
    /// Bumped on every new line and at end of stream.
    changed: watch::Sender<u64>,
}

/// Lines read from a child's output on a background thread, kept for the whole test: wait for
/// one that matches, then assert on all of them (for example that no secret appears).
#[derive(Clone)]
pub struct LogCapture {
    shared: Arc<CaptureShared>,
}

impl fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("LogCapture")
            .field("lines", &state.lines.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl LogCapture {
    /// Reads `reader` line by line on a new thread until end of stream or error.
    /// Invalid UTF-8 is replaced, trailing `\r\n` trimmed.
    pub fn start(reader: impl Read + Send + 'static) -> Self {
        let shared = Arc::new(CaptureShared {
            state: Mutex::new(Captured {
                lines: Vec::new(),
                closed: false,
            }),
            changed: watch::Sender::new(0),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("log-capture".into())
            .spawn(move || {
                let mut reader = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf);
                            let line = line.trim_end_matches(['\n', '\r']).to_string();
                            lock(&writer.state).lines.push(line);
                            writer.changed.send_modify(|v| *v += 1);
                        }
                    }
                }
                lock(&writer.state).closed = true;
                writer.changed.send_modify(|v| *v += 1);
            })
            .expect("spawn log-capture thread");
        Self { shared }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.shared.state).lines.clone()
    }

    /// Every line so far, joined with `\n`.
    pub fn text(&self) -> String {
        lock(&self.shared.state).lines.join("\n")
    }

    /// The lines so far that parse as JSON (others are skipped).
    pub fn json_lines(&self) -> Vec<Value> {
        lock(&self.shared.state)
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether the stream ended (the child closed it or exited).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }

    /// Waits until the stream ends (the child closed it or exited); false if `timeout` passed
    /// first. Says nothing of the lines, which may be what the caller checks for secrets.
    pub async fn wait_for_end(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if self.is_closed() {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.is_closed();
            }
        }
    }

    /// Panics if any secret appears in the captured output (see [`crate::assert_no_secrets`]).
    #[track_caller]
    pub fn assert_no_secrets<S: AsRef<str>>(&self, secrets: &[S]) {
        crate::secrets::assert_no_secrets(&self.text(), secrets);
    }

    /// The first line so far or to come that matches. Fails early if the stream ends first.
    pub async fn wait_for_line(
        &self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, TimedOut> {
        self.wait_until("a matching line", timeout, |l| {
            matches(l).then(|| l.to_string())
        })
        .await
    }

    /// The first JSON line so far or to come that matches. Fails early if the stream ends first.
    pub async fn wait_for_json(
        &self,
        matches: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, TimedOut> {
        self.wait_until("a matching JSON line", timeout, |l| {
            serde_json::from_str::<Value>(l).ok().filter(|v| matches(v))
        })
        .await
    }

    /// As [`wait_for_line`](Self::wait_for_line), blocking the thread (for non-async tests).
    pub fn blocking_wait_for_line(
        &self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, TimedOut> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(&|l: &str| matches(l).then(|| l.to_string())) {
                Found::Yes(line) => return Ok(line),
                Found::Ended => return Err(self.timed_out("a matching line", timeout, true)),
                Found::NotYet if Instant::now() >= deadline => {
                    return Err(self.timed_out("a matching line", timeout, false));
                }
                Found::NotYet => std::thread::sleep(POLL),
            }
        }
    }

    async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> Result<T, TimedOut> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            match self.find(&pick) {
                Found::Yes(t) => return Ok(t),
                Found::Ended => return Err(self.timed_out(what, timeout, true)),
                Found::NotYet => {}
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(self.timed_out(what, timeout, false));
            }
        }
    }

    fn find<T>(&self, pick: &impl Fn(&str) -> Option<T>) -> Found<T> {
        let state = lock(&self.shared.state);
        match state.lines.iter().find_map(|l| pick(l)) {
            Some(t) => Found::Yes(t),
            None if state.closed => Found::Ended,
            None => Found::NotYet,
        }
    }

    fn timed_out(&self, what: &str, after: Duration, ended: bool) -> TimedOut {
        let state = lock(&self.shared.state);
        let tail: Vec<String> = state
            .lines
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|l| l.chars().take(300).collect())
            .collect();
        TimedOut {
            waited_for: what.to_string(),
            after,
            detail: format!(
                "{}{} line(s) captured; last ones:\n{}",
                if ended {
                    "the stream ended first; "
                } else {
                    ""
                },
                state.lines.len(),
                tail.join("\n")
            ),
        }
    }
}

enum Found<T> {
    Yes(T),
    NotYet,
    Ended,
}

/// Polls `GET url` until it answers 2xx, with a short backoff (10 ms doubling to 200 ms).
/// Ignores proxy settings: test servers are local.
pub async fn wait_for_http_ok(url: &str, timeout: Duration) -> Result<(), TimedOut> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build HTTP client");
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match client
            .get(url)
            .timeout(left.clamp(Duration::from_millis(10), Duration::from_secs(1)))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("last answer: HTTP {}", r.status()),
            Err(e) => format!("last error: {e}"),
        };
        if Instant::now() + backoff >= deadline {
            return Err(TimedOut {
                waited_for: format!("GET {url} to answer 2xx"),
                after: timeout,
                detail: last,
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).stdout(Stdio::piped());
        c
    }

    #[tokio::test]
    async fn captures_json_lines_and_stops_the_child_on_drop() {
        let mut guard = ChildGuard::new(
            sh(r#"echo '{"level":"INFO","message":"ready"}'; echo plain; exec sleep 30"#)
                .spawn()
                .unwrap(),
        );
        let pid = guard.id().unwrap();
        let logs = guard.capture_stdout();
        let ready = logs
            .wait_for_json(|l| l["message"] == "ready", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ready["level"], "INFO");
        logs.wait_for_line(|l| l == "plain", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(logs.json_lines().len(), 1);
        assert!(!logs.is_closed());

        let started = Instant::now();
        drop(guard);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        // The pipe closed with the child: waits now end at once instead of timing out.
        let err = logs
            .wait_for_line(|l| l == "never", Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(err.detail.contains("the stream ended first"), "{err}");
        assert!(err.detail.contains("plain"), "{err}");
        assert_eq!(
            logs.text(),
            "{\"level\":\"INFO\",\"message\":\"ready\"}\nplain"
        );
        logs.assert_no_secrets(&["FAKESECRET"]);
    }

    #[test]
    fn escalates_to_sigkill_after_the_grace_period() {
        let mut guard = ChildGuard::new(
            sh("trap '' TERM; echo armed; while :; do sleep 0.05; done")
                .spawn()
                .unwrap(),
        )
        .grace(Duration::from_millis(200));
        let logs = guard.capture_stdout();
        logs.blocking_wait_for_line(|l| l == "armed", Duration::from_secs(5))
            .unwrap();
        let started = Instant::now();
        let status = guard.stop().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        // Stopping again just reports the same end.
        assert_eq!(guard.stop().unwrap().signal(), Some(9));
    }

    #[tokio::test]
    async fn tokio_children_are_guarded_too() {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("echo up; exec sleep 30")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut guard = ChildGuard::from_tokio(child);
        let logs = guard.capture_stdout();
        logs.wait_for_line(|l| l == "up", Duration::from_secs(5))
            .await
            .unwrap();
        let status = guard.stop_async().await.unwrap();
        assert_eq!(status.signal(), Some(15), "{status:?}");

        let mut quick = ChildGuard::new(sh("exit 64").spawn().unwrap());
        let status = quick.wait_for_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(64));
    }

    #[tokio::test]
    async fn wait_for_http_ok_polls_until_the_server_is_up() {
        // Find a free port, then start serving on it only after a while.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
            axum::serve(listener, app).await.unwrap();
        });
        wait_for_http_ok(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let err = wait_for_http_ok(
            &format!("http://127.0.0.1:{port}/missing"),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(err.detail.contains("404"), "{err}");
        server.abort();
    }
}
