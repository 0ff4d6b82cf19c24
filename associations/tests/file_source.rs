//! The file source through the public API: fail fast at start, then hot reload by polling.

use std::path::Path;
use std::time::Duration;

mod support;

use pod_identity_associations::{AssociationStore, SourceTasks, Sources, StoreError};
use support::{role, wait_for};

const POLL: Duration = Duration::from_millis(20);

fn entry(ns: &str, sa: &str, role: &str) -> String {
    format!(
        "  - namespace: {ns}\n    serviceAccount: {sa}\n    roleArn: arn:aws:iam::111122223333:role/{role}\n"
    )
}

fn file_text(entries: &[String]) -> String {
    format!("associations:\n{}", entries.concat())
}

/// Replace the file atomically, as an editor or a ConfigMap update does, so a poll never reads
/// half a file.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(path: &Path) -> (AssociationStore, SourceTasks) {
    AssociationStore::start(Sources {
        file: Some(path.to_path_buf()),
        file_poll_interval: POLL,
        kube: None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn missing_file_fails_start_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let err = AssociationStore::start(Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::ReadFile { path: ref p, .. } if *p == path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_file_fails_start_naming_the_path_and_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    let bad = "  - namespace: default\n    serviceAccount: b\n    roleArn: not-an-arn\n";
    std::fs::write(&path, file_text(&[entry("default", "a", "a"), bad.into()])).unwrap();
    let err = AssociationStore::start(Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::InvalidFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("#1") && msg.contains("default/b") && msg.contains("roleArn"),
        "{msg}"
    );
}

#[tokio::test]
async fn no_source_at_all_is_refused() {
    let err = AssociationStore::start(Sources::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSources), "{err:?}");
}

#[tokio::test]
async fn good_edit_replaces_the_set_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    write_atomic(
        &path,
        &file_text(&[entry("default", "a", "one"), entry("default", "b", "b")]),
    );
    let (store, _tasks) = start(&path).await;
    assert!(store.is_ready());
    let file = store.status().file.unwrap();
    assert_eq!((file.loaded, file.entries, file.generation), (true, 2, 1));
    assert!(role(&store, "default", "a").unwrap().ends_with("role/one"));

    write_atomic(
        &path,
        &file_text(&[entry("default", "a", "two"), entry("team", "c", "c")]),
    );
    wait_for(&store, "file generation 2", |s| {
        s.file.as_ref().unwrap().generation == 2
    })
    .await;
    assert!(role(&store, "default", "a").unwrap().ends_with("role/two"));
    assert!(
        store.get("default", "b").is_none(),
        "entries removed from the file must go"
    );
    assert!(store.get("team", "c").is_some());
    assert_eq!(store.snapshot().len(), 2);
    assert_eq!(store.status().file.unwrap().last_error, None);
}

#[tokio::test]
async fn bad_edit_keeps_the_last_good_set_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    write_atomic(&path, &file_text(&[entry("default", "a", "one")]));
    let (store, _tasks) = start(&path).await;

    // One good entry and one bad: nothing of the edit may apply.
    write_atomic(
        &path,
        &file_text(&[entry("default", "new", "new"), entry("Bad_NS", "a", "x")]),
    );
    wait_for(&store, "a file error", |s| {
        s.file.as_ref().unwrap().last_error.is_some()
    })
    .await;
    let file = store.status().file.unwrap();
    assert!(
        file.last_error.as_deref().unwrap().contains("namespace"),
        "{file:?}"
    );
    assert_eq!((file.generation, file.entries), (1, 1));
    assert!(role(&store, "default", "a").unwrap().ends_with("role/one"));
    assert!(
        store.get("default", "new").is_none(),
        "a refused edit must not half-apply"
    );
    assert!(store.is_ready());

    // Fixing the file applies it and clears the error.
    write_atomic(&path, &file_text(&[entry("default", "a", "fixed")]));
    wait_for(&store, "file generation 2", |s| {
        s.file.as_ref().unwrap().generation == 2
    })
    .await;
    assert!(
        role(&store, "default", "a")
            .unwrap()
            .ends_with("role/fixed")
    );
    assert_eq!(store.status().file.unwrap().last_error, None);
}

#[tokio::test]
async fn deleted_file_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    write_atomic(&path, &file_text(&[entry("default", "a", "one")]));
    let (store, _tasks) = start(&path).await;

    std::fs::remove_file(&path).unwrap();
    wait_for(&store, "a read error", |s| {
        s.file.as_ref().unwrap().last_error.is_some()
    })
    .await;
    let error = store.status().file.unwrap().last_error.unwrap();
    assert!(error.contains("cannot read"), "{error}");
    assert!(role(&store, "default", "a").unwrap().ends_with("role/one"));
    assert!(store.is_ready());

    // The same content coming back is applied again (and clears the error).
    write_atomic(&path, &file_text(&[entry("default", "a", "one")]));
    wait_for(&store, "file generation 2", |s| {
        s.file.as_ref().unwrap().generation == 2
    })
    .await;
    assert_eq!(store.status().file.unwrap().last_error, None);
}

/// Kubernetes mounts a ConfigMap as `file -> ..data/file`, `..data -> ..<timestamp>`, and updates
/// it by swapping `..data`. Polling by content sees that; an inotify watch on the file would not.
#[cfg(unix)]
#[tokio::test]
async fn configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(
        root.join("..v1/associations.yaml"),
        file_text(&[entry("default", "a", "one")]),
    )
    .unwrap();
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/associations.yaml", root.join("associations.yaml")).unwrap();
    let (store, _tasks) = start(&root.join("associations.yaml")).await;
    assert!(role(&store, "default", "a").unwrap().ends_with("role/one"));

    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(
        root.join("..v2/associations.yaml"),
        file_text(&[entry("default", "a", "two")]),
    )
    .unwrap();
    symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    wait_for(&store, "file generation 2", |s| {
        s.file.as_ref().unwrap().generation == 2
    })
    .await;
    assert!(role(&store, "default", "a").unwrap().ends_with("role/two"));
}

#[tokio::test]
async fn shutdown_stops_reloading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    write_atomic(&path, &file_text(&[entry("default", "a", "one")]));
    let (store, tasks) = start(&path).await;
    tokio::time::timeout(Duration::from_secs(5), tasks.shutdown())
        .await
        .expect("shutdown ends promptly");
    // The store keeps serving its last view after its sources stop.
    assert!(role(&store, "default", "a").unwrap().ends_with("role/one"));
}
