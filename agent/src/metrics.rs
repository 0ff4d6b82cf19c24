//! The agent's Prometheus metrics, under the official agent's names so existing dashboards and
//! alerts keep working: `pod_identity_http_response{code}`, `pod_identity_cache_state{state}`,
//! `pod_identity_cache_errors{type,code}` are counters without a `_total` suffix, exactly as the
//! Go agent exposes them (which is why this uses the `prometheus` crate's 0.0.4 text format: the
//! OpenMetrics encoder would rename them). Ours add upstream latency, cache size, in-flight
//! exchanges, log lines dropped (`pod_identity_log_lines_dropped`) and process metrics.
//!
//! `pod_identity_cache_state` states: `hit` (served from cache), `miss` (went upstream),
//! `coalesced` (waited for another request's upstream call), `stale` (upstream failed, still-valid
//! credentials served), `bypass` (caching disabled), `refreshed` / `refresh_failed` (background
//! refreshes), `evicted` (irrecoverable error), `dropped` (pod gone), `lru` (size bound).

use crate::cache::CacheOutcome;
use pod_identity_runtime::metrics::{self as runtime_metrics, DroppedLines};
use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric the agent exports, registered in one registry owned by the caller.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_response: IntCounterVec,
    pub cache_state: IntCounterVec,
    pub cache_errors: IntCounterVec,
    pub upstream_latency: Histogram,
    pub upstream_inflight: IntGauge,
    pub cache_entries: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let http_response = IntCounterVec::new(
            Opts::new(
                "pod_identity_http_response",
                "Pod Identity http response code",
            ),
            &["code"],
        )
        .expect("static metric definition");
        let cache_state = IntCounterVec::new(
            Opts::new(
                "pod_identity_cache_state",
                "The state of credential in cache",
            ),
            &["state"],
        )
        .expect("static metric definition");
        let cache_errors = IntCounterVec::new(
            Opts::new(
                "pod_identity_cache_errors",
                "Errors from EKS Auth seen by the cache, by recoverability and error code",
            ),
            &["type", "code"],
        )
        .expect("static metric definition");
        let upstream_latency = Histogram::with_opts(
            HistogramOpts::new(
                "pod_identity_upstream_latency_seconds",
                "Latency of EKS Auth AssumeRoleForPodIdentity calls, retries included",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("static metric definition");
        let upstream_inflight =
            IntGauge::new("pod_identity_upstream_inflight", "EKS Auth calls in flight")
                .expect("static metric definition");
        let cache_entries = IntGauge::new(
            "pod_identity_cache_entries",
            "Credentials held in the cache",
        )
        .expect("static metric definition");
        let registry = runtime_metrics::registry([
            Box::new(http_response.clone()) as Box<dyn Collector>,
            Box::new(cache_state.clone()),
            Box::new(cache_errors.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(upstream_inflight.clone()),
            Box::new(cache_entries.clone()),
            Box::new(DroppedLines::new("pod_identity_log_lines_dropped")),
        ]);
        Self {
            registry,
            http_response,
            cache_state,
            cache_errors,
            upstream_latency,
            upstream_inflight,
            cache_entries,
        }
    }

    /// The text exposition (format 0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        runtime_metrics::encode(&self.registry)
    }

    /// `Content-Type` of [`Metrics::encode`].
    pub const CONTENT_TYPE: &'static str = runtime_metrics::CONTENT_TYPE;
}

/// The counters a credentials answer bumps, resolved once: `pod_identity_http_response{code="200"}`
/// and `pod_identity_cache_state` for each [`CacheOutcome`], so an answer does not hash label
/// values. (Resolving creates them: they are exported as 0 from the start.)
#[derive(Debug, Clone)]
pub struct RequestCounters {
    pub ok: IntCounter,
    outcomes: [IntCounter; 5],
}

impl RequestCounters {
    pub fn new(metrics: &Metrics) -> Self {
        let outcome = |o: CacheOutcome| metrics.cache_state.with_label_values(&[o.as_str()]);
        Self {
            ok: metrics.http_response.with_label_values(&["200"]),
            outcomes: CacheOutcome::ALL.map(outcome),
        }
    }

    pub fn outcome(&self, outcome: CacheOutcome) -> &IntCounter {
        &self.outcomes[outcome as usize]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_official_names_without_suffixes() {
        let m = Metrics::new();
        m.http_response.with_label_values(&["200"]).inc();
        m.cache_state.with_label_values(&["hit"]).inc();
        m.cache_errors
            .with_label_values(&["NonRecoverable", "AccessDeniedException"])
            .inc();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            text.contains("pod_identity_http_response{code=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_cache_state{state=\"hit\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "pod_identity_cache_errors{code=\"AccessDeniedException\",type=\"NonRecoverable\"} 1"
        ));
        assert!(text.contains("# TYPE pod_identity_http_response counter"));
        assert!(!text.contains("pod_identity_http_response_total"));
        // The writer's count (no logger installed in this test: 0), under the official-style name.
        assert!(
            text.contains(
                "# TYPE pod_identity_log_lines_dropped counter\npod_identity_log_lines_dropped 0\n"
            ),
            "{text}"
        );
    }
}
