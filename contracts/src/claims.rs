//! The projected service-account token: its claims, and a parse that does not verify the signature.
//!
//! The agent cannot verify a token (it has no keys) but must reject the obviously bad before it
//! spends an upstream call: not a JWT, `alg: none`, no subject, expired. eks-auth verifies the
//! signature with `jsonwebtoken` and then applies the same structural checks from here.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};

use crate::constants::{MAX_TOKEN_BYTES, SUBJECT_PREFIX};

/// Why a token was refused. Messages never contain the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token: the Authorization header is missing or empty")]
    Missing,
    #[error("token is {len} bytes, larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("token is not a JWT: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not accepted (only asymmetric signatures are)")]
    UnsupportedAlgorithm(String),
    #[error("token has no {0:?} claim")]
    MissingClaim(&'static str),
    #[error("token subject is not system:serviceaccount:<namespace>:<name>")]
    BadSubject,
    #[error("token subject does not match its kubernetes.io claims")]
    SubjectMismatch,
    #[error("token audience does not include {expected:?}")]
    WrongAudience { expected: String },
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("token was issued in the future (iat {iat}, now {now})")]
    IssuedInFuture { iat: i64, now: i64 },
    #[error("token lives {lifetime} s (exp - iat), longer than the {max} s allowed")]
    TooLongLived { lifetime: i64, max: i64 },
}

impl TokenError {
    /// True for expiry, which EKS Auth reports as `ExpiredTokenException` rather than `InvalidToken`.
    pub fn is_expired(&self) -> bool {
        matches!(self, TokenError::Expired { .. })
    }
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(all) => all.iter().any(|a| a == wanted),
        }
    }

    pub fn as_vec(&self) -> Vec<&str> {
        match self {
            Audience::One(a) => vec![a.as_str()],
            Audience::Many(all) => all.iter().map(String::as_str).collect(),
        }
    }
}

/// A name and uid pair as Kubernetes puts it in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim of a bound service-account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// The claims of a projected service-account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountClaims {
    pub iss: String,
    pub aud: Audience,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub exp: i64,
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesClaims>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl ServiceAccountClaims {
    /// `(namespace, service account)` from `sub`.
    pub fn subject(&self) -> Result<(&str, &str), TokenError> {
        parse_subject(&self.sub)
    }

    /// Structural checks every consumer applies: a service-account subject that agrees with the
    /// `kubernetes.io` claim, which must name the pod the token is bound to.
    pub fn check_structure(&self) -> Result<(), TokenError> {
        let (ns, sa) = self.subject()?;
        let k8s = self
            .kubernetes
            .as_ref()
            .ok_or(TokenError::MissingClaim("kubernetes.io"))?;
        if k8s.namespace != ns || k8s.serviceaccount.name != sa {
            return Err(TokenError::SubjectMismatch);
        }
        if k8s.pod.is_none() {
            return Err(TokenError::MissingClaim("kubernetes.io.pod"));
        }
        Ok(())
    }

    /// `exp` and `nbf` against `now` (Unix seconds), allowing `leeway` seconds of clock skew.
    pub fn check_time(&self, now: i64, leeway: i64) -> Result<(), TokenError> {
        if now >= self.exp.saturating_add(leeway) {
            return Err(TokenError::Expired { exp: self.exp, now });
        }
        if let Some(nbf) = self.nbf
            && now.saturating_add(leeway) < nbf
        {
            return Err(TokenError::NotYetValid { nbf, now });
        }
        Ok(())
    }

    /// A short-lived token, as a projected one is: `iat` present and not ahead of `now` by more
    /// than `leeway`, and `exp - iat` at most `max_lifetime` seconds. A copied token with a far
    /// `exp` would otherwise buy credentials until then.
    pub fn check_lifetime(
        &self,
        now: i64,
        leeway: i64,
        max_lifetime: i64,
    ) -> Result<(), TokenError> {
        let iat = self.iat.ok_or(TokenError::MissingClaim("iat"))?;
        if iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture { iat, now });
        }
        let lifetime = self.exp.saturating_sub(iat);
        if lifetime > max_lifetime {
            return Err(TokenError::TooLongLived {
                lifetime,
                max: max_lifetime,
            });
        }
        Ok(())
    }

    pub fn check_audience(&self, expected: &str) -> Result<(), TokenError> {
        if self.aud.contains(expected) {
            Ok(())
        } else {
            Err(TokenError::WrongAudience {
                expected: expected.to_string(),
            })
        }
    }

    pub fn pod(&self) -> Option<&ObjectRef> {
        self.kubernetes.as_ref().and_then(|k| k.pod.as_ref())
    }

    pub fn node(&self) -> Option<&ObjectRef> {
        self.kubernetes.as_ref().and_then(|k| k.node.as_ref())
    }
}

/// Split `system:serviceaccount:<ns>:<sa>`; both parts non-empty, no further colons.
pub fn parse_subject(sub: &str) -> Result<(&str, &str), TokenError> {
    let rest = sub
        .strip_prefix(SUBJECT_PREFIX)
        .ok_or(TokenError::BadSubject)?;
    let (ns, sa) = rest.split_once(':').ok_or(TokenError::BadSubject)?;
    if ns.is_empty() || sa.is_empty() || sa.contains(':') {
        return Err(TokenError::BadSubject);
    }
    Ok((ns, sa))
}

/// The JOSE header fields we look at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JwtHeader {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
}

/// A token whose structure was checked but whose signature was not.
#[derive(Debug, Clone)]
pub struct UnverifiedToken {
    pub header: JwtHeader,
    pub claims: ServiceAccountClaims,
}

/// Algorithms a service-account issuer may sign with. Never `none`, never a shared-secret HMAC.
const ASYMMETRIC_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl UnverifiedToken {
    /// Parse a compact JWS without verifying it: size, three segments, an asymmetric `alg`, a
    /// non-empty signature, JSON claims of the service-account shape.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "expected three dot-separated segments".into(),
            ));
        };
        let header: JwtHeader = decode_segment(h, "header")?;
        if !ASYMMETRIC_ALGS.contains(&header.alg.as_str()) {
            return Err(TokenError::UnsupportedAlgorithm(truncate(&header.alg, 16)));
        }
        if s.is_empty() {
            return Err(TokenError::Malformed("signature segment is empty".into()));
        }
        let claims: ServiceAccountClaims = decode_segment(p, "payload")?;
        Ok(Self { header, claims })
    }
}

fn decode_segment<T: for<'de> Deserialize<'de>>(
    segment: &str,
    what: &str,
) -> Result<T, TokenError> {
    let bytes = B64
        .decode(segment)
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        TokenError::Malformed(format!(
            "{what} is not the expected JSON: {}",
            truncate(&crate::secret::json_error_message(&e), 120)
        ))
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn claims_json() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://issuer.example",
            "aud": ["pods.eks.amazonaws.com"],
            "sub": "system:serviceaccount:default:s3-reader",
            "iat": 1000, "nbf": 1000, "exp": 5000,
            "kubernetes.io": {
                "namespace": "default",
                "serviceaccount": {"name": "s3-reader", "uid": "sa-uid"},
                "pod": {"name": "web-0", "uid": "pod-uid"},
                "node": {"name": "node-a", "uid": "node-uid"}
            }
        })
    }

    fn token(header: serde_json::Value, claims: serde_json::Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    fn rs256() -> serde_json::Value {
        serde_json::json!({"alg": "RS256", "kid": "k1"})
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = UnverifiedToken::parse(&token(rs256(), claims_json())).unwrap();
        assert_eq!(t.header.kid.as_deref(), Some("k1"));
        assert_eq!(t.claims.subject().unwrap(), ("default", "s3-reader"));
        assert_eq!(t.claims.pod().unwrap().name, "web-0");
        t.claims.check_structure().unwrap();
        t.claims.check_audience("pods.eks.amazonaws.com").unwrap();
    }

    #[test]
    fn rejects_empty_huge_and_non_jwt() {
        assert_eq!(
            UnverifiedToken::parse("  ").unwrap_err(),
            TokenError::Missing
        );
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            UnverifiedToken::parse(&huge).unwrap_err(),
            TokenError::TooLarge { .. }
        ));
        for bad in ["abc", "a.b", "a.b.c.d", "!!!.@@@.###"] {
            assert!(
                matches!(
                    UnverifiedToken::parse(bad).unwrap_err(),
                    TokenError::Malformed(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_alg_none_hmac_and_empty_signature() {
        for alg in ["none", "HS256", "None"] {
            let t = token(serde_json::json!({"alg": alg}), claims_json());
            assert!(matches!(
                UnverifiedToken::parse(&t).unwrap_err(),
                TokenError::UnsupportedAlgorithm(_)
            ));
        }
        let unsigned = format!("{}.{}.", b64(&rs256()), b64(&claims_json()));
        assert!(matches!(
            UnverifiedToken::parse(&unsigned).unwrap_err(),
            TokenError::Malformed(_)
        ));
    }

    #[test]
    fn malformed_claims_do_not_echo_values() {
        let mut c = claims_json();
        c["exp"] = serde_json::json!("secret-looking-value");
        let err = UnverifiedToken::parse(&token(rs256(), c)).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)));
        assert!(!err.to_string().contains("secret-looking-value"), "{err}");
    }

    #[test]
    fn audience_may_be_a_string() {
        let mut c = claims_json();
        c["aud"] = serde_json::json!("pods.eks.amazonaws.com");
        let t = UnverifiedToken::parse(&token(rs256(), c)).unwrap();
        t.claims.check_audience("pods.eks.amazonaws.com").unwrap();
        assert!(t.claims.check_audience("sts.amazonaws.com").is_err());
    }

    #[test]
    fn time_checks_with_leeway() {
        let t = UnverifiedToken::parse(&token(rs256(), claims_json())).unwrap();
        t.claims.check_time(1000, 0).unwrap();
        t.claims.check_time(4999, 0).unwrap();
        assert!(t.claims.check_time(5000, 0).unwrap_err().is_expired());
        t.claims.check_time(5000, 10).unwrap();
        assert!(matches!(
            t.claims.check_time(999, 0).unwrap_err(),
            TokenError::NotYetValid { .. }
        ));
        t.claims.check_time(995, 10).unwrap();
    }

    #[test]
    fn subject_must_be_a_service_account_matching_the_claims() {
        for sub in [
            "system:serviceaccount:default",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:",
            "system:serviceaccount:ns:sa:extra",
            "user:alice",
        ] {
            assert_eq!(
                parse_subject(sub).unwrap_err(),
                TokenError::BadSubject,
                "{sub}"
            );
        }
        let mut c = claims_json();
        c["sub"] = serde_json::json!("system:serviceaccount:other:s3-reader");
        let t = UnverifiedToken::parse(&token(rs256(), c)).unwrap();
        assert_eq!(
            t.claims.check_structure().unwrap_err(),
            TokenError::SubjectMismatch
        );

        let mut c = claims_json();
        c.as_object_mut().unwrap().remove("kubernetes.io");
        let t = UnverifiedToken::parse(&token(rs256(), c)).unwrap();
        assert_eq!(
            t.claims.check_structure().unwrap_err(),
            TokenError::MissingClaim("kubernetes.io")
        );
    }

    #[test]
    fn lifetime_is_bounded_and_iat_not_ahead() {
        let mut c: ServiceAccountClaims = serde_json::from_value(serde_json::json!({
            "iss": "i", "aud": ["a"], "sub": "system:serviceaccount:n:s",
            "iat": 1000, "exp": 1000 + 86_400
        }))
        .unwrap();
        assert_eq!(c.check_lifetime(2000, 30, 86_400), Ok(()));
        c.exp += 1;
        assert_eq!(
            c.check_lifetime(2000, 30, 86_400),
            Err(TokenError::TooLongLived {
                lifetime: 86_401,
                max: 86_400
            })
        );
        c.exp -= 1;
        assert_eq!(
            c.check_lifetime(1000 - 30, 30, 86_400),
            Ok(()),
            "within leeway"
        );
        assert_eq!(
            c.check_lifetime(900, 30, 86_400),
            Err(TokenError::IssuedInFuture {
                iat: 1000,
                now: 900
            })
        );
        c.iat = None;
        assert_eq!(
            c.check_lifetime(2000, 30, 86_400),
            Err(TokenError::MissingClaim("iat"))
        );
    }
}
