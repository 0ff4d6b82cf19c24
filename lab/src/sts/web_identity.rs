//! `AssumeRoleWithWebIdentity`: the unsigned call whose only credential is an OIDC token, which
//! is how eks-auth gets its own AWS identity without static keys (as IRSA does for a pod).
//!
//! The checks run in the order AWS documents its errors: the request's field constraints
//! (`ValidationError`); the token's shape (`InvalidIdentityToken`); an OIDC provider for its
//! `iss` in the role's account (`InvalidIdentityToken`, "No OpenIDConnect provider found in your
//! account for …"); the issuer's keys, fetched by OIDC discovery as AWS fetches them
//! (`IDPCommunicationError`); the signature (`InvalidIdentityToken`); `exp`
//! (`ExpiredTokenException`); `aud` against the provider's client ids (`InvalidIdentityToken`,
//! "Incorrect token audience"); then the role's trust, which must name the provider and the
//! token's exact `sub` and `aud` (`AccessDenied`), the duration against the role's
//! `MaxSessionDuration`, and the session policy. Codes are AWS's; messages are AWS's where they
//! are known, the lab's own otherwise.
//!
//! The token is a bearer credential: it is kept in a [`Secret`], and only its fingerprint reaches
//! an event or a log line.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use pod_identity_contracts::Secret;
use serde::Deserialize;

use super::assume::{
    Grant, Rule, check_duration_and_policy, policy_violations, requested_duration, role_violations,
    validation_error, violation,
};
use super::error::ApiError;
use super::identity::{Arn, Registry, RoleEntry};
use super::query::Params;

/// Longest token STS accepts (`WebIdentityToken`: 4 to 20,000 characters).
const MAX_TOKEN_CHARS: usize = 20_000;

/// An `AssumeRoleWithWebIdentity` request as sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebIdentityAsk {
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub token: Option<Secret>,
    pub duration_seconds: Option<String>,
    pub policy: Option<String>,
}

impl WebIdentityAsk {
    pub fn from_params(p: &Params) -> Self {
        let owned = |name: &str| p.get(name).map(str::to_string);
        Self {
            role_arn: owned("RoleArn"),
            role_session_name: owned("RoleSessionName"),
            token: p.get("WebIdentityToken").map(Secret::new),
            duration_seconds: owned("DurationSeconds"),
            policy: owned("Policy"),
        }
    }
}

/// Who the verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebIdentity {
    pub provider_arn: String,
    pub issuer: String,
    pub subject: String,
    /// The `aud` the provider accepted the token for.
    pub audience: String,
}

/// The claims STS looks at.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    aud: Audience,
    exp: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
            Audience::None => false,
        }
    }
}

/// The request's field constraints; `ValidationError` with every violation, as AWS words them.
pub(crate) fn validate(ask: &WebIdentityAsk) -> Result<(), ApiError> {
    // The token's value is never quoted back: only whether it is there and how long it is.
    let token = match ask.token.as_ref().map(|t| t.expose().chars().count()) {
        None => Some(
            "Value null at 'webIdentityToken' failed to satisfy constraint: Member must not be null"
                .to_string(),
        ),
        Some(n) if !(4..=MAX_TOKEN_CHARS).contains(&n) => Some(format!(
            "Value at 'webIdentityToken' failed to satisfy constraint: Member must have length \
             between 4 and {MAX_TOKEN_CHARS}"
        )),
        Some(_) => None,
    };
    let mut errors = role_violations(ask.role_arn.as_deref(), ask.role_session_name.as_deref());
    errors.extend(token);
    errors.extend(violation(
        "durationSeconds",
        ask.duration_seconds.as_deref(),
        &[Rule::Range(900, 43200)],
    ));
    errors.extend(policy_violations(ask.policy.as_deref()));
    validation_error(errors)
}

/// Verify `token` as AWS does for a role in `account`: a provider for its issuer there, the
/// issuer's current keys, the signature, `exp` and `aud`.
pub(crate) async fn verify(
    registry: &Registry,
    account: &str,
    token: &Secret,
    now: SystemTime,
) -> Result<WebIdentity, ApiError> {
    let token = token.expose();
    let (alg, kid) = header(token)?;
    let unverified = payload(token)?;
    let issuer = unverified.iss.ok_or_else(not_a_jwt)?;
    let provider = registry.provider(account, &issuer).ok_or_else(|| {
        ApiError::invalid_identity_token(format!(
            "No OpenIDConnect provider found in your account for {issuer}"
        ))
    })?;
    let keys = provider.keys.load().await.map_err(|e| {
        tracing::info!(issuer = %issuer, error = %e, "lab STS could not fetch the provider's keys");
        ApiError::idp_communication()
    })?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = keys
        .candidates(kid.as_deref(), alg)
        .find_map(|k| jsonwebtoken::decode::<Claims>(token, &k.key, &validation).ok())
        .ok_or_else(ApiError::unverifiable_identity_token)?
        .claims;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let exp = claims.exp.ok_or_else(not_a_jwt)?;
    if now_secs >= exp {
        return Err(ApiError::expired_identity_token(now_secs, exp));
    }
    let audience = provider
        .client_ids
        .iter()
        .find(|id| claims.aud.contains(id))
        .ok_or_else(|| ApiError::invalid_identity_token("Incorrect token audience"))?;
    Ok(WebIdentity {
        provider_arn: provider.arn.clone(),
        issuer,
        subject: claims.sub.unwrap_or_default(),
        audience: audience.clone(),
    })
}

/// Whether `identity` may have what `ask` asks of `role` (`None`: no such role).
pub(crate) fn decide(
    ask: &WebIdentityAsk,
    identity: &WebIdentity,
    role: Option<&RoleEntry>,
) -> Result<Grant, ApiError> {
    let role = role
        .filter(|r| {
            r.web_identity.iter().any(|t| {
                t.issuer == identity.issuer
                    && t.subject == identity.subject
                    && t.audience == identity.audience
            })
        })
        .ok_or_else(|| {
            ApiError::access_denied_action(
                "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            )
        })?;
    let duration = requested_duration(ask.duration_seconds.as_deref());
    check_duration_and_policy(duration, role, ask.policy.as_deref())?;
    Ok(Grant {
        role: role.clone(),
        session_name: ask.role_session_name.clone().unwrap_or_default(),
        duration,
        tags: Vec::new(),
        transitive_tag_keys: Vec::new(),
        packed_policy_size: ask
            .policy
            .as_deref()
            .map(|p| super::assume::packed_percent(Some(p), &[])),
    })
}

/// The account of the role asked for (the provider must be in it).
pub(crate) fn role_account(ask: &WebIdentityAsk) -> String {
    ask.role_arn
        .as_deref()
        .and_then(Arn::parse)
        .map(|a| a.account.to_string())
        .unwrap_or_default()
}

fn not_a_jwt() -> ApiError {
    ApiError::invalid_identity_token(
        "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)",
    )
}

/// The signing algorithm (RS256 or ES256, what Kubernetes signs with) and `kid`.
fn header(token: &str) -> Result<(Algorithm, Option<String>), ApiError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let header: Header = part(token, 0)?;
    let alg = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        _ => return Err(ApiError::unverifiable_identity_token()),
    };
    Ok((alg, header.kid))
}

/// The claims before the signature is checked: only to find the provider.
fn payload(token: &str) -> Result<Claims, ApiError> {
    part(token, 1)
}

fn part<T: serde::de::DeserializeOwned>(token: &str, index: usize) -> Result<T, ApiError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(not_a_jwt());
    }
    let encoded = parts.get(index).ok_or_else(not_a_jwt)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| not_a_jwt())?;
    serde_json::from_slice(&bytes).map_err(|_| not_a_jwt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(pairs: &[(&str, &str)]) -> WebIdentityAsk {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        WebIdentityAsk::from_params(&Params::parse(None, body.join("&").as_bytes()).unwrap())
    }

    #[test]
    fn constraint_errors_never_quote_the_token() {
        let e = validate(&ask(&[
            ("RoleArn", "arn:aws:iam::111122223333:role/eks-auth"),
            ("RoleSessionName", "eks-auth"),
            ("WebIdentityToken", "abc"),
        ]))
        .unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("'webIdentityToken'"), "{}", e.message);
        assert!(!e.message.contains("abc"), "{}", e.message);
        let e = validate(&ask(&[("RoleSessionName", "x")])).unwrap_err();
        assert!(
            e.message.starts_with("3 validation errors detected"),
            "{}",
            e.message
        );
    }

    #[test]
    fn malformed_tokens_are_not_jwts() {
        for token in [
            "a.b",
            "a.b.c.d",
            "!!!.e30.sig",
            "e30.e30.sig",
            "eyJhbGciOiJub25lIn0.e30.",
        ] {
            let got = header(token).and_then(|_| payload(token).map(|_| ()));
            let e = got.unwrap_err();
            assert_eq!(e.code, "InvalidIdentityToken", "{token}");
            assert!(!e.message.contains(token), "{token}: {}", e.message);
        }
    }

    #[test]
    fn audience_is_a_string_or_a_list() {
        let one: Claims = serde_json::from_str(r#"{"aud":"sts.amazonaws.com"}"#).unwrap();
        let many: Claims = serde_json::from_str(r#"{"aud":["x","sts.amazonaws.com"]}"#).unwrap();
        let none: Claims = serde_json::from_str("{}").unwrap();
        assert!(one.aud.contains("sts.amazonaws.com"));
        assert!(many.aud.contains("sts.amazonaws.com") && !many.aud.contains("y"));
        assert!(!none.aud.contains("sts.amazonaws.com"));
    }
}
