//! The webhook's wire handler and mutation: `Reviewer::review` on arbitrary request bodies (the
//! fixtures' associations, the four settings), and `mutate::mutate` on every pod that decodes.
//!
//! Input: the request body, as it comes; its length mod 4 picks the settings (bit 0: a region,
//! bit 1: IPv6), so the stored AdmissionReview fixtures are seeds as they are and trailing
//! whitespace varies the settings.
//! Invariants: an answer for every body, the same twice: 400 with a text message, or 200 with
//! an AdmissionReview that echoes the uid, always allows, and has `patchType` exactly when it has
//! a patch; the patch applies to the request's pod, the patched pod decodes as a Pod and
//! re-serialises, and reviewed again it gets no patch (idempotence); `mutate`'s patch turns the
//! pod into `mutate`'s pod, and a second `mutate` changes nothing.
#![no_main]

use std::sync::{Arc, LazyLock};

use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;
use pod_identity_contracts::association::AssociationSet;
use pod_identity_webhook::metrics::Metrics;
use pod_identity_webhook::mutate::{self, Settings};
use pod_identity_webhook::offline::{apply_response, review_for};
use pod_identity_webhook::review::Reviewer;
use pod_identity_webhook::store::AssociationLookup;
use serde_json::Value;

static STORE: LazyLock<Arc<AssociationSet>> = LazyLock::new(|| {
    let yaml = include_str!("../../webhook/tests/fixtures/associations.yaml");
    Arc::new(AssociationSet::from_yaml(yaml).expect("the fixtures' associations load"))
});

fn settings(flags: u8) -> Settings {
    Settings {
        region: (flags & 1 == 1).then(|| "eu-west-1".to_string()),
        ipv6: flags & 2 == 2,
    }
}

static REVIEWERS: LazyLock<Vec<Reviewer>> = LazyLock::new(|| {
    (0..4)
        .map(|flags| {
            let store: Arc<dyn AssociationLookup> = STORE.clone();
            Reviewer::new(store, settings(flags), Metrics::new())
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let body = data;
    let flags = (body.len() % 4) as u8;
    let reviewer = &REVIEWERS[usize::from(flags)];
    let answer = reviewer.review(body);
    assert_eq!(answer, reviewer.review(body), "deterministic");
    if answer.status == 400 {
        assert_eq!(answer.content_type, "text/plain; charset=utf-8");
        return;
    }
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type, "application/json");
    let response: Value = serde_json::from_slice(&answer.body).expect("the answer is JSON");
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    let r = &response["response"];
    assert_eq!(r["allowed"], true, "never blocks a pod");
    assert_eq!(r.get("patchType").is_some(), r.get("patch").is_some());

    // A body the webhook answered with 200 is JSON (duplicate keys aside, which serde_json's
    // Value resolves to the last and the typed decode refuses).
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    assert_eq!(r["uid"], request["request"]["uid"], "uid echoed");
    let object = request["request"]["object"].clone();

    if r.get("patch").is_some() {
        let after = apply_response(object.clone(), r)
            .unwrap_or_else(|e| panic!("the patch does not apply to the pod: {e}"))
            .pod;
        let pod: Pod = serde_json::from_value(after.clone()).expect("the patched pod decodes");
        serde_json::to_vec(&pod).expect("and re-serialises");
        let namespace = request["request"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
            })
            .expect("an injected pod has a namespace")
            .to_string();
        let again = review_for(&after, &namespace, "second-pass");
        let second = reviewer.review(&serde_json::to_vec(&again).expect("JSON"));
        let second: Value = serde_json::from_slice(&second.body).expect("JSON");
        assert!(
            second["response"].get("patch").is_none(),
            "a second pass patches again: {}",
            second["response"]
        );
    }

    // The pure mutation on the typed pod, against every association outcome.
    let Ok(pod) = serde_json::from_value::<Pod>(object) else {
        return;
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let association = STORE.get(&namespace, mutate::service_account_of(&pod));
    let any = STORE.get("default", "s3-reader");
    let settings = settings(flags);
    for association in [association, any, None] {
        let m = mutate::mutate(&pod, association, &settings);
        let mut patched = serde_json::to_value(&pod).expect("a pod serialises");
        json_patch::patch(&mut patched, &m.patch).expect("mutate's patch applies");
        assert_eq!(
            patched,
            serde_json::to_value(&m.pod).expect("serialises"),
            "the patch makes mutate's pod"
        );
        let again = mutate::mutate(&m.pod, association, &settings);
        assert!(again.patch.0.is_empty(), "idempotent: {:?}", again.patch);
    }
});
