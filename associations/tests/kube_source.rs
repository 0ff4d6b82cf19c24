//! The custom-resource source against a fake API server (kube's `tower_test` mock pattern): each
//! test plays the API server's side of the list/watch conversation with real wire JSON.

use std::time::Duration;

mod support;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use pod_identity_associations::{AssociationStore, SourceTasks, Sources, StoreStatus};
use serde_json::{Value, json};
use support::{role, wait_for};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Pending = tower_test::mock::SendResponse<Response<Body>>;

const PATH: &str = "/apis/podidentity.dev/v1alpha1/podidentityassociations";

/// The API server's side: answers the store's requests one by one.
struct FakeApiServer(Handle);

impl FakeApiServer {
    async fn next(&mut self, what: &str) -> (Request<Body>, Pending) {
        tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no {what} request within 5 s"))
            .unwrap_or_else(|| panic!("client gone before the {what} request"))
    }

    /// Answer the next request, which must be the initial list, with these objects.
    async fn list(&mut self, resource_version: &str, items: Vec<Value>) {
        let (request, send) = self.next("list").await;
        let uri = request.uri().to_string();
        assert_eq!(request.method(), http::Method::GET);
        assert!(
            uri.starts_with(PATH) && !uri.contains("watch=true"),
            "expected a list: {uri}"
        );
        let body = json!({
            "kind": "PodIdentityAssociationList",
            "apiVersion": "podidentity.dev/v1alpha1",
            "metadata": {"resourceVersion": resource_version},
            "items": items,
        });
        send.send_response(json_response(StatusCode::OK, &body));
    }

    /// Answer the next request, which must be a watch from `from_version`, with these events;
    /// the body then ends, as when the server closes a watch, and the client watches again.
    async fn watch(&mut self, from_version: &str, events: Vec<Value>) {
        let (request, send) = self.next("watch").await;
        let uri = request.uri().to_string();
        assert!(
            uri.starts_with(PATH) && uri.contains("watch=true"),
            "expected a watch: {uri}"
        );
        assert!(
            uri.contains(&format!("resourceVersion={from_version}")),
            "expected a watch from {from_version}: {uri}"
        );
        let mut body = Vec::new();
        for event in events {
            serde_json::to_writer(&mut body, &event).unwrap();
            body.push(b'\n');
        }
        send.send_response(Response::new(Body::from(body)));
    }

    /// Fail the next request with a Kubernetes `Status` error.
    async fn fail(&mut self, what: &str) {
        let (_, send) = self.next(what).await;
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500
        });
        send.send_response(json_response(StatusCode::INTERNAL_SERVER_ERROR, &status));
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A `PodIdentityAssociation` as the API server returns it.
fn pia(name: &str, created: &str, resource_version: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "podidentity.dev/v1alpha1",
        "kind": "PodIdentityAssociation",
        "metadata": {
            "name": name,
            "uid": format!("uid-{name}"),
            "resourceVersion": resource_version,
            "creationTimestamp": created,
        },
        "spec": spec,
    })
}

fn spec(ns: &str, sa: &str, role: &str) -> Value {
    json!({
        "namespace": ns,
        "serviceAccount": sa,
        "roleArn": format!("arn:aws:iam::111122223333:role/{role}"),
    })
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

const T1: &str = "2026-11-01T10:00:00Z";
const T2: &str = "2026-11-02T10:00:00Z";

async fn start(file: Option<std::path::PathBuf>) -> (AssociationStore, SourceTasks, FakeApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (store, tasks) = AssociationStore::start(Sources {
        file,
        file_poll_interval: Duration::from_millis(20),
        kube: Some(client),
    })
    .await
    .unwrap();
    (store, tasks, FakeApiServer(handle))
}

fn kube_generation(s: &StoreStatus) -> u64 {
    s.kube.as_ref().unwrap().generation
}

#[tokio::test]
async fn initial_list_makes_the_store_ready_with_its_entries() {
    let (store, _tasks, mut api) = start(None).await;
    assert!(!store.is_ready(), "not ready before the initial list");
    assert!(store.get("default", "s3-reader").is_none());

    let mut with_id = spec("team-b", "app", "app");
    with_id["associationId"] = json!("a-custom");
    api.list(
        "10",
        vec![
            pia(
                "s3-reader",
                T1,
                "5",
                spec("default", "s3-reader", "s3-reader"),
            ),
            pia("team-b-app", T1, "6", with_id),
        ],
    )
    .await;
    wait_for(&store, "ready", |s| s.kube.as_ref().unwrap().loaded).await;
    assert!(store.is_ready());
    let status = store.status().kube.unwrap();
    assert_eq!((status.entries, status.generation), (2, 1));
    assert_eq!(status.last_error, None);
    let a = store.get("default", "s3-reader").unwrap();
    assert_eq!(a.role_arn, "arn:aws:iam::111122223333:role/s3-reader");
    assert_eq!(
        a.id(),
        pod_identity_contracts::association::derive_association_id("default", "s3-reader")
    );
    assert_eq!(store.get("team-b", "app").unwrap().id(), "a-custom");
}

#[tokio::test]
async fn watch_events_add_modify_and_delete() {
    let (store, _tasks, mut api) = start(None).await;
    api.list(
        "10",
        vec![pia("one", T1, "5", spec("default", "one", "one"))],
    )
    .await;
    wait_for(&store, "ready", |s| kube_generation(s) == 1).await;

    api.watch(
        "10",
        vec![event(
            "ADDED",
            pia("two", T2, "11", spec("default", "two", "two")),
        )],
    )
    .await;
    wait_for(&store, "ADDED applied", |s| kube_generation(s) == 2).await;
    assert!(
        role(&store, "default", "two")
            .unwrap()
            .ends_with("role/two")
    );
    assert!(store.get("default", "one").is_some());

    api.watch(
        "11",
        vec![event(
            "MODIFIED",
            pia("one", T1, "12", spec("default", "one", "changed")),
        )],
    )
    .await;
    wait_for(&store, "MODIFIED applied", |s| kube_generation(s) == 3).await;
    assert!(
        role(&store, "default", "one")
            .unwrap()
            .ends_with("role/changed")
    );

    api.watch(
        "12",
        vec![event(
            "DELETED",
            pia("two", T2, "13", spec("default", "two", "two")),
        )],
    )
    .await;
    wait_for(&store, "DELETED applied", |s| kube_generation(s) == 4).await;
    assert!(store.get("default", "two").is_none());
    assert_eq!(store.snapshot().len(), 1);
}

#[tokio::test]
async fn invalid_objects_are_skipped_without_hiding_the_others() {
    let (store, _tasks, mut api) = start(None).await;
    let mut bad_arn = spec("default", "bad-arn", "x");
    bad_arn["roleArn"] = json!("arn:aws:iam::1:role/short-account");
    let mut unparseable = spec("default", "unparseable", "x");
    unparseable["roleArn"] = json!(42);
    api.list(
        "10",
        vec![
            pia("good", T1, "5", spec("default", "good", "good")),
            pia("bad-arn", T1, "6", bad_arn),
            pia("unparseable", T1, "7", unparseable),
        ],
    )
    .await;
    wait_for(&store, "ready", |s| kube_generation(s) == 1).await;
    assert!(store.is_ready(), "invalid objects must not block readiness");
    assert!(store.get("default", "good").is_some());
    assert!(store.get("default", "bad-arn").is_none());
    assert!(store.get("default", "unparseable").is_none());
    let status = store.status().kube.unwrap();
    assert_eq!(status.entries, 1);
    assert_eq!(status.rejected.len(), 2, "{status:?}");
    assert!(
        status.rejected[0].starts_with("bad-arn: ") && status.rejected[0].contains("roleArn"),
        "{status:?}"
    );
    assert!(
        status.rejected[1].starts_with("unparseable: "),
        "{status:?}"
    );

    // Fixing the object through the watch brings it in.
    api.watch(
        "10",
        vec![event(
            "MODIFIED",
            pia("bad-arn", T1, "11", spec("default", "bad-arn", "fixed")),
        )],
    )
    .await;
    wait_for(&store, "fix applied", |s| kube_generation(s) == 2).await;
    assert!(
        role(&store, "default", "bad-arn")
            .unwrap()
            .ends_with("role/fixed")
    );
    assert_eq!(store.status().kube.unwrap().rejected.len(), 1);
}

#[tokio::test]
async fn the_oldest_object_wins_a_shared_service_account() {
    let (store, _tasks, mut api) = start(None).await;
    // "a-newer" sorts first by name, so only the creation time can make "z-older" win.
    api.list(
        "10",
        vec![
            pia("a-newer", T2, "5", spec("default", "app", "newer")),
            pia("z-older", T1, "6", spec("default", "app", "older")),
            // Same creation time: the name decides.
            pia("b-tie", T1, "7", spec("default", "tie", "b")),
            pia("a-tie", T1, "8", spec("default", "tie", "a")),
        ],
    )
    .await;
    wait_for(&store, "ready", |s| kube_generation(s) == 1).await;
    assert!(
        role(&store, "default", "app")
            .unwrap()
            .ends_with("role/older")
    );
    assert!(role(&store, "default", "tie").unwrap().ends_with("role/a"));
    assert_eq!(store.status().kube.unwrap().entries, 2);

    // The winner goes away: the other object takes over.
    api.watch(
        "10",
        vec![event(
            "DELETED",
            pia("z-older", T1, "11", spec("default", "app", "older")),
        )],
    )
    .await;
    wait_for(&store, "DELETED applied", |s| kube_generation(s) == 2).await;
    assert!(
        role(&store, "default", "app")
            .unwrap()
            .ends_with("role/newer")
    );
}

#[tokio::test]
async fn the_file_entry_wins_over_a_custom_resource() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("associations.yaml");
    std::fs::write(
        &path,
        "associations:\n  - namespace: default\n    serviceAccount: app\n    roleArn: arn:aws:iam::111122223333:role/from-file\n",
    )
    .unwrap();
    let (store, _tasks, mut api) = start(Some(path)).await;
    assert!(
        !store.is_ready(),
        "the file alone does not make the store ready"
    );
    assert!(
        role(&store, "default", "app")
            .unwrap()
            .ends_with("role/from-file")
    );

    api.list(
        "10",
        vec![
            pia("app", T1, "5", spec("default", "app", "from-crd")),
            pia("other", T1, "6", spec("default", "other", "crd-only")),
        ],
    )
    .await;
    wait_for(&store, "ready", |s| kube_generation(s) == 1).await;
    assert!(store.is_ready());
    assert!(
        role(&store, "default", "app")
            .unwrap()
            .ends_with("role/from-file")
    );
    assert!(
        role(&store, "default", "other")
            .unwrap()
            .ends_with("role/crd-only")
    );
    let status = store.status();
    assert_eq!(status.entries, 2);
    assert_eq!(status.conflicts, vec!["default/app".to_string()]);

    // A later custom-resource change still loses to the file.
    api.watch(
        "10",
        vec![event(
            "MODIFIED",
            pia("app", T1, "11", spec("default", "app", "crd-v2")),
        )],
    )
    .await;
    wait_for(&store, "MODIFIED applied", |s| kube_generation(s) == 2).await;
    assert!(
        role(&store, "default", "app")
            .unwrap()
            .ends_with("role/from-file")
    );
}

// Paused clock: the watcher's retry backoff passes instantly instead of in real seconds.
#[tokio::test(start_paused = true)]
async fn api_errors_keep_the_last_good_view_and_retry() {
    let (store, _tasks, mut api) = start(None).await;

    // The first list fails: not ready, the error is visible, the watcher retries.
    api.fail("list").await;
    wait_for(&store, "the list error", |s| {
        s.kube.as_ref().unwrap().last_error.is_some()
    })
    .await;
    assert!(!store.is_ready());
    api.list(
        "10",
        vec![pia("one", T1, "5", spec("default", "one", "one"))],
    )
    .await;
    wait_for(&store, "ready", |s| kube_generation(s) == 1).await;
    assert!(store.is_ready());
    assert_eq!(store.status().kube.unwrap().last_error, None);

    // A failing watch keeps what we had.
    api.fail("watch").await;
    wait_for(&store, "the watch error", |s| {
        s.kube.as_ref().unwrap().last_error.is_some()
    })
    .await;
    let error = store.status().kube.unwrap().last_error.unwrap();
    assert!(error.contains("etcdserver: request timed out"), "{error}");
    assert!(store.is_ready());
    assert!(
        role(&store, "default", "one")
            .unwrap()
            .ends_with("role/one")
    );

    // The retry resumes from where it was.
    api.watch(
        "10",
        vec![event(
            "ADDED",
            pia("two", T2, "11", spec("default", "two", "two")),
        )],
    )
    .await;
    wait_for(&store, "ADDED applied", |s| kube_generation(s) == 2).await;
    assert!(store.get("default", "two").is_some());
    assert_eq!(store.status().kube.unwrap().last_error, None);
}
