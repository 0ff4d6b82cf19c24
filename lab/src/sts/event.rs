//! [`StsEvent`]: one request as the lab's trace shows it. Access key ids are shortened, secrets
//! and session tokens are never held.

use serde::Serialize;

/// One session tag (neither keys nor values are secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionTag {
    pub key: String,
    pub value: String,
}

/// What the signature check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureVerdict {
    /// The request was refused before its signature was looked at (body, form).
    NotChecked,
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header, `X-Amz-Date` or credential scope that cannot be used.
    Malformed,
    /// The access key id is not one the endpoint knows.
    UnknownAccessKey,
    /// A temporary key without its session token, with another one, or a long-term key with one.
    InvalidSessionToken,
    /// Temporary credentials past their expiration.
    ExpiredToken,
    /// `X-Amz-Date` more than 15 minutes away from the endpoint's clock.
    OutsideTimeWindow,
    /// The signature is not the one the caller's secret gives.
    Mismatch,
    Valid,
    /// The action takes no signature: its credential is in the request
    /// (`AssumeRoleWithWebIdentity`'s token).
    NotRequired,
}

/// The caller of `AssumeRoleWithWebIdentity`, as its token says once verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebIdentityCaller {
    /// `arn:aws:iam::<account>:oidc-provider/<issuer>`.
    pub provider_arn: String,
    /// The token's `sub`.
    pub subject: String,
    /// The token's `aud` the provider accepted.
    pub audience: String,
}

/// How the request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StsOutcome {
    /// `GetCallerIdentity` answered.
    CallerIdentity { arn: String, account: String },
    /// `AssumeRole` issued credentials.
    Issued {
        /// Shortened, like every access key id in the trace.
        access_key_id: String,
        assumed_role_arn: String,
        assumed_role_id: String,
        expiration: jiff::Timestamp,
        duration_seconds: u32,
    },
    /// An AWS error answer.
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

/// One request to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StsEvent {
    pub request_id: String,
    /// The endpoint's clock when the request arrived.
    pub at: jiff::Timestamp,
    /// `Action` as sent, when there was one.
    pub action: Option<String>,
    /// Who signed, once the signature is verified.
    pub caller_arn: Option<String>,
    /// The access key id of the credential scope, shortened (`ASIAABCD…`), verified or not.
    pub caller_access_key_id: Option<String>,
    pub signature: SignatureVerdict,
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    /// Session tags the request asked for.
    pub tags: Vec<SessionTag>,
    pub transitive_tag_keys: Vec<String>,
    /// Transitive tags of the calling session, carried into the new one.
    pub inherited_tags: Vec<SessionTag>,
    /// `DurationSeconds` as asked (`None`: the one-hour default).
    pub duration_seconds: Option<String>,
    pub policy_present: bool,
    /// `AssumeRoleWithWebIdentity` only: the token's fingerprint, as soon as one was sent.
    pub web_identity_token: Option<String>,
    /// `AssumeRoleWithWebIdentity` only: who the token proved the caller to be.
    pub web_identity: Option<WebIdentityCaller>,
    pub outcome: StsOutcome,
}
