//! eks-auth's token verification (`Verifier::verify_cached`, the only gate before STS) on
//! tokens that carry valid signatures: the target signs fuzzer-chosen claims (and, if asked,
//! a fuzzer-chosen JOSE header) with a checked-in test key, so the fuzzer spends its time on the
//! claim checks behind the signature rather than on forging one.
//!
//! Input: a flags byte, then the claims JSON, or (flag 4) `header JSON \n claims JSON`.
//! Flags & 3 pick the signer: 0 the trusted EC key, 1 the trusted RSA key, 2 the untrusted RSA
//! key, 3 none (the rest is the whole token, as sent).
//! Invariants: a token signed by an untrusted key, or whose header `alg` is not its signer's, is
//! never accepted; an accepted token passes every documented claim check when re-checked by the
//! contracts parser (issuer, audience, time with leeway, lifetime, subject = kubernetes.io, a pod
//! with name and uid) and both parsers read the same claims; refusals are bounded, never hold the
//! token, and are InvalidToken or ExpiredToken; the same verdict twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_contracts::claims::UnverifiedToken;
use pod_identity_contracts::constants::AUDIENCE;
use pod_identity_contracts::eks_auth::ErrorKind;
use pod_identity_fuzz::{
    LEEWAY, MAX_LIFETIME, NOW, assert_does_not_echo, header_for, sign, verifier,
};
use pod_identity_test_support::keys::{self, TestKey};
use pod_identity_test_support::tokens::DEFAULT_ISSUER;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let signer: Option<TestKey> = match flags & 3 {
        0 => Some(keys::EC),
        1 => Some(keys::PRIMARY),
        2 => Some(keys::SECOND),
        _ => None,
    };
    let (token, header) = match signer {
        None => match std::str::from_utf8(rest) {
            Ok(t) => (t.to_string(), None),
            Err(_) => return,
        },
        Some(key) => {
            let (header, claims) = if flags & 4 == 4 {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => (rest[..i].to_vec(), &rest[i + 1..]),
                    None => return,
                }
            } else {
                (header_for(&key), rest)
            };
            (sign(&header, claims, &key), Some(header))
        }
    };

    let verdict = verifier().verify_cached(&token, NOW);
    assert_eq!(
        format!("{verdict:?}"),
        format!("{:?}", verifier().verify_cached(&token, NOW)),
        "deterministic"
    );
    let verified = match verdict {
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::InvalidToken | ErrorKind::ExpiredToken),
                "{e:?}"
            );
            return assert_does_not_echo(&e.to_string(), &token);
        }
        Ok(v) => v,
    };

    // Accepted: only a trusted signer, under its own algorithm.
    if let (Some(key), Some(header)) = (signer, header) {
        assert_ne!(
            key,
            keys::SECOND,
            "accepted a token signed by an untrusted key"
        );
        let alg = serde_json::from_slice::<serde_json::Value>(&header)
            .ok()
            .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_string));
        assert_eq!(
            alg.as_deref(),
            Some(format!("{:?}", key.alg).as_str()),
            "accepted a header alg that is not its signer's"
        );
    }
    // Every documented claim check holds, re-checked by the other parser.
    let parsed = UnverifiedToken::parse(&token).expect("a verified token parses unverified too");
    let c = &verified.claims;
    assert_eq!(&parsed.claims, c, "both parsers read the same claims");
    assert_eq!(c.iss, DEFAULT_ISSUER);
    c.check_audience(AUDIENCE).expect("audience");
    c.check_time(NOW, LEEWAY).expect("time");
    c.check_lifetime(NOW, LEEWAY, MAX_LIFETIME)
        .expect("lifetime");
    c.check_structure().expect("structure");
    assert_eq!(
        c.subject().expect("subject"),
        (
            verified.namespace.as_str(),
            verified.service_account.as_str()
        )
    );
    let pod = c.pod().expect("pod");
    assert_eq!(
        (&pod.name, &pod.uid),
        (&verified.pod_name, &verified.pod_uid)
    );
    assert!(!pod.name.is_empty() && !pod.uid.is_empty());
});
