//! The binary's entry point as a function of its arguments, so `demo-app` and the lab's
//! multi-call binary run exactly the same code.

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::Parser;

/// Walk the AWS SDK default credential chain step by step and say which provider won and why.
#[derive(Debug, Parser)]
#[command(name = "demo-app", version = pod_identity_contracts::version::long(), about)]
struct Cli {
    /// One JSON document instead of the terminal report.
    #[arg(long)]
    json: bool,
    /// No colour, even on a terminal (NO_COLOR is honoured too).
    #[arg(long)]
    no_color: bool,
    /// Whose default chain to explain: `rust` walks aws-config's real providers and cross-checks
    /// them; the others are models of that SDK's chain, evaluated against this environment.
    #[arg(long, value_enum, default_value = "rust")]
    sdk: crate::sdk::Sdk,
}

/// Parse `args` (program name first), walk the chain, print the report; returns the exit code
/// (0 when credentials were found and worked, non-zero with a one-line reason on stderr).
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // `demo-app version`, as the other binaries answer it (demo-app has no other subcommand).
    if args.len() == 2 && args[1] == "version" {
        println!("demo-app {}", pod_identity_contracts::version::long());
        return 0;
    }
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-app: cannot start the runtime: {e}");
            return 1;
        }
    };
    if let Some(model) = crate::sdk::model(cli.sdk) {
        let report = crate::sdk::report::run(&model);
        if cli.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        } else {
            print!("{}", crate::sdk::report::render_text(&report, color(&cli)));
        }
        if report.exit_code != 0 {
            eprintln!("demo-app: {}", report.verdict);
        }
        return report.exit_code;
    }
    let report = runtime.block_on(crate::report::run());
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", crate::report::render_text(&report, color(&cli)));
    }
    if report.exit_code != 0 {
        eprintln!("demo-app: {}", report.verdict);
    }
    report.exit_code
}

fn color(cli: &Cli) -> bool {
    !cli.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}
