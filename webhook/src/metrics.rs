//! The webhook's Prometheus metrics, in one registry owned by the caller (text format 0.0.4, as
//! the agent).
//!
//! - `pod_identity_webhook_reviews_total{result}`: every AdmissionReview answered, by result:
//!   `injected`, `already_injected`, `no_association`, `no_target_containers`, `skipped_kind`
//!   (not a Pod), `skipped_operation` (not CREATE), `error` (allowed unchanged because of an
//!   internal failure: the pods to look for with `pod-identity-webhook audit`).
//! - `pod_identity_webhook_review_errors_total{reason}`: the `error` results by reason
//!   (`store_not_ready`, `no_object`, `bad_pod`, `no_namespace`, `unknown_kind`).
//! - `pod_identity_webhook_http_requests_total{code}`: HTTP answers on `/mutate`, including 400
//!   (not an AdmissionReview) and 413 (body too large).
//! - `pod_identity_webhook_review_duration_seconds`: decode + decide + encode.
//! - `pod_identity_webhook_tls_reloads_total{result}`: certificate reloads (`ok`, `error`).
//! - `pod_identity_webhook_store_ready`: 1 once the association store has loaded.
//! - `pod_identity_webhook_log_lines_dropped_total`: log lines dropped because the output could
//!   not keep up.

use pod_identity_runtime::metrics::{self as runtime_metrics, DroppedLines};
use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub reviews: IntCounterVec,
    pub review_errors: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub review_duration: Histogram,
    pub tls_reloads: IntCounterVec,
    pub store_ready: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let reviews = counter(
            "pod_identity_webhook_reviews_total",
            "AdmissionReviews answered, by result",
            &["result"],
        );
        let review_errors = counter(
            "pod_identity_webhook_review_errors_total",
            "AdmissionReviews allowed unchanged because of an internal failure, by reason",
            &["reason"],
        );
        let http_requests = counter(
            "pod_identity_webhook_http_requests_total",
            "HTTP answers of the admission listener, by status code",
            &["code"],
        );
        let tls_reloads = counter(
            "pod_identity_webhook_tls_reloads_total",
            "Reloads of the serving certificate after its files changed, by result",
            &["result"],
        );
        let review_duration = Histogram::with_opts(
            HistogramOpts::new(
                "pod_identity_webhook_review_duration_seconds",
                "Time to decode, decide and encode one AdmissionReview",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
            ]),
        )
        .expect("static metric definition");
        let store_ready = IntGauge::new(
            "pod_identity_webhook_store_ready",
            "1 once the association store has loaded its sources",
        )
        .expect("static metric definition");
        let registry = runtime_metrics::registry([
            Box::new(reviews.clone()) as Box<dyn Collector>,
            Box::new(review_errors.clone()),
            Box::new(http_requests.clone()),
            Box::new(review_duration.clone()),
            Box::new(tls_reloads.clone()),
            Box::new(store_ready.clone()),
            Box::new(DroppedLines::new(
                "pod_identity_webhook_log_lines_dropped_total",
            )),
        ]);
        Self {
            registry,
            reviews,
            review_errors,
            http_requests,
            review_duration,
            tls_reloads,
            store_ready,
        }
    }

    /// The text exposition (format 0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        runtime_metrics::encode(&self.registry)
    }

    /// `Content-Type` of [`Metrics::encode`].
    pub const CONTENT_TYPE: &'static str = runtime_metrics::CONTENT_TYPE;
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
