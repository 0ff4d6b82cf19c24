//! `audit` against a faked API server (kube's `tower_test::mock::pair` pattern): it pages through
//! the pod LIST, answered with real Kubernetes list JSON, and reports exactly the associated pods
//! that lack the injection.

use http::{Request, Response};
use kube::client::Body;
use pod_identity_contracts::association::AssociationSet;
use pod_identity_webhook::audit::{self, Finding};
use pod_identity_webhook::mutate::{self, Settings};
use serde_json::{Value, json};

const ASSOCIATIONS: &str = "associations:
  - {namespace: default, serviceAccount: s3-reader, roleArn: 'arn:aws:iam::111122223333:role/s3-reader'}
  - {namespace: team-a, serviceAccount: default, roleArn: 'arn:aws:iam::111122223333:role/team-a'}
";

fn pod(ns: &str, name: &str, sa: Option<&str>, phase: &str, containers: Value) -> Value {
    let mut spec = json!({
        "containers": containers,
        "restartPolicy": "Always",
        "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
    });
    if let Some(sa) = sa {
        spec["serviceAccountName"] = json!(sa);
    }
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "100"},
        "spec": spec,
        "status": {"phase": phase, "podIP": "10.0.0.7"}
    })
}

/// The same pod after the webhook: what a correctly admitted pod looks like.
fn injected(p: Value, ns: &str) -> Value {
    let set = AssociationSet::from_yaml(ASSOCIATIONS).unwrap();
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(p.clone()).unwrap();
    let a = set.get(ns, mutate::service_account_of(&typed)).cloned();
    let m = mutate::mutate(&typed, a.as_ref(), &Settings::default());
    let mut p = p;
    json_patch::patch(&mut p, &m.patch).unwrap();
    p
}

fn list(items: Vec<Value>, next: Option<&str>) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": "123456"});
    if let Some(c) = next {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(2);
    }
    serde_json::to_vec(
        &json!({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items}),
    )
    .unwrap()
}

fn app() -> Value {
    json!([{"name": "app", "image": "busybox"}])
}

#[tokio::test]
async fn pages_through_pods_and_reports_the_ones_without_injection() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(async move {
        let page1 = list(
            vec![
                injected(
                    pod("default", "injected", Some("s3-reader"), "Running", app()),
                    "default",
                ),
                pod("default", "missed", Some("s3-reader"), "Running", app()),
                pod("default", "unrelated", Some("nobody"), "Running", app()),
            ],
            Some("page-2-token"),
        );
        let (request, send) = handle.next_request().await.expect("first LIST");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri().path(), "/api/v1/pods");
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("limit=500"), "{query}");
        assert!(!query.contains("continue"), "{query}");
        send.send_response(Response::builder().body(Body::from(page1)).unwrap());

        let mut half = pod(
            "team-a",
            "web",
            None,
            "Running",
            json!([{"name": "web", "image": "nginx"}, {"name": "sidecar", "image": "envoy"}]),
        );
        half = injected(half, "team-a");
        // The sidecar lost its variables (e.g. an operator rewrote the spec).
        half["spec"]["containers"][1]
            .as_object_mut()
            .unwrap()
            .remove("env");
        let page2 = list(
            vec![pod("team-a", "job-done", None, "Succeeded", app()), half],
            None,
        );
        let (request, send) = handle.next_request().await.expect("second LIST");
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("continue=page-2-token"), "{query}");
        send.send_response(Response::builder().body(Body::from(page2)).unwrap());
    });

    let set = AssociationSet::from_yaml(ASSOCIATIONS).unwrap();
    let report = audit::audit(client, None, &set, &Settings::default(), false)
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(report.pods_seen, 5);
    assert_eq!(report.pods_associated, 3, "{report:?}");
    assert_eq!(
        report.findings,
        vec![
            Finding {
                namespace: "default".into(),
                pod: "missed".into(),
                service_account: "s3-reader".into(),
                association_id: set.get("default", "s3-reader").unwrap().id(),
                role_arn: "arn:aws:iam::111122223333:role/s3-reader".into(),
                missing: vec![
                    "container app: AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, token mount".into(),
                    "volume eks-pod-identity-token".into(),
                ],
            },
            Finding {
                namespace: "team-a".into(),
                pod: "web".into(),
                service_account: "default".into(),
                association_id: set.get("team-a", "default").unwrap().id(),
                role_arn: "arn:aws:iam::111122223333:role/team-a".into(),
                missing: vec![
                    "container sidecar: AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
                        .into()
                ],
            },
        ]
    );
    assert!(
        report.findings[0]
            .to_string()
            .starts_with("default/missed serviceAccount=s3-reader association=a-"),
        "{}",
        report.findings[0]
    );
}

#[tokio::test]
async fn one_namespace_and_finished_pods_on_request() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("LIST");
        assert_eq!(request.uri().path(), "/api/v1/namespaces/team-a/pods");
        let page = list(
            vec![pod("team-a", "job-done", None, "Succeeded", app())],
            None,
        );
        send.send_response(Response::builder().body(Body::from(page)).unwrap());
    });
    let set = AssociationSet::from_yaml(ASSOCIATIONS).unwrap();
    let report = audit::audit(client, Some("team-a"), &set, &Settings::default(), true)
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].pod, "job-done");
}

#[tokio::test]
async fn an_api_error_is_an_error_not_a_clean_report() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("LIST");
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
            "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403
        });
        send.send_response(
            Response::builder()
                .status(403)
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
                .unwrap(),
        );
    });
    let set = AssociationSet::from_yaml(ASSOCIATIONS).unwrap();
    let err = audit::audit(client, None, &set, &Settings::default(), false)
        .await
        .unwrap_err();
    server.await.unwrap();
    assert!(err.to_string().contains("forbidden"), "{err}");
}
