//! Where eks-auth finds the association of a (namespace, service account).
//!
//! [`AssociationLookup`] is the one thing the exchange needs. In the binary it is the shared
//! [`AssociationStore`] (the hot-reloaded YAML file and, with `--watch-crds`, the
//! `PodIdentityAssociation` custom resources); tests and the benchmark may use a fixed
//! [`AssociationSet`].

use pod_identity_associations::AssociationStore;
use pod_identity_contracts::{Association, AssociationSet};

/// Lookup of associations by (namespace, service account).
pub trait AssociationLookup: Send + Sync + std::fmt::Debug + 'static {
    fn get(&self, namespace: &str, service_account: &str) -> Option<Association>;
    /// True once every source loaded (before that, "no association" may mean "not loaded yet").
    fn is_ready(&self) -> bool;
    /// How many are loaded (for the gauge).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AssociationLookup for AssociationStore {
    fn get(&self, namespace: &str, service_account: &str) -> Option<Association> {
        AssociationStore::get(self, namespace, service_account)
    }
    fn is_ready(&self) -> bool {
        AssociationStore::is_ready(self)
    }
    fn len(&self) -> usize {
        self.snapshot().len()
    }
}

/// A fixed set (tests, benchmarks).
impl AssociationLookup for AssociationSet {
    fn get(&self, namespace: &str, service_account: &str) -> Option<Association> {
        AssociationSet::get(self, namespace, service_account).cloned()
    }
    fn is_ready(&self) -> bool {
        true
    }
    fn len(&self) -> usize {
        AssociationSet::len(self)
    }
}
