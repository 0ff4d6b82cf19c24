//! Keyless eks-auth against the real API server: a token the real TokenRequest API mints for
//! eks-auth's ServiceAccount (audience `sts.amazonaws.com`, what its Deployment projects) buys
//! eks-auth's role from the lab's STS, which verifies it as AWS does: the issuer registered as an
//! OIDC provider, its keys fetched anonymously through the API server's own discovery, then
//! `aud` and the role's trust in the exact `sub`. Tokens of another ServiceAccount or audience
//! are refused. Skipped by name without a cluster (a failure where the cluster is required).

use std::time::Duration;

use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use pod_identity_lab::sts::{LabSts, OidcProvider, Role, StsConfig, WebIdentityTrust};
use pod_identity_test_support::cluster::{Cluster, bound_token};
use serde_json::json;

const ACCOUNT: &str = "111122223333";
const EKS_AUTH_ROLE: &str = "arn:aws:iam::111122223333:role/eks-auth";
const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// What lets AWS (here the lab's STS) read the issuer's discovery document and keys without
/// credentials, as it must: the built-in role, bound to anonymous callers.
const DISCOVERY_BINDING: &str = "pod-identity-anonymous-issuer-discovery";

#[tokio::test]
async fn a_real_service_account_token_buys_eks_auths_role_by_web_identity() {
    let Some(cluster) =
        Cluster::get("a_real_service_account_token_buys_eks_auths_role_by_web_identity")
    else {
        return;
    };
    let _lock = cluster.shared();
    let client = cluster.client().await;
    let ns = cluster.namespace("keyless").await;
    let namespace = ns.name.clone();
    allow_anonymous_discovery(&client).await;
    for sa in ["eks-auth", "other"] {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        let object: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
    }

    let issuer = cluster.var("CLUSTER_SERVER").to_string();
    let subject = format!("system:serviceaccount:{namespace}:eks-auth");
    let sts = LabSts::new(
        StsConfig::new()
            .oidc_provider(
                OidcProvider::new(&issuer, ACCOUNT)
                    .client_id(STS_AUDIENCE)
                    .ca_file(cluster.var("CLUSTER_CA")),
            )
            .role(
                Role::new(EKS_AUTH_ROLE).trust_web_identity(WebIdentityTrust {
                    issuer: issuer.clone(),
                    subject: subject.clone(),
                    audience: STS_AUDIENCE.into(),
                }),
            ),
    )
    .unwrap()
    .start("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let sdk = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(sts.url())
            .build(),
    );
    let exchange = |token: String| {
        let sdk = sdk.clone();
        async move {
            sdk.assume_role_with_web_identity()
                .role_arn(EKS_AUTH_ROLE)
                .role_session_name("eks-auth")
                .web_identity_token(token)
                .send()
                .await
        }
    };

    let token = bound_token(&client, &namespace, "eks-auth", "eks-auth-0", STS_AUDIENCE).await;
    let out = exchange(token).await.unwrap_or_else(|e| {
        panic!(
            "a real token was refused: {:?} {:?} (events: {:?})",
            e.code(),
            e.message(),
            sts.events().last()
        )
    });
    assert_eq!(
        out.subject_from_web_identity_token(),
        Some(subject.as_str())
    );
    assert_eq!(out.provider(), Some(issuer.as_str()));
    let creds = out.credentials().unwrap();
    assert!(creds.access_key_id().starts_with("ASIA"));
    let left = std::time::SystemTime::try_from(*creds.expiration())
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left <= Duration::from_secs(3600), "{left:?}");

    // Another ServiceAccount of the same cluster: the role trusts eks-auth's subject only.
    let other = bound_token(&client, &namespace, "other", "other-0", STS_AUDIENCE).await;
    let e = exchange(other).await.unwrap_err();
    assert_eq!(e.code(), Some("AccessDenied"), "{e:?}");
    // eks-auth's token for another audience (the pods' one): not for STS.
    let pods = bound_token(
        &client,
        &namespace,
        "eks-auth",
        "eks-auth-0",
        "pods.eks.amazonaws.com",
    )
    .await;
    let e = exchange(pods).await.unwrap_err();
    assert_eq!(e.code(), Some("InvalidIdentityToken"), "{e:?}");
    assert_eq!(e.message(), Some("Incorrect token audience"));
}

/// Bind `system:service-account-issuer-discovery` to anonymous callers (once per cluster).
async fn allow_anonymous_discovery(client: &kube::Client) {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": DISCOVERY_BINDING},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:service-account-issuer-discovery"
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": "system:unauthenticated"
        }]
    }))
    .unwrap();
    match api.create(&PostParams::default(), &binding).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create ClusterRoleBinding {DISCOVERY_BINDING}: {e}"),
    }
}
