//! The HTTP surfaces: `POST /mutate` (served over HTTPS), and what the admin listener (plain
//! HTTP on its own port) says of the webhook. Routes and the body limit only; the accept loop,
//! TLS and the admin routes are runtime's ([`pod_identity_runtime::serve`],
//! [`pod_identity_runtime::admin`]), the answers [`crate::review::Reviewer`]'s.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use pod_identity_runtime::admin::{Check, Health};

use crate::body_budget::BodyBudget;
use crate::metrics::Metrics;
use crate::review::Reviewer;
use crate::store::AssociationLookup;

pub type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// How much of AdmissionReview bodies the webhook holds at once, in all requests together:
/// a quarter of its 128 Mi limit, shared fairly between clients ([`BodyBudget`]). A pod review is
/// a few KiB to 1.5 MiB (etcd's object limit).
pub const BODY_BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// A client must send its whole body within this, and wait no longer for room in the budget.
/// The API server sends at once and gives up after the webhook's `timeoutSeconds` (3).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request body may cost.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body; beyond it 413.
    pub max_bytes: usize,
    /// See [`BODY_READ_TIMEOUT`]; past it 408.
    pub read_timeout: Duration,
    /// Bytes of body held across requests (see [`BODY_BUDGET_BYTES`]).
    pub budget: Arc<BodyBudget>,
}

impl BodyLimits {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            read_timeout: BODY_READ_TIMEOUT,
            budget: BodyBudget::new(BODY_BUDGET_BYTES),
        }
    }
}

/// `POST /mutate`. Generic over the body so tests can stream one in.
pub async fn admission_service<B>(
    reviewer: Reviewer,
    limits: BodyLimits,
    client: IpAddr,
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.uri().path() != "/mutate" {
        return count(reviewer.metrics(), pod_identity_runtime::admin::not_found());
    }
    if req.method() != Method::POST {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview to /mutate\n",
        );
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return count(reviewer.metrics(), resp);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let max_body_bytes = limits.max_bytes;
    if declared.is_some_and(|n| n > max_body_bytes) {
        return too_large(&reviewer, max_body_bytes);
    }
    let deadline = tokio::time::Instant::now() + limits.read_timeout;
    let reserve = declared.unwrap_or(max_body_bytes);
    let Ok(reserved) =
        tokio::time::timeout_at(deadline, limits.budget.reserve(client, reserve)).await
    else {
        return busy(&reviewer, "no room for the body before the deadline");
    };
    let collected = tokio::select! {
        collected = tokio::time::timeout_at(
            deadline,
            Limited::new(req.into_body(), max_body_bytes).collect(),
        ) => collected,
        () = reserved.evicted() => {
            return busy(&reviewer, "a client holding less needed the room of this slow body");
        }
    };
    let Ok(collected) = collected else {
        tracing::warn!(
            http.status = 408u16,
            timeout_ms = limits.read_timeout.as_millis() as u64,
            "admission request refused: body not received in time"
        );
        return count(
            reviewer.metrics(),
            text(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            ),
        );
    };
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large(&reviewer, max_body_bytes);
        }
        Err(e) => {
            tracing::debug!(error = %e, "request body could not be read");
            return count(
                reviewer.metrics(),
                text(StatusCode::BAD_REQUEST, "request body could not be read\n"),
            );
        }
    };
    // Decoding a large review takes a few hundred microseconds: fine on the runtime thread.
    let answer = reviewer.review(&body);
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static(answer.content_type),
    );
    resp
}

/// 503: the body budget had no room for this request (or took it back).
fn busy(reviewer: &Reviewer, why: &'static str) -> Response<Body> {
    tracing::warn!(
        http.status = 503u16,
        budget_bytes = BODY_BUDGET_BYTES,
        why,
        "admission request refused: too many request bodies in flight"
    );
    count(
        reviewer.metrics(),
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight\n",
        ),
    )
}

fn too_large(reviewer: &Reviewer, max: usize) -> Response<Body> {
    tracing::warn!(
        http.status = 413u16,
        max_body_bytes = max,
        "admission request refused: body too large"
    );
    count(
        reviewer.metrics(),
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("AdmissionReview body is larger than {max} bytes\n"),
        ),
    )
}

fn count(metrics: &Metrics, resp: Response<Body>) -> Response<Body> {
    metrics
        .http_requests
        .with_label_values(&[resp.status().as_str()])
        .inc();
    resp
}

/// State of the plain-HTTP admin listener.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub store: Arc<dyn AssociationLookup>,
}

/// `/readyz` once the associations have loaded.
impl Health for AdminState {
    async fn ready(&self) -> Check {
        let ready = self.store.is_ready();
        self.metrics.store_ready.set(i64::from(ready));
        if ready {
            Check::ok()
        } else {
            Check::unavailable("associations not loaded yet")
        }
    }

    fn metrics(&self) -> Option<Vec<u8>> {
        self.metrics
            .store_ready
            .set(i64::from(self.store.is_ready()));
        Some(self.metrics.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::Settings;
    use futures::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use pod_identity_contracts::association::AssociationSet;
    use std::convert::Infallible;

    /// The API server's address, as the listener reports it.
    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));

    fn reviewer() -> Reviewer {
        Reviewer::new(
            Arc::new(AssociationSet::default()),
            Settings::default(),
            Metrics::new(),
        )
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_gets_413() {
        // 5 MiB in 64 KiB chunks, no Content-Length: the limit stops reading at 4 MiB.
        let chunks =
            (0..80).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b' '; 64 * 1024]))));
        let body = StreamBody::new(futures::stream::iter(chunks));
        let req = Request::post("/mutate").body(body).unwrap();
        let resp =
            admission_service(reviewer(), BodyLimits::new(4 * 1024 * 1024), CLIENT, req).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_finishes_gets_408_at_the_deadline() {
        let first =
            futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{")))]);
        let body = StreamBody::new(first.chain(futures::stream::pending()));
        let req = Request::post("/mutate").body(body).unwrap();
        let started = tokio::time::Instant::now();
        let resp = admission_service(reviewer(), BodyLimits::new(1024), CLIENT, req).await;
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(started.elapsed(), BODY_READ_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_wait_for_room_in_the_budget_and_no_longer_than_the_deadline() {
        let limits = BodyLimits::new(4 * 1024 * 1024);
        // Another client holds it all, in one read: no one to take room from.
        let _held = limits
            .budget
            .reserve(IpAddr::from([10, 0, 0, 1]), BODY_BUDGET_BYTES)
            .await;
        let req = Request::post("/mutate")
            .header(CONTENT_LENGTH, "2")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let resp = admission_service(reviewer(), limits, CLIENT, req).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn routes_and_methods() {
        let get = Request::get("/mutate")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = admission_service(reviewer(), BodyLimits::new(1024), CLIENT, get).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let other = Request::post("/validate")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = admission_service(reviewer(), BodyLimits::new(1024), CLIENT, other).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let empty = Request::post("/mutate")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = admission_service(reviewer(), BodyLimits::new(1024), CLIENT, empty).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}
