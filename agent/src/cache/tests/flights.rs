//! Requests: hits, misses, single flight, errors and freshness, a disabled cache, and no token
//! in any log.

use super::*;

#[test]
fn schedule_follows_the_policy() {
    let c = exact();
    let at = |d: Duration| add(t0(), d);
    // 6 h credentials: retention (3 h) decides; the lead is capped at 10 min.
    assert_eq!(
        schedule(t0(), at(6 * HOUR), &c, 1.0),
        (at(3 * HOUR), at(3 * HOUR - 10 * MIN))
    );
    // 1 h credentials: 15 min before expiry; lead min(45/4 min, 10 min).
    assert_eq!(
        schedule(t0(), at(HOUR), &c, 1.0),
        (at(45 * MIN), at(35 * MIN))
    );
    // With the smallest jitter the lead is span/8 = 5 min 37.5 s.
    assert_eq!(
        schedule(t0(), at(HOUR), &c, 0.0).1,
        at(45 * MIN - Duration::from_millis(337_500))
    );
    // 10 min credentials (< min_remaining): half their life; lead span/4 = 75 s.
    assert_eq!(
        schedule(t0(), at(10 * MIN), &c, 1.0),
        (at(5 * MIN), at(5 * MIN - Duration::from_secs(75)))
    );
    // Randomized leads stay within [span/8, span/4].
    let h = Harness::new(CacheConfig::default());
    for _ in 0..200 {
        let (stale, refresh) = schedule(t0(), at(HOUR), &c, h.cache.inner.jitter_unit());
        let lead = stale.duration_since(refresh);
        assert!(
            lead >= sd(45 * MIN) / 8 && lead <= sd(MAX_REFRESH_LEAD),
            "{lead:?}"
        );
    }
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let secs: Vec<u64> = (1..=12).map(|n| backoff(n, 1.0).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_MAX);
    assert_eq!(backoff(3, 0.0), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn hit_after_miss_makes_one_call() {
    let h = Harness::new(exact());
    let (first, o1) = h.get("a").await.unwrap();
    h.at(10 * MIN);
    let (second, o2) = h.get("a").await.unwrap();
    assert_eq!((o1, o2), (CacheOutcome::Miss, CacheOutcome::Hit));
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(h.up.calls(), 1);
    assert_eq!(h.cache.len(), 1);
    let s = h.cache.stats();
    assert_eq!(
        (s.misses, s.hits, s.upstream_calls, s.inflight),
        (1, 1, 1, 0)
    );
    // The upstream saw the raw token; the cache key is its digest.
    assert_eq!(h.up.tokens_seen.lock().unwrap()[0], "eyJ.token-of-a");
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_gets_share_one_call() {
    let h = Harness::new(exact());
    h.up.delay(Duration::from_secs(1));
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let cache = Arc::clone(&h.cache);
            tokio::spawn(async move { cache.get(token("a")).await })
        })
        .collect();
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(h.up.calls(), 1);
    let first = &results[0].0;
    assert!(results.iter().all(|(f, _)| Arc::ptr_eq(f, first)));
    let misses = results
        .iter()
        .filter(|(_, o)| *o == CacheOutcome::Miss)
        .count();
    let coalesced = results
        .iter()
        .filter(|(_, o)| *o == CacheOutcome::Coalesced)
        .count();
    assert_eq!((misses, coalesced), (1, 499));
    let s = h.cache.stats();
    assert_eq!((s.misses, s.coalesced, s.inflight), (1, 499, 0));
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_gets_share_one_error_which_is_not_cached() {
    let h = Harness::new(exact());
    h.up.delay(Duration::from_secs(1));
    h.up.then(Step::Recoverable);
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let cache = Arc::clone(&h.cache);
            tokio::spawn(async move { cache.get(token("a")).await })
        })
        .collect();
    let errors: Vec<UpstreamError> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap_err())
        .collect();
    assert_eq!(h.up.calls(), 1);
    assert!(errors.iter().all(|e| e == &errors[0]));
    assert_eq!(errors[0].status(), 429);
    assert_eq!(h.cache.len(), 0);
    // The next request asks again.
    assert_eq!(h.ok("a").await, ("ASIA2".into(), CacheOutcome::Miss));
    assert_eq!(h.up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn cancelled_first_caller_does_not_cancel_the_others() {
    let h = Harness::new(exact());
    h.up.delay(Duration::from_secs(10));
    let first = {
        let cache = Arc::clone(&h.cache);
        tokio::spawn(async move { cache.get(token("a")).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.up.calls(), 1);
    let others: Vec<_> = (0..2)
        .map(|_| {
            let cache = Arc::clone(&h.cache);
            tokio::spawn(async move { cache.get(token("a")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    for other in others {
        let (f, outcome) = other.await.unwrap().unwrap();
        assert_eq!(outcome, CacheOutcome::Coalesced);
        assert_eq!(f.access_key_id, "ASIA1");
    }
    assert_eq!(h.up.calls(), 1);
    // The flight filled the cache although its starter was gone.
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Hit));
}

#[tokio::test(start_paused = true)]
async fn all_callers_gone_still_fills_the_cache() {
    let h = Harness::new(exact());
    let gate = h.up.gate();
    let caller = {
        let cache = Arc::clone(&h.cache);
        tokio::spawn(async move { cache.get(token("a")).await })
    };
    settle().await;
    caller.abort();
    let _ = caller.await;
    gate.notify_one();
    settle().await;
    assert_eq!(h.cache.len(), 1);
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Hit));
    assert_eq!(h.up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn irrecoverable_error_evicts_at_once() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.at(46 * MIN);
    h.up.then(Step::Irrecoverable);
    let err = h.get("a").await.unwrap_err();
    assert!(err.is_irrecoverable());
    assert_eq!(err.code(), "AccessDeniedException");
    // The old credentials (14 min left) were not served as stale, and are gone.
    assert_eq!(h.cache.len(), 0);
    assert_eq!(h.cache.stats().evicted_irrecoverable, 1);
    assert_eq!(h.cache.stats().stale_served, 0);
    // No backoff either: the next request asks again.
    assert_eq!(h.ok("a").await, ("ASIA3".into(), CacheOutcome::Miss));
    assert_eq!(h.up.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn recoverable_error_serves_valid_cached_credentials_then_success_replaces_them() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.at(46 * MIN);
    h.up.then(Step::Recoverable);
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Stale));
    assert_eq!(h.up.calls(), 2);
    // During the 1 s backoff: stale again, without asking upstream.
    assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Stale));
    assert_eq!(h.up.calls(), 2);
    assert_eq!(h.cache.stats().stale_served, 2);
    h.at(46 * MIN + Duration::from_secs(2));
    assert_eq!(h.ok("a").await, ("ASIA3".into(), CacheOutcome::Miss));
    assert_eq!(h.ok("a").await, ("ASIA3".into(), CacheOutcome::Hit));
    assert_eq!(h.up.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn recoverable_error_without_valid_credentials_is_an_error() {
    let h = Harness::new(exact());
    // Nothing cached.
    h.up.then(Step::Recoverable);
    assert_eq!(h.get("a").await.unwrap_err().status(), 429);
    // Cached, but with under 60 s left.
    h.ok("b").await;
    h.at(HOUR - Duration::from_secs(30));
    h.up.then(Step::Recoverable);
    assert_eq!(h.get("b").await.unwrap_err().status(), 429);
    assert_eq!(h.cache.stats().stale_served, 0);
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached() {
    let h = Harness::new(exact());
    h.up.then(Step::Recoverable);
    h.up.then(Step::Recoverable);
    assert!(h.get("a").await.is_err());
    assert!(h.get("a").await.is_err());
    assert_eq!(h.ok("a").await, ("ASIA3".into(), CacheOutcome::Miss));
    assert_eq!(h.up.calls(), 3);
    // Each went to EKS Auth: the official agent's `miss` counts all three, as it counts before
    // it calls; our requests' `miss`, only the one answered.
    let stats = h.cache.stats();
    assert_eq!((stats.misses, stats.failed_misses), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn never_serves_under_fifteen_minutes_when_fresh_can_be_had() {
    let h = Harness::new(exact());
    h.ok("a").await;
    h.at(HOUR - 14 * MIN);
    let (f, outcome) = h.get("a").await.unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(f.access_key_id, "ASIA2");
    assert!(f.expiration.duration_since(h.clock.now()) >= sd(DEFAULT_MIN_REMAINING));
    assert_eq!(h.up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn short_lived_credentials_are_not_refetched_on_every_call() {
    // Background refresh off to count foreground behaviour alone.
    let h = Harness::new(CacheConfig {
        refresh_qps: 0.0,
        ..exact()
    });
    h.up.always(Step::Ok(10 * MIN));
    h.ok("a").await;
    for secs in (10..300).step_by(10) {
        h.at(Duration::from_secs(secs));
        assert_eq!(
            h.ok("a").await,
            ("ASIA1".into(), CacheOutcome::Hit),
            "{secs}s"
        );
    }
    settle().await;
    assert_eq!(h.up.calls(), 1);
    // Half-life reached: renew.
    h.at(5 * MIN);
    assert_eq!(h.ok("a").await, ("ASIA2".into(), CacheOutcome::Miss));
}

#[tokio::test(start_paused = true)]
async fn disabled_cache_bypasses_but_coalesces() {
    for config in [
        CacheConfig {
            retention: Duration::ZERO,
            ..exact()
        },
        CacheConfig {
            max_entries: 0,
            ..exact()
        },
    ] {
        let h = Harness::new(config);
        assert_eq!(h.ok("a").await, ("ASIA1".into(), CacheOutcome::Bypass));
        assert_eq!(h.ok("a").await, ("ASIA2".into(), CacheOutcome::Bypass));
        assert_eq!(h.cache.len(), 0);
        h.up.delay(Duration::from_secs(1));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = Arc::clone(&h.cache);
                tokio::spawn(async move { cache.get(token("a")).await })
            })
            .collect();
        let outcomes: Vec<CacheOutcome> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap().1)
            .collect();
        assert_eq!(h.up.calls(), 3);
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == CacheOutcome::Bypass)
                .count(),
            1
        );
        assert_eq!(h.cache.refresh_due().await, RefreshReport::default());
        assert_eq!(h.cache.stats().bypassed, 3);
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn tokens_never_reach_logs_or_debug_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    // Other tests' subscribers come and go on other threads; make every callsite ask ours
    // again (a callsite whose interest was cached while only an INFO subscriber lived would
    // skip this test's trace and debug lines: seen once under heavy load).
    tracing::callsite::rebuild_interest_cache();

    let h = Harness::new(exact());
    let info = token("a");
    let raw = info.token.expose().to_string();
    h.cache.get(info.clone()).await.unwrap();
    h.cache.get(info.clone()).await.unwrap();
    h.at(36 * MIN);
    h.up.then(Step::Recoverable);
    h.cache.refresh_due().await;
    h.at(46 * MIN);
    h.up.then(Step::Irrecoverable);
    h.cache.get(info.clone()).await.unwrap_err();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let fp = fingerprint_of_digest(&info.key);
    assert!(logs.contains(&format!("token.fingerprint={fp}")), "{logs}");
    assert!(
        logs.contains("cache=\"hit\"") || logs.contains("cache=hit"),
        "{logs}"
    );
    let debug = format!("{info:?} {:?}", h.cache);
    assert!(debug.contains(&fp));
    pod_identity_test_support::assert_no_secrets(&format!("{logs}\n{debug}"), &[raw]);
}
