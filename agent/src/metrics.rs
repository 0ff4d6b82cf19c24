//! The agent's Prometheus metrics. The official agent's names mean here what they mean there, so
//! an existing dashboard or alert keeps its meaning (read from its source,
//! `internal/credsretriever/refreshing_cache.go` and `pkg/handlers/eks_credential_handler.go`):
//!
//! - `pod_identity_http_response{code}`: every answer to a pod, by status.
//! - `pod_identity_cache_state{state}`: `miss`, a pod's request that went to EKS Auth, whatever
//!   it answered; `hit`, a *background refresh* that succeeded (not a request served from the
//!   cache); `evicted`, every removal of credentials from the cache, whatever the reason.
//! - `pod_identity_cache_errors{type,code}`: background refreshes that failed (the sweep's, and
//!   those a hit started), `Recoverable` (kept, retried) or `NonRecoverable` (removed), by EKS
//!   Auth error code.
//!
//! `agent/tests/official_metrics.rs` drives this agent through a sequence the official agent
//! (0.1.37) was recorded on and compares these three families.
//!
//! They are counters without a `_total` suffix, as the Go agent exposes them (hence the
//! `prometheus` crate's 0.0.4 text format: the OpenMetrics encoder would rename them). Our own
//! counts have names of their own: `pod_identity_cache_requests{outcome}` (`hit` served from the
//! cache, `miss`, `coalesced` shared another request's call, `stale` served still-valid
//! credentials while EKS Auth failed, `bypass` caching disabled),
//! `pod_identity_cache_removals{reason}` (`irrecoverable`, `gone` pod gone or credentials
//! expired, `lru` size bound), `pod_identity_cache_refreshes{result}`,
//! `pod_identity_upstream_errors{type,code}` (every failed EKS Auth call, a pod's or a refresh's),
//! upstream latency, calls in flight, cache size, log lines dropped and process metrics.

use std::sync::{Arc, Mutex, RwLock};

use crate::cache::{CacheStats, RefreshReport};
use pod_identity_runtime::metrics::{self as runtime_metrics, DroppedLines};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric the agent exports, registered in one registry owned by the caller.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_response: IntCounterVec,
    pub cache_errors: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    cache: CacheCounters,
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
        let cache_errors = IntCounterVec::new(
            Opts::new(
                "pod_identity_cache_errors",
                "Removing credentials from cache, got non recoverable error",
            ),
            &["type", "code"],
        )
        .expect("static metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "pod_identity_upstream_errors",
                "Failed EKS Auth calls (a pod's or a background refresh's), by recoverability and error code",
            ),
            &["type", "code"],
        )
        .expect("static metric definition");
        let cache = CacheCounters::new();
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
            Box::new(cache.clone()),
            Box::new(cache_errors.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(upstream_inflight.clone()),
            Box::new(cache_entries.clone()),
            Box::new(DroppedLines::new("pod_identity_log_lines_dropped")),
        ]);
        Self {
            registry,
            http_response,
            cache_errors,
            upstream_errors,
            cache,
            upstream_latency,
            upstream_inflight,
            cache_entries,
        }
    }

    /// Read the cache's counters at every scrape (until then they are 0).
    pub fn watch_cache(&self, stats: impl Fn() -> CacheStats + Send + Sync + 'static) {
        *self
            .cache
            .source
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(stats));
    }

    /// Count one background sweep's failed refreshes in `pod_identity_cache_errors`, as the
    /// official agent does (its successes and removals are in the cache's own counters).
    pub fn record_sweep(&self, report: &RefreshReport) {
        for (irrecoverable, code) in &report.errors {
            let kind = if *irrecoverable {
                "NonRecoverable"
            } else {
                "Recoverable"
            };
            self.cache_errors.with_label_values(&[kind, code]).inc();
        }
    }

    /// The text exposition (format 0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        runtime_metrics::encode(&self.registry)
    }

    /// `Content-Type` of [`Metrics::encode`].
    pub const CONTENT_TYPE: &'static str = runtime_metrics::CONTENT_TYPE;
}

/// The counter a successful credentials answer bumps, resolved once:
/// `pod_identity_http_response{code="200"}` (resolving creates it: exported as 0 from the start).
#[derive(Debug, Clone)]
pub struct RequestCounters {
    pub ok: IntCounter,
}

impl RequestCounters {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            ok: metrics.http_response.with_label_values(&["200"]),
        }
    }
}

type StatsSource = Box<dyn Fn() -> CacheStats + Send + Sync>;

/// The cache's own atomic counters, exported at scrape time: the official
/// `pod_identity_cache_state` and our detailed families. Nothing is counted twice on the request
/// path: the cache counts, the scrape reads.
#[derive(Clone)]
struct CacheCounters {
    source: Arc<RwLock<Option<StatsSource>>>,
    state: IntCounterVec,
    requests: IntCounterVec,
    removals: IntCounterVec,
    refreshes: IntCounterVec,
    /// One scrape at a time sets the counters.
    scrape: Arc<Mutex<()>>,
}

impl std::fmt::Debug for CacheCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCounters").finish_non_exhaustive()
    }
}

impl CacheCounters {
    fn new() -> Self {
        let vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric definition")
        };
        Self {
            source: Arc::new(RwLock::new(None)),
            state: vec(
                "pod_identity_cache_state",
                "The state of credential in cache",
                "state",
            ),
            requests: vec(
                "pod_identity_cache_requests",
                "Pod requests by how the cache answered them",
                "outcome",
            ),
            removals: vec(
                "pod_identity_cache_removals",
                "Credentials removed from the cache, by reason",
                "reason",
            ),
            refreshes: vec(
                "pod_identity_cache_refreshes",
                "Background refreshes, by result",
                "result",
            ),
            scrape: Arc::new(Mutex::new(())),
        }
    }

    fn families(&self) -> [&IntCounterVec; 4] {
        [&self.state, &self.requests, &self.removals, &self.refreshes]
    }
}

/// Set a counter to `value` (the cache's count since start).
fn set(vec: &IntCounterVec, label: &str, value: u64) {
    let c = vec.with_label_values(&[label]);
    c.reset();
    c.inc_by(value);
}

impl Collector for CacheCounters {
    fn desc(&self) -> Vec<&Desc> {
        self.families().into_iter().flat_map(|f| f.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = self
            .source
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|f| f())
            .unwrap_or_default();
        let removed = s.evicted_irrecoverable + s.dropped_gone + s.evicted_lru;
        for (label, value) in [
            ("hit", s.refreshes_ok),
            ("miss", s.misses + s.failed_misses),
            ("evicted", removed),
        ] {
            set(&self.state, label, value);
        }
        for (label, value) in [
            ("hit", s.hits),
            ("miss", s.misses),
            ("coalesced", s.coalesced),
            ("stale", s.stale_served),
            ("bypass", s.bypassed),
        ] {
            set(&self.requests, label, value);
        }
        for (label, value) in [
            ("irrecoverable", s.evicted_irrecoverable),
            ("gone", s.dropped_gone),
            ("lru", s.evicted_lru),
        ] {
            set(&self.removals, label, value);
        }
        set(&self.refreshes, "ok", s.refreshes_ok);
        set(&self.refreshes, "failed", s.refresh_failures);
        self.families()
            .into_iter()
            .flat_map(|f| f.collect())
            .collect()
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
        m.cache_errors
            .with_label_values(&["NonRecoverable", "AccessDeniedException"])
            .inc();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            text.contains("pod_identity_http_response{code=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pod_identity_cache_state{state=\"hit\"} 0"),
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

    #[test]
    fn the_official_states_mean_what_they_mean_in_the_go_agent() {
        let m = Metrics::new();
        m.watch_cache(|| CacheStats {
            hits: 40,
            misses: 3,
            failed_misses: 2,
            coalesced: 2,
            refreshes_ok: 5,
            refresh_failures: 2,
            evicted_irrecoverable: 1,
            dropped_gone: 4,
            evicted_lru: 6,
            ..CacheStats::default()
        });
        m.record_sweep(&RefreshReport {
            errors: vec![
                (false, "ServiceUnavailableException".into()),
                (true, "AccessDeniedException".into()),
            ],
            ..RefreshReport::default()
        });
        let text = String::from_utf8(m.encode()).unwrap();
        for line in [
            // hit: background refreshes that succeeded, not the 40 requests served from cache.
            "pod_identity_cache_state{state=\"hit\"} 5",
            // miss: every request that went to EKS Auth, whatever it answered.
            "pod_identity_cache_state{state=\"miss\"} 5",
            // evicted: every removal.
            "pod_identity_cache_state{state=\"evicted\"} 11",
            "pod_identity_cache_errors{code=\"ServiceUnavailableException\",type=\"Recoverable\"} 1",
            "pod_identity_cache_errors{code=\"AccessDeniedException\",type=\"NonRecoverable\"} 1",
            "pod_identity_cache_requests{outcome=\"hit\"} 40",
            "pod_identity_cache_requests{outcome=\"coalesced\"} 2",
            "pod_identity_cache_removals{reason=\"lru\"} 6",
            "pod_identity_cache_refreshes{result=\"failed\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // A second scrape reads the same counts (set, not added). Only the agent's own families:
        // the process's (RSS, threads) move between two scrapes.
        let ours = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("pod_identity_"))
                .map(String::from)
                .collect()
        };
        assert_eq!(ours(&String::from_utf8(m.encode()).unwrap()), ours(&text));
    }
}
