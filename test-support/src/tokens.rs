//! Minting projected service-account tokens, good ones and the attacks on them.
//!
//! [`TokenBuilder`] starts from the token Kubernetes would project for pod `web-0` of service
//! account `default/s3-reader` (audience `pods.eks.amazonaws.com`, valid for an hour from now),
//! and every field can be changed, removed or overridden. [`TokenBuilder::sign`] signs it RS256
//! with [`keys::PRIMARY`], the one key in [`jwks`].
//!
//! ```
//! use pod_identity_test_support::tokens::{TokenBuilder, now};
//! let good = TokenBuilder::new().sign();
//! let expired = TokenBuilder::new().issued_at(now() - 7200).expires_at(now() - 3600).sign();
//! let other_sa = TokenBuilder::new().namespace("team-b").service_account("app").sign();
//! # let _ = (good, expired, other_sa);
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pod_identity_contracts::constants::{AUDIENCE, SUBJECT_PREFIX};
use pod_identity_contracts::eks_auth::CALLER_AUDIENCE;
use pod_identity_contracts::secret::digest;
use serde_json::{Map, Value, json};

use crate::keys::{self, TestKey};

pub const DEFAULT_ISSUER: &str = "https://issuer.test";
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_SERVICE_ACCOUNT: &str = "s3-reader";
pub const DEFAULT_POD: &str = "web-0";
pub const DEFAULT_NODE: &str = "node-a";
/// The agent's own identity ([`TokenBuilder::agent`]).
pub const AGENT_NAMESPACE: &str = "kube-system";
pub const AGENT_SERVICE_ACCOUNT: &str = "eks-pod-identity-agent";
pub const AGENT_POD: &str = "eks-pod-identity-agent-x7k2p";
/// Default lifetime of a minted token, in seconds.
pub const DEFAULT_LIFETIME_SECS: i64 = 3600;

/// Now, in Unix seconds: the clock every default time of [`TokenBuilder`] uses.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The JWKS publishing the primary test key (what `<issuer>/openid/v1/jwks` would serve):
/// `{"keys":[{"kty":"RSA","kid":"test-key-1","use":"sig","alg":"RS256","n":…,"e":"AQAB"}]}`.
pub fn jwks() -> Value {
    keys::jwks_of(&[keys::PRIMARY])
}

/// The primary test key's public half as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_key_pem() -> &'static str {
    keys::PRIMARY.public_pem
}

/// A stable UUID-shaped uid for a named object, so pods with different names get different uids
/// without every test inventing one.
pub fn uid_for(kind: &str, name: &str) -> String {
    let d = digest(format!("{kind}/{name}").as_bytes());
    let h: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Builds the claims and header of a projected service-account token, then signs it (or not).
///
/// Structured setters cover the fields the contract names; [`claim`](Self::claim) and
/// [`without_claim`](Self::without_claim) change anything else at the top level, after the
/// structured fields are laid out, so they always win.
#[derive(Debug, Clone)]
pub struct TokenBuilder {
    issuer: String,
    audience: Vec<String>,
    subject: Option<String>,
    namespace: String,
    service_account: String,
    service_account_uid: Option<String>,
    pod: Option<String>,
    pod_uid: Option<String>,
    node: Option<String>,
    node_uid: Option<String>,
    issued_at: i64,
    not_before: i64,
    expires_at: i64,
    jti: Option<String>,
    kid: Option<String>,
    extra: Map<String, Value>,
    removed: Vec<String>,
}

impl Default for TokenBuilder {
    fn default() -> Self {
        let now = now();
        Self {
            issuer: DEFAULT_ISSUER.into(),
            audience: vec![AUDIENCE.into()],
            subject: None,
            namespace: DEFAULT_NAMESPACE.into(),
            service_account: DEFAULT_SERVICE_ACCOUNT.into(),
            service_account_uid: None,
            pod: Some(DEFAULT_POD.into()),
            pod_uid: None,
            node: Some(DEFAULT_NODE.into()),
            node_uid: None,
            issued_at: now,
            not_before: now,
            expires_at: now + DEFAULT_LIFETIME_SECS,
            jti: None,
            kid: Some(keys::PRIMARY.kid.into()),
            extra: Map::new(),
            removed: Vec::new(),
        }
    }
}

impl TokenBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token the node agent on [`DEFAULT_NODE`] presents to eks-auth as its own identity:
    /// service account `kube-system/eks-pod-identity-agent`, audience
    /// [`CALLER_AUDIENCE`], its DaemonSet pod.
    pub fn agent() -> Self {
        Self::default()
            .audience(CALLER_AUDIENCE)
            .namespace(AGENT_NAMESPACE)
            .service_account(AGENT_SERVICE_ACCOUNT)
            .pod(AGENT_POD)
    }

    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = iss.into();
        self
    }

    /// One audience (still sent as a one-element array, as Kubernetes does).
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = vec![aud.into()];
        self
    }

    /// Several audiences; an empty list gives `"aud": []`.
    pub fn audiences<I, S>(mut self, auds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audience = auds.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces `sub`, leaving the `kubernetes.io` claim alone (for mismatch attacks).
    pub fn subject(mut self, sub: impl Into<String>) -> Self {
        self.subject = Some(sub.into());
        self
    }

    /// Namespace in both `sub` and `kubernetes.io`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Service account name in both `sub` and `kubernetes.io`.
    pub fn service_account(mut self, sa: impl Into<String>) -> Self {
        self.service_account = sa.into();
        self
    }

    pub fn service_account_uid(mut self, uid: impl Into<String>) -> Self {
        self.service_account_uid = Some(uid.into());
        self
    }

    /// Pod name; its uid is derived from the name unless set with [`pod_uid`](Self::pod_uid).
    pub fn pod(mut self, name: impl Into<String>) -> Self {
        self.pod = Some(name.into());
        self
    }

    pub fn pod_uid(mut self, uid: impl Into<String>) -> Self {
        self.pod_uid = Some(uid.into());
        self
    }

    /// Drops `kubernetes.io.pod` (a token not bound to a pod).
    pub fn without_pod(mut self) -> Self {
        self.pod = None;
        self
    }

    /// Node name; its uid is derived from the name unless set with [`node_uid`](Self::node_uid).
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    pub fn node_uid(mut self, uid: impl Into<String>) -> Self {
        self.node_uid = Some(uid.into());
        self
    }

    /// Drops `kubernetes.io.node` (clusters before 1.30 do not bind tokens to nodes).
    pub fn without_node(mut self) -> Self {
        self.node = None;
        self
    }

    /// `iat`, Unix seconds.
    pub fn issued_at(mut self, secs: i64) -> Self {
        self.issued_at = secs;
        self
    }

    /// `nbf`, Unix seconds.
    pub fn not_before(mut self, secs: i64) -> Self {
        self.not_before = secs;
        self
    }

    /// `exp`, Unix seconds.
    pub fn expires_at(mut self, secs: i64) -> Self {
        self.expires_at = secs;
        self
    }

    pub fn jti(mut self, jti: impl Into<String>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// The header's `kid` (default `test-key-1`, the primary key's).
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn without_kid(mut self) -> Self {
        self.kid = None;
        self
    }

    /// Sets or replaces a top-level claim, after all structured fields (so it wins over them).
    pub fn claim(mut self, name: impl Into<String>, value: Value) -> Self {
        let name = name.into();
        self.removed.retain(|r| *r != name);
        self.extra.insert(name, value);
        self
    }

    /// Removes a top-level claim (`"exp"`, `"kubernetes.io"`, ...) from the minted token.
    pub fn without_claim(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.extra.remove(&name);
        self.removed.push(name);
        self
    }

    /// The claims the token will carry.
    pub fn claims(&self) -> Value {
        let mut k8s = json!({
            "namespace": self.namespace,
            "serviceaccount": {
                "name": self.service_account,
                "uid": self.service_account_uid.clone()
                    .unwrap_or_else(|| uid_for("serviceaccount", &format!("{}/{}", self.namespace, self.service_account))),
            },
        });
        if let Some(pod) = &self.pod {
            k8s["pod"] = json!({
                "name": pod,
                "uid": self.pod_uid.clone().unwrap_or_else(|| uid_for("pod", &format!("{}/{pod}", self.namespace))),
            });
        }
        if let Some(node) = &self.node {
            k8s["node"] = json!({
                "name": node,
                "uid": self.node_uid.clone().unwrap_or_else(|| uid_for("node", node)),
            });
        }
        let sub = self.subject.clone().unwrap_or_else(|| {
            format!(
                "{SUBJECT_PREFIX}{}:{}",
                self.namespace, self.service_account
            )
        });
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(self.audience));
        claims.insert("sub".into(), json!(sub));
        claims.insert("iat".into(), json!(self.issued_at));
        claims.insert("nbf".into(), json!(self.not_before));
        claims.insert("exp".into(), json!(self.expires_at));
        claims.insert("kubernetes.io".into(), k8s);
        if let Some(jti) = &self.jti {
            claims.insert("jti".into(), json!(jti));
        }
        for (k, v) in &self.extra {
            claims.insert(k.clone(), v.clone());
        }
        for k in &self.removed {
            claims.remove(k);
        }
        Value::Object(claims)
    }

    /// RS256 with the primary test key: a token every test verifier trusts.
    pub fn sign(&self) -> String {
        self.sign_with_key(&keys::PRIMARY)
    }

    /// Signed with a checked-in test key (e.g. [`keys::SECOND`] for "unknown key", or
    /// [`keys::EC`] for ES256). The header's `kid` stays the builder's: set it with
    /// [`kid`](Self::kid) to the key's own `kid` if the test needs that.
    pub fn sign_with_key(&self, key: &TestKey) -> String {
        self.sign_with(key.alg, &key.encoding_key())
    }

    /// Signed with any algorithm and key `jsonwebtoken` supports.
    pub fn sign_with(&self, alg: Algorithm, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        // Kubernetes sends no `typ`; mirror it.
        header.typ = None;
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &self.claims(), key)
            .unwrap_or_else(|e| panic!("signing a test token with {alg:?} failed: {e}"))
    }

    /// `{"alg":"none"}` and an empty signature segment: `header.payload.`
    pub fn unsigned_alg_none(&self) -> String {
        let mut header = json!({"alg": "none", "typ": "JWT"});
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        format!("{}.{}.", b64_json(&header), b64_json(&self.claims()))
    }

    /// The classic key-confusion attack: HS256 with the primary key's public PEM (which anyone
    /// can fetch from the JWKS endpoint) as the HMAC secret. A verifier that lets the token's
    /// `alg` pick the algorithm would accept it.
    pub fn hs256_with_public_key_as_secret(&self) -> String {
        self.sign_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(keys::PRIMARY.public_pem.as_bytes()),
        )
    }
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON serializes"))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use pod_identity_contracts::UnverifiedToken;

    use super::*;

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[DEFAULT_ISSUER]);
        v.leeway = 0;
        v
    }

    fn verify(token: &str, key: &DecodingKey) -> jsonwebtoken::errors::Result<Value> {
        jsonwebtoken::decode::<Value>(token, key, &validation()).map(|d| d.claims)
    }

    #[test]
    fn default_token_verifies_against_the_jwks_and_the_pem() {
        let token = TokenBuilder::new().sign();
        let from_pem = DecodingKey::from_rsa_pem(public_key_pem().as_bytes()).unwrap();
        let claims = verify(&token, &from_pem).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:s3-reader");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web-0");
        assert_eq!(claims["kubernetes.io"]["node"]["name"], "node-a");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );

        let jwks = jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        for (field, want) in [
            ("kty", "RSA"),
            ("kid", "test-key-1"),
            ("use", "sig"),
            ("alg", "RS256"),
            ("e", "AQAB"),
        ] {
            assert_eq!(jwk[field], want, "{field} in {jwk}");
        }
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("test-key-1"));
        assert_eq!(header.typ, None);
        let from_jwks = DecodingKey::from_jwk(set.find("test-key-1").unwrap()).unwrap();
        verify(&token, &from_jwks).unwrap();

        // The contracts parser (what the agent and the fake use) accepts it too.
        let parsed = UnverifiedToken::parse(&token).unwrap();
        parsed.claims.check_structure().unwrap();
        parsed.claims.check_time(now(), 0).unwrap();
    }

    #[test]
    fn tokens_from_other_keys_fail_against_the_jwks() {
        let primary = keys::PRIMARY.decoding_key();
        let forged = TokenBuilder::new().sign_with_key(&keys::SECOND);
        assert!(verify(&forged, &primary).is_err());
        // And it is a real signature by the second key.
        verify(&forged, &keys::SECOND.decoding_key()).unwrap();

        let es = TokenBuilder::new()
            .kid(keys::EC.kid)
            .sign_with_key(&keys::EC);
        let mut v = validation();
        v.algorithms = vec![Algorithm::ES256];
        jsonwebtoken::decode::<Value>(&es, &keys::EC.decoding_key(), &v).unwrap();
        let ec_jwks = keys::jwks_of(&[keys::EC]);
        assert_eq!(ec_jwks["keys"][0]["crv"], "P-256");
        assert_eq!(ec_jwks["keys"][0]["alg"], "ES256");
    }

    #[test]
    fn attack_tokens_have_the_advertised_shape() {
        let none = TokenBuilder::new().unsigned_alg_none();
        assert!(none.ends_with('.'), "{none}");
        let header = URL_SAFE_NO_PAD
            .decode(none.split('.').next().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&header).unwrap()["alg"],
            "none"
        );

        let hs = TokenBuilder::new().hs256_with_public_key_as_secret();
        assert_eq!(
            jsonwebtoken::decode_header(&hs).unwrap().alg,
            Algorithm::HS256
        );
        assert!(verify(&hs, &keys::PRIMARY.decoding_key()).is_err());
        // It really is keyed with the public PEM: an HS256 verifier given the PEM accepts it.
        let mut v = validation();
        v.algorithms = vec![Algorithm::HS256];
        let confused = DecodingKey::from_secret(public_key_pem().as_bytes());
        jsonwebtoken::decode::<Value>(&hs, &confused, &v).unwrap();
    }

    #[test]
    fn setters_change_claims_and_extras_win() {
        let b = TokenBuilder::new()
            .issuer("https://other")
            .audiences(["a", "b"])
            .namespace("team-b")
            .service_account("app")
            .pod("api-1")
            .without_node()
            .issued_at(10)
            .not_before(11)
            .expires_at(12)
            .jti("j-1")
            .claim("extra", json!({"x": 1}))
            .claim("iss", json!(42))
            .without_claim("nbf");
        let c = b.claims();
        assert_eq!(c["iss"], 42);
        assert_eq!(c["aud"], json!(["a", "b"]));
        assert_eq!(c["sub"], "system:serviceaccount:team-b:app");
        assert_eq!(c["kubernetes.io"]["namespace"], "team-b");
        assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "app");
        assert_eq!(c["kubernetes.io"]["pod"]["name"], "api-1");
        assert_ne!(
            c["kubernetes.io"]["pod"]["uid"],
            TokenBuilder::new().claims()["kubernetes.io"]["pod"]["uid"]
        );
        assert!(c["kubernetes.io"].get("node").is_none());
        assert_eq!((c["iat"].clone(), c["exp"].clone()), (json!(10), json!(12)));
        assert!(c.get("nbf").is_none());
        assert_eq!(c["jti"], "j-1");
        assert_eq!(c["extra"]["x"], 1);

        let c = TokenBuilder::new()
            .subject("system:serviceaccount:kube-system:admin")
            .without_pod()
            .claims();
        assert_eq!(c["sub"], "system:serviceaccount:kube-system:admin");
        assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "s3-reader");
        assert!(c["kubernetes.io"].get("pod").is_none());

        let header = jsonwebtoken::decode_header(TokenBuilder::new().without_kid().sign()).unwrap();
        assert_eq!(header.kid, None);
    }
}
