//! `pod-identity-agent`: parse and hand over to the library; map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use pod_identity_agent::config::{Cli, Command};
use pod_identity_agent::run::{self, Logging};

/// EX_USAGE: a configuration the agent refuses (as linkerd2-proxy does).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = Logging {
        verbosity: cli.verbosity,
        format: cli.log_format,
    };
    let result = match cli.command {
        Command::Server(args) => run::server(args, &logging),
        Command::Initialize(args) => run::initialize_node(args, &logging),
        Command::Version => {
            println!(
                "EKS Pod Identity Agent version {}",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pod-identity-agent: {e}");
            ExitCode::from(if e.is_config() { EXIT_CONFIG } else { 1 })
        }
    }
}
