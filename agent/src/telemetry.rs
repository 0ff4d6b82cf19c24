//! Logging setup: JSON lines on stdout in production (one per request), text for a terminal.
//! Writes go through a non-blocking writer so a slow stdout never stalls a request.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Map the official agent's logrus levels onto tracing's.
pub fn level_filter(verbosity: &str) -> Result<&'static str, String> {
    Ok(match verbosity.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        other => {
            return Err(format!(
                "unknown verbosity {other:?}: use panic, fatal, error, warn, info, debug or trace"
            ));
        }
    })
}

/// Install the global subscriber. Keep the guard alive for the life of the process: dropping it
/// flushes the log lines still queued.
pub fn init(verbosity: &str, format: LogFormat) -> Result<WorkerGuard, String> {
    let level = level_filter(verbosity)?;
    let filter = EnvFilter::try_from_env("POD_IDENTITY_AGENT_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn"
        ))
    });
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
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
