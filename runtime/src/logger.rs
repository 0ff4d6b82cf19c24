//! Installing the global logger, the same way in every binary: the level named as the official
//! agent (logrus) names it, JSON lines ([`crate::log_format`]) or text, through the batching
//! writer ([`crate::log_writer`]) to stdout or stderr. What differs between binaries is a
//! [`Logger`] value: the environment variable that overrides the filter, the libraries held to
//! warnings, where the lines go and how they are batched.

use std::sync::OnceLock;

use std::io::Write as _;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter as _;

use crate::log_format::{DirectLine, JsonLines, direct_line};
use crate::log_writer::{BatchConfig, LogGuard, LogWriter};

/// The `--log-format` value: `json` in production, `text` for a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    /// For subcommands whose stdout is their result.
    Stderr,
}

/// Why the logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown log level {0:?}: use panic, fatal, error, warn, info, debug or trace")]
    UnknownLevel(String),
    #[error("cannot start the log writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    #[error("cannot install the logger: {0}")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One binary's logger; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    /// An `EnvFilter` in this variable replaces the level and [`Logger::quiet`].
    pub filter_env: &'static str,
    /// Directives after the level, e.g. `hyper=warn`: libraries that stay quiet at any level.
    pub quiet: &'static str,
    pub output: Output,
    pub batch: BatchConfig,
}

/// The installed writer, for [`dropped_lines`].
static INSTALLED: OnceLock<LogWriter> = OnceLock::new();

/// The installed writer when the lines are JSON, for [`write_direct`].
static JSON: OnceLock<LogWriter> = OnceLock::new();

impl Logger {
    /// To stdout, batched by [`BatchConfig::DEFAULT`].
    pub const fn new(filter_env: &'static str, quiet: &'static str) -> Self {
        Self {
            filter_env,
            quiet,
            output: Output::Stdout,
            batch: BatchConfig::DEFAULT,
        }
    }

    pub const fn output(self, output: Output) -> Self {
        Self { output, ..self }
    }

    pub const fn batch(self, batch: BatchConfig) -> Self {
        Self { batch, ..self }
    }

    /// Install the global subscriber and start the writer thread. Keep the guard alive for the
    /// life of the process: dropping it writes out the lines still buffered.
    pub fn init(&self, level: &str, format: LogFormat) -> Result<LogGuard, LogError> {
        let level = level_directive(level)?;
        let filter = EnvFilter::try_from_env(self.filter_env)
            .unwrap_or_else(|_| EnvFilter::new(format!("{level},{}", self.quiet)));
        let spawned = match self.output {
            Output::Stdout => LogWriter::spawn(std::io::stdout(), self.batch),
            Output::Stderr => LogWriter::spawn(std::io::stderr(), self.batch),
        };
        let (writer, guard) = spawned.map_err(LogError::WriterThread)?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer.clone())
            .with_target(false);
        let json = format == LogFormat::Json;
        match format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .event_format(JsonLines::default())
                .try_init(),
            LogFormat::Text => builder.try_init(),
        }
        .map_err(LogError::Install)?;
        if json {
            let _ = JSON.set(writer.clone());
        }
        let _ = INSTALLED.set(writer);
        Ok(guard)
    }
}

/// Write one JSON line built by `fill` straight to the installed writer, past tracing's dispatch
/// and field visitor: for a hot path that logs one fixed shape per request (the agent's line per
/// cache hit). The bytes are those `tracing` would log for an event with the same fields in the
/// same order. Returns false, writing nothing, unless JSON logging is installed (or the clock is
/// before 1970): the caller then logs through `tracing`. The caller checks the level (`tracing::enabled!`) first.
pub fn write_direct(level: &Level, fill: impl FnOnce(&mut DirectLine<'_>)) -> bool {
    let Some(writer) = JSON.get() else {
        return false;
    };
    direct_line(level, fill, |line| {
        // The writer never fails: a line that does not fit is dropped and counted.
        let _ = writer.make_writer().write_all(line.as_bytes());
    })
}

/// The tracing filter directive for a level name: tracing's five, and logrus's `panic`, `fatal`
/// and `warning` as the official agent's `-v` takes them. Any case.
pub fn level_directive(level: &str) -> Result<&'static str, LogError> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return Err(LogError::UnknownLevel(level.to_string())),
    })
}

/// Log lines dropped since start because the output could not keep up (0 before
/// [`Logger::init`]).
pub fn dropped_lines() -> u64 {
    INSTALLED.get().map_or(0, LogWriter::dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_the_official_agents_names_in_any_case() {
        for (name, directive) in [
            ("panic", "error"),
            ("FATAL", "error"),
            ("error", "error"),
            ("Warning", "warn"),
            ("warn", "warn"),
            ("info", "info"),
            ("debug", "debug"),
            ("TRACE", "trace"),
        ] {
            assert_eq!(level_directive(name).unwrap(), directive, "{name}");
        }
        let err = level_directive("Verbose").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown log level \"Verbose\": use panic, fatal, error, warn, info, debug or trace"
        );
    }
}
