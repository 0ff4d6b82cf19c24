//! A fake service-account issuer on `127.0.0.1:0`: OIDC discovery at
//! `/.well-known/openid-configuration` pointing at `/openid/v1/jwks` (as kube-apiserver serves
//! them), counting every fetch so tests can bound how often a verifier goes back to the issuer.
//! It also answers `authentication.k8s.io/v1` TokenReview on the same port
//! ([`TOKEN_REVIEW_PATH`]), as the API server would for tokens it issued: signed by a key of the
//! JWKS it publishes, its own `iss`, not expired, and (if asked) for one of the audiences asked;
//! [`FakeIssuer::kubeconfig`] points a kube client at it (plain HTTP, no credentials). The answer
//! never echoes the token.
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
use axum::routing::{get, post};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::lock;

use pod_identity_contracts::oidc;
pub use pod_identity_contracts::oidc::JWKS_PATH;

/// Where kube-apiserver serves TokenReview.
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

struct Shared {
    url: String,
    jwks: Mutex<Value>,
    /// The JWKS's keys by `kid`, parsed once per [`FakeIssuer::set_jwks`], for TokenReview.
    review_keys: Mutex<Vec<(Option<String>, DecodingKey)>>,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    reviews: AtomicUsize,
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
            review_keys: Mutex::new(review_keys(&jwks)),
            jwks: Mutex::new(jwks),
            discovery_fetches: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            reviews: AtomicUsize::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route(oidc::DISCOVERY_PATH, get(discovery))
            .route(JWKS_PATH, get(jwks_doc))
            .route(TOKEN_REVIEW_PATH, post(token_review))
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
        *lock(&self.shared.review_keys) = review_keys(&jwks);
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

    /// TokenReviews answered so far (authenticated or not).
    pub fn reviews(&self) -> usize {
        self.shared.reviews.load(Ordering::SeqCst)
    }

    /// A kubeconfig whose server is this issuer (plain HTTP, no credentials): what `KUBECONFIG`
    /// points eks-auth's `--token-review` at.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: fake\n    cluster: {{server: \"{url}\"}}\nusers:\n  - name: fake\n    user: {{}}\ncontexts:\n  - name: fake\n    context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n",
            url = self.shared.url
        )
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

/// The keys of a JWKS that load, by `kid`.
fn review_keys(jwks: &Value) -> Vec<(Option<String>, DecodingKey)> {
    let Ok(set) = serde_json::from_value::<JwkSet>(jwks.clone()) else {
        return Vec::new();
    };
    set.keys
        .iter()
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((jwk.common.key_id.clone(), key))
        })
        .collect()
}

/// The review's `status` for `token`: authenticated as `sub` with the audiences granted, or why
/// not (naming no part of the token).
fn review(s: &Shared, token: &str, audiences: &[String]) -> Value {
    let refused = |why: &str| json!({"authenticated": false, "error": format!("invalid bearer token: {why}")});
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return refused("not a JWT");
    };
    let key = {
        let keys = lock(&s.review_keys);
        let found = match &header.kid {
            Some(kid) => keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid.as_str())),
            None => keys.first(),
        };
        match found {
            Some((_, key)) => key.clone(),
            None => return refused("signed by a key this issuer does not publish"),
        }
    };
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&s.url]);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims = match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            return refused(match e.kind() {
                K::ExpiredSignature => "token expired",
                K::InvalidSignature => "signature does not verify",
                K::InvalidIssuer => "wrong issuer",
                _ => "not a token this issuer issued",
            });
        }
    };
    let token_audiences: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let granted: Vec<&String> = audiences
        .iter()
        .filter(|a| token_audiences.contains(&a.as_str()))
        .collect();
    if !audiences.is_empty() && granted.is_empty() {
        return refused("token audiences is invalid for the target audiences");
    }
    json!({
        "authenticated": true,
        "user": {"username": claims["sub"], "groups": ["system:serviceaccounts", "system:authenticated"]},
        "audiences": granted,
    })
}

/// `POST` [`TOKEN_REVIEW_PATH`]: `201` with the TokenReview and its status, as kube-apiserver.
async fn token_review(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    s.reviews.fetch_add(1, Ordering::SeqCst);
    if s.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not a TokenReview").into_response();
    };
    let token = request["spec"]["token"].as_str().unwrap_or_default().trim();
    let audiences: Vec<String> = request["spec"]["audiences"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let status = review(&s, token, &audiences);
    let answer = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {"audiences": audiences},
        "status": status,
    });
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::tokens::{TokenBuilder, jwks, now};

    async fn ask(issuer: &FakeIssuer, token: &str, audience: &str) -> Value {
        let answer = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{}{TOKEN_REVIEW_PATH}", issuer.url()))
            .json(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "spec": {"token": token, "audiences": [audience]}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let text = answer.text().await.unwrap();
        assert!(!text.contains(token), "the token is never echoed");
        serde_json::from_str::<Value>(&text).unwrap()["status"].clone()
    }

    #[tokio::test]
    async fn token_review_accepts_its_own_tokens_for_their_audiences_only() {
        let issuer = FakeIssuer::start(jwks()).await;
        let aud = pod_identity_contracts::constants::AUDIENCE;
        let good = TokenBuilder::new().issuer(issuer.url()).sign();
        let ok = ask(&issuer, &good, aud).await;
        assert_eq!(ok["authenticated"], true, "{ok}");
        assert_eq!(
            ok["user"]["username"],
            "system:serviceaccount:default:s3-reader"
        );
        assert_eq!(ok["audiences"], json!([aud]));

        let wrong_aud = ask(&issuer, &good, "sts.amazonaws.com").await;
        assert_eq!(wrong_aud["authenticated"], false, "{wrong_aud}");
        let other_issuer = TokenBuilder::new().sign();
        assert_eq!(
            ask(&issuer, &other_issuer, aud).await["error"],
            "invalid bearer token: wrong issuer"
        );
        let expired = TokenBuilder::new()
            .issuer(issuer.url())
            .issued_at(now() - 7200)
            .expires_at(now() - 3600)
            .sign();
        assert_eq!(
            ask(&issuer, &expired, aud).await["error"],
            "invalid bearer token: token expired"
        );
        let unknown_key = TokenBuilder::new()
            .issuer(issuer.url())
            .sign_with_key(&keys::SECOND);
        assert_eq!(
            ask(&issuer, &unknown_key, aud).await["authenticated"],
            false
        );
        assert_eq!(issuer.reviews(), 5);
        assert!(issuer.kubeconfig().contains(&issuer.url()));
    }
}
