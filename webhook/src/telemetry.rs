//! Logging setup: JSON lines on stdout in production (one per request), text for a terminal.
//! Writes go through a non-blocking writer so a slow stdout never stalls a request.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Map a level name onto a tracing filter directive.
pub fn level_filter(verbosity: &str) -> Result<&'static str, String> {
    Ok(match verbosity.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        other => {
            return Err(format!(
                "unknown log level {other:?}: use error, warn, info, debug or trace"
            ));
        }
    })
}

/// Install the global subscriber. Keep the guard alive for the life of the process: dropping it
/// flushes the log lines still queued.
/// `to_stderr` is for the offline subcommands, whose stdout is their output.
pub fn init(verbosity: &str, format: LogFormat, to_stderr: bool) -> Result<WorkerGuard, String> {
    let level = level_filter(verbosity)?;
    let filter = EnvFilter::try_from_env("POD_IDENTITY_WEBHOOK_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hyper=warn,kube=warn,rustls=warn")));
    let (writer, guard) = if to_stderr {
        tracing_appender::non_blocking(Box::new(std::io::stderr()) as Box<dyn std::io::Write + Send>)
    } else {
        tracing_appender::non_blocking(Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(guard)
}
