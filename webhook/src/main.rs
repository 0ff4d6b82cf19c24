//! `pod-identity-webhook`: parse, configure, run the subcommand. The logic lives in the library.

use std::process::ExitCode;

use clap::Parser;
use pod_identity_webhook::config::{Cli, Command};
use pod_identity_webhook::run::{self, EXIT_FINDINGS};

/// EX_USAGE: a configuration the webhook refuses.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let offline = !matches!(cli.command, Command::Serve(_));
    let _log_guard =
        match pod_identity_webhook::telemetry::init(&cli.log_level, cli.log_format, offline) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("pod-identity-webhook: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pod-identity-webhook: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(run::serve(args)).map(|()| false),
        Command::Mutate(args) => run::mutate(args).map(|()| false),
        Command::Audit(args) => runtime.block_on(run::audit(args)),
        Command::Certs(args) => runtime.block_on(run::certs(args)).map(|()| false),
        Command::Version => {
            println!(
                "pod-identity-webhook {}",
                pod_identity_contracts::version::long()
            );
            Ok(false)
        }
    };
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(EXIT_FINDINGS),
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("pod-identity-webhook: {e}");
            ExitCode::from(if e.is_config() { EXIT_CONFIG } else { 1 })
        }
    }
}
