//! The agent at its most verbose, as the official Helm chart runs it (`-v trace`), and with its
//! filter variable at `trace`, signing its EKS Auth call with a session token: nothing it prints
//! holds the node's secret key or session token, the pod's token, or the credentials it served.

use pod_identity_contracts::fingerprint;
use pod_identity_test_support::agent_process::AgentLaunch;
use pod_identity_test_support::verbose::{
    BODIES_LOGGED, SigningCanaries, stop_and_assert_no_secrets,
};
use pod_identity_test_support::{AgentProcess, FakeEksAuth, TokenBuilder};

/// One credentials request through an agent started with `extra` flags and `env`.
async fn no_secret_in_the_logs(extra: &[&str], env: &[(&str, &str)]) {
    let fake = FakeEksAuth::start().await;
    let canaries = SigningCanaries::new();
    let mut vars = canaries.env().to_vec();
    vars.extend_from_slice(env);
    let how = AgentLaunch {
        bin: env!("CARGO_BIN_EXE_pod-identity-agent"),
        extra,
        env: &vars,
        ..AgentLaunch::default()
    };
    let mut agent = AgentProcess::launch(&how, fake.cluster(), &fake.url()).await;
    let token = TokenBuilder::new().sign();

    let (status, _) = agent.fetch(&token).await;
    assert_eq!(status, 200);
    // The call was signed with the node's session token: the logs had it to leak.
    assert_eq!(
        fake.requests()[0].security_token_fingerprint,
        Some(fingerprint(canaries.session_token.expose().as_bytes()))
    );
    agent.request_logs(1).await;

    let mut secrets = canaries.secrets();
    secrets.push(token);
    secrets.extend(fake.issued_secrets());
    let outputs = [&agent.stdout, &agent.stderr];
    stop_and_assert_no_secrets(&mut agent.child, &outputs, &secrets).await;
}

#[tokio::test]
async fn at_v_trace_no_secret_reaches_the_logs() {
    no_secret_in_the_logs(&["-v", "trace"], &[]).await;
}

/// With the AWS SDK's own switches for logging the bodies it signs and receives on too.
#[tokio::test]
async fn with_the_filter_variable_at_trace_no_secret_reaches_the_logs() {
    let env = [
        ("POD_IDENTITY_AGENT_LOG", "trace"),
        BODIES_LOGGED[0],
        BODIES_LOGGED[1],
    ];
    no_secret_in_the_logs(&[], &env).await;
}
