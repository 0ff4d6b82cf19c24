//! The binary's entry point as a function of its arguments, so `eks-auth` and the lab's
//! multi-call binary run exactly the same code.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::Cli;

/// Parse `args` (program name first), then [`crate::run::main`]; its error decides the exit
/// code ([`pod_identity_runtime::exit::code`]).
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
    let cli: Cli = pod_identity_runtime::flags::parse("EKS_AUTH", args);
    pod_identity_runtime::exit::code("eks-auth", crate::run::main(cli))
}
