//! Issue #12, item 6: thousands of slow clients against the real eks-auth binary. Its memory must
//! stay well inside the manifest's limit and an agent's real EKS Auth SDK client must still get
//! credentials within 1 s; the admin listener (probes and metrics) must hold as well.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_eksauth::config::{BehaviorVersion, Region};
use common::{CLUSTER, Stand};
use pod_identity_contracts::eks_auth::{CALLER_TOKEN_HEADER, request_path};
use pod_identity_test_support::slow_clients::{
    Flood, RssSampler, assert_slowest_under, manifest_memory_limit, mib, one_flood_at_a_time,
    open_file_limits, rss_bytes, skip_without_fds, timed_samples, with_soft_fd_limit,
};

/// The slowest exchange (or scrape) an agent (or Prometheus) may see under the flood.
const BUDGET: Duration = Duration::from_secs(1);

/// `resources.limits.memory` of eks-auth's container in `deploy/eks-auth/deployment.yaml`.
fn memory_limit() -> u64 {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/eks-auth/deployment.yaml"
    );
    manifest_memory_limit(manifest.as_ref(), "eks-auth")
}

/// What eks-auth may reach under the flood: the limit with a third to spare.
fn memory_ceiling() -> u64 {
    memory_limit() / 3 * 2
}

/// A stand whose eks-auth starts with a soft open-file limit of 1024, as in a container, and
/// must have raised it to the hard limit itself. `None` without moto (the test skips).
async fn stand(test: &str) -> Option<Stand> {
    let s = with_soft_fd_limit(1024, Stand::start(test, &[])).await?;
    let (soft, hard) = open_file_limits(s.eks_auth.child.id().unwrap());
    assert_eq!(
        soft, hard,
        "eks-auth left its soft open-file limit below the hard one"
    );
    Some(s)
}

/// `n` exchanges by the real EKS Auth SDK client, each on a client of its own (a new
/// connection, as an agent's first call for a new pod), `every` apart, timed in ms.
async fn sdk_exchange_times(s: &Stand, token: String, n: usize, every: Duration) -> Vec<f64> {
    let endpoint = s.eks_auth.url();
    let caller = s
        .eks_auth
        .caller_token
        .clone()
        .expect("the stand's agent token");
    timed_samples(n, every, move || {
        let config = aws_sdk_eksauth::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-west-2"))
            .credentials_provider(Credentials::new("AKIDAGENT", "agent", None, None, "node"))
            .endpoint_url(&endpoint)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        let client = aws_sdk_eksauth::Client::from_conf(config);
        let (caller, token) = (caller.clone(), token.clone());
        async move {
            let answer = client
                .assume_role_for_pod_identity()
                .cluster_name(CLUSTER)
                .token(token)
                .customize()
                .mutate_request(move |req| {
                    req.headers_mut()
                        .insert(CALLER_TOKEN_HEADER, caller.clone());
                })
                .send()
                .await
                .unwrap_or_else(|e| panic!("no credentials: {e:?}"));
            assert!(answer.credentials().is_some());
        }
    })
    .await
}

/// Connections sending `prefix`, `fill` bytes, then a byte every 500 ms.
fn slow(target: SocketAddr, prefix: &str, fill: usize) -> Flood {
    Flood {
        target,
        connections: 0,
        sources: 1,
        prefix: prefix.as_bytes().to_vec(),
        fill,
        trickle: Duration::from_millis(500),
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_clients_neither_exhaust_memory_nor_stall_an_agent() {
    let _one = one_flood_at_a_time().await;
    if skip_without_fds(16_384) {
        return;
    }
    let Some(s) =
        stand("thousands_of_slow_clients_neither_exhaust_memory_nor_stall_an_agent").await
    else {
        return;
    };
    let pid = s.eks_auth.child.id().unwrap();
    let token = s.token().sign();
    // Warm: keys fetched, the caller's token verified, the first STS call made.
    let quiet = sdk_exchange_times(&s, token.clone(), 3, Duration::from_millis(100)).await;
    let idle = rss_bytes(pid);

    let rss = RssSampler::start(pid);
    let started = Instant::now();
    let api = s.eks_auth.api_addr;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ",
        request_path(CLUSTER)
    );
    // Heads of ~30 KiB (the limit is 32) never finished: 3,000 clients over 60 addresses, and
    // 1,000 more from one (many agents behind one NAT).
    let heads = Flood {
        connections: 3000,
        sources: 60,
        ..slow(api, &head, 30 * 1024)
    }
    .start();
    let one = Flood {
        connections: 1000,
        ..slow(api, &head, 30 * 1024)
    }
    .start();
    // Whole heads announcing a body just under the 64 KiB limit, most of it sent at once and
    // the rest trickled: each holds its body until the 10 s body deadline.
    let body_head = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 65000\r\n\r\n{{\"token\":\"",
        request_path(CLUSTER)
    );
    let bodies = Flood {
        connections: 1000,
        sources: 20,
        ..slow(api, &body_head, 60 * 1024)
    }
    .start();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Ten exchanges a second apart, past the head deadline (5 s) and the body deadline (10 s)
    // of the first slow clients, when they are closed and come back.
    let flooded = sdk_exchange_times(&s, token.clone(), 10, Duration::from_secs(1)).await;
    let peak = rss.stop().await;
    let held = started.elapsed();
    let opened: u64 = [&heads, &one, &bodies]
        .iter()
        .map(|f| f.stats.opened.load(Ordering::Relaxed))
        .sum();
    heads.stop().await;
    one.stop().await;
    bodies.stop().await;

    eprintln!(
        "eks-auth API listener: RSS idle {}, peak under 5,000 slow clients {} ({opened} connections opened in {held:.1?}); SDK exchange ms quiet {quiet:?}, flooded {flooded:?}",
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
    assert_slowest_under(BUDGET, &flooded, "exchange under the flood");
    // Still serving once the flood is gone.
    assert_eq!(s.eks_auth.exchange(CLUSTER, &token).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_on_the_admin_port_neither_exhaust_memory_nor_stall_a_scrape() {
    let _one = one_flood_at_a_time().await;
    if skip_without_fds(16_384) {
        return;
    }
    let Some(s) =
        stand("slow_clients_on_the_admin_port_neither_exhaust_memory_nor_stall_a_scrape").await
    else {
        return;
    };
    let pid = s.eks_auth.child.id().unwrap();
    let idle = rss_bytes(pid);
    let rss = RssSampler::start(pid);
    let flood = Flood {
        connections: 2000,
        sources: 40,
        ..slow(
            s.eks_auth.admin_addr,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ",
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
            .get(s.eks_auth.admin_url(path))
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
        "eks-auth admin listener: RSS idle {}, peak under 2,000 slow clients {}; probe and scrape ms {ms:?}",
        mib(idle),
        mib(peak)
    );
    assert!(peak < memory_ceiling(), "RSS peaked at {}", mib(peak));
    assert_slowest_under(BUDGET, &ms, "probe or scrape");
}
