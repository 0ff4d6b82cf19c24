//! Real AWS SDK clients against the agent binary, configured only with the two variables the
//! webhook injects: the Rust SDK's default credential chain (aws-config) and botocore's.

mod common;

use std::process::Stdio;

use tokio::process::Command;

use pod_identity_contracts::constants::{ENV_FULL_URI, ENV_TOKEN_FILE};
use pod_identity_test_support::AgentProcess;
use pod_identity_test_support::moto::{ENV_REQUIRE_BOTOCORE, python_with};
use pod_identity_test_support::{FakeEksAuth, TokenBuilder};
use serde_json::Value;

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

/// A pod's environment: nothing but the injected variables (and a region, as EKS sets).
fn pod_env(
    cmd: &mut Command,
    agent: &AgentProcess,
    token_file: &std::path::Path,
    home: &std::path::Path,
) {
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("none"))
        .env(ENV_FULL_URI, agent.credentials_url())
        .env(ENV_TOKEN_FILE, token_file);
}

fn result_line(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SDK_RESULT "))
        .unwrap_or_else(|| panic!("no SDK_RESULT line in:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn rust_sdk_default_chain_gets_credentials_from_the_agent() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("eks-pod-identity-token");
    // Written without a trailing newline, as the kubelet does (the SDKs reject one).
    std::fs::write(&token_file, TokenBuilder::new().sign()).unwrap();

    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "sdk_child_resolves_default_chain",
        "--exact",
        "--ignored",
        "--nocapture",
    ]);
    pod_env(&mut cmd, &agent, &token_file, dir.path());
    // Async: the fake EKS Auth runs on this test's runtime and must keep answering meanwhile.
    let out = cmd
        .env(CHILD_FLAG, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = result_line(&stdout);
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
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, TokenBuilder::new().sign()).unwrap();

    let mut cmd = Command::new(python);
    cmd.args(["-c", BOTOCORE_SCRIPT]);
    pod_env(&mut cmd, &agent, &token_file, dir.path());
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "botocore failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = result_line(&stdout);
    let issued = &fake.issued()[0];
    assert_eq!(result["method"], "container-role");
    assert_eq!(result["access_key_id"], issued.access_key_id.as_str());
    assert_eq!(result["session_token_len"], issued.session_token.len());
    assert_eq!(result["expiry"], issued.expiration);
}
