//! The agent's credentials request, up to where its cache takes over: the path, the Host check
//! and the token checks (`validate::check_host`, `validate::check_token`), in the order
//! `server::credentials` runs them, on a request head built from fuzzer bytes by the `http`
//! crate as hyper hands it over.
//!
//! Input: a flags byte, then `request-target \n Host \n Authorization` (flag 1: the last line
//! is the token's claims JSON, wrapped into a JWT; flag 2: no Host; flag 4: no Authorization).
//! Invariants: the same decision twice; refusals are 403 (Host) or 400 (token), bounded, never
//! hold the token, and carry its fingerprint exactly when one was sent; an accepted token is the
//! trimmed header, time-valid at the clock given and a pod's service-account token.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use http::header::{AUTHORIZATION, HOST};
use libfuzzer_sys::fuzz_target;
use pod_identity_agent::validate::{self, CheckedToken, Refusal};
use pod_identity_contracts::constants::CREDENTIALS_PATH;
use pod_identity_contracts::secret::fingerprint;
use pod_identity_fuzz::{NOW, assert_does_not_echo, lines, unverified_token};

static BIND_HOSTS: LazyLock<Vec<IpAddr>> = LazyLock::new(|| {
    vec![
        "169.254.170.23".parse().expect("IPv4"),
        "fd00:ec2::23".parse().expect("IPv6"),
    ]
});

#[derive(Debug)]
enum Decision<'a> {
    NotFound,
    Refused(Refusal),
    /// Ready for the cache.
    Checked(CheckedToken<'a>),
}

fn decide(req: &http::Request<()>) -> Decision<'_> {
    if req.uri().path() != CREDENTIALS_PATH {
        return Decision::NotFound;
    }
    if let Err(r) = validate::check_host(req.uri().host(), req.headers(), &BIND_HOSTS) {
        return Decision::Refused(r);
    }
    match validate::check_token(req.headers(), NOW) {
        Ok(t) => Decision::Checked(t),
        Err(r) => Decision::Refused(r),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts = lines(rest, 3);
    let (target, host, auth) = match parts.as_slice() {
        [t, h, a] => (*t, *h, *a),
        _ => return,
    };
    let auth = if flags & 1 == 1 {
        unverified_token(auth).into_bytes()
    } else {
        auth.to_vec()
    };
    let mut builder = http::Request::builder().uri(target);
    if flags & 2 == 0 {
        builder = builder.header(HOST, host);
    }
    if flags & 4 == 0 {
        builder = builder.header(AUTHORIZATION, auth.as_slice());
    }
    // What hyper would not hand over either (a bad target, a header with CR/LF).
    let Ok(req) = builder.body(()) else {
        return;
    };
    let decision = decide(&req);
    assert_eq!(
        format!("{decision:?}"),
        format!("{:?}", decide(&req)),
        "deterministic"
    );
    let sent = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match decision {
        Decision::NotFound => {}
        Decision::Refused(r) if r.status == 403 => {
            assert_eq!(r.code, "AccessDenied");
            assert!(
                r.fingerprint.is_none(),
                "the Host is checked before the token"
            );
            assert!(r.message.len() <= 300, "{}", r.message);
        }
        Decision::Refused(r) => {
            assert_eq!(r.status, 400, "{r:?}");
            assert!(
                [
                    "MissingToken",
                    "InvalidToken",
                    "ExpiredToken",
                    "TokenNotYetValid"
                ]
                .contains(&r.code),
                "{r:?}"
            );
            let token = String::from_utf8_lossy(sent.unwrap_or_default());
            assert_does_not_echo(&r.message, &token);
            // Fingerprinted exactly when a visible-ASCII, non-blank token was there.
            let text = sent.and_then(|b| std::str::from_utf8(b).ok());
            let present = req
                .headers()
                .get(AUTHORIZATION)
                .is_some_and(|v| v.to_str().is_ok_and(|t| !t.trim().is_empty()));
            match (&r.fingerprint, present) {
                (Some(f), true) => {
                    assert_eq!(*f, fingerprint(text.unwrap_or_default().trim().as_bytes()));
                }
                (None, false) => {}
                (f, present) => panic!("fingerprint {f:?} for a token present={present}"),
            }
        }
        Decision::Checked(t) => {
            let header = req.headers()[AUTHORIZATION]
                .to_str()
                .expect("visible ASCII");
            assert_eq!(t.raw, header.trim());
            assert_eq!(t.fingerprint, fingerprint(t.raw.as_bytes()));
            assert!(NOW < t.claims.exp, "expired at {}", t.claims.exp);
            assert!(t.claims.nbf.is_none_or(|nbf| nbf <= NOW));
            t.claims.check_structure().expect("a pod's token");
        }
    }
});
