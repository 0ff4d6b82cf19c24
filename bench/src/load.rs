//! The load: a generator of N keep-alive connections, each on its own task, closed loop (each
//! sends its next request as soon as the previous answer is read) or open loop (together at a
//! fixed offered rate), that measures two servers in alternating slices, a fetch of many distinct tokens, and the cold burst (many connections fire
//! one request each at the same instant).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::StatusCode;
use serde::Serialize;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::client::{CREDENTIALS_PATH, Connection, Target};
use crate::procfs::process_cpu;
use crate::stats::{Summary, nanos};

/// One closed-loop point.
#[derive(Debug, Clone, Serialize)]
pub struct LoadPoint {
    pub connections: usize,
    /// Answers completed inside the measured slices, per second of measured slices.
    pub requests_per_sec: f64,
    pub latency: Summary,
    /// Non-200 answers, wrong body lengths and broken connections in the measured slices.
    pub errors: u64,
    /// Every answer read in the measured slices, stragglers after a slice's end included.
    pub sent: u64,
    /// Server process CPU time (user + system, all threads) per answer in the measured slices, µs.
    pub server_cpu_us_per_req: f64,
    /// Server process CPU time over wall time: cores busy on average (at most the machine's).
    pub server_cpu_cores: f64,
}

/// One server in a comparison: its keep-alive connections and what was measured on it so far.
#[derive(Debug)]
pub struct Side {
    target: Target,
    pid: u32,
    conns: Vec<Connection>,
    latencies: Vec<u64>,
    errors: u64,
    answered: u64,
    measured: Duration,
    cpu: Duration,
    wall: Duration,
}

/// What one connection's loop brought back from a slice.
struct Lane {
    conn: Connection,
    latencies: Vec<u64>,
    errors: u64,
    answered: u64,
}

impl Side {
    /// Open `connections` connections to `target`, served by process `pid`.
    pub async fn open(target: &Target, pid: u32, connections: usize) -> anyhow::Result<Self> {
        let mut conns = Vec::with_capacity(connections);
        for _ in 0..connections {
            conns.push(Connection::open(target.addr).await?);
        }
        Ok(Self {
            target: target.clone(),
            pid,
            conns,
            latencies: Vec::new(),
            errors: 0,
            answered: 0,
            measured: Duration::ZERO,
            cpu: Duration::ZERO,
            wall: Duration::ZERO,
        })
    }

    /// Run every connection's loop for `length`. Closed loop (`rate` `None`): each connection
    /// sends its next request as soon as the previous answer is read. Open loop (`Some(r)`): the
    /// connections together send `r` requests per second, each on its own even schedule, and a
    /// request the previous answer made late is timed from when it should have been sent (no
    /// coordinated omission; a request on time is timed from when it was sent, as tokio's timer
    /// may wake it up to 1 ms late, which is the client's delay, not the server's). An answer
    /// counts if it completes inside the slice; its latency ends at the last byte of the body.
    /// Every answer must be 200 with `body_len` bytes, or it is an error. Kept only if
    /// `measure`; the server's CPU time is read before and after.
    pub async fn slice(
        &mut self,
        length: Duration,
        body_len: usize,
        measure: bool,
        rate: Option<f64>,
    ) -> anyhow::Result<()> {
        // A connection the server closed while the other side ran is replaced, not counted.
        for conn in &mut self.conns {
            if conn.is_closed() {
                *conn = Connection::open(self.target.addr).await?;
            }
        }
        let cpu_before = process_cpu(self.pid)?;
        let started = Instant::now();
        let until = started + length;
        let mut tasks = JoinSet::new();
        let lanes_count = self.conns.len();
        // Open loop: each connection's interval, and its first send offset so that together
        // they are evenly spread.
        let interval = rate
            .map(|r| Duration::try_from_secs_f64(lanes_count as f64 / r))
            .transpose()
            .context("open-loop rate")?;
        for (n, mut conn) in self.conns.drain(..).enumerate() {
            let target = self.target.clone();
            let mut next =
                interval.map(|i| started + i.mul_f64(n as f64 / lanes_count.max(1) as f64));
            tasks.spawn(async move {
                let mut lane = Lane {
                    conn: Connection::placeholder(),
                    latencies: Vec::with_capacity(16 * 1024),
                    errors: 0,
                    answered: 0,
                };
                let mut prev_done = started;
                while Instant::now() < until {
                    let sent = match (next.as_mut(), interval) {
                        (Some(at), Some(i)) => {
                            let scheduled = *at;
                            *at += i;
                            if scheduled >= until {
                                break;
                            }
                            tokio::time::sleep_until(scheduled.into()).await;
                            if prev_done > scheduled {
                                scheduled
                            } else {
                                Instant::now()
                            }
                        }
                        _ => Instant::now(),
                    };
                    let outcome = conn.send(target.request(CREDENTIALS_PATH)).await;
                    let done = Instant::now();
                    prev_done = done;
                    lane.answered += 1;
                    let inside = done <= until;
                    match outcome {
                        Ok((StatusCode::OK, body)) if body.len() == body_len => {
                            if inside {
                                lane.latencies.push(nanos(done - sent));
                            }
                        }
                        Ok(_) => lane.errors += u64::from(inside),
                        Err(_) => {
                            // The connection broke: count it; it is replaced before the next slice.
                            lane.errors += 1;
                            break;
                        }
                    }
                }
                lane.conn = conn;
                lane
            });
        }
        let mut lanes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            lanes.push(joined.context("a load task panicked")?);
        }
        let wall = started.elapsed();
        let cpu = process_cpu(self.pid)?.saturating_sub(cpu_before);
        for lane in lanes {
            self.conns.push(lane.conn);
            if measure {
                self.latencies.extend(lane.latencies);
                self.errors += lane.errors;
                self.answered += lane.answered;
            }
        }
        if measure {
            self.measured += length;
            self.cpu += cpu;
            self.wall += wall;
        }
        Ok(())
    }

    /// The measured slices as one point.
    pub fn point(self, connections: usize) -> LoadPoint {
        let latencies = self.latencies;
        LoadPoint {
            connections,
            requests_per_sec: latencies.len() as f64 / self.measured.as_secs_f64().max(1e-9),
            latency: Summary::of(latencies),
            errors: self.errors,
            sent: self.answered,
            server_cpu_us_per_req: self.cpu.as_secs_f64() * 1e6 / self.answered.max(1) as f64,
            server_cpu_cores: self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9),
        }
    }
}

/// Measure the ceiling and the agent at one connection count, closed loop or at an offered
/// `rate` (open loop, see [`Side::slice`]): both warmed up for `warmup`, then `rounds`
/// alternating slices of `duration / rounds` each (ceiling first in even rounds, agent first in
/// odd ones), so that anything else running on the machine weighs on both alike.
/// Returns (ceiling, agent).
#[allow(clippy::too_many_arguments)]
pub async fn compare(
    ceiling: (&Target, u32),
    agent: (&Target, u32),
    connections: usize,
    warmup: Duration,
    duration: Duration,
    rounds: u32,
    body_len: usize,
    rate: Option<f64>,
) -> anyhow::Result<(LoadPoint, LoadPoint)> {
    let rounds = rounds.max(1);
    let mut c = Side::open(ceiling.0, ceiling.1, connections).await?;
    let mut a = Side::open(agent.0, agent.1, connections).await?;
    c.slice(warmup, body_len, false, rate).await?;
    a.slice(warmup, body_len, false, rate).await?;
    let length = duration / rounds;
    for round in 0..rounds {
        if round % 2 == 0 {
            c.slice(length, body_len, true, rate).await?;
            a.slice(length, body_len, true, rate).await?;
        } else {
            a.slice(length, body_len, true, rate).await?;
            c.slice(length, body_len, true, rate).await?;
        }
    }
    Ok((c.point(connections), a.point(connections)))
}

/// Fetch every token once over `concurrency` connections; returns how many were not 200.
pub async fn fetch_each(
    target: &Target,
    tokens: &[String],
    concurrency: usize,
) -> anyhow::Result<usize> {
    let concurrency = concurrency.max(1);
    let mut tasks = JoinSet::new();
    for lane in 0..concurrency {
        let mine: Vec<Target> = tokens
            .iter()
            .skip(lane)
            .step_by(concurrency)
            .map(|t| target.with_token(t))
            .collect::<anyhow::Result<_>>()?;
        let addr = target.addr;
        tasks.spawn(async move {
            let mut conn = Connection::open(addr).await?;
            let mut failed = 0;
            for t in mine {
                let (status, _) = conn.send(t.request(CREDENTIALS_PATH)).await?;
                failed += usize::from(status != StatusCode::OK);
            }
            anyhow::Ok(failed)
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        failed += joined.context("a fetch task panicked")??;
    }
    Ok(failed)
}

/// What the cold burst measured.
#[derive(Debug, Clone, Serialize)]
pub struct BurstOutcome {
    pub requests: usize,
    pub ok: usize,
    /// Per request: from just before it was written to the last byte of its answer.
    pub latency: Summary,
    /// Per request: from the instant the burst's first request was written to the last byte of
    /// this answer (what a pod that arrived first would see).
    pub from_release: Summary,
    /// From the first request written to the last (how "at once" the burst was).
    pub send_spread_ms: f64,
    /// When the first request was written (to place the upstream call in time).
    #[serde(skip)]
    pub released_at: Option<Instant>,
}

/// Open `n` connections, then release one request on each at the same instant.
pub async fn burst(target: &Target, n: usize) -> anyhow::Result<BurstOutcome> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Connection::open(target.addr).await?);
    }
    let barrier = std::sync::Arc::new(Barrier::new(n + 1));
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let target = target.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let req = target.request(CREDENTIALS_PATH);
            barrier.wait().await;
            let sent = Instant::now();
            let outcome = conn.send(req).await;
            let done = Instant::now();
            (sent, done, outcome.map(|(status, _)| status))
        });
    }
    // The last to arrive releases everyone; the burst starts when the first request is written.
    barrier.wait().await;
    let mut timings = Vec::with_capacity(n);
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        let (sent, done, outcome) = joined.context("a burst task panicked")?;
        timings.push((sent, done));
        if matches!(outcome, Ok(StatusCode::OK)) {
            ok += 1;
        }
    }
    let Some(released) = timings.iter().map(|&(sent, _)| sent).min() else {
        bail!("the burst sent nothing");
    };
    let last_sent = timings
        .iter()
        .map(|&(sent, _)| sent)
        .max()
        .unwrap_or(released);
    let latencies: Vec<u64> = timings.iter().map(|&(s, d)| nanos(d - s)).collect();
    let from_release: Vec<u64> = timings.iter().map(|&(_, d)| nanos(d - released)).collect();
    if latencies.len() != n {
        bail!("the burst lost requests: {} of {n}", latencies.len());
    }
    Ok(BurstOutcome {
        requests: n,
        ok,
        latency: Summary::of(latencies),
        from_release: Summary::of(from_release),
        send_spread_ms: (last_sent - released).as_secs_f64() * 1e3,
        released_at: Some(released),
    })
}
