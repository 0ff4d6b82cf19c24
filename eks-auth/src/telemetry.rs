//! Logging setup, as the agent's: JSON lines on stdout (one audit line per exchange), text for a
//! terminal, through a non-blocking writer so a slow stdout never stalls a request.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber. Keep the guard alive for the life of the process.
pub fn init(level: &str, format: LogFormat) -> Result<WorkerGuard, String> {
    let level = match level.to_ascii_lowercase().as_str() {
        l @ ("error" | "warn" | "info" | "debug" | "trace") => l.to_string(),
        other => {
            return Err(format!(
                "unknown --log-level {other:?}: use error, warn, info, debug or trace"
            ));
        }
    };
    let filter = EnvFilter::try_from_env("EKS_AUTH_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn,reqwest=warn"
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
