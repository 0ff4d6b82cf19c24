//! Slow clients by the thousand, for the resource-bound tests: each holds a connection open with
//! an unfinished request head (or, for a body deadline, a finished head and a trickled body),
//! reconnects when the server closes it (a client refused at once waits one trickle first), and
//! comes from one of many loopback addresses (`127.0.0.2`, `127.0.0.3`, ...) so per-client caps
//! see many clients, over TLS where the listener serves it. Also the fd limit they need, the RSS
//! of the process they press on, the memory limit its manifest gives it, and the slowest of a
//! well-behaved client's timings.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// What each slow client sends.
#[derive(Debug, Clone)]
pub struct Flood {
    /// Where to.
    pub target: SocketAddr,
    /// Connections held at once.
    pub connections: usize,
    /// Distinct source addresses, `127.0.0.2` upwards; the connections are spread over them.
    pub sources: usize,
    /// Sent at once on connecting: e.g. a request line and part of a head, or a whole head
    /// announcing a body.
    pub prefix: Vec<u8>,
    /// Then this many filler bytes (`a`) at once, to fill the server's buffers...
    pub fill: usize,
    /// ...then one more byte this often, forever.
    pub trickle: Duration,
    /// Speak TLS (a full handshake, then the bytes above inside it) with this client
    /// configuration, the server named by `target`'s address; plain TCP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Counts of what the flood did, read while it runs.
#[derive(Debug, Default)]
pub struct FloodStats {
    /// Connections opened (including reconnections).
    pub opened: AtomicU64,
    /// Connections the server closed (or reset).
    pub closed: AtomicU64,
    /// Connection attempts that failed.
    pub failed: AtomicU64,
}

/// A running flood; dropping it (or [`RunningFlood::stop`]) closes every connection.
///
/// The clients run on a thread and runtime of their own (one core's worth): the well-behaved
/// client a test times runs on the test's runtime, so what it measures is the server under the
/// flood, not its own runtime queued behind two thousand reconnect loops.
#[derive(Debug)]
pub struct RunningFlood {
    pub stats: Arc<FloodStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// Start every client; returns at once.
    pub fn start(self) -> RunningFlood {
        let stats = Arc::new(FloodStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let flood = Arc::new(self);
        let (thread_stats, thread_stop) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("slow-clients".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the flood's runtime");
                runtime.block_on(flood.run(thread_stats, thread_stop));
            })
            .expect("the flood's thread");
        RunningFlood {
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// Every client, until `stop` is set.
    async fn run(self: Arc<Self>, stats: Arc<FloodStats>, stop: Arc<AtomicBool>) {
        let mut tasks = JoinSet::new();
        for i in 0..self.connections {
            let source = source_addr(i % self.sources.max(1));
            let (flood, stats, stop) = (self.clone(), stats.clone(), stop.clone());
            tasks.spawn(async move {
                // Spread the first connects a little so the accept queue is not the story.
                tokio::time::sleep(Duration::from_micros(300 * i as u64)).await;
                while !stop.load(Ordering::Relaxed) {
                    flood.hold_one(source, &stats).await;
                }
            });
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    /// One connection, held until the server closes it. A client the server turned away before
    /// its first trickle (refused at a cap) comes back only after one trickle period, as a
    /// refused client retries: the flood is thousands of slow clients, not a connect-rate
    /// storm. A storm is another attack, met by the kernel's accept queue and SYN cookies; here
    /// it would overflow the listener's accept queue from this process's own core and time the
    /// well-behaved client's 1 s SYN retransmission, not the server.
    async fn hold_one(&self, source: IpAddr, stats: &FloodStats) {
        let started = tokio::time::Instant::now();
        let Ok(stream) = connect_from(source, self.target).await else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        match &self.tls {
            None => self.hold(stream, stats).await,
            Some(tls) => {
                let name = ServerName::IpAddress(self.target.ip().into());
                match TlsConnector::from(tls.clone()).connect(name, stream).await {
                    Ok(stream) => self.hold(stream, stats).await,
                    // Closed unread at a cap, or the handshake timed out: the server ended it.
                    Err(_) => {
                        stats.closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        tokio::time::sleep_until(started + self.trickle).await;
    }

    /// Send on `stream` until the server closes it.
    async fn hold(&self, stream: impl AsyncRead + AsyncWrite, stats: &FloodStats) {
        let (mut read, mut write) = tokio::io::split(stream);
        let mut buf = [0u8; 1024];
        // Whatever the server answers (431, 408, 413 or nothing), the connection ends with its
        // close; then the client comes back.
        let closed = async {
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            _ = self.send(&mut write) => {}
            () = closed => {}
        }
        stats.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// The prefix, the fill, then a byte every `trickle` until the write fails.
    async fn send(&self, write: &mut (impl AsyncWriteExt + Unpin)) -> std::io::Result<()> {
        write.write_all(&self.prefix).await?;
        write.write_all(&vec![b'a'; self.fill]).await?;
        loop {
            // TLS buffers what it is given until a flush.
            write.flush().await?;
            tokio::time::sleep(self.trickle).await;
            write.write_all(b"a").await?;
        }
    }
}

impl RunningFlood {
    /// Close every connection and wait for the clients to end.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for RunningFlood {
    /// The thread ends on its own once told to (a test that panicked does not wait for it).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `i`th flood source: `127.0.0.2`, `127.0.0.3`, ... (all of 127.0.0.0/8 is loopback).
pub fn source_addr(i: usize) -> IpAddr {
    let n = i as u32 + 2;
    IpAddr::V4(Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// A TCP connection to `target` from `source` (port chosen by the kernel).
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Raise this process's soft open-file limit to at least `want` (up to the hard limit). `Err`
/// says why it could not, for a test to skip with.
pub fn raise_fd_limit(want: u64) -> Result<u64, String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return Ok(current);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < want {
        return Err(format!(
            "the open-file limit is {current} (hard {hard}); this test needs {want}"
        ));
    }
    limit.current = Some(want);
    setrlimit(Resource::Nofile, limit).map_err(|e| format!("setrlimit(NOFILE, {want}): {e}"))?;
    Ok(want)
}

/// Held by a flood test for its whole run: the tests of one binary run in parallel, and two
/// floods at once would each measure the other (and one's lowered fd limit would starve the
/// other, see [`with_soft_fd_limit`]).
pub async fn one_flood_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    FLOODS.lock().await
}

/// Skip a flood test (saying why, `true`) when this process cannot hold `want` open files.
pub fn skip_without_fds(want: u64) -> bool {
    match raise_fd_limit(want) {
        Ok(_) => false,
        Err(why) => {
            eprintln!("skipped: {why}");
            true
        }
    }
}

/// Run `f` with this process's soft open-file limit at `soft`, so that the processes it starts
/// begin where a container commonly does (1024) and must raise their own; then put the limit
/// back. Nothing else in the test may need more files meanwhile.
pub async fn with_soft_fd_limit<T>(soft: u64, f: impl Future<Output = T>) -> T {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let saved = getrlimit(Resource::Nofile);
    let mut lowered = saved;
    lowered.current = Some(soft.min(saved.current.unwrap_or(u64::MAX)));
    setrlimit(Resource::Nofile, lowered).expect("lowering the soft open-file limit");
    let out = f.await;
    setrlimit(Resource::Nofile, saved).expect("restoring the soft open-file limit");
    out
}

/// The soft and hard open-file limits of process `pid` (`Max open files` in
/// `/proc/<pid>/limits`; `u64::MAX` for unlimited).
pub fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit for {pid}: {limits:?}"));
    let mut values = line
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    (values.next().unwrap(), values.next().unwrap())
}

/// `resources.limits.memory` of container `container` in the manifest at `path`, in bytes.
pub fn manifest_memory_limit(path: &Path, container: &str) -> u64 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let spec = &manifest["spec"]["template"]["spec"];
    let quantity = ["containers", "initContainers"]
        .iter()
        .filter_map(|list| spec[*list].as_sequence())
        .flatten()
        .find(|c| c["name"].as_str() == Some(container))
        .and_then(|c| c["resources"]["limits"]["memory"].as_str())
        .unwrap_or_else(|| panic!("{}: no memory limit for {container}", path.display()));
    memory_bytes(quantity)
}

/// A Kubernetes memory quantity in binary units (`96Mi`, `1Gi`), in bytes.
fn memory_bytes(quantity: &str) -> u64 {
    let units = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| Some((quantity.strip_suffix(suffix)?, *unit)))
        .unwrap_or_else(|| panic!("memory quantity {quantity:?} is not in Ki, Mi or Gi"));
    number.parse::<u64>().expect("a whole number") * unit
}

/// Run `sample` `n` times, `every` apart, each timed (ms), on a thread and runtime of their own,
/// so that a flood's thousands of tasks in the test's runtime do not delay the well-behaved
/// client being timed: what is measured is the server, not this process's scheduler.
pub async fn timed_samples<F, Fut>(n: usize, every: Duration, mut sample: F) -> Vec<f64>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the timed client");
        runtime.block_on(async {
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n {
                let started = std::time::Instant::now();
                sample().await;
                ms.push(started.elapsed().as_secs_f64() * 1e3);
                tokio::time::sleep(every).await;
            }
            ms
        })
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The slowest of `ms`, asserted under `budget`: `what` names the samples in the message.
pub fn assert_slowest_under(budget: Duration, ms: &[f64], what: &str) -> f64 {
    assert!(!ms.is_empty(), "no {what} timed");
    let slowest = ms.iter().copied().fold(0.0, f64::max);
    assert!(
        slowest < budget.as_secs_f64() * 1e3,
        "a {what} took {slowest:.0} ms, over {budget:?}: {ms:?}"
    );
    slowest
}

/// VmRSS of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The largest VmRSS of `pid` seen every 50 ms until the returned sampler is stopped.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { peak, stop, task }
    }

    /// The peak so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stop sampling; the peak.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.peak();
        let _ = self.task.await;
        peak.max(self.peak.load(Ordering::Relaxed))
    }
}

/// Bytes as MiB with one decimal, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_in_binary_units() {
        assert_eq!(memory_bytes("96Mi"), 96 << 20);
        assert_eq!(memory_bytes("1Gi"), 1 << 30);
        assert_eq!(memory_bytes("512Ki"), 512 << 10);
    }

    #[test]
    fn the_manifests_limits_are_found_by_container() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let agent = deploy.join("agent/daemonset.yaml");
        assert_eq!(
            manifest_memory_limit(&agent, "eks-pod-identity-agent"),
            96 << 20
        );
        assert_eq!(
            manifest_memory_limit(&deploy.join("eks-auth/deployment.yaml"), "eks-auth"),
            256 << 20
        );
        assert_eq!(
            manifest_memory_limit(&deploy.join("webhook/deployment.yaml"), "webhook"),
            128 << 20
        );
    }

    #[test]
    fn this_process_reads_its_own_open_file_limits() {
        let (soft, hard) = open_file_limits(std::process::id());
        assert!(soft <= hard && soft > 0, "{soft} {hard}");
    }
}
