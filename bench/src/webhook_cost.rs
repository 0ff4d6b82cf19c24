//! `pod-identity-bench webhook-cost`: CPU per AdmissionReview in the webhook's handler, for an
//! instruction-count profiler. Runs `--reviews` reviews of one fixture through
//! [`Reviewer::review`] (the body `POST /mutate` hands it), with the production logger (JSON lines
//! through the non-blocking writer, to stdout) and the store `serve` uses. No HTTP, no TLS:
//! `pod-identity-bench webhook` covers those.
//!
//! Run it twice under callgrind and divide the difference by the difference in N, so the setup
//! (logger, store, reading the fixture, this binary's start) cancels out:
//!
//! ```sh
//! cargo build --release -p pod-identity-bench
//! for n in 1000 11000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/review.$n.out \
//!     target/release/pod-identity-bench webhook-cost --reviews $n > /dev/null
//! done
//! ```
//!
//! Prints `reviews=N answer_bytes=B` on stderr.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use pod_identity_associations::AssociationStore;
use pod_identity_contracts::association::AssociationSet;
use pod_identity_webhook::config::LogFormat;
use pod_identity_webhook::metrics::Metrics;
use pod_identity_webhook::mutate::Settings;
use pod_identity_webhook::review::Reviewer;

use crate::webhook_load::FIXTURES;

#[derive(Debug, Clone, Args)]
pub struct WebhookCostArgs {
    /// Reviews run through the handler.
    #[arg(long, default_value_t = 10_000)]
    pub reviews: usize,

    /// The AdmissionReview reviewed: `webhook/tests/fixtures/<NAME>.json`.
    #[arg(long, default_value = "inject-basic")]
    pub fixture: String,

    /// The logger's level (info is the webhook's production default).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

pub fn main(args: &WebhookCostArgs) -> anyhow::Result<()> {
    let reviews = args.reviews;
    let _guard = pod_identity_webhook::telemetry::init(&args.log_level, LogFormat::Json, false)
        .context("logger")?;
    let fixtures = Path::new(FIXTURES);
    let path = fixtures.join("associations.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let set = AssociationSet::from_yaml(&text).with_context(|| path.display().to_string())?;
    let store = AssociationStore::from_set(set);
    let path = fixtures.join(format!("{}.json", args.fixture));
    let body = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let reviewer = Reviewer::new(Arc::new(store), Settings::default(), Metrics::new());
    let mut bytes = 0usize;
    for _ in 0..reviews {
        let answer = reviewer.review(std::hint::black_box(&body));
        bytes += answer.body.len();
    }
    eprintln!("reviews={reviews} answer_bytes={bytes}");
    Ok(())
}
