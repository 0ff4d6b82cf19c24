//! A private CA for tests of the HTTPS listeners (the webhook's, eks-auth's): it issues serving
//! certificates for `127.0.0.1` and `localhost` (rcgen), and hands clients its root to trust and
//! nothing else, so a test proves which CA a client trusted.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// A CA that signs serving certificates for 127.0.0.1 and localhost.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// One issued certificate: the PEM files' contents and the leaf's DER.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    /// A new CA named `name` (its common name, so a TLS error says which CA it was).
    pub fn named(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key generates");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA self-signs");
        Self { issuer }
    }

    pub fn new() -> Self {
        Self::named("pod-identity test CA")
    }

    /// A serving certificate for 127.0.0.1, localhost and the webhook's Service name.
    pub fn issue(&self) -> Issued {
        let params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "pod-identity-webhook.pod-identity-system.svc".to_string(),
        ])
        .expect("valid names");
        let key = KeyPair::generate().expect("key generates");
        let cert = params.signed_by(&key, &self.issuer).expect("CA signs");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// The CA certificate as PEM: what `AWS_CA_BUNDLE` or botocore's `verify=` points at.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A rustls client configuration (HTTP/1.1) that trusts this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA is a trust anchor");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Full handshakes only: a resumed session shows the certificate of the first one.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// An HTTP client that trusts this CA only (no built-in roots) and no proxy.
    pub fn https_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pem().as_bytes()).expect("CA PEM parses");
        reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .expect("client builds")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Issued {
    /// Write the pair where a server reads it, each file swapped in whole.
    pub fn write(&self, cert: &Path, key: &Path) {
        write_atomic(key, &self.key_pem);
        write_atomic(cert, &self.cert_pem);
    }
}

/// Write a file atomically (as the kubelet swaps a Secret volume: new file, then rename).
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write the temporary file");
    std::fs::rename(&tmp, path).expect("rename it into place");
}
