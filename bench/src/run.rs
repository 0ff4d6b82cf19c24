//! One benchmark run, phase by phase, on one agent process:
//!
//! 1. mint the tokens; start the fake EKS Auth (its own 1-thread runtime) and the agent; read
//!    RSS idle;
//! 2. fetch `identities` distinct tokens once each (distinct pods), read RSS (the RSS target);
//! 3. pre-warm the hot token, start the ceiling with the body the agent served, then for each
//!    connection count run the ceiling point and the agent point back to back (closed loop);
//!    then both open loop at half the ceiling's peak, and both under `wrk` where installed;
//! 4. make the upstream answer in `upstream_latency_ms` and fire the cold burst for a new token;
//!    count the upstream calls and the agent's cache counters.
//!
//! Progress goes to stderr; the report to stdout.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::StatusCode;
use pod_identity_test_support::{Behavior, FakeEksAuth, TokenBuilder};
use tokio::runtime::Handle;

use crate::agent::{AgentProcess, resolve_binary};
use crate::ceiling::CeilingProcess;
use crate::cli::RunArgs;
use crate::client::{CREDENTIALS_PATH, Target, get_once};
use crate::load::{burst, compare, fetch_each};
use crate::procfs::threads_cpu;
use crate::report::{
    AgentBurstView, BurstReport, HitRow, Machine, MemoryReport, OpenLoopRow, RATIO_CONNECTIONS,
    Results, Settings, checks, load_checks,
};
use crate::wrk;

/// Connections used to fetch the identities (not measured).
const IDENTITY_CONCURRENCY: usize = 16;
/// The pod of the cold burst's token.
const COLD_POD: &str = "bench-cold";
/// Pause before reading RSS, so allocations of the last requests have settled.
const SETTLE: Duration = Duration::from_millis(500);

/// Build the runtimes, run, print the markdown report, write the JSON if asked.
pub fn main(args: RunArgs) -> anyhow::Result<()> {
    let agent_bin = resolve_binary(args.agent.clone())?;
    let (load_rt, fake_rt) = runtimes(args.client_threads)?;
    let results = load_rt.block_on(run(&args, &agent_bin, fake_rt.handle().clone()))?;
    print!("{}", results.markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))?;
        progress(&format!("JSON results written to {}", path.display()));
    }
    Ok(())
}

/// The load generator's runtime (`client_threads` workers) and the fake EKS Auth's, its own so
/// that its timers are not queued behind the load.
pub(crate) fn runtimes(
    client_threads: usize,
) -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()?;
    let fake_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-eks-auth")
        .enable_all()
        .build()?;
    Ok((load_rt, fake_rt))
}

fn progress(msg: &str) {
    eprintln!("pod-identity-bench: {msg}");
}

async fn run(args: &RunArgs, agent_bin: &Path, fake_rt: Handle) -> anyhow::Result<Results> {
    let machine = Machine::detect(agent_bin);
    if let Some(load) = machine.load_average_before.filter(|&l| l > 0.5) {
        progress(&format!(
            "warning: the 1-minute load average is {load:.2}; other work on this machine will skew the numbers"
        ));
    }
    progress(&format!("minting {} tokens", args.identities + 2));
    let identities = mint(args.identities).await?;
    let hot = TokenBuilder::new().pod("bench-hot").sign();
    let cold = TokenBuilder::new().pod(COLD_POD).sign();

    let fake = fake_rt
        .spawn(FakeEksAuth::builder().start())
        .await
        .context("start the fake EKS Auth")?;
    let mut agent = AgentProcess::start(
        agent_bin,
        &fake.url(),
        fake.cluster(),
        args.agent_log_filter.as_deref(),
    )
    .await?;
    progress(&format!(
        "agent pid {} serving on {}",
        agent.pid(),
        agent.credentials_addr
    ));
    tokio::time::sleep(SETTLE).await;
    let idle = agent.memory()?;
    let base = Target::new(agent.credentials_addr, None)?;
    let metrics = Target::new(agent.metrics_addr, None)?;

    // Phase 2: many identities.
    progress(&format!("caching {} identities", identities.len()));
    let identity_failures = fetch_each(&base, &identities, IDENTITY_CONCURRENCY).await?;
    tokio::time::sleep(SETTLE).await;
    let after_identities = agent.memory()?;
    let cache_entries = scrape(&metrics)
        .await
        .ok()
        .and_then(|t| metric(&t, "pod_identity_cache_entries", None));

    // Phase 3: cache hits against the agent and the ceiling.
    let hot_target = base.with_token(&hot)?;
    let (status, body) = get_once(&hot_target, CREDENTIALS_PATH).await?;
    if status != StatusCode::OK {
        bail!(
            "pre-warm answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let ceiling = CeilingProcess::start(&body).await?;
    let ceiling_target = Target::new(ceiling.addr, Some(&hot))?;
    let (status, ceiling_body) = get_once(&ceiling_target, CREDENTIALS_PATH).await?;
    if status != StatusCode::OK || ceiling_body != body {
        bail!("the ceiling does not answer the agent's body ({status})");
    }
    let calls_before = fake.calls();
    let mut rows = Vec::new();
    for &c in &args.connections {
        progress(&format!(
            "cache hit, {c} connection(s): ceiling and agent in {} alternating slices",
            args.rounds
        ));
        let (ceiling_point, agent_point) = compare(
            (&ceiling_target, ceiling.pid()),
            (&hot_target, agent.pid()),
            c,
            args.warmup,
            args.duration,
            args.rounds,
            body.len(),
            None,
        )
        .await?;
        agent.check_alive()?;
        rows.push(HitRow {
            connections: c,
            agent: agent_point,
            ceiling: ceiling_point,
        });
    }
    // Open loop at half the ceiling's closed-loop peak, on the most connections measured.
    let peak = rows
        .iter()
        .map(|r| r.ceiling.requests_per_sec)
        .fold(0.0, f64::max);
    let open_loop = match args.connections.iter().copied().max() {
        Some(connections) if peak > 0.0 => {
            let offered = peak / 2.0;
            progress(&format!(
                "cache hit, open loop: {offered:.0} requests/s on {connections} connections, ceiling and agent"
            ));
            let (ceiling_point, agent_point) = compare(
                (&ceiling_target, ceiling.pid()),
                (&hot_target, agent.pid()),
                connections,
                args.warmup,
                args.duration,
                args.rounds,
                body.len(),
                Some(offered),
            )
            .await?;
            agent.check_alive()?;
            Some(OpenLoopRow {
                offered_per_sec: offered,
                agent: agent_point,
                ceiling: ceiling_point,
            })
        }
        _ => None,
    };
    // The same throughput check with wrk, where it is installed.
    let mut wrk_rows = Vec::new();
    if wrk::available() {
        for c in RATIO_CONNECTIONS
            .into_iter()
            .filter(|c| args.connections.contains(c))
        {
            progress(&format!(
                "cache hit under wrk, {c} connections: ceiling and agent"
            ));
            wrk_rows.push(
                wrk::compare(
                    &ceiling_target,
                    &hot_target,
                    c,
                    args.client_threads,
                    args.duration,
                    args.rounds,
                )
                .await?,
            );
            agent.check_alive()?;
        }
    } else {
        progress("wrk is not installed: its throughput check is left out (apt-get install wrk)");
    }
    let cache_hit_upstream_calls = fake.calls() - calls_before;
    let agent_threads_cpu = threads_cpu(agent.pid())?
        .into_iter()
        .map(|(name, t)| (name, t.as_secs_f64()))
        .collect();
    tokio::time::sleep(SETTLE).await;
    let after_load = agent.memory()?;
    let ceiling_after_load = ceiling.memory().ok();
    ceiling.stop().await?;

    // Phase 4: the cold burst.
    progress(&format!(
        "cold burst: {} requests, upstream answering in {} ms",
        args.burst, args.upstream_latency_ms
    ));
    let latency = Duration::from_millis(args.upstream_latency_ms);
    fake.set_default(Behavior::Delay(latency));
    let before = scrape(&metrics).await.ok();
    let calls_before = fake.calls();
    agent.start_capture();
    let outcome = burst(&base.with_token(&cold)?, args.burst).await?;
    let upstream_calls = fake.calls() - calls_before;
    let upstream_called_after_ms = match (fake.requests().get(calls_before), outcome.released_at) {
        (Some(call), Some(released)) => call
            .at
            .checked_duration_since(released)
            .map(|d| d.as_secs_f64() * 1e3),
        _ => None,
    };
    fake.set_default(Behavior::Succeed);
    // The agent's log writer runs behind its workers: give it a moment to write the burst.
    tokio::time::sleep(SETTLE).await;
    let agent_view = Some(AgentBurstView::from_logs(&agent.stop_capture(), COLD_POD));
    let after = scrape(&metrics).await.ok();
    // How the cache answered the burst's requests (our count; the official
    // `pod_identity_cache_state` counts refreshes as `hit`). A missing counter counts as 0.
    let delta = |outcome: &str| -> Option<u64> {
        let of = |t: &str| {
            metric(t, "pod_identity_cache_requests", Some(("outcome", outcome))).unwrap_or(0)
        };
        let after = after.as_deref()?;
        Some(of(after).saturating_sub(before.as_deref().map_or(0, of)))
    };
    // The agent's own view of the exchange: its upstream latency histogram over the burst.
    let upstream_seen_by_agent_ms = (|| {
        let of = |t: &Option<String>, name: &str| metric_f64(t.as_deref()?, name, None);
        let sum = of(&after, "pod_identity_upstream_latency_seconds_sum")?
            - of(&before, "pod_identity_upstream_latency_seconds_sum").unwrap_or(0.0);
        let count = of(&after, "pod_identity_upstream_latency_seconds_count")?
            - of(&before, "pod_identity_upstream_latency_seconds_count").unwrap_or(0.0);
        (count > 0.0).then(|| sum / count * 1e3)
    })();
    let burst_report = BurstReport {
        upstream_seen_by_agent_ms,
        agent_view,
        upstream_latency_ms: args.upstream_latency_ms,
        upstream_calls,
        upstream_called_after_ms,
        cache_miss: delta("miss"),
        cache_coalesced: delta("coalesced"),
        cache_hit: delta("hit"),
        outcome,
    };
    tokio::time::sleep(SETTLE).await;
    let after_burst = agent.memory()?;
    let agent_log_lines_dropped = scrape(&metrics)
        .await
        .ok()
        .and_then(|t| metric_f64(&t, "pod_identity_log_lines_dropped", None))
        .map(|n| n as u64);
    let agent_log_lines = agent.log_lines();
    let agent_log_bytes = agent.log_bytes();
    agent.stop().await?;
    drop(fake);

    let memory = MemoryReport {
        idle,
        after_identities,
        after_load,
        after_burst,
        cache_entries,
        ceiling_after_load,
    };
    let errors = rows
        .iter()
        .map(|r| r.agent.errors + r.ceiling.errors)
        .sum::<u64>()
        + open_loop
            .as_ref()
            .map_or(0, |o| o.agent.errors + o.ceiling.errors)
        + identity_failures as u64
        + (burst_report.outcome.requests - burst_report.outcome.ok) as u64;
    Ok(Results {
        settings: Settings {
            agent_log_filter: args.agent_log_filter.clone(),
            duration_s: args.duration.as_secs_f64(),
            rounds: args.rounds,
            warmup_s: args.warmup.as_secs_f64(),
            client_threads: args.client_threads,
            identities: args.identities,
            burst: args.burst,
            upstream_latency_ms: args.upstream_latency_ms,
            body_bytes: body.len(),
        },
        checks: [
            checks(
                &rows,
                &memory,
                &burst_report,
                args.identities,
                errors,
                agent_log_lines_dropped,
            ),
            load_checks(open_loop.as_ref(), &wrk_rows),
        ]
        .concat(),
        machine,
        cache_hit: rows,
        open_loop,
        wrk: wrk_rows,
        cache_hit_upstream_calls,
        identity_failures,
        memory,
        burst: burst_report,
        agent_log_lines,
        agent_log_bytes,
        agent_log_lines_dropped,
        agent_threads_cpu,
    })
}

/// `n` tokens of distinct pods (`bench-0000`, ...), signed on two blocking threads.
async fn mint(n: usize) -> anyhow::Result<Vec<String>> {
    let half = n / 2;
    let sign = |range: std::ops::Range<usize>| {
        tokio::task::spawn_blocking(move || {
            range
                .map(|i| TokenBuilder::new().pod(format!("bench-{i:04}")).sign())
                .collect::<Vec<_>>()
        })
    };
    let (a, b) = tokio::join!(sign(0..half), sign(half..n));
    let mut tokens = a?;
    tokens.extend(b?);
    Ok(tokens)
}

/// The agent's `/metrics` text.
pub(crate) async fn scrape(metrics: &Target) -> anyhow::Result<String> {
    let (status, body): (StatusCode, Bytes) = get_once(metrics, "/metrics").await?;
    if status != StatusCode::OK {
        bail!("/metrics answered {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of counter or gauge `name` (with `label="value"` if given) in Prometheus text.
fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<u64> {
    metric_f64(text, name, label).map(|v| v as u64)
}

pub(crate) fn metric_f64(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .find(|l| want.as_deref().is_none_or(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_counters() {
        let text = "# HELP pod_identity_cache_state The state\n\
                    # TYPE pod_identity_cache_state counter\n\
                    pod_identity_cache_state{state=\"coalesced\"} 199\n\
                    pod_identity_cache_state{state=\"miss\"} 2001\n\
                    pod_identity_cache_entries 2000\n\
                    pod_identity_cache_entries_other 7\n";
        assert_eq!(
            metric(text, "pod_identity_cache_state", Some(("state", "miss"))),
            Some(2001)
        );
        assert_eq!(
            metric(
                text,
                "pod_identity_cache_state",
                Some(("state", "coalesced"))
            ),
            Some(199)
        );
        assert_eq!(
            metric(text, "pod_identity_cache_state", Some(("state", "hit"))),
            None
        );
        assert_eq!(metric(text, "pod_identity_cache_entries", None), Some(2000));
        let text = "pod_identity_upstream_latency_seconds_sum 0.25\n";
        assert_eq!(
            metric_f64(text, "pod_identity_upstream_latency_seconds_sum", None),
            Some(0.25)
        );
    }
}
