//! The eks-auth binary doing real exchanges against moto's STS: what it asks STS for (role,
//! session name, duration, the six transitive tags, the policy, the chained hop), what it
//! answers, what it logs, and how it runs (probes, metrics, reload, shutdown, bad config).

mod common;

use std::time::Duration;

use common::{CLUSTER, CLUSTER_ARN, Stand, bin, write};
use pod_identity_contracts::eks_auth::{AssumeRoleForPodIdentityResponse, ErrorKind};
use pod_identity_test_support::eks_auth_process::{EksAuthOptions, EksAuthProcess};
use pod_identity_test_support::moto::{CALLER_ACCESS_KEY_ID, MOTO_DEFAULT_ACCOUNT};
use pod_identity_test_support::tokens::{now, uid_for};
use pod_identity_test_support::{assert_no_secrets, keys};

fn response(body: &serde_json::Value) -> AssumeRoleForPodIdentityResponse {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn exchanges_a_token_for_the_role_with_session_name_and_six_transitive_tags() {
    let Some(s) = Stand::start(
        "exchanges_a_token_for_the_role_with_session_name_and_six_transitive_tags",
        &[],
    )
    .await
    else {
        return;
    };
    // A token as the webhook asks for it (24 h), fresh: 6 h credentials, as EKS Auth gives.
    let token = s.token().expires_at(now() + 86_400).sign();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let r = response(&answer.body);

    // What STS was asked, exactly once, signed with eks-auth's own key.
    let calls = s.moto.assume_role_calls().await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.action, "AssumeRole");
    assert_eq!(call.access_key_id.as_deref(), Some(CALLER_ACCESS_KEY_ID));
    assert_eq!(
        call.param("RoleArn"),
        Some("arn:aws:iam::111122223333:role/s3-reader")
    );
    assert_eq!(call.param("DurationSeconds"), Some("21600"));
    assert_eq!(call.param("Policy"), None);
    let session = call.param("RoleSessionName").unwrap();
    assert!(session.starts_with("eks-lab-web-0-"), "{session}");
    assert!(session.len() <= 64);
    let pod_uid = uid_for("pod", "default/web-0");
    let want_tags = [
        ("eks-cluster-arn", CLUSTER_ARN),
        ("eks-cluster-name", CLUSTER),
        ("kubernetes-namespace", "default"),
        ("kubernetes-service-account", "s3-reader"),
        ("kubernetes-pod-name", "web-0"),
        ("kubernetes-pod-uid", pod_uid.as_str()),
    ];
    let tags = call.tags();
    assert_eq!(
        tags,
        want_tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        call.transitive_tag_keys(),
        want_tags
            .iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
    );

    // What the caller got.
    assert_eq!(r.subject.namespace, "default");
    assert_eq!(r.subject.service_account, "s3-reader");
    assert_eq!(r.audience, "pods.eks.amazonaws.com");
    let id = &r.pod_identity_association.association_id;
    assert!(id.starts_with("a-") && id.len() == 19, "{id}");
    assert_eq!(
        r.pod_identity_association.association_arn,
        format!("arn:aws:eks:us-west-2:111122223333:podidentityassociation/lab/{id}")
    );
    assert_eq!(
        r.assumed_role_user.arn,
        format!("arn:aws:sts::111122223333:assumed-role/s3-reader/{session}")
    );
    assert!(
        r.assumed_role_user
            .assume_role_id
            .ends_with(&format!(":{session}"))
    );
    assert!(r.credentials.access_key_id.starts_with("ASIA"));
    let lifetime = r.credentials.expiration - now();
    assert!(
        (6 * 3600 - 60..=6 * 3600 + 5).contains(&lifetime),
        "{lifetime}"
    );
    // Expiration is epoch seconds on the wire.
    assert!(answer.body["credentials"]["expiration"].is_i64());

    // One audit line: who, which pod, which role, which association; no secret anywhere.
    let audit = s.eks_auth.wait_for_audit_lines(1).await;
    let line = &audit[0];
    assert_eq!(line.outcome.as_deref(), Some("success"));
    assert_eq!(line.pod.k8s_namespace.as_deref(), Some("default"));
    assert_eq!(line.pod.k8s_service_account.as_deref(), Some("s3-reader"));
    assert_eq!(line.pod.k8s_pod.as_deref(), Some("web-0"));
    assert_eq!(line.pod.k8s_pod_uid.as_deref(), Some(pod_uid.as_str()));
    assert_eq!(line.k8s_node.as_deref(), Some("node-a"));
    assert_eq!(
        line.caller.as_deref(),
        Some("kube-system/eks-pod-identity-agent")
    );
    assert_eq!(line.caller_node.as_deref(), Some("node-a"));
    assert_eq!(
        line.caller_token_fingerprint,
        Some(pod_identity_contracts::fingerprint(
            s.eks_auth.caller_token.as_deref().unwrap().as_bytes()
        ))
    );
    assert_eq!(
        line.pod.role_arn.as_deref(),
        Some("arn:aws:iam::111122223333:role/s3-reader")
    );
    assert_eq!(line.pod.association_id.as_deref(), Some(id.as_str()));
    assert_eq!(line.session_name.as_deref(), Some(session));
    // STS's share of the latency is its own field (no TokenReview here).
    let sts_ms = line.sts_ms.unwrap();
    assert!(
        sts_ms > 0.0 && sts_ms <= line.answer.latency_ms.unwrap(),
        "{line:?}"
    );
    assert_eq!(line.review_ms, Some(0.0));
    assert_eq!(
        line.pod.token_fingerprint,
        Some(pod_identity_contracts::fingerprint(token.as_bytes()))
    );
    let secrets = [
        token.clone(),
        s.eks_auth.caller_token.clone().unwrap(),
        r.credentials.secret_access_key.expose().to_string(),
        r.credentials.session_token.expose().to_string(),
    ];
    s.eks_auth.stdout.assert_no_secrets(&secrets);
    s.eks_auth.stderr.assert_no_secrets(&secrets);

    let metrics = s.eks_auth.metrics().await;
    assert!(
        metrics.contains("eks_auth_requests_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("eks_auth_sts_latency_seconds_count{result=\"ok\"} 1"));
    assert!(
        metrics.contains("eks_auth_log_lines_dropped_total 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eks_auth_key_refreshes_total{result=\"success\",trigger=\"startup\"} 1")
    );
    assert!(metrics.contains("eks_auth_associations 3"));
    assert_no_secrets(&metrics, &secrets);
    // A token with 50 minutes left buys credentials that end with it, not 6 h ones.
    let short = s
        .token()
        .issued_at(now() - 600)
        .not_before(now() - 600)
        .expires_at(now() + 3000)
        .sign();
    let answer = s.eks_auth.exchange(CLUSTER, &short).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let calls = s.moto.assume_role_calls().await;
    let asked: i64 = calls[1].param("DurationSeconds").unwrap().parse().unwrap();
    assert!((2990..=3000).contains(&asked), "{asked}");
    let expiration = response(&answer.body).credentials.expiration;
    assert!(expiration <= now() + 3000, "credentials outlive the token");
}

#[tokio::test]
async fn chains_to_the_target_role_from_the_first_session() {
    let Some(s) = Stand::start("chains_to_the_target_role_from_the_first_session", &[]).await
    else {
        return;
    };
    let token = s
        .token()
        .namespace("team-b")
        .service_account("chained")
        .pod("api-7")
        .sign();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let r = response(&answer.body);
    let calls = s.moto.assume_role_calls().await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (first, second) = (&calls[0], &calls[1]);
    assert_eq!(
        first.param("RoleArn"),
        Some("arn:aws:iam::111122223333:role/hop")
    );
    assert_eq!(first.access_key_id.as_deref(), Some(CALLER_ACCESS_KEY_ID));
    assert_eq!(first.tags().len(), 6);
    assert_eq!(
        second.param("RoleArn"),
        Some("arn:aws:iam::444455556666:role/target")
    );
    // The second hop is signed with the first hop's credentials, and asks for 1 h (the
    // role-chaining limit); the transitive tags ride along without being sent again.
    let second_key = second.access_key_id.as_deref().unwrap();
    assert!(second_key.starts_with("ASIA"), "{second_key}");
    assert_ne!(second_key, r.credentials.access_key_id);
    assert_eq!(second.param("DurationSeconds"), Some("3600"));
    assert!(second.tags().is_empty());
    assert_eq!(
        second.param("RoleSessionName"),
        first.param("RoleSessionName")
    );
    assert!(
        r.assumed_role_user
            .arn
            .starts_with("arn:aws:sts::444455556666:assumed-role/target/eks-lab-api-7-"),
        "{}",
        r.assumed_role_user.arn
    );
    assert_eq!(r.pod_identity_association.association_id, "a-chained");
    let audit = s.eks_auth.wait_for_audit_lines(1).await;
    assert_eq!(
        audit[0].target_role_arn.as_deref(),
        Some("arn:aws:iam::444455556666:role/target")
    );
}

#[tokio::test]
async fn passes_the_session_policy_and_no_tags_when_tags_are_disabled() {
    let Some(s) = Stand::start(
        "passes_the_session_policy_and_no_tags_when_tags_are_disabled",
        &[],
    )
    .await
    else {
        return;
    };
    let token = s
        .token()
        .namespace("team-b")
        .service_account("scoped")
        .sign();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let calls = s.moto.assume_role_calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].param("Policy"),
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#
        )
    );
    assert!(calls[0].tags().is_empty());
    assert!(calls[0].transitive_tag_keys().is_empty());
}

#[tokio::test]
async fn no_association_is_resource_not_found_and_never_reaches_sts() {
    let Some(s) = Stand::start(
        "no_association_is_resource_not_found_and_never_reaches_sts",
        &[],
    )
    .await
    else {
        return;
    };
    let token = s.token().service_account("nobody").sign();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_type, "ResourceNotFoundException");
    assert!(s.moto.assume_role_calls().await.is_empty());
    let audit = s.eks_auth.wait_for_audit_lines(1).await;
    assert_eq!(audit[0].pod.k8s_service_account.as_deref(), Some("nobody"));
    assert_eq!(
        audit[0].outcome.as_deref(),
        Some(ErrorKind::ResourceNotFound.name())
    );
}

#[tokio::test]
async fn associations_file_is_hot_reloaded() {
    let Some(s) = Stand::start(
        "associations_file_is_hot_reloaded",
        &["--associations-poll", "1s"],
    )
    .await
    else {
        return;
    };
    let token = s.token().service_account("late").sign();
    assert_eq!(s.eks_auth.exchange(CLUSTER, &token).await.status, 404);
    write(
        &s.associations_path(),
        "associations:\n  - {namespace: default, serviceAccount: late, roleArn: 'arn:aws:iam::111122223333:role/late'}\n",
    );
    s.eks_auth
        .stdout
        .wait_for_json(
            |v| v["message"] == "associations file reloaded",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // A broken edit keeps the last good set.
    write(&s.associations_path(), "associations: [");
    s.eks_auth
        .stdout
        .wait_for_json(
            |v| v["message"] == "associations file not reloaded; keeping the last good set",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(s.eks_auth.exchange(CLUSTER, &token).await.status, 200);
}

#[tokio::test]
async fn cluster_arn_defaults_to_eks_auths_own_account() {
    let Some(s) = Stand::start_with("cluster_arn_defaults_to_eks_auths_own_account", |o| {
        o.cluster_arn = None;
    })
    .await
    else {
        return;
    };
    let answer = s.eks_auth.exchange(CLUSTER, &s.token().sign()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let r = response(&answer.body);
    assert!(
        r.pod_identity_association
            .association_arn
            .starts_with(&format!(
                "arn:aws:eks:us-west-2:{MOTO_DEFAULT_ACCOUNT}:podidentityassociation/lab/"
            )),
        "{}",
        r.pod_identity_association.association_arn
    );
    let calls = s.moto.assume_role_calls().await;
    assert_eq!(
        calls[0].tags()[0],
        (
            "eks-cluster-arn".to_string(),
            format!("arn:aws:eks:us-west-2:{MOTO_DEFAULT_ACCOUNT}:cluster/lab")
        )
    );
    // Who it is was said at start, and its static keys were warned about (moto names every
    // long-term key's owner user/moto).
    let who = s
        .eks_auth
        .stdout
        .wait_for_json(
            |v| v["message"] == "eks-auth's own AWS identity",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        who["arn"],
        format!("arn:aws:sts::{MOTO_DEFAULT_ACCOUNT}:user/moto")
    );
    let started = s
        .eks_auth
        .stdout
        .wait_for_json(
            |v| v["message"] == "eks-auth started",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(started["version"], pod_identity_contracts::version::RELEASE);
    assert_eq!(
        started["revision"],
        pod_identity_contracts::version::REVISION
    );
    let warning = s
        .eks_auth
        .stdout
        .wait_for_json(
            |v| {
                v["level"] == "WARN"
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("IAM user's long-term keys"))
            },
            Duration::from_secs(5),
        )
        .await;
    assert!(warning.is_ok(), "no warning about static keys");
}

#[tokio::test]
async fn es256_tokens_verify_against_a_jwks_file() {
    let Some(s) = Stand::start_with("es256_tokens_verify_against_a_jwks_file", |o| {
        let path = o.associations.with_file_name("jwks.json");
        std::fs::write(&path, keys::jwks_of(&[keys::PRIMARY, keys::EC]).to_string()).unwrap();
        o.jwks_file = Some(path);
    })
    .await
    else {
        return;
    };
    let es = s.token().kid(keys::EC.kid).sign_with_key(&keys::EC);
    let answer = s.eks_auth.exchange(CLUSTER, &es).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The file, not the issuer, supplied the keys.
    assert_eq!(s.issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn not_ready_until_the_issuer_answers() {
    let Some(moto) =
        pod_identity_test_support::moto::Moto::start("not_ready_until_the_issuer_answers").await
    else {
        return;
    };
    let issuer = pod_identity_test_support::fake_issuer::FakeIssuer::start(
        pod_identity_test_support::tokens::jwks(),
    )
    .await;
    issuer.set_failing(true);
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("a.yaml");
    write(&associations, common::ASSOCIATIONS);
    let opts = EksAuthOptions {
        cluster_name: CLUSTER.into(),
        issuer: issuer.url(),
        jwks_file: None,
        associations,
        sts_endpoint: Some(moto.url().into()),
        cluster_arn: Some(CLUSTER_ARN.into()),
        ..EksAuthOptions::default()
    };
    let p = EksAuthProcess::spawn(&bin(), &opts);
    let line = p
        .stdout
        .wait_for_json(
            |v| v["message"] == "listening" && v["listener"] == "admin",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let readyz = format!("http://{}/readyz", line["addr"].as_str().unwrap());
    let healthz = readyz.replace("readyz", "healthz");
    let client = reqwest::Client::new();
    assert_eq!(client.get(&healthz).send().await.unwrap().status(), 200);
    let r = client.get(&readyz).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("issuer keys loaded=false"));
    issuer.set_failing(false);
    pod_identity_test_support::wait_for_http_ok(&readyz, Duration::from_secs(20))
        .await
        .unwrap();
}

/// The node binding, said plainly: a token from another node names both nodes; an agent of
/// the same node is served; the two escapes serve what they name and are loud about it.
#[tokio::test]
async fn pod_tokens_are_bound_to_the_presenting_agents_node() {
    let Some(s) = Stand::start("pod_tokens_are_bound_to_the_presenting_agents_node", &[]).await
    else {
        return;
    };
    let on_b = s.token().node("node-b").sign();
    let answer = s.eks_auth.exchange(CLUSTER, &on_b).await;
    assert_eq!(
        answer.error_type, "AccessDeniedException",
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body["message"],
        "the token belongs to a pod on node node-b, but the agent on node node-a presented it"
    );
    let line = s.eks_auth.wait_for_audit_lines(1).await.pop().unwrap();
    assert_eq!(line.k8s_node.as_deref(), Some("node-b"));
    assert_eq!(line.caller_node.as_deref(), Some("node-a"));
    // The agent on node-b is served.
    let agent_b = s.agent_token().node("node-b").sign();
    let answer = s.eks_auth.exchange_as(CLUSTER, &on_b, Some(&agent_b)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let none = s.eks_auth.exchange_as(CLUSTER, &on_b, None).await;
    assert!(
        none.body["message"]
            .as_str()
            .unwrap()
            .contains("x-pod-identity-caller-token"),
        "{}",
        none.body
    );
    assert_eq!(
        s.moto.assume_role_calls().await.len(),
        1,
        "only the bound exchange reached STS"
    );

    let Some(open) = Stand::start(
        "pod_tokens_are_bound_to_the_presenting_agents_node_open",
        &[
            "--allow-unauthenticated-callers",
            "--allow-tokens-without-node",
        ],
    )
    .await
    else {
        return;
    };
    let stdout = open.eks_auth.stdout.text();
    assert!(
        stdout.contains(
            "--allow-unauthenticated-callers: callers without their own token are served"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("--allow-tokens-without-node"), "{stdout}");
    let unbound = open.token().without_node().sign();
    let answer = open.eks_auth.exchange_as(CLUSTER, &unbound, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let line = open.eks_auth.wait_for_audit_lines(1).await.pop().unwrap();
    assert_eq!(line.caller.as_deref(), Some("unauthenticated"));
    // An agent that does authenticate is still held to its node.
    let answer = open
        .eks_auth
        .exchange(CLUSTER, &open.token().node("node-b").sign())
        .await;
    assert_eq!(
        answer.error_type, "AccessDeniedException",
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn role_policy_allows_what_it_names_and_is_hot_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("role-policy.yaml");
    write(
        &policy,
        "rules:\n  - {namespaces: [default], roles: ['arn:aws:iam::111122223333:role/s3-*']}\n",
    );
    let Some(s) = Stand::start_with(
        "role_policy_allows_what_it_names_and_is_hot_reloaded",
        |opts| {
            opts.role_policy = Some(policy.clone());
            opts.extra = vec!["--associations-poll".into(), "1s".into()];
        },
    )
    .await
    else {
        return;
    };
    let token = s.token().sign();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(s.moto.assume_role_calls().await.len(), 1);
    // The operator withdraws the allowance: the next exchange is refused, STS not called again.
    write(&policy, "rules: []\n");
    s.eks_auth
        .stdout
        .wait_for_json(
            |v| {
                v["message"]
                    == "role policy reloaded: it has no rules, so no association is allowed"
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let answer = s.eks_auth.exchange(CLUSTER, &token).await;
    assert_eq!(
        (answer.status, answer.error_type.as_str()),
        (400, "AccessDeniedException"),
        "{}",
        answer.body
    );
    assert_eq!(
        s.moto.assume_role_calls().await.len(),
        1,
        "STS not called for a refusal"
    );
}

#[tokio::test]
async fn refuses_bad_configuration_with_exit_code_64() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("a.yaml");
    write(&good, common::ASSOCIATIONS);
    let bad = dir.path().join("bad.yaml");
    write(&bad, "associations: [");
    let bad_policy = dir.path().join("bad-policy.yaml");
    write(
        &bad_policy,
        "rules:\n  - {namespaces: [default], roles: ['arn:aws:iam::*:role/any']}\n",
    );
    let base = EksAuthOptions {
        cluster_name: CLUSTER.into(),
        issuer: "https://issuer.test".into(),
        jwks_file: None,
        associations: good.clone(),
        sts_endpoint: Some("http://127.0.0.1:9".into()),
        cluster_arn: Some(CLUSTER_ARN.into()),
        ..EksAuthOptions::default()
    };
    let cases: Vec<(EksAuthOptions, &str)> = vec![
        (
            EksAuthOptions {
                associations: bad.clone(),
                ..base.clone()
            },
            "bad.yaml is invalid",
        ),
        (
            EksAuthOptions {
                issuer: "not a url".into(),
                ..base.clone()
            },
            "--issuer",
        ),
        (
            EksAuthOptions {
                cluster_name: "bad/name".into(),
                ..base.clone()
            },
            "--cluster-name",
        ),
        (
            EksAuthOptions {
                jwks_file: Some(dir.path().join("missing.json")),
                ..base.clone()
            },
            "--jwks-file",
        ),
        (
            // No API server configuration here (no in-cluster env, HOME without a kubeconfig).
            EksAuthOptions {
                extra: vec!["--watch-custom-resources".into()],
                ..base.clone()
            },
            "--watch-custom-resources",
        ),
        (
            EksAuthOptions {
                extra: vec!["--caller-audience".into(), "pods.eks.amazonaws.com".into()],
                ..base.clone()
            },
            "--caller-audience must be non-empty and differ from --audience",
        ),
        (
            EksAuthOptions {
                role_policy: Some(bad_policy.clone()),
                ..base.clone()
            },
            "--role-policy: role policy",
        ),
        (
            EksAuthOptions {
                role_policy: Some(dir.path().join("missing-policy.yaml")),
                ..base.clone()
            },
            "--role-policy",
        ),
        (
            // The helper adds --allow-any-role when it is given no policy.
            EksAuthOptions {
                extra: vec!["--role-policy".into(), good.display().to_string()],
                ..base.clone()
            },
            "--role-policy and --allow-any-role contradict",
        ),
    ];
    for (opts, want) in cases {
        common::assert_refused(&opts, want).await;
    }
}

#[tokio::test]
async fn shuts_down_gracefully_on_sigterm() {
    let Some(mut s) = Stand::start("shuts_down_gracefully_on_sigterm", &[]).await else {
        return;
    };
    assert_eq!(
        s.eks_auth.exchange(CLUSTER, &s.token().sign()).await.status,
        200
    );
    s.eks_auth.child.terminate().unwrap();
    let status = s
        .eks_auth
        .child
        .wait_for_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    s.eks_auth
        .stdout
        .wait_for_json(|v| v["message"] == "stopped", Duration::from_secs(5))
        .await
        .unwrap();
}

/// A client that sends its exchange and resets the connection at once (an SDK timing out, a pod
/// killed): eks-auth still runs the exchange to its end and writes its audit line, so no
/// credentials are ever issued without one.
#[tokio::test]
async fn an_exchange_whose_client_resets_still_reaches_its_audit_line() {
    use tokio::io::AsyncWriteExt;
    let Some(s) = Stand::start(
        "an_exchange_whose_client_resets_still_reaches_its_audit_line",
        &[],
    )
    .await
    else {
        return;
    };
    let token = s.token().sign();
    let body = serde_json::json!({ "token": token }).to_string();
    let caller = s.eks_auth.caller_token.clone().unwrap();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         {}: {caller}\r\nContent-Length: {}\r\n\r\n{body}",
        pod_identity_contracts::eks_auth::request_path(CLUSTER),
        s.eks_auth.api_addr,
        pod_identity_contracts::eks_auth::CALLER_TOKEN_HEADER,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(s.eks_auth.api_addr)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.set_zero_linger().unwrap();
    drop(stream); // RST, before any answer could be read
    let audit = s.eks_auth.wait_for_audit_lines(1).await;
    assert_eq!(
        audit[0].outcome.as_deref(),
        Some("success"),
        "{:?}",
        audit[0]
    );
    assert_eq!(audit[0].answer.http_status, Some(200));
    // The credentials it logged are the ones STS issued: nothing issued without its line.
    assert_eq!(s.moto.assume_role_calls().await.len(), 1);
}
