//! The agent's logger: JSON lines on stdout in production (one per request), text for a
//! terminal, set up by [`pod_identity_runtime::logger`]; `POD_IDENTITY_AGENT_LOG` overrides the
//! filter. Lines go through a bounded buffer that one thread writes out in batches, so a slow
//! stdout never stalls a request; [`dropped_lines`] counts what it had to drop.

use pod_identity_runtime::logger::Logger;
pub use pod_identity_runtime::logger::dropped_lines;

/// The agent's logger (the level comes from `-v`).
pub const LOGGER: Logger = Logger::new(
    "POD_IDENTITY_AGENT_LOG",
    "aws_smithy_runtime=warn,aws_config=warn,hyper=warn",
);
