//! The association store shared by the webhook and eks-auth: which IAM role a
//! (namespace, service account) pair gets.
//!
//! This crate owns loading associations and keeping them current; the model itself
//! ([`Association`], [`AssociationSet`]) lives in `pod-identity-contracts`. Two sources:
//!
//! - **A YAML file** in the contracts format, checked at [`AssociationStore::start`] (a missing or
//!   invalid file fails fast, naming the path and the entry) and then polled by content hash every
//!   [`Sources::file_poll_interval`]. Polling, not inotify: Kubernetes ConfigMap mounts swap
//!   symlinks, which silently breaks inotify watches. A good edit replaces the file's set whole; a
//!   bad edit or a deleted file keeps the last good set and records the reason.
//! - **`PodIdentityAssociation` custom resources** ([`crd`]), cluster-scoped, watched through the
//!   Kubernetes API. An invalid object is skipped with a warning and never hides the others; two
//!   objects for the same service account: the older (creation time, then name) wins. On API
//!   errors the last good view stays and the watcher retries with backoff.
//!
//! **Merge rule:** the store serves file ∪ custom resources. When both define the same
//! (namespace, service account), the **file entry wins** (the file is what an operator wrote on
//! this deployment; a custom resource cannot override it) and the conflict is logged once each
//! time it appears or changes.
//!
//! **The role policy** ([`RolePolicyStore`]) is one more file, read and polled the same way, that
//! bounds which roles each namespace's associations may name; it is consulted beside the store,
//! not merged into it, so a refusal can say why instead of looking like a missing association.
//!
//! **Callers:** start once with [`AssociationStore::start`], keep the [`SourceTasks`] alive, serve
//! `/readyz` from [`AssociationStore::is_ready`] (false until the file loaded and the initial
//! custom-resource list completed), and clone the store into handlers. The Kubernetes source
//! needs a ClusterRole with `list` and `watch` on `podidentityassociations.podidentity.dev`;
//! without it the store stays not ready and [`StoreStatus`] shows the API error.
//!
//! Readers get lock-free-ish snapshots: [`AssociationStore::get`] and
//! [`AssociationStore::snapshot`] clone an `Arc` under a read lock held for nanoseconds; sources
//! rebuild the merged set off to the side and swap it in.

pub mod crd;
mod error;
mod file;
mod kube_source;
mod lookup;
mod role_policy;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use error::StoreError;
pub use kube_source::{AccessError, check_access};
pub use lookup::AssociationLookup;
pub use pod_identity_contracts::{Association, AssociationSet};
pub use role_policy::RolePolicyStore;
use tokio::task::JoinHandle;

/// Default for [`Sources::file_poll_interval`].
pub const DEFAULT_FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Which sources [`AssociationStore::start`] loads. At least one must be set.
#[derive(Clone)]
pub struct Sources {
    /// Associations file (contracts YAML format), hot-reloaded.
    pub file: Option<PathBuf>,
    /// How often the file is re-read and compared by content hash.
    pub file_poll_interval: Duration,
    /// Watch `PodIdentityAssociation` custom resources with this client.
    pub kube: Option<kube::Client>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            file: None,
            file_poll_interval: DEFAULT_FILE_POLL_INTERVAL,
            kube: None,
        }
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("file", &self.file)
            .field("file_poll_interval", &self.file_poll_interval)
            .field("kube", &self.kube.as_ref().map(|_| "kube::Client"))
            .finish()
    }
}

/// Owns the background tasks that keep the store current. Dropping it stops them (the store
/// then keeps serving its last view); [`SourceTasks::shutdown`] also waits for them to end.
#[derive(Debug, Default)]
pub struct SourceTasks {
    handles: Vec<JoinHandle<()>>,
}

impl SourceTasks {
    /// Stop every source task and wait until they have ended.
    pub async fn shutdown(mut self) {
        let handles = std::mem::take(&mut self.handles);
        for handle in &handles {
            handle.abort();
        }
        for handle in handles {
            let _ = handle.await;
        }
    }
}

impl Drop for SourceTasks {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// What one source contributes, for `/readyz` and debugging.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceStatus {
    /// The source has produced a complete set at least once.
    pub loaded: bool,
    /// Entries in the source's current set (before merging).
    pub entries: usize,
    /// Why the latest reload or watch failed; `None` once a new set is applied.
    pub last_error: Option<String>,
    /// Sets applied so far (1 after the initial load); bumps on every accepted change.
    pub generation: u64,
    /// Objects skipped as invalid, as `name: reason` (custom resources only; a bad file is
    /// refused whole and shows in `last_error`).
    pub rejected: Vec<String>,
}

/// The whole store's status: one entry per configured source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreStatus {
    /// `None` when no file is configured.
    pub file: Option<SourceStatus>,
    /// `None` when no Kubernetes client is configured.
    pub kube: Option<SourceStatus>,
    /// Entries in the merged view.
    pub entries: usize,
    /// Merged views built so far; bumps whenever any source applies a set.
    pub generation: u64,
    /// Keys (`namespace/serviceAccount`) defined by both sources, where the file entry won.
    pub conflicts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    File,
    Kube,
}

/// The association store. Cheap to clone; every clone sees the same, current view.
#[derive(Clone, Debug)]
pub struct AssociationStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    view: RwLock<Arc<AssociationSet>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    file: Option<SourceState>,
    kube: Option<SourceState>,
    generation: u64,
    /// Key → (file entry, custom-resource entry) for keys both sources define.
    conflicts: BTreeMap<(String, String), (Association, Association)>,
}

#[derive(Debug, Default)]
struct SourceState {
    set: Arc<AssociationSet>,
    status: SourceStatus,
}

impl AssociationStore {
    /// A static store that never changes (tests, the lab, the webhook's `mutate` subcommand).
    pub fn from_set(set: AssociationSet) -> Self {
        let set = Arc::new(set);
        let state = State {
            generation: 1,
            ..State::default()
        };
        Self {
            shared: Arc::new(Shared {
                view: RwLock::new(set),
                state: Mutex::new(state),
            }),
        }
    }

    /// Load the configured sources and start keeping them current.
    ///
    /// Fails when no source is configured, or when the file is missing or invalid. The
    /// Kubernetes source does not block here: the store is not [ready](Self::is_ready) until its
    /// initial list completed.
    pub async fn start(sources: Sources) -> Result<(AssociationStore, SourceTasks), StoreError> {
        if sources.file.is_none() && sources.kube.is_none() {
            return Err(StoreError::NoSources);
        }
        let initial_file = match &sources.file {
            Some(path) => Some(file::load_initial(path).await?),
            None => None,
        };
        let state = State {
            file: sources.file.as_ref().map(|_| SourceState::default()),
            kube: sources.kube.as_ref().map(|_| SourceState::default()),
            ..State::default()
        };
        let store = Self {
            shared: Arc::new(Shared {
                view: RwLock::new(Arc::new(AssociationSet::default())),
                state: Mutex::new(state),
            }),
        };
        let mut tasks = SourceTasks::default();
        if let (Some(path), Some(initial)) = (sources.file, initial_file) {
            store.apply(SourceKind::File, initial.set, Vec::new());
            tasks.handles.push(tokio::spawn(file::watch(
                path,
                sources.file_poll_interval,
                initial.seen,
                store.clone(),
            )));
        }
        if let Some(client) = sources.kube {
            tasks
                .handles
                .push(tokio::spawn(kube_source::watch(client, store.clone())));
        }
        Ok((store, tasks))
    }

    /// The association for this service account, if any.
    pub fn get(&self, namespace: &str, service_account: &str) -> Option<Association> {
        self.snapshot().get(namespace, service_account).cloned()
    }

    /// The merged view as it is now; later changes do not affect it.
    pub fn snapshot(&self) -> Arc<AssociationSet> {
        self.shared
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every configured source has loaded once. Serve `/readyz` from this: before it, a missing
    /// association may only mean "not loaded yet".
    pub fn is_ready(&self) -> bool {
        let state = self.lock_state();
        [&state.file, &state.kube]
            .into_iter()
            .flatten()
            .all(|s| s.status.loaded)
    }

    /// Per-source status and the merged view's size and generation.
    pub fn status(&self) -> StoreStatus {
        let state = self.lock_state();
        StoreStatus {
            file: state.file.as_ref().map(|s| s.status.clone()),
            kube: state.kube.as_ref().map(|s| s.status.clone()),
            entries: self.snapshot().len(),
            generation: state.generation,
            conflicts: state
                .conflicts
                .keys()
                .map(|(ns, sa)| format!("{ns}/{sa}"))
                .collect(),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A source produced a complete, validated set: replace its contribution and rebuild the
    /// merged view.
    pub(crate) fn apply(&self, kind: SourceKind, set: AssociationSet, rejected: Vec<String>) {
        let mut state = self.lock_state();
        let source = match kind {
            SourceKind::File => state.file.get_or_insert_with(SourceState::default),
            SourceKind::Kube => state.kube.get_or_insert_with(SourceState::default),
        };
        source.status.loaded = true;
        source.status.entries = set.len();
        source.status.last_error = None;
        source.status.generation += 1;
        source.status.rejected = rejected;
        source.set = Arc::new(set);

        let empty = Arc::new(AssociationSet::default());
        let file_set = state.file.as_ref().map_or(empty.clone(), |s| s.set.clone());
        let kube_set = state.kube.as_ref().map_or(empty, |s| s.set.clone());
        let (merged, conflicts) = merge(&file_set, &kube_set);
        log_new_conflicts(&state.conflicts, &conflicts);
        state.conflicts = conflicts;
        match AssociationSet::from_associations(merged) {
            Ok(merged) => {
                state.generation += 1;
                // Swap under the state lock so concurrent sources publish in order.
                *self
                    .shared
                    .view
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(merged);
            }
            // Unreachable: both inputs are validated sets and the merge keeps keys unique.
            Err(error) => {
                tracing::error!(%error, "merged association set refused; keeping the previous view")
            }
        }
    }

    /// A source failed to reload: keep its last good set, remember why.
    pub(crate) fn record_error(&self, kind: SourceKind, error: String) {
        let mut state = self.lock_state();
        let source = match kind {
            SourceKind::File => state.file.get_or_insert_with(SourceState::default),
            SourceKind::Kube => state.kube.get_or_insert_with(SourceState::default),
        };
        source.status.last_error = Some(error);
    }
}

type Key = (String, String);

/// File ∪ custom resources; the file entry wins a shared key.
fn merge(
    file: &AssociationSet,
    kube: &AssociationSet,
) -> (Vec<Association>, BTreeMap<Key, (Association, Association)>) {
    let mut by_key: HashMap<Key, Association> = kube
        .iter()
        .map(|a| ((a.namespace.clone(), a.service_account.clone()), a.clone()))
        .collect();
    let mut conflicts = BTreeMap::new();
    for a in file.iter() {
        let key = (a.namespace.clone(), a.service_account.clone());
        if let Some(lost) = by_key.insert(key.clone(), a.clone()) {
            conflicts.insert(key, (a.clone(), lost));
        }
    }
    (by_key.into_values().collect(), conflicts)
}

/// Log each conflict the first time it appears or when either side changes, not on every rebuild.
fn log_new_conflicts(
    old: &BTreeMap<Key, (Association, Association)>,
    new: &BTreeMap<Key, (Association, Association)>,
) {
    for (key, pair @ (kept, ignored)) in new {
        if old.get(key) != Some(pair) {
            tracing::warn!(
                k8s.namespace = %key.0,
                k8s.service_account = %key.1,
                association_id = %kept.id(),
                role_arn = %kept.role_arn,
                ignored_role_arn = %ignored.role_arn,
                "association defined by both the file and a PodIdentityAssociation; the file entry wins"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assoc(ns: &str, sa: &str, role: &str) -> Association {
        Association {
            namespace: ns.into(),
            service_account: sa.into(),
            role_arn: format!("arn:aws:iam::111122223333:role/{role}"),
            target_role_arn: None,
            disable_session_tags: false,
            policy: None,
            association_id: None,
        }
    }

    fn set(list: Vec<Association>) -> AssociationSet {
        AssociationSet::from_associations(list).unwrap()
    }

    #[test]
    fn from_set_is_ready_and_serves_the_set() {
        let store = AssociationStore::from_set(set(vec![assoc("default", "app", "r")]));
        assert!(store.is_ready());
        assert_eq!(
            store.get("default", "app").unwrap().role_arn,
            "arn:aws:iam::111122223333:role/r"
        );
        assert!(store.get("default", "other").is_none());
        let status = store.status();
        assert_eq!((status.entries, status.file, status.kube), (1, None, None));
    }

    #[test]
    fn merge_is_a_union_and_the_file_wins_a_shared_key() {
        let store = AssociationStore::from_set(AssociationSet::default());
        store.apply(
            SourceKind::Kube,
            set(vec![assoc("a", "x", "crd-x"), assoc("a", "y", "crd-y")]),
            Vec::new(),
        );
        store.apply(
            SourceKind::File,
            set(vec![assoc("a", "x", "file-x"), assoc("b", "z", "file-z")]),
            Vec::new(),
        );
        assert!(
            store
                .get("a", "x")
                .unwrap()
                .role_arn
                .ends_with("role/file-x")
        );
        assert!(
            store
                .get("a", "y")
                .unwrap()
                .role_arn
                .ends_with("role/crd-y")
        );
        assert!(
            store
                .get("b", "z")
                .unwrap()
                .role_arn
                .ends_with("role/file-z")
        );
        let status = store.status();
        assert_eq!(status.entries, 3);
        assert_eq!(status.conflicts, vec!["a/x".to_string()]);

        // The file drops the entry: the custom resource's shows through again.
        store.apply(
            SourceKind::File,
            set(vec![assoc("b", "z", "file-z")]),
            Vec::new(),
        );
        assert!(
            store
                .get("a", "x")
                .unwrap()
                .role_arn
                .ends_with("role/crd-x")
        );
        assert!(store.status().conflicts.is_empty());
    }

    #[test]
    fn snapshots_do_not_change_under_the_reader() {
        let store = AssociationStore::from_set(set(vec![assoc("a", "x", "one")]));
        let before = store.snapshot();
        store.apply(
            SourceKind::File,
            set(vec![assoc("a", "x", "two")]),
            Vec::new(),
        );
        assert!(before.get("a", "x").unwrap().role_arn.ends_with("role/one"));
        assert!(store.get("a", "x").unwrap().role_arn.ends_with("role/two"));
    }

    #[test]
    fn record_error_keeps_the_set() {
        let store = AssociationStore::from_set(AssociationSet::default());
        store.apply(
            SourceKind::File,
            set(vec![assoc("a", "x", "one")]),
            Vec::new(),
        );
        store.record_error(SourceKind::File, "boom".into());
        let status = store.status().file.unwrap();
        assert_eq!(status.last_error.as_deref(), Some("boom"));
        assert_eq!(
            (status.loaded, status.entries, status.generation),
            (true, 1, 1)
        );
        assert!(store.get("a", "x").is_some());
    }
}
