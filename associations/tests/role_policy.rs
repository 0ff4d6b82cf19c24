//! The role policy file through the public API: fail fast at start, hot reload, keep the last
//! good policy through a bad edit or a deleted file.

use std::path::Path;
use std::time::Duration;

use pod_identity_associations::{Association, RolePolicyStore, StoreError};

const POLL: Duration = Duration::from_millis(20);

fn allow(ns: &str, role: &str) -> String {
    format!(
        "rules:\n  - namespaces: [{ns}]\n    roles: ['arn:aws:iam::111122223333:role/{role}']\n"
    )
}

fn assoc(ns: &str, role: &str) -> Association {
    Association {
        namespace: ns.into(),
        service_account: "app".into(),
        role_arn: format!("arn:aws:iam::111122223333:role/{role}"),
        target_role_arn: None,
        disable_session_tags: false,
        policy: None,
        association_id: None,
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn missing_or_invalid_file_fails_start_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("role-policy.yaml");
    let err = RolePolicyStore::start(path.clone(), POLL)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadRolePolicy { .. }), "{err:?}");
    assert!(err.to_string().contains("role-policy.yaml"), "{err}");

    std::fs::write(
        &path,
        "rules:\n  - {namespaces: [a], roles: ['arn:aws:iam::*:role/x']}\n",
    )
    .unwrap();
    let err = RolePolicyStore::start(path.clone(), POLL)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("role-policy.yaml") && text.contains("rule #0 roles[0]"),
        "{text}"
    );
    assert!(RolePolicyStore::load(&path).is_err());
}

#[tokio::test]
async fn reloads_and_keeps_the_last_good_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("role-policy.yaml");
    std::fs::write(&path, allow("a", "one")).unwrap();
    let (store, tasks) = RolePolicyStore::start(path.clone(), POLL).await.unwrap();
    assert!(store.check(&assoc("a", "one")).is_ok());
    assert_eq!(
        store.check(&assoc("a", "two")).unwrap_err().field,
        "roleArn"
    );

    write_atomic(&path, &allow("a", "two"));
    wait_until("the edit applies", || {
        store.check(&assoc("a", "two")).is_ok()
    })
    .await;
    assert!(store.check(&assoc("a", "one")).is_err(), "replaced whole");

    // A bad edit, then a deleted file: several polls later the last good policy still holds.
    write_atomic(&path, "rules: [");
    tokio::time::sleep(POLL * 5).await;
    assert!(store.check(&assoc("a", "two")).is_ok());
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(POLL * 5).await;
    assert!(store.check(&assoc("a", "two")).is_ok());

    write_atomic(&path, "rules: []\n");
    wait_until("the empty policy applies", || {
        store.check(&assoc("a", "two")).is_err()
    })
    .await;
    tasks.shutdown().await;
}
