//! The Prometheus plumbing under every binary's own `metrics.rs`: a registry of its collectors
//! plus the process metrics, and the text exposition of it.
//!
//! The exposition is the `prometheus` crate's text format 0.0.4 on purpose: the agent's counters
//! keep the official agent's names without a `_total` suffix, which the OpenMetrics encoder
//! would add.

use std::sync::{Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};

/// `Content-Type` of [`encode`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A registry of `collectors` and, on Linux, the process metrics (`process_*`).
///
/// # Panics
/// When two collectors export the same name: metric definitions are static, so that is a bug.
pub fn registry(collectors: impl IntoIterator<Item = Box<dyn Collector>>) -> Registry {
    let registry = Registry::new();
    for c in collectors {
        registry.register(c).expect("metric names are unique");
    }
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registers once");
    registry
}

/// The text exposition of everything in `registry`.
pub fn encode(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}

/// A counter of the log lines the installed writer ([`crate::logger`]) dropped because its
/// output could not keep up, brought up to the writer's own count at every scrape.
#[derive(Debug)]
pub struct DroppedLines {
    counter: IntCounter,
    /// Two scrapes at once must not both add the same difference.
    sync: Mutex<()>,
    count: fn() -> u64,
}

impl DroppedLines {
    /// The counter `name` (e.g. `pod_identity_log_lines_dropped`).
    ///
    /// # Panics
    /// On an invalid metric name: names are static, so that is a bug.
    pub fn new(name: &str) -> Self {
        Self::counting(name, crate::logger::dropped_lines)
    }

    fn counting(name: &str, count: fn() -> u64) -> Self {
        Self {
            counter: IntCounter::new(
                name,
                "Log lines dropped because the log output could not keep up",
            )
            .expect("static metric definition"),
            sync: Mutex::new(()),
            count,
        }
    }
}

impl Collector for DroppedLines {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, seen) = ((self.count)(), self.counter.get());
        if total > seen {
            self.counter.inc_by(total - seen);
        }
        self.counter.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use prometheus::{IntCounterVec, Opts};

    use super::*;

    #[test]
    fn counters_keep_their_names_and_process_metrics_come_along() {
        let plain = IntCounter::new("plain_count", "no suffix added").unwrap();
        let labelled =
            IntCounterVec::new(Opts::new("labelled_total", "by code"), &["code"]).unwrap();
        let registry = registry([
            Box::new(plain.clone()) as Box<dyn Collector>,
            Box::new(labelled.clone()),
        ]);
        plain.inc_by(3);
        labelled.with_label_values(&["200"]).inc();
        let text = String::from_utf8(encode(&registry)).unwrap();
        assert!(
            text.contains("# TYPE plain_count counter\nplain_count 3\n"),
            "{text}"
        );
        assert!(text.contains("labelled_total{code=\"200\"} 1\n"), "{text}");
        assert!(!text.contains("plain_count_total"), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn dropped_lines_follow_the_writers_count_at_each_scrape() {
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        let registry = registry([Box::new(DroppedLines::counting("x_log_lines_dropped", || {
            DROPPED.load(Ordering::Relaxed)
        })) as Box<dyn Collector>]);
        let scrape = || String::from_utf8(encode(&registry)).unwrap();
        assert!(scrape().contains("# TYPE x_log_lines_dropped counter\nx_log_lines_dropped 0\n"));
        DROPPED.store(7, Ordering::Relaxed);
        assert!(scrape().contains("x_log_lines_dropped 7\n"));
        assert!(
            scrape().contains("x_log_lines_dropped 7\n"),
            "not added twice"
        );
    }

    #[test]
    #[should_panic(expected = "metric names are unique")]
    fn a_name_registered_twice_is_a_bug() {
        let a = IntCounter::new("twice", "one").unwrap();
        let b = IntCounter::new("twice", "two").unwrap();
        registry([Box::new(a) as Box<dyn Collector>, Box::new(b)]);
    }
}
