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
//! token the entry keeps, so a hit costs no SHA-256 of a kilobyte-long token (docs/benchmarks.md).

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use jiff::{SignedDuration, Timestamp};
use lru::LruCache;
use pod_identity_contracts::Secret;
use pod_identity_contracts::secret::{digest, fingerprint_of_digest};
use rand::Rng;
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use crate::upstream::{Fetched, Upstream, UpstreamError, UpstreamErrorKind};
use crate::validate::TokenLabels;

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

/// Wall-clock time, injected so expiry and refresh are tested without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = add(*now, by);
    }

    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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
    /// The EKS Auth error code of each failed refresh, and whether it was irrecoverable.
    pub errors: Vec<(bool, String)>,
}

type FlightResult = Result<Arc<Fetched>, UpstreamError>;
type FlightFuture = Shared<BoxFuture<'static, FlightResult>>;

/// One upstream call that any number of requests await, and the token it exchanges (for
/// [`CredentialCache::get_known`]).
struct Flight {
    id: u64,
    fut: FlightFuture,
    token: TokenInfo,
}

struct Entry {
    fetched: Arc<Fetched>,
    /// Kept to refresh in the background, to check the token's validity on a hit, and to log.
    token: TokenInfo,
    fetched_at: Timestamp,
    stale_at: Timestamp,
    refresh_at: Timestamp,
    last_used: Timestamp,
    /// Expiration of the newest credentials handed to a caller: the pod must be back before then.
    served_expiration: Timestamp,
    /// Consecutive recoverable failures, and no retry before `retry_at`.
    failures: u32,
    retry_at: Option<Timestamp>,
    /// A background refresh waits in the limiter for this entry; do not queue another.
    refresh_queued: bool,
}

impl Entry {
    fn in_backoff(&self, now: Timestamp) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    fn refresh_due(&self, now: Timestamp) -> bool {
        now >= self.refresh_at && now < self.fetched.expiration && !self.in_backoff(now)
    }

    /// Why the sweep should forget this entry, if it should. (`GONE_GRACE` lets SDKs that renew
    /// only at expiry, such as the Go SDK v2's default, come back without losing their entry.)
    fn gone_reason(&self, now: Timestamp) -> Option<&'static str> {
        if self.token.token_exp <= now {
            Some("token expired")
        } else if now >= self.fetched.expiration {
            Some("credentials expired")
        } else if now > add(self.served_expiration, GONE_GRACE) {
            Some("not asked for before the credentials it was given expired")
        } else {
            None
        }
    }
}

struct State {
    entries: LruCache<TokenKey, Entry>,
    flights: HashMap<TokenKey, Flight>,
    next_flight_id: u64,
    /// The key of each token that has an entry or a flight, by [`token_hash`] of its bytes. Only
    /// a way in: a lookup through it is confirmed against the token kept with the entry, and a
    /// token it misses (two tokens on one hash: the newer wins) is found by its digest instead.
    by_token: HashMap<u64, TokenKey>,
}

impl State {
    /// Record that `token` (now with an entry or a flight) has key `key`.
    fn index(&mut self, token: &TokenInfo) {
        self.by_token
            .insert(token_hash(token.token.expose().as_bytes()), token.key);
    }

    /// Forget `token`'s way in once neither an entry nor a flight holds its key.
    fn unindex(&mut self, token: &TokenInfo) {
        let key = &token.key;
        if self.entries.contains(key) || self.flights.contains_key(key) {
            return;
        }
        let hash = token_hash(token.token.expose().as_bytes());
        if self.by_token.get(&hash) == Some(key) {
            self.by_token.remove(&hash);
        }
    }
}

/// A hash of a token's bytes under a key chosen at random per process, for [`State::by_token`]:
/// several times faster than SHA-256 on a token's kilobyte. Not a digest to trust: every use is
/// checked against the token itself.
fn token_hash(token: &[u8]) -> u64 {
    static KEYED: LazyLock<foldhash::fast::RandomState> =
        LazyLock::new(foldhash::fast::RandomState::default);
    KEYED.hash_one(token)
}

/// Whether `kept` and `presented` are the same token, in time that depends on their lengths only:
/// every byte is compared, with no early exit. (`subtle`'s slice comparison does the same through
/// an optimisation barrier per byte: 11k instructions for a 1 KiB token, against about 100 here.)
fn same_token(kept: &Secret, presented: &[u8]) -> bool {
    let kept = kept.expose().as_bytes();
    kept.len() == presented.len()
        && kept
            .iter()
            .zip(presented)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    stale_served: AtomicU64,
    bypassed: AtomicU64,
    upstream_calls: AtomicU64,
    inflight: AtomicU64,
    refreshes_ok: AtomicU64,
    refresh_failures: AtomicU64,
    evicted_irrecoverable: AtomicU64,
    dropped_gone: AtomicU64,
    evicted_lru: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Token bucket as GCRA: each permit reserves the next slot, so waiters are served in order
/// without holding a lock across the wait.
enum RateLimiter {
    /// Background refresh is off.
    Off,
    Unlimited,
    Limited {
        /// Time per permit, rounded up so `n` permits never take less than `n / qps`.
        interval: Duration,
        /// How far ahead of schedule a permit may be taken: `(burst - 1) * interval`.
        tolerance: Duration,
        /// Theoretical arrival time of the next permit.
        tat: Mutex<Option<tokio::time::Instant>>,
    },
}

impl RateLimiter {
    fn new(qps: f64) -> Self {
        if qps.is_nan() || qps <= 0.0 {
            return Self::Off;
        }
        let nanos = (1e9 / qps).ceil();
        if nanos < 1.0 {
            return Self::Unlimited;
        }
        let interval = Duration::from_nanos(nanos.min(u64::MAX as f64) as u64);
        let tolerance = interval.mul_f64(qps.max(1.0) - 1.0);
        Self::Limited {
            interval,
            tolerance,
            tat: Mutex::new(None),
        }
    }

    fn enabled(&self) -> bool {
        !matches!(self, Self::Off)
    }

    /// Wait for a permit. Never rejects.
    async fn acquire(&self) {
        let Self::Limited {
            interval,
            tolerance,
            tat,
        } = self
        else {
            return;
        };
        let now = tokio::time::Instant::now();
        let start = {
            let mut tat = tat.lock().unwrap_or_else(PoisonError::into_inner);
            let arrival = tat.map_or(now, |t| t.max(now));
            *tat = Some(arrival + *interval);
            arrival.checked_sub(*tolerance).unwrap_or(now)
        };
        if start > now {
            tokio::time::sleep_until(start).await;
        }
    }
}

struct Inner<U: Upstream> {
    config: CacheConfig,
    enabled: bool,
    upstream: Arc<U>,
    clock: Arc<dyn Clock>,
    limiter: RateLimiter,
    state: Mutex<State>,
    counters: Counters,
}

/// What a request gets from the cache.
pub type Answer = Result<(Arc<Fetched>, CacheOutcome), UpstreamError>;

/// What the cache can answer for a key, found under the lock.
enum Lookup {
    Hit(FreshHit),
    Stale(Arc<Fetched>),
    Wait { flight: FlightFuture, started: bool },
}

/// A fresh entry found under the lock.
struct FreshHit {
    fetched: Arc<Fetched>,
    labels: Arc<TokenLabels>,
    /// A refresh is due and was queued: start it.
    kick: bool,
}

/// What a background refresh came to.
enum RefreshResult {
    Refreshed,
    /// Recoverable: the entry stays and backs off. The error's code.
    Failed(String),
    /// Irrecoverable: the entry is gone. The error's code.
    Evicted(String),
    Skipped,
}

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
    }

    /// Run [`Self::refresh_due`] every `interval` until the handle is aborted or the cache is
    /// dropped. The task holds no strong reference between sweeps.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let cache = Arc::downgrade(self);
        let period = interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(cache) = cache.upgrade() else { break };
                let report = cache.refresh_due().await;
                if report != RefreshReport::default() {
                    debug!(
                        dropped_gone = report.dropped_gone,
                        due = report.due,
                        refreshed = report.refreshed,
                        failed = report.failed,
                        evicted = report.evicted,
                        skipped = report.skipped,
                        "credential cache sweep"
                    );
                }
            }
        })
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

impl<U: Upstream> Inner<U> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can leave the map inconsistent on panic; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn jitter_unit(&self) -> f64 {
        if self.config.jitter {
            rand::rng().random::<f64>()
        } else {
            1.0
        }
    }

    /// Under the lock: what the cache can answer for `key` without a new upstream call (fresh
    /// credentials, cached ones during a backoff, or the call in flight), marking the entry used.
    fn lookup(&self, st: &mut State, key: &TokenKey, now: Timestamp) -> Option<Lookup> {
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
    async fn answer(self: &Arc<Self>, key: TokenKey, lookup: Lookup) -> Answer {
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
    fn fresh_hit(&self, st: &mut State, key: &TokenKey, now: Timestamp) -> Option<FreshHit> {
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
    fn after_hit(self: &Arc<Self>, key: TokenKey, hit: &FreshHit) -> Arc<Fetched> {
        if hit.kick {
            debug!(
                token.fingerprint = hit.labels.fingerprint(),
                "credentials due for refresh; refreshing in the background"
            );
            tokio::spawn(Arc::clone(self).queued_refresh(key));
        }
        self.served(key, Arc::clone(&hit.fetched), CacheOutcome::Hit)
            .0
    }

    /// Count and log an answer.
    fn served(
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
    fn touch(&self, key: TokenKey, fetched: &Arc<Fetched>) {
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
    fn start_flight(
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
    fn complete(
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
    async fn queued_refresh(self: Arc<Self>, key: TokenKey) -> RefreshResult {
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

fn bump_down(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

struct FlightGuard<U: Upstream> {
    inner: Arc<Inner<U>>,
    key: TokenKey,
    id: u64,
    armed: bool,
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

fn sd(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.saturating_add(sd(d)).unwrap_or(Timestamp::MAX)
}

fn has_left(fetched: &Fetched, now: Timestamp, at_least: Duration) -> bool {
    fetched.expiration.duration_since(now) >= sd(at_least)
}

/// `(stale_at, refresh_at)` for credentials fetched at `fetched_at`; `jitter_unit` in `[0, 1]`
/// places the lead between `span/8` (0) and `span/4` (1).
fn schedule(
    fetched_at: Timestamp,
    expiration: Timestamp,
    config: &CacheConfig,
    jitter_unit: f64,
) -> (Timestamp, Timestamp) {
    let by_retention = fetched_at
        .saturating_add(sd(config.retention))
        .unwrap_or(Timestamp::MAX);
    let by_expiry = expiration
        .saturating_sub(sd(config.min_remaining))
        .unwrap_or(Timestamp::MIN);
    let mut stale_at = by_retention.min(by_expiry);
    if stale_at <= fetched_at {
        let half_life = expiration.duration_since(fetched_at) / 2;
        stale_at = fetched_at.saturating_add(half_life).unwrap_or(fetched_at);
    }
    let span = stale_at
        .duration_since(fetched_at)
        .max(SignedDuration::ZERO);
    let (min_lead, max_lead) = (span / 8, span / 4);
    let lead = (min_lead + (max_lead - min_lead).mul_f64(jitter_unit.clamp(0.0, 1.0)))
        .min(sd(MAX_REFRESH_LEAD));
    let refresh_at = stale_at.saturating_sub(lead).unwrap_or(stale_at);
    (stale_at, refresh_at)
}

/// Wait after the `failures`-th consecutive failure: 1 s, 2 s, 4 s … capped at 5 min; with
/// jitter (`jitter_unit` < 1) somewhere in `[d/2, d]`.
fn backoff(failures: u32, jitter_unit: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    full.mul_f64(0.5 + 0.5 * jitter_unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io;
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use futures::future::join_all;
    use pod_identity_contracts::eks_auth::ErrorKind;
    use tokio::sync::Notify;
    use tokio::time::Instant;

    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Ok(Duration),
        Recoverable,
        Irrecoverable,
    }

    /// A scripted EKS Auth: counts calls, answers from the script then the fallback, optionally
    /// waits on a gate or a (paused-time) delay first.
    struct FakeUpstream {
        clock: Arc<ManualClock>,
        calls: AtomicUsize,
        script: Mutex<VecDeque<Step>>,
        fallback: Mutex<Step>,
        gate: Mutex<Option<Arc<Notify>>>,
        delay: Mutex<Option<Duration>>,
        tokens_seen: Mutex<Vec<String>>,
    }

    impl FakeUpstream {
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        fn then(&self, step: Step) {
            self.script.lock().unwrap().push_back(step);
        }
        fn always(&self, step: Step) {
            *self.fallback.lock().unwrap() = step;
        }
        fn gate(&self) -> Arc<Notify> {
            let n = Arc::new(Notify::new());
            *self.gate.lock().unwrap() = Some(Arc::clone(&n));
            n
        }
        fn delay(&self, d: Duration) {
            *self.delay.lock().unwrap() = Some(d);
        }
    }

    impl Upstream for FakeUpstream {
        fn fetch(&self, token: Arc<Secret>) -> BoxFuture<'static, Result<Fetched, UpstreamError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.tokens_seen
                .lock()
                .unwrap()
                .push(token.expose().to_string());
            let step = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(*self.fallback.lock().unwrap());
            let gate = self.gate.lock().unwrap().clone();
            let delay = *self.delay.lock().unwrap();
            let clock = Arc::clone(&self.clock);
            Box::pin(async move {
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                match step {
                    Step::Ok(life) => Ok(fetched(n, add(clock.now(), life))),
                    Step::Recoverable => {
                        Err(UpstreamError::api(ErrorKind::Throttling, "rate exceeded"))
                    }
                    Step::Irrecoverable => Err(UpstreamError::api(
                        ErrorKind::AccessDenied,
                        "no association for this service account",
                    )),
                }
            })
        }
    }

    fn fetched(n: usize, expiration: Timestamp) -> Fetched {
        Fetched::from_parts(
            Bytes::from(format!(r#"{{"AccessKeyId":"ASIA{n}"}}"#)),
            expiration,
            format!("ASIA{n}"),
            "a-0123456789abcdef0".into(),
            "arn:aws:sts::111122223333:assumed-role/r/s".into(),
        )
    }

    struct Harness {
        cache: Arc<CredentialCache<FakeUpstream>>,
        up: Arc<FakeUpstream>,
        clock: Arc<ManualClock>,
    }

    impl Harness {
        fn new(config: CacheConfig) -> Self {
            let clock = Arc::new(ManualClock::new(t0()));
            let up = Arc::new(FakeUpstream {
                clock: Arc::clone(&clock),
                calls: AtomicUsize::new(0),
                script: Mutex::new(VecDeque::new()),
                fallback: Mutex::new(Step::Ok(HOUR)),
                gate: Mutex::new(None),
                delay: Mutex::new(None),
                tokens_seen: Mutex::new(Vec::new()),
            });
            let cache = CredentialCache::new(config, Arc::clone(&up), clock.clone());
            Self { cache, up, clock }
        }

        fn at(&self, since_t0: Duration) {
            self.clock.set(add(t0(), since_t0));
        }

        async fn get(&self, name: &str) -> Result<(Arc<Fetched>, CacheOutcome), UpstreamError> {
            self.cache.get(token(name)).await
        }

        async fn ok(&self, name: &str) -> (String, CacheOutcome) {
            let (f, outcome) = self.get(name).await.expect("credentials");
            (f.access_key_id.clone(), outcome)
        }
    }

    /// Exact schedules: jitter off. 1 h credentials → stale at 45 min, refresh at 35 min.
    fn exact() -> CacheConfig {
        CacheConfig {
            jitter: false,
            ..CacheConfig::default()
        }
    }

    fn token(name: &str) -> TokenInfo {
        token_expiring(name, add(t0(), 24 * HOUR))
    }

    fn token_expiring(name: &str, exp: Timestamp) -> TokenInfo {
        TokenInfo::new(Arc::new(Secret::new(format!("eyJ.token-of-{name}"))), exp)
    }

    /// Let every runnable task run until it blocks (paused time auto-advances only then).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

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

    #[tokio::test(start_paused = true)]
    async fn refresher_task_sweeps_until_aborted() {
        let h = Harness::new(exact());
        h.ok("a").await;
        h.at(36 * MIN);
        let task = h.cache.spawn_refresher(MIN);
        settle().await;
        assert_eq!(h.up.calls(), 2);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
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
}
