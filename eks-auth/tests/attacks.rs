//! The attack list: each bad input against the real eks-auth binary, with moto as STS. Every one
//! must be refused with the right EKS Auth error, logged as one audit line without the token,
//! and must never reach STS (moto records every request it gets; it must have none).

mod common;

use common::{CLUSTER, Stand};
use pod_identity_contracts::eks_auth::ErrorKind;
use pod_identity_test_support::eks_auth_process::ApiAnswer;
use pod_identity_test_support::keys;
use pod_identity_test_support::tokens::now;

async fn assert_refused(stand: &Stand, answer: ApiAnswer, kind: ErrorKind, secret: &str) {
    assert_eq!(
        (answer.status, answer.error_type.as_str()),
        (kind.status(), kind.name()),
        "body: {}",
        answer.body
    );
    let message = answer.body["message"].as_str().expect("a message");
    assert!(!message.is_empty());
    let audit = stand.eks_auth.wait_for_audit_lines(1).await;
    assert_eq!(audit.last().unwrap().outcome.as_deref(), Some(kind.name()));
    let calls = stand.moto.assume_role_calls().await;
    assert!(calls.is_empty(), "STS was asked for a role: {calls:?}");
    if !secret.is_empty() {
        stand.eks_auth.stdout.assert_no_secrets(&[secret]);
        assert!(!message.contains(secret));
    }
}

/// One test per attack: `attack!(name, kind, |stand| async-expr-returning-(answer, secret))`.
macro_rules! attack {
    ($name:ident, $kind:expr, |$s:ident| $body:expr) => {
        #[tokio::test]
        async fn $name() {
            let Some($s) = Stand::start(stringify!($name), &[]).await else {
                return;
            };
            let (answer, secret): (ApiAnswer, String) = $body;
            assert_refused(&$s, answer, $kind, &secret).await;
        }
    };
}

/// Send a token for the stand's cluster; the token is the secret that must not be logged.
macro_rules! send {
    ($s:ident, $token:expr) => {{
        let token: String = $token;
        ($s.eks_auth.exchange(CLUSTER, &token).await, token)
    }};
}

attack!(alg_none, ErrorKind::InvalidToken, |s| send!(
    s,
    s.token().unsigned_alg_none()
));

attack!(
    hs256_signed_with_the_public_key,
    ErrorKind::InvalidToken,
    |s| send!(s, s.token().hs256_with_public_key_as_secret())
);

attack!(
    rs256_with_an_unknown_key,
    ErrorKind::InvalidToken,
    |s| send!(s, s.token().sign_with_key(&keys::SECOND))
);

attack!(right_key_wrong_issuer, ErrorKind::InvalidToken, |s| send!(
    s,
    s.token().issuer("https://evil.example").sign()
));

attack!(wrong_audience, ErrorKind::InvalidToken, |s| send!(
    s,
    s.token().audience("sts.amazonaws.com").sign()
));

attack!(expired, ErrorKind::ExpiredToken, |s| send!(
    s,
    s.token()
        .issued_at(now() - 7200)
        .not_before(now() - 7200)
        .expires_at(now() - 300)
        .sign()
));

attack!(not_yet_valid, ErrorKind::InvalidToken, |s| send!(
    s,
    s.token()
        .not_before(now() + 600)
        .expires_at(now() + 4000)
        .sign()
));

// A token minted to live a century: valid signature, valid now, refused for its lifetime.
attack!(a_century_long_token, ErrorKind::InvalidToken, |s| send!(
    s,
    s.token().expires_at(now() + 100 * 365 * 86_400).sign()
));

attack!(issued_in_the_future, ErrorKind::InvalidToken, |s| send!(
    s,
    s.token()
        .issued_at(now() + 3600)
        .not_before(now() - 60)
        .expires_at(now() + 7200)
        .sign()
));

attack!(without_iat, ErrorKind::InvalidToken, |s| send!(
    s,
    s.token().without_claim("iat").sign()
));

// Valid for ten more minutes: credentials would outlive it (STS's shortest session is 15).
attack!(about_to_expire, ErrorKind::ExpiredToken, |s| send!(
    s,
    s.token()
        .issued_at(now() - 3000)
        .not_before(now() - 3000)
        .expires_at(now() + 600)
        .sign()
));

attack!(tampered_payload, ErrorKind::InvalidToken, |s| {
    use base64::Engine;
    let good = s.token().sign();
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = s.token().claims();
    claims["sub"] = serde_json::json!("system:serviceaccount:team-b:chained");
    claims["kubernetes.io"]["namespace"] = serde_json::json!("team-b");
    claims["kubernetes.io"]["serviceaccount"]["name"] = serde_json::json!("chained");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    send!(s, format!("{}.{payload}.{}", parts[0], parts[2]))
});

attack!(
    missing_kubernetes_claims,
    ErrorKind::InvalidToken,
    |s| send!(s, s.token().without_claim("kubernetes.io").sign())
);

attack!(
    subject_not_matching_the_claims,
    ErrorKind::InvalidToken,
    |s| send!(
        s,
        s.token()
            .subject("system:serviceaccount:team-b:chained")
            .sign()
    )
);

attack!(one_mib_token, ErrorKind::InvalidRequest, |s| {
    let token = format!("{}.{}", s.token().sign(), "A".repeat(1024 * 1024));
    send!(s, token)
});

attack!(truncated_json_body, ErrorKind::InvalidRequest, |s| {
    let token = s.token().sign();
    let body = format!("{{\"token\": \"{token}\"");
    (
        s.eks_auth
            .post(CLUSTER, "application/json", body.into_bytes())
            .await,
        token,
    )
});

attack!(wrong_content_type, ErrorKind::InvalidRequest, |s| {
    let token = s.token().sign();
    let body = serde_json::json!({ "token": token }).to_string();
    (
        s.eks_auth
            .post(
                CLUSTER,
                "application/x-www-form-urlencoded",
                body.into_bytes(),
            )
            .await,
        token,
    )
});

attack!(unknown_cluster, ErrorKind::ResourceNotFound, |s| {
    let token = s.token().sign();
    (s.eks_auth.exchange("other-cluster", &token).await, token)
});

attack!(token_is_not_a_string, ErrorKind::InvalidParameter, |s| {
    (
        s.eks_auth
            .post(CLUSTER, "application/json", br#"{"token": 42}"#.to_vec())
            .await,
        String::new(),
    )
});

/// Send a pod token with `caller` as the agent's own token; `$secret` must not be logged.
macro_rules! send_as {
    ($s:ident, $token:expr, $caller:expr, $secret:ident) => {{
        let token: String = $token;
        let caller: Option<String> = $caller;
        let answer = $s
            .eks_auth
            .exchange_as(CLUSTER, &token, caller.as_deref())
            .await;
        let secret = if stringify!($secret) == "caller" {
            caller.unwrap_or_default()
        } else {
            token
        };
        (answer, secret)
    }};
}

// Callers: eks-auth serves node agents that prove who they are, and binds each pod token to the
// presenting agent's node.

// An unsigned `curl` with a copied pod token.
attack!(
    unauthenticated_caller,
    ErrorKind::AccessDenied,
    |s| send_as!(s, s.token().sign(), None, token)
);

// A token copied from a pod on node-b, presented by the agent on node-a.
attack!(
    stolen_token_other_node,
    ErrorKind::AccessDenied,
    |s| send_as!(
        s,
        s.token().node("node-b").sign(),
        Some(s.agent_token().sign()),
        token
    )
);

// The same node name, another node object (deleted and re-created, or forged): the uid decides.
attack!(
    stolen_token_same_node_name_other_uid,
    ErrorKind::AccessDenied,
    |s| send_as!(
        s,
        s.token()
            .node_uid("4f0c5a7e-0000-4000-8000-000000000000")
            .sign(),
        Some(s.agent_token().sign()),
        token
    )
);

attack!(
    pod_token_without_node,
    ErrorKind::AccessDenied,
    |s| send_as!(
        s,
        s.token().without_node().sign(),
        Some(s.agent_token().sign()),
        token
    )
);

// A pod's own token as the caller's: wrong audience.
attack!(pod_token_as_caller, ErrorKind::AccessDenied, |s| send_as!(
    s,
    s.token().sign(),
    Some(s.token().sign()),
    caller
));

// A pod that asked its kubelet for a token with the agents' audience is still not an agent.
attack!(caller_not_an_agent, ErrorKind::AccessDenied, |s| send_as!(
    s,
    s.token().sign(),
    Some(
        s.agent_token()
            .namespace("default")
            .service_account("s3-reader")
            .sign()
    ),
    caller
));

attack!(
    caller_token_without_node,
    ErrorKind::AccessDenied,
    |s| send_as!(
        s,
        s.token().sign(),
        Some(s.agent_token().without_node().sign()),
        caller
    )
);

attack!(caller_token_expired, ErrorKind::AccessDenied, |s| send_as!(
    s,
    s.token().sign(),
    Some(
        s.agent_token()
            .issued_at(now() - 7200)
            .not_before(now() - 7200)
            .expires_at(now() - 300)
            .sign()
    ),
    caller
));

attack!(
    caller_token_unknown_key,
    ErrorKind::AccessDenied,
    |s| send_as!(
        s,
        s.token().sign(),
        Some(s.agent_token().sign_with_key(&keys::SECOND)),
        caller
    )
);

attack!(
    caller_token_not_a_token,
    ErrorKind::AccessDenied,
    |s| send_as!(s, s.token().sign(), Some("not-a-jwt".to_string()), token)
);

/// A flood of tokens with random `kid`s: all refused, and the issuer's keys are fetched at most
/// once more than at startup (the unknown-kid refresh is rate-limited).
#[tokio::test]
async fn random_kid_flood_fetches_the_issuer_a_bounded_number_of_times() {
    let Some(s) = Stand::start(
        "random_kid_flood_fetches_the_issuer_a_bounded_number_of_times",
        &[],
    )
    .await
    else {
        return;
    };
    assert_eq!(s.issuer.jwks_fetches(), 1, "one fetch at startup");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let token = s
            .token()
            .kid(format!("random-kid-{i}"))
            .sign_with_key(&keys::SECOND);
        let url = s.eks_auth.url();
        let caller = s.agent_token().sign();
        // From four addresses: one holds at most 128 connections at once (the per-client cap).
        let client = reqwest::Client::builder()
            .local_address(pod_identity_test_support::slow_clients::source_addr(i % 4))
            .build()
            .unwrap();
        tasks.push(tokio::spawn(async move {
            client
                .post(format!(
                    "{url}{}",
                    pod_identity_contracts::eks_auth::request_path(CLUSTER)
                ))
                .header(
                    pod_identity_contracts::eks_auth::CALLER_TOKEN_HEADER,
                    caller,
                )
                .json(&serde_json::json!({ "token": token }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 400);
    }
    assert!(
        s.issuer.jwks_fetches() <= 2,
        "JWKS fetched {} times",
        s.issuer.jwks_fetches()
    );
    assert!(s.issuer.discovery_fetches() <= 2);
    assert!(s.moto.assume_role_calls().await.is_empty());
    let metrics = s.eks_auth.metrics().await;
    assert!(
        metrics.contains("eks_auth_requests_total{outcome=\"InvalidTokenException\"} 200"),
        "{metrics}"
    );
    // A good token still works afterwards.
    let ok = s.eks_auth.exchange(CLUSTER, &s.token().sign()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// The operator allows `default` its reader and team-b its hop, but not the hop's target.
const ROLE_POLICY: &str = r#"
rules:
  - namespaces: [default]
    roles: [arn:aws:iam::111122223333:role/s3-reader]
  - namespaces: [team-b]
    roles: [arn:aws:iam::111122223333:role/hop]
"#;

/// Under [`ROLE_POLICY`], team-b's `service_account` is refused before STS, the client told
/// plainly and the audit line saying which role and why (`denied`).
async fn refused_by_the_role_policy(test: &str, service_account: &str, denied: &str) {
    let Some(s) = Stand::start_with(test, |opts| {
        let policy = opts.associations.with_file_name("role-policy.yaml");
        std::fs::write(&policy, ROLE_POLICY).unwrap();
        opts.role_policy = Some(policy);
    })
    .await
    else {
        return;
    };
    let token = s
        .token()
        .namespace("team-b")
        .service_account(service_account)
        .sign();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    let message = answer.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_refused(&s, answer, ErrorKind::AccessDenied, &token).await;
    assert!(message.contains("role policy"), "{message}");
    let audit = s.eks_auth.wait_for_audit_lines(1).await;
    assert_eq!(
        audit.last().unwrap().role_policy_denied.as_deref(),
        Some(denied)
    );
}

/// Association writers are not policy writers: whoever wrote team-b's association could name
/// any role that trusts eks-auth. team-b/scoped names role/scoped, which no rule gives team-b.
#[tokio::test]
async fn association_naming_a_role_outside_the_role_policy() {
    refused_by_the_role_policy(
        "association_naming_a_role_outside_the_role_policy",
        "scoped",
        "roleArn arn:aws:iam::111122223333:role/scoped is not allowed for namespace team-b by the role policy",
    )
    .await;
}

/// Role chaining: the first hop is allowed, the target is not; nothing is assumed, not even the
/// allowed hop.
#[tokio::test]
async fn chained_association_whose_target_is_outside_the_role_policy() {
    refused_by_the_role_policy(
        "chained_association_whose_target_is_outside_the_role_policy",
        "chained",
        "targetRoleArn arn:aws:iam::444455556666:role/target is not allowed for namespace team-b by the role policy",
    )
    .await;
}
