//! The token parser every component shares (contracts' `UnverifiedToken::parse`, what the agent
//! runs on every unknown token) and the claim checks on what it returns.
//!
//! Input: a mode byte, then either the whole token (even mode) or the raw claims bytes (odd
//! mode), wrapped in an RS256 header and a signature, so the fuzzer works on the JSON directly.
//! Invariants: the same answer twice; a refusal is bounded and never holds the token; parsed
//! claims re-serialise to themselves; no check panics or overflows at any clock.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_contracts::claims::{ServiceAccountClaims, UnverifiedToken, parse_subject};
use pod_identity_fuzz::{NOW, assert_does_not_echo, unverified_token};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_string(),
            Err(_) => return,
        }
    } else {
        unverified_token(rest)
    };
    let parsed = UnverifiedToken::parse(&token);
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", UnverifiedToken::parse(&token)),
        "deterministic"
    );
    let parsed = match parsed {
        Err(e) => return assert_does_not_echo(&e.to_string(), &token),
        Ok(p) => p,
    };
    assert!(
        [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
            "EdDSA"
        ]
        .contains(&parsed.header.alg.as_str()),
        "accepted alg {:?}",
        parsed.header.alg
    );
    let claims = parsed.claims;
    let json = serde_json::to_vec(&claims).expect("claims serialise");
    let back: ServiceAccountClaims = serde_json::from_slice(&json).expect("and parse back");
    assert_eq!(back, claims, "claims round-trip");

    if claims.check_structure().is_ok() {
        let (ns, sa) = parse_subject(&claims.sub).expect("a checked subject parses");
        let k8s = claims.kubernetes.as_ref().expect("checked");
        assert_eq!(
            (ns, sa),
            (k8s.namespace.as_str(), k8s.serviceaccount.name.as_str())
        );
        assert!(claims.pod().is_some());
        assert!(!ns.contains(':') || !sa.contains(':'));
    }
    let exp = claims.exp;
    let iat = claims.iat.unwrap_or(0);
    let nbf = claims.nbf.unwrap_or(0);
    for now in [
        i64::MIN,
        -1,
        0,
        NOW,
        exp,
        exp.wrapping_sub(1),
        iat,
        nbf,
        i64::MAX,
    ] {
        for leeway in [0, 30, i64::MAX] {
            let timely = claims.check_time(now, leeway);
            if timely.is_ok() && leeway == 0 {
                assert!(now < exp, "accepted at {now}, expired at {exp}");
                assert!(claims.nbf.is_none_or(|nbf| now >= nbf));
            }
            if claims.check_lifetime(now, leeway, 86_400).is_ok() {
                assert!(claims.iat.is_some());
                assert!(exp.saturating_sub(iat) <= 86_400);
            }
        }
    }
});
