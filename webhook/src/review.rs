//! The wire handler: AdmissionReview `admission.k8s.io/v1` bytes in, answer bytes out, through
//! kube's admission types: the body decodes as an [`AdmissionReview`] of a [`Pod`], the answer is
//! [`AdmissionResponse::from`] its [`AdmissionRequest`], [`AdmissionResponse::with_patch`] the
//! typed patch of [`crate::mutate::plan`] when there is one, [`AdmissionResponse::into_review`].
//! It only decodes, asks the store, plans and encodes; no IO, so the fixture tests drive it
//! directly and `serve` wraps it in HTTPS.
//!
//! The answers, defined for every input (the webhook must never block a pod by mistake):
//!
//! | input | answer |
//! | --- | --- |
//! | not JSON (invalid UTF-8, truncated), not an `admission.k8s.io/v1` AdmissionReview, no `request`, no `request.uid`, a request kube's [`AdmissionRequest`] does not take (no `resource`, `userInfo` or `operation`, a field of the wrong type) | HTTP 400, text message |
//! | not a Pod, or not CREATE | allowed, no patch |
//! | store not ready, no `object`, an object that does not decode as a Pod, no namespace, no kind in the request nor the object | allowed, no patch, a warning, a log line, `pod_identity_webhook_review_errors_total{reason}` |
//! | a Pod whose association names a role the role policy does not allow its namespace | allowed, no patch, a warning (result `role_not_allowed`) |
//! | a Pod | allowed, with the JSONPatch of [`crate::mutate::plan`] when it is not empty, and its warnings |
//!
//! kube serializes the patch (`Vec<u8>`) as serde does: a JSON array of its bytes, not the base64
//! string Go writes; the API server's decoder takes either.
//!
//! Body size is limited by the HTTP layer (413).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use pod_identity_contracts::secret::json_error_message;
use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::mutate::{self, Outcome, Settings};
use crate::store::AssociationLookup;

/// `apiVersion` of the reviews the webhook accepts and answers.
pub const ADMISSION_API_VERSION: &str = META_API_VERSION_V1;
/// Prefix of every warning the webhook returns, so `kubectl` users know who spoke.
pub const WARNING_PREFIX: &str = "pod-identity-webhook: ";
/// `result` of a pod whose association the role policy refuses.
pub const ROLE_NOT_ALLOWED: &str = "role_not_allowed";

/// An HTTP answer: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    /// HTTP 400 with a one-line message: the request is not something the webhook can answer.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::text(400, message.into())
    }

    fn text(status: u16, message: String) -> Self {
        let mut body = message.into_bytes();
        body.push(b'\n');
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

fn not_a_review(e: &serde_json::Error) -> Answer {
    Answer::bad_request(format!(
        "request body is not an AdmissionReview: {}",
        json_error_message(e)
    ))
}

fn not_v1_review(kind: &str, api_version: &str) -> Answer {
    Answer::bad_request(format!(
        "expected kind {META_KIND}, apiVersion {ADMISSION_API_VERSION}; got kind {kind:?}, apiVersion {api_version:?}"
    ))
}

fn no_request() -> Answer {
    Answer::bad_request("AdmissionReview has no request object")
}

fn no_uid() -> Answer {
    Answer::bad_request("AdmissionReview request has no uid to answer")
}

/// The request of a decoded review, or the 400 answer for a review the webhook cannot answer.
#[allow(clippy::result_large_err)]
fn request_of(review: AdmissionReview<Pod>) -> Result<AdmissionRequest<Pod>, Answer> {
    if review.types.kind != META_KIND || review.types.api_version != ADMISSION_API_VERSION {
        return Err(not_v1_review(&review.types.kind, &review.types.api_version));
    }
    let request: AdmissionRequest<Pod> = review.try_into().map_err(|_| no_request())?;
    if request.uid.is_empty() {
        return Err(no_uid());
    }
    Ok(request)
}

/// A review's request and its object: absent, a [`Pod`], or why it is not one.
type Decoded = (
    AdmissionRequest<Pod>,
    Option<Result<Pod, serde_json::Error>>,
);

/// Decode a request body, or give its 400 answer.
///
/// The common case, a review with a pod, is decoded in one pass straight into kube's types. A
/// body that pass does not take is read as JSON for the answer and message it gets: the
/// review's own faults first (not JSON, not a v1 AdmissionReview, no request, no uid), then,
/// with the object (and the old object, never read) taken out to be decoded on its own, the
/// request decoded again; an object that is not a Pod is then an answerable oddity, not a
/// refused review. A request that names no kind takes its object's apiVersion and kind.
#[allow(clippy::result_large_err)]
fn decode(body: &[u8]) -> Result<Decoded, Answer> {
    // Validating the UTF-8 once up front is cheaper than string by string.
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(review) = serde_json::from_str::<AdmissionReview<Pod>>(text)
    {
        let mut request = request_of(review)?;
        let object = request.object.take().map(Ok);
        return Ok((request, object));
    }
    let mut review: Value = serde_json::from_slice(body).map_err(|e| not_a_review(&e))?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let (kind, api_version) = (text(review.get("kind")), text(review.get("apiVersion")));
    if kind != META_KIND || api_version != ADMISSION_API_VERSION {
        return Err(not_v1_review(&kind, &api_version));
    }
    let Some(request) = review.get_mut("request").and_then(Value::as_object_mut) else {
        return Err(no_request());
    };
    if request
        .get("uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(no_uid());
    }
    request.remove("oldObject");
    let object = request.remove("object").filter(|o| !o.is_null());
    if request.get("kind").is_none_or(Value::is_null) {
        let of_object = |key| text(object.as_ref().and_then(|o: &Value| o.get(key)));
        let api_version = of_object("apiVersion");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
        request.insert(
            "kind".into(),
            json!({"group": group, "version": version, "kind": of_object("kind")}),
        );
    }
    let review: AdmissionReview<Pod> =
        serde_json::from_value(review).map_err(|e| not_a_review(&e))?;
    let request = request_of(review)?;
    Ok((request, object.map(serde_json::from_value)))
}

/// What one review decided, for the log line and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `result` label: an [`Outcome`], `skipped_kind`, `skipped_operation` or `error`.
    pub result: &'static str,
    /// Reason of an `error` result.
    pub error: Option<&'static str>,
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    pub association_id: String,
    pub role_arn: String,
    pub patch_ops: usize,
    pub warnings: Vec<String>,
}

impl Decision {
    fn new(result: &'static str) -> Self {
        Self {
            result,
            error: None,
            namespace: String::new(),
            service_account: String::new(),
            pod: String::new(),
            association_id: String::new(),
            role_arn: String::new(),
            patch_ops: 0,
            warnings: Vec::new(),
        }
    }

    fn error(reason: &'static str, warning: String) -> Self {
        let mut d = Self::new("error");
        d.error = Some(reason);
        d.warnings.push(warning);
        d
    }
}

/// Answers AdmissionReviews. Cheap to clone; shared by every connection.
#[derive(Debug, Clone)]
pub struct Reviewer {
    store: Arc<dyn AssociationLookup>,
    settings: Arc<Settings>,
    metrics: Metrics,
}

impl Reviewer {
    pub fn new(store: Arc<dyn AssociationLookup>, settings: Settings, metrics: Metrics) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn AssociationLookup> {
        &self.store
    }

    /// Answer one request body: log it, count it, encode the answer.
    pub fn review(&self, body: &[u8]) -> Answer {
        let started = Instant::now();
        let answer = match decode(body) {
            Err(answer) => {
                tracing::warn!(
                    http.status = answer.status,
                    error.message = %String::from_utf8_lossy(&answer.body).trim_end(),
                    "admission request refused"
                );
                answer
            }
            Ok((request, object)) => {
                let (decision, patch) = self.decide(&request, object);
                self.metrics
                    .reviews
                    .with_label_values(&[decision.result])
                    .inc();
                if let Some(reason) = decision.error {
                    self.metrics
                        .review_errors
                        .with_label_values(&[reason])
                        .inc();
                }
                log_decision(&request.uid, &decision, started);
                respond(&request, patch, decision.warnings)
            }
        };
        self.metrics
            .http_requests
            .with_label_values(&[&answer.status.to_string()])
            .inc();
        self.metrics
            .review_duration
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    /// The decision and, when the pod is injected, its patch.
    fn decide(
        &self,
        request: &AdmissionRequest<Pod>,
        object: Option<Result<Pod, serde_json::Error>>,
    ) -> (Decision, Option<json_patch::Patch>) {
        let kind = &request.kind;
        if kind.kind.is_empty() {
            return (
                Decision::error(
                    "unknown_kind",
                    "the request names no kind; the object is allowed unchanged".into(),
                ),
                None,
            );
        }
        if !(kind.group.is_empty() && kind.kind == "Pod") {
            return (Decision::new("skipped_kind"), None);
        }
        if request.operation != Operation::Create {
            return (Decision::new("skipped_operation"), None);
        }
        let Some(object) = object else {
            return (
                Decision::error(
                    "no_object",
                    "the request carries no pod; it is allowed without Pod Identity".into(),
                ),
                None,
            );
        };
        let pod: Pod = match object {
            Ok(p) => p,
            Err(e) => {
                return (
                    Decision::error(
                        "bad_pod",
                        format!(
                            "the pod could not be decoded ({}); it is allowed without Pod Identity",
                            json_error_message(&e)
                        ),
                    ),
                    None,
                );
            }
        };
        let namespace = request
            .namespace
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| pod.metadata.namespace.as_deref().filter(|s| !s.is_empty()))
            .map(str::to_string);
        let service_account = mutate::service_account_of(&pod).to_string();
        let pod_name = pod
            .metadata
            .name
            .clone()
            .or_else(|| Some(request.name.clone()).filter(|s| !s.is_empty()))
            .or_else(|| pod.metadata.generate_name.clone())
            .unwrap_or_default();
        let Some(namespace) = namespace else {
            let mut d = Decision::error(
                "no_namespace",
                "the request names no namespace; the pod is allowed without Pod Identity".into(),
            );
            d.pod = pod_name;
            d.service_account = service_account;
            return (d, None);
        };
        if !self.store.is_ready() {
            let mut d = Decision::error(
                "store_not_ready",
                "associations are not loaded yet; the pod is allowed without Pod Identity".into(),
            );
            d.namespace = namespace;
            d.service_account = service_account;
            d.pod = pod_name;
            return (d, None);
        }
        let association = self.store.get(&namespace, &service_account);
        if let Some(a) = &association
            && let Some(denied) = self.store.refused(a)
        {
            let mut d = Decision::new(ROLE_NOT_ALLOWED);
            d.warnings.push(format!(
                "{denied}; the pod is allowed without Pod Identity (ask the cluster operator)"
            ));
            d.namespace = namespace;
            d.service_account = service_account;
            d.pod = pod_name;
            d.association_id = a.id();
            d.role_arn = a.role_arn.clone();
            return (d, None);
        }
        let plan = mutate::plan(&pod, association.as_ref(), &self.settings);
        let mut d = Decision::new(plan.outcome.as_str());
        d.namespace = namespace;
        d.service_account = service_account;
        d.pod = pod_name;
        if let Some(a) = &association {
            d.association_id = a.id();
            d.role_arn = a.role_arn.clone();
        }
        d.patch_ops = plan.op_count();
        let patch = (plan.outcome == Outcome::Injected).then(|| plan.patch());
        d.warnings = plan.warnings;
        (d, patch)
    }
}

fn log_decision(uid: &str, d: &Decision, started: Instant) {
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    macro_rules! line {
        ($level:ident, $msg:literal) => {
            // Strings as `&str`, not `%`: the same JSON, without formatting each into a String.
            tracing::$level!(
                admission.uid = uid,
                result = d.result,
                error.code = d.error.unwrap_or(""),
                k8s.namespace = d.namespace.as_str(),
                k8s.service_account = d.service_account.as_str(),
                k8s.pod = d.pod.as_str(),
                association_id = d.association_id.as_str(),
                role_arn = d.role_arn.as_str(),
                patch_ops = d.patch_ops,
                warnings = ?d.warnings,
                latency_ms,
                $msg
            )
        };
    }
    match d.result {
        "error" => line!(warn, "pod allowed without Pod Identity"),
        ROLE_NOT_ALLOWED => line!(
            warn,
            "pod not injected: its association names a role outside the role policy"
        ),
        "injected" => line!(info, "pod injected"),
        "already_injected" | "no_target_containers" => line!(info, "pod not changed"),
        _ => line!(debug, "pod not changed"),
    }
}

/// The answer to `request`: allowed, with the patch when there is one and the warnings.
fn respond(
    request: &AdmissionRequest<Pod>,
    patch: Option<json_patch::Patch>,
    warnings: Vec<String>,
) -> Answer {
    let mut response = AdmissionResponse::from(request);
    if let Some(patch) = patch.filter(|p| !p.0.is_empty()) {
        // Typed operations always serialize.
        response = response
            .with_patch(patch)
            .unwrap_or_else(|_| AdmissionResponse::from(request));
    }
    if !warnings.is_empty() {
        response.warnings = Some(
            warnings
                .into_iter()
                .map(|w| format!("{WARNING_PREFIX}{w}"))
                .collect(),
        );
    }
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => Answer {
            status: 200,
            content_type: "application/json",
            body,
        },
        // Strings, numbers and bytes always serialize.
        Err(e) => Answer::text(500, format!("the answer does not serialize: {e}")),
    }
}
