//! The HTTP surfaces and their plumbing: `POST /mutate` over HTTPS, `/healthz`, `/readyz` and
//! `/metrics` over plain HTTP on their own port. Routes, limits and connection handling only; the
//! answers come from [`crate::review::Reviewer`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pod_identity_runtime::serve::accept;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::review::Reviewer;
use crate::store::AssociationLookup;

pub type Body = Full<Bytes>;

/// Limits that protect the listeners from slow or oversized clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// TLS handshake and request headers must arrive within this.
    pub header_read_timeout: Duration,
    /// Largest request body; beyond it the answer is 413.
    pub max_body_bytes: usize,
    /// Connections served at once per listener; more wait in the accept queue.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: crate::config::DEFAULT_MAX_BODY_BYTES,
            max_connections: 4096,
        }
    }
}

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

/// Accept connections on `listener` (TLS when `tls` is set) and serve each with `service` until
/// `shutdown` flips; then let open connections finish their current request within `grace`.
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
    service: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            accepted = accept(&listener, name) => accepted,
        };
        let svc = service.clone();
        let tls = tls.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| {
                let svc = svc.clone();
                async move { Ok::<_, Infallible>(svc(req).await) }
            });
            let result = match tls {
                None => serve_connection(&builder, TokioIo::new(stream), svc, shutdown).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            serve_connection(&builder, TokioIo::new(stream), svc, shutdown).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, client.addr = %peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, client.addr = %peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, client.addr = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = name,
            "connections still open after the grace period; closing them"
        );
        connections.abort_all();
    }
}

/// Serve one connection; on shutdown finish the request in flight, then close.
async fn serve_connection<I, S>(
    builder: &http1::Builder,
    io: I,
    svc: S,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Send,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = shutdown.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::Settings;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use pod_identity_contracts::association::AssociationSet;

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
