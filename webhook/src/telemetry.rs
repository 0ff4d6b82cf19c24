//! Logging setup: JSON lines on stdout in production (one per request), text for a terminal.
//!
//! Lines go into a shared buffer that one background thread writes out every
//! [`FLUSH_INTERVAL`], in one write: a request never waits for stdout and never wakes another
//! thread (waking a writer thread per line cost more CPU than formatting the line). A line
//! appears at most one interval late; if stdout stops taking lines, at most
//! [`MAX_BUFFERED_BYTES`] wait and the rest are dropped (and counted on stderr) rather than
//! stalling requests.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use std::cell::RefCell;

use serde::Serializer as _;
use serde::ser::SerializeMap as _;
use tracing::{Event, Subscriber};
use tracing_serde::{AsSerde as _, SerdeMapVisitor};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// How often the buffered lines are written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Lines waiting beyond this are dropped.
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

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
/// writes out the lines still buffered.
/// `to_stderr` is for the offline subcommands, whose stdout is their output.
pub fn init(verbosity: &str, format: LogFormat, to_stderr: bool) -> Result<LogGuard, String> {
    let level = level_filter(verbosity)?;
    let filter = EnvFilter::try_from_env("POD_IDENTITY_WEBHOOK_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hyper=warn,kube=warn,rustls=warn")));
    let out: Box<dyn Write + Send> = if to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let (writer, guard) = BatchWriter::start(out, FLUSH_INTERVAL);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
    Ok(guard)
}

/// `tracing_subscriber`'s JSON line (`json().flatten_event(true)`, no target, no current span),
/// serialized by the same visitor straight into a reused byte buffer rather than through a
/// `fmt::Write` adaptor that checks every small write as UTF-8: the same bytes for about half the
/// CPU. An event inside a span goes to the stock formatter, which adds the span list.
#[derive(Debug)]
pub struct JsonLines {
    stock: Format<Json, SystemTime>,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self {
            stock: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_target(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if event.parent().is_some() || ctx.lookup_current().is_some() {
            return self.stock.format_event(ctx, writer, event);
        }
        thread_local! {
            static LINE: RefCell<(String, Vec<u8>)> = const { RefCell::new((String::new(), Vec::new())) };
        }
        let mut format = |(timestamp, line): &mut (String, Vec<u8>)| -> std::fmt::Result {
            timestamp.clear();
            line.clear();
            SystemTime.format_time(&mut Writer::new(timestamp))?;
            let mut json = serde_json::Serializer::new(&mut *line);
            let mut map = json.serialize_map(None).map_err(|_| std::fmt::Error)?;
            map.serialize_entry("timestamp", timestamp.as_str())
                .map_err(|_| std::fmt::Error)?;
            map.serialize_entry("level", &event.metadata().level().as_serde())
                .map_err(|_| std::fmt::Error)?;
            let mut fields = SerdeMapVisitor::new(map);
            event.record(&mut fields);
            let map = fields.take_serializer().map_err(|_| std::fmt::Error)?;
            map.end().map_err(|_| std::fmt::Error)?;
            writer.write_str(std::str::from_utf8(line).map_err(|_| std::fmt::Error)?)?;
            writeln!(writer)
        };
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffers) => format(&mut buffers),
            // An event logged while formatting another: fresh buffers.
            Err(_) => format(&mut (String::new(), Vec::new())),
        })
    }
}

/// Appends each log line to the shared buffer; see the module documentation.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stop: Mutex<bool>,
    stopped: Condvar,
}

/// Stops the writer thread and writes out what is still buffered when dropped.
#[derive(Debug)]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// The writer and the guard of its thread, which writes to `out` every `interval`.
    pub fn start(mut out: Box<dyn Write + Send>, interval: Duration) -> (Self, LogGuard) {
        let shared = Arc::new(Shared::default());
        let flusher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    let stop = flusher.stop.lock().unwrap_or_else(PoisonError::into_inner);
                    let (stop, _) = flusher
                        .stopped
                        .wait_timeout_while(stop, interval, |stop| !*stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    let last = *stop;
                    drop(stop);
                    flusher.write_out(&mut out, &mut spare);
                    if last {
                        break;
                    }
                }
            })
            .ok();
        let guard = LogGuard {
            shared: shared.clone(),
            thread,
        };
        (Self { shared }, guard)
    }
}

impl Shared {
    /// Swap the buffer for the spare one and write it out, outside the lock.
    fn write_out(&self, out: &mut dyn Write, spare: &mut Vec<u8>) {
        {
            let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.is_empty() {
                return;
            }
            std::mem::swap(&mut *lines, spare);
        }
        let _ = out.write_all(spare);
        let _ = out.flush();
        spare.clear();
        // Do not keep a burst's worth of memory forever.
        spare.shrink_to(1024 * 1024);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            eprintln!(
                "pod-identity-webhook: {dropped} log lines dropped: the log output is not keeping up"
            );
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut lines = self
            .shared
            .lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if lines.len() + buf.len() > MAX_BUFFERED_BYTES {
            drop(lines);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.stopped.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file to write to and what it holds.
    fn sink() -> (tempfile::NamedTempFile, Box<dyn Write + Send>) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let out = Box::new(file.reopen().unwrap());
        (file, out)
    }

    /// The same events through the stock JSON format and through [`JsonLines`]: the lines are
    /// byte for byte the same but for the timestamp.
    #[test]
    fn json_lines_are_the_stock_json_lines() {
        fn lines(fast: bool) -> Vec<String> {
            let (file, out) = sink();
            let (writer, guard) = BatchWriter::start(out, Duration::from_secs(3600));
            let builder = tracing_subscriber::fmt()
                .with_writer(writer)
                .with_target(false)
                .json()
                .flatten_event(true)
                .with_current_span(false);
            let emit = || {
                let err = std::io::Error::other("disk \"full\"");
                tracing::info!(
                    s = "quote \" backslash \\ control \u{1} newline \n é",
                    n = 5u64,
                    i = -3i64,
                    f = 0.125f64,
                    nan = f64::NAN,
                    b = true,
                    d = ?vec!["w"],
                    p = %"shown",
                    e = &err as &dyn std::error::Error,
                    "message {}",
                    42
                );
                tracing::warn!("plain");
                let span = tracing::info_span!("req", k = 1);
                {
                    let _in = span.enter();
                    tracing::info!(x = 1, "in a span");
                }
                tracing::info!(parent: &span, "explicit parent");
                tracing::info!(parent: None, "root");
            };
            if fast {
                let subscriber = builder.event_format(JsonLines::default()).finish();
                tracing::subscriber::with_default(subscriber, emit);
            } else {
                tracing::subscriber::with_default(builder.finish(), emit);
            }
            drop(guard);
            let text = std::fs::read_to_string(file.path()).unwrap();
            text.lines()
                .map(|l| {
                    let (head, rest) = l.split_once("\",\"level\"").unwrap();
                    assert!(head.starts_with("{\"timestamp\":\""), "{l}");
                    rest.to_string()
                })
                .collect()
        }
        let stock = lines(false);
        assert_eq!(stock.len(), 5);
        assert!(stock[2].contains("\"spans\""), "{}", stock[2]);
        assert_eq!(lines(true), stock);
    }

    #[test]
    fn lines_are_written_out_within_the_interval_and_on_drop() {
        let (file, out) = sink();
        let (writer, guard) = BatchWriter::start(out, Duration::from_millis(5));
        writer.make_writer().write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read(file.path()).unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written out");
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.make_writer().write_all(b"two\n").unwrap();
        drop(guard);
        assert_eq!(std::fs::read(file.path()).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_growing() {
        // An interval longer than the test: nothing is written out until the guard drops.
        let (file, out) = sink();
        let (writer, guard) = BatchWriter::start(out, Duration::from_secs(3600));
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..20 {
            writer.make_writer().write_all(&line).unwrap();
        }
        assert_eq!(writer.shared.dropped.load(Ordering::Relaxed), 4);
        drop(guard);
        assert_eq!(
            std::fs::read(file.path()).unwrap().len(),
            MAX_BUFFERED_BYTES
        );
    }
}
