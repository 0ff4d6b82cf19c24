//! `wrk`, an independent load generator, against the ceiling and the agent, so that the
//! throughput check does not rest on this crate's own client alone (wrk's numbers ran lower:
//! it spends more of the shared cores per request). Optional: without `wrk` on `PATH` the
//! benchmark says so and reports the project client's numbers only.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::client::{CREDENTIALS_PATH, Target};

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WrkRun {
    pub requests_per_sec: f64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

/// The ceiling and the agent under wrk at one connection count, in alternating runs.
#[derive(Debug, Clone, Serialize)]
pub struct WrkRow {
    pub connections: usize,
    pub ceiling_requests_per_sec: f64,
    pub agent_requests_per_sec: f64,
    pub errors: u64,
}

impl WrkRow {
    /// The agent's throughput over the ceiling's.
    pub fn ratio(&self) -> f64 {
        self.agent_requests_per_sec / self.ceiling_requests_per_sec.max(1e-9)
    }
}

/// Whether `wrk` runs here.
pub fn available() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `rounds` alternating wrk runs of `duration / rounds` on each side (ceiling first in even
/// rounds), averaged, with `threads` wrk threads and `connections` connections.
pub async fn compare(
    ceiling: &Target,
    agent: &Target,
    connections: usize,
    threads: usize,
    duration: Duration,
    rounds: u32,
) -> anyhow::Result<WrkRow> {
    let rounds = rounds.max(1);
    let slice = duration / rounds;
    let (mut c, mut a, mut errors) = (0.0, 0.0, 0);
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [ceiling, agent]
        } else {
            [agent, ceiling]
        };
        for target in order {
            let run = run(target, connections, threads, slice).await?;
            errors += run.errors;
            if std::ptr::eq(target, ceiling) {
                c += run.requests_per_sec;
            } else {
                a += run.requests_per_sec;
            }
        }
    }
    Ok(WrkRow {
        connections,
        ceiling_requests_per_sec: c / f64::from(rounds),
        agent_requests_per_sec: a / f64::from(rounds),
        errors,
    })
}

/// One wrk run against `target` (its `Host` and token as headers).
pub async fn run(
    target: &Target,
    connections: usize,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<WrkRun> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.arg(format!("-t{}", threads.clamp(1, connections.max(1))))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}ms", duration.as_millis().max(1)))
        .arg("-H")
        .arg(format!("Host: {}", target.host.to_str()?));
    if let Some(token) = &target.token {
        cmd.arg("-H")
            .arg(format!("Authorization: {}", token.to_str()?));
    }
    cmd.arg(format!("http://{}{CREDENTIALS_PATH}", target.addr))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = cmd.output().await.context("run wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&stdout)
}

/// wrk's summary: `Requests/sec:` and, when any, `Non-2xx or 3xx responses:` and `Socket
/// errors: connect N, read N, write N, timeout N`.
fn parse(text: &str) -> anyhow::Result<WrkRun> {
    let mut requests_per_sec = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().context("Non-2xx")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for part in v.split(',') {
                let n = part.split_whitespace().last().unwrap_or("0");
                errors += n.parse::<u64>().context("Socket errors")?;
            }
        }
    }
    Ok(WrkRun {
        requests_per_sec: requests_per_sec.context("no Requests/sec in wrk's output")?,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrks_summary() {
        let text = "Running 5s test @ http://127.0.0.1:1/v1/credentials
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.55us  100.00us   5.00ms   90.00%
    Req/Sec    38.10k     1.20k   40.00k    70.00%
  379000 requests in 5.00s, 600.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  75800.12
Transfer/sec:    120.00MB
";
        let run = parse(text).unwrap();
        assert!((run.requests_per_sec - 75800.12).abs() < 1e-6);
        assert_eq!(run.errors, 7);
        assert!(parse("Running 5s test").is_err());
    }
}
