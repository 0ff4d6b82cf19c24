//! The results of one run: the markdown table printed to stdout (and pasted into
//! `docs/benchmarks.md`), the JSON form, and the check against the targets.

use std::fmt::Write as _;

use pod_identity_contracts::log_schema::{AgentRequestLine, CREDENTIALS_SERVED};
use serde::Serialize;

use crate::load::{BurstOutcome, LoadPoint};
use crate::procfs::Memory;
use crate::stats::Summary;
use crate::wrk::WrkRow;

/// Throughput the agent must reach, as a fraction of the ceiling's (at 16 and 64 connections).
/// The closed loop's p99 ratio is reported in the tables but is no target: at saturation on two
/// shared cores it measured the machine more than the agent (docs/benchmarks-log.md).
pub const MIN_THROUGHPUT_RATIO: f64 = 0.85;
/// Connection counts the throughput ratio applies to.
pub const RATIO_CONNECTIONS: [usize; 2] = [16, 64];
/// At an offered rate of half the ceiling's peak (open loop, latency from the intended send
/// time), the agent's p99 may be at most this many times the ceiling's at the same rate.
pub const MAX_OPEN_LOOP_P99_RATIO: f64 = 1.5;
/// RSS bound with the identities cached.
pub const MAX_RSS_KIB: u64 = 18 * 1024;
/// The cold burst's p50 may exceed the upstream's latency by at most this.
pub const MAX_BURST_OVERHEAD_MS: f64 = 10.0;

/// Where and when the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub agent_binary: String,
    /// 1-minute load average when the run started: other work skews every number.
    pub load_average_before: Option<f64>,
}

impl Machine {
    pub fn detect(agent_binary: &std::path::Path) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            date: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
                .unwrap_or_else(|| "unknown".into()),
            mem_total_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            agent_binary: agent_binary.display().to_string(),
            load_average_before: crate::procfs::load_average(),
        }
    }
}

/// The knobs of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Set only in diagnostic runs: the agent's log filter instead of production logging.
    pub agent_log_filter: Option<String>,
    pub duration_s: f64,
    pub rounds: u32,
    pub warmup_s: f64,
    pub client_threads: usize,
    pub identities: usize,
    pub burst: usize,
    pub upstream_latency_ms: u64,
    pub body_bytes: usize,
}

/// One connection count, agent and ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct HitRow {
    pub connections: usize,
    pub agent: LoadPoint,
    pub ceiling: LoadPoint,
}

impl HitRow {
    pub fn throughput_ratio(&self) -> f64 {
        ratio(self.agent.requests_per_sec, self.ceiling.requests_per_sec)
    }

    pub fn p99_ratio(&self) -> f64 {
        ratio(self.agent.latency.p99_ms, self.ceiling.latency.p99_ms)
    }
}

/// Both servers at the same offered rate, open loop.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopRow {
    /// Requests per second offered to each: half the ceiling's closed-loop peak.
    pub offered_per_sec: f64,
    pub agent: LoadPoint,
    pub ceiling: LoadPoint,
}

impl OpenLoopRow {
    pub fn p99_ratio(&self) -> f64 {
        ratio(self.agent.latency.p99_ms, self.ceiling.latency.p99_ms)
    }
}

/// The agent's memory at each stage.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub idle: Memory,
    pub after_identities: Memory,
    pub after_load: Memory,
    pub after_burst: Memory,
    /// `pod_identity_cache_entries` when `after_identities` was read.
    pub cache_entries: Option<u64>,
    pub ceiling_after_load: Option<Memory>,
}

/// The cold burst and what the upstream and the agent's counters saw.
#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    #[serde(flatten)]
    pub outcome: BurstOutcome,
    pub upstream_latency_ms: u64,
    pub upstream_calls: usize,
    /// From the burst's first request to the upstream receiving the exchange.
    pub upstream_called_after_ms: Option<f64>,
    /// Mean of the agent's `pod_identity_upstream_latency_seconds` over the burst.
    pub upstream_seen_by_agent_ms: Option<f64>,
    /// The burst as the agent's own request log tells it.
    pub agent_view: Option<AgentBurstView>,
    /// `pod_identity_cache_requests` deltas over the burst.
    pub cache_miss: Option<u64>,
    pub cache_coalesced: Option<u64>,
    pub cache_hit: Option<u64>,
}

/// The burst from the agent's `credentials served` lines: its own `latency_ms` (from reading the
/// request to handing hyper the response) and when each line was written.
#[derive(Debug, Clone, Serialize)]
pub struct AgentBurstView {
    /// Lines found for the burst's token.
    pub served: usize,
    /// `latency_ms` of the request that made the upstream call (`cache = miss`).
    pub miss_latency_ms: Option<f64>,
    /// `latency_ms` of the requests that waited for it (`cache = coalesced`), in ms.
    pub coalesced_latency: Summary,
    /// From the first to the last `credentials served` line: how long answering every waiter took.
    pub fanout_ms: Option<f64>,
}

impl AgentBurstView {
    /// Read the burst's lines (those whose `k8s.pod` is `pod`) out of the agent's request lines.
    pub fn from_logs(lines: &[AgentRequestLine], pod: &str) -> Self {
        let served: Vec<&AgentRequestLine> = lines
            .iter()
            .filter(|l| {
                l.head.message.as_deref() == Some(CREDENTIALS_SERVED)
                    && l.pod.k8s_pod.as_deref() == Some(pod)
            })
            .collect();
        let latency = |l: &AgentRequestLine| l.answer.latency_ms;
        let cache = |l: &AgentRequestLine, outcome| l.cache.as_deref() == Some(outcome);
        let miss_latency_ms = served
            .iter()
            .find(|l| cache(l, "miss"))
            .and_then(|l| latency(l));
        let coalesced = served
            .iter()
            .filter(|l| cache(l, "coalesced"))
            .filter_map(|l| latency(l))
            .map(|ms| (ms * 1e6) as u64)
            .collect();
        let times: Vec<jiff::Timestamp> = served
            .iter()
            .filter_map(|l| l.head.timestamp.as_deref()?.parse().ok())
            .collect();
        let fanout_ms = match (times.iter().min(), times.iter().max()) {
            (Some(first), Some(last)) => Some(last.duration_since(*first).as_secs_f64() * 1e3),
            _ => None,
        };
        Self {
            served: served.len(),
            miss_latency_ms,
            coalesced_latency: Summary::of(coalesced),
            fanout_ms,
        }
    }
}

/// One target: what was measured and whether it met the bar.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub cache_hit: Vec<HitRow>,
    /// The open-loop point (none when no closed-loop point ran first).
    pub open_loop: Option<OpenLoopRow>,
    /// wrk's cache-hit points (none without `wrk` on `PATH`).
    pub wrk: Vec<WrkRow>,
    /// Upstream calls made while the cache-hit points ran (should be 0).
    pub cache_hit_upstream_calls: usize,
    /// Identity fetches that did not answer 200.
    pub identity_failures: usize,
    pub memory: MemoryReport,
    pub burst: BurstReport,
    /// Lines the agent logged over the whole run (one per request at info, plus startup).
    pub agent_log_lines: u64,
    /// Bytes of those lines (after the startup lines).
    pub agent_log_bytes: u64,
    /// `pod_identity_log_lines_dropped` at the end of the run.
    pub agent_log_lines_dropped: Option<u64>,
    /// CPU seconds of the agent's threads by name, from start to the end of the cache-hit points.
    pub agent_threads_cpu: std::collections::BTreeMap<String, f64>,
    pub checks: Vec<Check>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory_cells(m: &Memory) -> String {
    format!(
        "{:.1} | {:.1} | {:.1} | {:.1}",
        mib(m.rss_kib),
        mib(m.anon_kib),
        mib(m.file_kib),
        mib(m.hwm_kib)
    )
}

/// Compare the results with the targets.
pub fn checks(
    rows: &[HitRow],
    memory: &MemoryReport,
    burst: &BurstReport,
    identities: usize,
    errors: u64,
    log_lines_dropped: Option<u64>,
) -> Vec<Check> {
    let mut out = Vec::new();
    for c in RATIO_CONNECTIONS {
        let Some(row) = rows.iter().find(|r| r.connections == c) else {
            continue;
        };
        let t = row.throughput_ratio();
        out.push(Check {
            target: format!(
                "cache-hit req/s ≥ {:.0}% of the ceiling at {c} connections",
                MIN_THROUGHPUT_RATIO * 100.0
            ),
            measured: format!(
                "{:.0}% ({:.0} vs {:.0} req/s)",
                t * 100.0,
                row.agent.requests_per_sec,
                row.ceiling.requests_per_sec
            ),
            pass: t >= MIN_THROUGHPUT_RATIO,
        });
    }
    out.push(Check {
        target: format!(
            "RSS < {} MiB with {identities} identities cached",
            MAX_RSS_KIB / 1024
        ),
        measured: format!("{:.1} MiB", mib(memory.after_identities.rss_kib)),
        pass: memory.after_identities.rss_kib < MAX_RSS_KIB,
    });
    let limit = burst.upstream_latency_ms as f64 + MAX_BURST_OVERHEAD_MS;
    out.push(Check {
        target: format!(
            "cold-burst p50 ≤ upstream latency + {MAX_BURST_OVERHEAD_MS:.0} ms ({limit:.0} ms)"
        ),
        measured: format!(
            "{:.1} ms (+{:.1} ms)",
            burst.outcome.latency.p50_ms,
            burst.outcome.latency.p50_ms - burst.upstream_latency_ms as f64
        ),
        pass: burst.outcome.latency.p50_ms <= limit,
    });
    out.push(Check {
        target: "cold burst makes exactly 1 upstream call".into(),
        measured: burst.upstream_calls.to_string(),
        pass: burst.upstream_calls == 1,
    });
    out.push(Check {
        target: "every answer is 200 with the expected body".into(),
        measured: format!("{errors} error(s)"),
        pass: errors == 0,
    });
    // A writer that drops lines under load makes every other number look better than it is.
    out.push(Check {
        target: "every request logged: no log line dropped".into(),
        measured: log_lines_dropped.map_or_else(
            || "unknown (`pod_identity_log_lines_dropped` not read)".into(),
            |n| format!("{n} dropped"),
        ),
        pass: log_lines_dropped == Some(0),
    });
    out
}

/// The targets on latency at a steady rate and on throughput under an independent client.
pub fn load_checks(open_loop: Option<&OpenLoopRow>, wrk: &[WrkRow]) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(o) = open_loop {
        let r = o.p99_ratio();
        out.push(Check {
            target: format!(
                "open loop at half the ceiling's peak ({:.0}/s): agent p99 ≤ {MAX_OPEN_LOOP_P99_RATIO}× the ceiling's",
                o.offered_per_sec
            ),
            measured: format!(
                "{r:.2}× ({:.3} vs {:.3} ms)",
                o.agent.latency.p99_ms, o.ceiling.latency.p99_ms
            ),
            pass: r <= MAX_OPEN_LOOP_P99_RATIO,
        });
    }
    for row in wrk {
        let t = row.ratio();
        out.push(Check {
            target: format!(
                "wrk: cache-hit req/s ≥ {:.0}% of the ceiling at {} connections",
                MIN_THROUGHPUT_RATIO * 100.0,
                row.connections
            ),
            measured: format!(
                "{:.0}% ({:.0} vs {:.0} req/s, {} error(s))",
                t * 100.0,
                row.agent_requests_per_sec,
                row.ceiling_requests_per_sec,
                row.errors
            ),
            pass: t >= MIN_THROUGHPUT_RATIO && row.errors == 0,
        });
    }
    out
}

impl Results {
    /// The report as markdown: settings, the three tables, the target check.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let st = &self.settings;
        let _ = writeln!(s, "## pod-identity-agent benchmark, {}\n", m.date);
        let _ = writeln!(
            s,
            "Machine: {} × {} ({} CPUs), {} MiB RAM, Linux {}. Load generator: {} tokio workers, \
             {} s warm-up + {} s measured per point and server, in {} alternating slices. Agent: `{}`, JSON logs {} \
             ({} lines, {:.1} MB, logged over the run; {} dropped). Response body: {} bytes. \
             1-minute load average before the run: {}.\n",
            m.nproc,
            m.cpu_model,
            m.nproc,
            m.mem_total_mib,
            m.kernel,
            st.client_threads,
            st.warmup_s,
            st.duration_s,
            st.rounds,
            m.agent_binary,
            st.agent_log_filter.as_ref().map_or_else(
                || "at info, as in production".to_string(),
                |f| format!("filtered by `{f}` (DIAGNOSTIC RUN, not production logging)")
            ),
            self.agent_log_lines,
            self.agent_log_bytes as f64 / 1e6,
            self.agent_log_lines_dropped
                .map_or_else(|| "?".into(), |n| n.to_string()),
            st.body_bytes,
            m.load_average_before
                .map_or_else(|| "?".into(), |l| format!("{l:.2}"))
        );

        let _ = writeln!(
            s,
            "### Cache hit: same token, pre-warmed, {} other identities cached\n",
            st.identities
        );
        let _ = writeln!(
            s,
            "| connections | agent req/s | ceiling req/s | agent / ceiling | agent p50 ms | agent p99 ms | ceiling p50 ms | ceiling p99 ms | p99 agent / ceiling | agent CPU µs/req | ceiling CPU µs/req | errors |"
        );
        let _ = writeln!(
            s,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.cache_hit {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.0}% | {:.3} | {:.3} | {:.3} | {:.3} | {:.2}× | {:.1} ({:.2} cores) | {:.1} ({:.2} cores) | {} |",
                r.connections,
                r.agent.requests_per_sec,
                r.ceiling.requests_per_sec,
                r.throughput_ratio() * 100.0,
                r.agent.latency.p50_ms,
                r.agent.latency.p99_ms,
                r.ceiling.latency.p50_ms,
                r.ceiling.latency.p99_ms,
                r.p99_ratio(),
                r.agent.server_cpu_us_per_req,
                r.agent.server_cpu_cores,
                r.ceiling.server_cpu_us_per_req,
                r.ceiling.server_cpu_cores,
                r.agent.errors + r.ceiling.errors
            );
        }
        let _ = writeln!(
            s,
            "\nUpstream calls during the cache-hit points: {}.\n",
            self.cache_hit_upstream_calls
        );

        if let Some(o) = &self.open_loop {
            let _ = writeln!(
                s,
                "### Open loop: {:.0} requests/s offered to each, on {} connections, latency from the intended send time\n",
                o.offered_per_sec, o.agent.connections
            );
            let _ = writeln!(
                s,
                "| server | answered/s | p50 ms | p99 ms | max ms | CPU µs/req | errors |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
            for (name, p) in [("agent", &o.agent), ("ceiling", &o.ceiling)] {
                let _ = writeln!(
                    s,
                    "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | {:.1} | {} |",
                    p.requests_per_sec,
                    p.latency.p50_ms,
                    p.latency.p99_ms,
                    p.latency.max_ms,
                    p.server_cpu_us_per_req,
                    p.errors
                );
            }
            let _ = writeln!(s);
        }
        if !self.wrk.is_empty() {
            let _ = writeln!(s, "### Cache hit under wrk (an independent client)\n");
            let _ = writeln!(
                s,
                "| connections | agent req/s | ceiling req/s | agent / ceiling | errors |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
            for r in &self.wrk {
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {:.0} | {:.0}% | {} |",
                    r.connections,
                    r.agent_requests_per_sec,
                    r.ceiling_requests_per_sec,
                    r.ratio() * 100.0,
                    r.errors
                );
            }
            let _ = writeln!(s);
        }

        if !self.agent_threads_cpu.is_empty() {
            let total: f64 = self.agent_threads_cpu.values().sum();
            let by: Vec<String> = self
                .agent_threads_cpu
                .iter()
                .filter(|(_, secs)| **secs > 0.0)
                .map(|(name, secs)| format!("`{name}` {secs:.1} s ({:.0}%)", secs / total * 100.0))
                .collect();
            let _ = writeln!(
                s,
                "Agent CPU by thread, start to end of the cache-hit points: {}.\n",
                by.join(", ")
            );
        }
        let mem = &self.memory;
        let _ = writeln!(s, "### Agent memory (`/proc/<pid>/status`)\n");
        let _ = writeln!(
            s,
            "| when | VmRSS MiB | of which anonymous | of which file-backed | VmHWM MiB |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        let entries = mem
            .cache_entries
            .map_or_else(String::new, |n| format!(", cache_entries = {n}"));
        for (when, m) in [
            ("idle, right after start".to_string(), mem.idle),
            (
                format!(
                    "after {} distinct identities fetched{entries}",
                    st.identities
                ),
                mem.after_identities,
            ),
            ("after the cache-hit load".to_string(), mem.after_load),
            ("after the cold burst".to_string(), mem.after_burst),
        ] {
            let _ = writeln!(s, "| {when} | {} |", memory_cells(&m));
        }
        if let Some(c) = mem.ceiling_after_load {
            let _ = writeln!(
                s,
                "| (ceiling server, after the load) | {} |",
                memory_cells(&c)
            );
        }

        let b = &self.burst;
        let o = &b.outcome;
        let _ = writeln!(
            s,
            "\n### Cold burst: {} concurrent requests on {} connections for one new token, upstream answering in {} ms\n",
            o.requests, o.requests, b.upstream_latency_ms
        );
        let _ = writeln!(
            s,
            "| answers 200 | upstream calls | p50 ms | p99 ms | max ms | p50 from first send ms | p99 from first send ms | send spread ms | upstream called after ms | upstream call as the agent saw it ms | miss / coalesced / hit |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        let opt = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| v.to_string());
        let _ = writeln!(
            s,
            "| {}/{} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} / {} / {} |",
            o.ok,
            o.requests,
            b.upstream_calls,
            o.latency.p50_ms,
            o.latency.p99_ms,
            o.latency.max_ms,
            o.from_release.p50_ms,
            o.from_release.p99_ms,
            o.send_spread_ms,
            b.upstream_called_after_ms
                .map_or_else(|| "?".into(), |v| format!("{v:.1}")),
            b.upstream_seen_by_agent_ms
                .map_or_else(|| "?".into(), |v| format!("{v:.1}")),
            opt(b.cache_miss),
            opt(b.cache_coalesced),
            opt(b.cache_hit)
        );

        if let Some(v) = &b.agent_view {
            let _ = writeln!(
                s,
                "\nThe agent's own log of the burst ({} lines): the request that called upstream took {} ms; \
                 the coalesced ones p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (from reading the request to \
                 handing over the response); first to last answer logged: {} ms.",
                v.served,
                v.miss_latency_ms
                    .map_or_else(|| "?".into(), |ms| format!("{ms:.1}")),
                v.coalesced_latency.p50_ms,
                v.coalesced_latency.p99_ms,
                v.coalesced_latency.max_ms,
                v.fanout_ms
                    .map_or_else(|| "?".into(), |ms| format!("{ms:.1}"))
            );
        }

        let _ = writeln!(s, "\n### Targets\n");
        let _ = writeln!(s, "| target | measured | result |");
        let _ = writeln!(s, "|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                c.target,
                c.measured,
                if c.pass { "PASS" } else { "MISS" }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use pod_identity_contracts::log_schema::{Answer, Head, Pod};

    use super::*;

    fn point(c: usize, rps: f64, p99: f64) -> LoadPoint {
        LoadPoint {
            connections: c,
            requests_per_sec: rps,
            latency: Summary {
                count: 1,
                p50_ms: p99 / 2.0,
                p99_ms: p99,
                max_ms: p99,
                mean_ms: p99 / 2.0,
            },
            errors: 0,
            sent: 1,
            server_cpu_us_per_req: 10.0,
            server_cpu_cores: 1.0,
        }
    }

    fn memory(rss_kib: u64) -> MemoryReport {
        let m = Memory {
            rss_kib,
            hwm_kib: rss_kib,
            anon_kib: rss_kib / 2,
            file_kib: rss_kib / 2,
        };
        MemoryReport {
            idle: m,
            after_identities: m,
            after_load: m,
            after_burst: m,
            cache_entries: Some(2000),
            ceiling_after_load: None,
        }
    }

    fn burst(p50: f64, calls: usize) -> BurstReport {
        BurstReport {
            outcome: BurstOutcome {
                requests: 200,
                ok: 200,
                latency: Summary {
                    count: 200,
                    p50_ms: p50,
                    p99_ms: p50,
                    max_ms: p50,
                    mean_ms: p50,
                },
                from_release: Summary::default(),
                send_spread_ms: 1.0,
                released_at: None,
            },
            upstream_latency_ms: 100,
            upstream_calls: calls,
            upstream_called_after_ms: Some(1.0),
            upstream_seen_by_agent_ms: Some(101.0),
            agent_view: None,
            cache_miss: Some(1),
            cache_coalesced: Some(199),
            cache_hit: Some(0),
        }
    }

    #[test]
    fn targets_pass_and_miss_at_their_bounds() {
        let rows = vec![
            HitRow {
                connections: 1,
                agent: point(1, 1.0, 100.0),
                ceiling: point(1, 100.0, 1.0),
            },
            HitRow {
                connections: 16,
                agent: point(16, 85.0, 3.0),
                ceiling: point(16, 100.0, 1.0),
            },
            HitRow {
                connections: 64,
                agent: point(64, 84.0, 1.0),
                ceiling: point(64, 100.0, 1.0),
            },
        ];
        let checks = checks(
            &rows,
            &memory(18 * 1024 - 1),
            &burst(110.0, 1),
            2000,
            0,
            Some(0),
        );
        let passed: Vec<bool> = checks.iter().map(|c| c.pass).collect();
        // 16: 85% passes (its p99, 3× the ceiling's, is no target); 64: 84% misses; 1 connection
        // is not checked.
        assert_eq!(passed, [true, false, true, true, true, true, true]);

        let checks = checks_of_failures();
        assert!(checks.iter().all(|c| !c.pass), "{checks:?}");
    }

    #[test]
    fn load_targets_pass_and_miss_at_their_bounds() {
        let open = |agent_p99: f64| OpenLoopRow {
            offered_per_sec: 50.0,
            agent: point(64, 50.0, agent_p99),
            ceiling: point(64, 50.0, 1.0),
        };
        let wrk = |agent: f64, errors: u64| WrkRow {
            connections: 16,
            agent_requests_per_sec: agent,
            ceiling_requests_per_sec: 100.0,
            errors,
        };
        let passed = |o: f64, w: &[WrkRow]| -> Vec<bool> {
            load_checks(Some(&open(o)), w)
                .iter()
                .map(|c| c.pass)
                .collect()
        };
        assert_eq!(passed(1.5, &[wrk(85.0, 0)]), [true, true]);
        assert_eq!(passed(1.51, &[wrk(84.9, 0)]), [false, false]);
        assert_eq!(
            passed(1.0, &[wrk(95.0, 1)]),
            [true, false],
            "an error fails it"
        );
        assert!(load_checks(None, &[]).is_empty());
    }

    fn checks_of_failures() -> Vec<Check> {
        checks(&[], &memory(18 * 1024), &burst(110.1, 2), 2000, 3, Some(1))
    }

    #[test]
    fn reads_the_burst_from_the_agent_log() {
        let line = |cache: &str, pod: &str, ms: f64, ts: &str| AgentRequestLine {
            head: Head {
                timestamp: Some(ts.into()),
                message: Some(CREDENTIALS_SERVED.into()),
                ..Head::default()
            },
            answer: Answer {
                latency_ms: Some(ms),
                ..Answer::default()
            },
            cache: Some(cache.into()),
            pod: Pod {
                k8s_pod: Some(pod.into()),
                ..Pod::default()
            },
            ..AgentRequestLine::default()
        };
        let lines = vec![
            line("miss", "cold", 104.0, "2026-01-01T00:00:00.100000Z"),
            line("coalesced", "cold", 103.0, "2026-01-01T00:00:00.101000Z"),
            line("coalesced", "cold", 105.0, "2026-01-01T00:00:00.106000Z"),
            line("hit", "other", 0.1, "2026-01-01T00:00:00.500000Z"),
            AgentRequestLine {
                head: Head {
                    message: Some("listening".into()),
                    ..Head::default()
                },
                ..AgentRequestLine::default()
            },
        ];
        let v = AgentBurstView::from_logs(&lines, "cold");
        assert_eq!(v.served, 3);
        assert_eq!(v.miss_latency_ms, Some(104.0));
        assert_eq!(v.coalesced_latency.count, 2);
        assert_eq!(v.coalesced_latency.max_ms, 105.0);
        assert!((v.fanout_ms.unwrap() - 6.0).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn markdown_has_every_section() {
        let rows = vec![HitRow {
            connections: 16,
            agent: point(16, 90.0, 1.0),
            ceiling: point(16, 100.0, 1.0),
        }];
        let mem = memory(10 * 1024);
        let b = burst(105.0, 1);
        let results = Results {
            machine: Machine::detect(std::path::Path::new("agent")),
            settings: Settings {
                agent_log_filter: None,
                duration_s: 5.0,
                rounds: 5,
                warmup_s: 1.0,
                client_threads: 2,
                identities: 2000,
                burst: 200,
                upstream_latency_ms: 100,
                body_bytes: 400,
            },
            checks: checks(&rows, &mem, &b, 2000, 0, Some(0)),
            cache_hit: rows,
            open_loop: Some(OpenLoopRow {
                offered_per_sec: 50.0,
                agent: point(64, 50.0, 1.2),
                ceiling: point(64, 50.0, 1.0),
            }),
            wrk: vec![WrkRow {
                connections: 16,
                agent_requests_per_sec: 88.0,
                ceiling_requests_per_sec: 100.0,
                errors: 0,
            }],
            cache_hit_upstream_calls: 0,
            identity_failures: 0,
            memory: mem,
            burst: b,
            agent_log_lines: 10,
            agent_log_bytes: 6000,
            agent_log_lines_dropped: Some(0),
            agent_threads_cpu: [("tokio-runtime-w".to_string(), 1.0)].into(),
        };
        let md = results.markdown();
        for needle in [
            "### Cache hit",
            "| 16 | 90 | 100 | 90% |",
            "### Agent memory",
            "### Cold burst",
            "| 200/200 | 1 |",
            "### Open loop: 50 requests/s",
            "### Cache hit under wrk",
            "| 16 | 88 | 100 | 88% | 0 |",
            "### Targets",
            "| PASS |",
        ] {
            assert!(md.contains(needle), "{needle} missing in\n{md}");
        }
        assert!(!md.contains("MISS"), "{md}");
        serde_json::to_string(&results).unwrap();
    }
}
