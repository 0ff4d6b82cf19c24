//! The agent's own identity off EKS (`--identity-token-file`): its projected service-account
//! token, sent to eks-auth with every exchange in
//! [`CALLER_TOKEN_HEADER`](pod_identity_contracts::eks_auth::CALLER_TOKEN_HEADER). eks-auth
//! verifies it and serves a pod token only when both name the same node, so a token copied out of
//! a pod is worth nothing on another node. On EKS the flag is not set and nothing changes (AWS
//! authenticates the node role's SigV4 signature instead).
//!
//! The kubelet rewrites the file before the token expires, so it is read for every exchange (a
//! cache miss; a few microseconds beside a network round trip). The header is added after
//! signing: it is not part of the canonical request, so no signing log could ever show it.

use std::io::Read;
use std::path::{Path, PathBuf};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use pod_identity_contracts::constants::MAX_TOKEN_BYTES;
use pod_identity_contracts::eks_auth::CALLER_TOKEN_HEADER;

/// Why the identity token could not be read. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("--identity-token-file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("--identity-token-file {path} is empty")]
    Empty { path: PathBuf },
    #[error("--identity-token-file {path} is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("--identity-token-file {path} does not hold a token (it must be one line of ASCII)")]
    NotAToken { path: PathBuf },
}

/// Read the token: trimmed, bounded, and fit for an HTTP header.
pub fn read_identity_token(path: &Path) -> Result<String, IdentityError> {
    let unreadable = |e: std::io::Error| IdentityError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut raw = Vec::new();
    file.take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(unreadable)?;
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(IdentityError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let token = String::from_utf8(raw)
        .map_err(|_| IdentityError::NotAToken {
            path: path.to_path_buf(),
        })?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(IdentityError::Empty {
            path: path.to_path_buf(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdentityError::NotAToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

/// Adds the identity token to each EKS Auth request, after signing.
#[derive(Debug, Clone)]
pub struct IdentityHeader {
    path: PathBuf,
}

impl IdentityHeader {
    /// Checks the file once now, so a wrong path stops the agent at startup, not at the first pod.
    pub fn new(path: PathBuf) -> Result<Self, IdentityError> {
        read_identity_token(&path)?;
        Ok(Self { path })
    }
}

impl Intercept for IdentityHeader {
    fn name(&self) -> &'static str {
        "IdentityHeader"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let token = read_identity_token(&self.path)?;
        context
            .request_mut()
            .headers_mut()
            .insert(CALLER_TOKEN_HEADER, token);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "header.claims.signature\n").unwrap();
        assert_eq!(
            read_identity_token(&path).unwrap(),
            "header.claims.signature"
        );
        let cases: [(&[u8], &str); 4] = [
            (b"  \n", "is empty"),
            (b"two words", "does not hold a token"),
            (b"\xff\xfe", "does not hold a token"),
            (&[b'a'; MAX_TOKEN_BYTES + 1], "larger than"),
        ];
        for (content, want) in cases {
            std::fs::write(&path, content).unwrap();
            let err = read_identity_token(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let missing = read_identity_token(&dir.path().join("absent")).unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
    }

    #[test]
    fn errors_never_quote_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "secret-part another-secret-part").unwrap();
        let err = read_identity_token(&path).unwrap_err().to_string();
        assert!(!err.contains("secret-part"), "{err}");
    }
}
