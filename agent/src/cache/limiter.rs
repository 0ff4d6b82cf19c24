//! The background refreshes' rate limiter (`--max-service-qps`): waits, never rejects.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Token bucket as GCRA: each permit reserves the next slot, so waiters are served in order
/// without holding a lock across the wait.
pub(super) enum RateLimiter {
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
    pub(super) fn new(qps: f64) -> Self {
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

    pub(super) fn enabled(&self) -> bool {
        !matches!(self, Self::Off)
    }

    /// Wait for a permit. Never rejects.
    pub(super) async fn acquire(&self) {
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
