//! Is the token still alive? A signature proves who minted a token, not that its pod still
//! exists: a bound token copied out of a pod keeps a valid signature until `exp`, after its pod,
//! its ServiceAccount or the ServiceAccount's uid are gone. With `--token-review`, each exchange
//! asks the API server (`TokenReview`, audience = ours) before STS is called, and the API server
//! answers as it would for its own API: the bound pod (and node, and secret) must still exist
//! with the uid the token names.
//!
//! It fails closed: an API server that cannot answer makes the exchange
//! `ServiceUnavailableException`, never a pass.

use std::fmt;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;
use pod_identity_contracts::eks_auth::ErrorKind;

use crate::exchange::ExchangeError;
use crate::verify::Verified;

/// Asks whether a verified token, minted for `audience`, is still accepted by the cluster.
pub trait LiveCheck: Send + Sync + fmt::Debug + 'static {
    fn check<'a>(
        &'a self,
        token: &'a str,
        verified: &'a Verified,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<(), ExchangeError>>;
}

/// [`LiveCheck`] through the API server's TokenReview.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
}

impl fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewer").finish_non_exhaustive()
    }
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }

    async fn review(
        &self,
        token: &str,
        verified: &Verified,
        audience: &str,
    ) -> Result<(), ExchangeError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![audience.to_string()]),
            },
            ..TokenReview::default()
        };
        let answer = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %review_error(&e), "TokenReview failed");
                ExchangeError::new(
                    ErrorKind::ServiceUnavailable,
                    "the cluster could not confirm the token is still valid; try again",
                )
            })?;
        let status = answer.status.unwrap_or_default();
        let expected_user = format!(
            "system:serviceaccount:{}:{}",
            verified.namespace, verified.service_account
        );
        let user = status
            .user
            .as_ref()
            .and_then(|u| u.username.as_deref())
            .unwrap_or_default();
        if status.authenticated == Some(true)
            && user == expected_user
            && status
                .audiences
                .as_ref()
                .is_none_or(|a| a.iter().any(|a| a == audience))
        {
            return Ok(());
        }
        let why = status
            .error
            .as_deref()
            .map(short)
            .unwrap_or_else(|| "not authenticated".into());
        Err(ExchangeError::new(
            ErrorKind::InvalidToken,
            format!(
                "the cluster no longer accepts this token (its pod or service account may be gone): {why}"
            ),
        ))
    }
}

impl LiveCheck for TokenReviewer {
    fn check<'a>(
        &'a self,
        token: &'a str,
        verified: &'a Verified,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<(), ExchangeError>> {
        Box::pin(self.review(token, verified, audience))
    }
}

/// The API server's reason, on one line and bounded (it names objects, never the token).
fn short(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

fn review_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", short(&s.message), s.code),
        other => short(&other.to_string()),
    }
}
