//! The one question the webhook and eks-auth ask of associations, behind a trait so that their
//! logic runs the same on the live store and on a fixed set (the offline subcommands, tests,
//! benchmarks).

use pod_identity_contracts::RoleDenied;
use pod_identity_contracts::association::{Association, AssociationSet};

use crate::AssociationStore;

/// Lookup of associations by (namespace, service account).
pub trait AssociationLookup: Send + Sync + std::fmt::Debug + 'static {
    /// The association for (namespace, service account), if any.
    fn get(&self, namespace: &str, service_account: &str) -> Option<Association>;
    /// Whether every source has loaded at least once. Before that, "no association" would be a
    /// guess.
    fn is_ready(&self) -> bool;
    /// How many are loaded (for the gauges).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Why the operator's role policy refuses `association`'s roles; `None` when allowed or
    /// where no policy applies (eks-auth checks its policy in the exchange itself).
    fn refused(&self, _association: &Association) -> Option<RoleDenied> {
        None
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

/// A fixed set: loaded by definition.
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
