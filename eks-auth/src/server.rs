//! HTTP surfaces: the EKS Auth API on the API listener, and what the admin listener says of
//! eks-auth (its routes are the service shell's, `pod_identity_runtime::admin`). Routes and wire
//! format only; decisions live in [`crate::exchange`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use pod_identity_contracts::Secret;
use pod_identity_contracts::eks_auth::{
    CALLER_TOKEN_HEADER, ERROR_TYPE_HEADER, ErrorBody, ErrorKind,
};
use pod_identity_contracts::log_schema::{self, key};
use pod_identity_runtime::admin::{Check, Health};
use serde::Deserialize;

use crate::exchange::{Audit, Exchange, ExchangeError};
use crate::metrics::Metrics;

pub type Body = Full<Bytes>;

/// Largest request body read. A token is at most 16 KiB; anything much larger is refused
/// before it is parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most of a too-large body read (and discarded) before answering.
pub const MAX_DRAIN_BYTES: usize = 4 * 1024 * 1024;

/// Limits that protect every listener from slow or oversized clients: the accept loop's, and
/// how long the API waits for a request body.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub connection: pod_identity_runtime::serve::ConnectionLimits,
    pub body_read_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            // Heads carry SigV4 and the caller's own token: 32 KiB. A connection costs ~76 KiB
            // reading its head and up to 128 KiB more reading its body, so 512 of them stay
            // near 100 MiB of the 256 Mi limit. Clients are the nodes' agents, one address
            // each, whose bursts of new pods may open many connections at once.
            connection: pod_identity_runtime::serve::ConnectionLimits {
                max_header_bytes: 32 * 1024,
                max_connections: 512,
                max_connections_per_client: 128,
                ..Default::default()
            },
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// State of the API listener.
#[derive(Debug)]
pub struct ApiState {
    pub exchange: Exchange,
    pub metrics: Metrics,
    pub limits: ApiLimits,
}

const PATH_PREFIX: &str = "/clusters/";
const PATH_SUFFIX: &str = "/assume-role-for-pod-identity";

/// Serve one request on the API listener.
///
/// The request runs on a task of its own, to the end, even when the client goes away or the
/// connection is closed under it: an exchange that reached STS has issued credentials, and its
/// audit line must be written.
pub async fn api_service(
    state: Arc<ApiState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    match tokio::spawn(api_request(state, peer, req)).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, client.addr = %peer, "the exchange's task failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::InternalServer.name(),
                "eks-auth failed to answer; try again",
            )
        }
    }
}

async fn api_request(
    state: Arc<ApiState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = request_id();
    let cluster = route(req.method(), req.uri().path()).map(str::to_string);
    let Some(cluster) = cluster else {
        let mut resp = error_response(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "eks-auth serves only POST /clusters/{clusterName}/assume-role-for-pod-identity",
        );
        set_request_id(&mut resp, &request_id);
        return resp;
    };
    let mut audit = Audit {
        cluster: cluster.chars().take(100).collect(),
        ..Audit::default()
    };
    let result = handle(&state, &cluster, req, &mut audit).await;
    let latency_ms = crate::exchange::millis(started.elapsed());
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) => e.kind.name(),
    };
    state.metrics.requests.with_label_values(&[outcome]).inc();
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST),
    };
    log_exchange(&ExchangeLine {
        outcome,
        status,
        latency_ms,
        request_id: &request_id,
        peer,
        audit: &audit,
        refusal: result.as_ref().err(),
    });
    let mut resp = match result {
        Ok(body) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => error_response(status, e.kind.name(), &e.message),
    };
    set_request_id(&mut resp, &request_id);
    resp
}

/// What the audit line of one exchange says, beyond what the exchange noted in its [`Audit`].
struct ExchangeLine<'a> {
    outcome: &'a str,
    status: StatusCode,
    latency_ms: f64,
    request_id: &'a str,
    peer: SocketAddr,
    audit: &'a Audit,
    /// `None` when credentials were issued.
    refusal: Option<&'a ExchangeError>,
}

/// The audit line ([`log_schema::EXCHANGE`]), its fields listed once, in the order they are
/// written: INFO with the issued credentials' role and key on success; WARN with the error, STS's
/// code and the role policy's reason on a refusal. A field given `None` is not written, so each
/// outcome writes only its own; the two levels are two callsites, as `tracing` needs.
fn log_exchange(l: &ExchangeLine<'_>) {
    use tracing::field::display;
    let (a, refusal) = (l.audit, l.refusal);
    let issued = refusal.is_none();
    // The fields only one outcome writes.
    let error_code = refusal.map(|e| e.kind.name());
    let error_message = refusal.map(|e| display(&e.message));
    let sts_code = refusal.map(|_| display(&a.sts_code));
    let role_policy_denied = refusal.map(|_| display(&a.role_policy_denied));
    let assumed_role_arn = issued.then(|| display(&a.assumed_role_arn));
    let access_key_id = issued.then(|| display(&a.access_key_id));
    macro_rules! exchange_line {
        ($level:expr) => {
            tracing::event!(
                $level,
                { key::AUDIT } = true,
                { key::OUTCOME } = l.outcome,
                { key::HTTP_STATUS } = l.status.as_u16(),
                { key::LATENCY_MS } = l.latency_ms,
                { key::REVIEW_MS } = a.review_ms,
                { key::STS_MS } = a.sts_ms,
                { key::REQUEST_ID } = %l.request_id,
                { key::CLIENT_ADDR } = %l.peer,
                { key::ERROR_CODE } = error_code,
                { key::ERROR_MESSAGE } = error_message,
                { key::STS_CODE } = sts_code,
                { key::CLUSTER } = %a.cluster,
                { key::CALLER } = %a.caller,
                { key::CALLER_NODE } = %a.caller_node,
                { key::CALLER_TOKEN_FINGERPRINT } = %a.caller_token_fingerprint,
                { key::TOKEN_FINGERPRINT } = %a.token_fingerprint,
                { key::K8S_NODE } = %a.node,
                { key::K8S_NAMESPACE } = %a.namespace,
                { key::K8S_SERVICE_ACCOUNT } = %a.service_account,
                { key::K8S_POD } = %a.pod,
                { key::K8S_POD_UID } = %a.pod_uid,
                { key::ASSOCIATION_ID } = %a.association_id,
                { key::ROLE_ARN } = %a.role_arn,
                { key::TARGET_ROLE_ARN } = %a.target_role_arn,
                { key::SESSION_NAME } = %a.session_name,
                { key::ASSUMED_ROLE_ARN } = assumed_role_arn,
                { key::ACCESS_KEY_ID } = access_key_id,
                { key::ROLE_POLICY_DENIED } = role_policy_denied,
                "{}",
                log_schema::EXCHANGE
            )
        };
    }
    if issued {
        exchange_line!(tracing::Level::INFO);
    } else {
        exchange_line!(tracing::Level::WARN);
    }
}

/// Read the body, keeping at most [`MAX_BODY_BYTES`]. A larger body is refused, but read on
/// (discarded, up to [`MAX_DRAIN_BYTES`]) so the client sees the answer instead of a reset.
async fn read_body(mut body: Incoming) -> Result<Bytes, String> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "the request body could not be read".to_string())?;
        if let Some(data) = frame.data_ref() {
            seen += data.len();
            if seen <= MAX_BODY_BYTES {
                kept.extend_from_slice(data);
            } else if seen > MAX_DRAIN_BYTES {
                break;
            }
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(format!(
            "the request body is larger than {MAX_BODY_BYTES} bytes"
        ));
    }
    Ok(Bytes::from(kept))
}

/// The cluster an API request is for: `POST /clusters/{clusterName}/assume-role-for-pod-identity`
/// with a non-empty name without `/`; `None` (404) for anything else.
pub fn route<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    path.strip_prefix(PATH_PREFIX)
        .and_then(|rest| rest.strip_suffix(PATH_SUFFIX))
        .filter(|c| !c.is_empty() && !c.contains('/'))
        .filter(|_| method == Method::POST)
}

/// The request must say its body is JSON (checked before the body is read).
pub fn check_content_type(headers: &http::HeaderMap) -> Result<(), ExchangeError> {
    let content_type_ok = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if content_type_ok {
        Ok(())
    } else {
        Err(ExchangeError::new(
            ErrorKind::InvalidRequest,
            "Content-Type must be application/json",
        ))
    }
}

#[derive(Deserialize)]
struct RequestBody {
    token: Option<serde_json::Value>,
}

/// The token of an `AssumeRoleForPodIdentity` body, `{"token": "..."}`: a JSON object whose
/// `token` is a non-blank string. Refusals never echo the body (it holds the token).
pub fn token_of_body(body: &[u8]) -> Result<Secret, ExchangeError> {
    let not_an_object = || {
        ExchangeError::new(
            ErrorKind::InvalidRequest,
            "the request body is not a JSON object",
        )
    };
    // A derived struct also deserializes from a JSON array (`["<token>"]`); the API's body is an
    // object only. (A duplicate `token` key is a decode error: no first-or-last ambiguity.)
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(not_an_object());
    }
    // JSON is UTF-8 (RFC 8259), but serde_json skips an ignored field without checking its
    // bytes: a body with invalid UTF-8 beside the token was accepted (found by fuzzing).
    let text = std::str::from_utf8(body).map_err(|_| not_an_object())?;
    let parsed: RequestBody = serde_json::from_str(text).map_err(|_| not_an_object())?;
    match parsed.token {
        Some(serde_json::Value::String(t)) if !t.trim().is_empty() => Ok(Secret::new(t)),
        Some(serde_json::Value::String(_)) | None => Err(ExchangeError::new(
            ErrorKind::InvalidParameter,
            "the request body has no token",
        )),
        Some(_) => Err(ExchangeError::new(
            ErrorKind::InvalidParameter,
            "token must be a string",
        )),
    }
}

async fn handle(
    state: &ApiState,
    cluster: &str,
    req: Request<Incoming>,
    audit: &mut Audit,
) -> Result<Bytes, ExchangeError> {
    let caller_token = caller_token_of(req.headers())?;
    check_content_type(req.headers())?;
    let body = match tokio::time::timeout(
        state.limits.body_read_timeout,
        read_body(req.into_body()),
    )
    .await
    {
        Err(_) => {
            return Err(ExchangeError::new(
                ErrorKind::InvalidRequest,
                "the request body was not received in time",
            ));
        }
        Ok(Err(reason)) => return Err(ExchangeError::new(ErrorKind::InvalidRequest, reason)),
        Ok(Ok(body)) => body,
    };
    let token = token_of_body(&body)?;
    let response = state
        .exchange
        .exchange(cluster, &token, caller_token.as_ref(), audit)
        .await?;
    serde_json::to_vec(&response)
        .map(Bytes::from)
        .map_err(|_| ExchangeError::new(ErrorKind::InternalServer, "response did not serialize"))
}

/// The agent's own token ([`CALLER_TOKEN_HEADER`]), if the caller sent one. A value that is not
/// text is refused, never quoted.
pub fn caller_token_of(headers: &http::HeaderMap) -> Result<Option<Secret>, ExchangeError> {
    match headers.get(CALLER_TOKEN_HEADER) {
        None => Ok(None),
        Some(v) => v.to_str().map(|t| Some(Secret::new(t))).map_err(|_| {
            ExchangeError::new(
                ErrorKind::AccessDenied,
                format!("the {CALLER_TOKEN_HEADER} header is not a token"),
            )
        }),
    }
}

/// A request id as AWS prints them: a random version-4 UUID.
fn request_id() -> String {
    use rand::Rng;
    pod_identity_contracts::ids::uuid_v4(rand::rng().random())
}

fn set_request_id(resp: &mut Response<Body>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
}

/// A rest-json error: `x-amzn-errortype` and `{"message": "..."}`.
pub fn error_response(status: StatusCode, name: &'static str, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&ErrorBody {
        message: message.to_string(),
    })
    .unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(ERROR_TYPE_HEADER, HeaderValue::from_static(name));
    resp
}

/// What the admin listener says of eks-auth: ready once the issuer's keys and the
/// associations have loaded.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub exchange: Exchange,
    pub metrics: Metrics,
}

impl Health for AdminState {
    async fn ready(&self) -> Check {
        let keys = self.exchange.verifier.is_ready();
        let associations = self.exchange.associations.is_ready();
        if keys && associations {
            Check::ok()
        } else {
            Check::unavailable(format_args!(
                "not ready: issuer keys loaded={keys}, associations loaded={associations}"
            ))
        }
    }

    fn metrics(&self) -> Option<Vec<u8>> {
        self.metrics
            .associations
            .set(i64::try_from(self.exchange.associations.len()).unwrap_or(i64::MAX));
        Some(self.metrics.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_post_to_one_cluster() {
        let path = "/clusters/lab/assume-role-for-pod-identity";
        assert_eq!(route(&Method::POST, path), Some("lab"));
        assert_eq!(route(&Method::GET, path), None);
        for bad in [
            "/clusters//assume-role-for-pod-identity",
            "/clusters/a/b/assume-role-for-pod-identity",
            "/clusters/lab/assume-role-for-pod-identity/",
            "/cluster/lab/assume-role-for-pod-identity",
        ] {
            assert_eq!(route(&Method::POST, bad), None, "{bad}");
        }
    }

    #[test]
    fn body_token_must_be_a_non_blank_string_and_is_never_echoed() {
        let ok = token_of_body(br#"{"token": "a.b.c", "other": 1}"#).unwrap();
        assert_eq!(ok.expose(), "a.b.c");
        for (body, kind) in [
            (&br#"{"token": "a.b.c""#[..], ErrorKind::InvalidRequest),
            (br#"["a.b.c"]"#, ErrorKind::InvalidRequest),
            (br#" ["a.b.c"]"#, ErrorKind::InvalidRequest),
            (
                b"{\"token\": \"a.b.c\", \"\x83\": 1}",
                ErrorKind::InvalidRequest,
            ),
            (
                br#"{"token": "a.b.c", "token": "a.b.c"}"#,
                ErrorKind::InvalidRequest,
            ),
            (br#"{"token": " "}"#, ErrorKind::InvalidParameter),
            (br#"{}"#, ErrorKind::InvalidParameter),
            (br#"{"token": ["a.b.c"]}"#, ErrorKind::InvalidParameter),
        ] {
            let err = token_of_body(body).unwrap_err();
            assert_eq!(err.kind, kind, "{}", String::from_utf8_lossy(body));
            assert!(!err.message.contains("a.b.c"), "{}", err.message);
        }
    }
}
