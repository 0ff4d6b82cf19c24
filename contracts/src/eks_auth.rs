//! The EKS Auth `AssumeRoleForPodIdentity` API in its rest-json wire form.
//!
//! `POST /clusters/{clusterName}/assume-role-for-pod-identity` with `{"token": "..."}`; a 200 body
//! of [`AssumeRoleForPodIdentityResponse`]; errors as an `x-amzn-errortype` header naming an
//! [`ErrorKind`] and a `{"message": "..."}` body.

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;

/// Header that names the error shape in a rest-json error response.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";

/// Header in which the agent presents its own projected service-account token to eks-auth (off
/// EKS), so that eks-auth knows which agent, on which node, is asking. AWS's EKS Auth
/// authenticates the node role by SigV4 instead and ignores this header.
pub const CALLER_TOKEN_HEADER: &str = "x-pod-identity-caller-token";

/// Audience of the agent's own token ([`CALLER_TOKEN_HEADER`]): distinct from the pods' audience,
/// so a pod token can never pass as an agent's, nor an agent's as a pod's.
pub const CALLER_AUDIENCE: &str = "eks-auth.podidentity.dev";

/// The ServiceAccount the shipped agent DaemonSet runs as, and the one eks-auth accepts as a
/// caller by default.
pub const DEFAULT_CALLER_SERVICE_ACCOUNT: &str = "kube-system/eks-pod-identity-agent";

/// Request path for a cluster.
pub fn request_path(cluster_name: &str) -> String {
    format!("/clusters/{cluster_name}/assume-role-for-pod-identity")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssumeRoleForPodIdentityRequest {
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentityAssociationRef {
    pub association_arn: String,
    pub association_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssumedRoleUser {
    pub arn: String,
    pub assume_role_id: String,
}

/// Credentials as EKS Auth returns them; `expiration` is epoch seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    #[serde(deserialize_with = "epoch_seconds")]
    pub expiration: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssumeRoleForPodIdentityResponse {
    pub subject: Subject,
    pub audience: String,
    pub pod_identity_association: PodIdentityAssociationRef,
    pub assumed_role_user: AssumedRoleUser,
    pub credentials: Credentials,
}

/// rest-json timestamps default to epoch seconds and may carry a fraction.
fn epoch_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f.trunc() as i64),
        _ => Err(serde::de::Error::custom("expiration is not epoch seconds")),
    }
}

/// The error body of every EKS Auth error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// The modeled errors of `AssumeRoleForPodIdentity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    AccessDenied,
    ExpiredToken,
    InternalServer,
    InvalidParameter,
    InvalidRequest,
    InvalidToken,
    ResourceNotFound,
    ServiceUnavailable,
    Throttling,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::AccessDenied,
        ErrorKind::ExpiredToken,
        ErrorKind::InternalServer,
        ErrorKind::InvalidParameter,
        ErrorKind::InvalidRequest,
        ErrorKind::InvalidToken,
        ErrorKind::ResourceNotFound,
        ErrorKind::ServiceUnavailable,
        ErrorKind::Throttling,
    ];

    /// The shape name, as sent in `x-amzn-errortype`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::ExpiredToken => "ExpiredTokenException",
            ErrorKind::InternalServer => "InternalServerException",
            ErrorKind::InvalidParameter => "InvalidParameterException",
            ErrorKind::InvalidRequest => "InvalidRequestException",
            ErrorKind::InvalidToken => "InvalidTokenException",
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::ServiceUnavailable => "ServiceUnavailableException",
            ErrorKind::Throttling => "ThrottlingException",
        }
    }

    /// HTTP status of the shape.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::AccessDenied
            | ErrorKind::ExpiredToken
            | ErrorKind::InvalidParameter
            | ErrorKind::InvalidRequest
            | ErrorKind::InvalidToken => 400,
            ErrorKind::ResourceNotFound => 404,
            ErrorKind::Throttling => 429,
            ErrorKind::InternalServer => 500,
            ErrorKind::ServiceUnavailable => 503,
        }
    }

    /// Errors that another try with the same token cannot fix: a cache must evict on them.
    pub fn is_irrecoverable(self) -> bool {
        matches!(
            self,
            ErrorKind::AccessDenied
                | ErrorKind::InvalidToken
                | ErrorKind::ExpiredToken
                | ErrorKind::ResourceNotFound
        )
    }

    /// Parse a shape name. Accepts the forms rest-json allows: a bare name, or one followed by
    /// `:` and a URL, or preceded by a namespace and `#`.
    pub fn from_name(raw: &str) -> Option<Self> {
        let name = raw.split(':').next().unwrap_or(raw);
        let name = name.rsplit('#').next().unwrap_or(name).trim();
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_round_trip_and_match_the_contract() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
            assert_eq!(
                ErrorKind::from_name(&format!("com.amazonaws.eksauth#{}:http://x", k.name())),
                Some(k)
            );
        }
        assert_eq!(ErrorKind::from_name("Nope"), None);
        let irrecoverable: Vec<_> = ErrorKind::ALL
            .into_iter()
            .filter(|k| k.is_irrecoverable())
            .map(ErrorKind::name)
            .collect();
        assert_eq!(
            irrecoverable,
            [
                "AccessDeniedException",
                "ExpiredTokenException",
                "InvalidTokenException",
                "ResourceNotFoundException"
            ]
        );
        assert_eq!(ErrorKind::Throttling.status(), 429);
        assert_eq!(ErrorKind::ResourceNotFound.status(), 404);
    }

    #[test]
    fn response_parses_integer_or_fractional_expiration() {
        let body = r#"{"subject":{"namespace":"default","serviceAccount":"sa"},"audience":"pods.eks.amazonaws.com",
          "podIdentityAssociation":{"associationArn":"arn:a","associationId":"a-1"},
          "assumedRoleUser":{"arn":"arn:aws:sts::111122223333:assumed-role/r/s","assumeRoleId":"AROA:s"},
          "credentials":{"accessKeyId":"ASIA","secretAccessKey":"k","sessionToken":"t","expiration":1795723200.5}}"#;
        let r: AssumeRoleForPodIdentityResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.credentials.expiration, 1_795_723_200);
        assert_eq!(r.subject.service_account, "sa");
        let again = serde_json::to_value(&r).unwrap();
        assert_eq!(again["credentials"]["expiration"], 1_795_723_200);
    }
}
