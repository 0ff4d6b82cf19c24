//! The agent binary against a fake EKS Auth: the credentials contract, the cache as a pod sees
//! it, and every bad input the issue lists.

mod common;

use std::time::Duration;

use common::{raw_request, status_of};
use futures::future::join_all;
use pod_identity_contracts::eks_auth::ErrorKind;
use pod_identity_contracts::log_schema::AgentRequestLine;
use pod_identity_test_support::agent_process::loopback_server_args;
use pod_identity_test_support::slow_clients::source_addr;
use pod_identity_test_support::{Behavior, FakeEksAuth, TokenBuilder};

#[tokio::test]
async fn serves_credentials_in_the_container_format() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let token = TokenBuilder::new().sign();

    let resp = reqwest::Client::new()
        .get(agent.credentials_url())
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    let issued = &fake.issued()[0];
    assert_eq!(body["AccessKeyId"], issued.access_key_id.as_str());
    assert_eq!(body["SecretAccessKey"], issued.secret_access_key.as_str());
    assert_eq!(body["Token"], issued.session_token.as_str());
    assert_eq!(body["AccountId"], "111122223333");
    let exp = body["Expiration"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.len() == 20, "{exp}");
    let parsed: jiff::Timestamp = exp.parse().unwrap();
    assert_eq!(parsed.as_second(), issued.expiration);

    // The upstream got the token from the pod and a SigV4-signed request.
    let req = &fake.requests()[0];
    assert!(
        req.signed,
        "the agent must sign EKS Auth calls with the node's credentials"
    );
    assert_eq!(req.cluster, "lab");

    // One structured log line per request, with the subject, never the secrets.
    let logs = agent.request_logs(1).await;
    let line = &logs[0];
    assert_eq!(line.answer.http_status, Some(200));
    assert_eq!(line.cache.as_deref(), Some("miss"));
    assert_eq!(line.pod.k8s_namespace.as_deref(), Some("default"));
    assert_eq!(line.pod.k8s_service_account.as_deref(), Some("s3-reader"));
    assert_eq!(line.pod.k8s_pod.as_deref(), Some("web-0"));
    assert_eq!(
        line.pod.association_id.as_deref(),
        Some(issued.association_id.as_str())
    );
    assert!(
        line.pod
            .token_fingerprint
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );
    let mut secrets = fake.issued_secrets();
    secrets.push(token.clone());
    agent.stdout.assert_no_secrets(&secrets);
    agent.stderr.assert_no_secrets(&secrets);
}

#[tokio::test]
async fn any_method_is_accepted_and_unknown_paths_are_404() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let token = TokenBuilder::new().sign();
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"] {
        let raw = raw_request(
            agent.credentials_addr,
            format!(
                "{method} /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status_of(&raw), 200, "{method}: {raw}");
    }
    assert_eq!(
        fake.calls(),
        1,
        "every method after the first is a cache hit"
    );
    for path in [
        "/",
        "/v1/credentials/",
        "/v2/credentials",
        "/v1/credentials/../x",
    ] {
        let raw = raw_request(
            agent.credentials_addr,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(status_of(&raw), 404, "{path}");
    }
}

#[tokio::test]
async fn wrong_host_is_403_and_never_reaches_upstream() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let token = TokenBuilder::new().sign();
    for host in [
        "10.0.0.7",
        "localhost",
        "169.254.170.23.evil.test",
        "[::1]",
        "",
    ] {
        let raw = raw_request(
            agent.credentials_addr,
            format!(
                "GET /v1/credentials HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status_of(&raw), 403, "Host {host:?}: {raw}");
        assert!(raw.contains("\"code\":\"AccessDenied\""), "{raw}");
    }
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn bad_tokens_are_400_with_a_reason_and_cost_no_upstream_call() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let now = pod_identity_test_support::tokens::now();
    let cases: Vec<(&str, String, &str)> = vec![
        ("non-JWT", "hello".into(), "InvalidToken"),
        ("three garbage segments", "a.b.c".into(), "InvalidToken"),
        (
            "huge",
            format!(
                "{}.{}.{}",
                "a".repeat(6000),
                "b".repeat(6000),
                "c".repeat(6000)
            ),
            "InvalidToken",
        ),
        (
            "alg none",
            TokenBuilder::new().unsigned_alg_none(),
            "InvalidToken",
        ),
        (
            "HS256",
            TokenBuilder::new().hs256_with_public_key_as_secret(),
            "InvalidToken",
        ),
        (
            "expired",
            TokenBuilder::new()
                .issued_at(now - 7200)
                .not_before(now - 7200)
                .expires_at(now - 60)
                .sign(),
            "ExpiredToken",
        ),
        (
            "not yet valid",
            TokenBuilder::new()
                .not_before(now + 600)
                .expires_at(now + 4000)
                .sign(),
            "TokenNotYetValid",
        ),
        (
            "no pod claim",
            TokenBuilder::new().without_pod().sign(),
            "InvalidToken",
        ),
        (
            "user subject",
            TokenBuilder::new().subject("user:alice").sign(),
            "InvalidToken",
        ),
    ];
    for (name, token, code) in &cases {
        let (status, body) = agent.fetch(token).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["code"], *code, "{name}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    // No token at all, and an empty one.
    let resp = reqwest::get(agent.credentials_url()).await.unwrap();
    assert_eq!(resp.status(), 400);
    let (status, body) = agent.fetch(" ").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("MissingToken")));
    assert_eq!(fake.calls(), 0, "refused tokens never reach EKS Auth");
    // Nothing a client sent is echoed into logs.
    let tokens: Vec<&str> = cases
        .iter()
        .map(|(_, t, _)| t.as_str())
        .filter(|t| t.len() > 20)
        .collect();
    agent.stdout.assert_no_secrets(&tokens);
}

#[tokio::test]
async fn oversized_headers_and_slow_clients_are_cut_off() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &["--header-read-timeout", "300ms"]).await;

    let big = "x".repeat(100 * 1024);
    let raw = raw_request(
        agent.credentials_addr,
        format!("GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&raw), 431, "{}", &raw[..raw.len().min(200)]);

    // Slowloris: half a request head and then silence. The agent must close the connection.
    let mut stream = tokio::net::TcpStream::connect(agent.credentials_addr)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a client that never finishes its headers must be disconnected"
    );

    // The agent still serves.
    let (status, _) = agent.fetch(&TokenBuilder::new().sign()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn concurrent_cold_requests_make_one_upstream_call() {
    let fake = FakeEksAuth::builder()
        .latency(Duration::from_millis(200))
        .start()
        .await;
    let agent = common::start(&fake, &[]).await;
    let token = TokenBuilder::new().sign();
    // From ten addresses: one holds at most 64 connections at once (the per-client cap).
    let clients: Vec<reqwest::Client> = (0..10)
        .map(|i| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .local_address(source_addr(i))
                .build()
                .unwrap()
        })
        .collect();
    let url = agent.credentials_url();
    let results = join_all((0..500).map(|i| {
        let client = clients[i % clients.len()].clone();
        let url = url.clone();
        let token = token.clone();
        async move {
            let resp = client
                .get(url)
                .header("Authorization", token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (
                status,
                body["AccessKeyId"].as_str().unwrap_or_default().to_string(),
            )
        }
    }))
    .await;
    assert_eq!(
        fake.calls(),
        1,
        "500 concurrent requests for one token: one upstream call"
    );
    let key = &fake.issued()[0].access_key_id;
    assert!(results.iter().all(|(s, k)| *s == 200 && k == key));
    let logs = agent.request_logs(500).await;
    let cache = |l: &AgentRequestLine, outcome| l.cache.as_deref() == Some(outcome);
    let coalesced = logs.iter().filter(|l| cache(l, "coalesced")).count();
    let misses = logs.iter().filter(|l| cache(l, "miss")).count();
    assert_eq!(misses, 1);
    assert!(
        coalesced > 0,
        "some requests must have waited on the one in flight"
    );
}

#[tokio::test]
async fn upstream_down_while_cached_still_serves_valid_credentials() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &["--max-credential-retention-before-renewal", "1s"]).await;
    let token = TokenBuilder::new().sign();
    let (status, first) = agent.fetch(&token).await;
    assert_eq!(status, 200);

    fake.set_default(Behavior::fail(
        ErrorKind::ServiceUnavailable,
        "down for maintenance",
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the 1 s retention
    let calls_before = fake.calls();
    let (status, second) = agent.fetch(&token).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["AccessKeyId"], first["AccessKeyId"],
        "the still-valid credentials"
    );
    assert!(fake.calls() > calls_before, "the agent did try to renew");
    let logs = agent.request_logs(2).await;
    assert_eq!(logs[1].cache.as_deref(), Some("stale"));
}

#[tokio::test]
async fn irrecoverable_errors_evict_and_pass_the_status_through() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &["--max-credential-retention-before-renewal", "1s"]).await;
    let token = TokenBuilder::new().sign();
    assert_eq!(agent.fetch(&token).await.0, 200);

    fake.set_default(Behavior::fail(
        ErrorKind::AccessDenied,
        "role does not trust pods.eks.amazonaws.com",
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = agent.fetch(&token).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "AccessDeniedException");
    // The pod gets a plain sentence; EKS Auth's own words stay in the audit line.
    assert_eq!(body["message"], "EKS Auth refused the request", "{body}");
    let refused = agent.request_logs(2).await;
    assert!(
        refused.iter().any(|l| l
            .error
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("does not trust")),
        "{refused:?}"
    );
    // Evicted: the next request goes upstream again instead of serving the old credentials.
    let calls = fake.calls();
    let (status, _) = agent.fetch(&token).await;
    assert_eq!(status, 400);
    assert_eq!(fake.calls(), calls + 1);

    // An unknown association is a 404, passed through.
    let other = TokenBuilder::new().service_account("nobody").sign();
    fake.set_default(Behavior::fail(
        ErrorKind::ResourceNotFound,
        "no association",
    ));
    let (status, body) = agent.fetch(&other).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("ResourceNotFoundException"))
    );
}

#[tokio::test]
async fn bad_upstream_answers_are_errors_and_never_cached() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let cases = [
        (Behavior::garbage(200, "{not json"), 502),
        (Behavior::garbage(200, "{}"), 502),
        (Behavior::MissingField, 502),
        (Behavior::ExpiredCredentials, 502),
        (Behavior::garbage(500, "<html>oops</html>"), 500),
    ];
    for (i, (behavior, want)) in cases.into_iter().enumerate() {
        let token = TokenBuilder::new().pod(format!("pod-{i}")).sign();
        fake.set_default(behavior.clone());
        let (status, body) = agent.fetch(&token).await;
        assert_eq!(status, want, "{behavior:?}: {body}");
        assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{body}"
        );
        // Not cached: once upstream is healthy, the same token gets fresh credentials.
        fake.set_default(Behavior::Succeed);
        let (status, body) = agent.fetch(&token).await;
        assert_eq!(status, 200, "{behavior:?} poisoned the cache: {body}");
    }
    let mut secrets = fake.issued_secrets();
    secrets.retain(|s| !s.is_empty());
    agent.stdout.assert_no_secrets(&secrets);
}

#[tokio::test]
async fn a_hanging_upstream_times_out_with_504() {
    let fake = FakeEksAuth::builder()
        .default_behavior(Behavior::Hang)
        .start()
        .await;
    let agent = common::start(&fake, &[]).await;
    let (status, body) = agent.fetch(&TokenBuilder::new().sign()).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "UpstreamTimeout");
    fake.set_default(Behavior::Succeed);
    assert_eq!(agent.fetch(&TokenBuilder::new().sign()).await.0, 200);
}

#[tokio::test]
async fn refreshes_before_expiry_without_a_caller_waiting() {
    let fake = FakeEksAuth::start().await;
    // Retention 4 s: refresh becomes due 3-3.5 s after the fetch; the sweep runs every 200 ms.
    let agent = common::start(
        &fake,
        &[
            "--max-credential-retention-before-renewal",
            "4s",
            "--refresh-interval",
            "200ms",
        ],
    )
    .await;
    let token = TokenBuilder::new().sign();
    let (_, first) = agent.fetch(&token).await;
    // Wait for the sweep to have stored the refreshed credentials (counted after it finishes).
    let metrics_url = format!("http://{}/metrics", agent.metrics_addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The official meaning of `hit`: a background refresh that succeeded.
        if text.contains("pod_identity_cache_state{state=\"hit\"} 1")
            && text.contains("pod_identity_cache_refreshes{result=\"ok\"} 1")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background refresh:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, second) = agent.fetch(&token).await;
    assert_eq!(status, 200);
    assert_ne!(
        second["AccessKeyId"], first["AccessKeyId"],
        "refreshed credentials are served"
    );
    let logs = agent.request_logs(2).await;
    assert_eq!(
        logs[1].cache.as_deref(),
        Some("hit"),
        "the caller did not wait on the upstream"
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn probes_and_metrics() {
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    for path in ["/healthz", "/readyz"] {
        let resp = reqwest::get(format!("http://{}{path}", agent.probe_addr))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let resp = reqwest::get(format!("http://{}{path}", agent.metrics_addr))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} on the metrics port");
    }
    let resp = reqwest::get(format!("http://{}/metrics", agent.probe_addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "metrics only on the metrics listener");

    let token = TokenBuilder::new().sign();
    agent.fetch(&token).await;
    agent.fetch(&token).await;
    agent.fetch("garbage").await;
    let text = reqwest::get(format!("http://{}/metrics", agent.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "pod_identity_http_response{code=\"200\"} 2",
        "pod_identity_http_response{code=\"400\"} 1",
        "pod_identity_cache_state{state=\"miss\"} 1",
        // The official `hit` counts background refreshes (none yet); requests served from the
        // cache are ours to count.
        "pod_identity_cache_state{state=\"hit\"} 0",
        "pod_identity_cache_requests{outcome=\"hit\"} 1",
        "pod_identity_cache_entries 1",
        "pod_identity_upstream_latency_seconds_count 1",
        "pod_identity_upstream_inflight 0",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let fake = FakeEksAuth::builder()
        .latency(Duration::from_millis(500))
        .start()
        .await;
    let mut agent = common::start(&fake, &[]).await;
    let token = TokenBuilder::new().sign();
    let url = agent.credentials_url();
    // A request in flight when SIGTERM arrives still gets its answer.
    let inflight = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .header("Authorization", token)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    fake.wait_for_calls(1, Duration::from_secs(10))
        .await
        .unwrap();
    agent.child.terminate().unwrap();
    assert_eq!(inflight.await.unwrap().unwrap(), 200);
    let status = agent
        .child
        .wait_for_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        agent.log_lines("stopped").len() == 1,
        "{}",
        agent.stdout.text()
    );
}

#[tokio::test]
async fn refuses_bad_configuration_with_exit_64() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-agent"))
        .args(["server", "-c", "lab", "-b", "0.0.0.0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expose"));

    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-agent"));
    common::node_environment(&mut cmd, home.path());
    let out = cmd
        .env_remove("AWS_REGION")
        .args([
            "server",
            "-c",
            "lab",
            "-b",
            "127.0.0.1",
            "-p",
            "0",
            "--probe-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_REGION"));

    // An AWS_CA_BUNDLE the EKS Auth client cannot use: its path and what is wrong with it.
    let empty = home.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for (bundle, want) in [
        (empty, "no PEM certificate in it"),
        (home.path().join("missing.pem"), "cannot read it"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-agent"));
        common::node_environment(&mut cmd, home.path());
        let out = cmd
            .env("AWS_CA_BUNDLE", &bundle)
            .args(loopback_server_args("lab", "https://127.0.0.1:9"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        let named = format!("AWS_CA_BUNDLE {}: {want}", bundle.display());
        assert!(stderr.contains(&named), "{named} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
