//! demo-app in environments built on purpose: each names the provider aws-config's own default
//! chain chose (its cross-check), explains the steps, and reaches STS (moto) with the winner.

use std::path::Path;
use std::time::Duration;

use pod_identity_test_support::moto::{ENV_REQUIRE_MOTO, Moto};
use pod_identity_test_support::{AgentProcess, FakeEksAuth, TokenBuilder, workspace_bin};
use serde_json::Value;

/// A pod with nothing configured but what `vars` adds: no profile files, no IMDS, STS at moto.
async fn demo(home: &Path, moto: &Moto, vars: &[(&str, String)]) -> (i32, Value, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo-app"));
    cmd.arg("--json")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ENDPOINT_URL_STS", moto.url());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("demo-app finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("demo-app --json is not JSON ({e}):\n{stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn results(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"]["result"].as_str().unwrap().to_string())
        .collect()
}

/// The verdict matches aws-config's default chain, which the report carries.
fn assert_agrees(report: &Value, winner: &str, sdk_provider: &str) {
    assert_eq!(report["winner"], winner, "{report:#}");
    assert_eq!(
        report["cross_check"]["sdk_default_chain"], sdk_provider,
        "{report:#}"
    );
    assert_eq!(report["cross_check"]["matches"], true);
}

async fn moto(test: &str) -> Option<Moto> {
    let moto = Moto::start(test).await;
    if moto.is_none() {
        assert!(std::env::var_os(ENV_REQUIRE_MOTO).is_none());
    }
    moto
}

#[tokio::test]
async fn environment_keys_only() {
    let Some(moto) = moto("environment_keys_only").await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (code, report, _) = demo(
        home.path(),
        &moto,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAENVONLYEXAMPLE".into()),
            ("AWS_SECRET_ACCESS_KEY", "env-secret-value".into()),
        ],
    )
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert_agrees(&report, "environment", "EnvironmentVariable");
    assert_eq!(
        results(&report),
        [
            "loaded",
            "not-reached",
            "not-reached",
            "not-reached",
            "not-reached"
        ]
    );
    assert!(
        report["identity"]["arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:")
    );
    let text = report.to_string();
    assert!(
        !text.contains("env-secret-value"),
        "a secret reached the report"
    );
}

#[tokio::test]
async fn profile_file_only() {
    let Some(moto) = moto("profile_file_only").await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("credentials"),
        "[default]\naws_access_key_id = AKIAPROFILEEXAMPLE\naws_secret_access_key = profile-secret-value\n",
    )
    .unwrap();
    let (code, report, _) = demo(home.path(), &moto, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_agrees(&report, "profile", "ProfileFile");
    assert_eq!(results(&report)[..2], ["not-loaded", "loaded"]);
    assert!(!report.to_string().contains("profile-secret-value"));
}

#[tokio::test]
async fn web_identity_only() {
    let Some(moto) = moto("web_identity_only").await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("irsa-token");
    std::fs::write(
        &token,
        TokenBuilder::new().audience("sts.amazonaws.com").sign(),
    )
    .unwrap();
    let (code, report, _) = demo(
        home.path(),
        &moto,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/irsa-role".into(),
            ),
            ("AWS_ROLE_SESSION_NAME", "demo".into()),
        ],
    )
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert_agrees(&report, "web-identity", "WebIdentityToken");
    assert_eq!(
        results(&report)[..3],
        ["not-loaded", "not-loaded", "loaded"]
    );
    assert!(
        report["identity"]["arn"]
            .as_str()
            .unwrap()
            .contains("irsa-role"),
        "{report:#}"
    );
}

#[tokio::test]
async fn container_only_is_pod_identity_through_the_agent() {
    let Some(moto) = moto("container_only_is_pod_identity_through_the_agent").await else {
        return;
    };
    let fake = FakeEksAuth::start().await;
    let agent = AgentProcess::start(
        workspace_bin("pod-identity-agent"),
        fake.cluster(),
        &fake.url(),
        &[],
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let token = TokenBuilder::new().pod("demo-pod").sign();
    let token_file = home.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, &token).unwrap();
    let (code, report, stderr) = demo(
        home.path(),
        &moto,
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                agent.credentials_url(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.display().to_string(),
            ),
        ],
    )
    .await;
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_agrees(&report, "container", "EcsContainer");
    assert_eq!(
        results(&report)[..4],
        ["not-loaded", "not-loaded", "not-loaded", "loaded"]
    );
    let container = &report["steps"][3]["container"];
    assert_eq!(container["rust_sdk_accepts"], true);
    assert_eq!(
        container["token_file"]["claims"]["sub"],
        "system:serviceaccount:default:s3-reader"
    );
    assert_eq!(container["token_file"]["claims"]["pod"], "demo-pod");
    assert_eq!(container["exchange"]["status"], 200);
    // Secrets: neither the token nor the issued keys appear anywhere in the report.
    let mut secrets = fake.issued_secrets();
    secrets.push(token);
    pod_identity_test_support::assert_no_secrets(&format!("{report} {stderr}"), &secrets);
}

#[tokio::test]
async fn static_keys_shadow_pod_identity() {
    let Some(moto) = moto("static_keys_shadow_pod_identity").await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (code, report, _) = demo(
        home.path(),
        &moto,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIASHADOWEXAMPLE".into()),
            ("AWS_SECRET_ACCESS_KEY", "shadow-secret".into()),
            // The agent need not even exist: it is never asked.
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://127.0.0.1:9/v1/credentials".into(),
            ),
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_agrees(&report, "environment", "EnvironmentVariable");
    assert_eq!(report["steps"][3]["outcome"]["result"], "not-reached");
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("static keys")
    );
}

#[tokio::test]
async fn nothing_configured_fails_with_one_reason() {
    let Some(moto) = moto("nothing_configured_fails_with_one_reason").await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (code, report, stderr) = demo(home.path(), &moto, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["winner"], Value::Null);
    assert!(
        results(&report).iter().all(|r| r == "not-loaded"),
        "{report:#}"
    );
    assert_eq!(report["cross_check"]["matches"], true);
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one-line reason: {stderr}"
    );
    assert!(stderr.contains("no credentials"));
}
