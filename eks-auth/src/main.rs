//! `eks-auth`: parse, configure, bind, serve, drain. The logic lives in the library.

use std::process::ExitCode;

use clap::Parser;
use eks_auth::config::Cli;

/// EX_USAGE: a configuration eks-auth refuses.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = match eks_auth::telemetry::init(&cli.log_level, cli.log_format) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("eks-auth: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eks-auth: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(eks_auth::run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("eks-auth: {e}");
            ExitCode::from(if e.is_config() { EXIT_CONFIG } else { 1 })
        }
    }
}
