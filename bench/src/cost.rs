//! `pod-identity-bench cost`: what one cache hit costs the agent, counted rather than timed, so
//! that two builds can be compared on a machine others are using.
//!
//! The agent is started as in the benchmark (production JSON logging), `identities` distinct
//! tokens are cached, one hot token is pre-warmed and `warmup` hits are sent. Then the counters
//! start, exactly `requests` cache hits are sent over `connections` keep-alive connections, and the
//! counters stop:
//!
//! - `--tool callgrind` runs the agent under `valgrind --tool=callgrind`, zeroes its counters
//!   (`callgrind_control -z`) before the hits and dumps them (`callgrind_control -d`) after:
//!   user-space instructions per hit, all threads, deterministic whatever else the machine runs.
//!   The dump stays in `--out` for `callgrind_annotate`. Kernel work (system calls, wake-ups) is
//!   not in it.
//! - `--tool perf` runs the agent natively under `perf stat -p` for the hits: CPU time (task
//!   clock), system calls and context switches per hit. CPU time still moves with the machine's
//!   load; the counts do not, much.
//!
//! Both also give the agent's CPU time per thread over the hits from `/proc`. `--misses` counts
//! requests for tokens the agent has not seen instead, each one exchanged with the fake EKS Auth. `--ceiling` then
//! counts the ceiling server the same way, answering the agent's body to the same hits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use http::StatusCode;
use pod_identity_test_support::{FakeEksAuth, TokenBuilder};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::agent::{AgentProcess, resolve_binary};
use crate::ceiling::CeilingProcess;
use crate::client::{CREDENTIALS_PATH, Connection, Target, get_once};
use crate::load::fetch_each;
use crate::procfs::threads_cpu;
use crate::run::{metric_f64, scrape};

/// How the hits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// Instructions per hit under valgrind's callgrind (slow, deterministic, user space only).
    Callgrind,
    /// CPU time, system calls and context switches per hit under `perf stat` (native speed).
    Perf,
}

#[derive(Debug, Clone, Args)]
pub struct CostArgs {
    /// The agent binary [default: pod-identity-agent next to this binary].
    #[arg(long)]
    pub agent: Option<PathBuf>,

    #[arg(long, value_enum, default_value_t = Tool::Perf)]
    pub tool: Tool,

    /// Cache hits counted.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,

    /// Keep-alive connections the hits are spread over.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,

    /// Distinct identities cached before the hits (so lookups search a populated cache).
    #[arg(long, default_value_t = 200)]
    pub identities: usize,

    /// Hits sent before counting starts.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: usize,

    /// Diagnostics only: the agent's `POD_IDENTITY_AGENT_LOG` (unset: JSON at info, as in
    /// production).
    #[arg(long)]
    pub agent_log_filter: Option<String>,

    /// Also count the ceiling (`pod-identity-bench ceiling` with the agent's body) the same way.
    #[arg(long, conflicts_with = "misses")]
    pub ceiling: bool,

    /// Count cache misses instead of hits: `--requests` tokens the agent has not seen, each
    /// exchanged once with the fake EKS Auth (which answers at once).
    #[arg(long)]
    pub misses: bool,

    /// Where callgrind's dump is written.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// What the counted hits cost.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// `agent` or `ceiling`.
    pub server: &'static str,
    pub tool: Tool,
    pub requests: usize,
    /// Whether the requests were cache misses (each a new token) rather than hits.
    pub misses: bool,
    pub connections: usize,
    pub errors: usize,
    /// callgrind: instructions executed by every thread of the agent during the hits.
    pub instructions: Option<u64>,
    /// Of which in SHA-256's compression function. valgrind hides the CPU's SHA extensions, so
    /// under callgrind the token's digest runs the portable code, far slower than natively.
    pub sha256_instructions: Option<u64>,
    /// perf: task clock (CPU time of every thread), system calls and context switches.
    pub task_clock_ms: Option<f64>,
    pub syscalls: Option<u64>,
    pub context_switches: Option<u64>,
    /// `/proc` CPU time per thread name over the hits (10 ms resolution), seconds.
    pub threads_cpu_s: Vec<(String, f64)>,
    /// Misses: the mean EKS Auth call as the agent timed it (`pod_identity_upstream_latency`).
    pub upstream_ms: Option<f64>,
    pub wall_s: f64,
    /// The callgrind dump, for `callgrind_annotate`.
    pub dump: Option<PathBuf>,
}

impl Cost {
    fn per(&self, v: f64) -> f64 {
        v / self.requests.max(1) as f64
    }

    /// A short plain-text report, one figure per line.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}: {} cache {} over {} connections in {:.2} s ({} errors)\n",
            self.server,
            self.requests,
            if self.misses { "misses" } else { "hits" },
            self.connections,
            self.wall_s,
            self.errors
        );
        if let Some(ir) = self.instructions {
            let sha = self.sha256_instructions.unwrap_or(0);
            out += &format!(
                "instructions: {ir} total, {:.0} per request; without SHA-256 compression {:.0} per request\n",
                self.per(ir as f64),
                self.per(ir.saturating_sub(sha) as f64)
            );
        }
        if let Some(ms) = self.task_clock_ms {
            out += &format!(
                "task clock: {ms:.1} ms total, {:.2} µs per request\n",
                self.per(ms * 1e3)
            );
        }
        if let Some(n) = self.syscalls {
            out += &format!("system calls: {n}, {:.2} per request\n", self.per(n as f64));
        }
        if let Some(n) = self.context_switches {
            out += &format!(
                "context switches: {n}, {:.3} per request\n",
                self.per(n as f64)
            );
        }
        if let Some(ms) = self.upstream_ms {
            out += &format!("upstream call as the agent timed it: {ms:.3} ms on average\n");
        }
        for (name, s) in &self.threads_cpu_s {
            out += &format!("thread {name}: {s:.2} s CPU\n");
        }
        if let Some(dump) = &self.dump {
            out += &format!("callgrind dump: {}\n", dump.display());
        }
        out
    }
}

/// Run `pod-identity-bench cost`; prints the report.
pub fn main(args: &CostArgs) -> anyhow::Result<()> {
    let agent_bin = resolve_binary(args.agent.clone())?;
    let (load_rt, fake_rt) = crate::run::runtimes(2)?;
    let costs = load_rt.block_on(async {
        let fake = fake_rt
            .spawn(FakeEksAuth::builder().start())
            .await
            .context("start the fake EKS Auth")?;
        measure(args, &agent_bin, &fake).await
    })?;
    for cost in &costs {
        print!("{}", cost.text());
    }
    println!("{}", serde_json::to_string(&costs)?);
    Ok(())
}

async fn measure(
    args: &CostArgs,
    agent_bin: &Path,
    fake: &FakeEksAuth,
) -> anyhow::Result<Vec<Cost>> {
    let out = std::path::absolute(&args.out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let (wrapper, timeout) = match args.tool {
        Tool::Callgrind => (
            vec![
                "valgrind".to_string(),
                "--tool=callgrind".into(),
                format!(
                    "--callgrind-out-file={}.%p",
                    out.join("callgrind.out").display()
                ),
            ],
            Duration::from_secs(120),
        ),
        Tool::Perf => (Vec::new(), crate::agent::START_TIMEOUT),
    };
    let tokens: Vec<String> = (0..args.identities)
        .map(|i| TokenBuilder::new().pod(format!("cost-{i:04}")).sign())
        .collect();
    let hot = TokenBuilder::new().pod("cost-hot").sign();
    let fresh: Vec<String> = if args.misses {
        (0..args.requests)
            .map(|i| TokenBuilder::new().pod(format!("cost-miss-{i:05}")).sign())
            .collect()
    } else {
        Vec::new()
    };
    let agent = AgentProcess::start_wrapped(
        agent_bin,
        &fake.url(),
        fake.cluster(),
        args.agent_log_filter.as_deref(),
        &wrapper,
        timeout,
    )
    .await?;
    let base = Target::new(agent.credentials_addr, None)?;
    let failed = fetch_each(&base, &tokens, 16).await?;
    if failed > 0 {
        bail!("{failed} of {} identities were not served", tokens.len());
    }
    let hot = base.with_token(&hot)?;
    let (status, body) = get_once(&hot, CREDENTIALS_PATH).await?;
    if status != StatusCode::OK {
        bail!("pre-warm answered {status}");
    }
    let metrics = Target::new(agent.metrics_addr, None)?;
    let before = scrape(&metrics).await?;
    let mut costs = vec![count(args, "agent", agent.pid(), &hot, &fresh, body.len(), &out).await?];
    if args.misses {
        let after = scrape(&metrics).await?;
        let delta = |name: &str| {
            Some(metric_f64(&after, name, None)? - metric_f64(&before, name, None).unwrap_or(0.0))
        };
        costs[0].upstream_ms = delta("pod_identity_upstream_latency_seconds_sum")
            .zip(delta("pod_identity_upstream_latency_seconds_count"))
            .filter(|&(_, n)| n > 0.0)
            .map(|(sum, n)| sum / n * 1e3);
    }
    agent.stop().await?;
    if args.ceiling {
        let ceiling = CeilingProcess::start_wrapped(&body, &wrapper, timeout).await?;
        let target = Target::new(ceiling.addr, Some(&hot_token(&hot)?))?;
        costs.push(
            count(
                args,
                "ceiling",
                ceiling.pid(),
                &target,
                &[],
                body.len(),
                &out,
            )
            .await?,
        );
        ceiling.stop().await?;
    }
    Ok(costs)
}

/// The token a target sends.
fn hot_token(target: &Target) -> anyhow::Result<String> {
    let token = target.token.as_ref().context("no token")?;
    Ok(token.to_str()?.to_string())
}

/// Warm `server` (process `pid`) up, then count `args.requests` hits on it, or, if `fresh` holds
/// tokens, one request for each (misses).
async fn count(
    args: &CostArgs,
    server: &'static str,
    pid: u32,
    target: &Target,
    fresh: &[String],
    body_len: usize,
    out: &Path,
) -> anyhow::Result<Cost> {
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        conns.push(Connection::open(target.addr).await?);
    }
    let (conns, _) = hits(conns, target, args.warmup, body_len).await?;
    let perf = match args.tool {
        Tool::Callgrind => {
            control(&["-z", &pid.to_string()])?;
            None
        }
        Tool::Perf => Some(PerfStat::attach(pid).await?),
    };
    let threads_before = threads_cpu(pid)?;
    let started = Instant::now();
    let errors = if fresh.is_empty() {
        hits(conns, target, args.requests, body_len).await?.1
    } else {
        fetch_each(target, fresh, args.connections).await?
    };
    let wall = started.elapsed();
    let threads_after = threads_cpu(pid)?;
    let mut cost = Cost {
        server,
        tool: args.tool,
        requests: args.requests,
        misses: !fresh.is_empty(),
        connections: args.connections,
        errors,
        instructions: None,
        sha256_instructions: None,
        task_clock_ms: None,
        syscalls: None,
        context_switches: None,
        threads_cpu_s: threads_after
            .iter()
            .map(|(name, t)| {
                let before = threads_before.get(name).copied().unwrap_or_default();
                (name.clone(), t.saturating_sub(before).as_secs_f64())
            })
            .filter(|(_, s)| *s > 0.0)
            .collect(),
        wall_s: wall.as_secs_f64(),
        upstream_ms: None,
        dump: None,
    };
    match perf {
        Some(perf) => {
            let counts = perf.stop().await?;
            cost.task_clock_ms = counts.task_clock_ms;
            cost.syscalls = counts.syscalls;
            cost.context_switches = counts.context_switches;
        }
        None => {
            control(&["-d", &pid.to_string()])?;
            let dump = newest_dump(out, &format!("callgrind.out.{pid}"))?;
            let text = std::fs::read_to_string(&dump)
                .with_context(|| format!("read {}", dump.display()))?;
            cost.instructions = Some(
                callgrind_total(&text)
                    .with_context(|| format!("no summary line in {}", dump.display()))?,
            );
            cost.sha256_instructions = Some(self_cost(&text, "sha2::sha256::compress256"));
            cost.dump = Some(dump);
        }
    }
    Ok(cost)
}

/// Send `n` hits spread over `conns` (closed loop); returns the connections and the errors (an
/// answer that is not 200 with `body_len` bytes).
async fn hits(
    conns: Vec<Connection>,
    target: &Target,
    n: usize,
    body_len: usize,
) -> anyhow::Result<(Vec<Connection>, usize)> {
    let lanes = conns.len().max(1);
    let mut tasks = JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let mine = n / lanes + usize::from(i < n % lanes);
        let target = target.clone();
        tasks.spawn(async move {
            let mut errors = 0;
            for _ in 0..mine {
                match conn.send(target.request(CREDENTIALS_PATH)).await {
                    Ok((StatusCode::OK, body)) if body.len() == body_len => {}
                    Ok(_) => errors += 1,
                    Err(e) => return Err(e),
                }
            }
            anyhow::Ok((conn, errors))
        });
    }
    let mut conns = Vec::with_capacity(lanes);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (conn, e) = joined.context("a hit task panicked")??;
        conns.push(conn);
        errors += e;
    }
    Ok((conns, errors))
}

fn control(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("run callgrind_control")?;
    if !status.success() {
        bail!("callgrind_control {args:?} failed: {status}");
    }
    Ok(())
}

/// The most recently written file in `dir` whose name starts with `prefix`.
fn newest_dump(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, entry.path()));
        }
    }
    best.map(|(_, p)| p)
        .with_context(|| format!("no {prefix}* in {}", dir.display()))
}

/// Instructions counted in function `name` itself (not its callees) in a callgrind dump. Cost
/// lines follow `fn=` lines; a name is given once as `(id) name` (in a `fn=` or a `cfn=` line)
/// and then as `(id)` alone.
fn self_cost(dump: &str, name: &str) -> u64 {
    let mut id: Option<String> = None;
    let mut inside = false;
    let mut in_call = false;
    let mut total = 0;
    for line in dump.lines() {
        let (function, callee) = match (line.strip_prefix("fn="), line.strip_prefix("cfn=")) {
            (Some(f), _) => (Some(f), false),
            (_, Some(f)) => (Some(f), true),
            _ => (None, false),
        };
        if let Some(f) = function {
            let (fid, fname) = match f.split_once(' ') {
                Some((fid, fname)) => (fid, Some(fname)),
                None => (f, None),
            };
            if id.is_none() && fname == Some(name) {
                id = Some(fid.to_string());
            }
            if !callee {
                inside = id.as_deref() == Some(fid);
                in_call = false;
            }
        } else if line.starts_with("calls=") {
            // The next cost line is the callee's inclusive cost, not this function's.
            in_call = true;
        } else if inside && line.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-') {
            if in_call {
                in_call = false;
                continue;
            }
            total += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// The total instruction count of a callgrind dump (`summary:` or `totals:` line).
fn callgrind_total(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `perf stat` attached to a running process.
struct PerfStat {
    child: tokio::process::Child,
}

#[derive(Debug, Default)]
struct PerfCounts {
    task_clock_ms: Option<f64>,
    syscalls: Option<u64>,
    context_switches: Option<u64>,
}

impl PerfStat {
    async fn attach(pid: u32) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "task-clock,context-switches,raw_syscalls:sys_enter",
                "-p",
                &pid.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("run perf stat")?;
        // perf prints nothing once attached; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Self { child })
    }

    async fn stop(self) -> anyhow::Result<PerfCounts> {
        let pid = self.child.id().context("perf already exited")?;
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("cannot interrupt perf stat");
        }
        let output = self.child.wait_with_output().await?;
        let text = String::from_utf8_lossy(&output.stderr);
        let counts = parse_perf(&text);
        if counts.task_clock_ms.is_none() {
            bail!("perf stat printed no task clock: {text}");
        }
        Ok(counts)
    }
}

/// `perf stat -x ,` lines: `value,unit,event,...`.
fn parse_perf(text: &str) -> PerfCounts {
    let mut counts = PerfCounts::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        match *event {
            "task-clock" => counts.task_clock_ms = value.parse().ok(),
            "context-switches" => counts.context_switches = value.parse().ok(),
            "raw_syscalls:sys_enter" => counts.syscalls = value.parse().ok(),
            _ => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrind_and_perf_totals() {
        let dump = "version: 1\ncmd: agent\nevents: Ir\nsummary: 123456\ntotals: 123456\n";
        assert_eq!(callgrind_total(dump), Some(123456));
        assert_eq!(callgrind_total("events: Ir\n"), None);
        let dump = "fn=(2) other\n0 5\ncfn=(1) sha2::sha256::compress256\ncalls=1 0\n0 300\n\
                    fn=(1)\n0 100\n+1 20\ncfn=(2)\ncalls=2 0\n0 1000\nfn=(2)\n0 9\n\
                    fn=(1)\n0 7\n";
        assert_eq!(self_cost(dump, "sha2::sha256::compress256"), 127);
        let perf = "612.34,msec,task-clock,612340000,100.00,0.9,CPUs utilized\n\
                    4021,,context-switches,612340000,100.00,6.566,K/sec\n\
                    80123,,raw_syscalls:sys_enter,612340000,100.00,,\n";
        let c = parse_perf(perf);
        assert_eq!(c.task_clock_ms, Some(612.34));
        assert_eq!(c.context_switches, Some(4021));
        assert_eq!(c.syscalls, Some(80123));
    }
}
