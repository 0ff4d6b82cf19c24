//! Background refresh and the sweep: refresh ahead, gone pods, expiry, the LRU bound, the
//! limiter and backoff.

use super::*;

#[tokio::test(start_paused = true)]
async fn refresh_due_renews_before_stale_and_the_next_get_hits() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.at(34 * MIN);
    assert_eq!(h.cache.refresh_due().await, RefreshReport::default());
    assert_eq!(h.up.calls(), 1);
    h.at(36 * MIN);
    let report = h.cache.refresh_due().await;
    assert_eq!((report.due, report.refreshed), (1, 1));
    assert_eq!(h.up.calls(), 2);
    h.at(46 * MIN);
    assert_eq!(h.ok("a").await, ("ASIA2".into(), CacheOutcome::Hit));
    assert_eq!(h.up.calls(), 2);
    assert_eq!(h.cache.stats().refreshes_ok, 1);
}

#[tokio::test(start_paused = true)]
async fn hit_in_the_refresh_window_refreshes_without_making_the_caller_wait() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.at(36 * MIN);
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Hit));
    assert_eq!(
        h.up.calls(),
        1,
        "the caller was answered before any new call"
    );
    // Another hit does not queue a second refresh.
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Hit));
    settle().await;
    assert_eq!(h.up.calls(), 2);
    assert_eq!(h.ok("a").await, ("ASIA2".into(), CacheOutcome::Hit));
    assert_eq!(h.up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_a_hit_started_reaches_the_next_sweeps_report() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.up.then(Step::Recoverable);
    h.at(36 * MIN);
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Hit));
    settle().await;
    assert_eq!(h.up.calls(), 2, "the hit started a refresh, which failed");
    let report = h.cache.refresh_due().await;
    assert_eq!(report.errors, [(false, "ThrottlingException".to_string())]);
    // Handed over once.
    assert!(h.cache.refresh_due().await.errors.is_empty());
}

#[tokio::test(start_paused = true)]
async fn caller_joins_a_background_refresh_in_flight() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.up.delay(Duration::from_secs(5));
    h.at(36 * MIN);
    let sweep = {
        let cache = Arc::clone(&h.cache);
        tokio::spawn(async move { cache.refresh_due().await })
    };
    settle().await;
    assert_eq!(h.up.calls(), 2);
    h.at(46 * MIN);
    assert_eq!(h.ok("a").await, ("ASIA2".into(), CacheOutcome::Coalesced));
    assert_eq!(h.up.calls(), 2);
    assert_eq!(sweep.await.unwrap().refreshed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_pod_renewing_right_at_expiry_is_not_gone() {
    let h = Harness::new(exact());
    h.ok("late").await;
    // Renewed in the background at 36 min (valid to 96); the pod holds credentials to 60.
    h.at(36 * MIN);
    assert_eq!(h.cache.refresh_due().await.refreshed, 1);
    // Within the grace after 60 min the entry is kept for a pod that renews at expiry...
    h.at(60 * MIN + GONE_GRACE - Duration::from_secs(1));
    assert_eq!(h.cache.refresh_due().await.dropped_gone, 0);
    assert_eq!(h.cache.len(), 1);
    // ...and dropped after it.
    h.at(60 * MIN + GONE_GRACE + Duration::from_secs(1));
    assert_eq!(h.cache.refresh_due().await.dropped_gone, 1);
    assert_eq!(h.cache.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn gone_pods_are_dropped_not_refreshed() {
    let h = Harness::new(exact());
    // Token expires at 30 min, before the 35 min refresh.
    let short = token_expiring("short", add(t0(), 30 * MIN));
    h.cache.get(short).await.unwrap();
    h.at(36 * MIN);
    let report = h.cache.refresh_due().await;
    assert_eq!((report.dropped_gone, report.due), (1, 0));
    assert_eq!(h.up.calls(), 1);
    assert_eq!(h.cache.len(), 0);

    // Two pods; both renewed in the background at 36 min (served credentials end at 60 min).
    h.at(Duration::ZERO);
    h.ok("idle").await;
    h.ok("live").await;
    h.at(36 * MIN);
    assert_eq!(h.cache.refresh_due().await.refreshed, 2);
    assert_eq!(h.up.calls(), 5);
    // Only "live" comes back for its renewed credentials (valid to 96 min).
    h.at(50 * MIN);
    assert_eq!(h.ok("live").await.1, CacheOutcome::Hit);
    // At 72 min both are due again; "idle" never came back before 60 min: gone.
    h.at(72 * MIN);
    let report = h.cache.refresh_due().await;
    assert_eq!(
        (report.dropped_gone, report.due, report.refreshed),
        (1, 1, 1)
    );
    assert_eq!(h.up.calls(), 6);
    assert_eq!(h.cache.len(), 1);
    assert_eq!(h.cache.stats().dropped_gone, 2);
    assert_eq!(h.ok("idle").await.1, CacheOutcome::Miss);
}

#[tokio::test(start_paused = true)]
async fn expired_credentials_are_dropped() {
    let h = Harness::new(CacheConfig {
        refresh_qps: 0.0,
        ..exact()
    });
    h.ok("a").await;
    h.at(HOUR);
    let report = h.cache.refresh_due().await;
    assert_eq!(report.dropped_gone, 1);
    assert_eq!(h.cache.len(), 0);
    assert_eq!(h.up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn lru_bound_evicts_the_least_recently_used() {
    let h = Harness::new(CacheConfig {
        max_entries: 2,
        ..exact()
    });
    h.ok("a").await;
    h.ok("b").await;
    assert_eq!(h.ok("a").await.1, CacheOutcome::Hit);
    h.ok("c").await; // evicts b
    assert_eq!(h.cache.len(), 2);
    assert_eq!(h.cache.stats().evicted_lru, 1);
    assert_eq!(h.ok("a").await.1, CacheOutcome::Hit);
    assert_eq!(h.ok("c").await.1, CacheOutcome::Hit);
    assert_eq!(h.up.calls(), 3);
    assert_eq!(h.ok("b").await.1, CacheOutcome::Miss);
    assert_eq!(h.up.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn background_refresh_does_not_resurrect_an_evicted_entry() {
    let h = Harness::new(CacheConfig {
        max_entries: 1,
        ..exact()
    });
    h.ok("a").await;
    h.up.delay(Duration::from_secs(5));
    h.at(36 * MIN);
    let sweep = {
        let cache = Arc::clone(&h.cache);
        tokio::spawn(async move { cache.refresh_due().await })
    };
    settle().await;
    // While a's refresh is in flight, b pushes a out.
    h.up.delay(Duration::ZERO);
    assert_eq!(h.ok("b").await.1, CacheOutcome::Miss);
    assert_eq!(sweep.await.unwrap().refreshed, 1);
    assert_eq!(h.cache.len(), 1);
    assert_eq!(h.ok("b").await.1, CacheOutcome::Hit);
    assert_eq!(h.cache.stats().evicted_lru, 1);
}

#[tokio::test(start_paused = true)]
async fn sweep_does_not_promote_entries() {
    let h = Harness::new(CacheConfig {
        max_entries: 2,
        ..exact()
    });
    h.ok("a").await;
    h.ok("b").await;
    h.at(MIN);
    h.cache.refresh_due().await;
    h.ok("c").await; // must still evict a, the least recently *used*
    assert_eq!(h.ok("b").await.1, CacheOutcome::Hit);
    assert_eq!(h.ok("a").await.1, CacheOutcome::Miss);
}

#[tokio::test(start_paused = true)]
async fn limiter_paces_background_refreshes_but_not_callers() {
    let h = Harness::new(exact()); // 3 per second, burst 3
    let start = Instant::now();
    for i in 0..9 {
        h.ok(&format!("pod-{i}")).await;
    }
    assert_eq!(Instant::now(), start, "foreground fetches are not paced");
    h.at(36 * MIN);
    let sweep = {
        let cache = Arc::clone(&h.cache);
        tokio::spawn(async move { cache.refresh_due().await })
    };
    settle().await;
    // Burst of 3 went through; the rest wait. A new pod is not held behind them.
    assert_eq!(h.up.calls(), 9 + 3);
    let before = Instant::now();
    assert_eq!(h.ok("cold").await.1, CacheOutcome::Miss);
    assert_eq!(Instant::now(), before);
    let report = sweep.await.unwrap();
    assert_eq!(report.refreshed, 9);
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(h.up.calls(), 9 + 9 + 1);
}

#[tokio::test(start_paused = true)]
async fn failed_background_refresh_backs_off_exponentially() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.up.always(Step::Recoverable);
    let at = |d: Duration| h.at(36 * MIN + d);
    at(Duration::ZERO);
    assert_eq!(h.cache.refresh_due().await.failed, 1);
    assert_eq!(h.up.calls(), 2);
    // Within the 1 s backoff: neither the sweep nor a hit asks again.
    assert_eq!(h.cache.refresh_due().await.due, 0);
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Hit));
    settle().await;
    assert_eq!(h.up.calls(), 2);
    at(Duration::from_secs(1));
    assert_eq!(h.cache.refresh_due().await.failed, 1);
    assert_eq!(h.up.calls(), 3);
    // Second failure: 2 s.
    at(Duration::from_secs(2));
    assert_eq!(h.cache.refresh_due().await.due, 0);
    at(Duration::from_secs(3));
    h.up.always(Step::Ok(HOUR));
    assert_eq!(h.cache.refresh_due().await.refreshed, 1);
    assert_eq!(h.up.calls(), 4);
    let s = h.cache.stats();
    assert_eq!((s.refresh_failures, s.refreshes_ok), (2, 1));
    assert_eq!(h.ok("a").await, ("ASIA4".into(), CacheOutcome::Hit));
}

#[tokio::test(start_paused = true)]
async fn irrecoverable_background_refresh_evicts() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.up.then(Step::Irrecoverable);
    h.at(36 * MIN);
    assert_eq!(h.cache.refresh_due().await.evicted, 1);
    assert_eq!(h.cache.len(), 0);
    assert_eq!(h.cache.stats().evicted_irrecoverable, 1);
}
