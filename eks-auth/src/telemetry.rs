//! eks-auth's logger, as the agent's: JSON lines on stdout (one audit line per exchange), text
//! for a terminal, set up by [`pod_identity_runtime::logger`] with its batching writer, so a slow
//! stdout never stalls a request; `EKS_AUTH_LOG` overrides the filter.

use pod_identity_runtime::logger::Logger;

/// eks-auth's logger (the level comes from `--log-level`). Its lines are the audit trail of
/// every exchange: the default buffer holds 4 MiB of them (about 6,000 lines) before a stalled
/// stdout costs one.
pub const LOGGER: Logger = Logger::new(
    "EKS_AUTH_LOG",
    "aws_smithy_runtime=warn,aws_config=warn,hyper=warn,reqwest=warn",
);
