//! The writer behind the logger: log lines are appended to one bounded in-memory buffer and a
//! single thread writes the buffer out in batches, so a request never waits on stdout, never wakes
//! another thread per line, and never makes a system call to log.
//!
//! - **Append.** The logger formats each event into its own (thread-local, reused) buffer and hands
//!   the whole line to [`LineWriter::write`], which copies it into the shared buffer under a mutex
//!   held only for the copy.
//! - **Flush.** The writer thread sleeps until the buffer goes from empty to non-empty, then lets
//!   more lines join for up to [`BatchConfig::interval`] (or until [`BatchConfig::flush_bytes`]
//!   are waiting), swaps the buffer for its spare one and writes the batch with one `write_all`.
//!   Under load that is one wake-up and one system call per few hundred lines; idle, nothing runs.
//! - **Bounded.** The buffer never holds more than [`BatchConfig::capacity`] bytes. A line that
//!   does not fit (the output is slower than the process logs) is dropped whole, never blocked
//!   on, and counted: [`LogWriter::dropped`] (which a binary may export as a metric, as the agent
//!   does with `pod_identity_log_lines_dropped`), and a warning in the log at most every
//!   [`DROP_WARNING_EVERY`]. Each buffer keeps at most [`RETAINED_BYTES`] allocated between
//!   batches: a larger capacity is reached only while the output stalls, and given back after.
//! - **Shutdown.** Dropping the [`LogGuard`] writes out every line still buffered and stops the
//!   thread; a line logged after that is written straight to the sink.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Longest time between two drop warnings.
pub const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Longest a dropped [`LogGuard`] waits for the buffered lines to be written: an output that has
/// stopped reading must not hold the process past its shutdown.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Most bytes each of the two buffers keeps allocated between batches. A capacity up to this is
/// allocated up front, so appending a line never allocates; beyond it, a buffer grows only while
/// the output stalls and is shrunk back once written.
pub const RETAINED_BYTES: usize = 1024 * 1024;

/// How lines are batched.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most bytes buffered; a line that would go beyond is dropped.
    pub capacity: usize,
    /// Write at once when this much is waiting.
    pub flush_bytes: usize,
    /// Otherwise write this long after the first line of a batch arrived.
    pub interval: Duration,
}

impl BatchConfig {
    /// 4 MiB (about 7,500 of the agent's request lines: 75 ms at its peak rate), written every
    /// 32 KiB or 5 ms. Room for a writer thread or a log reader that falls a few milliseconds
    /// behind on a saturated node: 256 KiB dropped 4% of the agent's lines at 100k requests/s on
    /// two cores. Only the pages the lines reach become resident, so under steady load a batch
    /// holds about 32 KiB, and only a stalled output fills the buffer.
    pub const DEFAULT: Self = Self {
        capacity: 4 * 1024 * 1024,
        flush_bytes: 32 * 1024,
        interval: Duration::from_millis(5),
    };
}

impl Default for BatchConfig {
    /// [`BatchConfig::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

struct Pending {
    bytes: Vec<u8>,
    closed: bool,
    /// The sink, handed back by the writer thread as it stops, for lines logged after that.
    sink: Option<Box<dyn Write + Send>>,
}

struct Shared {
    config: BatchConfig,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Signalled when the writer thread has handed the sink back and stopped.
    stopped: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves at worst a partial line: keep logging.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's handle: a [`MakeWriter`] for the logger, and the count of dropped lines.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("config", &self.shared.config)
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Stops the writer thread when dropped, after it has written every buffered line.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Start the writer thread, writing batches to `sink`.
    pub fn spawn<W: Write + Send + 'static>(
        sink: W,
        config: BatchConfig,
    ) -> io::Result<(Self, LogGuard)> {
        let capacity = config.capacity.max(1);
        let config = BatchConfig {
            capacity,
            flush_bytes: config.flush_bytes.clamp(1, capacity),
            ..config
        };
        let shared = Arc::new(Shared {
            config,
            pending: Mutex::new(Pending {
                bytes: Vec::with_capacity(capacity.min(RETAINED_BYTES)),
                closed: false,
                sink: None,
            }),
            wake: Condvar::new(),
            stopped: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let sink: Box<dyn Write + Send> = Box::new(sink);
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || write_batches(&shared, sink))?
        };
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            LogGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped since start because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LogGuard {
    /// Waits at most [`SHUTDOWN_WAIT`]; past that the thread is left to the process's exit.
    fn drop(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut pending = self.shared.lock();
        pending.closed = true;
        self.shared.wake.notify_one();
        while pending.sink.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            pending = self
                .shared
                .stopped
                .wait_timeout(pending, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(pending);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's writer: the logger calls `write_all` once with the whole formatted line.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl std::fmt::Debug for LineWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWriter").finish_non_exhaustive()
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = self.shared;
        let mut pending = shared.lock();
        if let Some(sink) = pending.sink.as_mut() {
            // The writer thread is gone (shutdown): write this late line ourselves.
            let _ = sink.write_all(line).and_then(|()| sink.flush());
            return Ok(line.len());
        }
        // Closed but the thread still writing its last batch: the line joins that batch.
        let before = pending.bytes.len();
        if before + line.len() > shared.config.capacity {
            drop(pending);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            // Report it written: the logger must never retry or block on a full buffer.
            return Ok(line.len());
        }
        pending.bytes.extend_from_slice(line);
        let after = pending.bytes.len();
        drop(pending);
        // Wake the writer only to start a batch or to cut one short, never per line.
        if before == 0 || (before < shared.config.flush_bytes && after >= shared.config.flush_bytes)
        {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

/// The writer thread: wait for a batch, swap buffers, write, repeat until closed and empty.
fn write_batches(shared: &Shared, mut sink: Box<dyn Write + Send>) {
    let config = shared.config;
    let mut spare: Vec<u8> = Vec::with_capacity(config.capacity.min(RETAINED_BYTES));
    let mut reported = 0;
    let mut last_warning: Option<Instant> = None;
    loop {
        let closed = {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && !pending.closed {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            // A batch has started: let more lines join it.
            let deadline = Instant::now() + config.interval;
            while !pending.closed && pending.bytes.len() < config.flush_bytes {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                pending = shared
                    .wake
                    .wait_timeout(pending, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut spare);
            pending.closed
        };
        if !spare.is_empty() {
            // Nowhere to report a failing stdout but stdout: the batch is lost, keep going.
            let _ = sink.write_all(&spare).and_then(|()| sink.flush());
            spare.clear();
            spare.shrink_to(RETAINED_BYTES);
        }
        if closed {
            // Lines may have arrived between the swap and now. Write them and hand the sink back
            // under one lock, so no late line falls between the two.
            let mut pending = shared.lock();
            let rest = std::mem::take(&mut pending.bytes);
            let _ = sink.write_all(&rest).and_then(|()| sink.flush());
            pending.sink = Some(sink);
            shared.stopped.notify_all();
            return;
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > reported && last_warning.is_none_or(|t| t.elapsed() >= DROP_WARNING_EVERY) {
            // Goes through the logger into the now empty buffer, like any other line.
            tracing::warn!(
                dropped_lines = dropped - reported,
                dropped_total = dropped,
                "the log output is not keeping up: log lines were dropped"
            );
            reported = dropped;
            last_warning = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each `write_all` batch and can be held shut.
    #[derive(Clone, Default)]
    struct Sink {
        batches: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.batches.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.batches.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.batches.lock().unwrap().len()
        }
    }

    fn line(writer: &LogWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    /// A writer to `sink` with `capacity`, `flush_bytes` and `interval`.
    fn spawn(
        sink: &Sink,
        capacity: usize,
        flush_bytes: usize,
        interval: Duration,
    ) -> (LogWriter, LogGuard) {
        let config = BatchConfig {
            capacity,
            flush_bytes,
            interval,
        };
        LogWriter::spawn(sink.clone(), config).unwrap()
    }

    /// Wait (at most 10 s) until `done`.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Shut the sink and log `first`: the writer thread takes it and blocks on the sink until the
    /// returned lock is dropped, while later lines wait in the buffer.
    fn stall<'a>(writer: &LogWriter, sink: &'a Sink, first: &str) -> MutexGuard<'a, ()> {
        let shut = sink.gate.lock().unwrap();
        line(writer, first);
        until("the writer thread takes the first line", || {
            writer.shared.lock().bytes.is_empty()
        });
        shut
    }

    #[test]
    fn batches_lines_into_few_writes_and_flushes_all_on_drop() {
        let sink = Sink::default();
        let (writer, guard) = spawn(&sink, 1 << 20, 1 << 20, Duration::from_secs(3600));
        for i in 0..1000 {
            line(&writer, &format!("line {i}\n"));
        }
        // Nothing is due yet (an hour's interval, 1 MiB threshold): all of it waits.
        assert_eq!(sink.writes(), 0);
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.starts_with("line 0\nline 1\n") && text.ends_with("line 999\n"));
        assert_eq!(sink.writes(), 1, "one batch, one write");
        assert_eq!(writer.dropped(), 0);
        // After shutdown a late line is not lost (it goes straight to the sink) and not counted
        // as dropped.
        line(&writer, "late\n");
        assert_eq!(writer.dropped(), 0);
        assert_eq!(sink.writes(), 2);
        assert!(sink.text().ends_with("line 999\nlate\n"));
    }

    #[test]
    fn writes_within_the_interval_without_being_asked() {
        let sink = Sink::default();
        let d = BatchConfig::DEFAULT;
        let (writer, _guard) = spawn(&sink, d.capacity, d.flush_bytes, Duration::from_millis(5));
        line(&writer, "one\n");
        line(&writer, "two\n");
        until("both lines written", || sink.text() == "one\ntwo\n");
    }

    #[test]
    fn a_full_buffer_drops_whole_lines_counts_them_and_never_blocks() {
        let sink = Sink::default();
        let (writer, guard) = spawn(&sink, 100, 10, Duration::ZERO);
        // Declared after the guard so that it opens first if an assertion fails.
        let shut = stall(&writer, &sink, "first----\n");
        // Ten 10-byte lines fill the 100 bytes; the other 40 are dropped at once, whole.
        let started = Instant::now();
        for i in 0..50 {
            line(&writer, &format!("line-{i:04}\n"));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(writer.dropped(), 40);
        drop(shut);
        drop(guard);
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert!(
            lines.iter().all(|l| l.len() == 9),
            "no partial lines: {text}"
        );
        assert_eq!(lines[10], "line-0009");
    }

    #[test]
    fn a_buffer_grown_by_a_stall_is_given_back_once_written() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(
            &sink,
            4 * RETAINED_BYTES,
            4 * RETAINED_BYTES,
            Duration::ZERO,
        );
        let shut = stall(&writer, &sink, "first\n");
        // Two MiB pile up in one buffer.
        let chunk = format!("{}\n", "x".repeat(64 * 1024 - 1));
        for _ in 0..32 {
            line(&writer, &chunk);
        }
        assert!(writer.shared.lock().bytes.capacity() > RETAINED_BYTES);
        drop(shut);
        let total = 6 + 2 * RETAINED_BYTES;
        until("the stalled lines written", || sink.text().len() == total);
        // One more batch swaps the written buffer back in: shrunk.
        line(&writer, "after\n");
        until("the last line written", || sink.text().len() == total + 6);
        assert!(writer.shared.lock().bytes.capacity() <= RETAINED_BYTES);
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn an_output_that_stopped_reading_holds_shutdown_no_longer_than_the_wait() {
        let sink = Sink::default();
        let (writer, guard) = spawn(&sink, 1 << 20, 1 << 20, Duration::ZERO);
        let shut = stall(&writer, &sink, "blocked\n");
        line(&writer, "waiting\n");
        let started = Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(waited >= SHUTDOWN_WAIT, "{waited:?}");
        assert!(
            waited < SHUTDOWN_WAIT + Duration::from_secs(3),
            "{waited:?}"
        );
        // The output reads again: the thread, left behind, still writes everything out.
        drop(shut);
        until("the buffered line written", || {
            sink.text() == "blocked\nwaiting\n"
        });
    }
}
