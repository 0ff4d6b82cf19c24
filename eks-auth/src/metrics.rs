//! eks-auth's Prometheus metrics, in one registry owned by the caller (text format 0.0.4, as the
//! agent): exchanges by outcome, STS latency, key refreshes, and what is loaded.
//!
//! - `eks_auth_requests_total{outcome}`: `success` or the EKS Auth error name
//!   (`InvalidTokenException`, ...).
//! - `eks_auth_sts_latency_seconds{result}`: each STS AssumeRole call (`ok` / `error`).
//! - `eks_auth_key_refreshes_total{trigger,result}`: trigger `startup`, `periodic`,
//!   `unknown_kid`; result `success`, `failure`, `rate_limited`.
//! - `eks_auth_keys`, `eks_auth_associations`: gauges of what is loaded.
//! - `eks_auth_tls_reloads_total{result}`: the API certificate swapped after its files changed
//!   (`ok`), or changed but not usable and the previous one kept (`error`).
//! - `eks_auth_log_lines_dropped_total`: audit and other log lines dropped because stdout could
//!   not keep up.

use pod_identity_runtime::metrics::{self as runtime_metrics, DroppedLines};
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub sts_latency: HistogramVec,
    pub key_refreshes: IntCounterVec,
    pub keys: IntGauge,
    pub associations: IntGauge,
    pub tls_reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "eks_auth_requests_total",
                "AssumeRoleForPodIdentity requests by outcome (success or the error name)",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let sts_latency = HistogramVec::new(
            HistogramOpts::new(
                "eks_auth_sts_latency_seconds",
                "Latency of each STS AssumeRole call",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["result"],
        )
        .expect("static metric definition");
        let key_refreshes = IntCounterVec::new(
            Opts::new(
                "eks_auth_key_refreshes_total",
                "Loads of the issuer's keys by trigger and result",
            ),
            &["trigger", "result"],
        )
        .expect("static metric definition");
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "eks_auth_tls_reloads_total",
                "Reloads of the API certificate after its files changed, by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let keys =
            IntGauge::new("eks_auth_keys", "Issuer keys loaded").expect("static metric definition");
        let associations = IntGauge::new("eks_auth_associations", "Associations loaded")
            .expect("static metric definition");
        let registry = runtime_metrics::registry([
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(sts_latency.clone()),
            Box::new(key_refreshes.clone()),
            Box::new(keys.clone()),
            Box::new(associations.clone()),
            Box::new(tls_reloads.clone()),
            Box::new(DroppedLines::new("eks_auth_log_lines_dropped_total")),
        ]);
        Self {
            registry,
            requests,
            sts_latency,
            key_refreshes,
            keys,
            associations,
            tls_reloads,
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
