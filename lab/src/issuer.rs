//! The lab's service-account token issuer: the stand-in for kube-apiserver's TokenRequest API.
//!
//! It generates an RS256 key at start (nothing is stored or reused between runs), serves OIDC
//! discovery and the JWKS exactly where kube-apiserver does (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`), so eks-auth finds and verifies the key the way it does on a real cluster,
//! and mints the bound projected token a kubelet would write into the pod's volume. It answers
//! TokenReview too ([`crate::review`]), knowing which pods it minted for are still alive.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pod_identity_contracts::claims::{Audience, KubernetesClaims, ObjectRef, ServiceAccountClaims};
use pod_identity_contracts::constants::SUBJECT_PREFIX;
use pod_identity_contracts::{Secret, oidc};
use serde_json::json;

use crate::review::{LivePods, Reviewer, TOKEN_REVIEW_PATH, token_review};
use crate::serve::Server;

pub use pod_identity_contracts::oidc::{DISCOVERY_PATH, JWKS_PATH};

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("cannot generate the signing key: {0}")]
    KeyGeneration(String),
    #[error("cannot bind the issuer on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// What a kubelet asks TokenRequest for: a token bound to one pod of one service account.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    pub pod: String,
    pub pod_uid: String,
    pub node: String,
    pub node_uid: String,
    pub audience: String,
    /// When the token was issued (Unix seconds).
    pub issued_at: i64,
    /// Its lifetime, from the projected volume's `expirationSeconds`.
    pub expiration_seconds: i64,
}

/// A minted token and the claims it carries (for the trace; the claims are not secret).
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: Secret,
    pub claims: ServiceAccountClaims,
    pub kid: String,
}

/// The running issuer.
#[derive(Debug)]
pub struct LabIssuer {
    url: String,
    kid: String,
    key: Arc<SigningKey>,
    pods: LivePods,
    /// Stopped when the issuer is dropped.
    _server: Server,
}

struct SigningKey {
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(** redacted **)")
    }
}

struct Served {
    discovery: String,
    jwks: String,
}

impl LabIssuer {
    /// Generate a key and serve discovery and the JWKS on `addr` (the lab uses `127.0.0.1:0`).
    pub async fn start(addr: SocketAddr) -> Result<Self, IssuerError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
            .map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        // kube-apiserver's kid: a digest of the public key; here, of the JWK's modulus.
        let kid = pod_identity_contracts::secret::fingerprint(
            serde_json::to_string(&jwk.algorithm)
                .unwrap_or_default()
                .as_bytes(),
        )
        .trim_start_matches("sha256:")
        .to_string();
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);

        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk)
            .map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap_or_default();
        let pods = LivePods::default();
        let review_pods = pods.clone();
        let server = Server::start(addr, |local| {
            let url = format!("http://{local}");
            let served = Arc::new(Served {
                discovery: json!({
                    "issuer": url,
                    "jwks_uri": format!("{url}{JWKS_PATH}"),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                })
                .to_string(),
                jwks,
            });
            let reviewer = Arc::new(Reviewer {
                issuer: url.clone(),
                key: decoding,
                pods: review_pods,
            });
            Router::new()
                .route(DISCOVERY_PATH, get(discovery))
                .route(JWKS_PATH, get(jwks_document))
                .with_state(served)
                .merge(
                    Router::new()
                        .route(TOKEN_REVIEW_PATH, post(token_review))
                        .with_state(reviewer),
                )
        })
        .await
        .map_err(|source| IssuerError::Bind { addr, source })?;
        Ok(Self {
            url: format!("http://{}", server.local_addr()),
            kid,
            key: Arc::new(SigningKey { encoding }),
            pods,
            _server: server,
        })
    }

    /// Delete a pod: TokenReview refuses its tokens from now on.
    pub fn delete_pod(&self, uid: &str) {
        self.pods.delete(uid);
    }

    /// A kubeconfig for this API server (plain HTTP on loopback, no credentials): what eks-auth's
    /// Kubernetes client reads for TokenReview.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: lab\n    cluster: {{server: \"{url}\"}}\nusers:\n  - name: lab\n    user: {{}}\ncontexts:\n  - name: lab\n    context: {{cluster: lab, user: lab}}\ncurrent-context: lab\n",
            url = self.url
        )
    }

    /// The issuer URL: the `iss` of every token, and where discovery is found.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The signing key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Mint a token as TokenRequest does for a projected volume.
    pub fn mint(&self, request: &TokenRequest) -> Result<Minted, IssuerError> {
        let claims = ServiceAccountClaims {
            iss: self.url.clone(),
            aud: Audience::Many(vec![request.audience.clone()]),
            sub: format!(
                "{SUBJECT_PREFIX}{}:{}",
                request.namespace, request.service_account
            ),
            iat: Some(request.issued_at),
            nbf: Some(request.issued_at),
            exp: request.issued_at + request.expiration_seconds,
            kubernetes: Some(KubernetesClaims {
                namespace: request.namespace.clone(),
                serviceaccount: ObjectRef {
                    name: request.service_account.clone(),
                    uid: request.service_account_uid.clone(),
                },
                pod: Some(ObjectRef {
                    name: request.pod.clone(),
                    uid: request.pod_uid.clone(),
                }),
                node: Some(ObjectRef {
                    name: request.node.clone(),
                    uid: request.node_uid.clone(),
                }),
                // As kube-apiserver does for long-lived projected tokens.
                warnafter: Some(request.issued_at + request.expiration_seconds.min(3607)),
            }),
            jti: Some(crate::ids::uuid()),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key.encoding)?;
        self.pods.add(&request.pod_uid);
        Ok(Minted {
            token: Secret::new(token),
            claims,
            kid: self.kid.clone(),
        })
    }
}

/// Each document with its media type, or 406 when `Accept` refuses it, as kube-apiserver does.
fn negotiated(headers: &HeaderMap, media_type: &'static str, body: String) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if !oidc::accepts(accept, media_type) {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    ([(header::CONTENT_TYPE, media_type)], body).into_response()
}

async fn discovery(State(s): State<Arc<Served>>, headers: HeaderMap) -> Response {
    negotiated(&headers, oidc::DISCOVERY_MEDIA_TYPE, s.discovery.clone())
}

async fn jwks_document(State(s): State<Arc<Served>>, headers: HeaderMap) -> Response {
    negotiated(&headers, oidc::JWKS_MEDIA_TYPE, s.jwks.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn request(now: i64) -> TokenRequest {
        TokenRequest {
            namespace: "lab".into(),
            service_account: "demo".into(),
            service_account_uid: "sa-uid".into(),
            pod: "demo".into(),
            pod_uid: "pod-uid".into(),
            node: "lab-node".into(),
            node_uid: "node-uid".into(),
            audience: "pods.eks.amazonaws.com".into(),
            issued_at: now,
            expiration_seconds: 86_400,
        }
    }

    #[tokio::test]
    async fn minted_tokens_verify_against_the_served_jwks_and_nothing_else() {
        let issuer = LabIssuer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let now = jiff::Timestamp::now().as_second();
        let minted = issuer.mint(&request(now)).unwrap();

        let body = reqwest::get(format!("{}{JWKS_PATH}", issuer.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let set: JwkSet = serde_json::from_str(&body).unwrap();
        let jwk = set.find(issuer.kid()).expect("served key has the kid");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["pods.eks.amazonaws.com"]);
        validation.set_issuer(&[issuer.url()]);
        let decoded = jsonwebtoken::decode::<ServiceAccountClaims>(
            minted.token.expose(),
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims, minted.claims);
        assert_eq!(decoded.claims.sub, "system:serviceaccount:lab:demo");

        let discovery: serde_json::Value =
            reqwest::get(format!("{}{DISCOVERY_PATH}", issuer.url()))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(discovery["issuer"], issuer.url());
        assert_eq!(
            discovery["jwks_uri"],
            format!("{}{JWKS_PATH}", issuer.url())
        );

        // Another run's key does not verify this run's tokens.
        let other = LabIssuer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_ne!(other.kid(), issuer.kid());
        let foreign = other.mint(&request(now)).unwrap();
        assert!(
            jsonwebtoken::decode::<ServiceAccountClaims>(
                foreign.token.expose(),
                &DecodingKey::from_jwk(jwk).unwrap(),
                &validation,
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn the_debug_form_never_shows_the_token() {
        let issuer = LabIssuer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let minted = issuer
            .mint(&request(jiff::Timestamp::now().as_second()))
            .unwrap();
        let shown = format!("{minted:?} {issuer:?}");
        assert!(!shown.contains(minted.token.expose()));
        let signature = minted.token.expose().rsplit('.').next().unwrap();
        assert!(!shown.contains(signature));
    }
}
