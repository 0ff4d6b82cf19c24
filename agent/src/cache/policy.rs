//! The cache's time arithmetic: when credentials go stale, when to refresh them ahead, how long
//! to back off after a failure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::upstream::Fetched;

use super::*;

pub(super) fn sd(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

pub(super) fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.saturating_add(sd(d)).unwrap_or(Timestamp::MAX)
}

pub(super) fn has_left(fetched: &Fetched, now: Timestamp, at_least: Duration) -> bool {
    fetched.expiration.duration_since(now) >= sd(at_least)
}

/// `(stale_at, refresh_at)` for credentials fetched at `fetched_at`; `jitter_unit` in `[0, 1]`
/// places the lead between `span/8` (0) and `span/4` (1).
pub(super) fn schedule(
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
pub(super) fn backoff(failures: u32, jitter_unit: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    full.mul_f64(0.5 + 0.5 * jitter_unit.clamp(0.0, 1.0))
}
