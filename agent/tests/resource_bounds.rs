//! Issue #12, item 6: thousands of slow clients against the real agent binary. Its memory must
//! stay well inside the manifest's limit and a pod's real SDK must still get credentials within
//! 1 s (botocore allows 2 s per attempt); the metrics listener must hold as well.

mod common;

use std::time::{Duration, Instant};

use pod_identity_test_support::pod::{sdk_result, write_token_file};
use pod_identity_test_support::slow_clients::{
    Flood, RssSampler, assert_slowest_under, manifest_memory_limit, mib, rss_bytes,
    skip_without_fds,
};
use pod_identity_test_support::{FakeEksAuth, TokenBuilder};

const CHILD_FLAG: &str = "POD_IDENTITY_BOUNDS_CHILD";
/// `resources.limits.memory` of the agent's container in `deploy/agent/daemonset.yaml`.
fn memory_limit() -> u64 {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/agent/daemonset.yaml"
    );
    manifest_memory_limit(manifest.as_ref(), "eks-pod-identity-agent")
}

/// What the agent may reach under the flood: the limit with a third to spare.
fn memory_ceiling() -> u64 {
    memory_limit() / 3 * 2
}
/// The slowest fetch a pod may see under the flood.
const FETCH_BUDGET: Duration = Duration::from_secs(1);
/// A scrape under a flood: Prometheus allows 10 s by default (`scrape_timeout`); issue #12 asks
/// that a flood stall no well-behaved request past 1 s. Measured 3-15 ms on an idle 2-core
/// machine with the flood on a thread of its own (docs/benchmarks.md).
const SCRAPE_BUDGET: Duration = Duration::from_secs(1);
const FETCHES: usize = 5;

/// A pod under the flood: the Rust SDK's container credentials provider (aws-config's `ecs`),
/// configured by the two injected variables alone, fetches [`FETCHES`] times, each on a new
/// provider (a new connection, as a new pod's first call), and prints how long each took.
#[tokio::test]
#[ignore = "started as a child process by the flood tests below"]
async fn pod_child_times_its_fetches() {
    if std::env::var_os(CHILD_FLAG).is_none() {
        return;
    }
    use aws_credential_types::provider::ProvideCredentials;
    let mut ms = Vec::new();
    for _ in 0..FETCHES {
        let provider = aws_config::ecs::EcsCredentialsProvider::builder().build();
        let started = Instant::now();
        let creds = provider.provide_credentials().await;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(creds.is_ok(), "no credentials: {creds:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("SDK_RESULT {}", serde_json::json!({ "ms": ms }));
}

/// Fetch times (ms) of a pod's SDK against `agent`, from a child process.
async fn pod_fetch_times(agent: &common::AgentProcess, token: &str) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token_file(dir.path(), token);
    let mut child = common::pod_child(
        "pod_child_times_its_fetches",
        CHILD_FLAG,
        agent,
        &token_file,
        dir.path(),
    );
    let out = child.output().await.unwrap();
    let result = sdk_result(&out);
    result["ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// A request line and the start of a head that never ends, `fill` bytes long.
fn unfinished_head(fill: usize, target: std::net::SocketAddr) -> Flood {
    Flood {
        target,
        connections: 0,
        sources: 1,
        prefix: b"GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".to_vec(),
        fill,
        trickle: Duration::from_millis(500),
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_clients_neither_exhaust_memory_nor_stall_a_pod() {
    if skip_without_fds(16_384) {
        return;
    }
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let pid = agent.child.id().unwrap();
    let token = TokenBuilder::new().sign();
    // Warm: the cache holds the pod's credentials, as for any pod past its first call.
    assert_eq!(agent.fetch(&token).await.0, 200);
    let quiet = pod_fetch_times(&agent, &token).await;
    let idle = rss_bytes(pid);

    let rss = RssSampler::start(pid);
    let started = Instant::now();
    // 3,000 clients over 60 addresses, each head ~18 KiB and never finished, and one neighbour
    // sharing a single address (a hostNetwork pod) with 1,000 more.
    let many = Flood {
        connections: 3000,
        sources: 60,
        ..unfinished_head(18 * 1024, agent.credentials_addr)
    }
    .start();
    let one = Flood {
        connections: 1000,
        ..unfinished_head(18 * 1024, agent.credentials_addr)
    }
    .start();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let flooded = pod_fetch_times(&agent, &token).await;
    let peak = rss.stop().await;
    let held = started.elapsed();
    let opened = many.stats.opened.load(std::sync::atomic::Ordering::Relaxed)
        + one.stats.opened.load(std::sync::atomic::Ordering::Relaxed);
    many.stop().await;
    one.stop().await;

    eprintln!(
        "agent credentials listener: RSS idle {}, peak under 4,000 slow clients {} ({opened} connections opened in {held:.1?}); SDK fetch ms quiet {quiet:?}, flooded {flooded:?}",
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
    assert_slowest_under(FETCH_BUDGET, &flooded, "fetch under the flood");
    // Still serving once the flood is gone.
    assert_eq!(agent.fetch(&token).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_on_the_metrics_port_neither_exhaust_memory_nor_stall_a_scrape() {
    if skip_without_fds(16_384) {
        return;
    }
    let fake = FakeEksAuth::start().await;
    let agent = common::start(&fake, &[]).await;
    let pid = agent.child.id().unwrap();
    let idle = rss_bytes(pid);
    let rss = RssSampler::start(pid);
    let flood = Flood {
        connections: 2000,
        sources: 40,
        prefix: b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".to_vec(),
        ..unfinished_head(6 * 1024, agent.metrics_addr)
    }
    .start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let url = format!("http://{}/metrics", agent.metrics_addr);
    let mut ms = Vec::new();
    let mut retried = 0;
    for _ in 0..FETCHES {
        // A new connection each time, as Prometheus's after an idle interval. At the listener's
        // cap a connection may be closed unread; the scraper tries again at once, as the pods'
        // SDKs do on the credentials port, and the time until it has its answer is what counts.
        let started = Instant::now();
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let sent = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
                .get(&url)
                .send()
                .await;
            match sent {
                Ok(resp) => break resp,
                Err(e) if attempt < 4 && (e.is_request() || e.is_connect()) => retried += 1,
                Err(e) => panic!("no scrape after {attempt} attempts: {e}"),
            }
        };
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = rss.stop().await;
    flood.stop().await;
    eprintln!(
        "agent metrics listener: RSS idle {}, peak under 2,000 slow clients {}; scrape ms {ms:?} ({retried} attempts closed unread and tried again)",
        mib(idle),
        mib(peak)
    );
    assert!(peak < memory_ceiling(), "RSS peaked at {}", mib(peak));
    assert_slowest_under(SCRAPE_BUDGET, &ms, "scrape");
}
