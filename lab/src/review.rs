//! The lab's TokenReview: the part of kube-apiserver that tells eks-auth (`--token-review`)
//! whether a token is still alive. It verifies the token as the API server does (its own key,
//! issuer, expiry, the audiences asked for) and then, for a pod-bound token, whether that pod
//! still exists: the issuer records every pod it minted for, and a "deleted" pod is forgotten
//! (scenario `deleted-pod`). The answer has the shape of `authentication.k8s.io/v1` TokenReview,
//! and never echoes the token. Loopback only, and it asks its callers for no credentials.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{DecodingKey, Validation};
use pod_identity_contracts::claims::ServiceAccountClaims;
use serde::Deserialize;
use serde_json::{Value, json};

/// Where kube-apiserver serves TokenReview.
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// The pods the lab's API server knows, by uid.
#[derive(Debug, Clone, Default)]
pub struct LivePods(Arc<Mutex<HashSet<String>>>);

impl LivePods {
    pub fn add(&self, uid: &str) {
        self.lock().insert(uid.to_string());
    }

    /// Forget the pod, as deleting it does.
    pub fn delete(&self, uid: &str) {
        self.lock().remove(uid);
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains(uid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the review needs: the issuer's public key and URL, and the live pods.
#[derive(Clone)]
pub struct Reviewer {
    pub issuer: String,
    pub key: DecodingKey,
    pub pods: LivePods,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ReviewRequest {
    spec: ReviewSpec,
}

#[derive(Deserialize)]
struct ReviewSpec {
    #[serde(default)]
    token: String,
    #[serde(default)]
    audiences: Vec<String>,
}

impl Reviewer {
    /// The review's `status`: authenticated with the user and the audiences, or an error.
    pub fn review(&self, token: &str, audiences: &[String]) -> Value {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_aud = false;
        let claims =
            match jsonwebtoken::decode::<ServiceAccountClaims>(token, &self.key, &validation) {
                Ok(data) => data.claims,
                Err(e) => return refused(&format!("invalid bearer token: {}", e.kind_name())),
            };
        let granted: Vec<&String> = audiences
            .iter()
            .filter(|a| claims.aud.contains(a.as_str()))
            .collect();
        if !audiences.is_empty() && granted.is_empty() {
            return refused(
                "invalid bearer token: token audiences is invalid for the target audiences",
            );
        }
        if let Some(pod) = claims.pod()
            && !self.pods.contains(&pod.uid)
        {
            return refused(&format!(
                "invalid bearer token: pod \"{}\" (uid {}) not found",
                pod.name, pod.uid
            ));
        }
        json!({
            "authenticated": true,
            "user": {"username": claims.sub, "groups": ["system:serviceaccounts", "system:authenticated"]},
            "audiences": granted,
        })
    }
}

fn refused(error: &str) -> Value {
    json!({"authenticated": false, "error": error})
}

/// jsonwebtoken's error kinds, named without the token.
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> String {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::ExpiredSignature => "token expired".into(),
            K::InvalidSignature => "signature does not verify".into(),
            K::InvalidIssuer => "wrong issuer".into(),
            _ => "not a token this API server issued".into(),
        }
    }
}

/// `POST` [`TOKEN_REVIEW_PATH`].
pub async fn token_review(State(r): State<Arc<Reviewer>>, body: axum::body::Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<ReviewRequest>(&body) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400, "message": "the body is not a TokenReview"})),
        )
            .into_response();
    };
    let status = r.review(req.spec.token.trim(), &req.spec.audiences);
    (
        axum::http::StatusCode::CREATED,
        Json(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {},
            "spec": {"audiences": req.spec.audiences},
            "status": status,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::{LabIssuer, TokenRequest};

    fn request(pod_uid: &str, audience: &str, issued_at: i64) -> TokenRequest {
        TokenRequest {
            namespace: "lab".into(),
            service_account: "demo".into(),
            service_account_uid: "sa-uid".into(),
            pod: "demo".into(),
            pod_uid: pod_uid.into(),
            node: "lab-node".into(),
            node_uid: "node-uid".into(),
            audience: audience.into(),
            issued_at,
            expiration_seconds: 3600,
        }
    }

    async fn review(issuer: &LabIssuer, token: &str, audience: &str) -> Value {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}{TOKEN_REVIEW_PATH}", issuer.url()))
            .json(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "spec": {"token": token, "audiences": [audience]}}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !answer.to_string().contains(token),
            "the token is never echoed"
        );
        answer["status"].clone()
    }

    #[tokio::test]
    async fn a_token_is_alive_while_its_pod_is_and_for_its_audience_only() {
        let issuer = LabIssuer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let now = jiff::Timestamp::now().as_second();
        let token = issuer
            .mint(&request("pod-1", "pods.eks.amazonaws.com", now))
            .unwrap();
        let token = token.token.expose();
        let ok = review(&issuer, token, "pods.eks.amazonaws.com").await;
        assert_eq!(ok["authenticated"], true, "{ok}");
        assert_eq!(ok["user"]["username"], "system:serviceaccount:lab:demo");
        assert_eq!(ok["audiences"], json!(["pods.eks.amazonaws.com"]));
        let other = review(&issuer, token, "sts.amazonaws.com").await;
        assert_eq!(other["authenticated"], false, "{other}");
        assert!(other["error"].as_str().unwrap().contains("audiences"));

        issuer.delete_pod("pod-1");
        let gone = review(&issuer, token, "pods.eks.amazonaws.com").await;
        assert_eq!(gone["authenticated"], false, "{gone}");
        assert!(
            gone["error"].as_str().unwrap().contains("not found"),
            "{gone}"
        );

        let expired = issuer
            .mint(&request("pod-2", "pods.eks.amazonaws.com", now - 7200))
            .unwrap();
        let status = review(&issuer, expired.token.expose(), "pods.eks.amazonaws.com").await;
        assert_eq!(status["error"], "invalid bearer token: token expired");
        let foreign = LabIssuer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let foreign = foreign
            .mint(&request("pod-3", "pods.eks.amazonaws.com", now))
            .unwrap();
        let status = review(&issuer, foreign.token.expose(), "pods.eks.amazonaws.com").await;
        assert_eq!(status["authenticated"], false, "{status}");

        let bad = reqwest::Client::new()
            .post(format!("{}{TOKEN_REVIEW_PATH}", issuer.url()))
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
    }
}
