//! The admin listener every service has: `/healthz` (the process works), `/readyz` (it can
//! serve) and `/metrics` (Prometheus text), answered from what the service says of itself
//! ([`Health`]). Any other path gets Go's `404 page not found`, the official agent's answer, so
//! probes and scrapers meet one behaviour across the services.

use std::borrow::Cow;
use std::future::Future;

use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

/// The body of every admin answer.
pub type Body = http_body_util::Full<Bytes>;

/// A probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: StatusCode,
    pub body: Cow<'static, str>,
}

impl Check {
    /// 200 `ok`.
    pub const fn ok() -> Self {
        Self::new(StatusCode::OK, "ok\n")
    }

    /// 503 with why, on one line.
    pub fn unavailable(why: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Cow::Owned(format!("{why}\n")),
        }
    }

    pub const fn new(status: StatusCode, body: &'static str) -> Self {
        Self {
            status,
            body: Cow::Borrowed(body),
        }
    }

    fn into_response(self) -> Response<Body> {
        let body = match self.body {
            Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        };
        text(self.status, body)
    }
}

/// What a service says of itself on its admin listener.
pub trait Health: Clone + Send + Sync + 'static {
    /// `/healthz`: whether the process should be kept. By default, that it answers at all.
    fn live(&self) -> impl Future<Output = Check> + Send {
        std::future::ready(Check::ok())
    }

    /// `/readyz`: whether it should be sent work now.
    fn ready(&self) -> impl Future<Output = Check> + Send;

    /// `/metrics`' body, encoded now; `None` where this listener serves no metrics (a 404).
    fn metrics(&self) -> Option<Vec<u8>>;
}

/// The admin listener's service, for [`crate::supervisor::Supervisor::serve`].
pub async fn service<H: Health>(health: H, req: Request<Incoming>) -> Response<Body> {
    route(&health, req.uri().path()).await
}

async fn route<H: Health>(health: &H, path: &str) -> Response<Body> {
    match path {
        "/healthz" => health.live().await.into_response(),
        "/readyz" => health.ready().await.into_response(),
        "/metrics" => match health.metrics() {
            Some(body) => {
                let mut resp = Response::new(Body::new(Bytes::from(body)));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                resp
            }
            None => not_found(),
        },
        _ => not_found(),
    }
}

/// Go's 404, as the official agent answers every path it does not serve.
pub fn not_found() -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        Bytes::from_static(b"404 page not found\n"),
    )
}

fn text(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[derive(Clone)]
    struct Service {
        ready: bool,
        metrics: bool,
    }

    impl Health for Service {
        async fn ready(&self) -> Check {
            if self.ready {
                Check::ok()
            } else {
                Check::unavailable("keys not loaded")
            }
        }

        fn metrics(&self) -> Option<Vec<u8>> {
            self.metrics.then(|| b"up 1\n".to_vec())
        }
    }

    async fn get(health: &Service, path: &str) -> (u16, String, String) {
        let resp = route(health, path).await;
        let status = resp.status().as_u16();
        let content_type = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn routes() {
        let up = Service {
            ready: true,
            metrics: true,
        };
        let plain = "text/plain; charset=utf-8".to_string();
        assert_eq!(
            get(&up, "/healthz").await,
            (200, plain.clone(), "ok\n".into())
        );
        assert_eq!(
            get(&up, "/readyz").await,
            (200, plain.clone(), "ok\n".into())
        );
        assert_eq!(
            get(&up, "/metrics").await,
            (200, crate::metrics::CONTENT_TYPE.into(), "up 1\n".into())
        );
        let not_found = (404, plain.clone(), "404 page not found\n".to_string());
        for path in ["/", "/metrics/", "/readyz/x", "/HEALTHZ"] {
            assert_eq!(get(&up, path).await, not_found, "{path}");
        }
        let starting = Service {
            ready: false,
            metrics: false,
        };
        assert_eq!(
            get(&starting, "/healthz").await.0,
            200,
            "alive while not ready"
        );
        assert_eq!(
            get(&starting, "/readyz").await,
            (503, plain, "keys not loaded\n".into())
        );
        assert_eq!(
            get(&starting, "/metrics").await,
            not_found,
            "no metrics here"
        );
    }
}
