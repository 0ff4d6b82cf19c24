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
