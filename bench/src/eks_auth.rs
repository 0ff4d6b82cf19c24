//! `pod-identity-bench eks-auth`: what eks-auth itself costs per exchange when a thousand distinct
//! pods arrive at once, over HTTPS, with caller verification and TokenReview, STS excluded.
//!
//! One run, all on loopback: the test issuer ([`FakeIssuer`]: discovery, JWKS and TokenReview for
//! the test-support tokens) and the lab's STS ([`LabSts`]: SigV4 checked, credentials issued) share
//! one tokio runtime of their own in this process; the release `eks-auth` runs as a child with
//! `--token-review` (a kubeconfig pointing at the issuer) and a TestCa certificate, logging its
//! production audit line per exchange. The pods live on `--nodes` nodes, each with its agent's own
//! token as the caller token, and each node's requests come from its own loopback address
//! (`127.0.0.2`, …) as each agent would. After a warm-up (keys fetched, STS and API server
//! connections open, each caller's review cached), every round mints `--pods` new pods' tokens,
//! opens one new TLS connection per pod and releases them all at once. Latencies come from two
//! sides: the client's (connect, TLS handshake, request, last byte of the answer) and the audit
//! line's `latency_ms`, `review_ms` and `sts_ms`. eks-auth's CPU time per round is read from
//! `/proc/<pid>/stat`, its peak RSS from `VmHWM`.
//!
//! A connection eks-auth closes unread (over its connection caps) is retried after
//! [`RETRY_PAUSE`] on a new connection, as an SDK would; the client latency then includes the
//! wait, and the report counts the retries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pod_identity_contracts::Secret;
use pod_identity_contracts::eks_auth::{CALLER_TOKEN_HEADER, request_path};
use pod_identity_contracts::log_schema::ExchangeAuditLine;
use pod_identity_lab::sts::{AccessKey, LabSts, Role, RunningSts, StsConfig, StsOutcome};
use pod_identity_test_support::eks_auth_process::{EksAuthOptions, EksAuthProcess, EksAuthTls};
use pod_identity_test_support::fake_issuer::FakeIssuer;
use pod_identity_test_support::moto::{CALLER_ACCESS_KEY_ID, CALLER_SECRET_ACCESS_KEY};
use pod_identity_test_support::tls::TestCa;
use pod_identity_test_support::tokens::{TokenBuilder, jwks, uid_for};
use tokio::net::TcpSocket;
use tokio::sync::Barrier;
use tokio_rustls::TlsConnector;

use crate::procfs;
use crate::stats::percentile;

const CLUSTER: &str = "bench";
const ACCOUNT: &str = "111122223333";
const EKS_AUTH_USER: &str = "arn:aws:iam::111122223333:user/bench-eks-auth";
/// How long a client waits before retrying a connection eks-auth closed unread.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Attempts per pod before it counts as failed.
const MAX_ATTEMPTS: u32 = 100;
/// The target this benchmark checks: eks-auth's own p99 (latency minus STS), in ms.
pub const TARGET_P99_MS: f64 = 50.0;

#[derive(Debug, Clone, Args)]
pub struct EksAuthArgs {
    /// The eks-auth binary [default: eks-auth next to this binary, i.e. target/release/eks-auth].
    #[arg(long)]
    pub eks_auth: Option<PathBuf>,
    /// Distinct pods per round, each on its own new TLS connection, all released at once.
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Measured rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Nodes the pods are spread over (one agent, caller token and source address each).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Namespaces.
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// Service accounts with an association, spread over the namespaces.
    #[arg(long, default_value_t = 100)]
    pub service_accounts: usize,
    /// Unmeasured exchanges before the rounds, 10 at a time.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub pause_ms: u64,
    /// Worker threads of the client's tokio runtime (the issuer and STS get one of their own).
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
}

/// One pod's request, ready to send.
struct Pod {
    node: usize,
    body: Bytes,
}

/// What one pod saw.
struct Outcome {
    elapsed: Duration,
    status: u16,
    retries: u32,
    /// Why a pod got no answer.
    failed: Option<String>,
}

/// One round's measurements.
#[derive(Default)]
struct Round {
    client_ns: Vec<u64>,
    errors: usize,
    /// Errors by what they were: an HTTP status, or where and why the attempt failed.
    error_kinds: std::collections::BTreeMap<String, usize>,
    retries: u32,
    audits: Vec<ExchangeAuditLine>,
    cpu: Duration,
    reviews: usize,
    /// Credentials STS issued during the round: more than the audit lines of answered exchanges
    /// means exchanges were dropped after STS (their connection closed under them).
    issued: usize,
    wall: Duration,
}

pub fn main(args: &EksAuthArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.service_accounts == 0 || args.namespaces == 0 || args.pods == 0 {
        bail!("--pods, --nodes, --namespaces and --service-accounts must be at least 1");
    }
    let bin = match &args.eks_auth {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("eks-auth"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p eks-auth -p pod-identity-bench) or pass --eks-auth",
            bin.display()
        );
    }
    let upstream = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-upstream")
        .enable_all()
        .build()?;
    let issuer = upstream.block_on(FakeIssuer::start(jwks()));
    let sts = upstream.block_on(start_sts(args))?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()?;
    let result = client.block_on(run(args, &bin, &issuer, &sts));
    drop(client);
    drop(sts);
    drop(issuer);
    drop(upstream);
    result
}

fn sa_name(k: usize) -> String {
    format!("sa-{k}")
}

fn ns_of(args: &EksAuthArgs, k: usize) -> String {
    format!("ns-{}", k % args.namespaces)
}

fn role_of(k: usize) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/bench-{k}")
}

async fn start_sts(args: &EksAuthArgs) -> anyhow::Result<RunningSts> {
    let key = AccessKey::new(CALLER_ACCESS_KEY_ID, Secret::new(CALLER_SECRET_ACCESS_KEY));
    let mut config = StsConfig::new().static_key(key, EKS_AUTH_USER);
    for k in 0..args.service_accounts {
        config = config.role(
            Role::new(role_of(k))
                .max_session_duration(Duration::from_secs(12 * 3600))
                .trust(EKS_AUTH_USER),
        );
    }
    Ok(LabSts::new(config)?
        .start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?)
}

fn associations_yaml(args: &EksAuthArgs) -> String {
    let mut yaml = String::from("associations:\n");
    for k in 0..args.service_accounts {
        yaml.push_str(&format!(
            "  - namespace: {}\n    serviceAccount: {}\n    roleArn: {}\n",
            ns_of(args, k),
            sa_name(k),
            role_of(k)
        ));
    }
    yaml
}

fn node_name(n: usize) -> String {
    format!("bench-node-{n}")
}

/// The source address of node `n`'s agent: 127.0.0.2, 127.0.0.3, …
fn node_addr(n: usize) -> IpAddr {
    let n = u32::try_from(n + 2).unwrap_or(2);
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n))
}

/// `count` new pods named for `batch`, spread evenly over nodes and service accounts.
fn mint_pods(args: &EksAuthArgs, issuer: &str, batch: &str, count: usize) -> Vec<Pod> {
    (0..count)
        .map(|p| {
            let k = p % args.service_accounts;
            let node = p % args.nodes;
            let name = format!("{batch}-{p}");
            let token = TokenBuilder::new()
                .issuer(issuer)
                .namespace(ns_of(args, k))
                .service_account(sa_name(k))
                .pod(&name)
                .pod_uid(uid_for("pod", &name))
                .node(node_name(node))
                .sign();
            let body = serde_json::json!({ "token": token }).to_string();
            Pod {
                node,
                body: Bytes::from(body),
            }
        })
        .collect()
}

/// What every request shares: where, how, and each node's caller token.
struct Client {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    tls: TlsConnector,
    callers: Vec<HeaderValue>,
}

impl Client {
    /// One pod: a new connection from its node's address, TLS, one request, the whole answer.
    async fn exchange(&self, pod: &Pod) -> Outcome {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            match self.attempt(pod).await {
                Ok(status) => {
                    return Outcome {
                        elapsed: started.elapsed(),
                        status,
                        retries,
                        failed: None,
                    };
                }
                Err(Attempt::Refused) if retries + 1 < MAX_ATTEMPTS => {
                    retries += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    return Outcome {
                        elapsed: started.elapsed(),
                        status: 0,
                        retries,
                        failed: Some(match e {
                            Attempt::Refused => "closed unread on every attempt".into(),
                            Attempt::Failed(why) => why,
                        }),
                    };
                }
            }
        }
    }

    async fn attempt(&self, pod: &Pod) -> Result<u16, Attempt> {
        let failed =
            |stage: &'static str| move |e: std::io::Error| Attempt::Failed(format!("{stage}: {e}"));
        let socket = TcpSocket::new_v4().map_err(failed("socket"))?;
        socket
            .bind(SocketAddr::new(node_addr(pod.node), 0))
            .map_err(failed("bind"))?;
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(|_| Attempt::Refused)?;
        let _ = stream.set_nodelay(true);
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        // A connection over eks-auth's caps is closed before the handshake completes.
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|_| Attempt::Refused)?;
        let hyper_failed =
            |stage: &'static str| move |e: hyper::Error| Attempt::Failed(format!("{stage}: {e}"));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(hyper_failed("HTTP handshake"))?;
        tokio::spawn(conn);
        let req = Request::post(&self.path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CALLER_TOKEN_HEADER, self.callers[pod.node].clone())
            .body(Full::new(pod.body.clone()))
            .map_err(|e| Attempt::Failed(format!("request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(hyper_failed("after the TLS handshake"))?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(hyper_failed("reading the answer"))?;
        Ok(status)
    }
}

enum Attempt {
    /// Closed before the handshake completed (a connection cap): retry.
    Refused,
    Failed(String),
}

async fn run(
    args: &EksAuthArgs,
    bin: &std::path::Path,
    issuer: &FakeIssuer,
    sts: &RunningSts,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let associations = dir.path().join("associations.yaml");
    std::fs::write(&associations, associations_yaml(args))?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, issuer.kubeconfig())?;
    let ca = TestCa::named("pod-identity-bench eks-auth CA");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    ca.issue().write(&cert, &key);
    let opts = EksAuthOptions {
        cluster_name: CLUSTER.into(),
        issuer: issuer.url(),
        associations,
        sts_endpoint: Some(sts.url().to_string()),
        cluster_arn: Some(format!("arn:aws:eks:us-west-2:{ACCOUNT}:cluster/{CLUSTER}")),
        extra: vec!["--token-review".into()],
        env: vec![("KUBECONFIG".into(), kubeconfig.display().to_string())],
        tls: Some(EksAuthTls {
            cert,
            key,
            ca_pem: ca.pem(),
        }),
        ..EksAuthOptions::default()
    };
    let load = procfs::load_average();
    let eks_auth = EksAuthProcess::start(bin, &opts).await;
    let pid = eks_auth.child.id().context("eks-auth has no pid")?;
    let idle = procfs::Memory::of(pid)?;
    let callers = (0..args.nodes)
        .map(|n| {
            let token = TokenBuilder::agent()
                .issuer(issuer.url())
                .node(node_name(n))
                .pod(format!("eks-pod-identity-agent-{n}"))
                .sign();
            HeaderValue::from_str(&token).context("caller token header")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = Arc::new(Client {
        addr: eks_auth.api_addr,
        host: HeaderValue::from_str(&eks_auth.api_addr.to_string())?,
        path: request_path(CLUSTER),
        tls: TlsConnector::from(ca.client_config()),
        callers,
    });

    // Warm-up: keys, connections to STS and the API server, each caller's review cached.
    let warm = mint_pods(args, &issuer.url(), "warm", args.warmup.max(args.nodes));
    let mut audits_seen = 0;
    for chunk in warm.chunks(10) {
        let outcomes = futures::future::join_all(chunk.iter().map(|p| client.exchange(p))).await;
        for o in &outcomes {
            if o.status != 200 {
                bail!(
                    "warm-up exchange answered {} (0: no answer); eks-auth stderr: {}",
                    o.status,
                    eks_auth.stderr.text()
                );
            }
        }
        audits_seen += outcomes.len();
    }
    eks_auth.wait_for_audit_lines(audits_seen).await;

    let batches: Vec<Vec<Pod>> = (0..args.rounds)
        .map(|r| mint_pods(args, &issuer.url(), &format!("round{r}"), args.pods))
        .collect();
    let mut rounds = Vec::new();
    for pods in batches {
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        let cpu_before = procfs::process_cpu(pid)?;
        let reviews_before = issuer.reviews();
        let issued_before = issued(sts);
        let barrier = Arc::new(Barrier::new(pods.len()));
        let started = Instant::now();
        let tasks: Vec<_> = pods
            .into_iter()
            .map(|pod| {
                let (client, barrier) = (client.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    client.exchange(&pod).await
                })
            })
            .collect();
        let mut round = Round::default();
        let mut answered = 0;
        for t in tasks {
            let o = t.await?;
            round.retries += o.retries;
            if o.status == 200 {
                round.client_ns.push(crate::stats::nanos(o.elapsed));
            } else {
                round.errors += 1;
                let kind = o.failed.unwrap_or_else(|| format!("HTTP {}", o.status));
                *round.error_kinds.entry(kind).or_default() += 1;
            }
            if o.status != 0 {
                answered += 1;
            }
        }
        round.wall = started.elapsed();
        let lines = eks_auth.wait_for_audit_lines(audits_seen + answered).await;
        round.cpu = procfs::process_cpu(pid)?.saturating_sub(cpu_before);
        round.reviews = issuer.reviews() - reviews_before;
        round.issued = issued(sts) - issued_before;
        round.audits = lines[audits_seen..].to_vec();
        audits_seen = lines.len();
        rounds.push(round);
    }
    let peak = procfs::Memory::of(pid)?;
    report(args, load, &idle, &peak, &rounds);
    Ok(())
}

/// Credentials the STS has issued so far.
fn issued(sts: &RunningSts) -> usize {
    sts.events()
        .iter()
        .filter(|e| matches!(e.outcome, StsOutcome::Issued { .. }))
        .count()
}

/// p50, p90, p99 and max of nanosecond values, in ms.
fn row(name: &str, mut ns: Vec<u64>) -> (String, f64) {
    ns.sort_unstable();
    let ms = |p: f64| percentile(&ns, p) as f64 / 1e6;
    let p99 = ms(99.0);
    (
        format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ns.len(),
            ms(50.0),
            ms(90.0),
            p99,
            ms(100.0)
        ),
        p99,
    )
}

fn audit_ns(audits: &[ExchangeAuditLine], f: impl Fn(f64, f64, f64) -> f64) -> Vec<u64> {
    audits
        .iter()
        .filter(|a| a.answer.http_status.is_none_or(|s| s == 200))
        .map(|a| {
            let get = |ms: Option<f64>| ms.unwrap_or(0.0);
            let ms = f(get(a.answer.latency_ms), get(a.sts_ms), get(a.review_ms)).max(0.0);
            (ms * 1e6) as u64
        })
        .collect()
}

fn report(
    args: &EksAuthArgs,
    load: Option<f64>,
    idle: &procfs::Memory,
    peak: &procfs::Memory,
    rounds: &[Round],
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "eks-auth: {} rounds of {} distinct pods at once (each its own new TLS connection), {} nodes (one caller token and source address each), {} service accounts in {} namespaces; --token-review against the test issuer, the lab's STS; {cores} CPUs; 1-minute load before: {}.\n",
        rounds.len(),
        args.pods,
        args.nodes,
        args.service_accounts,
        args.namespaces,
        load.map_or("?".into(), |l| format!("{l:.2}"))
    );
    println!(
        "| round | answered 200 | errors | retries (closed unread) | wall ms | TokenReviews | STS issued | audit lines, 200 | eks-auth CPU ms/exchange | client p50 ms | client p99 ms | own (latency−sts) p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        let mut c = r.client_ns.clone();
        c.sort_unstable();
        let mut own = audit_ns(&r.audits, |l, s, _| l - s);
        own.sort_unstable();
        let n = r.client_ns.len().max(1);
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} |",
            i + 1,
            r.client_ns.len(),
            r.errors,
            r.retries,
            r.wall.as_secs_f64() * 1e3,
            r.reviews,
            r.issued,
            audit_ns(&r.audits, |l, _, _| l).len(),
            r.cpu.as_secs_f64() * 1e3 / n as f64,
            percentile(&c, 50.0) as f64 / 1e6,
            percentile(&c, 99.0) as f64 / 1e6,
            percentile(&own, 99.0) as f64 / 1e6,
        );
    }
    let all = |f: &dyn Fn(&Round) -> Vec<u64>| rounds.iter().flat_map(f).collect::<Vec<u64>>();
    println!("\nAll rounds together:\n");
    println!("| latency | exchanges | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let rows = [
        row(
            "client: connect + TLS handshake + exchange",
            all(&|r| r.client_ns.clone()),
        ),
        row(
            "eks-auth `latency_ms`",
            all(&|r| audit_ns(&r.audits, |l, _, _| l)),
        ),
        row(
            "of which STS (`sts_ms`)",
            all(&|r| audit_ns(&r.audits, |_, s, _| s)),
        ),
        row(
            "of which TokenReview (`review_ms`)",
            all(&|r| audit_ns(&r.audits, |_, _, v| v)),
        ),
        row(
            "**own: latency − sts**",
            all(&|r| audit_ns(&r.audits, |l, s, _| l - s)),
        ),
        row(
            "own without TokenReview: latency − sts − review",
            all(&|r| audit_ns(&r.audits, |l, s, v| l - s - v)),
        ),
    ];
    for (line, _) in &rows {
        println!("{line}");
    }
    let errors: usize = rounds.iter().map(|r| r.errors).sum();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for r in rounds {
        for (k, n) in &r.error_kinds {
            *kinds.entry(k.as_str()).or_default() += n;
        }
    }
    if !kinds.is_empty() {
        let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        println!("\nErrors: {}.", list.join("; "));
    }
    let exchanges: usize = rounds.iter().map(|r| r.client_ns.len()).sum();
    let cpu: Duration = rounds.iter().map(|r| r.cpu).sum();
    println!(
        "\neks-auth CPU: {:.2} ms per exchange over all rounds (user + system, all threads). RSS: {:.1} MiB idle after start, peak (VmHWM) {:.1} MiB.\n",
        cpu.as_secs_f64() * 1e3 / exchanges.max(1) as f64,
        idle.rss_kib as f64 / 1024.0,
        peak.hwm_kib as f64 / 1024.0
    );
    let own_p99 = rows[4].1;
    let pass = own_p99 < TARGET_P99_MS && errors == 0;
    println!("| target | measured | result |\n|---|---|---|");
    println!(
        "| own p99 (latency − sts) < {TARGET_P99_MS} ms at {} pods at once, every pod answered 200 | {own_p99:.2} ms, {errors} error(s) | {} |",
        args.pods,
        if pass { "PASS" } else { "FAIL" }
    );
}
