//! `mutate`: one pod from a file, through the same code path as `serve`.
//!
//! The pod is wrapped in the AdmissionReview the API server would send for its creation, handed
//! to the same [`Reviewer`] `serve` uses, and the returned patch is applied to the pod as read
//! (unknown fields included). What a security review or a CI policy check sees here is what the
//! cluster would get.

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionResponse;
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::review::{ADMISSION_API_VERSION, Reviewer};

/// Why a pod file could not be mutated.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("the input is not YAML or JSON: {0}")]
    Parse(String),
    #[error("the input is not a v1 Pod (kind {kind:?}, apiVersion {api_version:?})")]
    NotAPod { kind: String, api_version: String },
    #[error("the pod does not decode: {0}")]
    BadPod(String),
    #[error("the webhook refused the review: {0}")]
    Refused(String),
}

/// The outcome of [`mutate_document`].
#[derive(Debug, Clone)]
pub struct Offline {
    /// The JSONPatch `serve` would return (empty when the pod is left alone).
    pub patch: json_patch::Patch,
    /// The pod with the patch applied.
    pub pod: Value,
    /// The warnings `serve` would return.
    pub warnings: Vec<String>,
}

/// The AdmissionReview the API server sends when `pod` is created in `namespace`.
pub fn review_for(pod: &Value, namespace: &str, uid: &str) -> Value {
    json!({
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.pointer("/metadata/name").cloned().unwrap_or(Value::String(String::new())),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "pod-identity-webhook-offline"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// Mutate the pod in `text` (YAML or JSON) as `serve` would.
pub fn mutate_document(
    text: &str,
    default_namespace: &str,
    reviewer: &Reviewer,
) -> Result<Offline, OfflineError> {
    let pod: Value =
        serde_yaml_ng::from_str(text).map_err(|e| OfflineError::Parse(e.to_string()))?;
    let kind = pod["kind"].as_str().unwrap_or_default();
    let api_version = pod["apiVersion"].as_str().unwrap_or_default();
    if kind != "Pod" || api_version != "v1" {
        return Err(OfflineError::NotAPod {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        });
    }
    serde_json::from_value::<Pod>(pod.clone()).map_err(|e| OfflineError::BadPod(e.to_string()))?;
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(default_namespace)
        .to_string();
    let review = review_for(&pod, &namespace, "offline");
    let body = serde_json::to_vec(&review).map_err(|e| OfflineError::Parse(e.to_string()))?;
    let answer = reviewer.review(&body);
    if answer.status != 200 {
        return Err(OfflineError::Refused(
            String::from_utf8_lossy(&answer.body).trim().to_string(),
        ));
    }
    let response: Value =
        serde_json::from_slice(&answer.body).map_err(|e| OfflineError::Refused(e.to_string()))?;
    apply_response(pod, &response["response"])
}

/// Apply an AdmissionResponse's patch to `pod` and collect its warnings.
pub fn apply_response(mut pod: Value, response: &Value) -> Result<Offline, OfflineError> {
    let response = AdmissionResponse::deserialize(response).map_err(|e| {
        OfflineError::Refused(format!("the answer is not an AdmissionResponse: {e}"))
    })?;
    let warnings = response.warnings.unwrap_or_default();
    let patch: json_patch::Patch = match response.patch {
        None => json_patch::Patch::default(),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| OfflineError::Refused(format!("patch is not a JSONPatch: {e}")))?,
    };
    json_patch::patch(&mut pod, &patch)
        .map_err(|e| OfflineError::Refused(format!("patch does not apply: {e}")))?;
    Ok(Offline {
        patch,
        pod,
        warnings,
    })
}
