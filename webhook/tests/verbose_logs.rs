//! The webhook at its most verbose (`--log-level trace`, and `POD_IDENTITY_WEBHOOK_LOG=trace`),
//! with AWS credentials in its environment, reviewing over TLS a pod that carries a secret in its
//! spec (created, then updated), a pod whose spec has a secret where it is mistyped, and a review
//! whose request is one:
//! nothing it prints, nor any answer, holds one of them, and its logs hold no line of its TLS key.

mod common;

use common::{TestCa, TlsClient, Webhook, fixture};
use pod_identity_test_support::assert_no_secrets;
use pod_identity_test_support::verbose::{SigningCanaries, canary, stop_and_assert_no_secrets};
use serde_json::{Value, json};

async fn no_secret_in_the_logs(extra: &[&str], env: &[(&str, &str)]) {
    let ca = TestCa::new();
    let issued = ca.issue();
    let canaries = SigningCanaries::new();
    let mut vars = canaries.env().to_vec();
    vars.extend_from_slice(env);
    let mut webhook = Webhook::start_with_env(&issued, extra, Some(&vars)).await;
    let mut client = TlsClient::connect(webhook.admission, ca.client_config()).await;

    let in_spec = canary("envvalue");
    let mut review: Value = serde_json::from_slice(&fixture("inject-basic.json")).unwrap();
    let env_of_app = &mut review["request"]["object"]["spec"]["containers"][0]["env"];
    *env_of_app = json!([{"name": "DB_PASSWORD", "value": in_spec}]);
    let (status, injected) = client.post(review.to_string()).await;
    assert_eq!(status, 200);
    let injected: Value = serde_json::from_slice(&injected).unwrap();
    assert_eq!(injected["response"]["patchType"], "JSONPatch");

    // An update: not reviewed, said at debug.
    let mut update = review.clone();
    update["request"]["operation"] = json!("UPDATE");
    let (status, _) = client.post(update.to_string()).await;
    assert_eq!(status, 200);

    // Mistyped, the pod cannot be decoded: allowed unchanged, with a warning.
    let mistyped = canary("mistyped");
    review["request"]["object"]["spec"]["containers"][0]["env"] = json!(mistyped);
    let (status, allowed) = client.post(review.to_string()).await;
    assert_eq!(status, 200);
    // Not an AdmissionReview: refused.
    let not_a_request = canary("request");
    let bad = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": not_a_request});
    let (status, refused) = client.post(bad.to_string()).await;
    assert_eq!(status, 400);
    // The answers name what was wrong without quoting it.
    let answers = format!(
        "{}\n{}",
        String::from_utf8_lossy(&allowed),
        String::from_utf8_lossy(&refused)
    );
    assert_no_secrets(&answers, &[&mistyped, &not_a_request]);
    assert!(answers.contains("invalid type"), "{answers}");
    drop(client);

    let mut secrets = canaries.secrets();
    secrets.extend([in_spec, mistyped, not_a_request]);
    secrets.extend(
        issued
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .map(str::to_string),
    );
    let stderr = webhook.stderr.clone().expect("stderr captured");
    let outputs = [&webhook.logs, &stderr];
    stop_and_assert_no_secrets(&mut webhook.guard, &outputs, &secrets).await;
}

#[tokio::test]
async fn at_log_level_trace_no_secret_reaches_the_logs() {
    no_secret_in_the_logs(&["--log-level", "trace"], &[]).await;
}

#[tokio::test]
async fn with_the_filter_variable_at_trace_no_secret_reaches_the_logs() {
    no_secret_in_the_logs(&[], &[("POD_IDENTITY_WEBHOOK_LOG", "trace")]).await;
}
