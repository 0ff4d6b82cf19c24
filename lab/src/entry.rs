//! The command line, and the multi-call dispatch: `pod-identity-lab component <name> …` runs the
//! project's agent, eks-auth or demo-app exactly as their own binaries would, so the lab starts
//! the real programs without needing them built separately.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::components::{COMPONENT_SUBCOMMAND, Component};
use crate::node::{Node, namespace_unavailable};
use crate::run::{self, Options};
use crate::scenario::Scenario;

/// Exit code when a scenario's outcome was not the one it exists to show.
pub const EXIT_UNEXPECTED: u8 = 1;
/// Exit code when the lab itself could not be set up.
pub const EXIT_SETUP: u8 = 2;

/// Watch one AWS credential travel from a pod to AWS and back, on this machine: token issuer,
/// webhook, agent, eks-auth, STS and the pod's SDK, with a numbered trace of every hop.
#[derive(Debug, Parser)]
#[command(name = "pod-identity-lab", version = pod_identity_contracts::version::long(), about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario (default: happy-path) and print its trace.
    Run(RunArgs),
    /// List the scenarios.
    Scenarios,
    /// Print the release and the git revision.
    Version,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario to run (`pod-identity-lab scenarios` lists them).
    #[arg(long, default_value = "happy-path", value_parser = parse_scenario)]
    pub scenario: Scenario,
    /// Your pod manifest (YAML or JSON) instead of the built-in one; its namespace and service
    /// account get the lab's association. Its first container is the one run.
    #[arg(long)]
    pub pod: Option<PathBuf>,
    /// The trace as JSON lines, one object per hop.
    #[arg(long)]
    pub json: bool,
    /// Use this STS instead of the lab's own (a real one, or moto's server).
    #[arg(long, env = "POD_IDENTITY_LAB_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// Run the agent on 127.0.0.1 even when root could give it a network namespace.
    #[arg(long)]
    pub loopback: bool,
    /// No colour, even on a terminal (NO_COLOR is honoured too).
    #[arg(long)]
    pub no_color: bool,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    Scenario::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scenario {s:?}; one of: {}", names.join(", "))
    })
}

/// The binary's `main`: returns the exit code.
pub fn main<I>(args: I) -> ExitCode
where
    I: IntoIterator<Item = OsString>,
{
    let args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == COMPONENT_SUBCOMMAND) {
        return component(&args);
    }
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Scenarios => {
            for s in Scenario::ALL {
                println!("{:<20} {}", s.name(), s.summary());
            }
            ExitCode::SUCCESS
        }
        Command::Run(args) => lab(args),
        Command::Version => {
            println!(
                "pod-identity-lab {}",
                pod_identity_contracts::version::long()
            );
            ExitCode::SUCCESS
        }
    }
}

/// `component <name> <args…>`: hand over to the component's own entry point. Nothing else has
/// run in this process, so the agent's rule (bind, drop capabilities, then start threads) holds.
fn component(args: &[OsString]) -> ExitCode {
    let name = args.get(2).and_then(|n| n.to_str()).unwrap_or_default();
    let Some(which) = Component::from_name(name) else {
        eprintln!("pod-identity-lab: unknown component {name:?} (agent, eks-auth, demo-app)");
        return ExitCode::from(EXIT_SETUP);
    };
    let rest = std::iter::once(OsString::from(which.name())).chain(args[3..].iter().cloned());
    match which {
        Component::Agent => pod_identity_agent::entry::main(rest),
        Component::EksAuth => eks_auth::entry::main(rest),
        Component::DemoApp => exit_code(demo_app::entry::main(rest)),
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn lab(args: RunArgs) -> ExitCode {
    // The node comes first, while this is the only thread.
    let node = match namespace_unavailable(args.loopback) {
        None => match Node::enter_namespace() {
            Ok(n) => n,
            Err(e) => Node::loopback(format!("the network namespace failed: {e}")),
        },
        Some(why) => Node::loopback(why),
    };
    let pod_manifest = match &args.pod {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                eprintln!("pod-identity-lab: --pod {}: {e}", path.display());
                return ExitCode::from(EXIT_SETUP);
            }
        },
    };
    let colour = !args.json
        && !args.no_color
        && std::env::var_os("NO_COLOR").is_none()
        && std::io::stdout().is_terminal();
    let options = Options {
        scenario: args.scenario,
        pod_manifest,
        json: args.json,
        colour,
        sts_endpoint: args.sts_endpoint,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pod-identity-lab: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let result = runtime.block_on(run::run(options, &node, Box::new(std::io::stdout())));
    drop(runtime);
    drop(node);
    match result {
        Ok(outcome) if outcome.as_expected => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_UNEXPECTED),
        Err(e) => {
            eprintln!("pod-identity-lab: {e:#}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}
