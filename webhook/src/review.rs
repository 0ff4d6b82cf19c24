//! The wire handler: AdmissionReview `admission.k8s.io/v1` bytes in, answer bytes out. It only
//! decodes, asks the store, calls [`crate::mutate::mutate`] and encodes; no IO, so the fixture
//! tests drive it directly and `serve` wraps it in HTTPS.
//!
//! The answers, defined for every input (the webhook must never block a pod by mistake):
//!
//! | input | answer |
//! | --- | --- |
//! | not JSON (invalid UTF-8, truncated), not an `admission.k8s.io/v1` AdmissionReview, no `request`, no `request.uid` | HTTP 400, text message |
//! | not a Pod, or not CREATE | allowed, no patch |
//! | store not ready, no `object`, an object that does not decode as a Pod, no namespace | allowed, no patch, a warning, a log line, `pod_identity_webhook_review_errors_total{reason}` |
//! | a Pod whose association names a role the role policy does not allow its namespace | allowed, no patch, a warning (result `role_not_allowed`) |
//! | a Pod | allowed, with the JSONPatch of [`crate::mutate::mutate`] when it is not empty, and its warnings |
//!
//! Body size is limited by the HTTP layer (413).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use pod_identity_contracts::secret::json_error_message;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::metrics::Metrics;
use crate::mutate::{self, Outcome, Settings};
use crate::store::AssociationLookup;

/// `apiVersion` of the reviews the webhook accepts and answers.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
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
        let mut body = message.into().into_bytes();
        body.push(b'\n');
        Self {
            status: 400,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// An AdmissionReview whose `request.object` decodes as `O`: a [`Pod`] in the one-pass decode,
/// raw JSON in the two-pass one (see [`Reviewer::review`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<O> {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<WireRequest<O>>,
}

/// The request fields the webhook reads. Scalars stay `Value` so a wrong type is an answerable
/// oddity, not a decode failure.
#[derive(Debug, Deserialize)]
struct WireRequest<O> {
    uid: Option<Value>,
    kind: Option<Value>,
    operation: Option<Value>,
    namespace: Option<Value>,
    name: Option<Value>,
    object: Option<O>,
}

impl<O> WireReview<O> {
    /// The request and the uid to echo, or the 400 answer for a review the webhook cannot answer.
    #[allow(clippy::result_large_err)]
    fn into_request(self) -> Result<(String, WireRequest<O>), Answer> {
        if self.kind.as_deref() != Some("AdmissionReview")
            || self.api_version.as_deref() != Some(ADMISSION_API_VERSION)
        {
            return Err(Answer::bad_request(format!(
                "expected kind AdmissionReview, apiVersion {ADMISSION_API_VERSION}; got kind {:?}, apiVersion {:?}",
                self.kind.as_deref().unwrap_or(""),
                self.api_version.as_deref().unwrap_or("")
            )));
        }
        let request = self
            .request
            .ok_or_else(|| Answer::bad_request("AdmissionReview has no request object"))?;
        match &request.uid {
            Some(Value::String(uid)) if !uid.is_empty() => Ok((uid.clone(), request)),
            _ => Err(Answer::bad_request(
                "AdmissionReview request has no uid to answer",
            )),
        }
    }
}

/// `group` and `kind` of a request's `kind` field.
fn group_kind(kind: &Value) -> (String, Option<String>) {
    (
        kind.get("group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        kind.get("kind").and_then(Value::as_str).map(str::to_string),
    )
}

/// `apiVersion` and `kind` of an object, when the request names no kind.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
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
        let answer = match self.decide(body) {
            Err(answer) => {
                tracing::warn!(
                    http.status = answer.status,
                    error.message = %String::from_utf8_lossy(&answer.body).trim_end(),
                    "admission request refused"
                );
                answer
            }
            Ok((uid, decision, patch)) => {
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
                log_decision(&uid, &decision, started);
                encode_response(&uid, patch, decision.warnings)
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

    /// Decode and decide: `Err` is an HTTP error answer; `Ok` carries the uid to echo, the
    /// decision and the patch (if any).
    ///
    /// The common case, a review that names its kind and carries a pod, is decoded in one pass
    /// with the object straight into a [`Pod`]. Anything that pass does not take (an object that
    /// is not a Pod, a request without a kind, any decode error) is decoded again in two passes,
    /// the object first kept raw, which gives every answer and error message; when both passes
    /// take a review they decide the same from the same pod.
    #[allow(clippy::result_large_err)]
    fn decide(&self, body: &[u8]) -> Result<(String, Decision, Option<Vec<u8>>), Answer> {
        // Validating the UTF-8 once up front is cheaper than string by string.
        if let Ok(text) = std::str::from_utf8(body)
            && let Ok(review) = serde_json::from_str::<WireReview<Pod>>(text)
            && let Some(kind) = review.request.as_ref().and_then(|r| r.kind.as_ref())
        {
            let group_kind = group_kind(kind);
            let (uid, request) = review.into_request()?;
            let (decision, patch) = self.decide_request(request, group_kind, Ok);
            return Ok((uid, decision, patch));
        }
        let review: WireReview<Box<RawValue>> = serde_json::from_slice(body).map_err(|e| {
            Answer::bad_request(format!(
                "request body is not an AdmissionReview: {}",
                json_error_message(&e)
            ))
        })?;
        let (uid, mut request) = review.into_request()?;
        request.object = request.object.filter(|raw| raw.get().trim() != "null");
        // Kind from the request; the object's own apiVersion/kind when the request has none.
        let group_kind = match &request.kind {
            Some(k) => group_kind(k),
            None => {
                let meta: TypeMeta = request
                    .object
                    .as_ref()
                    .and_then(|raw| serde_json::from_str(raw.get()).ok())
                    .unwrap_or_default();
                let group = meta
                    .api_version
                    .as_deref()
                    .and_then(|v| v.rsplit_once('/'))
                    .map(|(g, _)| g.to_string())
                    .unwrap_or_default();
                (group, meta.kind)
            }
        };
        let (decision, patch) =
            self.decide_request(request, group_kind, |raw| serde_json::from_str(raw.get()));
        Ok((uid, decision, patch))
    }

    /// The decision and, when the pod is injected, the JSONPatch bytes. `decode` turns the
    /// object into the pod, only once the request is known to be a Pod's creation.
    fn decide_request<O>(
        &self,
        request: WireRequest<O>,
        (group, kind): (String, Option<String>),
        decode: impl FnOnce(O) -> Result<Pod, serde_json::Error>,
    ) -> (Decision, Option<Vec<u8>>) {
        let Some(kind) = kind else {
            return (
                Decision::error(
                    "unknown_kind",
                    "the request names no kind; the object is allowed unchanged".into(),
                ),
                None,
            );
        };
        if !(group.is_empty() && kind == "Pod") {
            return (Decision::new("skipped_kind"), None);
        }
        if request.operation.as_ref().and_then(Value::as_str) != Some("CREATE") {
            return (Decision::new("skipped_operation"), None);
        }
        let request_pod_name = request
            .name
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(object) = request.object else {
            return (
                Decision::error(
                    "no_object",
                    "the request carries no pod; it is allowed without Pod Identity".into(),
                ),
                None,
            );
        };
        let pod: Pod = match decode(object) {
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
            .as_ref()
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| pod.metadata.namespace.clone().filter(|s| !s.is_empty()));
        let service_account = mutate::service_account_of(&pod).to_string();
        let pod_name = pod
            .metadata
            .name
            .clone()
            .or(request_pod_name.filter(|s| !s.is_empty()))
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
        let patch = (plan.outcome == Outcome::Injected).then(|| {
            let mut bytes = Vec::with_capacity(1024);
            plan.write_patch(&mut bytes);
            bytes
        });
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

/// The AdmissionReview answer, written field by field as `serde_json` would write it, so the
/// base64 patch goes straight into the body instead of through a `String` and the JSON string
/// escaper (it has nothing to escape):
/// `{"apiVersion":…,"kind":"AdmissionReview","response":{"uid":…,"allowed":true[,"patchType":"JSONPatch","patch":…][,"warnings":[…]]}}`.
fn encode_response(uid: &str, patch: Option<Vec<u8>>, warnings: Vec<String>) -> Answer {
    use base64::engine::general_purpose::STANDARD;
    let patch = patch.filter(|p| p.as_slice() != b"[]");
    let patch_len = patch
        .as_ref()
        .and_then(|p| base64::encoded_len(p.len(), true))
        .unwrap_or(0);
    let mut body = Vec::with_capacity(192 + uid.len() + patch_len);
    body.extend_from_slice(b"{\"apiVersion\":\"");
    body.extend_from_slice(ADMISSION_API_VERSION.as_bytes());
    body.extend_from_slice(b"\",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    // Strings always serialize.
    let _ = serde_json::to_writer(&mut body, uid);
    body.extend_from_slice(b",\"allowed\":true");
    if let Some(patch) = patch {
        body.extend_from_slice(b",\"patchType\":\"JSONPatch\",\"patch\":\"");
        let start = body.len();
        body.resize(start + patch_len, 0);
        let written = STANDARD
            .encode_slice(&patch, &mut body[start..])
            .unwrap_or(0);
        body.truncate(start + written);
        body.push(b'"');
    }
    if !warnings.is_empty() {
        body.extend_from_slice(b",\"warnings\":");
        let warnings: Vec<String> = warnings
            .into_iter()
            .map(|w| format!("{WARNING_PREFIX}{w}"))
            .collect();
        let _ = serde_json::to_writer(&mut body, &warnings);
    }
    body.extend_from_slice(b"}}");
    Answer {
        status: 200,
        content_type: "application/json",
        body,
    }
}
