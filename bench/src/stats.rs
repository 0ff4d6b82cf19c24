//! Latency summaries. Every latency is kept (a few hundred thousand `u64` per point), so the
//! percentiles are exact nearest-rank values, not histogram buckets.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of one set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// Summarize latencies given in nanoseconds (sorted here).
    pub fn of(mut nanos: Vec<u64>) -> Self {
        if nanos.is_empty() {
            return Self::default();
        }
        nanos.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let sum: u128 = nanos.iter().map(|&n| u128::from(n)).sum();
        Self {
            count: nanos.len(),
            p50_ms: ms(percentile(&nanos, 50.0)),
            p99_ms: ms(percentile(&nanos, 99.0)),
            max_ms: ms(*nanos.last().unwrap_or(&0)),
            mean_ms: sum as f64 / nanos.len() as f64 / 1e6,
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `p`% of all
/// values at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nanoseconds of a duration, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // 200 samples: p99 is the 198th.
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&v, 99.0), 198);
    }

    #[test]
    fn summary_in_milliseconds() {
        let s = Summary::of(vec![3_000_000, 1_000_000, 2_000_000]);
        assert_eq!(s.count, 3);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 3.0);
        assert_eq!(s.max_ms, 3.0);
        assert_eq!(s.mean_ms, 2.0);
        assert_eq!(Summary::of(Vec::new()), Summary::default());
    }
}
