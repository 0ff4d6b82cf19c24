//! eks-auth at its most verbose (`--log-level trace`, and `EKS_AUTH_LOG=trace`), signing its STS
//! calls with a session token of its own, through a one-hop exchange, a chained one (whose second
//! hop is signed with the first hop's session token, which no answer shows) and a refused one:
//! nothing it prints holds its secret key or session token, a pod's token, the first hop's session
//! token or the credentials it returned.

mod common;

use common::{CLUSTER, Stand};
use pod_identity_contracts::Secret;
use pod_identity_test_support::verbose::{
    BODIES_LOGGED, SigningCanaries, stop_and_assert_no_secrets,
};

async fn no_secret_in_the_logs(test: &str, extra: &[&str], env: &[(&str, &str)]) {
    let canaries = SigningCanaries::new();
    let Some(mut s) = Stand::start_with(test, |opts| {
        opts.extra = extra.iter().map(|a| a.to_string()).collect();
        opts.env = canaries
            .env()
            .iter()
            .chain(env)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    })
    .await
    else {
        return;
    };
    let mut secrets = canaries.secrets();
    let one_hop = s.token().sign();
    let chained = s
        .token()
        .namespace("team-b")
        .service_account("chained")
        .pod("api-7")
        .sign();
    for token in [&one_hop, &chained] {
        let answer = s.eks_auth.exchange(CLUSTER, token).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        for field in ["secretAccessKey", "sessionToken"] {
            let value = answer.body["credentials"][field].as_str().unwrap();
            secrets.push(value.to_string());
        }
        secrets.push(token.clone());
    }
    // A token of another issuer, refused.
    let foreign = s.token().issuer("https://elsewhere.test").sign();
    let answer = s.eks_auth.exchange(CLUSTER, &foreign).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    secrets.push(foreign);

    // Every STS call was signed with a session token: eks-auth's own, then the first hop's.
    let calls = s.moto.assume_role_calls().await;
    assert_eq!(calls.len(), 3, "{calls:?}");
    let own = Some(canaries.session_token.expose());
    assert_eq!(calls[0].security_token.as_ref().map(Secret::expose), own);
    assert_eq!(calls[1].security_token.as_ref().map(Secret::expose), own);
    let first_hop = calls[2]
        .security_token
        .as_ref()
        .expect("signed with a token");
    assert_ne!(Some(first_hop.expose()), own);
    secrets.push(first_hop.expose().to_string());
    s.eks_auth.wait_for_audit_lines(3).await;

    let eks_auth = &mut s.eks_auth;
    let outputs = [&eks_auth.stdout, &eks_auth.stderr];
    stop_and_assert_no_secrets(&mut eks_auth.child, &outputs, &secrets).await;
}

#[tokio::test]
async fn at_log_level_trace_no_secret_reaches_the_logs() {
    const TEST: &str = "at_log_level_trace_no_secret_reaches_the_logs";
    no_secret_in_the_logs(TEST, &["--log-level", "trace"], &[]).await;
}

/// With the AWS SDK's own switches for logging the bodies it signs and receives on too.
#[tokio::test]
async fn with_the_filter_variable_at_trace_no_secret_reaches_the_logs() {
    const TEST: &str = "with_the_filter_variable_at_trace_no_secret_reaches_the_logs";
    let env = [
        ("EKS_AUTH_LOG", "trace"),
        BODIES_LOGGED[0],
        BODIES_LOGGED[1],
    ];
    no_secret_in_the_logs(TEST, &[], &env).await;
}

/// Keyless (the shipped way): eks-auth's own token buys its role by web identity, and that
/// session signs its AssumeRole calls. At trace, with the SDK's body logging on, neither the web
/// identity token nor the session it bought reaches the logs.
#[tokio::test]
async fn keyless_at_trace_neither_its_web_identity_token_nor_its_session_reaches_the_logs() {
    const TEST: &str =
        "keyless_at_trace_neither_its_web_identity_token_nor_its_session_reaches_the_logs";
    let dir = tempfile::tempdir().unwrap();
    let own = pod_identity_test_support::TokenBuilder::new()
        .namespace("pod-identity-system")
        .service_account("eks-auth")
        .audience("sts.amazonaws.com")
        .sign();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &own).unwrap();
    let Some(mut s) = Stand::start_with(TEST, |opts| {
        let sts = opts.sts_endpoint.clone().unwrap();
        opts.extra = vec!["--log-level".into(), "trace".into()];
        opts.env = [
            // Blank: the SDK's chain passes over the environment's keys to web identity.
            ("AWS_ACCESS_KEY_ID", String::new()),
            ("AWS_SECRET_ACCESS_KEY", String::new()),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/eks-auth".into(),
            ),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ROLE_SESSION_NAME", "eks-auth".into()),
            ("AWS_ENDPOINT_URL_STS", sts),
            (BODIES_LOGGED[0].0, BODIES_LOGGED[0].1.into()),
            (BODIES_LOGGED[1].0, BODIES_LOGGED[1].1.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    })
    .await
    else {
        return;
    };
    let pod = s.token().sign();
    let answer = s.eks_auth.exchange(CLUSTER, &pod).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut secrets = vec![own.clone(), pod];
    for field in ["secretAccessKey", "sessionToken"] {
        secrets.push(
            answer.body["credentials"][field]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // The web identity call carried the token; the AssumeRole was signed with the session it
    // bought (a session token no answer to a pod shows).
    let calls = s.moto.calls().await;
    let web = calls
        .iter()
        .find(|c| c.action == "AssumeRoleWithWebIdentity")
        .unwrap_or_else(|| panic!("no web identity call: {calls:?}"));
    assert_eq!(web.param("WebIdentityToken"), Some(own.as_str()));
    let assume = s.moto.assume_role_calls().await;
    let session = assume[0]
        .security_token
        .as_ref()
        .expect("signed by a session");
    secrets.push(session.expose().to_string());
    s.eks_auth.wait_for_audit_lines(1).await;
    let who = s
        .eks_auth
        .stdout
        .wait_for_json(
            |v| v["message"] == "eks-auth's own AWS identity",
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        who["arn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":assumed-role/eks-auth/eks-auth")),
        "{who}"
    );
    let eks_auth = &mut s.eks_auth;
    let outputs = [&eks_auth.stdout, &eks_auth.stderr];
    stop_and_assert_no_secrets(&mut eks_auth.child, &outputs, &secrets).await;
}
