//! The lab's node: when run as root on Linux, a network namespace of its own in which the agent
//! runs as a DaemonSet does (link-local `169.254.170.23:80`, uid 65534, only
//! `CAP_NET_BIND_SERVICE`); otherwise loopback, and the trace says so.
//!
//! The lab's main thread moves into the namespace before any other thread exists, so every
//! server the lab starts, and every process it spawns, lives on that node and nowhere else:
//! nothing binds on the machine's own addresses, and the namespace disappears with the lab.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unprivileged user the agent runs as on a node (`nobody`).
pub const AGENT_UID: &str = "65534";

/// Where the lab runs the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMode {
    /// In the lab's network namespace `name`, on the link-local address and port 80.
    Namespace { name: String },
    /// On 127.0.0.1 with an ephemeral port; `why` says why not a namespace.
    Loopback { why: String },
}

impl NodeMode {
    pub fn is_namespace(&self) -> bool {
        matches!(self, NodeMode::Namespace { .. })
    }
}

/// The namespace, deleted on drop.
#[derive(Debug)]
pub struct Node {
    pub mode: NodeMode,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("cannot enter the namespace {name}: {source}")]
    Enter {
        name: String,
        source: std::io::Error,
    },
}

/// Why the lab cannot be a node here, if it cannot.
pub fn namespace_unavailable(prefer_loopback: bool) -> Option<String> {
    if prefer_loopback {
        return Some("--loopback was given".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (a network namespace needs it)".into());
    }
    for tool in ["ip", "setpriv"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("`{tool}` is not installed (iproute2 / util-linux)"));
        }
    }
    None
}

impl Node {
    /// Become the node: create a network namespace and move the calling thread into it. Call
    /// before any other thread exists (before the tokio runtime), so everything inherits it.
    pub fn enter_namespace() -> Result<Self, NodeError> {
        let name = format!("pod-identity-lab-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let node = Node {
            mode: NodeMode::Namespace { name: name.clone() },
        };
        let path = format!("/run/netns/{name}");
        let enter = File::open(&path).and_then(|file| {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(std::io::Error::from)
        });
        enter.map_err(|source| NodeError::Enter {
            name: name.clone(),
            source,
        })?;
        run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
        Ok(node)
    }

    pub fn loopback(why: String) -> Self {
        Node {
            mode: NodeMode::Loopback { why },
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let NodeMode::Namespace { name } = &self.mode {
            let _ = Command::new("ip").args(["netns", "delete", name]).output();
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), NodeError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| NodeError::Command {
        command: shown.clone(),
        output: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NodeError::Command {
        command: shown,
        output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The arguments of `setpriv` that start a program as the DaemonSet's container does: uid and
/// gid 65534, no supplementary groups, `CAP_NET_BIND_SERVICE` inheritable and ambient (so the
/// agent holds it after exec and drops it itself once bound).
pub fn setpriv_wrapper() -> Vec<String> {
    [
        "setpriv",
        "--reuid",
        AGENT_UID,
        "--regid",
        AGENT_UID,
        "--clear-groups",
        "--inh-caps",
        "+net_bind_service",
        "--ambient-caps",
        "+net_bind_service",
    ]
    .map(str::to_string)
    .to_vec()
}

/// An executable uid 65534 can run: `exe` itself when every directory above it lets others in
/// and the file lets others execute it, else a copy in `dir` (made world-readable).
pub fn executable_for_others(exe: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    let others_can = |p: &Path, bits: u32| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & bits == bits)
            .unwrap_or(false)
    };
    let reachable = exe.ancestors().skip(1).all(|d| others_can(d, 0o001));
    if reachable && others_can(exe, 0o005) {
        return Ok(exe.to_path_buf());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.join("pod-identity-lab");
    std::fs::copy(exe, &copy)?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}

/// Write the agent's own projected token (`--identity-token-file`) as a kubelet would: readable
/// by the agent and no other user. `dir/agent-identity/token`, mode 0400; when the agent runs as
/// [`AGENT_UID`] (`as_agent`), owned by it, with `dir` made traversable (0711) but not listable.
pub fn write_agent_token(dir: &Path, token: &str, as_agent: bool) -> std::io::Result<PathBuf> {
    let sub = dir.join("agent-identity");
    std::fs::create_dir_all(&sub)?;
    let path = sub.join("token");
    std::fs::write(&path, token)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
    if as_agent {
        let uid: u32 = AGENT_UID.parse().expect("AGENT_UID is a number");
        std::os::unix::fs::chown(&path, Some(uid), None)?;
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o711))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_executable_others_cannot_reach_is_copied_where_they_can() {
        let base = tempfile::tempdir().unwrap();
        let private = base.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let exe = private.join("tool");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = base.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let usable = executable_for_others(&exe, &out).unwrap();
        assert_eq!(usable, out.join("pod-identity-lab"));
        let mode = std::fs::metadata(&usable).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn loopback_is_chosen_when_asked() {
        assert_eq!(
            namespace_unavailable(true).as_deref(),
            Some("--loopback was given")
        );
    }
}
