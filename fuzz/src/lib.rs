//! What the fuzz targets share: a fixed clock, the eks-auth verifier they attack (trusting the
//! checked-in test keys), token assembly from fuzzer-chosen pieces, and the invariants every
//! refusal message keeps. See docs/fuzzing.md.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eks_auth::keys::{KeySet, KeySource};
use eks_auth::metrics::Metrics;
use eks_auth::verify::{Verifier, VerifierSettings};
use pod_identity_contracts::constants::AUDIENCE;
use pod_identity_test_support::keys::{self, TestKey};
use pod_identity_test_support::tokens::DEFAULT_ISSUER;

/// The clock of every target (2025-06-15T15:06:40Z): a decision must not depend on when the
/// fuzzer runs, and the seed tokens are minted for it.
pub const NOW: i64 = 1_750_000_000;

/// eks-auth's defaults (`--leeway 30s`, `--max-token-lifetime 24h`).
pub const LEEWAY: i64 = 30;
pub const MAX_LIFETIME: i64 = 86_400;

/// Longest refusal message any target accepts: a message that grows with its input echoes it.
pub const MAX_MESSAGE_BYTES: usize = 300;

/// A verifier as eks-auth builds one, with the issuer's keys installed: the primary RSA test key
/// and the EC one. [`keys::SECOND`] is the key no one trusts.
pub fn verifier() -> &'static Verifier {
    static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
        let v = Verifier::new(
            VerifierSettings {
                issuer: DEFAULT_ISSUER.into(),
                audience: AUDIENCE.into(),
                leeway: Duration::from_secs(LEEWAY as u64),
                min_refresh: Duration::from_secs(30),
                max_lifetime: Duration::from_secs(MAX_LIFETIME as u64),
            },
            KeySource::File("/nonexistent/jwks.json".into()),
            Metrics::new(),
        );
        let jwks = keys::jwks_of(&[keys::PRIMARY, keys::EC]).to_string();
        v.set_keys(KeySet::from_jwks(jwks.as_bytes()).expect("the test JWKS loads"));
        v
    });
    &VERIFIER
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature` from raw header and payload bytes, signed with `key` whatever the
/// header says (RSA signing costs about a millisecond, so the targets mostly pick the EC key).
pub fn sign(header: &[u8], payload: &[u8], key: &TestKey) -> String {
    static ENCODING: LazyLock<Vec<(&'static str, jsonwebtoken::EncodingKey)>> =
        LazyLock::new(|| {
            [keys::PRIMARY, keys::SECOND, keys::EC]
                .iter()
                .map(|k| (k.kid, k.encoding_key()))
                .collect()
        });
    let encoding = &ENCODING
        .iter()
        .find(|(kid, _)| *kid == key.kid)
        .expect("a checked-in test key")
        .1;
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), encoding, key.alg).expect("signing works");
    format!("{message}.{signature}")
}

/// The header Kubernetes writes for `key`: `{"alg":…,"kid":…}`.
pub fn header_for(key: &TestKey) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"alg": format!("{:?}", key.alg), "kid": key.kid}))
        .expect("JSON")
}

/// An unsigned-looking token around fuzzer-chosen claims: an RS256 header and a non-empty
/// signature that nothing verifies (what the agent, which has no keys, sees).
pub fn unverified_token(payload: &[u8]) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(br#"{"alg":"RS256","kid":"test-key-1"}"#),
        b64(payload)
    )
}

/// The first `n - 1` newline-separated lines of `data` and the rest, as the targets split their
/// input into request parts.
pub fn lines(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == b'\n').collect()
}

/// A refusal message says what was wrong, not what was sent: bounded, and never the token (or a
/// long piece of it) when the token is long enough to tell from the message's own words.
pub fn assert_does_not_echo(message: &str, token: &str) {
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "a {}-byte message: {message}",
        message.len()
    );
    let token = token.trim();
    if token.len() > 16 && token.contains('.') {
        assert!(
            !message.contains(token),
            "the message holds the token: {message}"
        );
    }
    let base64url = |s: &&str| {
        s.len() > 24
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    for segment in token.split('.').filter(base64url) {
        assert!(
            !message.contains(segment),
            "the message holds a token segment: {message}"
        );
    }
}
