//! Slow clients by the thousand, for the resource-bound tests: each holds a connection open with
//! an unfinished request head (or, for a body deadline, a finished head and a trickled body),
//! reconnects as soon as the server closes it, and comes from one of many loopback addresses
//! (`127.0.0.2`, `127.0.0.3`, ...) so per-client caps see many clients. Also the fd limit they
//! need and the RSS of the process they press on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

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
#[derive(Debug)]
pub struct RunningFlood {
    pub stats: Arc<FloodStats>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Flood {
    /// Start every client; returns at once.
    pub fn start(self) -> RunningFlood {
        let stats = Arc::new(FloodStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let flood = Arc::new(self);
        let mut tasks = JoinSet::new();
        for i in 0..flood.connections {
            let source = source_addr(i % flood.sources.max(1));
            let (flood, stats, stop) = (flood.clone(), stats.clone(), stop.clone());
            tasks.spawn(async move {
                // Spread the first connects a little so the accept queue is not the story.
                tokio::time::sleep(Duration::from_micros(300 * i as u64)).await;
                while !stop.load(Ordering::Relaxed) {
                    flood.hold_one(source, &stats).await;
                }
            });
        }
        RunningFlood { stats, stop, tasks }
    }

    /// One connection, held until the server closes it.
    async fn hold_one(&self, source: IpAddr, stats: &FloodStats) {
        let Ok(stream) = connect_from(source, self.target).await else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        let (mut read, mut write) = stream.into_split();
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
            tokio::time::sleep(self.trickle).await;
            write.write_all(b"a").await?;
        }
    }
}

impl RunningFlood {
    /// Close every connection and wait for the clients to end.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
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
