//! The role policy file ([`RolePolicy`]), shared by eks-auth (refuse the exchange) and the webhook
//! (do not inject): loaded at start, where a missing or invalid file is an error naming the path,
//! then polled by content hash like the associations file. A bad edit or a deleted file keeps the
//! last good policy (never "allow all", never a half-read file) and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use pod_identity_contracts::{Association, RoleDenied, RolePolicy, RolePolicyError};

use crate::file::{self, poll};
use crate::{SourceTasks, StoreError};

/// The current role policy. Cheap to clone; every clone sees reloads.
#[derive(Debug, Clone)]
pub struct RolePolicyStore {
    current: Arc<RwLock<Arc<RolePolicy>>>,
}

impl RolePolicyStore {
    /// A fixed policy (tests, the lab, offline subcommands).
    pub fn from_policy(policy: RolePolicy) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(policy))),
        }
    }

    /// Load `path` and keep polling it every `every`.
    pub async fn start(
        path: PathBuf,
        every: Duration,
    ) -> Result<(RolePolicyStore, SourceTasks), StoreError> {
        let (bytes, seen) =
            file::read_initial(&path)
                .await
                .map_err(|source| StoreError::ReadRolePolicy {
                    path: path.clone(),
                    source,
                })?;
        let policy = parse(&bytes).map_err(|source| StoreError::InvalidRolePolicy {
            path: path.clone(),
            source,
        })?;
        log_loaded(&path, &policy, "role policy loaded");
        let store = Self::from_policy(policy);
        let mut tasks = SourceTasks::default();
        let reloading = store.clone();
        tasks.handles.push(tokio::spawn(async move {
            poll(&path, every, seen, |bytes| {
                match bytes.and_then(|b| parse(&b).map_err(|e| e.to_string())) {
                    Ok(policy) => {
                        log_loaded(&path, &policy, "role policy reloaded");
                        reloading.set(policy);
                    }
                    Err(error) => tracing::warn!(
                        path = %path.display(),
                        %error,
                        "role policy not reloaded; keeping the last good policy"
                    ),
                }
            })
            .await
        }));
        Ok((store, tasks))
    }

    /// Load `path` once (offline subcommands).
    pub fn load(path: &Path) -> Result<RolePolicy, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::ReadRolePolicy {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&bytes).map_err(|source| StoreError::InvalidRolePolicy {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The policy as it is now.
    pub fn current(&self) -> Arc<RolePolicy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the policy allows every role `association` would assume.
    pub fn check(&self, association: &Association) -> Result<(), RoleDenied> {
        self.current().check(
            &association.namespace,
            &association.role_arn,
            association.target_role_arn.as_deref(),
        )
    }

    fn set(&self, policy: RolePolicy) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }
}

fn parse(bytes: &[u8]) -> Result<RolePolicy, RolePolicyError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| RolePolicyError::Parse(format!("not UTF-8: {e}")))?;
    RolePolicy::from_yaml(text)
}

fn log_loaded(path: &Path, policy: &RolePolicy, message: &'static str) {
    if policy.is_empty() {
        tracing::warn!(path = %path.display(), rules = 0, "{message}: it has no rules, so no association is allowed");
    } else {
        tracing::info!(path = %path.display(), rules = policy.len(), "{message}");
    }
}
