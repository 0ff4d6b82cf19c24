//! The Prometheus plumbing under every binary's own `metrics.rs`: a registry of its collectors
//! plus the process metrics, and the text exposition of it.
//!
//! The exposition is the `prometheus` crate's text format 0.0.4 on purpose: the agent's counters
//! keep the official agent's names without a `_total` suffix, which the OpenMetrics encoder
//! would add.

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

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

#[cfg(test)]
mod tests {
    use prometheus::{IntCounter, IntCounterVec, Opts};

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
    #[should_panic(expected = "metric names are unique")]
    fn a_name_registered_twice_is_a_bug() {
        let a = IntCounter::new("twice", "one").unwrap();
        let b = IntCounter::new("twice", "two").unwrap();
        registry([Box::new(a) as Box<dyn Collector>, Box::new(b)]);
    }
}
