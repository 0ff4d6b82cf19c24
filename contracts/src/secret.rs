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

/// A `serde_json` error's message without the input it quotes. serde names a string it did not
/// expect in double quotes, escaped (`invalid type: string "…", expected a sequence`), and other
/// values (numbers, variants, field names) in backticks, unescaped; a token or a secret key can be
/// that value. Each double-quoted string becomes `"…"`, and the message ends at its first
/// backtick, since an unescaped value cannot be told from the text after it; what kind of error
/// it was and where (line, column) stay.
pub fn json_error_message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let place = if error.line() == 0 {
        String::new()
    } else {
        format!(" at line {} column {}", error.line(), error.column())
    };
    let body = full.strip_suffix(place.as_str()).unwrap_or(&full);
    let mut out = String::with_capacity(full.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str("\"…\"");
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            '`' => break,
            c => out.push(c),
        }
    }
    let out = out.trim_end_matches([' ', ',', ':']);
    format!("{out}{place}")
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
    fn json_errors_keep_what_and_where_but_not_the_input() {
        let message = |json: &str| {
            let e = serde_json::from_str::<Vec<u64>>(json).unwrap_err();
            json_error_message(&e)
        };
        assert_eq!(
            message(r#""SECRET \" with \\ quotes""#),
            r#"invalid type: string "…", expected a sequence at line 1 column 26"#
        );
        assert_eq!(
            message(r#"["SECRET"]"#),
            r#"invalid type: string "…", expected u64 at line 1 column 9"#
        );
        assert_eq!(
            message("[1, -7]"),
            "invalid value: integer at line 1 column 6"
        );
        assert_eq!(
            message("[1,"),
            "EOF while parsing a value at line 1 column 3"
        );
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Kind {
            Pod,
        }
        let e = serde_json::from_str::<Kind>(r#""SECRET`, expected `Pod`""#).unwrap_err();
        assert_eq!(
            json_error_message(&e),
            "unknown variant at line 1 column 25"
        );
        let e = serde_json::from_value::<Vec<u64>>(serde_json::json!("SECRET")).unwrap_err();
        assert_eq!(
            json_error_message(&e),
            r#"invalid type: string "…", expected a sequence"#
        );
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
