//! Helpers shared by the integration tests.

use std::time::Duration;

use pod_identity_associations::{AssociationStore, StoreStatus};

/// Poll the store until `done` holds; fail with the last status after 5 s. A bounded wait on an
/// observable change, never a fixed sleep.
pub async fn wait_for(store: &AssociationStore, what: &str, done: impl Fn(&StoreStatus) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = store.status();
        if done(&status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The role the store maps a service account to.
pub fn role(store: &AssociationStore, ns: &str, sa: &str) -> Option<String> {
    store.get(ns, sa).map(|a| a.role_arn)
}
