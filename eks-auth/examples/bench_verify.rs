//! Verification + association lookup overhead per exchange, STS excluded.
//!
//! Times `Exchange::verify_and_lookup_cached` (signature, claims, lookup in the shared
//! `AssociationStore`; no IO) over distinct tokens from many pods and service accounts against
//! 1000 associations, and prints the percentiles. Run in release:
//!
//! ```sh
//! cargo run --release -p eks-auth --example bench_verify -- [iterations]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use eks_auth::associations::AssociationLookup;
use eks_auth::config::ClusterArn;
use eks_auth::exchange::{Audit, Exchange};
use eks_auth::keys::{KeySet, KeySource};
use eks_auth::metrics::Metrics;
use eks_auth::sts::{AssumeSpec, Assumed, RoleAssumer, StsError};
use eks_auth::verify::{Verifier, VerifierSettings};
use futures::future::BoxFuture;
use pod_identity_associations::AssociationStore;
use pod_identity_contracts::{Association, AssociationSet};
use pod_identity_test_support::keys;
use pod_identity_test_support::tokens::{DEFAULT_ISSUER, TokenBuilder, now};

#[derive(Debug)]
struct NoSts;

impl RoleAssumer for NoSts {
    fn assume(&self, _: AssumeSpec) -> BoxFuture<'static, Result<Assumed, StsError>> {
        unreachable!("the benchmark never calls STS")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn run(name: &str, exchange: &Exchange, tokens: &[String], iterations: usize) {
    let t = now();
    // Warm up.
    for token in tokens.iter().take(200) {
        exchange
            .verify_and_lookup_cached(token, t, &mut Audit::default())
            .expect("benchmark tokens verify");
    }
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let token = &tokens[i % tokens.len()];
        let mut audit = Audit::default();
        let started = Instant::now();
        let result = exchange.verify_and_lookup_cached(token, t, &mut audit);
        samples.push(started.elapsed());
        assert!(result.is_ok());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name:<6} n={iterations} tokens={} mean={:.1}µs p50={:.1}µs p90={:.1}µs p99={:.1}µs max={:.1}µs",
        tokens.len(),
        mean.as_secs_f64() * 1e6,
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.90).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.last().unwrap().as_secs_f64() * 1e6,
    );
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let metrics = Metrics::new();
    let verifier = Arc::new(Verifier::new(
        VerifierSettings {
            issuer: DEFAULT_ISSUER.into(),
            audience: "pods.eks.amazonaws.com".into(),
            leeway: Duration::from_secs(30),
            min_refresh: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(24 * 3600),
        },
        KeySource::File("/dev/null".into()),
        metrics,
    ));
    verifier.set_keys(
        KeySet::from_jwks(
            keys::jwks_of(&[keys::PRIMARY, keys::EC])
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    );
    let associations: Vec<Association> = (0..1000)
        .map(|i| Association {
            namespace: format!("ns-{}", i % 50),
            service_account: format!("sa-{i}"),
            role_arn: format!("arn:aws:iam::111122223333:role/r-{i}"),
            target_role_arn: None,
            disable_session_tags: false,
            policy: None,
            association_id: None,
        })
        .collect();
    let set = AssociationSet::from_associations(associations).unwrap();
    let exchange = Exchange::new(
        ClusterArn {
            partition: "aws".into(),
            region: "us-west-2".into(),
            account: "111122223333".into(),
            name: "lab".into(),
        },
        verifier,
        Arc::new(AssociationStore::from_set(set)) as Arc<dyn AssociationLookup>,
        Arc::new(NoSts),
    );
    let builder = |i: usize| {
        TokenBuilder::new()
            .namespace(format!("ns-{}", i % 50))
            .service_account(format!("sa-{i}"))
            .pod(format!("pod-{i}"))
    };
    let rs: Vec<String> = (0..500).map(|i| builder(i).sign()).collect();
    let es: Vec<String> = (0..500)
        .map(|i| builder(i).kid(keys::EC.kid).sign_with_key(&keys::EC))
        .collect();
    println!(
        "verify + lookup per exchange (no STS), {} associations, 1 thread",
        exchange.associations.len()
    );
    run("RS256", &exchange, &rs, iterations);
    run("ES256", &exchange, &es, iterations);
}
