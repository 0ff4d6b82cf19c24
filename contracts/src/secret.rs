//! Secrets that must never reach a log line, and the short fingerprint logged in their place.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A string that is a secret (a token, a secret key, a session token).
///
/// `Debug` and `Display` print `** redacted **`, so a secret inside any struct that derives `Debug`
/// is safe to log by accident. Serialization writes the real value: that is the one place it goes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call sites are few and easy to audit with grep.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Short, stable, non-reversible identifier for logs.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("** redacted **")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The SHA-256 digest of a secret, for use as a map key: raw tokens are never keys.
pub fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

/// `sha256:` and the first 12 hex digits of the digest: enough to follow one token through every
/// component's logs, far too little to recover or forge anything.
pub fn fingerprint(value: &[u8]) -> String {
    fingerprint_of_digest(&digest(value))
}

/// The fingerprint of an already computed digest (see [`digest`]).
pub fn fingerprint_of_digest(digest: &[u8; 32]) -> String {
    let mut out = String::with_capacity(19);
    out.push_str("sha256:");
    crate::ids::push_hex(&mut out, &digest[..6]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("AKIAsecretvalue");
        assert_eq!(format!("{s:?}"), "** redacted **");
        assert_eq!(format!("{s}"), "** redacted **");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let dbg = format!("{:?}", Holder { token: s.clone() });
        assert!(!dbg.contains("AKIAsecretvalue"), "{dbg}");
        assert_eq!(s.expose(), "AKIAsecretvalue");
    }

    #[test]
    fn serializes_the_value_transparently() {
        let s = Secret::new("v");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"v\"");
    }

    #[test]
    fn fingerprint_is_short_stable_and_distinct() {
        let a = fingerprint(b"token-a");
        assert_eq!(a, fingerprint(b"token-a"));
        assert_ne!(a, fingerprint(b"token-b"));
        assert_eq!(a.len(), "sha256:".len() + 12);
        assert!(a.starts_with("sha256:"));
    }
}
