//! The leak check at the most verbose log level, on a real process's output.
//!
//! A process under test gets AWS credentials whose secret key and session token are canaries
//! ([`SigningCanaries`]): unique to the run, and only capital letters and digits, so that no
//! encoding a log line might apply (JSON, URL, a header's) disguises them. It does a real exchange
//! at its most verbose level, signing with them; [`stop_and_assert_no_secrets`] then stops it, so
//! that its log writer has written out every line, and checks all it printed: that the level took
//! effect (some line below INFO: a test whose flag was ignored would otherwise pass by logging
//! little), and that neither a canary nor any other secret of the exchange appears.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use pod_identity_contracts::Secret;

use crate::process::{ChildGuard, LogCapture};

/// The AWS SDK's own switches that make its trace lines show the bodies it signs
/// (`aws-sigv4`) and the bodies of responses it marks sensitive (`aws-smithy-runtime`): set, a
/// trace-level test covers what an operator debugging a call would turn on.
pub const BODIES_LOGGED: [(&str, &str); 2] = [
    ("LOG_SIGNABLE_BODY", "true"),
    ("LOG_SENSITIVE_BODIES", "true"),
];

/// How long a stopped process's output may take to end.
const END_TIMEOUT: Duration = Duration::from_secs(10);

/// A secret no one else has: `CANARY`, the letters and digits of `what` in capitals, and 32
/// random hex digits in capitals.
pub fn canary(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let random = RandomState::new();
    let mut out = String::from("CANARY");
    out.extend(
        what.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase()),
    );
    for salt in 0..2u8 {
        out.push_str(&format!(
            "{:016X}",
            random.hash_one((n, now, std::process::id(), salt))
        ));
    }
    out
}

/// A secret key and a session token for a process's environment, both canaries. `Debug` shows
/// neither.
#[derive(Debug, Clone)]
pub struct SigningCanaries {
    pub secret_access_key: Secret,
    pub session_token: Secret,
}

impl Default for SigningCanaries {
    fn default() -> Self {
        Self::new()
    }
}

impl SigningCanaries {
    pub fn new() -> Self {
        Self {
            secret_access_key: Secret::new(canary("secretkey")),
            session_token: Secret::new(canary("sessiontoken")),
        }
    }

    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, to set after a launcher's own
    /// credentials (whose access key id stays).
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.expose()),
            ("AWS_SESSION_TOKEN", self.session_token.expose()),
        ]
    }

    /// Both, for the leak check.
    pub fn secrets(&self) -> Vec<String> {
        vec![
            self.secret_access_key.expose().to_string(),
            self.session_token.expose().to_string(),
        ]
    }
}

/// Stops `child` (SIGTERM, as a kubelet would, so its log writer writes out what it holds) and
/// waits for `outputs` to end; then panics unless some JSON line among them is below INFO, or if
/// any of `secrets` appears in any of them (reported masked, see [`crate::assert_no_secrets`]).
pub async fn stop_and_assert_no_secrets<S: AsRef<str>>(
    child: &mut ChildGuard,
    outputs: &[&LogCapture],
    secrets: &[S],
) {
    child.stop_async().await.expect("stop the process");
    for output in outputs {
        assert!(
            output.wait_for_end(END_TIMEOUT).await,
            "the output did not end within {END_TIMEOUT:?} of the process stopping"
        );
    }
    let lines: Vec<serde_json::Value> = outputs.iter().flat_map(|o| o.json_lines()).collect();
    let verbose = lines
        .iter()
        .filter(|l| matches!(l["level"].as_str(), Some("DEBUG" | "TRACE")))
        .count();
    assert!(
        verbose > 0,
        "none of {} JSON lines is at DEBUG or TRACE: the verbose level did not take effect",
        lines.len()
    );
    for output in outputs {
        output.assert_no_secrets(secrets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_are_unique_and_plain() {
        let a = canary("session-token");
        let b = canary("session-token");
        assert_ne!(a, b);
        assert!(a.starts_with("CANARYSESSIONTOKEN"), "{a}");
        assert_eq!(a.len(), "CANARYSESSIONTOKEN".len() + 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        let signing = SigningCanaries::new();
        assert!(!format!("{signing:?}").contains("CANARY"));
        assert_eq!(signing.env()[1].1, signing.session_token.expose());
    }
}
