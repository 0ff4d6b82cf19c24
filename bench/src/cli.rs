//! The command line: the benchmark's knobs (defaults are the issue's figures), the hidden
//! `ceiling` subcommand the benchmark runs as its own child process, `cost`, which counts what
//! one cache hit costs the agent, and the eks-auth (`eks-auth`, `eks-auth-verify`) and webhook
//! (`webhook`, `webhook-cost`) benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Benchmark the pod-identity-agent: cache-hit throughput and latency against a bare hyper
/// ceiling, RSS with many cached identities, and a coalesced cold burst.
#[derive(Debug, Parser)]
#[command(name = "pod-identity-bench", version = pod_identity_contracts::version::long(), about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the ceiling: a bare hyper HTTP/1 server that answers every request with the body
    /// read from stdin. The benchmark starts this itself; it prints `listening <addr>` once bound.
    #[command(hide = true)]
    Ceiling(CeilingArgs),
    /// Count what one cache hit costs the agent: instructions under callgrind, or CPU time,
    /// system calls and context switches under `perf stat`. For comparing builds on a busy
    /// machine; prints a short report and one JSON line.
    Cost(crate::cost::CostArgs),
    /// Benchmark eks-auth instead: 1,000 distinct pods arriving at once, each on its own new TLS
    /// connection, with caller verification and TokenReview; eks-auth's own latency (STS
    /// excluded), CPU per exchange and peak RSS. Needs the release eks-auth binary.
    EksAuth(crate::eks_auth::EksAuthArgs),
    /// Time eks-auth's token verification and association lookup per exchange, in process, STS
    /// excluded: 500 distinct tokens against 1,000 associations, RS256 and ES256, one thread.
    EksAuthVerify(crate::eks_auth_verify::EksAuthVerifyArgs),
    /// Benchmark the webhook: AdmissionReviews per second and latency percentiles over TLS
    /// against the real `pod-identity-webhook serve`, closed loop or at a fixed `--rate`. Needs the
    /// release pod-identity-webhook binary.
    Webhook(crate::webhook_load::WebhookArgs),
    /// Run AdmissionReviews through the webhook's handler in process (no HTTP, no TLS), for
    /// counting the CPU one review costs under callgrind.
    WebhookCost(crate::webhook_cost::WebhookCostArgs),
    /// Print the release and the git revision.
    Version,
}

#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The agent binary to measure [default: pod-identity-agent next to this binary, i.e.
    /// target/release/pod-identity-agent].
    #[arg(long)]
    pub agent: Option<PathBuf>,

    /// Measured time per load point and server, in seconds.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,

    /// Slices each point's measured time is cut into, alternating ceiling and agent (keep
    /// `duration / rounds` under the agent's 5 s header-read timeout).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,

    /// Unmeasured warm-up of each server before each load point, in seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,

    /// Connection counts of the cache-hit load points.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    pub connections: Vec<usize>,

    /// Distinct identities (pods) cached before RSS is read.
    #[arg(long, default_value_t = 2000)]
    pub identities: usize,

    /// Concurrent requests, each on its own connection, in the cold burst.
    #[arg(long, default_value_t = 200)]
    pub burst: usize,

    /// How long the fake EKS Auth takes to answer during the cold burst, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub upstream_latency_ms: u64,

    /// Diagnostics only: a log filter for the agent (its `POD_IDENTITY_AGENT_LOG`), e.g.
    /// `info,pod_identity_agent::server=warn` to turn the per-request log off and see what it
    /// costs. Unset (the published numbers): production logging, JSON at info.
    #[arg(long)]
    pub agent_log_filter: Option<String>,

    /// Worker threads of the load generator's tokio runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn parse_secs(raw: &str) -> Result<Duration, String> {
    let secs: f64 = raw
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{raw:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issue_figures() {
        let cli = Cli::try_parse_from(["pod-identity-bench"]).unwrap();
        assert!(cli.command.is_none());
        let run = cli.run;
        assert_eq!(run.connections, [1, 16, 64]);
        assert_eq!(run.identities, 2000);
        assert_eq!(run.burst, 200);
        assert_eq!(run.upstream_latency_ms, 100);
        assert_eq!(run.duration, Duration::from_secs(5));
        assert_eq!(run.client_threads, 2);
    }

    #[test]
    fn ceiling_and_overrides_parse() {
        let cli = Cli::try_parse_from(["pod-identity-bench", "ceiling", "--port", "0"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Ceiling(CeilingArgs { port: 0 }))
        ));
        let cli = Cli::try_parse_from([
            "pod-identity-bench",
            "--connections",
            "4,8",
            "--duration",
            "0.5s",
        ])
        .unwrap();
        assert_eq!(cli.run.connections, [4, 8]);
        assert_eq!(cli.run.duration, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["pod-identity-bench", "--duration", "soon"]).is_err());
    }

    #[test]
    fn eks_auth_defaults_are_the_issue_figures() {
        let cli = Cli::try_parse_from(["pod-identity-bench", "eks-auth"]).unwrap();
        let Some(Command::EksAuth(args)) = cli.command else {
            panic!("eks-auth parses as its subcommand");
        };
        assert_eq!(args.pods, 1000);
        assert_eq!(args.nodes, 10);
        assert_eq!(args.service_accounts, 100);
        assert_eq!(args.namespaces, 10);
    }

    #[test]
    fn moved_benchmarks_keep_their_defaults() {
        let cli = Cli::try_parse_from(["pod-identity-bench", "webhook"]).unwrap();
        let Some(Command::Webhook(args)) = cli.command else {
            panic!("webhook parses as its subcommand");
        };
        assert_eq!(args.connections, 32);
        assert_eq!(args.seconds, 10);
        assert_eq!(args.warmup, 2);
        assert_eq!(args.log_level, "info");
        assert!(args.binary.is_none());
        assert_eq!(args.fixture, "inject-basic");
        assert_eq!(args.rate, 0.0);
        assert_eq!(args.requests, 0);
        assert!(
            Cli::try_parse_from(["pod-identity-bench", "webhook", "--connections", "0"]).is_err()
        );

        let cli = Cli::try_parse_from(["pod-identity-bench", "webhook-cost"]).unwrap();
        let Some(Command::WebhookCost(args)) = cli.command else {
            panic!("webhook-cost parses as its subcommand");
        };
        assert_eq!(args.reviews, 10_000);
        assert_eq!(args.fixture, "inject-basic");
        assert_eq!(args.log_level, "info");

        let cli = Cli::try_parse_from(["pod-identity-bench", "eks-auth-verify"]).unwrap();
        let Some(Command::EksAuthVerify(args)) = cli.command else {
            panic!("eks-auth-verify parses as its subcommand");
        };
        assert_eq!(args.iterations, 20_000);
        let cli = Cli::try_parse_from(["pod-identity-bench", "eks-auth-verify", "200"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::EksAuthVerify(
                crate::eks_auth_verify::EksAuthVerifyArgs { iterations: 200 }
            ))
        ));
        assert!(Cli::try_parse_from(["pod-identity-bench", "eks-auth-verify", "many"]).is_err());
    }
}
