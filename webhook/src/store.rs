//! Where associations come from, behind the one question the webhook asks: "is there an
//! association for (namespace, service account), and is the answer trustworthy yet?"
//!
//! [`AssociationLookup`] is that question. `serve` answers it with the shared
//! [`AssociationStore`] (the hot-reloaded YAML file and, with `--watch-custom-resources`, the
//! `PodIdentityAssociation` custom resources; the file wins on conflicts); `mutate` and tests
//! with a fixed [`AssociationSet`]. The trait keeps [`crate::review`] free of the store's IO.
//!
//! With `--role-policy`, [`Guarded`] adds the operator's answer to a second question: "may this
//! namespace be given the roles its association names?" The webhook does not inject a pod whose
//! association is outside the policy (eks-auth would refuse its exchange anyway), and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pod_identity_associations::RolePolicyStore;
use pod_identity_contracts::RoleDenied;
use pod_identity_contracts::association::{Association, AssociationError, AssociationSet};

/// The question, shared with eks-auth.
pub use pod_identity_associations::AssociationLookup;

/// A lookup under the operator's role policy.
#[derive(Debug, Clone)]
pub struct Guarded {
    pub associations: Arc<dyn AssociationLookup>,
    pub policy: RolePolicyStore,
}

impl AssociationLookup for Guarded {
    fn get(&self, namespace: &str, service_account: &str) -> Option<Association> {
        self.associations.get(namespace, service_account)
    }
    fn is_ready(&self) -> bool {
        self.associations.is_ready()
    }
    fn len(&self) -> usize {
        self.associations.len()
    }
    fn refused(&self, association: &Association) -> Option<RoleDenied> {
        self.policy.check(association).err()
    }
}

/// `associations` under `policy` when there is one.
pub fn guarded(
    associations: Arc<dyn AssociationLookup>,
    policy: Option<RolePolicyStore>,
) -> Arc<dyn AssociationLookup> {
    match policy {
        Some(policy) => Arc::new(Guarded {
            associations,
            policy,
        }),
        None => associations,
    }
}

/// Why the associations file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read associations file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("associations file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: AssociationError,
    },
}

/// Read and validate an associations file (the offline subcommands; `serve` uses the store).
pub fn load_file(path: &Path) -> Result<AssociationSet, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    AssociationSet::from_yaml(&text).map_err(|source| StoreError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_associations::AssociationStore;

    #[test]
    fn load_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "associations: [").unwrap();
        assert!(load_file(&path).unwrap_err().to_string().contains("a.yaml"));
        let missing = dir.path().join("missing.yaml");
        assert!(
            load_file(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.yaml")
        );
        std::fs::write(
            &path,
            "associations:\n  - {namespace: default, serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/r'}\n",
        )
        .unwrap();
        let set = load_file(&path).unwrap();
        assert!(AssociationLookup::get(&set, "default", "a").is_some());
        let store = AssociationStore::from_set(set);
        assert!(AssociationLookup::is_ready(&store));
        assert!(AssociationLookup::get(&store, "default", "b").is_none());
    }
}
