//! The lab's child components (`pod-identity-lab component agent|eks-auth`, the agent's and
//! eks-auth's own entry points) at their most verbose, each signing with a session token of its
//! own, through a pod's exchange (agent → eks-auth → moto's STS): nothing either prints holds a
//! secret key, a session token, the pod's token or the credentials served.

use std::path::Path;

use pod_identity_contracts::Secret;
use pod_identity_test_support::AgentProcess;
use pod_identity_test_support::agent_process::AgentLaunch;
use pod_identity_test_support::eks_auth_process::{EksAuthOptions, EksAuthProcess};
use pod_identity_test_support::fake_issuer::FakeIssuer;
use pod_identity_test_support::moto::Moto;
use pod_identity_test_support::tokens::{TokenBuilder, jwks};
use pod_identity_test_support::verbose::{SigningCanaries, stop_and_assert_no_secrets};

const LAB: &str = env!("CARGO_BIN_EXE_pod-identity-lab");
const CLUSTER: &str = "lab";
const ASSOCIATIONS: &str = "associations:\n  - namespace: default\n    serviceAccount: s3-reader\n    roleArn: arn:aws:iam::111122223333:role/s3-reader\n";

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn the_components_at_trace_log_no_secret() {
    const TEST: &str = "the_components_at_trace_log_no_secret";
    let Some(moto) = Moto::start(TEST).await else {
        return;
    };
    let issuer = FakeIssuer::start(jwks()).await;
    let dir = tempfile::tempdir().unwrap();
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, ASSOCIATIONS).unwrap();
    let eks_auth_canaries = SigningCanaries::new();
    let node_canaries = SigningCanaries::new();
    let opts = EksAuthOptions {
        prefix: vec!["component".into(), "eks-auth".into()],
        cluster_name: CLUSTER.into(),
        issuer: issuer.url(),
        associations,
        sts_endpoint: Some(moto.url().to_string()),
        cluster_arn: Some("arn:aws:eks:us-west-2:111122223333:cluster/lab".into()),
        extra: vec!["--log-level".into(), "trace".into()],
        env: owned(&eks_auth_canaries.env()),
        ..EksAuthOptions::default()
    };
    let mut eks_auth = EksAuthProcess::start(Path::new(LAB), &opts).await;
    // The agent's own token, sent to eks-auth with the exchange: a secret like the pod's.
    let identity = TokenBuilder::agent().issuer(issuer.url()).sign();
    let identity_file = dir.path().join("agent-identity-token");
    std::fs::write(&identity_file, &identity).unwrap();
    let how = AgentLaunch {
        bin: LAB,
        prefix: &["component", "agent"],
        extra: &[
            "-v",
            "trace",
            "--identity-token-file",
            identity_file.to_str().unwrap(),
        ],
        env: &node_canaries.env(),
    };
    let mut agent = AgentProcess::launch(&how, CLUSTER, &eks_auth.url()).await;

    let token = TokenBuilder::new().issuer(issuer.url()).sign();
    let (status, body) = agent.fetch(&token).await;
    assert_eq!(status, 200, "{}", body["code"]);
    let calls = moto.assume_role_calls().await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].security_token.as_ref().map(Secret::expose),
        Some(eks_auth_canaries.session_token.expose())
    );
    agent.request_logs(1).await;
    eks_auth.wait_for_audit_lines(1).await;

    let mut secrets = eks_auth_canaries.secrets();
    secrets.extend(node_canaries.secrets());
    secrets.push(token);
    secrets.push(identity);
    for field in ["SecretAccessKey", "Token"] {
        secrets.push(body[field].as_str().unwrap().to_string());
    }
    let outputs = [&agent.stdout, &agent.stderr];
    stop_and_assert_no_secrets(&mut agent.child, &outputs, &secrets).await;
    let outputs = [&eks_auth.stdout, &eks_auth.stderr];
    stop_and_assert_no_secrets(&mut eks_auth.child, &outputs, &secrets).await;
}
