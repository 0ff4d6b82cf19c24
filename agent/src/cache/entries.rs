//! What the cache holds under its one lock: entries (credentials, their schedule and backoff),
//! flights (upstream calls under way), the by-bytes index that finds either from a token's
//! bytes, and the counters behind `CacheStats`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use futures::future::{BoxFuture, Shared};
use jiff::Timestamp;
use lru::LruCache;
use pod_identity_contracts::Secret;

use crate::upstream::{Fetched, UpstreamError};

use super::*;

pub(super) type FlightResult = Result<Arc<Fetched>, UpstreamError>;
pub(super) type FlightFuture = Shared<BoxFuture<'static, FlightResult>>;

/// One upstream call that any number of requests await, and the token it exchanges (for
/// [`CredentialCache::get_known`]).
pub(super) struct Flight {
    pub(super) id: u64,
    pub(super) fut: FlightFuture,
    pub(super) token: TokenInfo,
}

pub(super) struct Entry {
    pub(super) fetched: Arc<Fetched>,
    /// Kept to refresh in the background, to check the token's validity on a hit, and to log.
    pub(super) token: TokenInfo,
    pub(super) fetched_at: Timestamp,
    pub(super) stale_at: Timestamp,
    pub(super) refresh_at: Timestamp,
    pub(super) last_used: Timestamp,
    /// Expiration of the newest credentials handed to a caller: the pod must be back before then.
    pub(super) served_expiration: Timestamp,
    /// Consecutive recoverable failures, and no retry before `retry_at`.
    pub(super) failures: u32,
    pub(super) retry_at: Option<Timestamp>,
    /// A background refresh waits in the limiter for this entry; do not queue another.
    pub(super) refresh_queued: bool,
}

impl Entry {
    pub(super) fn in_backoff(&self, now: Timestamp) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    pub(super) fn refresh_due(&self, now: Timestamp) -> bool {
        now >= self.refresh_at && now < self.fetched.expiration && !self.in_backoff(now)
    }

    /// Why the sweep should forget this entry, if it should. (`GONE_GRACE` lets SDKs that renew
    /// only at expiry, such as the Go SDK v2's default, come back without losing their entry.)
    pub(super) fn gone_reason(&self, now: Timestamp) -> Option<&'static str> {
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

pub(super) struct State {
    pub(super) entries: LruCache<TokenKey, Entry>,
    pub(super) flights: HashMap<TokenKey, Flight>,
    pub(super) next_flight_id: u64,
    /// The key of each token that has an entry or a flight, by [`token_hash`] of its bytes. Only
    /// a way in: a lookup through it is confirmed against the token kept with the entry, and a
    /// token it misses (two tokens on one hash: the newer wins) is found by its digest instead.
    pub(super) by_token: HashMap<u64, TokenKey>,
}

impl State {
    /// Record that `token` (now with an entry or a flight) has key `key`.
    pub(super) fn index(&mut self, token: &TokenInfo) {
        self.by_token
            .insert(token_hash(token.token.expose().as_bytes()), token.key);
    }

    /// Forget `token`'s way in once neither an entry nor a flight holds its key.
    pub(super) fn unindex(&mut self, token: &TokenInfo) {
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
pub(super) fn token_hash(token: &[u8]) -> u64 {
    static KEYED: LazyLock<foldhash::fast::RandomState> =
        LazyLock::new(foldhash::fast::RandomState::default);
    KEYED.hash_one(token)
}

/// Whether `kept` and `presented` are the same token, in time that depends on their lengths only:
/// every byte is compared, with no early exit. (`subtle`'s slice comparison does the same through
/// an optimisation barrier per byte: 11k instructions for a 1 KiB token, against about 100 here.)
pub(super) fn same_token(kept: &Secret, presented: &[u8]) -> bool {
    let kept = kept.expose().as_bytes();
    kept.len() == presented.len()
        && kept
            .iter()
            .zip(presented)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) failed_misses: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) stale_served: AtomicU64,
    pub(super) bypassed: AtomicU64,
    pub(super) upstream_calls: AtomicU64,
    pub(super) inflight: AtomicU64,
    pub(super) refreshes_ok: AtomicU64,
    pub(super) refresh_failures: AtomicU64,
    pub(super) evicted_irrecoverable: AtomicU64,
    pub(super) dropped_gone: AtomicU64,
    pub(super) evicted_lru: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}
