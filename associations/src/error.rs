//! Why the store could not start. Each variant names the path that failed.

use std::path::PathBuf;

use pod_identity_contracts::{AssociationError, RolePolicyError};

/// A configured source that cannot serve at start-up: the caller should exit with the message
/// rather than run with associations silently missing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read associations file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("associations file {path} is invalid: {source}")]
    InvalidFile {
        path: PathBuf,
        #[source]
        source: AssociationError,
    },
    #[error("cannot read role policy {path}: {source}")]
    ReadRolePolicy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("role policy {path} is invalid: {source}")]
    InvalidRolePolicy {
        path: PathBuf,
        #[source]
        source: RolePolicyError,
    },
    #[error(
        "no association source configured: set an associations file, a Kubernetes client, or both"
    )]
    NoSources,
}
