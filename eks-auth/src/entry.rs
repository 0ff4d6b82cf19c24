//! The binary's entry point as a function of its arguments, so `eks-auth` and the lab's
//! multi-call binary run exactly the same code.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::config::Cli;

/// EX_USAGE: a configuration eks-auth refuses.
pub const EXIT_CONFIG: u8 = 64;

/// Parse `args` (program name first), configure, bind, serve, drain.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // `eks-auth version`, as the other binaries answer it (eks-auth has no other subcommand).
    if args.len() == 2 && args[1] == "version" {
        println!("eks-auth {}", pod_identity_contracts::version::long());
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(args);
    let _log_guard = match crate::telemetry::LOGGER.init(&cli.log_level, cli.log_format) {
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
    match runtime.block_on(crate::run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("eks-auth: {e}");
            ExitCode::from(if e.is_config() { EXIT_CONFIG } else { 1 })
        }
    }
}
