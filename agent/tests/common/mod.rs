//! The agent binary of this crate, started through test-support's shared launcher.
#![allow(dead_code, unused_imports)]

pub use pod_identity_test_support::AgentProcess;
use pod_identity_test_support::FakeEksAuth;
pub use pod_identity_test_support::agent_process::{node_environment, raw_request, status_of};

/// This crate's `pod-identity-agent` against `fake`, plus `extra` flags.
pub async fn start(fake: &FakeEksAuth, extra: &[&str]) -> AgentProcess {
    AgentProcess::start(
        env!("CARGO_BIN_EXE_pod-identity-agent"),
        fake.cluster(),
        &fake.url(),
        extra,
    )
    .await
}

/// This test binary re-run as a pod: only the ignored test `test` runs, with `flag` set and a
/// pod's environment pointing at `agent` with `token_file`. Async, so a fake upstream on the
/// caller's runtime keeps answering meanwhile.
pub fn pod_child(
    test: &str,
    flag: &str,
    agent: &AgentProcess,
    token_file: &std::path::Path,
    home: &std::path::Path,
) -> tokio::process::Command {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args([test, "--exact", "--ignored", "--nocapture"]);
    pod_identity_test_support::pod::pod_environment(
        &mut child,
        &agent.credentials_url(),
        token_file,
        home,
    );
    child.env(flag, "1");
    tokio::process::Command::from(child)
}
