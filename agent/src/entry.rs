//! The binary's entry point as a function of its arguments, so `pod-identity-agent` and the lab's
//! multi-call binary run exactly the same code.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Cli, Command};
use crate::run::{self, Logging};

/// EX_USAGE: a configuration the agent refuses (as linkerd2-proxy does).
pub const EXIT_CONFIG: u8 = 64;

/// Parse `args` (program name first), run the subcommand, map errors to exit codes.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let logging = Logging {
        verbosity: cli.verbosity,
        format: cli.log_format,
    };
    let result = match cli.command {
        Command::Server(args) => run::server(args, &logging),
        Command::Initialize(args) => run::initialize_node(args, &logging),
        Command::Version => {
            // The official agent's words, then the revision.
            println!(
                "EKS Pod Identity Agent version {}",
                pod_identity_contracts::version::long()
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
