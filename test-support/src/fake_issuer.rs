//! A fake service-account issuer on `127.0.0.1:0`: OIDC discovery at
//! `/.well-known/openid-configuration` pointing at `/openid/v1/jwks` (as kube-apiserver serves
//! them), counting every fetch so tests can bound how often a verifier goes back to the issuer.
//!
//! ```no_run
//! # async fn demo() {
//! use pod_identity_test_support::fake_issuer::FakeIssuer;
//! use pod_identity_test_support::tokens::{TokenBuilder, jwks};
//! let issuer = FakeIssuer::start(jwks()).await;
//! let token = TokenBuilder::new().issuer(issuer.url()).sign();
//! // ... give issuer.url() to eks-auth as --issuer ...
//! assert!(issuer.jwks_fetches() <= 2);
//! # let _ = token;
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::lock;

use pod_identity_contracts::oidc;
pub use pod_identity_contracts::oidc::JWKS_PATH;

struct Shared {
    url: String,
    jwks: Mutex<Value>,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

/// A running fake issuer. Stops on drop.
pub struct FakeIssuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl fmt::Debug for FakeIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeIssuer")
            .field("addr", &self.addr)
            .field("jwks_fetches", &self.jwks_fetches())
            .finish()
    }
}

impl FakeIssuer {
    /// Serve `jwks` (e.g. [`crate::tokens::jwks`]) on the current tokio runtime.
    pub async fn start(jwks: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake issuer: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake issuer: local addr");
        let shared = Arc::new(Shared {
            url: format!("http://{addr}"),
            jwks: Mutex::new(jwks),
            discovery_fetches: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route(oidc::DISCOVERY_PATH, get(discovery))
            .route(JWKS_PATH, get(jwks_doc))
            .with_state(shared.clone());
        let (stop, mut stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        Self { addr, shared, stop }
    }

    /// `http://127.0.0.1:<port>`: the issuer URL (`iss`) and discovery base.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// Replace the published keys (key rotation).
    pub fn set_jwks(&self, jwks: Value) {
        *lock(&self.shared.jwks) = jwks;
    }

    /// Answer 503 to everything while `failing` (an unreachable issuer).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// 406 unless the request's `Accept` admits `media_type`, as kube-apiserver negotiates.
fn not_acceptable(headers: &HeaderMap, media_type: &str) -> Option<Response> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    (!oidc::accepts(accept, media_type)).then(|| StatusCode::NOT_ACCEPTABLE.into_response())
}

async fn discovery(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = not_acceptable(&headers, oidc::DISCOVERY_MEDIA_TYPE) {
        return refused;
    }
    if s.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let doc = json!({
        "issuer": s.url,
        "jwks_uri": format!("{}{JWKS_PATH}", s.url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    });
    (
        [(header::CONTENT_TYPE, oidc::DISCOVERY_MEDIA_TYPE)],
        doc.to_string(),
    )
        .into_response()
}

async fn jwks_doc(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = not_acceptable(&headers, oidc::JWKS_MEDIA_TYPE) {
        return refused;
    }
    if s.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = lock(&s.jwks).to_string();
    ([(header::CONTENT_TYPE, oidc::JWKS_MEDIA_TYPE)], body).into_response()
}
