//! Test helpers for every crate in this workspace, and the one place they live.
//!
//! This crate owns what tests need but production code must never see: token minting with
//! checked-in test-only keys ([`tokens`], [`keys`]), a fake EKS Auth upstream that speaks the real
//! rest-json wire format on loopback ([`fake_eks_auth`]), a fake service-account issuer
//! ([`fake_issuer`]), moto as the real STS peer ([`moto`]), real SDKs in other languages as a
//! pod's program ([`sdk_clients`]), the real eks-auth binary as a child ([`eks_auth_process`]),
//! AWS's official agent, when a developer has built one, to compare ours with ([`official_agent`]),
//! guards and log capture for child processes ([`process`]), slow clients by the thousand and
//! the RSS they cost ([`slow_clients`]), the leak check that no secret reaches captured output
//! ([`secrets`]), also at a process's most verbose log level ([`verbose`]), a private CA for the
//! HTTPS listeners ([`tls`]), and the local Kubernetes control plane of `scripts/cluster`
//! ([`cluster`]). It is `publish = false` and only ever a dev-dependency; it uses real HTTP on
//! `127.0.0.1` and real processes, never mocks of our own code.

use std::fmt;
use std::time::Duration;

pub mod agent_process;
pub mod binaries;
pub mod cluster;
pub mod credential_sources;
pub mod eks_auth_process;
pub mod fake_eks_auth;
pub mod fake_issuer;
pub mod keys;
pub mod manifests;
pub mod moto;
pub mod node_cluster;
pub mod official_agent;
pub mod pod;
pub mod process;
pub mod sdk_clients;
pub mod secrets;
pub mod slow_clients;
pub mod tls;
pub mod tokens;
pub mod verbose;

pub use agent_process::AgentProcess;
pub use binaries::workspace_bin;
pub use fake_eks_auth::{Behavior, FakeEksAuth};
pub use process::{ChildGuard, LogCapture, wait_for_http_ok};
pub use secrets::assert_no_secrets;
pub use tokens::TokenBuilder;

/// A wait that ran out of time (or whose source ended first). `Display` says what was awaited,
/// for how long, and what was seen instead, so `.unwrap()` in a test explains itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What the caller waited for.
    pub waited_for: String,
    /// How long it waited.
    pub after: Duration,
    /// What was seen instead (last status, captured lines, ...).
    pub detail: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up waiting for {} after {:?}; {}",
            self.waited_for, self.after, self.detail
        )
    }
}

impl std::error::Error for TimedOut {}

/// Lock a mutex even if a panicking test poisoned it: test state stays readable for the report.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
