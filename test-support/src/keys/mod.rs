//! ⚠️ TEST-ONLY KEYS. NOT SECRET. NEVER USE OUTSIDE TESTS. ⚠️
//!
//! The private keys below are checked into a public repository on purpose: anyone can sign
//! tokens with them. They exist so tests can mint service-account tokens and publish the
//! matching JWKS. No deployment, config or trusted JWKS may ever contain them.
//! See `README.md` next to this file for how they were generated.
//!
//! - [`PRIMARY`] (`test-key-1`, RS256): signs every token [`TokenBuilder::sign`] makes and is
//!   the one key in [`crate::tokens::jwks`].
//! - [`SECOND`] (`test-key-2`, RS256): a key no verifier trusts, for "signed by an unknown key".
//! - [`EC`] (`test-ec-key-1`, ES256): for tests that an issuer's ES256 keys work too.
//!
//! [`TokenBuilder::sign`]: crate::tokens::TokenBuilder::sign

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// TEST ONLY. PKCS#8 PEM of the primary RSA-2048 test key.
pub const TEST_RSA_1_PRIVATE_PEM: &str = include_str!("test-rsa-1.key.pem");
/// SPKI PEM of the primary test key's public half.
pub const TEST_RSA_1_PUBLIC_PEM: &str = include_str!("test-rsa-1.pub.pem");
/// TEST ONLY. PKCS#8 PEM of the second RSA-2048 test key, which no test JWKS contains.
pub const TEST_RSA_2_PRIVATE_PEM: &str = include_str!("test-rsa-2.key.pem");
/// SPKI PEM of the second test key's public half.
pub const TEST_RSA_2_PUBLIC_PEM: &str = include_str!("test-rsa-2.pub.pem");
/// TEST ONLY. PKCS#8 PEM of a P-256 test key.
pub const TEST_EC_1_PRIVATE_PEM: &str = include_str!("test-ec-1.key.pem");
/// SPKI PEM of the P-256 test key's public half.
pub const TEST_EC_1_PUBLIC_PEM: &str = include_str!("test-ec-1.pub.pem");

/// A checked-in test key pair with its key id and algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestKey {
    pub kid: &'static str,
    pub alg: Algorithm,
    pub private_pem: &'static str,
    pub public_pem: &'static str,
}

/// The key behind [`crate::tokens::jwks`] and [`crate::tokens::TokenBuilder::sign`].
pub const PRIMARY: TestKey = TestKey {
    kid: "test-key-1",
    alg: Algorithm::RS256,
    private_pem: TEST_RSA_1_PRIVATE_PEM,
    public_pem: TEST_RSA_1_PUBLIC_PEM,
};

/// A second RSA key that no test JWKS trusts.
pub const SECOND: TestKey = TestKey {
    kid: "test-key-2",
    alg: Algorithm::RS256,
    private_pem: TEST_RSA_2_PRIVATE_PEM,
    public_pem: TEST_RSA_2_PUBLIC_PEM,
};

/// A P-256 key for ES256 tokens.
pub const EC: TestKey = TestKey {
    kid: "test-ec-key-1",
    alg: Algorithm::ES256,
    private_pem: TEST_EC_1_PRIVATE_PEM,
    public_pem: TEST_EC_1_PUBLIC_PEM,
};

impl TestKey {
    fn is_rsa(&self) -> bool {
        matches!(
            self.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    }

    /// The private key, for `jsonwebtoken::encode`.
    pub fn encoding_key(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        let key = if self.is_rsa() {
            EncodingKey::from_rsa_pem(pem)
        } else {
            EncodingKey::from_ec_pem(pem)
        };
        key.unwrap_or_else(|e| panic!("test key {} does not load: {e}", self.kid))
    }

    /// The public key, for `jsonwebtoken::decode`.
    pub fn decoding_key(&self) -> DecodingKey {
        let pem = self.public_pem.as_bytes();
        let key = if self.is_rsa() {
            DecodingKey::from_rsa_pem(pem)
        } else {
            DecodingKey::from_ec_pem(pem)
        };
        key.unwrap_or_else(|e| panic!("test key {} does not load: {e}", self.kid))
    }

    /// The public JWK with `kid`, `use: sig` and `alg` set.
    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg)
            .unwrap_or_else(|e| panic!("test key {} has no JWK form: {e}", self.kid));
        jwk.common.key_id = Some(self.kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk
    }
}

/// The JWKS (`{"keys": [...]}`) publishing `keys`, as an issuer's `jwks_uri` serves it.
pub fn jwks_of(keys: &[TestKey]) -> serde_json::Value {
    let set = JwkSet {
        keys: keys.iter().map(TestKey::jwk).collect(),
    };
    serde_json::to_value(set).expect("a JWK set serializes")
}
