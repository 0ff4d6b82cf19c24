//! Real AWS SDKs in three more languages, and the AWS CLI, against the agent binary, configured
//! only with the two variables the webhook injects: JavaScript v3 (`fromNodeProviderChain`), Go v2
//! (`LoadDefaultConfig`), Java v2 (`DefaultCredentialsProvider`) and the AWS CLI v1 (its driver's
//! session, with the CLI's own copy of botocore), each a small program from
//! `tests/sdk-clients/` built by `scripts/sdk-clients` (see docs/sdk-clients.md). For each: the
//! credentials EKS Auth issued reach the SDK; a refused token fails it with a bounded number of
//! requests (each SDK's own retry policy, counted at the agent); a 5xx is retried through.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use pod_identity_contracts::eks_auth::ErrorKind;
use pod_identity_test_support::agent_process::AgentLaunch;
use pod_identity_test_support::pod::{sdk_failure, sdk_result, write_token_file};
use pod_identity_test_support::sdk_clients::{ERROR_PREFIX, Sdk, pod_command, sdk_client};
use pod_identity_test_support::tokens::now;
use pod_identity_test_support::{
    AgentProcess, Behavior, FakeEksAuth, TokenBuilder, assert_no_secrets,
};

/// Run the SDK's client once as a pod with `token` in its token file; (output, the agent's
/// answers by status). Checks that no secret reached the client's output.
async fn run_pod(
    run: &Path,
    fake: &FakeEksAuth,
    token: &str,
) -> (std::process::Output, BTreeMap<u16, u64>) {
    run_pod_with(run, fake, token, &[]).await
}

/// [`run_pod`] with `agent_env` set for the agent.
async fn run_pod_with(
    run: &Path,
    fake: &FakeEksAuth,
    token: &str,
    agent_env: &[(&str, &str)],
) -> (std::process::Output, BTreeMap<u16, u64>) {
    let how = AgentLaunch {
        bin: env!("CARGO_BIN_EXE_pod-identity-agent"),
        env: agent_env,
        ..AgentLaunch::default()
    };
    let agent = AgentProcess::launch(&how, fake.cluster(), &fake.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token_file(dir.path(), token);
    let out = pod_command(run, &agent.credentials_url(), &token_file, dir.path())
        .output()
        .await
        .expect("run the SDK client");
    let mut secrets = fake.issued_secrets();
    secrets.push(token.to_string());
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secrets(&printed, &secrets);
    let responses = agent.responses().await;
    (out, responses)
}

/// How early the SDK reports the expiry, against what EKS Auth issued.
fn expiry_reported_early(sdk: Sdk) -> (i64, &'static str) {
    match sdk {
        Sdk::JavaScript | Sdk::Java | Sdk::Cli => (0, "reports the expiration the agent gave"),
        // config's resolve_credentials.go wraps container credentials in an aws.CredentialsCache
        // with a 5-minute ExpiryWindow, and the cache reports Expires minus that window.
        Sdk::Go => (
            300,
            "reports Expires minus its credentials cache's 5-minute ExpiryWindow",
        ),
    }
}

/// Requests the SDK makes to the agent when every answer is 400, as measured with the pinned
/// versions (docs/sdk-clients.md).
fn requests_on_400(sdk: Sdk) -> (u64, &'static str) {
    match sdk {
        Sdk::JavaScript => (
            5,
            "fromHttp tries 4 times, 1 s apart, whatever the status, then the chain's \
             fromContainerMetadata tries once more",
        ),
        Sdk::Go => (
            1,
            "the endpointcreds client's standard retryer does not retry a 400",
        ),
        Sdk::Java => (1, "ContainerCredentialsProvider does not retry a 400"),
        Sdk::Cli => (
            3,
            "its botocore's ContainerMetadataFetcher tries 3 times, 1 s apart, whatever the status",
        ),
    }
}

async fn credentials_served(sdk: Sdk, test: &str) {
    let Some(run) = sdk_client(sdk, test) else {
        return;
    };
    let fake = FakeEksAuth::start().await;
    let (out, responses) = run_pod(&run, &fake, &TokenBuilder::new().sign()).await;
    let result = sdk_result(&out);
    let issued = &fake.issued()[0];
    assert_eq!(
        result["access_key_id"],
        issued.access_key_id.as_str(),
        "{sdk:?}"
    );
    let (early, why) = expiry_reported_early(sdk);
    assert_eq!(
        result["expiry"],
        issued.expiration - early,
        "{sdk:?} {why} (issued {})",
        issued.expiration
    );
    assert_eq!(
        result["session_token_len"],
        issued.session_token.len(),
        "{sdk:?}"
    );
    assert_eq!(
        responses,
        BTreeMap::from([(200, 1)]),
        "{sdk:?}: one request"
    );
    assert_eq!(fake.calls(), 1);
}

async fn bad_token_refused(sdk: Sdk, test: &str) {
    let Some(run) = sdk_client(sdk, test) else {
        return;
    };
    // Expired: the agent refuses it itself, with 400, and never calls EKS Auth.
    let fake = FakeEksAuth::start().await;
    let expired = TokenBuilder::new()
        .issued_at(now() - 7200)
        .expires_at(now() - 3600)
        .sign();
    refused(sdk, &run, &fake, &expired, "an expired token").await;
    assert_eq!(fake.calls(), 0, "the agent refuses an expired token itself");

    // EKS Auth refuses it (AccessDenied, 400): the agent passes the 400 on.
    let fake = FakeEksAuth::builder()
        .default_behavior(Behavior::fail(ErrorKind::AccessDenied, "no association"))
        .start()
        .await;
    let token = TokenBuilder::new().sign();
    let requests = refused(sdk, &run, &fake, &token, "a token EKS Auth denies").await;
    let upstream = fake.calls() as u64;
    assert!(
        (1..=requests).contains(&upstream),
        "{sdk:?}: {upstream} EKS Auth calls for {requests} pod requests"
    );
}

/// Run the SDK with a token the agent answers 400 for: it fails with a message, after exactly
/// the requests its retry policy makes. Returns that count.
async fn refused(sdk: Sdk, run: &Path, fake: &FakeEksAuth, token: &str, case: &str) -> u64 {
    let (requests, why) = requests_on_400(sdk);
    let (out, responses) = run_pod(run, fake, token).await;
    let error = sdk_failure(&out, ERROR_PREFIX);
    eprintln!("{sdk:?} on {case} reports: {error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{sdk:?}: {error}"
    );
    assert_eq!(
        responses,
        BTreeMap::from([(200, 0), (400, requests)]),
        "{sdk:?} on {case}: {why}"
    );
    requests
}

async fn retries_through_5xx(sdk: Sdk, test: &str) {
    let Some(run) = sdk_client(sdk, test) else {
        return;
    };
    // EKS Auth answers 200 without a session token: the agent answers 502 at once (its own EKS
    // Auth client retries a 5xx from EKS Auth, with backoff, which makes an SDK's own timeouts
    // part of the count). Then EKS Auth succeeds.
    let fake = FakeEksAuth::builder()
        .script(vec![Behavior::MissingField])
        .start()
        .await;
    let (out, responses) = run_pod(&run, &fake, &TokenBuilder::new().sign()).await;
    let result = sdk_result(&out);
    let issued = fake.issued();
    assert_eq!(
        result["access_key_id"],
        issued.last().unwrap().access_key_id.as_str(),
        "{sdk:?}"
    );
    assert_eq!(
        responses,
        BTreeMap::from([(502, 1), (200, 1)]),
        "{sdk:?}: the agent answered one 502, the SDK retried once"
    );
    assert_eq!(fake.calls(), 2);
}

/// Whether the SDK retries after the agent answers 429 (EKS Auth throttling, passed on when the
/// agent holds no credentials), as measured with the pinned versions.
fn retries_429(sdk: Sdk) -> (bool, &'static str) {
    match sdk {
        Sdk::JavaScript => (true, "fromHttp retries whatever the status"),
        Sdk::Go => (true, "the standard retryer retries a 429 (throttling)"),
        Sdk::Java => (
            false,
            "ContainerCredentialsProvider retries only 5xx and IO errors: a 429 is final",
        ),
        Sdk::Cli => (
            true,
            "its botocore's ContainerMetadataFetcher retries whatever the status",
        ),
    }
}

async fn throttled_then_served(sdk: Sdk, test: &str) {
    let Some(run) = sdk_client(sdk, test) else {
        return;
    };
    // The agent makes one attempt (AWS_MAX_ATTEMPTS, read by its SDK like any other), so
    // EKS Auth's one throttled answer reaches the pod at once as a 429, well inside every SDK's
    // read timeout; then EKS Auth answers. With the default three attempts and their backoff,
    // the agent's answer can outlast Java's 1 s read timeout, and what the SDK sees would
    // depend on timing rather than on its retry policy, which is what this test measures.
    let fake = FakeEksAuth::builder()
        .script(vec![Behavior::fail(ErrorKind::Throttling, "rate exceeded")])
        .start()
        .await;
    let (out, responses) = run_pod_with(
        &run,
        &fake,
        &TokenBuilder::new().sign(),
        &[("AWS_MAX_ATTEMPTS", "1")],
    )
    .await;
    let (retries, why) = retries_429(sdk);
    assert_eq!(responses.get(&429), Some(&1), "{sdk:?}: {responses:?}");
    assert_eq!(
        responses.len(),
        2,
        "{sdk:?}: only 429s and 200s: {responses:?}"
    );
    if retries {
        sdk_result(&out);
        assert_eq!(responses.get(&200), Some(&1), "{sdk:?}: {why}");
        assert_eq!(fake.calls(), 2, "{sdk:?}");
    } else {
        sdk_failure(&out, ERROR_PREFIX);
        assert_eq!(responses.get(&200), Some(&0), "{sdk:?}: {why}");
        assert_eq!(fake.calls(), 1, "{sdk:?}");
    }
}

macro_rules! sdk_tests {
    ($($sdk:ident: $served:ident, $refused:ident, $retried:ident, $throttled:ident;)*) => {$(
        #[tokio::test]
        async fn $served() {
            credentials_served(Sdk::$sdk, stringify!($served)).await;
        }

        #[tokio::test]
        async fn $refused() {
            bad_token_refused(Sdk::$sdk, stringify!($refused)).await;
        }

        #[tokio::test]
        async fn $retried() {
            retries_through_5xx(Sdk::$sdk, stringify!($retried)).await;
        }

        #[tokio::test]
        async fn $throttled() {
            throttled_then_served(Sdk::$sdk, stringify!($throttled)).await;
        }
    )*};
}

sdk_tests! {
    JavaScript: javascript_sdk_gets_credentials_from_the_agent,
        javascript_sdk_fails_on_a_refused_token_without_a_retry_storm,
        javascript_sdk_retries_through_a_5xx,
        javascript_sdk_after_a_429;
    Go: go_sdk_gets_credentials_from_the_agent,
        go_sdk_fails_on_a_refused_token_without_a_retry_storm,
        go_sdk_retries_through_a_5xx,
        go_sdk_after_a_429;
    Java: java_sdk_gets_credentials_from_the_agent,
        java_sdk_fails_on_a_refused_token_without_a_retry_storm,
        java_sdk_retries_through_a_5xx,
        java_sdk_after_a_429;
    Cli: aws_cli_gets_credentials_from_the_agent,
        aws_cli_fails_on_a_refused_token_without_a_retry_storm,
        aws_cli_retries_through_a_5xx,
        aws_cli_after_a_429;
}
