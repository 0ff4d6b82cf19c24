//! The real `pod-identity-webhook serve` binary over HTTPS on 127.0.0.1: admission answers,
//! limits, probes and metrics, certificate rotation under an open connection, and shutdown.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestCa, TlsClient, Webhook, fixture, write_atomic};
use serde_json::Value;

#[tokio::test]
async fn serves_reviews_over_https_and_probes_over_http() {
    let ca = TestCa::new();
    let webhook = Webhook::start(&ca.issue(), &["--aws-default-region", "eu-west-1"]).await;
    // Its start line says which release and revision it is.
    let ready = webhook
        .logs
        .wait_for_json(|l| l["message"] == "webhook ready", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(ready["version"], pod_identity_contracts::version::RELEASE);
    assert_eq!(ready["revision"], pod_identity_contracts::version::REVISION);
    let mut client = TlsClient::connect(webhook.admission, ca.client_config()).await;

    // A pod to inject: the patch carries the region too.
    let (status, body) = client.post(fixture("inject-basic.json")).await;
    assert_eq!(status, 200);
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        review["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    let request: Value = serde_json::from_slice(&fixture("inject-basic.json")).unwrap();
    let pod = pod_identity_webhook::offline::apply_response(
        request["request"]["object"].clone(),
        &review["response"],
    )
    .unwrap()
    .pod;
    let env = pod["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("eu-west-1") && env.contains("169.254.170.23"),
        "{env}"
    );

    // On the same connection: bad input gets its defined answer.
    for (name, want) in [
        ("no-association.json", 200),
        ("invalid-utf8.json", 400),
        ("truncated-json.json", 400),
        ("no-request.json", 400),
        ("bad-pod-object.json", 200),
    ] {
        let (status, _) = client.post(fixture(name)).await;
        assert_eq!(status, want, "{name}");
    }
    // 5 MiB declared: 413 before the body is read.
    let answer = common::raw_exchange(
        webhook.admission,
        ca.client_config(),
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n{",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 4194304 bytes"), "{answer}");
    let (status, _) = client.request("GET", "/mutate", Bytes::new()).await;
    assert_eq!(status, 405);
    let (status, _) = client.request("POST", "/other", Bytes::new()).await;
    assert_eq!(status, 404);

    // Probes and metrics on plain HTTP.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", webhook.metrics);
    for path in ["/healthz", "/readyz"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "pod_identity_webhook_reviews_total{result=\"injected\"} 1",
        "pod_identity_webhook_reviews_total{result=\"no_association\"} 1",
        "pod_identity_webhook_reviews_total{result=\"error\"} 1",
        "pod_identity_webhook_review_errors_total{reason=\"bad_pod\"} 1",
        "pod_identity_webhook_http_requests_total{code=\"400\"} 3",
        "pod_identity_webhook_http_requests_total{code=\"413\"} 1",
        "pod_identity_webhook_store_ready 1",
        // The real binary's writer, under no pressure here.
        "pod_identity_webhook_log_lines_dropped_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    // One log line per review, with the shared field names.
    let injected = webhook
        .logs
        .wait_for_json(|l| l["message"] == "pod injected", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(injected["k8s.namespace"], "default");
    assert_eq!(injected["k8s.service_account"], "s3-reader");
    assert_eq!(
        injected["role_arn"],
        "arn:aws:iam::111122223333:role/s3-reader"
    );
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_and_keeps_open_ones() {
    let ca = TestCa::new();
    let first = ca.issue();
    let mut webhook = Webhook::start(&first, &[]).await;
    let config = ca.client_config();
    let mut open = TlsClient::connect(webhook.admission, config.clone()).await;
    assert_eq!(open.peer_cert, first.der);
    assert_eq!(open.post(fixture("inject-basic.json")).await.0, 200);

    // cert-manager renews: new key and certificate, swapped into place.
    let second = ca.issue();
    write_atomic(&webhook.key_path, &second.key_pem);
    write_atomic(&webhook.cert_path, &second.cert_pem);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = TlsClient::connect(webhook.admission, config.clone()).await;
        if fresh.peer_cert == second.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections still get the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the rotation keeps working.
    for _ in 0..3 {
        let (status, body) = open.post(fixture("inject-basic.json")).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    webhook
        .logs
        .wait_for_json(
            |l| l["message"] == "serving certificate reloaded",
            Duration::from_secs(5),
        )
        .await
        .unwrap();

    // A broken pair (garbage certificate) is refused; the current one keeps serving.
    write_atomic(&webhook.cert_path, "not a certificate");
    webhook
        .logs
        .wait_for_json(
            |l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("keeping the previous one"))
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let fresh = TlsClient::connect(webhook.admission, config.clone()).await;
    assert_eq!(fresh.peer_cert, second.der);

    // SIGTERM: a clean exit.
    drop(open);
    drop(fresh);
    webhook.guard.terminate().unwrap();
    let status = webhook
        .guard
        .wait_for_exit(Duration::from_secs(15))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn bad_configuration_exits_64_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args(["serve", "--tls-cert"])
        .arg(&missing)
        .arg("--tls-key")
        .arg(&missing)
        .arg("--associations")
        .arg(&missing)
        .args(["--port", "0", "--metrics-port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}
