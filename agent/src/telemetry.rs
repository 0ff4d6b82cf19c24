//! Logging setup: JSON lines on stdout in production (one per request, formatted by
//! [`pod_identity_runtime::log_format`]), text for a terminal. Lines go through [`pod_identity_runtime::log_writer`]: appended
//! to a bounded buffer that one thread writes out in batches, so a slow stdout never stalls a
//! request and logging costs no wake-up per line.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use pod_identity_runtime::log_format::JsonLines;
use pod_identity_runtime::log_writer::{BatchConfig, LogGuard, LogWriter};

/// The installed writer, for [`dropped_lines`].
static INSTALLED: OnceLock<LogWriter> = OnceLock::new();

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

/// Install the global subscriber and start the writer thread. Keep the guard alive for the life
/// of the process: dropping it writes out the lines still buffered.
pub fn init(verbosity: &str, format: LogFormat) -> Result<LogGuard, String> {
    let level = level_filter(verbosity)?;
    let filter = EnvFilter::try_from_env("POD_IDENTITY_AGENT_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn"
        ))
    });
    let (writer, guard) = LogWriter::spawn(std::io::stdout(), BatchConfig::default())
        .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .event_format(JsonLines::default())
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))?;
    let _ = INSTALLED.set(writer);
    Ok(guard)
}

/// Log lines dropped since start because stdout could not keep up (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    INSTALLED.get().map_or(0, LogWriter::dropped)
}
