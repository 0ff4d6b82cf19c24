//! `pod-identity-agent`: parse, configure, bind, serve, drain. The logic lives in the library.

use std::process::ExitCode;

use clap::Parser;
use pod_identity_agent::config::{Cli, Command};
use pod_identity_agent::run;

/// EX_USAGE: a configuration the agent refuses (as linkerd2-proxy does).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = match pod_identity_agent::telemetry::init(&cli.verbosity, cli.log_format) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("pod-identity-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pod-identity-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Server(args) => runtime.block_on(run::server(args)),
        Command::Initialize(_) => Err(run::RunError::NotYet("initialize")),
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
            tracing::error!(error = %e, "exiting");
            eprintln!("pod-identity-agent: {e}");
            ExitCode::from(if e.is_config() { EXIT_CONFIG } else { 1 })
        }
    }
}
