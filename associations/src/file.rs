//! Files read at start, then polled by content hash: the associations file and the role policy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_identity_contracts::{AssociationError, AssociationSet};
use sha2::{Digest, Sha256};
use tokio::time::MissedTickBehavior;

use crate::{AssociationStore, SourceKind, StoreError};

/// What the last poll saw, so an unchanged file (or an unchanged failure) is not re-applied or
/// re-logged on every tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Content([u8; 32]),
    ReadError(String),
}

#[derive(Debug)]
pub(crate) struct Initial {
    pub(crate) set: AssociationSet,
    pub(crate) seen: Seen,
}

/// The file's bytes and what [`poll`] should compare later reads with.
pub(crate) async fn read_initial(path: &Path) -> std::io::Result<(Vec<u8>, Seen)> {
    let bytes = tokio::fs::read(path).await?;
    let seen = Seen::Content(Sha256::digest(&bytes).into());
    Ok((bytes, seen))
}

pub(crate) async fn load_initial(path: &Path) -> Result<Initial, StoreError> {
    let (bytes, seen) = read_initial(path)
        .await
        .map_err(|source| StoreError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
    let set = parse(&bytes).map_err(|source| StoreError::InvalidFile {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(path = %path.display(), entries = set.len(), "associations file loaded");
    Ok(Initial { set, seen })
}

fn parse(bytes: &[u8]) -> Result<AssociationSet, AssociationError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| AssociationError::Parse(format!("not UTF-8: {e}")))?;
    AssociationSet::from_yaml(text)
}

/// Poll forever. Reading follows symlinks, so a ConfigMap's `..data` swap is just a new content.
pub(crate) async fn watch(path: PathBuf, every: Duration, seen: Seen, store: AssociationStore) {
    poll(&path, every, seen, |bytes| match bytes
        .and_then(|bytes| parse(&bytes).map_err(|e| e.to_string()))
    {
        Ok(set) => {
            tracing::info!(path = %path.display(), entries = set.len(), "associations file reloaded");
            store.apply(SourceKind::File, set, Vec::new());
        }
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %error,
                "associations file not reloaded; keeping the last good set"
            );
            store.record_error(SourceKind::File, error);
        }
    })
    .await
}

/// Read `path` every `every`, and hand each content (or read failure) that differs from the last
/// one seen to `changed`.
pub(crate) async fn poll(
    path: &Path,
    every: Duration,
    mut seen: Seen,
    mut changed: impl FnMut(Result<Vec<u8>, String>),
) {
    // `interval` panics on zero; a zero setting means "as often as sensible".
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the file was just loaded
    loop {
        ticker.tick().await;
        let (now, bytes) = match tokio::fs::read(path).await {
            Ok(bytes) => (Seen::Content(Sha256::digest(&bytes).into()), Ok(bytes)),
            Err(e) => (
                Seen::ReadError(e.to_string()),
                Err(format!("cannot read: {e}")),
            ),
        };
        if now == seen {
            continue;
        }
        seen = now;
        changed(bytes);
    }
}
