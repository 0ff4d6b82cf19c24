//! CPU per AdmissionReview in the handler, for an instruction-count profiler: runs N reviews of
//! one fixture through [`Reviewer::review`] (the body `POST /mutate` hands it), with the
//! production logger (JSON lines through the non-blocking writer) and the store `serve` uses.
//! No HTTP, no TLS: `bench` covers those.
//!
//! Run it twice under callgrind and divide the difference by the difference in N, so the setup
//! (logger, store, reading the fixture) cancels out:
//!
//! ```sh
//! cargo build --release -p pod-identity-webhook --example review_cost
//! for n in 1000 11000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/review.$n.out \
//!     target/release/examples/review_cost --reviews $n > /dev/null
//! done
//! ```
//!
//! Flags: `--reviews N` (10000), `--fixture NAME` (inject-basic), `--log-level L` (info).

use std::path::PathBuf;
use std::sync::Arc;

use pod_identity_associations::AssociationStore;
use pod_identity_contracts::association::AssociationSet;
use pod_identity_webhook::config::LogFormat;
use pod_identity_webhook::metrics::Metrics;
use pod_identity_webhook::mutate::Settings;
use pod_identity_webhook::review::Reviewer;

fn main() {
    let (mut reviews, mut fixture, mut log_level) =
        (10_000usize, "inject-basic".to_string(), "info".to_string());
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--reviews" => reviews = v.parse().expect("--reviews N"),
            "--fixture" => fixture = v,
            "--log-level" => log_level = v,
            other => panic!("unknown flag {other}"),
        }
    }
    let _guard =
        pod_identity_webhook::telemetry::init(&log_level, LogFormat::Json, false).expect("logger");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(fixtures.join("associations.yaml")).unwrap();
    let store = AssociationStore::from_set(AssociationSet::from_yaml(&text).unwrap());
    let body = std::fs::read(fixtures.join(format!("{fixture}.json"))).unwrap();
    let reviewer = Reviewer::new(Arc::new(store), Settings::default(), Metrics::new());
    let mut bytes = 0usize;
    for _ in 0..reviews {
        let answer = reviewer.review(std::hint::black_box(&body));
        bytes += answer.body.len();
    }
    eprintln!("reviews={reviews} answer_bytes={bytes}");
}
