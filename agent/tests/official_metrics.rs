//! The metric names our agent shares with AWS's official eks-pod-identity-agent mean the same
//! thing: driven through one sequence of pod requests, against the same scripted EKS Auth
//! answers, our agent's `pod_identity_cache_state{state}`, `pod_identity_cache_errors{type,code}`
//! and `pod_identity_http_response{code}` are, at every settled point, what the official agent
//! (release 0.1.37) counted. Its counts are recorded in
//! `tests/fixtures/official-agent-0.1.37-metrics.txt`, since its binary never exists in CI; the
//! ignored test below re-records or re-checks them against a binary built by hand.
//!
//! The sequence keeps one token live at a time, so every EKS Auth call is the one the script
//! expects, and waits on the fake's recorded calls and on the agent's own counts rather than on
//! sleeps: the official agent refreshes on a one-minute janitor tick, ours on a 5 s sweep.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pod_identity_contracts::eks_auth::ErrorKind;
use pod_identity_test_support::official_agent::{self, OfficialAgentProcess, shared_samples};
use pod_identity_test_support::{Behavior, FakeEksAuth, TokenBuilder};

/// The release the fixture was recorded from.
const OFFICIAL_RELEASE: &str = "0.1.37";

/// Flags both agents run with. Retention 4 s makes every cached token due for refresh at the
/// next sweep (ours) or janitor tick (official). The official agent panics at start unless
/// `max-service-qps * whole seconds of retention >= max-cache-size / 2`, hence the small cache.
const SHARED_FLAGS: [&str; 6] = [
    "--max-credential-retention-before-renewal",
    "4s",
    "--max-cache-size",
    "10",
    "--max-service-qps",
    "3",
];

/// How long the two scrapes that close a phase are apart: both agents count an outcome within
/// microseconds of it; ours sweeps again no sooner than 5 s later.
const SETTLE: Duration = Duration::from_millis(300);

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("official-agent-{OFFICIAL_RELEASE}-metrics.txt"))
}

/// One agent as the sequence drives it.
struct Target {
    credentials_url: String,
    metrics_url: String,
    /// The Host to send, where the agent wants one other than the address it is called on.
    host: Option<&'static str>,
    /// Longest wait for one phase: a refresh comes within 10 s from ours, 60 s from the official.
    phase_timeout: Duration,
    client: reqwest::Client,
}

impl Target {
    fn new(
        credentials_url: String,
        metrics_url: String,
        host: Option<&'static str>,
        phase_timeout: Duration,
    ) -> Self {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            credentials_url,
            metrics_url,
            host,
            phase_timeout,
            client,
        }
    }

    /// A pod's credentials request; its status.
    async fn fetch(&self, token: &str) -> u16 {
        let mut req = self
            .client
            .get(&self.credentials_url)
            .header("Authorization", token);
        if let Some(host) = self.host {
            req = req.header("Host", host);
        }
        req.send().await.expect("agent answers").status().as_u16()
    }

    /// Scrape until the agent has counted `answered` answers to pods and `refreshes` background
    /// refresh outcomes (a `hit`, or an error of either type), then until two scrapes [`SETTLE`]
    /// apart agree: a point where its counts are final, whatever they are.
    async fn settled(&self, phase: &str, answered: u64, refreshes: u64) -> Vec<String> {
        let deadline = Instant::now() + self.phase_timeout;
        let mut last = Vec::new();
        loop {
            let now = self.shared_samples().await;
            let reached = sum(&now, |s| s.starts_with("pod_identity_http_response{")) == answered
                && sum(&now, |s| {
                    s.starts_with("pod_identity_cache_state{state=\"hit\"}")
                        || s.starts_with("pod_identity_cache_errors{")
                }) == refreshes;
            if reached && now == last {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{phase}: the agent did not count {answered} answers and {refreshes} refresh \
                 outcomes within {:?}; it counted:\n{}",
                self.phase_timeout,
                now.join("\n")
            );
            last = now;
            tokio::time::sleep(if reached {
                SETTLE
            } else {
                Duration::from_millis(50)
            })
            .await;
        }
    }

    async fn shared_samples(&self) -> Vec<String> {
        let text = self
            .client
            .get(&self.metrics_url)
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body");
        shared_samples(&text)
    }
}

fn sum(samples: &[String], pick: impl Fn(&str) -> bool) -> u64 {
    samples
        .iter()
        .filter(|s| pick(s))
        .map(|s| s.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap() as u64)
        .sum()
}

/// The fake EKS Auth of the sequence: one scripted answer per call, in the order the sequence
/// makes them, then `ServiceUnavailableException` for every call (the official agent's SDK
/// retries it three times per refresh).
async fn sequence_fake() -> FakeEksAuth {
    FakeEksAuth::builder()
        .script(vec![
            // Token C, on a pod's request.
            Behavior::fail(
                ErrorKind::ResourceNotFound,
                "no association for this service account",
            ),
            // Token A: the pod's request, then its first background refresh.
            Behavior::Succeed,
            Behavior::Succeed,
            // A's second refresh.
            Behavior::fail(ErrorKind::AccessDenied, "the association was deleted"),
            // Token B, on a pod's request.
            Behavior::Succeed,
        ])
        .default_behavior(Behavior::fail(
            ErrorKind::ServiceUnavailable,
            "try again later",
        ))
        .start()
        .await
}

/// Drives `target` through the sequence and returns its shared counts at each settled point,
/// by phase name.
async fn sequence(t: &Target, fake: &FakeEksAuth) -> Vec<(&'static str, Vec<String>)> {
    let token = |pod: &str| TokenBuilder::new().pod(pod).sign();
    let (a, b, c) = (token("a-0"), token("b-0"), token("c-0"));
    let calls = |phase: &str, n: usize| {
        assert_eq!(
            fake.calls(),
            n,
            "{phase}: EKS Auth calls out of step with the script"
        );
    };
    let wait_calls = |n: usize| async move {
        fake.wait_for_calls(n, t.phase_timeout).await.unwrap();
    };
    let mut phases = Vec::new();

    // Refused: a token the agent refuses itself, then one EKS Auth refuses on the request path.
    t.fetch("not-a-jwt").await;
    t.fetch(&c).await;
    calls("refused", 1);
    phases.push(("refused", t.settled("refused", 2, 0).await));

    // Cached: A fetched, then served from the cache.
    t.fetch(&a).await;
    t.fetch(&a).await;
    calls("cached", 2);
    phases.push(("cached", t.settled("cached", 4, 0).await));

    // Refreshed: A's background refresh succeeds.
    wait_calls(3).await;
    phases.push(("refreshed", t.settled("refreshed", 4, 1).await));
    calls("refreshed", 3);

    // Refused for good: A's next refresh gets AccessDenied; A is dropped.
    wait_calls(4).await;
    phases.push((
        "refused-for-good",
        t.settled("refused-for-good", 4, 2).await,
    ));
    calls("refused-for-good", 4);

    // Token B fetched.
    t.fetch(&b).await;
    calls("second-token", 5);
    phases.push(("second-token", t.settled("second-token", 5, 2).await));

    // B's refresh fails with ServiceUnavailable (retried by the SDK); B is kept.
    wait_calls(6).await;
    phases.push(("refresh-failing", t.settled("refresh-failing", 5, 3).await));
    phases
}

/// `[phase]` then its samples, phase after phase.
fn render(phases: &[(&str, Vec<String>)]) -> String {
    phases
        .iter()
        .flat_map(|(name, samples)| std::iter::once(format!("[{name}]")).chain(samples.clone()))
        .map(|line| line + "\n")
        .collect()
}

/// The fixture without its comments and blank lines, as [`render`] writes it.
fn fixture_body() -> String {
    let text = std::fs::read_to_string(fixture_path()).expect("read the fixture");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn assert_same(counted: &str, who: &str) {
    let official = fixture_body();
    assert!(
        counted == official,
        "{who} counted differently from the official agent {OFFICIAL_RELEASE}:\n\
         --- official (fixture)\n{official}--- {who}\n{counted}"
    );
}

#[tokio::test]
async fn counts_the_sequence_as_the_official_agent_did() {
    let fake = sequence_fake().await;
    let agent = common::start(&fake, &SHARED_FLAGS).await;
    let target = Target::new(
        agent.credentials_url(),
        format!("http://{}/metrics", agent.metrics_addr),
        None,
        Duration::from_secs(30),
    );
    let counted = render(&sequence(&target, &fake).await);
    assert_same(&counted, "our agent");
}

/// The same sequence against the official agent, whose binary the variable
/// `OFFICIAL_AGENT_BIN` names: checks the fixture, or with `RECORD=1` rewrites it. Takes about
/// three minutes (its janitor refreshes once a minute).
///
/// To build that binary by hand (never in CI, never from a script here): take the official
/// repository (github.com/aws/eks-pod-identity-agent; a fetched mirror, a bare git directory, will
/// do), `git archive` its v0.1.37 release commit into an empty directory, and there run `CGO_ENABLED=0 go build -o
/// eks-pod-identity-agent .` with Go 1.26.1 or newer; its dependencies come from the Go module
/// proxy. Where the proxy does not serve `github.com/aws/aws-sdk-go-v2/service/eksauth v1.11.7`,
/// add a `replace` of that module, in that directory's go.mod only, to a copy of the module's
/// source from the aws-sdk-go-v2 repository. Then run
/// `OFFICIAL_AGENT_BIN=/path/to/eks-pod-identity-agent RECORD=1 cargo test -p pod-identity-agent
/// --test official_metrics -- --ignored`.
#[tokio::test]
#[ignore = "needs the official agent's binary in OFFICIAL_AGENT_BIN"]
async fn official_agent_counts_the_sequence_as_recorded() {
    let bin = std::env::var(official_agent::BIN_ENV)
        .expect("OFFICIAL_AGENT_BIN must name the official agent's binary");
    let fake = sequence_fake().await;
    let agent = OfficialAgentProcess::start(&bin, fake.cluster(), &fake.url(), &SHARED_FLAGS).await;
    let target = Target::new(
        agent.credentials_url(),
        agent.metrics_url(),
        Some(official_agent::HOST),
        Duration::from_secs(100),
    );
    let counted = render(&sequence(&target, &fake).await);
    if std::env::var("RECORD").as_deref() == Ok("1") {
        let header = format!(
            "# The shared metric families of AWS's official eks-pod-identity-agent, release \
             {OFFICIAL_RELEASE},\n\
             # at each settled point of the sequence in tests/official_metrics.rs: what\n\
             # `pod_identity_cache_state`, `pod_identity_cache_errors` and\n\
             # `pod_identity_http_response` must mean. Recorded by that file's ignored test\n\
             # `official_agent_counts_the_sequence_as_recorded` with OFFICIAL_AGENT_BIN naming\n\
             # a binary built from the release's source, and RECORD=1. Series at 0 are left\n\
             # out; labels are sorted by name.\n\n"
        );
        std::fs::write(fixture_path(), header + &counted).expect("write the fixture");
    } else {
        assert_same(&counted, "the official agent");
    }
}
