//! Stored AdmissionReview requests (`tests/fixtures/<case>.json`) through the wire handler, each
//! checked against `<case>.expected.json` by applying the returned patch to the request's pod
//! and comparing the resulting pod with the expected one (never by comparing patch text).
//!
//! `<case>.expected.json`:
//! - `settings` (optional): `{"region": "...", "ipv6": true}`;
//! - `status`: the HTTP status; for 400 `message` is a substring of the body;
//! - `patched`: whether a patch comes back; `pod`: the pod after it (when patched);
//! - `warnings`: substrings, one per returned warning, in order.
//!
//! Every patched pod is reviewed a second time: the answer must carry no patch (idempotence).
//! `UPDATE_FIXTURES=1 cargo nextest run -p pod-identity-webhook --test fixtures` (re)writes the
//! expected files from the current answers (keeping `settings`); review the diff before keeping it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pod_identity_contracts::association::AssociationSet;
use pod_identity_webhook::metrics::Metrics;
use pod_identity_webhook::mutate::Settings;
use pod_identity_webhook::offline::{apply_response, review_for};
use pod_identity_webhook::review::Reviewer;
use pod_identity_webhook::store::AssociationLookup;
use serde_json::{Value, json};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn store() -> Arc<AssociationSet> {
    let text = std::fs::read_to_string(dir().join("associations.yaml")).unwrap();
    Arc::new(AssociationSet::from_yaml(&text).unwrap())
}

fn settings_of(expected: &Value) -> Settings {
    Settings {
        region: expected["settings"]["region"].as_str().map(str::to_string),
        ipv6: expected["settings"]["ipv6"].as_bool().unwrap_or(false),
    }
}

fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let case = name.strip_suffix(".json")?;
            (!case.ends_with(".expected")).then(|| case.to_string())
        })
        .collect();
    names.sort();
    names
}

/// What one case produced, in the expected file's shape.
fn run_case(case: &str, settings: Settings) -> (Value, Option<Value>) {
    let body = std::fs::read(dir().join(format!("{case}.json"))).unwrap();
    let reviewer = Reviewer::new(store(), settings.clone(), Metrics::new());
    let answer = reviewer.review(&body);
    let mut got = json!({ "status": answer.status });
    if answer.status != 200 {
        got["message"] = json!(String::from_utf8_lossy(&answer.body).trim());
        return (got, None);
    }
    assert_eq!(answer.content_type, "application/json", "{case}");
    let response: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1", "{case}");
    assert_eq!(response["kind"], "AdmissionReview", "{case}");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let r = &response["response"];
    assert_eq!(r["uid"], request["request"]["uid"], "{case}: uid echoed");
    assert_eq!(r["allowed"], true, "{case}: never blocks");
    let patched = r.get("patch").is_some();
    assert_eq!(
        r.get("patchType").is_some(),
        patched,
        "{case}: patchType iff patch"
    );
    if patched {
        assert_eq!(r["patchType"], "JSONPatch", "{case}");
    }
    got["patched"] = json!(patched);
    let warnings: Vec<Value> = r["warnings"].as_array().cloned().unwrap_or_default();
    got["warnings"] = json!(warnings);
    let object = request["request"]["object"].clone();
    let after = patched.then(|| apply_response(object, r).unwrap().pod);
    if let Some(pod) = &after {
        got["pod"] = pod.clone();
    }
    (got, after)
}

#[test]
fn every_fixture_gets_its_defined_answer() {
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let cases = cases();
    assert!(cases.len() >= 25, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let expected_path = dir().join(format!("{case}.expected.json"));
        let existing: Option<Value> = std::fs::read(&expected_path)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        let settings = existing.as_ref().map(settings_of).unwrap_or_default();
        let (got, after) = run_case(case, settings.clone());
        if update {
            let mut out = got.clone();
            if let Some(s) = existing.as_ref().and_then(|e| e.get("settings")) {
                out["settings"] = s.clone();
            }
            // Store warnings as the substrings they are checked by: the whole text.
            std::fs::write(
                &expected_path,
                serde_json::to_string_pretty(&out).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        let Some(expected) = existing else {
            failures.push(format!(
                "{case}: no {case}.expected.json (UPDATE_FIXTURES=1 writes it)"
            ));
            continue;
        };
        if got["status"] != expected["status"] {
            failures.push(format!(
                "{case}: status {} != {}",
                got["status"], expected["status"]
            ));
            continue;
        }
        if expected["status"] != 200 {
            let message = expected["message"].as_str().unwrap();
            if !got["message"].as_str().unwrap().contains(message) {
                failures.push(format!(
                    "{case}: message {} lacks {message:?}",
                    got["message"]
                ));
            }
            continue;
        }
        if got["patched"] != expected["patched"] {
            failures.push(format!(
                "{case}: patched {} != {}",
                got["patched"], expected["patched"]
            ));
        }
        if got.get("pod") != expected.get("pod") {
            failures.push(format!(
                "{case}: resulting pod differs:\n got:      {}\n expected: {}",
                got.get("pod").unwrap_or(&Value::Null),
                expected.get("pod").unwrap_or(&Value::Null)
            ));
        }
        let got_w = got["warnings"].as_array().unwrap();
        let want_w = expected["warnings"].as_array().cloned().unwrap_or_default();
        let matches = got_w.len() == want_w.len()
            && got_w
                .iter()
                .zip(&want_w)
                .all(|(g, w)| g.as_str().unwrap().contains(w.as_str().unwrap()));
        if !matches {
            failures.push(format!(
                "{case}: warnings {got_w:?} do not match {want_w:?}"
            ));
        }
        // Idempotence: the patched pod, reviewed again, gets no patch.
        if let Some(pod) = after {
            let ns = serde_json::from_slice::<Value>(
                &std::fs::read(dir().join(format!("{case}.json"))).unwrap(),
            )
            .unwrap()["request"]["namespace"]
                .as_str()
                .unwrap()
                .to_string();
            let again = review_for(&pod, &ns, "second-pass");
            let reviewer = Reviewer::new(store(), settings, Metrics::new());
            let answer = reviewer.review(&serde_json::to_vec(&again).unwrap());
            let r: Value = serde_json::from_slice(&answer.body).unwrap();
            if r["response"].get("patch").is_some() {
                failures.push(format!(
                    "{case}: second pass is not empty: {}",
                    r["response"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn internal_failures_are_counted() {
    let metrics = Metrics::new();
    let reviewer = Reviewer::new(store(), Settings::default(), metrics.clone());
    for case in ["no-object", "bad-pod-object", "inject-basic", "no-request"] {
        reviewer.review(&std::fs::read(dir().join(format!("{case}.json"))).unwrap());
    }
    let text = String::from_utf8(metrics.encode()).unwrap();
    for line in [
        "pod_identity_webhook_reviews_total{result=\"error\"} 2",
        "pod_identity_webhook_reviews_total{result=\"injected\"} 1",
        "pod_identity_webhook_review_errors_total{reason=\"no_object\"} 1",
        "pod_identity_webhook_review_errors_total{reason=\"bad_pod\"} 1",
        "pod_identity_webhook_http_requests_total{code=\"200\"} 3",
        "pod_identity_webhook_http_requests_total{code=\"400\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

/// A store that has not loaded yet: every pod is allowed unchanged, with a warning.
#[derive(Debug)]
struct NotReady;

impl AssociationLookup for NotReady {
    fn get(&self, _: &str, _: &str) -> Option<pod_identity_contracts::association::Association> {
        panic!("must not be asked before it is ready")
    }
    fn is_ready(&self) -> bool {
        false
    }
    fn len(&self) -> usize {
        0
    }
}

#[test]
fn a_store_that_is_not_ready_allows_with_a_warning() {
    let metrics = Metrics::new();
    let reviewer = Reviewer::new(Arc::new(NotReady), Settings::default(), metrics.clone());
    let answer = reviewer.review(&std::fs::read(dir().join("inject-basic.json")).unwrap());
    assert_eq!(answer.status, 200);
    let r: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(r["response"]["allowed"], true);
    assert!(r["response"].get("patch").is_none());
    assert!(
        r["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not loaded"),
        "{r}"
    );
    let text = String::from_utf8(metrics.encode()).unwrap();
    assert!(
        text.contains("pod_identity_webhook_review_errors_total{reason=\"store_not_ready\"} 1")
    );
}

/// The operator's role policy allows team-a its own roles only: default/s3-reader's association
/// names a role outside it, so that pod is admitted unchanged, with a warning that says why.
#[test]
fn a_role_outside_the_role_policy_is_not_injected() {
    use pod_identity_associations::RolePolicyStore;
    use pod_identity_contracts::RolePolicy;
    use pod_identity_webhook::store::guarded;

    let policy = RolePolicy::from_yaml(
        "rules:\n  - namespaces: [\"team-*\"]\n    roles: [\"arn:aws:iam::111122223333:role/{namespace}-*\"]\n",
    )
    .unwrap();
    let metrics = Metrics::new();
    let reviewer = Reviewer::new(
        guarded(store(), Some(RolePolicyStore::from_policy(policy))),
        Settings::default(),
        metrics.clone(),
    );
    let review = |case: &str| -> Value {
        let answer = reviewer.review(&std::fs::read(dir().join(format!("{case}.json"))).unwrap());
        assert_eq!(answer.status, 200);
        serde_json::from_slice(&answer.body).unwrap()
    };
    let refused = review("inject-basic");
    let r = &refused["response"];
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none(), "{r}");
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains(
            "roleArn arn:aws:iam::111122223333:role/s3-reader is not allowed for namespace default by the role policy"
        ),
        "{warning}"
    );
    // team-a's association is inside it: injected as without a policy.
    assert!(
        review("inject-default-service-account")["response"]
            .get("patch")
            .is_some()
    );
    let text = String::from_utf8(metrics.encode()).unwrap();
    for line in [
        "pod_identity_webhook_reviews_total{result=\"role_not_allowed\"} 1",
        "pod_identity_webhook_reviews_total{result=\"injected\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

/// A `request` kube's admission types cannot decode (the API server always sends these fields)
/// is refused with 400 and the decode error, never allowed with a patch, never a panic.
#[test]
fn a_request_without_the_fields_every_api_server_sends_is_a_bad_request() {
    let reviewer = Reviewer::new(store(), Settings::default(), Metrics::new());
    let base = || {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "userInfo": {"username": "system:admin"},
                "namespace": "default",
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                           "spec": {"containers": [{"name": "c", "image": "i"}]}}
            }
        })
    };
    let whole = reviewer.review(&serde_json::to_vec(&base()).unwrap());
    assert_eq!(
        whole.status,
        200,
        "{}",
        String::from_utf8_lossy(&whole.body)
    );
    for field in ["userInfo", "resource", "operation"] {
        let mut review = base();
        review["request"].as_object_mut().unwrap().remove(field);
        let answer = reviewer.review(&serde_json::to_vec(&review).unwrap());
        assert_eq!(answer.status, 400, "without {field}");
        assert!(
            !String::from_utf8_lossy(&answer.body).trim().is_empty(),
            "without {field}: a message"
        );
    }
    let mut review = base();
    review["request"]["operation"] = json!("EXPLODE");
    assert_eq!(
        reviewer
            .review(&serde_json::to_vec(&review).unwrap())
            .status,
        400
    );
}
