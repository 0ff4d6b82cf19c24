//! Load generator: AdmissionReviews per second and latency percentiles over TLS against the real
//! `pod-identity-webhook serve` binary, with N keep-alive connections each sending one review at
//! a time (as the API server does).
//!
//! ```sh
//! cargo build --release -p pod-identity-webhook --bin pod-identity-webhook --example bench
//! target/release/examples/bench --connections 32 --seconds 10
//! ```
//!
//! Flags: `--connections N` (32), `--seconds S` (10), `--warmup S` (2), `--log-level L` (info, the
//! server's production default; it logs one line per injected pod), `--binary PATH` (default: the
//! `pod-identity-webhook` next to this example's directory), `--fixture NAME` (inject-basic),
//! `--rate R` (open loop at R reviews/s; default closed loop), `--requests N` (send exactly N
//! reviews, closed loop, no warmup and no time limit: for counting CPU per review under a
//! profiler, e.g. `--binary` a script that runs the server under `valgrind --tool=callgrind`).
//!
//! The server is stopped with SIGTERM, so it drains and exits normally (and a profiler wrapping
//! it writes its output).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

struct Args {
    connections: usize,
    seconds: u64,
    warmup: u64,
    log_level: String,
    binary: PathBuf,
    fixture: String,
    /// Aggregate reviews per second, spread evenly over the connections (open loop); 0 sends
    /// the next review as soon as the previous answer arrives (closed loop, peak throughput).
    rate: f64,
    /// Exactly this many reviews over all connections (0: run for `seconds` after `warmup`).
    requests: usize,
}

fn args() -> Args {
    let mut a = Args {
        connections: 32,
        seconds: 10,
        warmup: 2,
        log_level: "info".into(),
        binary: std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("pod-identity-webhook")))
            .unwrap_or_else(|| PathBuf::from("target/release/pod-identity-webhook")),
        fixture: "inject-basic".into(),
        rate: 0.0,
        requests: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = argv[i + 1].clone();
        match argv[i].as_str() {
            "--connections" => a.connections = v.parse().expect("--connections N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds S"),
            "--warmup" => a.warmup = v.parse().expect("--warmup S"),
            "--log-level" => a.log_level = v,
            "--binary" => a.binary = PathBuf::from(v),
            "--fixture" => a.fixture = v,
            "--rate" => a.rate = v.parse().expect("--rate R"),
            "--requests" => a.requests = v.parse().expect("--requests N"),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(args));
}

async fn run(args: Args) {
    // A CA and a serving certificate, as cert-manager would issue them.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, assoc) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("associations.yaml"),
    );
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::copy(fixtures.join("associations.yaml"), &assoc).unwrap();
    let body = Bytes::from(std::fs::read(fixtures.join(format!("{}.json", args.fixture))).unwrap());

    // The server: the release binary, its logs to a file (read back for the addresses).
    let log_path = dir.path().join("webhook.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Command::new(&args.binary)
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
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (build it with --release first)",
                args.binary.display()
            )
        });
    let waited = Instant::now();
    let addr = loop {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the server did not log its address"
        );
        if let Ok(Some(status)) = server.try_wait() {
            panic!("the server exited: {status}");
        }
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["listener"] == "admission").then(|| v["addr"].as_str().unwrap().to_string())
        }) {
            break addr.parse::<std::net::SocketAddr>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
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
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    let connections = args.connections;
    for n in 0..connections {
        // With --requests, this connection's share (None: no limit).
        let mut quota = counted
            .then(|| args.requests / connections + usize::from(n < args.requests % connections));
        let connector = connector.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let tls = connector
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
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
                    .body(Full::new(body.clone()))
                    .unwrap();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                let ok = resp.status() == 200;
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                let took = now.elapsed();
                prev_done = Instant::now();
                if !ok || !bytes.windows(9).any(|w| w == b"JSONPatch") {
                    errors += 1;
                }
                if now >= warm_until {
                    latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            (latencies_us, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = warm_until.elapsed();
    stop(&mut server);
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
}

/// SIGTERM, then wait for the drain (a profiled server takes a while to write its output); kill
/// it if it has not exited after 60 s.
fn stop(server: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(_)) = server.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
}
