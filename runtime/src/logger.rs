//! Installing the global logger, the same way in every binary: the level named as the official
//! agent (logrus) names it, JSON lines ([`crate::log_format`]) or text, through the batching
//! writer ([`crate::log_writer`]) to stdout or stderr. What differs between binaries is a
//! [`Logger`] value: the environment variable that overrides the filter, the libraries held to
//! warnings, where the lines go and how they are batched.
//!
//! # What no level lifts
//!
//! An event is written only if two filters let it through. The first is the binary's: its level
//! flag (`-v`, `--log-level`) with [`Logger::quiet`], or, when set, an `EnvFilter` in
//! [`Logger::filter_env`], which replaces both. The second is [`CAPPED_TARGETS`], and nothing the
//! operator sets reaches it: it holds each library on the path of a signed or authenticated
//! request at the highest level at which it prints no secret. The official Helm chart runs the
//! agent at `-v trace`. Each was read, at the version in Cargo.lock, for what it prints above its
//! cap:
//!
//! | target | cap | what it prints above the cap |
//! | --- | --- | --- |
//! | `aws_sigv4` | off | at trace, the canonical request of every signature, whose `x-amz-security-token` line is the session token signed with (the node role's in the agent; eks-auth's own, and a chained hop's first session); with `LOG_SIGNABLE_BODY=true`, the body signed (a pod's token) |
//! | `aws_smithy_runtime` (and `_api`) | debug | at trace, each request as sent, headers and body (`{"token":…}`, the pod's token), and with `LOG_SENSITIVE_BODIES=true` each response body (credentials) |
//! | `aws_smithy_http` (and `_client`) | debug | at trace, event-stream messages and connector settings |
//! | `aws_runtime` | debug | at trace, the value of every AWS configuration variable read, and aws-chunked body frames |
//! | `aws_config` | debug | at trace, a `credential_process` command line unredacted ("command arguments can be logged at trace level", says its source) |
//! | `hyper`, `hyper_util` | info | at debug and trace, connection-pool keys (`scheme://authority`, with any `user:password@` in it) and connection errors; hyper 1 is built without its (unstable) tracing today |
//! | `h2` | debug | at trace, HPACK decoding, with the value of a header it rejects |
//! | `reqwest` | info | at debug, the proxy's URI (with the `user:password@` of `HTTPS_PROXY`); at trace with `connection_verbose`, every byte read and written |
//! | `rustls` | debug | at trace, every handshake message in full (a ClientHello with its session ticket and PSK identity) |
//! | `kube_client` | info | at debug, the body of a failed API response; at trace, response headers and `Status` bodies |
//!
//! A target is a prefix, as in an `EnvFilter` (`hyper` covers `hyper_rustls` too), and its
//! longest match decides. There is no switch to lift a cap: to see a canonical request, debug the
//! signer in a test, not in a production log. Both filters are layers on one registry, under the
//! line format, so `tracing::enabled!` (the agent's check before it writes a line straight to the
//! writer, [`write_direct`]) asks both as an event would.

use std::sync::OnceLock;

use std::io::Write as _;

use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

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

/// Library targets held at most at a level, whatever the level flag or the filter variable says;
/// see the module documentation for what each prints above its cap.
pub const CAPPED_TARGETS: &[(&str, LevelFilter)] = &[
    ("aws_sigv4", LevelFilter::OFF),
    ("aws_smithy_runtime", LevelFilter::DEBUG),
    ("aws_smithy_http", LevelFilter::DEBUG),
    ("aws_runtime", LevelFilter::DEBUG),
    ("aws_config", LevelFilter::DEBUG),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::DEBUG),
    ("reqwest", LevelFilter::INFO),
    ("rustls", LevelFilter::DEBUG),
    ("kube_client", LevelFilter::INFO),
];

/// [`CAPPED_TARGETS`] as a layer that can only disable: a filter of its own beside the binary's,
/// which an event must pass too.
#[derive(Debug)]
struct Caps(Targets);

impl Caps {
    fn new() -> Self {
        Self(
            Targets::new()
                .with_default(LevelFilter::TRACE)
                .with_targets(CAPPED_TARGETS.iter().copied()),
        )
    }

    fn allows(&self, metadata: &Metadata<'_>) -> bool {
        self.0.would_enable(metadata.target(), metadata.level())
    }
}

impl<S: Subscriber> Layer<S> for Caps {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.allows(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.allows(metadata)
    }

    // No `max_level_hint`: a cap only ever lowers a level, so the binary's filter gives the hint.
}

/// The subscriber [`Logger::init`] installs, writing to `writer`: `filter` and
/// [`CAPPED_TARGETS`] both decide, then the line is formatted as `format` says. Public so tests
/// see exactly what the binaries let through.
pub fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    writer: W,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    let lines = match format {
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .event_format(JsonLines::default())
            .boxed(),
        LogFormat::Text => lines.boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(Caps::new())
        .with(lines)
}

/// One binary's logger; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    /// An `EnvFilter` in this variable replaces the level and [`Logger::quiet`] (never
    /// [`CAPPED_TARGETS`]).
    pub filter_env: &'static str,
    /// Directives after the level, e.g. `hyper=warn`: libraries kept quieter than the level (an
    /// `EnvFilter` in [`Logger::filter_env`] replaces them; [`CAPPED_TARGETS`] hold regardless).
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

    /// The binary's own filter: an `EnvFilter` in [`Logger::filter_env`] when it holds a valid
    /// one, else `level` with [`Logger::quiet`]. [`CAPPED_TARGETS`] apply to either.
    pub fn filter(&self, level: &str) -> Result<EnvFilter, LogError> {
        let level = level_directive(level)?;
        Ok(EnvFilter::try_from_env(self.filter_env)
            .unwrap_or_else(|_| EnvFilter::new(format!("{level},{}", self.quiet))))
    }

    /// Install the global subscriber ([`subscriber`]) and start the writer thread. Keep the
    /// guard alive for the life of the process: dropping it writes out the lines still buffered.
    pub fn init(&self, level: &str, format: LogFormat) -> Result<LogGuard, LogError> {
        let filter = self.filter(level)?;
        let spawned = match self.output {
            Output::Stdout => LogWriter::spawn(std::io::stdout(), self.batch),
            Output::Stderr => LogWriter::spawn(std::io::stderr(), self.batch),
        };
        let (writer, guard) = spawned.map_err(LogError::WriterThread)?;
        subscriber(filter, format, writer.clone())
            .try_init()
            .map_err(|e| LogError::Install(Box::new(e)))?;
        if format == LogFormat::Json {
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
    use std::sync::Mutex;

    use super::*;

    fn untimed(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| match l.strip_prefix("{\"timestamp\":\"") {
                Some(rest) => rest.split_once('"').unwrap().1.to_string(),
                None => l.split_once(' ').unwrap().1.to_string(),
            })
            .collect()
    }

    /// What `emit` logs through the subscriber `make` builds over a file, each line without its
    /// timestamp.
    fn written(
        make: impl FnOnce(Mutex<std::fs::File>) -> Box<dyn Subscriber + Send + Sync>,
        emit: fn(),
    ) -> Vec<String> {
        let file = tempfile::NamedTempFile::new().unwrap();
        let subscriber = make(Mutex::new(file.reopen().unwrap()));
        tracing::subscriber::with_default(subscriber, emit);
        untimed(&std::fs::read_to_string(file.path()).unwrap())
    }

    /// What the libraries that sign and send requests log, and a line of ours.
    fn emit_library_lines() {
        tracing::trace!(
            target: "aws_sigv4::http_request::sign",
            canonical_request = "x-amz-security-token:SECRET-sigv4",
            "calculated signing parameters"
        );
        tracing::error!(target: "aws_sigv4", "SECRET-sigv4-error");
        tracing::trace!(
            target: "aws_smithy_runtime::client::orchestrator",
            request = "SECRET-body",
            "transmitting request"
        );
        tracing::debug!(
            target: "aws_smithy_runtime::client::orchestrator",
            "beginning attempt #1"
        );
        tracing::trace!(target: "aws_runtime::env_config", "SECRET-env");
        tracing::trace!(target: "aws_config::credential_process", "SECRET-command");
        tracing::debug!(target: "hyper_util::client::legacy::pool", "SECRET-authority");
        tracing::debug!(target: "reqwest::connect", "SECRET-proxy");
        tracing::trace!(target: "rustls::client::hs", "SECRET-hello");
        tracing::debug!(target: "rustls::client::hs", "Using ciphersuite");
        tracing::debug!(target: "kube_client::client", "SECRET-status");
        tracing::info!(target: "kube_client::client", "kube info");
        tracing::trace!(target: "pod_identity_agent::server", "ours at trace");
    }

    #[test]
    fn no_level_or_filter_lifts_a_cap() {
        let lifting_all: String = CAPPED_TARGETS
            .iter()
            .map(|(target, _)| format!("{target}=trace,"))
            .collect();
        for filter in ["trace", &format!("{lifting_all}trace"), "aws_sigv4=trace"] {
            for format in [LogFormat::Json, LogFormat::Text] {
                let lines = written(
                    |w| Box::new(subscriber(EnvFilter::new(filter), format, w)),
                    emit_library_lines,
                );
                let text = lines.join("\n");
                assert!(!text.contains("SECRET"), "{filter} {format:?}: {text}");
                if filter != "aws_sigv4=trace" {
                    for allowed in [
                        "beginning attempt #1",
                        "Using ciphersuite",
                        "kube info",
                        "ours at trace",
                    ] {
                        assert!(text.contains(allowed), "{filter} {format:?}: {text}");
                    }
                }
            }
        }
    }

    #[test]
    fn caps_are_the_levels_the_table_gives() {
        let caps = Caps::new();
        let levels = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ];
        for (target, cap) in CAPPED_TARGETS {
            for level in &levels {
                let child = format!("{target}::inner");
                assert_eq!(
                    caps.0.would_enable(&child, level),
                    cap >= level,
                    "{child} {level}"
                );
            }
        }
        assert!(
            caps.0
                .would_enable("pod_identity_agent::server", &Level::TRACE)
        );
        assert!(!caps.0.would_enable("hyper_rustls", &Level::DEBUG));
        assert!(caps.0.would_enable("eks_auth::sts", &Level::TRACE));
    }

    /// `tracing::enabled!` asks both filters, as an event would.
    #[test]
    fn enabled_asks_both_filters() {
        let check = || {
            (
                tracing::enabled!(target: "aws_sigv4::sign", Level::ERROR),
                tracing::enabled!(target: "aws_smithy_runtime::x", Level::TRACE),
                tracing::enabled!(target: "aws_smithy_runtime::x", Level::DEBUG),
                tracing::enabled!(target: "pod_identity_agent::server", Level::INFO),
                tracing::enabled!(target: "pod_identity_agent::server", Level::DEBUG),
            )
        };
        let with = |filter: &str| {
            let subscriber = subscriber(EnvFilter::new(filter), LogFormat::Json, std::io::sink);
            tracing::subscriber::with_default(subscriber, check)
        };
        assert_eq!(with("trace"), (false, false, true, true, true));
        assert_eq!(with("info"), (false, false, false, true, false));
        assert_eq!(with("warn"), (false, false, false, false, false));
    }

    /// Every event, at every level, inside and outside a span.
    fn emit_ours() {
        tracing::info!(
            s = "quote \" and \\ é",
            n = 5u64,
            f = 0.5f64,
            b = true,
            d = ?vec!["x"],
            k8s.namespace = "dotted",
            "message {}",
            42
        );
        tracing::warn!("plain");
        tracing::error!(empty = "", "");
        tracing::debug!(n = 0u64);
        tracing::trace!("trace");
        let span = tracing::info_span!("req", k = 1);
        let _in = span.enter();
        tracing::info!(x = 1, "in a span");
    }

    /// The layered subscriber writes the bytes the single `fmt` subscriber it replaced wrote.
    #[test]
    fn lines_are_the_bytes_of_the_subscriber_before_the_caps() {
        for format in [LogFormat::Json, LogFormat::Text] {
            let before = written(
                |w| {
                    let builder = tracing_subscriber::fmt()
                        .with_env_filter(EnvFilter::new("trace"))
                        .with_writer(w)
                        .with_target(false);
                    match format {
                        LogFormat::Json => Box::new(
                            builder
                                .json()
                                .flatten_event(true)
                                .with_current_span(false)
                                .event_format(JsonLines::default())
                                .finish(),
                        ),
                        LogFormat::Text => Box::new(builder.finish()),
                    }
                },
                emit_ours,
            );
            let now = written(
                |w| Box::new(subscriber(EnvFilter::new("trace"), format, w)),
                emit_ours,
            );
            assert_eq!(before.len(), 6, "{before:?}");
            assert_eq!(now, before, "{format:?}");
        }
    }

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
