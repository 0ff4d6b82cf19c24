//! `demo-app`: walk the credential chain as a pod's SDK does and explain it.

use std::io::IsTerminal;

use clap::Parser;

/// Walk the AWS SDK default credential chain step by step and say which provider won and why.
#[derive(Debug, Parser)]
#[command(name = "demo-app", version, about)]
struct Cli {
    /// One JSON document instead of the terminal report.
    #[arg(long)]
    json: bool,
    /// No colour, even on a terminal (NO_COLOR is honoured too).
    #[arg(long)]
    no_color: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let report = demo_app::report::run().await;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        let color = !cli.no_color
            && std::env::var_os("NO_COLOR").is_none()
            && std::io::stdout().is_terminal();
        print!("{}", demo_app::report::render_text(&report, color));
    }
    if report.exit_code != 0 {
        eprintln!("demo-app: {}", report.verdict);
    }
    std::process::exit(report.exit_code);
}
