//! The HTTP surfaces: `POST /mutate` (served over HTTPS), `/healthz`, `/readyz` and `/metrics`
//! (plain HTTP on their own port). Routes and the body limit only; the accept loop and TLS are
//! runtime's ([`pod_identity_runtime::serve`]), the answers [`crate::review::Reviewer`]'s.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

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

/// `POST /mutate`. Generic over the body so tests can stream one in.
pub async fn admission_service<B>(
    reviewer: Reviewer,
    max_body_bytes: usize,
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.uri().path() != "/mutate" {
        return count(
            reviewer.metrics(),
            text(StatusCode::NOT_FOUND, "not found\n"),
        );
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
    if declared.is_some_and(|n| n > max_body_bytes) {
        return too_large(&reviewer, max_body_bytes);
    }
    let body = match Limited::new(req.into_body(), max_body_bytes)
        .collect()
        .await
    {
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

/// `/healthz` (the process answers), `/readyz` (associations loaded), `/metrics`.
pub async fn admin_service(state: AdminState, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let ready = state.store.is_ready();
            state.metrics.store_ready.set(i64::from(ready));
            if ready {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "associations not loaded yet\n",
                )
            }
        }
        "/metrics" => {
            state
                .metrics
                .store_ready
                .set(i64::from(state.store.is_ready()));
            let mut resp = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static(Metrics::CONTENT_TYPE),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::Settings;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use pod_identity_contracts::association::AssociationSet;
    use std::convert::Infallible;

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
        let resp = admission_service(reviewer(), 4 * 1024 * 1024, req).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn routes_and_methods() {
        let get = Request::get("/mutate")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = admission_service(reviewer(), 1024, get).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let other = Request::post("/validate")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = admission_service(reviewer(), 1024, other).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let empty = Request::post("/mutate")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = admission_service(reviewer(), 1024, empty).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
}
