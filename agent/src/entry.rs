//! The binary's entry point as a function of its arguments, so `pod-identity-agent` and the lab's
//! multi-call binary run exactly the same code.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::{Cli, Command};
use crate::run::{self, RunError};

/// Parse `args` (program name first), run the subcommand; its error decides the exit code
/// ([`pod_identity_runtime::exit::code`]: 64 for a configuration the agent refuses).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli: Cli = pod_identity_runtime::flags::parse("POD_IDENTITY_AGENT", args);
    pod_identity_runtime::exit::code("pod-identity-agent", dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<ExitCode, RunError> {
    match cli.command {
        Command::Server(args) => run::server(args, &cli.log)?,
        Command::Initialize(args) => run::initialize_node(args, &cli.log)?,
        Command::Version => {
            // The official agent's words, then the revision.
            println!(
                "EKS Pod Identity Agent version {}",
                pod_identity_contracts::version::long()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
