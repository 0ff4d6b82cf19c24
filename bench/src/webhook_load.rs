//! `pod-identity-bench webhook`: AdmissionReviews per second and latency percentiles over TLS
//! against the real `pod-identity-webhook serve` binary, with `--connections` keep-alive
//! connections each sending one review at a time (as the API server does).
//!
//! ```sh
//! cargo build --release -p pod-identity-bench -p pod-identity-webhook
//! target/release/pod-identity-bench webhook --connections 32 --seconds 10               # closed loop: peak
//! target/release/pod-identity-bench webhook --connections 32 --seconds 10 --rate 5000   # open loop at 5,000/s
//! ```
//!
//! The server gets an rcgen CA and serving certificate (as cert-manager would issue them) and the
//! associations of `webhook/tests/fixtures`; every request is the same stored AdmissionReview
//! (`--fixture`, default `inject-basic`: an associated service account, so every answer carries
//! the full patch). `--rate R` runs open loop at R reviews/s spread evenly over the connections,
//! latency counted from the scheduled send time (no coordinated omission); without it, closed
//! loop (peak throughput). `--requests N` sends exactly N reviews, closed loop, no warm-up and no
//! time limit: for counting CPU per review under a profiler, e.g. `--binary` a script that runs
//! the server under `valgrind --tool=callgrind`. Prints one line of `key=value` pairs.
//!
//! The server is stopped with SIGTERM, so it drains and exits normally (and a profiler wrapping
//! it writes its output).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// The webhook's stored AdmissionReviews and associations.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../webhook/tests/fixtures");

#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Keep-alive TLS connections, each sending one review at a time.
    #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub connections: usize,

    /// Measured time, in seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,

    /// Unmeasured warm-up, in seconds.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,

    /// The server's `--log-level` (info is its production default; it logs one line per
    /// injected pod).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// The webhook binary, or a script that runs it (under a profiler, say) [default:
    /// pod-identity-webhook next to this binary, i.e. target/release/pod-identity-webhook].
    #[arg(long)]
    pub binary: Option<PathBuf>,

    /// The AdmissionReview sent: `webhook/tests/fixtures/<NAME>.json`.
    #[arg(long, default_value = "inject-basic")]
    pub fixture: String,

    /// Aggregate reviews per second, spread evenly over the connections (open loop); 0 sends
    /// the next review as soon as the previous answer arrives (closed loop, peak throughput).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Exactly this many reviews over all connections, closed loop, no warm-up and no time
    /// limit (0: run for `--seconds` after `--warmup`).
    #[arg(long, default_value_t = 0)]
    pub requests: usize,
}

pub fn main(args: &WebhookArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locate this binary")?
            .with_file_name("pod-identity-webhook"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(args, &binary))
}

/// The server child: stopped (SIGTERM, then the drain) when the run ends or fails.
struct Server {
    child: Child,
    stopped: bool,
}

impl Server {
    /// SIGTERM, then wait for the drain (a profiled server takes a while to write its output);
    /// kill it if it has not exited after 60 s.
    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(args: &WebhookArgs, binary: &Path) -> anyhow::Result<()> {
    // A CA and a serving certificate, as cert-manager would issue them.
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&leaf_key, &ca)?;
    let dir = tempfile::tempdir()?;
    let (cert, key, assoc) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("associations.yaml"),
    );
    std::fs::write(&cert, leaf.pem())?;
    std::fs::write(&key, leaf_key.serialize_pem())?;
    let fixtures = Path::new(FIXTURES);
    std::fs::copy(fixtures.join("associations.yaml"), &assoc)
        .with_context(|| format!("copy {}/associations.yaml", fixtures.display()))?;
    let fixture = fixtures.join(format!("{}.json", args.fixture));
    let body = Bytes::from(
        std::fs::read(&fixture).with_context(|| format!("read {}", fixture.display()))?,
    );

    // The server: the release binary, its logs to a file (read back for the addresses).
    let log_path = dir.path().join("webhook.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(binary)
        .args([
            "serve",
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--associations")
        .arg(&assoc)
        .args(["--log-level", &args.log_level])
        // The "listening" lines are info; keep them whatever the level.
        .env(
            "POD_IDENTITY_WEBHOOK_LOG",
            format!("{},pod_identity_webhook::app=info", args.log_level),
        )
        .stdout(Stdio::from(log))
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p pod-identity-webhook` or pass --binary)",
                binary.display()
            )
        })?;
    let mut server = Server {
        child,
        stopped: false,
    };
    let waited = Instant::now();
    let addr = loop {
        if waited.elapsed() >= Duration::from_secs(60) {
            bail!("the server did not log its address");
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("the server exited: {status}");
        }
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["listener"] == "admission").then(|| v["addr"].as_str().map(str::to_string))?
        }) {
            break addr
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("the server's address {addr:?}"))?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));

    let counted = args.requests > 0;
    let start = Instant::now();
    let warm_until = if counted {
        start
    } else {
        start + Duration::from_secs(args.warmup)
    };
    let stop_at = if counted {
        start + Duration::from_secs(24 * 3600)
    } else {
        warm_until + Duration::from_secs(args.seconds)
    };
    let mut tasks = Vec::new();
    let interval = if args.rate > 0.0 {
        Some(
            Duration::try_from_secs_f64(args.connections as f64 / args.rate)
                .with_context(|| format!("--rate {}", args.rate))?,
        )
    } else {
        None
    };
    let connections = args.connections;
    for n in 0..connections {
        // With --requests, this connection's share (None: no limit).
        let mut quota = counted
            .then(|| args.requests / connections + usize::from(n < args.requests % connections));
        let connector = connector.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(ServerName::try_from("127.0.0.1")?, tcp)
                .await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            let mut latencies_us: Vec<u32> = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            // Open loop: each connection sends on its own schedule, offset so the aggregate is even.
            let mut prev_done = Instant::now();
            let mut next =
                interval.map(|i| Instant::now() + i.mul_f64(n as f64 / connections as f64));
            loop {
                if let (Some(at), Some(i)) = (next.as_mut(), interval) {
                    tokio::time::sleep_until((*at).into()).await;
                    *at += i;
                }
                // Open loop: latency counts from the scheduled send time when the previous answer
                // made this send late (no coordinated omission), else from the actual send time
                // (tokio's timer wakes up to 1 ms late; that delay is the client's, not the server's).
                let woke = Instant::now();
                let now = match next.zip(interval) {
                    Some((at, i)) if prev_done > at - i => at - i,
                    _ => woke,
                };
                if now >= stop_at || quota == Some(0) {
                    break;
                }
                if let Some(q) = quota.as_mut() {
                    *q -= 1;
                }
                let req = http::Request::post("/mutate")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let ok = resp.status() == 200;
                let bytes = resp.into_body().collect().await?.to_bytes();
                let took = now.elapsed();
                prev_done = Instant::now();
                if !ok || !bytes.windows(9).any(|w| w == b"JSONPatch") {
                    errors += 1;
                }
                if now >= warm_until {
                    latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            anyhow::Ok((latencies_us, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t
            .await
            .map_err(|e| anyhow!("a connection's task failed: {e}"))?
            .context("a connection failed")?;
        all.extend(l);
        errors += e;
    }
    let elapsed = warm_until.elapsed();
    server.stop();
    if all.is_empty() {
        bail!("no review was measured (--seconds 0?)");
    }
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p).ceil() as usize).saturating_sub(1);
        f64::from(all[i.min(all.len() - 1)]) / 1000.0
    };
    println!(
        "mode={} connections={} seconds={} reviews={} errors={} reviews_per_sec={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} server_log_level={}",
        if args.rate > 0.0 {
            format!("open-loop@{}/s", args.rate)
        } else {
            "closed-loop".to_string()
        },
        args.connections,
        if counted {
            elapsed.as_secs()
        } else {
            args.seconds
        },
        all.len(),
        errors,
        all.len() as f64
            / if counted {
                elapsed.as_secs_f64()
            } else {
                args.seconds as f64
            },
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        args.log_level
    );
    Ok(())
}
