//! A serving certificate, re-read when its files change (cert-manager rotates the Secret; the
//! kubelet swaps the mounted files) without a restart and without touching open connections. The
//! webhook's HTTPS listener and eks-auth's API listener both serve through it.
//!
//! A [`ReloadingCert`] is rustls's certificate resolver: every new handshake takes the current
//! [`CertifiedKey`]; connections already established keep the session they negotiated. A
//! background task polls the two files and swaps in a new pair only when it parses and the key
//! matches the certificate; a half-rotated pair (new cert, old key) or a garbage file is logged
//! (a warning), counted and retried on the next change, while the previous pair keeps serving.
//! At startup the same failures are an error: there is no previous pair to keep.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate pair could not be loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found ({reason})")]
    NoKey { path: PathBuf, reason: String },
    #[error("{cert} and {key} do not form a usable pair: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The two files of the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse a PEM chain and key and check that they match.
pub fn certified_key(
    files: &CertFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

/// The current serving certificate, swapped by [`ReloadingCert::watch`].
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes last loaded: the certificate chain and the private key.
    seen: RwLock<(Vec<u8>, Vec<u8>)>,
}

/// The files, never the bytes last read from them: one is the private key.
impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .field("key", &"** redacted **")
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Load the pair once; failure is a configuration error.
    pub fn load(files: CertFiles) -> Result<Arc<Self>, TlsError> {
        let cert = read(&files.cert)?;
        let key = read(&files.key)?;
        let ck = certified_key(&files, &cert, &key)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(ck)),
            seen: RwLock::new((cert, key)),
        }))
    }

    /// Re-read the files. `Ok(true)` when a new pair was installed, `Ok(false)` when nothing
    /// changed since the last look, `Err` when the changed files are not a usable pair (the
    /// previous pair keeps serving).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let cert = read(&self.files.cert)?;
        let key = read(&self.files.key)?;
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if seen.0 == cert && seen.1 == key {
                return Ok(false);
            }
        }
        // Remember what we looked at even if it fails, so a bad pair is reported once per change.
        *self.seen.write().unwrap_or_else(|e| e.into_inner()) = (cert.clone(), key.clone());
        let ck = certified_key(&self.files, &cert, &key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        Ok(true)
    }

    /// Poll the files every `interval`, forever (run it as a supervisor's job), counting each
    /// swap in `reloads` by `result` (`ok`, `error`).
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
        reloads: prometheus::IntCounterVec,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let me = this.clone();
                let result = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
                match result {
                    Ok(Ok(false)) => {}
                    Ok(Ok(true)) => {
                        reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(cert = %this.files.cert.display(), "serving certificate reloaded");
                    }
                    Ok(Err(e)) => {
                        reloads.with_label_values(&["error"]).inc();
                        tracing::warn!(error = %e, "serving certificate changed but is not usable; keeping the previous one");
                    }
                    Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
                }
            }
        }
    }

    /// A rustls server configuration (HTTP/1.1 by ALPN) that resolves through this.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    /// The acceptor a listener hands its connections to ([`crate::serve::Listener::tls`]).
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::new(self.server_config()))
    }

    /// The leaf certificate new handshakes get now.
    pub fn current_leaf(&self) -> CertificateDer<'static> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).cert[0].clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_test_support::tls::{Issued, TestCa};

    struct Files {
        _dir: tempfile::TempDir,
        files: CertFiles,
    }

    fn files(issued: &Issued) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        issued.write(&files.cert, &files.key);
        Files { _dir: dir, files }
    }

    #[test]
    fn refuses_at_load_what_it_cannot_serve_and_names_the_file() {
        let ca = TestCa::new();
        let (one, two) = (ca.issue(), ca.issue());
        let f = files(&one);
        let load = || {
            ReloadingCert::load(f.files.clone())
                .map(|_| ())
                .unwrap_err()
        };

        std::fs::write(&f.files.cert, "garbage").unwrap();
        let e = load();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().contains("tls.crt"), "{e}");

        std::fs::write(&f.files.cert, &one.cert_pem).unwrap();
        std::fs::write(&f.files.key, "-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
        let e = load();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        assert!(e.to_string().contains("tls.key"), "{e}");

        // A key that belongs to another certificate.
        std::fs::write(&f.files.key, &two.key_pem).unwrap();
        let e = load();
        assert!(matches!(e, TlsError::Pair { .. }), "{e}");
        assert!(e.to_string().contains("do not form a usable pair"), "{e}");

        std::fs::remove_file(&f.files.key).unwrap();
        let e = load();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("tls.key"), "{e}");
    }

    #[test]
    fn a_bad_rotation_keeps_the_previous_pair_and_a_good_one_replaces_it() {
        let ca = TestCa::new();
        let (first, second, third) = (ca.issue(), ca.issue(), ca.issue());
        let f = files(&first);
        let cert = ReloadingCert::load(f.files.clone()).unwrap();
        assert_eq!(cert.current_leaf(), first.der);
        assert!(!cert.reload_if_changed().unwrap(), "nothing changed");

        // Half rotated: the new certificate beside the old key.
        std::fs::write(&f.files.cert, &second.cert_pem).unwrap();
        assert!(matches!(
            cert.reload_if_changed(),
            Err(TlsError::Pair { .. })
        ));
        assert_eq!(cert.current_leaf(), first.der);
        // Reported once per change, not at every look.
        assert!(!cert.reload_if_changed().unwrap());
        // The key follows: the pair is whole again and served.
        std::fs::write(&f.files.key, &second.key_pem).unwrap();
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(cert.current_leaf(), second.der);

        // Garbage in place of the certificate: refused, the second pair stays.
        std::fs::write(&f.files.cert, "not a certificate").unwrap();
        assert!(matches!(
            cert.reload_if_changed(),
            Err(TlsError::NoCertificate { .. })
        ));
        assert_eq!(cert.current_leaf(), second.der);
        third.write(&f.files.cert, &f.files.key);
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(cert.current_leaf(), third.der);
    }

    async fn until(done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watcher did not see the change"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_watcher_counts_reloads_by_result() {
        let ca = TestCa::new();
        let (first, second) = (ca.issue(), ca.issue());
        let f = files(&first);
        let cert = ReloadingCert::load(f.files.clone()).unwrap();
        let reloads =
            prometheus::IntCounterVec::new(prometheus::Opts::new("reloads", "test"), &["result"])
                .unwrap();
        let watcher = tokio::spawn(cert.watch(Duration::from_millis(20), reloads.clone()));
        let count = |result: &str| reloads.with_label_values(&[result]).get();
        std::fs::write(&f.files.cert, "garbage").unwrap();
        until(|| count("error") == 1).await;
        assert_eq!(cert.current_leaf(), first.der);
        second.write(&f.files.cert, &f.files.key);
        until(|| count("ok") == 1).await;
        assert_eq!(cert.current_leaf(), second.der);
        assert_eq!(count("error"), 1, "the garbage was reported once");
        watcher.abort();
    }

    #[test]
    fn debug_shows_the_files_not_the_key() {
        let issued = TestCa::new().issue();
        let f = files(&issued);
        let loaded = ReloadingCert::load(f.files.clone()).unwrap();
        let debug = format!("{loaded:?}");
        assert!(
            debug.contains("tls.key") && debug.contains("** redacted **"),
            "{debug}"
        );
        let pem = &issued.key_pem;
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !debug.contains(line),
                "a line of the key's PEM is in the Debug output"
            );
        }
        // Nor as the bytes a derived `Debug` would list.
        let bytes = format!("{:?}", &pem.as_bytes()[40..56]);
        let listed = !debug.contains(bytes.trim_matches(['[', ']']));
        assert!(listed, "the key's bytes are in the Debug output");
    }
}
