//! `pod-identity-bench`: the agent benchmark (default), the per-hit cost counter (`cost`), the
//! eks-auth benchmarks (`eks-auth`, `eks-auth-verify`), the webhook benchmarks (`webhook`,
//! `webhook-cost`) or, as its own child process, the ceiling server (`ceiling`). The logic lives
//! in the library.

use std::process::ExitCode;

use clap::Parser;
use pod_identity_bench::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Ceiling(args)) => pod_identity_bench::ceiling::serve(&args),
        Some(Command::Cost(args)) => pod_identity_bench::cost::main(&args),
        Some(Command::EksAuth(args)) => pod_identity_bench::eks_auth::main(&args),
        Some(Command::EksAuthVerify(args)) => pod_identity_bench::eks_auth_verify::main(&args),
        Some(Command::Webhook(args)) => pod_identity_bench::webhook_load::main(&args),
        Some(Command::WebhookCost(args)) => pod_identity_bench::webhook_cost::main(&args),
        Some(Command::Version) => {
            println!(
                "pod-identity-bench {}",
                pod_identity_contracts::version::long()
            );
            Ok(())
        }
        None => pod_identity_bench::run::main(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pod-identity-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
