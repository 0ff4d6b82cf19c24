//! Issue #12, item 6: thousands of slow clients against the real webhook binary over TLS: heads
//! trickled after the handshake, handshakes never finished, and AdmissionReview bodies trickled
//! after a whole head. Its memory must stay well inside the manifest's limit and the API
//! server's review must still be answered within 1 s; the metrics listener must hold as well.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{TestCa, TlsClient, Webhook, fixture};
use pod_identity_test_support::slow_clients::{
    Flood, RssSampler, assert_slowest_under, manifest_memory_limit, mib, one_flood_at_a_time,
    open_file_limits, rss_bytes, skip_without_fds, timed_samples, with_soft_fd_limit,
};

/// The slowest review (or scrape) the API server (or Prometheus) may see under the flood: its
/// `timeoutSeconds` is 3, and a pod's creation waits on it.
const BUDGET: Duration = Duration::from_secs(1);

/// `resources.limits.memory` of the webhook's container in `deploy/webhook/deployment.yaml`.
fn memory_limit() -> u64 {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/webhook/deployment.yaml"
    );
    manifest_memory_limit(manifest.as_ref(), "webhook")
}

/// What the webhook may reach under the flood: the limit with a third to spare.
fn memory_ceiling() -> u64 {
    memory_limit() / 3 * 2
}

/// The webhook started with a soft open-file limit of 1024, as in a container; it must have
/// raised it to the hard limit itself.
async fn webhook(ca: &TestCa) -> Webhook {
    let webhook = with_soft_fd_limit(1024, Webhook::start(&ca.issue(), &[])).await;
    let (soft, hard) = open_file_limits(webhook.guard.id().unwrap());
    assert_eq!(
        soft, hard,
        "the webhook left its soft open-file limit below the hard one"
    );
    webhook
}

/// `n` reviews of a pod to inject, each on a new TLS connection, `every` apart, timed in ms
/// (connection, handshake and answer).
async fn review_times(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    n: usize,
    every: Duration,
) -> Vec<f64> {
    let review = fixture("inject-basic.json");
    timed_samples(n, every, move || {
        let (tls, review) = (tls.clone(), review.clone());
        async move {
            let mut client = TlsClient::connect(addr, tls).await;
            let (status, body) = client.post(review).await;
            let body = String::from_utf8_lossy(&body);
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("JSONPatch"), "{body}");
        }
    })
    .await
}

/// Connections sending `prefix`, `fill` bytes, then a byte every 500 ms.
fn slow(target: SocketAddr, prefix: &[u8], fill: usize) -> Flood {
    Flood {
        target,
        connections: 0,
        sources: 1,
        prefix: prefix.to_vec(),
        fill,
        trickle: Duration::from_millis(500),
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_clients_neither_exhaust_memory_nor_stall_a_review() {
    let _one = one_flood_at_a_time().await;
    if skip_without_fds(16_384) {
        return;
    }
    let ca = TestCa::new();
    let webhook = webhook(&ca).await;
    let pid = webhook.guard.id().unwrap();
    let addr = webhook.admission;
    let quiet = review_times(addr, ca.client_config(), 3, Duration::from_millis(100)).await;
    let idle = rss_bytes(pid);

    let rss = RssSampler::start(pid);
    let started = Instant::now();
    let tls = Some(ca.client_config());
    // Heads of ~14 KiB (the limit is 16) never finished, after a full handshake: 2,000 clients
    // over 40 addresses.
    let heads = Flood {
        connections: 2000,
        sources: 40,
        tls: tls.clone(),
        ..slow(
            addr,
            b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ",
            14 * 1024,
        )
    }
    .start();
    // Handshakes never finished: a TLS record header announcing a 16 KiB ClientHello, half of
    // it sent, the rest trickled. 1,000 clients over 20 addresses.
    let handshakes = Flood {
        connections: 1000,
        sources: 20,
        ..slow(addr, &[0x16, 0x03, 0x01, 0x40, 0x00], 8 * 1024)
    }
    .start();
    // Whole heads announcing the largest body (4 MiB), 64 KiB of it sent and the rest trickled:
    // 1,000 clients over 20 addresses, each holding its body until the 5 s body deadline.
    let bodies = Flood {
        connections: 1000,
        sources: 20,
        tls,
        ..slow(
            addr,
            b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n{\"pad\":\"",
            64 * 1024,
        )
    }
    .start();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Ten reviews a second apart, past the body deadline (5 s) and the head and handshake
    // deadline (10 s) of the first slow clients, when they are closed and come back.
    let flooded = review_times(addr, ca.client_config(), 10, Duration::from_secs(1)).await;
    let peak = rss.stop().await;
    let held = started.elapsed();
    let opened: u64 = [&heads, &handshakes, &bodies]
        .iter()
        .map(|f| f.stats.opened.load(Ordering::Relaxed))
        .sum();
    heads.stop().await;
    handshakes.stop().await;
    bodies.stop().await;

    eprintln!(
        "webhook admission listener: RSS idle {}, peak under 4,000 slow clients {} ({opened} connections opened in {held:.1?}); review ms quiet {quiet:?}, flooded {flooded:?}",
        mib(idle),
        mib(peak)
    );
    assert!(
        peak < memory_ceiling(),
        "RSS peaked at {} (limit {}, ceiling {})",
        mib(peak),
        mib(memory_limit()),
        mib(memory_ceiling())
    );
    assert_slowest_under(BUDGET, &flooded, "review under the flood");
    // Still serving once the flood is gone.
    review_times(addr, ca.client_config(), 1, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_on_the_metrics_port_neither_exhaust_memory_nor_stall_a_scrape() {
    let _one = one_flood_at_a_time().await;
    if skip_without_fds(16_384) {
        return;
    }
    let ca = TestCa::new();
    let webhook = webhook(&ca).await;
    let pid = webhook.guard.id().unwrap();
    let idle = rss_bytes(pid);
    let rss = RssSampler::start(pid);
    let flood = Flood {
        connections: 2000,
        sources: 40,
        ..slow(
            webhook.metrics,
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ",
            6 * 1024,
        )
    }
    .start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ms = Vec::new();
    for path in [
        "/metrics", "/readyz", "/metrics", "/healthz", "/metrics", "/readyz",
    ] {
        // A new connection each time, as a kubelet's probe or Prometheus after an idle interval.
        let started = Instant::now();
        let resp = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
            .get(format!("http://{}{path}", webhook.metrics))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.bytes().await.unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let peak = rss.stop().await;
    flood.stop().await;
    eprintln!(
        "webhook metrics listener: RSS idle {}, peak under 2,000 slow clients {}; probe and scrape ms {ms:?}",
        mib(idle),
        mib(peak)
    );
    assert!(peak < memory_ceiling(), "RSS peaked at {}", mib(peak));
    assert_slowest_under(BUDGET, &ms, "probe or scrape");
}
