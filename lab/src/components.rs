//! The project's own binaries as the lab's child processes: the agent, eks-auth and demo-app.
//!
//! `pod-identity-lab` is a multi-call binary ([`crate::entry`]): `pod-identity-lab component
//! agent …` runs exactly `pod-identity-agent …`, and so on, so one `cargo run` builds everything
//! the lab starts. Each child gets an environment built from nothing (never the caller's AWS
//! variables), and its stdout and stderr are read line by line: the components' own JSON log
//! lines are what the trace quotes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The subcommand of the multi-call binary that runs a component.
pub const COMPONENT_SUBCOMMAND: &str = "component";

/// How long a component may take to say it is listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The project binaries the lab runs as processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Agent,
    EksAuth,
    DemoApp,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Agent => "agent",
            Component::EksAuth => "eks-auth",
            Component::DemoApp => "demo-app",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Component::Agent, Component::EksAuth, Component::DemoApp]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("cannot find the lab's own executable: {0}")]
    SelfExe(std::io::Error),
    #[error("cannot start {component}: {source}")]
    Spawn {
        component: &'static str,
        source: std::io::Error,
    },
    #[error("{component} did not {what} within {secs} s; its output:\n{output}")]
    Timeout {
        component: &'static str,
        what: String,
        secs: u64,
        output: String,
    },
    #[error("{component} exited with {status}; its output:\n{output}")]
    Failed {
        component: &'static str,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How to run the lab's own executable as a component.
#[derive(Debug, Clone)]
pub struct Launcher {
    exe: PathBuf,
    /// Programs put before the executable (e.g. `setpriv …` for the agent on a node).
    wrapper: Vec<OsString>,
}

impl Launcher {
    pub fn current() -> Result<Self, ComponentError> {
        Ok(Self {
            exe: std::env::current_exe().map_err(ComponentError::SelfExe)?,
            wrapper: Vec::new(),
        })
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// The same executable, started through `wrapper` (the program and its arguments).
    pub fn wrapped<I, S>(&self, exe: PathBuf, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            exe,
            wrapper: wrapper.into_iter().map(Into::into).collect(),
        }
    }

    /// A command for `component` with `args`, an environment of exactly `env`, piped output.
    pub fn command<I, S>(
        &self,
        component: Component,
        args: I,
        env: &BTreeMap<String, String>,
    ) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        cmd.arg(COMPONENT_SUBCOMMAND)
            .arg(component.name())
            .args(args.into_iter().map(Into::into))
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// The lines a child wrote to one stream, kept for the trace and for waiting on.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    inner: Arc<LinesInner>,
}

#[derive(Debug, Default)]
struct LinesInner {
    lines: Mutex<Vec<String>>,
    changed: Notify,
}

impl Lines {
    fn follow<R: AsyncRead + Unpin + Send + 'static>(&self, reader: R) -> JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lock(&inner.lines).push(line);
                inner.changed.notify_waiters();
            }
            inner.changed.notify_waiters();
        })
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        lock(&self.inner.lines).clone()
    }

    /// Every line so far that is a JSON object.
    pub fn json(&self) -> Vec<Value> {
        lock(&self.inner.lines)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Wait for a JSON line matching `pred`.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            if let Some(v) = self.json().into_iter().find(|v| pred(v)) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running component.
#[derive(Debug)]
pub struct Running {
    pub component: Component,
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
    /// The tasks reading the two pipes; they end when the process has exited and said all.
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn spawn(component: Component, mut cmd: Command) -> Result<Self, ComponentError> {
        let mut child = cmd.spawn().map_err(|source| ComponentError::Spawn {
            component: component.name(),
            source,
        })?;
        let stdout = Lines::default();
        let stderr = Lines::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(stdout.follow(out));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(stderr.follow(err));
        }
        Ok(Self {
            component,
            child,
            stdout,
            stderr,
            readers,
        })
    }

    /// Every JSON log line of the component, from both streams.
    pub fn log(&self) -> Vec<Value> {
        let mut all = self.stdout.json();
        all.extend(self.stderr.json());
        all
    }

    /// The component's output, for an error message.
    pub fn output(&self) -> String {
        let mut lines = self.stdout.all();
        lines.extend(self.stderr.all());
        let start = lines.len().saturating_sub(30);
        lines[start..].join("\n")
    }

    /// The address of the listener named `listener`, from its `listening` log line.
    pub async fn listening(
        &mut self,
        listener: &str,
    ) -> Result<std::net::SocketAddr, ComponentError> {
        let found = tokio::select! {
            v = self.stdout.wait_for(
                |v| v["message"] == "listening" && v["listener"] == listener,
                START_TIMEOUT,
            ) => v,
            status = self.child.wait() => {
                let status = status?;
                self.drain().await;
                return Err(ComponentError::Failed {
                    component: self.component.name(),
                    status,
                    output: self.output(),
                });
            }
        };
        found
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
            .ok_or_else(|| ComponentError::Timeout {
                component: self.component.name(),
                what: format!("listen ({listener})"),
                secs: START_TIMEOUT.as_secs(),
                output: self.output(),
            })
    }

    /// Wait for the process to exit (bounded) and for its output to be read.
    pub async fn finish(
        &mut self,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus, ComponentError> {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                let _ = self.child.kill().await;
                return Err(ComponentError::Timeout {
                    component: self.component.name(),
                    what: "finish".into(),
                    secs: timeout.as_secs(),
                    output: self.output(),
                });
            }
        };
        self.drain().await;
        Ok(status)
    }

    /// After the process exited: wait for the readers to take in everything it wrote (bounded,
    /// in case something it started still holds a pipe open).
    async fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
    }

    /// SIGTERM, as the kubelet stops a container, so the component drains and flushes its
    /// logs; SIGKILL if it has not exited within five seconds.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if self.finish(Duration::from_secs(5)).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
