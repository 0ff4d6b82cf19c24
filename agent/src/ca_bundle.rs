//! `AWS_CA_BUNDLE`: a PEM file of extra CAs the EKS Auth client trusts beside the system's, as
//! the official agent does (the Go SDK reads the variable; the Rust SDK ignores it). Off EKS,
//! eks-auth is usually served by a private CA; on EKS the variable is unset and nothing changes.
//!
//! The bundle is read and checked once, at startup: an unreadable file, one without a
//! certificate, or a certificate rustls cannot use as a trust anchor is a configuration error
//! naming the path. The SDK's connector parses the same bytes again on the first call and
//! `expect`s them to be valid, so without these checks a bad bundle would panic inside a pod's
//! request instead of stopping the agent at startup.

use std::path::{Path, PathBuf};

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The variable, as the AWS SDKs and CLI name it.
pub const ENV: &str = "AWS_CA_BUNDLE";

/// Why the bundle cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("{ENV} {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{ENV} {path}: no PEM certificate in it")]
    Empty { path: PathBuf },
    #[error("{ENV} {path}: not a PEM bundle: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{ENV} {path}: certificate {index} is not usable as a CA: {reason}")]
    NotAnAnchor {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

/// A bundle that passed [`read`]: its bytes, and how many certificates they hold.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub pem: Vec<u8>,
    pub certificates: usize,
}

/// `AWS_CA_BUNDLE`'s bundle, read and checked; `None` when the variable is unset or empty (as the
/// Go SDK treats an empty one).
pub fn from_env() -> Result<Option<CaBundle>, CaBundleError> {
    match std::env::var_os(ENV) {
        Some(path) if !path.is_empty() => read(Path::new(&path)).map(Some),
        _ => Ok(None),
    }
}

/// Read `path` and check every certificate in it as the SDK's connector will use it.
pub fn read(path: &Path) -> Result<CaBundle, CaBundleError> {
    let pem = std::fs::read(path).map_err(|source| CaBundleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaBundleError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaBundleError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| CaBundleError::NotAnAnchor {
                path: path.to_path_buf(),
                index: i + 1,
                reason: e.to_string(),
            })?;
    }
    Ok(CaBundle {
        path: path.to_path_buf(),
        pem,
        certificates: certs.len(),
    })
}

impl CaBundle {
    /// The system's roots and this bundle's CAs.
    pub fn trust_store(&self) -> TrustStore {
        TrustStore::default()
            .with_native_roots(true)
            .with_pem_certificate(self.pem.clone())
    }

    /// An HTTP client built as the SDK builds its default one (rustls with aws-lc, proxies from
    /// the environment, the SDK's timeouts and sleep), trusting [`CaBundle::trust_store`].
    /// `build_with_connector_fn` is what aws-smithy-runtime's own default client uses; the
    /// documented `build_https` would drop `HTTPS_PROXY`, which the agent honours without a
    /// bundle.
    pub fn http_client(&self) -> SharedHttpClient {
        let tls = TlsContext::builder()
            .with_trust_store(self.trust_store())
            .build()
            .expect("a TLS context with a trust store always builds");
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut connector = ConnectorBuilder::default()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(tls.clone());
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_test_support::tls::TestCa;

    fn bundle(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_bundle_of_cas_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let two = format!("{}{}", TestCa::new().pem(), TestCa::new().pem());
        let path = bundle(dir.path(), "ca.pem", &format!("# comment\n{two}"));
        let b = read(&path).unwrap();
        assert_eq!(b.certificates, 2);
        assert_eq!(b.pem, std::fs::read(&path).unwrap());
        // The system roots stay trusted beside it.
        let store = format!("{:?}", b.trust_store());
        assert!(store.contains("enable_native_roots: true"), "{store}");
    }

    #[test]
    fn an_unusable_bundle_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new().pem();
        let body: String = ca.lines().filter(|l| !l.starts_with("-----")).collect();
        let cases = [
            (
                bundle(dir.path(), "empty.pem", ""),
                "no PEM certificate in it",
            ),
            (
                bundle(dir.path(), "words.pem", "not a bundle\n"),
                "no PEM certificate in it",
            ),
            (
                bundle(dir.path(), "key-only.pem", &TestCa::new().issue().key_pem),
                "no PEM certificate in it",
            ),
            (
                bundle(
                    dir.path(),
                    "truncated.pem",
                    &ca[..ca.find("-----END").unwrap()],
                ),
                "not a PEM bundle",
            ),
            (
                bundle(
                    dir.path(),
                    "garbled.pem",
                    &format!(
                        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                        &body[..40]
                    ),
                ),
                "certificate 1 is not usable as a CA",
            ),
            (dir.path().join("missing.pem"), "cannot read it"),
        ];
        for (path, want) in cases {
            let e = read(&path).unwrap_err().to_string();
            assert!(e.starts_with("AWS_CA_BUNDLE "), "{e}");
            assert!(e.contains(path.to_str().unwrap()), "{e}");
            assert!(e.contains(want), "{}: {e}", path.display());
        }
    }

    /// A TLS server with a certificate from `ca` that answers every request as EKS Auth refuses
    /// a token; it serves until the test ends.
    async fn eks_auth_over_tls(ca: &TestCa, dir: &Path) -> String {
        use pod_identity_runtime::serve::{ConnectionLimits, Listener, serve};
        use pod_identity_runtime::tls::{CertFiles, ReloadingCert};
        let files = CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        ca.issue().write(&files.cert, &files.key);
        let cert = ReloadingCert::load(files).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _stop = stop;
            serve(
                "eks-auth",
                Listener::tls(tcp, cert.acceptor()),
                ConnectionLimits::default(),
                stopped,
                std::time::Duration::from_secs(1),
                |_| (),
                |(), _req| async {
                    http::Response::builder()
                        .status(400)
                        .header("x-amzn-errortype", "InvalidTokenException")
                        .header("content-type", "application/json")
                        .body(r#"{"message":"not a token"}"#.to_string())
                        .unwrap()
                },
            )
            .await;
        });
        format!("https://127.0.0.1:{port}")
    }

    async fn call(endpoint: &str, bundle: Option<&CaBundle>) -> crate::upstream::UpstreamError {
        use crate::upstream::Upstream;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-west-2"))
            .credentials_provider(aws_credential_types::Credentials::for_tests())
            .endpoint_url(endpoint);
        if let Some(bundle) = bundle {
            loader = loader.http_client(bundle.http_client());
        }
        let upstream = crate::eks_auth::EksAuthUpstream::new(&loader.load().await, "lab").unwrap();
        let token = std::sync::Arc::new(pod_identity_contracts::Secret::new("not-a-jwt"));
        upstream.fetch(token).await.unwrap_err()
    }

    #[tokio::test]
    async fn the_sdk_client_reaches_a_private_ca_only_through_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::named("private eks-auth CA");
        let endpoint = eks_auth_over_tls(&ca, dir.path()).await;
        let bundle = read(&bundle(dir.path(), "ca.pem", &ca.pem())).unwrap();

        // Through the bundle: EKS Auth's own answer, so the handshake worked.
        let e = call(&endpoint, Some(&bundle)).await;
        assert_eq!(e.code(), "InvalidTokenException", "{e:?}");
        assert_eq!(e.status(), 400);
        // Without it the system roots do not know the CA, and the error says so.
        let e = call(&endpoint, None).await;
        assert_eq!(e.status(), 503, "{e:?}");
        assert!(e.message.contains("UnknownIssuer"), "{}", e.message);
    }
}
