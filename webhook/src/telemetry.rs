//! The webhook's logger: JSON lines (one per review) in production, text for a terminal, set up
//! by [`pod_identity_runtime::logger`]; `POD_IDENTITY_WEBHOOK_LOG` overrides the filter.
//!
//! Lines go into a bounded buffer that one thread writes out at most [`FLUSH_INTERVAL`] after
//! they arrive: a request never waits for the output and never wakes another thread. If the
//! output stops taking lines, at most [`MAX_BUFFERED_BYTES`] wait and the rest are dropped (and
//! counted in a warning) rather than stalling requests.

use std::time::Duration;

use pod_identity_runtime::log_writer::{BatchConfig, LogGuard, RETAINED_BYTES};
use pod_identity_runtime::logger::{LogError, LogFormat, Logger, Output};

/// Longest time a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Lines waiting beyond this are dropped.
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// The webhook's logger, to stdout. A batch is also written once it reaches half a buffer's
/// retained size, so a burst does not grow the buffer while the output keeps up.
pub const LOGGER: Logger = Logger::new(
    "POD_IDENTITY_WEBHOOK_LOG",
    "hyper=warn,kube=warn,rustls=warn",
)
.batch(BatchConfig {
    capacity: MAX_BUFFERED_BYTES,
    flush_bytes: RETAINED_BYTES / 2,
    interval: FLUSH_INTERVAL,
});

/// Install the global subscriber. Keep the guard alive for the life of the process: dropping it
/// writes out the lines still buffered. `to_stderr` is for the offline subcommands, whose stdout
/// is their output.
pub fn init(level: &str, format: LogFormat, to_stderr: bool) -> Result<LogGuard, LogError> {
    let output = if to_stderr {
        Output::Stderr
    } else {
        Output::Stdout
    };
    LOGGER.output(output).init(level, format)
}
