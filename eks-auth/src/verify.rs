//! Token verification: the first thing every exchange does, and the only gate before STS.
//!
//! In order: size; a JOSE header naming RS256 or ES256 (never `none`, never an HMAC, so the
//! public key cannot be abused as a shared secret); a key with the token's `kid` whose algorithm
//! is exactly the header's; the signature; then the claims: `iss` equal to the issuer, `aud`
//! containing the audience, `exp`/`nbf` with a small leeway, a lifetime (`exp - iat`) no longer
//! than `max_lifetime` and an `iat` not in the future (a projected token lives 24 h at most; a
//! copied token minted to live for years must not buy credentials for years), and a
//! `system:serviceaccount:<ns>:<sa>` subject that agrees with the `kubernetes.io` claim, which
//! must name the pod.
//!
//! Keys are cached. A token whose `kid` is unknown triggers one re-fetch (single flight), at most
//! once per `min_refresh`: a flood of random `kid`s costs the issuer one request per interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use pod_identity_contracts::claims::ServiceAccountClaims;
use pod_identity_contracts::constants::MAX_TOKEN_BYTES;
use pod_identity_contracts::eks_auth::ErrorKind;
use pod_identity_contracts::{TokenError, fingerprint};

use crate::keys::{KeyError, KeySet, KeySource};
use crate::metrics::Metrics;

/// What a verified token says about its pod.
#[derive(Debug, Clone)]
pub struct Verified {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub claims: ServiceAccountClaims,
}

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("token header is not a JOSE header naming RS256 or ES256")]
    BadHeader,
    #[error("token algorithm {0:?} is not accepted (only RS256 and ES256 are)")]
    Algorithm(String),
    /// The `kid` is kept whole (the key refresh looks it up) but shown bounded: it is the
    /// caller's text.
    #[error("token is signed by an unknown key (kid {:?})", .0.chars().take(64).collect::<String>())]
    UnknownKey(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token claims are not those of a service-account token: {0}")]
    Claims(String),
    #[error("token issuer is not {expected:?}")]
    WrongIssuer { expected: String },
    #[error("the issuer's keys are not loaded yet")]
    NoKeys,
}

impl VerifyError {
    /// The EKS Auth error the caller gets.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VerifyError::Token(e) if e.is_expired() => ErrorKind::ExpiredToken,
            VerifyError::NoKeys => ErrorKind::ServiceUnavailable,
            _ => ErrorKind::InvalidToken,
        }
    }
}

/// Static settings of a [`Verifier`].
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    pub min_refresh: Duration,
    /// Longest `exp - iat` accepted.
    pub max_lifetime: Duration,
}

/// Verifies pod tokens against the issuer's cached keys.
#[derive(Debug)]
pub struct Verifier {
    settings: VerifierSettings,
    source: KeySource,
    keys: RwLock<Arc<KeySet>>,
    loaded: AtomicBool,
    /// Single flight for loads, and when the last load for an unknown `kid` started.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    metrics: Metrics,
}

impl Verifier {
    pub fn new(settings: VerifierSettings, source: KeySource, metrics: Metrics) -> Self {
        Self {
            settings,
            source,
            keys: RwLock::new(Arc::new(KeySet::default())),
            loaded: AtomicBool::new(false),
            refresh: tokio::sync::Mutex::new(None),
            metrics,
        }
    }

    /// True once keys were loaded at least once.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }

    fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Install keys directly (tests, benchmarks).
    pub fn set_keys(&self, keys: KeySet) {
        self.metrics.keys.set(keys.len() as i64);
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        self.loaded.store(true, Ordering::Release);
    }

    /// Fetch the keys now (`trigger` labels the metric: `startup`, `periodic`, `unknown_kid`).
    /// Scheduled loads do not count against the unknown-`kid` rate limit.
    pub async fn refresh(&self, trigger: &'static str) -> Result<usize, KeyError> {
        let _single_flight = self.refresh.lock().await;
        self.load_locked(trigger).await
    }

    async fn load_locked(&self, trigger: &'static str) -> Result<usize, KeyError> {
        match self.source.load().await {
            Ok(keys) => {
                let n = keys.len();
                self.set_keys(keys);
                self.metrics
                    .key_refreshes
                    .with_label_values(&[trigger, "success"])
                    .inc();
                tracing::info!(trigger, keys = n, source = %self.source.describe(), "issuer keys loaded");
                Ok(n)
            }
            Err(e) => {
                self.metrics
                    .key_refreshes
                    .with_label_values(&[trigger, "failure"])
                    .inc();
                tracing::warn!(trigger, error = %e, "issuer keys could not be loaded");
                Err(e)
            }
        }
    }

    /// Verify a pod token with the cached keys only; an unknown `kid` is
    /// [`VerifyError::UnknownKey`].
    pub fn verify_cached(&self, token: &str, now: i64) -> Result<Verified, VerifyError> {
        self.verify_cached_for(token, now, &self.settings.audience)
    }

    /// [`Self::verify_cached`] for a token that must carry `audience` instead of the pods' (the
    /// agent's own token, [`crate::caller`]).
    pub fn verify_cached_for(
        &self,
        token: &str,
        now: i64,
        audience: &str,
    ) -> Result<Verified, VerifyError> {
        let (alg, kid) = header_of(token)?;
        if !self.is_ready() {
            return Err(VerifyError::NoKeys);
        }
        self.verify_with(&self.keys(), token, alg, kid.as_deref(), now, audience)
    }

    /// Verify a pod token, re-fetching the keys once (rate-limited) when its `kid` is unknown.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Verified, VerifyError> {
        self.verify_for(token, now, &self.settings.audience).await
    }

    /// [`Self::verify`] for a token that must carry `audience`.
    pub async fn verify_for(
        &self,
        token: &str,
        now: i64,
        audience: &str,
    ) -> Result<Verified, VerifyError> {
        match self.verify_cached_for(token, now, audience) {
            Err(VerifyError::UnknownKey(kid)) => {
                if self.refresh_for_unknown_kid(&kid).await {
                    self.verify_cached_for(token, now, audience)
                } else {
                    Err(VerifyError::UnknownKey(kid))
                }
            }
            other => other,
        }
    }

    /// Whether the keys now know `kid` (after a refresh by us or by a concurrent caller).
    async fn refresh_for_unknown_kid(&self, kid: &str) -> bool {
        let mut last = self.refresh.lock().await;
        if self.keys().contains_kid(kid) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < self.settings.min_refresh) {
            self.metrics
                .key_refreshes
                .with_label_values(&["unknown_kid", "rate_limited"])
                .inc();
            return false;
        }
        *last = Some(Instant::now());
        // Under the lock (single flight): concurrent callers with the same new kid wait for this
        // one fetch and then find the key; callers with other unknown kids are rate-limited.
        self.load_locked("unknown_kid").await.is_ok() && self.keys().contains_kid(kid)
    }

    fn verify_with(
        &self,
        keys: &KeySet,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        now: i64,
        audience: &str,
    ) -> Result<Verified, VerifyError> {
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let mut tried = false;
        let mut claims = None;
        for entry in keys.candidates(kid, alg) {
            tried = true;
            match jsonwebtoken::decode::<ServiceAccountClaims>(token, &entry.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                    jsonwebtoken::errors::ErrorKind::Json(_)
                    | jsonwebtoken::errors::ErrorKind::InvalidClaimFormat(_)
                    | jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => {
                        // The signature verified (claims are decoded after it): a well-signed
                        // token of the wrong shape.
                        return Err(VerifyError::Claims(claim_error(&e)));
                    }
                    _ => return Err(VerifyError::BadSignature),
                },
            }
        }
        let claims = match claims {
            Some(c) => c,
            None if !tried => return Err(VerifyError::UnknownKey(kid.unwrap_or("").to_string())),
            None => return Err(VerifyError::BadSignature),
        };
        if claims.iss != self.settings.issuer {
            return Err(VerifyError::WrongIssuer {
                expected: self.settings.issuer.clone(),
            });
        }
        claims.check_audience(audience)?;
        let leeway = i64::try_from(self.settings.leeway.as_secs()).unwrap_or(i64::MAX / 2);
        claims.check_time(now, leeway)?;
        let max_lifetime = i64::try_from(self.settings.max_lifetime.as_secs()).unwrap_or(i64::MAX);
        claims.check_lifetime(now, leeway, max_lifetime)?;
        claims.check_structure()?;
        let (ns, sa) = claims.subject()?;
        let pod = claims
            .pod()
            .ok_or(TokenError::MissingClaim("kubernetes.io.pod"))?;
        if pod.name.is_empty() || pod.uid.is_empty() {
            return Err(TokenError::MissingClaim("kubernetes.io.pod").into());
        }
        Ok(Verified {
            namespace: ns.to_string(),
            service_account: sa.to_string(),
            pod_name: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            claims,
        })
    }
}

/// serde's messages can quote input; keep the part before the first quote.
fn claim_error(e: &jsonwebtoken::errors::Error) -> String {
    let msg = e.to_string();
    let cut = msg.find(['"', '`']).map_or(msg.as_str(), |i| &msg[..i]);
    cut.trim_end().chars().take(120).collect()
}

/// The algorithm (RS256 or ES256 only) and `kid` of a token, after the size check.
fn header_of(token: &str) -> Result<(Algorithm, Option<String>), VerifyError> {
    if token.is_empty() {
        return Err(TokenError::Missing.into());
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_BYTES,
        }
        .into());
    }
    #[derive(serde::Deserialize)]
    struct RawHeader {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| VerifyError::BadHeader)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| VerifyError::BadHeader)?;
    let alg = match raw.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => return Err(VerifyError::Algorithm(other.chars().take(16).collect())),
    };
    Ok((alg, raw.kid))
}

/// The token's fingerprint for logs (`sha256:` + 12 hex digits).
pub fn token_fingerprint(token: &str) -> String {
    fingerprint(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use pod_identity_test_support::keys;
    use pod_identity_test_support::tokens::{DEFAULT_ISSUER, TokenBuilder, now};
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unknown_kid_is_shown_bounded() {
        let long = "k".repeat(10_000);
        let shown = VerifyError::UnknownKey(long).to_string();
        assert!(shown.len() < 200, "{shown}");
        assert!(shown.contains(&"k".repeat(64)));
    }

    fn verifier(with: &[keys::TestKey]) -> Verifier {
        let v = Verifier::new(
            VerifierSettings {
                issuer: DEFAULT_ISSUER.into(),
                audience: "pods.eks.amazonaws.com".into(),
                leeway: Duration::from_secs(5),
                min_refresh: Duration::from_secs(60),
                max_lifetime: Duration::from_secs(24 * 3600),
            },
            KeySource::File("/nonexistent".into()),
            Metrics::new(),
        );
        let jwks = keys::jwks_of(with);
        v.set_keys(KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap());
        v
    }

    fn refused(v: &Verifier, token: &str) -> VerifyError {
        v.verify_cached(token, now()).unwrap_err()
    }

    #[test]
    fn accepts_a_good_rs256_and_es256_token() {
        let v = verifier(&[keys::PRIMARY, keys::EC]);
        let ok = v.verify_cached(&TokenBuilder::new().sign(), now()).unwrap();
        assert_eq!(
            (ok.namespace.as_str(), ok.service_account.as_str()),
            ("default", "s3-reader")
        );
        assert_eq!(ok.pod_name, "web-0");
        assert!(!ok.pod_uid.is_empty());
        let es = TokenBuilder::new()
            .kid(keys::EC.kid)
            .sign_with_key(&keys::EC);
        v.verify_cached(&es, now()).unwrap();
        // No kid: every key of the header's algorithm is tried.
        v.verify_cached(&TokenBuilder::new().without_kid().sign(), now())
            .unwrap();
    }

    #[test]
    fn refuses_every_attack_with_the_right_kind() {
        let v = verifier(&[keys::PRIMARY, keys::EC]);
        let t = now();
        let cases: Vec<(&str, String, ErrorKind)> = vec![
            (
                "alg none",
                TokenBuilder::new().unsigned_alg_none(),
                ErrorKind::InvalidToken,
            ),
            (
                "hs256 with public key",
                TokenBuilder::new().hs256_with_public_key_as_secret(),
                ErrorKind::InvalidToken,
            ),
            (
                "unknown key, known kid",
                TokenBuilder::new().sign_with_key(&keys::SECOND),
                ErrorKind::InvalidToken,
            ),
            (
                "unknown kid",
                TokenBuilder::new().kid("nope").sign_with_key(&keys::SECOND),
                ErrorKind::InvalidToken,
            ),
            (
                "ES256 header on an RSA kid",
                TokenBuilder::new().sign_with_key(&keys::EC),
                ErrorKind::InvalidToken,
            ),
            (
                "wrong issuer",
                TokenBuilder::new().issuer("https://evil.test").sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "wrong audience",
                TokenBuilder::new().audience("sts.amazonaws.com").sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "expired",
                TokenBuilder::new()
                    .issued_at(t - 7200)
                    .not_before(t - 7200)
                    .expires_at(t - 60)
                    .sign(),
                ErrorKind::ExpiredToken,
            ),
            (
                "not yet valid",
                TokenBuilder::new()
                    .not_before(t + 600)
                    .expires_at(t + 3600)
                    .sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "missing kubernetes.io",
                TokenBuilder::new().without_claim("kubernetes.io").sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "no pod",
                TokenBuilder::new().without_pod().sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "sub mismatch",
                TokenBuilder::new()
                    .subject("system:serviceaccount:kube-system:admin")
                    .sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "sub not a service account",
                TokenBuilder::new().subject("user:alice").sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "exp missing",
                TokenBuilder::new().without_claim("exp").sign(),
                ErrorKind::InvalidToken,
            ),
            (
                "huge",
                TokenBuilder::new()
                    .claim("pad", json!("x".repeat(MAX_TOKEN_BYTES)))
                    .sign(),
                ErrorKind::InvalidToken,
            ),
            ("garbage", "not-a-jwt".into(), ErrorKind::InvalidToken),
            ("empty", String::new(), ErrorKind::InvalidToken),
        ];
        for (name, token, kind) in cases {
            let e = refused(&v, &token);
            assert_eq!(e.kind(), kind, "{name}: {e}");
            assert!(
                !e.to_string().contains(&token) || token.is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        use base64::Engine;
        let v = verifier(&[keys::PRIMARY]);
        let token = TokenBuilder::new().sign();
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = TokenBuilder::new().claims();
        claims["kubernetes.io"]["namespace"] = json!("kube-system");
        claims["sub"] = json!("system:serviceaccount:kube-system:s3-reader");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert!(matches!(refused(&v, &forged), VerifyError::BadSignature));
    }

    #[test]
    fn not_ready_until_keys_load() {
        let v = Verifier::new(
            VerifierSettings {
                issuer: DEFAULT_ISSUER.into(),
                audience: "pods.eks.amazonaws.com".into(),
                leeway: Duration::ZERO,
                min_refresh: Duration::from_secs(60),
                max_lifetime: Duration::from_secs(24 * 3600),
            },
            KeySource::File("/nonexistent".into()),
            Metrics::new(),
        );
        assert!(!v.is_ready());
        let e = refused(&v, &TokenBuilder::new().sign());
        assert_eq!(e.kind(), ErrorKind::ServiceUnavailable);
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, keys::jwks_of(&[keys::PRIMARY]).to_string()).unwrap();
        let metrics = Metrics::new();
        let v = Verifier::new(
            VerifierSettings {
                issuer: DEFAULT_ISSUER.into(),
                audience: "pods.eks.amazonaws.com".into(),
                leeway: Duration::ZERO,
                min_refresh: Duration::from_secs(60),
                max_lifetime: Duration::from_secs(24 * 3600),
            },
            KeySource::File(path.clone()),
            metrics.clone(),
        );
        v.refresh("startup").await.unwrap();
        // The issuer rotates in a new key: the first token with its kid triggers a re-read.
        std::fs::write(
            &path,
            keys::jwks_of(&[keys::PRIMARY, keys::SECOND]).to_string(),
        )
        .unwrap();
        let rotated = TokenBuilder::new()
            .kid(keys::SECOND.kid)
            .sign_with_key(&keys::SECOND);
        v.verify(&rotated, now()).await.unwrap();
        // A flood of random kids within the interval: no further loads.
        for i in 0..50 {
            let t = TokenBuilder::new()
                .kid(format!("random-{i}"))
                .sign_with_key(&keys::SECOND);
            assert!(matches!(
                v.verify(&t, now()).await.unwrap_err(),
                VerifyError::UnknownKey(_)
            ));
        }
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(
            text.contains(
                "eks_auth_key_refreshes_total{result=\"success\",trigger=\"unknown_kid\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "eks_auth_key_refreshes_total{result=\"rate_limited\",trigger=\"unknown_kid\"} 50"
            ),
            "{text}"
        );
    }
}
