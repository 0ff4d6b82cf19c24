//! The agent's credential cache: one entry per pod token, single-flight exchanges, background
//! refresh, and the policy that decides when cached credentials are still good enough to serve.
//!
//! This module owns *when* the agent calls EKS Auth; [`crate::upstream`] owns *how*. It keeps
//! `Arc<Fetched>` answers keyed by the SHA-256 of the pod's token ([`TokenKey`]; raw tokens are
//! never keys and never logged) in an LRU bounded by [`CacheConfig::max_entries`].
//!
//! # Policy
//!
//! - **Freshness.** An entry fetched at `fetched_at` whose credentials expire at `expiration` is
//!   served until `stale_at = min(fetched_at + retention, expiration - min_remaining)`. If that is
//!   not after `fetched_at` (credentials living less than `min_remaining`), `stale_at` is the
//!   midpoint of their life instead, so short-lived credentials are not refetched on every call.
//!   botocore treats credentials with less than 15 minutes left as stale and asks again on every
//!   AWS call, so we never hand out less than 15 minutes when fresher can be had (the official
//!   agent serves down to 15 seconds).
//! - **Refresh ahead.** `refresh_at = stale_at - lead`, `lead` uniform in `[span/8, span/4]`
//!   (exactly `span/4` without jitter) and at most 10 minutes, `span = stale_at - fetched_at`;
//!   chosen once per fetch. A hit at or after `refresh_at` queues a background refresh and answers
//!   at once; the periodic sweep ([`CredentialCache::refresh_due`]) refreshes every due entry.
//!   Background refreshes go through a token bucket of `refresh_qps` per second (burst
//!   `max(1, qps)`) that waits, never rejects. Caller-waiting fetches are never rate-limited: the
//!   agent must not answer 429 to pods.
//! - **Single flight.** All concurrent requests for one key that the cache cannot answer share
//!   ONE upstream call, run in its own task (a caller that disconnects cancels nobody else) that
//!   updates the cache before it resolves. The caller that started it sees [`CacheOutcome::Miss`],
//!   the others [`CacheOutcome::Coalesced`]. Background refreshes are flights too: a caller that
//!   needs fresh credentials while one runs joins it.
//! - **Failures.** Errors are never cached. An irrecoverable error
//!   ([`UpstreamError::is_irrecoverable`]) evicts the entry at once. After a recoverable one the
//!   entry stays, backs off exponentially (1 s, 2 s, … 5 min, jittered) and, while its credentials
//!   have at least 60 s left, is served as [`CacheOutcome::Stale`]; during the backoff such callers
//!   get the stale credentials without another upstream call.
//! - **Forgetting.** The sweep drops, without refreshing, entries of pods that are gone: the
//!   token has expired, or the credentials last handed out expired more than [`GONE_GRACE`] ago
//!   (a live pod comes back before the credentials it holds expire; the grace covers SDKs that
//!   renew only at expiry), or the cached credentials themselves have expired.
//! - **Disabled.** `retention == 0` or `max_entries == 0` stores nothing: every request goes
//!   upstream ([`CacheOutcome::Bypass`]), though concurrent identical requests still coalesce.
//!
//! Wall time (expirations, schedules, backoff) comes from an injected [`Clock`]; only the rate
//! limiter uses tokio time. One mutex guards the map and is never held across an await; a hit is
//! lock, lookup, clone an `Arc`, unlock. [`CredentialCache::get_known`] answers from the token's
//! bytes alone (entries and flights keep the token's `exp`, `nbf` and log labels), so the server
//! parses a token only when the cache neither holds nor is fetching credentials for it. It finds
//! the entry through a keyed fast hash of the bytes and confirms it by comparing them with the
//! token the entry keeps, so a hit costs no SHA-256 of a kilobyte-long token
//! (docs/benchmarks-log.md).
//!
//! Inside: `clock` (the injected wall clock), `entries` (what the one lock guards), `flights`
//! (how a request is answered and what a finished call does to the cache), `limiter` (the
//! background refreshes' pace), `policy` (the freshness and backoff arithmetic); the tests, by
//! subject, in `tests/`.

mod clock;
mod entries;
mod flights;
mod limiter;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use lru::LruCache;
use pod_identity_contracts::Secret;
use pod_identity_contracts::secret::{digest, fingerprint_of_digest};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::upstream::{Fetched, Upstream, UpstreamError};
use crate::validate::TokenLabels;

#[cfg(test)]
use clock::ManualClock;
pub use clock::{Clock, SystemClock};
use entries::{
    Counters, Entry, Flight, FlightFuture, FlightResult, State, bump, same_token, token_hash,
};
use flights::{Inner, Lookup, RefreshResult, lock_errors};
use limiter::RateLimiter;
use policy::{add, backoff, has_left, schedule};

/// SHA-256 of the raw token ([`pod_identity_contracts::secret::digest`]). Raw tokens are never keys.
pub type TokenKey = [u8; 32];

/// `--max-credential-retention-before-renewal` default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3 * 60 * 60);
/// `--max-cache-size` default.
pub const DEFAULT_MAX_ENTRIES: usize = 2000;
/// Credentials with less left than this are stale to botocore, so we refetch before that.
pub const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(15 * 60);
/// `--max-service-qps` default: background refreshes per second.
pub const DEFAULT_REFRESH_QPS: f64 = 3.0;
/// After a recoverable upstream error, cached credentials are served only with this much left:
/// less would expire before the SDK could use them.
pub const STALE_MIN_REMAINING: Duration = Duration::from_secs(60);
/// The refresh lead never exceeds this, so long-lived entries are not refreshed hours early.
pub const MAX_REFRESH_LEAD: Duration = Duration::from_secs(10 * 60);
/// First backoff after a recoverable failure; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// How long after the credentials it was given expire a pod may still come back before the
/// sweep treats it as gone.
pub const GONE_GRACE: Duration = Duration::from_secs(5 * 60);
/// Longest backoff after failed refreshes.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// Cache tuning, from the agent's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Longest time an entry is served before renewal. Zero disables caching.
    pub retention: Duration,
    /// LRU bound. Zero disables caching.
    pub max_entries: usize,
    /// Never serve credentials with less than this left when fresher can be had.
    pub min_remaining: Duration,
    /// Background refreshes per second (burst `max(1, qps)`). `+inf` means unlimited; zero,
    /// negative or NaN turns background refresh off (entries are then renewed only by callers).
    pub refresh_qps: f64,
    /// Randomize refresh leads and backoffs so entries fetched together do not renew together.
    pub jitter: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            max_entries: DEFAULT_MAX_ENTRIES,
            min_remaining: DEFAULT_MIN_REMAINING,
            refresh_qps: DEFAULT_REFRESH_QPS,
            jitter: true,
        }
    }
}

/// A pod's token as the cache needs it: the key, the token itself (to refresh in the background),
/// its validity window (a pod whose token expired is gone; [`CredentialCache::get_known`] answers
/// only inside the window) and its log labels. Kept in the entry and the flight, so a request for
/// a known token needs only the key.
#[derive(Clone)]
pub struct TokenInfo {
    pub key: TokenKey,
    pub token: Arc<Secret>,
    pub token_exp: Timestamp,
    /// The token's `nbf`, if it has one.
    pub not_before: Option<Timestamp>,
    pub labels: Arc<TokenLabels>,
}

impl TokenInfo {
    /// Derive the key from the token; no `nbf`, no labels but the fingerprint.
    pub fn new(token: Arc<Secret>, token_exp: Timestamp) -> Self {
        let key = digest(token.expose().as_bytes());
        Self {
            labels: Arc::new(TokenLabels::new(
                &fingerprint_of_digest(&key),
                "",
                "",
                "",
                "",
            )),
            key,
            token,
            token_exp,
            not_before: None,
        }
    }

    /// Whether the token is valid at `now`: at or after `nbf` and before `exp` (no leeway, as
    /// [`crate::validate::parse_token`]).
    pub fn valid_at(&self, now: Timestamp) -> bool {
        now < self.token_exp && self.not_before.is_none_or(|nbf| nbf <= now)
    }
}

impl fmt::Debug for TokenInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenInfo")
            .field("fingerprint", &fingerprint_of_digest(&self.key))
            .field("token", &self.token)
            .field("token_exp", &self.token_exp)
            .field("not_before", &self.not_before)
            .field("labels", &self.labels)
            .finish()
    }
}

/// How a request was answered; logged as field `cache` and counted in [`CacheStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// Served from the cache.
    Hit,
    /// This request made the upstream call.
    Miss,
    /// This request shared another's upstream call.
    Coalesced,
    /// The upstream failed recoverably; still-valid cached credentials were served.
    Stale,
    /// Caching is disabled; this request made the upstream call.
    Bypass,
}

impl CacheOutcome {
    /// Every outcome, each at its own discriminant.
    pub const ALL: [CacheOutcome; 5] = [
        CacheOutcome::Hit,
        CacheOutcome::Miss,
        CacheOutcome::Coalesced,
        CacheOutcome::Stale,
        CacheOutcome::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Coalesced => "coalesced",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

impl fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters since start (plain numbers read from atomics); `inflight` is a gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Requests that found nothing cached and started an upstream call that failed (the
    /// official agent's `miss` counts them with `misses`: it counts before it calls).
    pub failed_misses: u64,
    pub coalesced: u64,
    pub stale_served: u64,
    pub bypassed: u64,
    /// Upstream calls started, foreground and background.
    pub upstream_calls: u64,
    /// Upstream calls running now.
    pub inflight: u64,
    /// Background refreshes that succeeded / failed.
    pub refreshes_ok: u64,
    pub refresh_failures: u64,
    /// Entries evicted because upstream said the token can never work.
    pub evicted_irrecoverable: u64,
    /// Entries dropped by the sweep: pod gone or credentials expired.
    pub dropped_gone: u64,
    /// Entries pushed out by the size bound.
    pub evicted_lru: u64,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Entries dropped without refreshing (pod gone, credentials expired).
    pub dropped_gone: usize,
    /// Entries found due for refresh.
    pub due: usize,
    pub refreshed: usize,
    /// Recoverable failures; the entry stays and backs off.
    pub failed: usize,
    /// Irrecoverable failures; the entry is gone.
    pub evicted: usize,
    /// Due entries no longer due once the limiter let them through (renewed or dropped meanwhile).
    pub skipped: usize,
    /// The EKS Auth error code of each failed refresh, and whether it was irrecoverable: this
    /// sweep's, and those of refreshes a hit started since the last one.
    pub errors: Vec<(bool, String)>,
}

/// What a request gets from the cache.
pub type Answer = Result<(Arc<Fetched>, CacheOutcome), UpstreamError>;

/// The credential cache; see the module documentation for the policy.
pub struct CredentialCache<U: Upstream> {
    inner: Arc<Inner<U>>,
}

impl<U: Upstream> fmt::Debug for CredentialCache<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("config", &self.inner.config)
            .field("entries", &self.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<U: Upstream> CredentialCache<U> {
    pub fn new(config: CacheConfig, upstream: Arc<U>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let enabled = !config.retention.is_zero() && config.max_entries > 0;
        let capacity = NonZeroUsize::new(config.max_entries).unwrap_or(NonZeroUsize::MIN);
        let limiter = if enabled {
            RateLimiter::new(config.refresh_qps)
        } else {
            RateLimiter::Off
        };
        Arc::new(Self {
            inner: Arc::new(Inner {
                enabled,
                upstream,
                clock,
                limiter,
                state: Mutex::new(State {
                    // Sparse: memory grows with the pods on this node, not with the bound.
                    entries: LruCache::sparse(capacity),
                    flights: HashMap::new(),
                    next_flight_id: 0,
                    by_token: HashMap::new(),
                }),
                counters: Counters::default(),
                hit_refresh_errors: Mutex::new(Vec::new()),
                config,
            }),
        })
    }

    /// Credentials for a pod's token: from the cache, or from the one upstream call in flight
    /// for it, or from a new one.
    pub async fn get(
        &self,
        info: TokenInfo,
    ) -> Result<(Arc<Fetched>, CacheOutcome), UpstreamError> {
        let inner = &self.inner;
        let key = info.key;
        let now = inner.clock.now();
        let lookup = {
            let mut guard = inner.lock();
            let st = &mut *guard;
            match inner.lookup(st, &key, now) {
                Some(lookup) => lookup,
                None => Lookup::Wait {
                    flight: inner.start_flight(st, info, false),
                    started: true,
                },
            }
        };
        inner.answer(key, lookup).await
    }

    /// The answer for `token` (the header's bytes) from what the cache holds or is fetching for
    /// it, without parsing it: a hit, cached credentials during a backoff, or a share of the
    /// upstream call in flight, provided the token recorded with them is these very bytes and is
    /// valid now, by its `exp` and `nbf`. Comes with the token's log labels; counted and scheduled
    /// exactly as by [`Self::get`]. `None`: the cache needs the token itself; validate it and call
    /// [`Self::get`].
    pub async fn get_known(&self, token: &[u8]) -> Option<(Answer, Arc<TokenLabels>)> {
        let inner = &self.inner;
        let hash = token_hash(token);
        let now = inner.clock.now();
        let (key, lookup, labels) = {
            let mut guard = inner.lock();
            let st = &mut *guard;
            let key = *st.by_token.get(&hash)?;
            let kept = match st.entries.peek(&key) {
                Some(e) if inner.enabled => &e.token,
                _ => &st.flights.get(&key)?.token,
            };
            if !same_token(&kept.token, token) || !kept.valid_at(now) {
                return None;
            }
            let labels = Arc::clone(&kept.labels);
            (key, inner.lookup(st, &key, now)?, labels)
        };
        Some((inner.answer(key, lookup).await, labels))
    }

    /// One background sweep: forget entries of pods that are gone, then refresh every due entry
    /// through the rate limiter, and wait for those refreshes to finish.
    pub async fn refresh_due(&self) -> RefreshReport {
        let inner = &self.inner;
        let mut report = RefreshReport::default();
        if !inner.enabled {
            return report;
        }
        let now = inner.clock.now();
        let refresh = inner.limiter.enabled();
        let mut dropped = Vec::new();
        let due: Vec<TokenKey> = {
            let mut guard = inner.lock();
            let st = &mut *guard;
            let mut due = Vec::new();
            // `iter_mut` does not promote: a sweep must not make idle entries look recent.
            for (key, e) in st.entries.iter_mut() {
                if let Some(reason) = e.gone_reason(now) {
                    dropped.push((*key, reason, e.fetched_at, e.last_used));
                } else if refresh
                    && !e.refresh_queued
                    && e.refresh_due(now)
                    && !st.flights.contains_key(key)
                {
                    e.refresh_queued = true;
                    due.push(*key);
                }
            }
            for (key, ..) in &dropped {
                if let Some(e) = st.entries.pop(key) {
                    st.unindex(&e.token);
                }
            }
            due
        };
        bump(&inner.counters.dropped_gone, dropped.len() as u64);
        for (key, reason, fetched_at, last_used) in &dropped {
            debug!(
                token.fingerprint = %fingerprint_of_digest(key),
                %fetched_at,
                %last_used,
                reason,
                "forgot cached credentials"
            );
        }
        report.dropped_gone = dropped.len();
        report.due = due.len();

        // Each refresh is its own task: an aborted sweep leaves none half-queued.
        let tasks: Vec<JoinHandle<RefreshResult>> = due
            .into_iter()
            .map(|key| tokio::spawn(Arc::clone(inner).queued_refresh(key)))
            .collect();
        for task in tasks {
            match task.await {
                Ok(RefreshResult::Refreshed) => report.refreshed += 1,
                Ok(RefreshResult::Failed(code)) => {
                    report.failed += 1;
                    report.errors.push((false, code));
                }
                Ok(RefreshResult::Evicted(code)) => {
                    report.evicted += 1;
                    report.errors.push((true, code));
                }
                Ok(RefreshResult::Skipped) | Err(_) => report.skipped += 1,
            }
        }
        report
            .errors
            .append(&mut lock_errors(&inner.hit_refresh_errors));
        report
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        if !self.inner.enabled {
            return 0;
        }
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            failed_misses: load(&c.failed_misses),
            coalesced: load(&c.coalesced),
            stale_served: load(&c.stale_served),
            bypassed: load(&c.bypassed),
            upstream_calls: load(&c.upstream_calls),
            inflight: load(&c.inflight),
            refreshes_ok: load(&c.refreshes_ok),
            refresh_failures: load(&c.refresh_failures),
            evicted_irrecoverable: load(&c.evicted_irrecoverable),
            dropped_gone: load(&c.dropped_gone),
            evicted_lru: load(&c.evicted_lru),
        }
    }
}
