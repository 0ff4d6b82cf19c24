//! Watch one credential travel from a pod's SDK through the agent to EKS Auth and back, on one
//! machine with no cluster and no AWS account:
//!
//! ```text
//! cargo run -p pod-identity-agent --example local-run
//! ```
//!
//! EKS Auth is the test-support fake (the lab replaces it with this project's eks-auth); the
//! agent is this crate, on loopback; the pod is a child process whose environment holds only the
//! two variables the webhook injects, resolving credentials with the real AWS SDK default chain.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use clap::Parser;
use pod_identity_agent::agent::{BoundListeners, RunningAgent};
use pod_identity_agent::config::{Cli, Command};
use pod_identity_agent::eks_auth::EksAuthUpstream;
use pod_identity_agent::server::ConnectionLimits;
use pod_identity_contracts::constants::{ENV_FULL_URI, ENV_TOKEN_FILE};
use pod_identity_contracts::credentials::short_access_key_id;
use pod_identity_test_support::{FakeEksAuth, TokenBuilder};

const POD_FLAG: &str = "--as-pod";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == POD_FLAG) {
        return pod().await;
    }
    tracing_subscriber::fmt()
        .with_env_filter("info,aws_smithy_runtime=warn,aws_config=warn")
        .with_target(false)
        .compact()
        .init();

    step(
        1,
        "EKS Auth stand-in (the lab swaps in this project's eks-auth)",
    );
    let eks_auth = FakeEksAuth::start().await;
    say(&format!("listening on {}", eks_auth.url()));

    step(
        2,
        "the agent, as a node runs it but on loopback instead of 169.254.170.23:80",
    );
    let cli = Cli::try_parse_from([
        "pod-identity-agent",
        "server",
        "--cluster-name",
        "lab",
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "--probe-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
    ])?;
    let Command::Server(args) = cli.command else {
        unreachable!()
    };
    let config = args.validate()?;
    let node = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-west-2"))
        .credentials_provider(Credentials::new(
            "AKIDNODEEXAMPLE",
            "node-secret",
            None,
            None,
            "node-role",
        ))
        .endpoint_url(eks_auth.url())
        .load()
        .await;
    let upstream = EksAuthUpstream::new(&node, &config.cluster_name)?;
    let listeners = BoundListeners::bind(&config)?;
    let agent = RunningAgent::serve(
        &config,
        listeners,
        Arc::new(upstream),
        ConnectionLimits::default(),
    )?;
    let url = format!("http://{}/v1/credentials", agent.credential_addrs[0]);
    say(&format!("credentials endpoint {url}"));

    step(
        3,
        "the pod's projected service-account token (what the kubelet writes)",
    );
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("eks-pod-identity-token");
    let builder = TokenBuilder::new();
    let claims = builder.claims();
    std::fs::write(&token_file, builder.sign())?;
    say(&format!("sub  {}", claims["sub"]));
    say(&format!("aud  {}", claims["aud"]));
    say(&format!("pod  {}", claims["kubernetes.io"]["pod"]["name"]));
    say(&format!(
        "file {} (the token itself is never printed)",
        token_file.display()
    ));

    step(
        4,
        "the pod: AWS SDK default credential chain with only the injected variables",
    );
    say(&format!("{ENV_FULL_URI}={url}"));
    say(&format!("{ENV_TOKEN_FILE}={}", token_file.display()));
    run_pod(&url, &token_file).await?;
    say(&format!("EKS Auth calls so far: {}", eks_auth.calls()));

    step(5, "the same pod again: served from the agent's cache");
    run_pod(&url, &token_file).await?;
    say(&format!(
        "EKS Auth calls so far: {} (cache hit: no new exchange)",
        eks_auth.calls()
    ));

    step(6, "what the agent refuses");
    let client = reqwest::Client::new();
    let wrong_host = client
        .get(&url)
        .header("Host", "10.0.0.7")
        .header("Authorization", TokenBuilder::new().sign())
        .send()
        .await?;
    say(&format!(
        "Host 10.0.0.7      -> {} {}",
        wrong_host.status(),
        wrong_host.text().await?
    ));
    let now = pod_identity_test_support::tokens::now();
    let expired = TokenBuilder::new()
        .issued_at(now - 7200)
        .not_before(now - 7200)
        .expires_at(now - 60)
        .sign();
    let resp = client
        .get(&url)
        .header("Authorization", expired)
        .send()
        .await?;
    say(&format!(
        "expired token      -> {} {}",
        resp.status(),
        resp.text().await?
    ));

    step(7, "metrics (official names)");
    let metrics = client
        .get(format!("http://{}/metrics", agent.metrics_addr))
        .send()
        .await?
        .text()
        .await?;
    for line in metrics.lines().filter(|l| l.starts_with("pod_identity_")) {
        say(line);
    }
    agent.shutdown().await;
    println!("\nDone. Run the tests with: scripts/test");
    Ok(())
}

/// Start the pod process and print what its SDK resolved.
async fn run_pod(url: &str, token_file: &std::path::Path) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg(POD_FLAG);
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    let home = tempfile::tempdir()?;
    let out = cmd
        .env("HOME", home.path())
        .env("AWS_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(ENV_FULL_URI, url)
        .env(ENV_TOKEN_FILE, token_file)
        .stderr(Stdio::inherit())
        .output()
        .await?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(out.status.success(), "the pod could not get credentials");
    Ok(())
}

/// The pod's side: the SDK's default chain, exactly as an application calls it.
async fn pod() -> anyhow::Result<()> {
    let started = Instant::now();
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let provider = config
        .credentials_provider()
        .ok_or_else(|| anyhow::anyhow!("no credentials provider"))?;
    let creds = provider.provide_credentials().await?;
    let expiry = creds
        .expiry()
        .map(|t| {
            jiff::Timestamp::try_from(t)
                .map(|t| t.to_string())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    say(&format!(
        "pod got {} (account {}), expiring {expiry}, in {:.1} ms",
        short_access_key_id(creds.access_key_id()),
        creds.account_id().map(|a| a.as_str()).unwrap_or("?"),
        started.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

fn say(line: &str) {
    println!("   {line}");
}
