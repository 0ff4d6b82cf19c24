//! How a request is answered: the lookup under the lock, single-flight upstream calls, what a
//! finished call does to the cache, and queued background refreshes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::FutureExt;
use jiff::Timestamp;
use pod_identity_contracts::secret::fingerprint_of_digest;
use rand::Rng;
use tracing::{debug, info, trace, warn};

use crate::upstream::{Fetched, Upstream, UpstreamError, UpstreamErrorKind};
use crate::validate::TokenLabels;

use super::*;

pub(super) struct Inner<U: Upstream> {
    pub(super) config: CacheConfig,
    pub(super) enabled: bool,
    pub(super) upstream: Arc<U>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) limiter: RateLimiter,
    pub(super) state: Mutex<State>,
    pub(super) counters: Counters,
    /// Failures of refreshes a hit started (irrecoverable, code), handed to the next sweep's
    /// report so they reach `pod_identity_cache_errors` as the sweep's own do.
    pub(super) hit_refresh_errors: Mutex<Vec<(bool, String)>>,
}

/// What the cache can answer for a key, found under the lock.
pub(super) enum Lookup {
    Hit(FreshHit),
    Stale(Arc<Fetched>),
    Wait { flight: FlightFuture, started: bool },
}

/// A fresh entry found under the lock.
pub(super) struct FreshHit {
    pub(super) fetched: Arc<Fetched>,
    pub(super) labels: Arc<TokenLabels>,
    /// A refresh is due and was queued: start it.
    pub(super) kick: bool,
}

/// What a background refresh came to.
pub(super) enum RefreshResult {
    Refreshed,
    /// Recoverable: the entry stays and backs off. The error's code.
    Failed(String),
    /// Irrecoverable: the entry is gone. The error's code.
    Evicted(String),
    Skipped,
}

impl<U: Upstream> Inner<U> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can leave the map inconsistent on panic; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn jitter_unit(&self) -> f64 {
        if self.config.jitter {
            rand::rng().random::<f64>()
        } else {
            1.0
        }
    }

    /// Under the lock: what the cache can answer for `key` without a new upstream call (fresh
    /// credentials, cached ones during a backoff, or the call in flight), marking the entry used.
    pub(super) fn lookup(&self, st: &mut State, key: &TokenKey, now: Timestamp) -> Option<Lookup> {
        if self.enabled {
            if let Some(hit) = self.fresh_hit(st, key, now) {
                return Some(Lookup::Hit(hit));
            }
            if let Some(e) = st.entries.get_mut(key)
                && e.in_backoff(now)
                && has_left(&e.fetched, now, STALE_MIN_REMAINING)
            {
                // Upstream failed moments ago: do not ask again until the backoff ends.
                e.last_used = now;
                e.served_expiration = e.served_expiration.max(e.fetched.expiration);
                return Some(Lookup::Stale(Arc::clone(&e.fetched)));
            }
        }
        st.flights.get(key).map(|flight| Lookup::Wait {
            flight: flight.fut.clone(),
            started: false,
        })
    }

    /// After the lock: turn a lookup into the answer, waiting for the flight if there is one.
    pub(super) async fn answer(self: &Arc<Self>, key: TokenKey, lookup: Lookup) -> Answer {
        let (flight, started) = match lookup {
            Lookup::Hit(hit) => return Ok((self.after_hit(key, &hit), CacheOutcome::Hit)),
            Lookup::Stale(fetched) => return Ok(self.served(key, fetched, CacheOutcome::Stale)),
            Lookup::Wait { flight, started } => (flight, started),
        };
        match flight.await {
            Ok(fetched) => {
                let outcome = match (started, self.enabled) {
                    (false, _) => CacheOutcome::Coalesced,
                    (true, true) => CacheOutcome::Miss,
                    (true, false) => CacheOutcome::Bypass,
                };
                if self.enabled {
                    self.touch(key, &fetched);
                }
                Ok(self.served(key, fetched, outcome))
            }
            Err(err) => {
                if started && self.enabled {
                    bump(&self.counters.failed_misses, 1);
                }
                if self.enabled && !err.is_irrecoverable() {
                    let now = self.clock.now();
                    let mut guard = self.lock();
                    if let Some(e) = guard.entries.get_mut(&key)
                        && has_left(&e.fetched, now, STALE_MIN_REMAINING)
                    {
                        e.last_used = now;
                        e.served_expiration = e.served_expiration.max(e.fetched.expiration);
                        let fetched = Arc::clone(&e.fetched);
                        let fetched_at = e.fetched_at;
                        drop(guard);
                        warn!(
                            token.fingerprint = %fingerprint_of_digest(&key),
                            cache = CacheOutcome::Stale.as_str(),
                            %fetched_at,
                            expiration = %fetched.expiration,
                            error.code = err.code(),
                            error.message = %err,
                            "upstream failed; serving cached credentials that are still valid"
                        );
                        return Ok(self.served(key, fetched, CacheOutcome::Stale));
                    }
                }
                debug!(
                    token.fingerprint = %fingerprint_of_digest(&key),
                    error.code = err.code(),
                    error.message = %err,
                    coalesced = !started,
                    "credential exchange failed"
                );
                Err(err)
            }
        }
    }

    /// Under the lock: the entry's credentials if they are fresh, marking the entry used and
    /// queueing its refresh if one is due.
    pub(super) fn fresh_hit(
        &self,
        st: &mut State,
        key: &TokenKey,
        now: Timestamp,
    ) -> Option<FreshHit> {
        let e = st.entries.get_mut(key)?;
        if !(now < e.stale_at && now < e.fetched.expiration) {
            return None;
        }
        e.last_used = now;
        e.served_expiration = e.served_expiration.max(e.fetched.expiration);
        let kick = self.limiter.enabled()
            && !e.refresh_queued
            && e.refresh_due(now)
            && !st.flights.contains_key(key);
        e.refresh_queued |= kick;
        Some(FreshHit {
            fetched: Arc::clone(&e.fetched),
            labels: Arc::clone(&e.token.labels),
            kick,
        })
    }

    /// After the lock: start the refresh [`Self::fresh_hit`] queued, count the hit.
    pub(super) fn after_hit(self: &Arc<Self>, key: TokenKey, hit: &FreshHit) -> Arc<Fetched> {
        if hit.kick {
            debug!(
                token.fingerprint = hit.labels.fingerprint(),
                "credentials due for refresh; refreshing in the background"
            );
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                let error = match Arc::clone(&inner).queued_refresh(key).await {
                    RefreshResult::Failed(code) => (false, code),
                    RefreshResult::Evicted(code) => (true, code),
                    RefreshResult::Refreshed | RefreshResult::Skipped => return,
                };
                lock_errors(&inner.hit_refresh_errors).push(error);
            });
        }
        self.served(key, Arc::clone(&hit.fetched), CacheOutcome::Hit)
            .0
    }

    /// Count and log an answer.
    pub(super) fn served(
        &self,
        key: TokenKey,
        fetched: Arc<Fetched>,
        outcome: CacheOutcome,
    ) -> (Arc<Fetched>, CacheOutcome) {
        let c = &self.counters;
        match outcome {
            CacheOutcome::Hit => {
                bump(&c.hits, 1);
                trace!(
                    token.fingerprint = %fingerprint_of_digest(&key),
                    cache = outcome.as_str(),
                    "served cached credentials"
                );
                return (fetched, outcome);
            }
            CacheOutcome::Miss => bump(&c.misses, 1),
            CacheOutcome::Coalesced => bump(&c.coalesced, 1),
            CacheOutcome::Stale => bump(&c.stale_served, 1),
            CacheOutcome::Bypass => bump(&c.bypassed, 1),
        }
        debug!(
            token.fingerprint = %fingerprint_of_digest(&key),
            cache = outcome.as_str(),
            access_key_id = &*fetched.log_access_key_id,
            association_id = %fetched.association_id,
            expiration = %fetched.expiration,
            "served credentials"
        );
        (fetched, outcome)
    }

    /// A caller received `fetched` from a flight: mark the entry used.
    pub(super) fn touch(&self, key: TokenKey, fetched: &Arc<Fetched>) {
        let now = self.clock.now();
        let mut guard = self.lock();
        if let Some(e) = guard.entries.get_mut(&key)
            && Arc::ptr_eq(&e.fetched, fetched)
        {
            e.last_used = now;
            e.served_expiration = e.served_expiration.max(fetched.expiration);
        }
    }

    /// Start the one upstream call for `key`; the caller holds the lock and has checked that no
    /// flight exists.
    pub(super) fn start_flight(
        self: &Arc<Self>,
        st: &mut State,
        info: TokenInfo,
        background: bool,
    ) -> FlightFuture {
        let key = info.key;
        let token = info.clone();
        let id = st.next_flight_id;
        st.next_flight_id += 1;
        bump(&self.counters.upstream_calls, 1);
        bump(&self.counters.inflight, 1);
        let inner = Arc::clone(self);
        let handle = tokio::spawn(async move {
            // Unregisters the flight if this task panics or is cancelled at shutdown.
            let mut guard = FlightGuard {
                inner: Arc::clone(&inner),
                key,
                id,
                armed: true,
            };
            let result = inner.upstream.fetch(Arc::clone(&info.token)).await;
            guard.armed = false;
            inner.complete(id, info, background, result)
        });
        let fut = async move {
            handle.await.unwrap_or_else(|e| {
                Err(UpstreamError {
                    kind: UpstreamErrorKind::Unavailable,
                    message: if e.is_panic() {
                        "the credential exchange failed unexpectedly".into()
                    } else {
                        "the agent is shutting down".into()
                    },
                })
            })
        }
        .boxed()
        .shared();
        st.index(&token);
        st.flights.insert(
            key,
            Flight {
                id,
                fut: fut.clone(),
                token,
            },
        );
        fut
    }

    /// Record a flight's result in the cache (under the same lock that unregisters the flight,
    /// so nobody sees the flight gone and the cache not yet updated).
    pub(super) fn complete(
        &self,
        id: u64,
        token: TokenInfo,
        background: bool,
        result: Result<Fetched, UpstreamError>,
    ) -> FlightResult {
        let key = token.key;
        let now = self.clock.now();
        let c = &self.counters;
        let fp = || fingerprint_of_digest(&key);
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.flights.get(&key).is_some_and(|f| f.id == id) {
            st.flights.remove(&key);
        }
        bump_down(&c.inflight);
        // Each outcome below forgets the token's way in unless an entry still holds it.
        let kept = token.clone();
        match result {
            Ok(fetched) => {
                let fetched = Arc::new(fetched);
                let mut lru_victim = None;
                if self.enabled {
                    let (stale_at, refresh_at) =
                        schedule(now, fetched.expiration, &self.config, self.jitter_unit());
                    let mut entry = Entry {
                        fetched: Arc::clone(&fetched),
                        token,
                        fetched_at: now,
                        stale_at,
                        refresh_at,
                        last_used: now,
                        served_expiration: fetched.expiration,
                        failures: 0,
                        retry_at: None,
                        refresh_queued: false,
                    };
                    if background {
                        // Renew in place (no LRU promotion); never resurrect a dropped entry.
                        if let Some(old) = st.entries.peek_mut(&key) {
                            entry.last_used = old.last_used;
                            entry.served_expiration = old.served_expiration;
                            *old = entry;
                        }
                    } else {
                        if let Some(old) = st.entries.peek(&key) {
                            entry.last_used = old.last_used;
                            entry.served_expiration = old.served_expiration;
                        }
                        if let Some((victim, old)) = st.entries.push(key, entry)
                            && victim != key
                        {
                            st.unindex(&old.token);
                            lru_victim = Some(victim);
                        }
                        // Again: another token on the same hash may have taken its place.
                        st.index(&kept);
                    }
                }
                st.unindex(&kept);
                drop(guard);
                if background {
                    bump(&c.refreshes_ok, 1);
                }
                if let Some(victim) = lru_victim {
                    bump(&c.evicted_lru, 1);
                    debug!(
                        token.fingerprint = %fingerprint_of_digest(&victim),
                        max_entries = self.config.max_entries,
                        "cache full; evicted the least recently used credentials"
                    );
                }
                debug!(
                    token.fingerprint = %fp(),
                    background,
                    expiration = %fetched.expiration,
                    "fetched credentials"
                );
                Ok(fetched)
            }
            Err(err) if err.is_irrecoverable() => {
                let evicted = self.enabled && st.entries.pop(&key).is_some();
                st.unindex(&kept);
                drop(guard);
                if background {
                    bump(&c.refresh_failures, 1);
                }
                if evicted {
                    bump(&c.evicted_irrecoverable, 1);
                    info!(
                        token.fingerprint = %fp(),
                        error.code = err.code(),
                        error.message = %err,
                        "upstream refused the token for good; evicted its credentials"
                    );
                }
                Err(err)
            }
            Err(err) => {
                let mut retry_in = None;
                if self.enabled
                    && let Some(e) = st.entries.peek_mut(&key)
                {
                    e.failures = e.failures.saturating_add(1);
                    let wait = backoff(e.failures, self.jitter_unit());
                    e.retry_at = Some(add(now, wait));
                    retry_in = Some(wait);
                }
                st.unindex(&kept);
                drop(guard);
                if background {
                    bump(&c.refresh_failures, 1);
                    warn!(
                        token.fingerprint = %fp(),
                        error.code = err.code(),
                        error.message = %err,
                        retry_in = ?retry_in,
                        "background credential refresh failed"
                    );
                }
                Err(err)
            }
        }
    }

    /// Wait for the limiter, then refresh `key` if it is still due and nobody else is fetching it.
    pub(super) async fn queued_refresh(self: Arc<Self>, key: TokenKey) -> RefreshResult {
        self.limiter.acquire().await;
        let flight = {
            let now = self.clock.now();
            let mut guard = self.lock();
            let st = &mut *guard;
            let Some(e) = st.entries.peek_mut(&key) else {
                return RefreshResult::Skipped;
            };
            e.refresh_queued = false;
            if !e.refresh_due(now) || st.flights.contains_key(&key) {
                return RefreshResult::Skipped;
            }
            let token = e.token.clone();
            self.start_flight(st, token, true)
        };
        match flight.await {
            Ok(_) => RefreshResult::Refreshed,
            Err(err) if err.is_irrecoverable() => RefreshResult::Evicted(err.code().to_string()),
            Err(err) => RefreshResult::Failed(err.code().to_string()),
        }
    }
}

pub(super) fn lock_errors(
    errors: &Mutex<Vec<(bool, String)>>,
) -> MutexGuard<'_, Vec<(bool, String)>> {
    errors.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn bump_down(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

pub(super) struct FlightGuard<U: Upstream> {
    pub(super) inner: Arc<Inner<U>>,
    pub(super) key: TokenKey,
    pub(super) id: u64,
    pub(super) armed: bool,
}

impl<U: Upstream> Drop for FlightGuard<U> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.inner.lock();
        if st.flights.get(&self.key).is_some_and(|f| f.id == self.id)
            && let Some(flight) = st.flights.remove(&self.key)
        {
            st.unindex(&flight.token);
        }
        drop(st);
        bump_down(&self.inner.counters.inflight);
    }
}
