//! The endpoint's two kinds of failure: starting it ([`LabStsError`]) and refusing a request
//! ([`ApiError`], which becomes AWS's `<ErrorResponse>`).

use std::net::SocketAddr;

use http::StatusCode;

/// Why the endpoint could not be built, started or stopped cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LabStsError {
    #[error("invalid lab STS config: {0}")]
    Config(String),
    #[error("cannot listen for the lab STS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the lab STS on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// One AWS error answer: status, code and message. Messages never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `Sender` for the caller's mistakes, `Receiver` for the endpoint's own.
    pub fn fault(&self) -> &'static str {
        if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }

    pub fn missing_authentication_token() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        )
    }

    pub fn incomplete_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "IncompleteSignature", message)
    }

    pub fn invalid_client_token_id() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    }

    pub fn expired_token() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ExpiredToken",
            "The security token included in the request is expired",
        )
    }

    pub fn signature_does_not_match() -> Self {
        Self::signature_problem(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        )
    }

    /// `SignatureDoesNotMatch` with a specific reason (expired signature, wrong scope).
    pub fn signature_problem(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", message)
    }

    pub fn access_denied(caller_arn: &str, role_arn: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            ),
        )
    }

    /// `AccessDenied` with AWS's wording for an action other than `AssumeRole`.
    pub fn access_denied_action(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    /// `InvalidIdentityToken`: a web identity token STS will not take.
    pub fn invalid_identity_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidIdentityToken", message)
    }

    /// `InvalidIdentityToken` for a signature that does not verify (AWS's documented text).
    pub fn unverifiable_identity_token() -> Self {
        Self::invalid_identity_token(
            "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request.",
        )
    }

    /// `ExpiredTokenException` for a web identity token past its `exp` (AWS's text).
    pub fn expired_identity_token(now: i64, exp: i64) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ExpiredTokenException",
            format!(
                "Token expired: current date/time {now} must be before the expiration date/time {exp}"
            ),
        )
    }

    /// `IDPCommunicationError`: the provider's keys could not be fetched (AWS's text).
    pub fn idp_communication() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "IDPCommunicationError",
            "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements",
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    pub fn invalid_parameter_value(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameterValue", message)
    }

    pub fn malformed_policy_document(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MalformedPolicyDocument", message)
    }

    pub fn packed_policy_too_large(percent: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PackedPolicyTooLarge",
            format!(
                "Packed policy consumes {percent}% of allotted space, please use smaller policy."
            ),
        )
    }

    pub fn invalid_action(action: &str, version: Option<&str>) -> Self {
        let version = version.unwrap_or("NO_VERSION_SPECIFIED");
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {action} for version {version}"),
        )
    }

    pub fn missing_action() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MissingAction", "Missing Action")
    }

    pub fn malformed_query_string(why: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MalformedQueryString",
            format!("The query string contains a syntax error: {why}"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    pub fn unreadable_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "The request body could not be read.",
        )
    }
}
