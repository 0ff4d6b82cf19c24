//! The upstream token exchange: EKS Auth `AssumeRoleForPodIdentity`.
//!
//! [`Upstream`] is what the cache calls; [`EksAuthUpstream`] implements it with the real
//! aws-sdk-eksauth client (SigV4 with the node's credentials, the SDK's standard retries, a 500 ms
//! connect and 1 s attempt timeout). Every answer is checked before it can reach the cache: an
//! upstream that returns garbage, missing fields or already-expired credentials is an error, never
//! a cache entry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use jiff::Timestamp;
use pod_identity_contracts::Secret;
use pod_identity_contracts::credentials::{ContainerCredentials, short_access_key_id};
use pod_identity_contracts::eks_auth::ErrorKind;

/// What a successful exchange yields, ready to serve: the response body is serialized once here
/// and then shared by every cache hit, and so are the log fields.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The exact 200 body for `/v1/credentials`.
    pub body: Bytes,
    /// When the credentials expire.
    pub expiration: Timestamp,
    /// For logs: the access key id (not secret) and where the credentials came from.
    pub access_key_id: String,
    pub association_id: String,
    pub assumed_role_arn: String,
    /// Logged with every answer, rendered once: the access key id as
    /// [`short_access_key_id`] shortens it, and the expiration in RFC 3339.
    pub log_access_key_id: Box<str>,
    pub log_expiration: Box<str>,
}

impl Fetched {
    /// An answer from its parts; renders the log fields.
    pub fn from_parts(
        body: Bytes,
        expiration: Timestamp,
        access_key_id: String,
        association_id: String,
        assumed_role_arn: String,
    ) -> Self {
        Self {
            log_access_key_id: short_access_key_id(&access_key_id).into_boxed_str(),
            log_expiration: expiration.to_string().into_boxed_str(),
            body,
            expiration,
            access_key_id,
            association_id,
            assumed_role_arn,
        }
    }

    /// Build from parsed credentials, checking them; `now` guards against expired answers.
    pub fn new(
        credentials: ContainerCredentials,
        association_id: String,
        assumed_role_arn: String,
        now: Timestamp,
    ) -> Result<Self, UpstreamError> {
        if credentials.access_key_id.is_empty()
            || credentials.secret_access_key.expose().is_empty()
            || credentials.token.expose().is_empty()
        {
            return Err(UpstreamError::bad_response(
                "credentials are missing a key id, secret key or session token",
            ));
        }
        if credentials.expiration <= now {
            return Err(UpstreamError::bad_response(format!(
                "credentials already expired at {}",
                credentials.expiration
            )));
        }
        let body = serde_json::to_vec(&credentials)
            .map_err(|e| UpstreamError::bad_response(format!("cannot encode credentials: {e}")))?;
        Ok(Self::from_parts(
            // Exactly the body's length: serialization leaves up to half the buffer unused, and
            // every cached entry keeps its body.
            Bytes::from(body.into_boxed_slice()),
            credentials.expiration,
            credentials.access_key_id,
            association_id,
            assumed_role_arn,
        ))
    }
}

/// How an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// A modeled EKS Auth error (or an unmodeled one with its HTTP status).
    Api { code: String, status: u16 },
    /// No answer in time.
    Timeout,
    /// Could not connect or the connection broke.
    Network,
    /// An answer we cannot use: not JSON, missing fields, expired credentials.
    BadResponse,
    /// Rejected locally before calling upstream (e.g. the agent is shutting down).
    Unavailable,
}

/// An upstream failure, as the agent reports it to the pod. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    pub message: String,
}

impl UpstreamError {
    pub fn api(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind: UpstreamErrorKind::Api {
                code: kind.name().to_string(),
                status: kind.status(),
            },
            message: message.into(),
        }
    }

    pub fn bad_response(message: impl Into<String>) -> Self {
        Self {
            kind: UpstreamErrorKind::BadResponse,
            message: message.into(),
        }
    }

    /// Status to answer the pod with: the upstream's for API errors; 5xx for the rest, which every
    /// SDK retries.
    pub fn status(&self) -> u16 {
        match &self.kind {
            UpstreamErrorKind::Api { status, .. } => *status,
            UpstreamErrorKind::BadResponse => 502,
            UpstreamErrorKind::Unavailable | UpstreamErrorKind::Network => 503,
            UpstreamErrorKind::Timeout => 504,
        }
    }

    /// The `code` of the error body.
    pub fn code(&self) -> &str {
        match &self.kind {
            UpstreamErrorKind::Api { code, .. } => code,
            UpstreamErrorKind::BadResponse => "BadUpstreamResponse",
            UpstreamErrorKind::Unavailable => "ServiceUnavailable",
            UpstreamErrorKind::Network => "UpstreamUnreachable",
            UpstreamErrorKind::Timeout => "UpstreamTimeout",
        }
    }

    /// What the pod is told: a fixed sentence per kind of failure. EKS Auth's own text (which
    /// may name eks-auth's IAM principal, roles or STS's wording) and transport details go to the
    /// agent's audit line only.
    pub fn for_pod(&self) -> &'static str {
        match &self.kind {
            UpstreamErrorKind::Api { code, .. } => match ErrorKind::from_name(code) {
                Some(ErrorKind::ResourceNotFound) => {
                    "no Pod Identity association for this pod's service account"
                }
                Some(ErrorKind::AccessDenied) => "EKS Auth refused the request",
                Some(ErrorKind::ExpiredToken) => "the pod's service account token has expired",
                Some(ErrorKind::InvalidToken) => "EKS Auth found the pod's token invalid",
                Some(ErrorKind::InvalidParameter | ErrorKind::InvalidRequest) => {
                    "EKS Auth refused the request as invalid"
                }
                Some(ErrorKind::Throttling) => "EKS Auth is throttling requests; retry later",
                Some(ErrorKind::InternalServer | ErrorKind::ServiceUnavailable) | None => {
                    "EKS Auth failed to answer; retry later"
                }
            },
            UpstreamErrorKind::BadResponse => {
                "EKS Auth gave an answer the agent cannot use; retry later"
            }
            UpstreamErrorKind::Unavailable => "the agent cannot take the request now; retry later",
            UpstreamErrorKind::Network => "the agent cannot reach EKS Auth; retry later",
            UpstreamErrorKind::Timeout => "EKS Auth did not answer in time; retry later",
        }
    }

    /// Retrying with the same token cannot succeed: the cache evicts the entry.
    pub fn is_irrecoverable(&self) -> bool {
        match &self.kind {
            UpstreamErrorKind::Api { code, .. } => {
                ErrorKind::from_name(code).is_some_and(ErrorKind::is_irrecoverable)
            }
            _ => false,
        }
    }
}

/// The token exchange as the cache sees it.
pub trait Upstream: Send + Sync + 'static {
    /// Exchange a pod token for credentials. The future must not borrow `self` or the token.
    fn fetch(&self, token: Arc<Secret>) -> BoxFuture<'static, Result<Fetched, UpstreamError>>;
}

/// Timeouts of the exchange, as in the official agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Wraps an upstream with its metrics: latency, calls in flight, and errors by recoverability and
/// code (`pod_identity_upstream_errors{type,code}`).
#[derive(Clone)]
pub struct Metered {
    inner: Arc<dyn Upstream>,
    metrics: crate::metrics::Metrics,
}

impl Metered {
    pub fn new(inner: Arc<dyn Upstream>, metrics: crate::metrics::Metrics) -> Self {
        Self { inner, metrics }
    }
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").finish_non_exhaustive()
    }
}

/// Decrements the in-flight gauge even when the call is dropped mid-way.
struct InflightGuard(prometheus::IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Upstream for Metered {
    fn fetch(&self, token: Arc<Secret>) -> BoxFuture<'static, Result<Fetched, UpstreamError>> {
        let call = self.inner.fetch(token);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            metrics.upstream_inflight.inc();
            let _guard = InflightGuard(metrics.upstream_inflight.clone());
            let timer = metrics.upstream_latency.start_timer();
            let result = call.await;
            timer.observe_duration();
            if let Err(e) = &result {
                let kind = if e.is_irrecoverable() {
                    "NonRecoverable"
                } else {
                    "Recoverable"
                };
                metrics
                    .upstream_errors
                    .with_label_values(&[kind, e.code()])
                    .inc();
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_told_a_plain_sentence_never_the_upstreams_words() {
        let detail = "User: arn:aws:sts::111122223333:assumed-role/eks-auth/x is not authorized";
        let mut errors: Vec<UpstreamError> = ErrorKind::ALL
            .iter()
            .map(|k| UpstreamError::api(*k, detail))
            .collect();
        errors.push(UpstreamError {
            kind: UpstreamErrorKind::Api {
                code: "SomethingNewException".into(),
                status: 400,
            },
            message: detail.into(),
        });
        for kind in [
            UpstreamErrorKind::BadResponse,
            UpstreamErrorKind::Unavailable,
            UpstreamErrorKind::Network,
            UpstreamErrorKind::Timeout,
        ] {
            errors.push(UpstreamError {
                kind,
                message: detail.into(),
            });
        }
        for e in &errors {
            let told = e.for_pod();
            assert!(!told.is_empty() && !told.contains("arn:"), "{e:?}: {told}");
        }
        assert_eq!(
            UpstreamError::api(ErrorKind::ResourceNotFound, detail).for_pod(),
            "no Pod Identity association for this pod's service account"
        );
    }
}
