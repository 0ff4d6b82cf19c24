//! The binary's entry point as a function of its arguments, as the other services have one.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::{Cli, Command};
use crate::run::{self, EXIT_FINDINGS, RunError};

/// Parse `args` (program name first), install the logger (to stderr for the offline
/// subcommands, whose stdout is their output), run the subcommand; its error decides the exit
/// code ([`pod_identity_runtime::exit::code`]), and `audit` exits [`EXIT_FINDINGS`] when it
/// found pods that lack the injection.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli: Cli = pod_identity_runtime::flags::parse("POD_IDENTITY_WEBHOOK", args);
    pod_identity_runtime::exit::code("pod-identity-webhook", dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<ExitCode, RunError> {
    let offline = !matches!(cli.command, Command::Serve(_));
    let _log_guard = crate::telemetry::init(&cli.log.log_level, cli.log.log_format, offline)?;
    let runtime = || pod_identity_runtime::exit::runtime(None);
    let findings = match cli.command {
        Command::Serve(args) => {
            let result = runtime()?.block_on(run::serve(args));
            if let Err(e) = &result {
                tracing::error!(error = %e, "exiting");
            }
            result.map(|()| false)
        }
        Command::Mutate(args) => run::mutate(args).map(|()| false),
        Command::Audit(args) => runtime()?.block_on(run::audit(args)),
        Command::Certs(args) => runtime()?.block_on(run::certs(args)).map(|()| false),
        Command::Version => {
            println!(
                "pod-identity-webhook {}",
                pod_identity_contracts::version::long()
            );
            Ok(false)
        }
    }?;
    Ok(if findings {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    })
}
