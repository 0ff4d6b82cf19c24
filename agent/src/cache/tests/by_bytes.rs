//! Finding a token's entry or flight by its bytes alone (`get_known`), and losing it whichever
//! way the entry goes.

use super::*;

/// `get_known`'s outcome and the pod it names, or `None`.
async fn known(h: &Harness, info: &TokenInfo) -> Option<(String, CacheOutcome, String)> {
    let (answer, labels) = h.cache.get_known(info.token.expose().as_bytes()).await?;
    let (fetched, outcome) = answer.expect("credentials");
    Some((fetched.access_key_id.clone(), outcome, labels.pod().into()))
}

fn labelled(name: &str, exp: Timestamp) -> TokenInfo {
    let mut info = token_expiring(name, exp);
    info.labels = Arc::new(TokenLabels::new(
        "sha256:aaaaaaaaaaaa",
        "ns",
        "sa",
        &format!("pod-{name}"),
        "u",
    ));
    info
}

#[tokio::test(start_paused = true)]
async fn a_known_token_is_answered_by_key_while_its_credentials_are_fresh_and_it_is_valid() {
    // Background refresh off: the entry only ages.
    let h = Harness::new(CacheConfig {
        refresh_qps: 0.0,
        ..exact()
    });
    let mut info = labelled("a", add(t0(), 50 * MIN));
    info.not_before = Some(add(t0(), Duration::from_secs(1)));
    assert!(known(&h, &info).await.is_none(), "nothing cached yet");
    // Filled through `get` (the server validated the token) at t0, before its nbf.
    h.cache.get(info.clone()).await.unwrap();
    assert!(known(&h, &info).await.is_none(), "before the token's nbf");
    h.at(Duration::from_secs(1));
    assert_eq!(
        known(&h, &info).await,
        Some(("ASIA1".into(), CacheOutcome::Hit, "pod-a".into()))
    );
    assert_eq!(h.cache.stats().hits, 1);
    h.at(44 * MIN);
    assert!(known(&h, &info).await.is_some());
    // Credentials no longer fresh (stale at 45 min) and nothing in flight: the cache needs
    // the token (`get` renews them).
    h.at(46 * MIN);
    assert!(known(&h, &info).await.is_none(), "stale credentials");
    assert_eq!(h.up.calls(), 1);
    assert_eq!(h.cache.stats().hits, 2);

    // Credentials still fresh but the token expired: the caller must parse it and refuse it.
    let h = Harness::new(exact());
    let late = labelled("late", add(t0(), 44 * MIN));
    h.cache.get(late.clone()).await.unwrap();
    h.at(44 * MIN);
    assert!(known(&h, &late).await.is_none(), "token expired");
}

#[tokio::test(start_paused = true)]
async fn a_known_token_joins_the_call_in_flight_by_its_bytes() {
    let h = Harness::new(exact());
    let gate = h.up.gate();
    let info = labelled("a", add(t0(), 24 * HOUR));
    let first = {
        let cache = Arc::clone(&h.cache);
        let info = info.clone();
        tokio::spawn(async move { cache.get(info).await })
    };
    settle().await;
    let joiner = {
        let cache = Arc::clone(&h.cache);
        let token = Arc::clone(&info.token);
        tokio::spawn(async move {
            let (answer, labels) = cache
                .get_known(token.expose().as_bytes())
                .await
                .expect("in flight");
            (answer.unwrap().1, labels.pod().to_string())
        })
    };
    settle().await;
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap().1, CacheOutcome::Miss);
    assert_eq!(
        joiner.await.unwrap(),
        (CacheOutcome::Coalesced, "pod-a".to_string())
    );
    assert_eq!(h.up.calls(), 1);

    // A token that expired while its exchange was in flight is not joined by key.
    let h = Harness::new(exact());
    let gate = h.up.gate();
    let short = labelled("short", add(t0(), MIN));
    let first = {
        let cache = Arc::clone(&h.cache);
        let short = short.clone();
        tokio::spawn(async move { cache.get(short).await })
    };
    settle().await;
    h.at(MIN);
    assert!(known(&h, &short).await.is_none());
    gate.notify_one();
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_known_token_queues_a_due_refresh_and_a_disabled_cache_only_joins_flights() {
    let h = Harness::new(exact());
    let info = token("a");
    h.cache.get(info.clone()).await.unwrap();
    h.at(36 * MIN);
    assert!(known(&h, &info).await.is_some());
    settle().await;
    assert_eq!(h.up.calls(), 2, "refreshed in the background");
    assert_eq!(h.ok("a").await, ("ASIA2".into(), CacheOutcome::Hit));

    let off = Harness::new(CacheConfig {
        max_entries: 0,
        ..exact()
    });
    off.cache.get(info.clone()).await.unwrap();
    assert!(known(&off, &info).await.is_none());
}

/// The ways in ([`State::by_token`]): one per token held by an entry or a flight.
fn ways_in(h: &Harness) -> usize {
    h.cache.inner.lock().by_token.len()
}

async fn known_by_bytes(h: &Harness, name: &str) -> Option<CacheOutcome> {
    let (answer, _) = h
        .cache
        .get_known(format!("eyJ.token-of-{name}").as_bytes())
        .await?;
    Some(answer.expect("credentials").1)
}

#[tokio::test(start_paused = true)]
async fn a_token_is_found_by_its_bytes_until_its_entry_goes_whichever_way() {
    let h = Harness::new(CacheConfig {
        max_entries: 2,
        ..exact()
    });
    assert_eq!(known_by_bytes(&h, "a").await, None, "not cached yet");
    h.ok("a").await;
    h.ok("b").await;
    assert_eq!(ways_in(&h), 2);
    assert_eq!(known_by_bytes(&h, "a").await, Some(CacheOutcome::Hit));
    // The same bytes with anything more or less are another token.
    assert!(h.cache.get_known(b"eyJ.token-of-a ").await.is_none());
    assert!(h.cache.get_known(b"eyJ.token-of-").await.is_none());

    h.ok("c").await; // the LRU bound evicts b
    assert_eq!(ways_in(&h), 2);
    assert_eq!(known_by_bytes(&h, "b").await, None);

    h.at(46 * MIN);
    h.up.then(Step::Irrecoverable);
    assert!(h.get("a").await.is_err()); // evicted at once
    assert_eq!(ways_in(&h), 1);
    assert_eq!(known_by_bytes(&h, "a").await, None);

    h.at(3 * HOUR); // c's credentials expired: the sweep forgets it
    h.cache.refresh_due().await;
    assert_eq!(h.cache.len(), 0);
    assert_eq!(ways_in(&h), 0);
    assert_eq!(known_by_bytes(&h, "c").await, None);
}

#[tokio::test(start_paused = true)]
async fn a_flight_that_fails_leaves_no_way_in() {
    let h = Harness::new(exact());
    h.up.then(Step::Recoverable);
    assert!(h.get("a").await.is_err());
    assert_eq!((h.cache.len(), ways_in(&h)), (0, 0));
    let disabled = Harness::new(CacheConfig {
        max_entries: 0,
        ..exact()
    });
    assert_eq!(disabled.ok("a").await.1, CacheOutcome::Bypass);
    assert_eq!(ways_in(&disabled), 0);
}

/// Two tokens on one hash: the way in names the other token's key, and the bytes do not
/// match the token kept there, so nothing is answered for them (the server then validates
/// them and looks them up by digest).
#[tokio::test(start_paused = true)]
async fn bytes_that_share_a_hash_with_a_cached_token_get_nothing_from_it() {
    let h = Harness::new(exact());
    h.ok("victim").await;
    let victim_key = token("victim").key;
    let forged = b"eyJ.token-of-attacker";
    h.cache
        .inner
        .lock()
        .by_token
        .insert(token_hash(forged), victim_key);
    assert!(h.cache.get_known(forged).await.is_none());
    assert_eq!(known_by_bytes(&h, "victim").await, Some(CacheOutcome::Hit));
    assert_eq!(h.cache.stats().hits, 1);
}
