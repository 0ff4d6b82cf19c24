//! `pod-identity-bench eks-auth-verify`: eks-auth's verification + association lookup overhead
//! per exchange, STS excluded, in process.
//!
//! Times `Exchange::verify_and_lookup_cached` (signature, claims, lookup in the shared
//! `AssociationStore`; no IO) over 500 distinct tokens from many pods and service accounts
//! against 1000 associations, one thread, RS256 then ES256, and prints the percentiles. Run in
//! release:
//!
//! ```sh
//! cargo build --release -p pod-identity-bench
//! target/release/pod-identity-bench eks-auth-verify 20000
//! ```
//!
//! `pod-identity-bench eks-auth` measures the eks-auth binary end to end instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use eks_auth::config::ClusterArn;
use eks_auth::exchange::{Audit, Exchange};
use eks_auth::keys::{KeySet, KeySource};
use eks_auth::metrics::Metrics;
use eks_auth::sts::{AssumeSpec, Assumed, RoleAssumer, StsError};
use eks_auth::verify::{Verifier, VerifierSettings};
use futures::future::BoxFuture;
use pod_identity_associations::AssociationLookup;
use pod_identity_associations::AssociationStore;
use pod_identity_contracts::{Association, AssociationSet};
use pod_identity_test_support::keys;
use pod_identity_test_support::tokens::{DEFAULT_ISSUER, TokenBuilder, now};

#[derive(Debug, Clone, Args)]
pub struct EksAuthVerifyArgs {
    /// Timed exchanges per token type.
    #[arg(default_value_t = 20_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iterations: usize,
}

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

fn run(
    name: &str,
    exchange: &Exchange,
    tokens: &[String],
    iterations: usize,
) -> anyhow::Result<()> {
    let t = now();
    // Warm up.
    for token in tokens.iter().take(200) {
        exchange
            .verify_and_lookup_cached(token, t, &mut Audit::default())
            .context("a benchmark token did not verify")?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let token = &tokens[i % tokens.len()];
        let mut audit = Audit::default();
        let started = Instant::now();
        let result = exchange.verify_and_lookup_cached(token, t, &mut audit);
        samples.push(started.elapsed());
        if let Err(e) = result {
            bail!("a benchmark token did not verify: {e}");
        }
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
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    );
    Ok(())
}

pub fn main(args: &EksAuthVerifyArgs) -> anyhow::Result<()> {
    let iterations = args.iterations;
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
        .map_err(|e| anyhow!("the test keys' JWKS: {e}"))?,
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
    let set = AssociationSet::from_associations(associations)?;
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
    run("RS256", &exchange, &rs, iterations)?;
    run("ES256", &exchange, &es, iterations)?;
    Ok(())
}
