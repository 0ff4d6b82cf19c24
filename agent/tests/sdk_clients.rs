//! Real AWS SDK clients against the agent binary, configured only with the two variables the
//! webhook injects: the Rust SDK's default credential chain (aws-config) and botocore's.

mod common;

use pod_identity_test_support::moto::{ENV_REQUIRE_BOTOCORE, python_with};
use pod_identity_test_support::pod::{pod_environment, sdk_result, write_token_file};
use pod_identity_test_support::{FakeEksAuth, TokenBuilder};
use tokio::process::Command;

const CHILD_FLAG: &str = "POD_IDENTITY_SDK_CHILD";

/// The pod's side: runs in a child process whose environment is exactly the pod's, then the
/// default chain resolves credentials as it would in the container. Prints a result line with
/// no secret in it. Ignored unless the parent test starts it.
#[tokio::test]
#[ignore = "started as a child process by rust_sdk_default_chain_gets_credentials_from_the_agent"]
async fn sdk_child_resolves_default_chain() {
    if std::env::var_os(CHILD_FLAG).is_none() {
        return;
    }
    use aws_credential_types::provider::ProvideCredentials;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let provider = config.credentials_provider().expect("a default chain");
    let creds = provider
        .provide_credentials()
        .await
        .expect("credentials from the agent");
    let expiry = creds
        .expiry()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    println!(
        "SDK_RESULT {}",
        serde_json::json!({
            "access_key_id": creds.access_key_id(),
            "account_id": creds.account_id().map(|a| a.as_str().to_string()),
            "expiry": expiry,
            "session_token_len": creds.session_token().map(str::len),
        })
    );
}

#[tokio::test]
async fn rust_sdk_default_chain_gets_credentials_from_the_agent() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token_file(dir.path(), &TokenBuilder::new().sign());

    let mut cmd = common::pod_child(
        "sdk_child_resolves_default_chain",
        CHILD_FLAG,
        &agent,
        &token_file,
        dir.path(),
    );
    let result = sdk_result(&cmd.output().await.unwrap());
    let issued = &fake.issued()[0];
    assert_eq!(result["access_key_id"], issued.access_key_id.as_str());
    assert_eq!(result["account_id"], "111122223333");
    assert_eq!(result["expiry"], issued.expiration);
    assert_eq!(result["session_token_len"], issued.session_token.len());
    assert_eq!(fake.calls(), 1);

    // The SDK re-reads the token file: a rotated token is what reaches the agent next.
    let rotated = TokenBuilder::new().pod("web-0").jti("rotated").sign();
    std::fs::write(&token_file, &rotated).unwrap();
    let out = cmd.output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(fake.calls_for_token(&rotated), 1);
}

const BOTOCORE_SCRIPT: &str = r#"
import json, botocore.session
creds = botocore.session.get_session().get_credentials()
frozen = creds.get_frozen_credentials()
print("SDK_RESULT " + json.dumps({
    "method": creds.method,
    "access_key_id": frozen.access_key,
    "session_token_len": len(frozen.token or ""),
    "expiry": int(creds._expiry_time.timestamp()),
    "account_id": getattr(frozen, "account_id", None),
}))
"#;

#[tokio::test]
async fn botocore_default_chain_gets_credentials_from_the_agent() {
    let Some(python) = python_with(
        "botocore",
        ENV_REQUIRE_BOTOCORE,
        "botocore_default_chain_gets_credentials_from_the_agent",
    ) else {
        return;
    };
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token_file(dir.path(), &TokenBuilder::new().sign());

    let mut py = std::process::Command::new(python);
    py.args(["-c", BOTOCORE_SCRIPT]);
    pod_environment(&mut py, &agent.credentials_url(), &token_file, dir.path());
    let result = sdk_result(&Command::from(py).output().await.unwrap());
    let issued = &fake.issued()[0];
    assert_eq!(result["method"], "container-role");
    assert_eq!(result["access_key_id"], issued.access_key_id.as_str());
    assert_eq!(result["session_token_len"], issued.session_token.len());
    assert_eq!(result["expiry"], issued.expiration);
}
