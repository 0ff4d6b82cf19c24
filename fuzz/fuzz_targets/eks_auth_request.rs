//! eks-auth's `AssumeRoleForPodIdentity` request, from its head and body to the verifier's
//! verdict: `server::route`, `server::check_content_type`, `server::token_of_body`, then
//! `server::caller_token_of` (the third line doubles as the caller's token header), then
//! `Verifier::verify_cached` at a fixed clock (the exchange's first step) on whatever token the
//! body held.
//!
//! Input: `method \n path \n content-type \n body`.
//! Invariants: a route names one non-empty cluster without `/` and only for POST; an accepted
//! body is a JSON object whose `token` is that very string; refusals are the three fixed
//! messages (the body holds the token); a refused token's message is bounded and never the
//! token; the same verdict twice.
#![no_main]

use eks_auth::server::{caller_token_of, check_content_type, route, token_of_body};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use pod_identity_contracts::eks_auth::ErrorKind;
use pod_identity_fuzz::{NOW, assert_does_not_echo, lines, verifier};

fuzz_target!(|data: &[u8]| {
    let parts = lines(data, 4);
    let [method, path, content_type, body] = parts.as_slice() else {
        return;
    };
    let (Ok(method), Ok(path)) = (Method::from_bytes(method), std::str::from_utf8(path)) else {
        return;
    };
    if let Some(cluster) = route(&method, path) {
        assert_eq!(method, Method::POST);
        assert!(!cluster.is_empty() && !cluster.contains('/'), "{cluster:?}");
        assert_eq!(
            path,
            format!("/clusters/{cluster}/assume-role-for-pod-identity")
        );
    }

    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    // The same bytes as the agent's own token header: taken as they are, or refused without
    // being quoted.
    let mut caller = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(content_type) {
        caller.insert(pod_identity_contracts::eks_auth::CALLER_TOKEN_HEADER, v);
    }
    match caller_token_of(&caller) {
        Ok(None) => assert!(caller.is_empty()),
        Ok(Some(t)) => assert_eq!(t.expose().as_bytes(), *content_type),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::AccessDenied);
            assert_eq!(e.message, "the x-pod-identity-caller-token header is not a token");
        }
    }
    if check_content_type(&headers).is_ok() {
        let v = headers[CONTENT_TYPE].to_str().expect("checked");
        let media = v.split(';').next().unwrap_or_default().trim();
        assert!(media.eq_ignore_ascii_case("application/json"), "{v:?}");
    }

    let sent: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let sent_token = sent
        .as_ref()
        .and_then(|v| v.get("token"))
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let token = match token_of_body(body) {
        Err(e) => {
            assert!(
                [
                    "the request body is not a JSON object",
                    "the request body has no token",
                    "token must be a string",
                ]
                .contains(&e.message.as_str()),
                "{e:?}"
            );
            assert!(matches!(
                e.kind,
                ErrorKind::InvalidRequest | ErrorKind::InvalidParameter
            ));
            return;
        }
        Ok(t) => t,
    };
    let sent = sent.expect("an accepted body is JSON");
    assert!(sent.is_object(), "an accepted body is an object: {sent}");
    assert_eq!(token.expose(), sent_token, "the token is the body's");
    assert!(!token.expose().trim().is_empty());

    let verdict = verifier().verify_cached(token.expose(), NOW);
    assert_eq!(
        format!("{verdict:?}"),
        format!("{:?}", verifier().verify_cached(token.expose(), NOW)),
        "deterministic"
    );
    if let Err(e) = verdict {
        assert_ne!(e.kind(), ErrorKind::ServiceUnavailable, "keys are loaded");
        assert_does_not_echo(&e.to_string(), token.expose());
    }
});
