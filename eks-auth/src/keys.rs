//! The issuer's signing keys: parsed from a JWKS, fetched by OIDC discovery or read from a file.
//!
//! Only keys usable with the two algorithms Kubernetes signs with are kept: RSA keys for RS256
//! and P-256 keys for ES256. A key whose JWK names another algorithm, or that is marked for
//! encryption, is skipped, as are keys that do not parse (one bad key does not hide the others).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use pod_identity_contracts::oidc;
use serde::Deserialize;

/// Largest discovery document or JWKS read (real ones are a few KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Timeout of one discovery or JWKS request.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One verification key and the one algorithm it may verify.
#[derive(Clone)]
pub struct KeyEntry {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry").field("alg", &self.alg).finish()
    }
}

/// The keys of one JWKS, by `kid` (keys without a `kid` are kept under the empty string).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Vec<KeyEntry>>,
    len: usize,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Keys that may verify a token with this `kid` (none: every key, as the issuer may omit it)
    /// and this algorithm.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        let lists: Vec<&Vec<KeyEntry>> = match kid {
            Some(kid) => self.by_kid.get(kid).into_iter().collect(),
            None => self.by_kid.values().collect(),
        };
        lists.into_iter().flatten().filter(move |k| k.alg == alg)
    }

    /// Parse a JWKS document (`{"keys": [...]}`), keeping the usable keys.
    pub fn from_jwks(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
        let mut set = KeySet::default();
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let Some(entry) = entry_of(&jwk) {
                let kid = jwk.common.key_id.clone().unwrap_or_default();
                set.by_kid.entry(kid).or_default().push(entry);
                set.len += 1;
            }
        }
        Ok(set)
    }
}

fn entry_of(jwk: &Jwk) -> Option<KeyEntry> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let declared_ok = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !declared_ok {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(KeyEntry { alg, key })
}

/// Why keys could not be loaded. Each names the URL or file that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error("{url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{source_name}: no usable RS256 or ES256 key")]
    NoKeys { source_name: String },
}

/// Where keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS file, re-read on refresh.
    File(PathBuf),
    /// OIDC discovery under the issuer URL.
    Discovery {
        issuer: String,
        client: reqwest::Client,
        token_file: Option<PathBuf>,
    },
}

impl KeySource {
    /// A discovery source with an HTTP client that trusts the system roots plus `ca_file`.
    pub fn discovery(
        issuer: &str,
        ca_file: Option<&std::path::Path>,
        token_file: Option<PathBuf>,
    ) -> Result<Self, KeyError> {
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(path) = ca_file {
            let file_err = |reason: String| KeyError::File {
                path: path.to_path_buf(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| file_err(format!("not a PEM CA bundle: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| KeyError::Fetch {
            url: issuer.to_string(),
            reason: format!("cannot build an HTTP client: {e}"),
        })?;
        Ok(KeySource::Discovery {
            issuer: issuer.to_string(),
            client,
            token_file,
        })
    }

    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            KeySource::File(p) => p.display().to_string(),
            KeySource::Discovery { issuer, .. } => issuer.clone(),
        }
    }

    /// Load the current keys.
    pub async fn load(&self) -> Result<KeySet, KeyError> {
        let set = match self {
            KeySource::File(path) => {
                let file_err = |reason: String| KeyError::File {
                    path: path.clone(),
                    reason,
                };
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| file_err(e.to_string()))?;
                KeySet::from_jwks(&bytes).map_err(file_err)?
            }
            KeySource::Discovery {
                issuer,
                client,
                token_file,
            } => discover(issuer, client, token_file.as_deref()).await?,
        };
        if set.is_empty() {
            return Err(KeyError::NoKeys {
                source_name: self.describe(),
            });
        }
        Ok(set)
    }
}

async fn discover(
    issuer: &str,
    client: &reqwest::Client,
    token_file: Option<&std::path::Path>,
) -> Result<KeySet, KeyError> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let bearer = match token_file {
        Some(path) => Some(
            tokio::fs::read_to_string(path)
                .await
                .map_err(|e| KeyError::File {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let url = format!("{}{}", issuer.trim_end_matches('/'), oidc::DISCOVERY_PATH);
    let body = get(client, &url, bearer.as_deref()).await?;
    let doc: Discovery = serde_json::from_slice(&body).map_err(|e| KeyError::Fetch {
        url: url.clone(),
        reason: format!("not an OIDC discovery document: {e}"),
    })?;
    if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(KeyError::Fetch {
            url,
            reason: format!(
                "discovery names issuer {:?}, not {issuer:?} (OIDC requires them equal)",
                doc.issuer
            ),
        });
    }
    if !(doc.jwks_uri.starts_with("https://") || doc.jwks_uri.starts_with("http://")) {
        return Err(KeyError::Fetch {
            url,
            reason: "jwks_uri is not an http(s) URL".into(),
        });
    }
    let body = get(client, &doc.jwks_uri, bearer.as_deref()).await?;
    KeySet::from_jwks(&body).map_err(|reason| KeyError::Fetch {
        url: doc.jwks_uri.clone(),
        reason,
    })
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<Vec<u8>, KeyError> {
    let err = |reason: String| KeyError::Fetch {
        url: url.to_string(),
        reason,
    };
    // kube-apiserver answers 406 to a JWKS request that does not accept its media type.
    let mut req = client.get(url).header("accept", oidc::ACCEPT);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let mut resp = req.send().await.map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(err(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_test_support::keys;

    #[test]
    fn keeps_rs256_and_es256_keys_and_skips_the_rest() {
        let mut jwks = keys::jwks_of(&[keys::PRIMARY, keys::EC]);
        let list = jwks["keys"].as_array_mut().unwrap();
        list.push(serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}));
        list.push(serde_json::json!({"kty": "RSA", "kid": "broken"}));
        let mut enc = keys::SECOND.jwk();
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        list.push(serde_json::to_value(&enc).unwrap());
        let set = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.contains_kid("test-key-1"));
        assert!(!set.contains_kid("hmac"));
        assert_eq!(
            set.candidates(Some("test-ec-key-1"), Algorithm::ES256)
                .count(),
            1
        );
        assert_eq!(
            set.candidates(Some("test-ec-key-1"), Algorithm::RS256)
                .count(),
            0
        );
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 1);
        assert!(KeySet::from_jwks(b"[]").is_err());
    }
}
