//! `certs`: the webhook's serving certificate where there is no cert-manager. Run before `serve`
//! (an init container, or by hand), it makes sure a Secret holds a certificate for the webhook's
//! Service that has long enough to live, and that the MutatingWebhookConfiguration trusts its CA.
//!
//! - The Secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`) is reused while its
//!   certificate has more than [`RENEW_BEFORE`] left and names the same hosts; otherwise a new CA
//!   and certificate replace it. The CA's key is never stored: nothing can sign another
//!   certificate with it later.
//! - Replicas starting together race safely: the Secret is created only if absent and replaced
//!   only at the version that was read; whoever loses reads the winner's.
//! - The caBundle holds the new CA and the one before it, so replicas still serving the previous
//!   certificate keep being trusted until they restart.
//! - `--write-dir` also writes `tls.crt`, `tls.key` (0600) and `ca.crt` for `serve` to read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::config::CertsArgs;

/// How long a new serving certificate (and its CA) is valid.
pub const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A Secret whose certificate has less than this left is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);

/// Annotations the Secret carries so a later run can judge it without parsing X.509.
const NOT_AFTER: &str = "podidentity.dev/not-after";
const HOSTS: &str = "podidentity.dev/hosts";
/// How often a lost race (Conflict, AlreadyExists) is retried.
const ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "MutatingWebhookConfiguration {0:?} does not exist: apply the webhook's manifests first"
    )]
    NoWebhookConfiguration(String),
    #[error("MutatingWebhookConfiguration {0:?} has no webhooks")]
    EmptyWebhookConfiguration(String),
    #[error("Secret {0} is not a TLS secret of this webhook (no tls.crt, tls.key and ca.crt)")]
    ForeignSecret(String),
    #[error("still losing the race for {0} after {ATTEMPTS} attempts")]
    Contended(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The names the serving certificate is for: the Service's DNS names, and any extra ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl Hosts {
    pub fn for_service(
        service: &str,
        namespace: &str,
        extra_dns: &[String],
        ips: &[IpAddr],
    ) -> Self {
        let mut dns = vec![
            service.to_string(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        dns.extend(extra_dns.iter().cloned());
        dns.dedup();
        Hosts {
            dns,
            ips: ips.to_vec(),
        }
    }

    /// A stable one-line form for the Secret's annotation.
    fn key(&self) -> String {
        let mut all: Vec<String> = self.dns.clone();
        all.extend(self.ips.iter().map(IpAddr::to_string));
        all.join(",")
    }
}

/// A CA and a serving certificate it signed, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: jiff::Timestamp,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .field("key_pem", &"** redacted **")
            .finish_non_exhaustive()
    }
}

/// Make a CA (P-256, its key dropped after signing) and a serving certificate for `hosts`.
pub fn issue(hosts: &Hosts, now: jiff::Timestamp) -> Result<Issued, CertsError> {
    let not_before = to_time(now - jiff::SignedDuration::from_secs(300));
    let not_after_ts = now + jiff::SignedDuration::try_from(VALIDITY).unwrap_or_default();
    let not_after = to_time(not_after_ts);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "pod-identity-webhook-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(
        DnType::CommonName,
        hosts.dns.first().cloned().unwrap_or_default(),
    );
    for name in &hosts.dns {
        leaf.subject_alt_names
            .push(SanType::DnsName(name.clone().try_into()?));
    }
    for ip in &hosts.ips {
        leaf.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Issued {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        // What the certificate says, to the second.
        not_after: jiff::Timestamp::from_second(not_after_ts.as_second()).unwrap_or(not_after_ts),
    })
}

fn to_time(t: jiff::Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// What a run decided about the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its certificate was good and is used as it is.
    Reused,
    /// There was none; this run made it (or another replica did, a moment before).
    Created,
    /// It was about to expire or named other hosts, and was replaced.
    Renewed,
}

/// The Secret's certificate, when it is still good for `hosts` at `now`.
fn usable(secret: &Secret, hosts: &Hosts, now: jiff::Timestamp) -> Option<Issued> {
    let annotations = secret.metadata.annotations.as_ref()?;
    if annotations.get(HOSTS)? != &hosts.key() {
        return None;
    }
    let not_after: jiff::Timestamp = annotations.get(NOT_AFTER)?.parse().ok()?;
    let left = not_after.duration_since(now);
    if left < jiff::SignedDuration::try_from(RENEW_BEFORE).unwrap_or_default() {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(Issued {
        ca_pem: text("ca.crt")?,
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
        not_after,
    })
}

fn secret_for(name: &str, issued: &Issued, hosts: &Hosts, previous_ca: Option<&str>) -> Secret {
    let mut data = BTreeMap::new();
    data.insert("tls.crt".into(), ByteString(issued.cert_pem.clone().into()));
    data.insert("tls.key".into(), ByteString(issued.key_pem.clone().into()));
    data.insert("ca.crt".into(), ByteString(issued.ca_pem.clone().into()));
    if let Some(prev) = previous_ca {
        data.insert(
            "ca-previous.crt".into(),
            ByteString(prev.as_bytes().to_vec()),
        );
    }
    let annotations = BTreeMap::from([
        (NOT_AFTER.to_string(), issued.not_after.to_string()),
        (HOSTS.to_string(), hosts.key()),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "pod-identity-webhook-certs".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> CertsError {
    let what = what.into();
    move |source| CertsError::Kube { what, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Make sure the Secret holds a good certificate; returns it, what was done, and the CA bundle
/// the webhook configuration must trust.
pub async fn ensure_secret(
    secrets: &Api<Secret>,
    name: &str,
    hosts: &Hosts,
    now: jiff::Timestamp,
) -> Result<(Issued, Outcome, String), CertsError> {
    let what = format!("Secret {name}");
    for _ in 0..ATTEMPTS {
        match secrets.get_opt(name).await.map_err(kube_err(&what))? {
            None => {
                let issued = issue(hosts, now)?;
                let secret = secret_for(name, &issued, hosts, None);
                match secrets.create(&PostParams::default(), &secret).await {
                    Ok(_) => {
                        let bundle = issued.ca_pem.clone();
                        return Ok((issued, Outcome::Created, bundle));
                    }
                    // Another replica made it first: use theirs.
                    Err(e) if is_status(&e, 409) => continue,
                    Err(e) => return Err(kube_err(&what)(e)),
                }
            }
            Some(existing) => {
                if let Some(issued) = usable(&existing, hosts, now) {
                    let bundle = bundle_of(&existing, &issued.ca_pem);
                    return Ok((issued, Outcome::Reused, bundle));
                }
                let data = existing.data.as_ref();
                let previous_ca = data
                    .and_then(|d| d.get("ca.crt"))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok());
                if existing
                    .metadata
                    .annotations
                    .as_ref()
                    .is_none_or(|a| !a.contains_key(NOT_AFTER))
                    && data.is_some_and(|d| !d.is_empty())
                {
                    // Not one this command made: refuse to overwrite someone else's Secret.
                    return Err(CertsError::ForeignSecret(name.to_string()));
                }
                let issued = issue(hosts, now)?;
                let mut secret = secret_for(name, &issued, hosts, previous_ca.as_deref());
                // Replace only the version that was read; a Conflict means another replica renewed.
                secret.metadata.resource_version = existing.metadata.resource_version.clone();
                match secrets.replace(name, &PostParams::default(), &secret).await {
                    Ok(_) => {
                        let mut bundle = issued.ca_pem.clone();
                        if let Some(prev) = previous_ca {
                            bundle.push_str(&prev);
                        }
                        return Ok((issued, Outcome::Renewed, bundle));
                    }
                    Err(e) if is_status(&e, 409) => continue,
                    Err(e) => return Err(kube_err(&what)(e)),
                }
            }
        }
    }
    Err(CertsError::Contended(what))
}

/// The CA bundle of a Secret: its CA, and the previous one while it is kept.
fn bundle_of(secret: &Secret, ca_pem: &str) -> String {
    let mut bundle = ca_pem.to_string();
    if let Some(prev) = secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca-previous.crt"))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
    {
        bundle.push_str(prev);
    }
    bundle
}

/// Put `bundle` into the caBundle of every webhook of the configuration; true when it changed.
pub async fn inject_ca_bundle(
    configs: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &str,
) -> Result<bool, CertsError> {
    let what = format!("MutatingWebhookConfiguration {name}");
    for _ in 0..ATTEMPTS {
        let Some(mut config) = configs.get_opt(name).await.map_err(kube_err(&what))? else {
            return Err(CertsError::NoWebhookConfiguration(name.to_string()));
        };
        let webhooks = config.webhooks.get_or_insert_with(Vec::new);
        if webhooks.is_empty() {
            return Err(CertsError::EmptyWebhookConfiguration(name.to_string()));
        }
        let wanted = ByteString(bundle.as_bytes().to_vec());
        if webhooks
            .iter()
            .all(|w| w.client_config.ca_bundle.as_ref() == Some(&wanted))
        {
            return Ok(false);
        }
        for w in webhooks.iter_mut() {
            w.client_config.ca_bundle = Some(wanted.clone());
        }
        match configs.replace(name, &PostParams::default(), &config).await {
            Ok(_) => return Ok(true),
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => return Err(kube_err(&what)(e)),
        }
    }
    Err(CertsError::Contended(what))
}

/// Write the certificate files `serve` reads, each by rename so `serve` never sees half a file.
pub fn write_files(dir: &Path, issued: &Issued) -> Result<(), CertsError> {
    let write = |name: &str, text: &str, private: bool| -> Result<(), CertsError> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let err = |source| CertsError::Write {
            path: path.clone(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if private {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(err)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    };
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write("tls.key", &issued.key_pem, true)?;
    write("tls.crt", &issued.cert_pem, false)?;
    write("ca.crt", &issued.ca_pem, false)
}

/// `certs` end to end.
pub async fn run(args: CertsArgs, client: kube::Client) -> Result<Outcome, CertsError> {
    let hosts = Hosts::for_service(
        &args.service,
        &args.namespace,
        &args.dns_name,
        &args.ip_address,
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let now = jiff::Timestamp::now();
    let (issued, outcome, bundle) = ensure_secret(&secrets, &args.secret, &hosts, now).await?;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client);
    let changed = inject_ca_bundle(&configs, &args.webhook_configuration, &bundle).await?;
    if let Some(dir) = &args.write_dir {
        write_files(dir, &issued)?;
    }
    tracing::info!(
        secret = %format!("{}/{}", args.namespace, args.secret),
        outcome = ?outcome,
        not_after = %issued.not_after,
        hosts = %hosts.key(),
        ca_bundle_changed = changed,
        webhook_configuration = %args.webhook_configuration,
        "serving certificate ready"
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject as _;

    fn hosts() -> Hosts {
        Hosts::for_service(
            "pod-identity-webhook",
            "pod-identity-system",
            &[],
            &["127.0.0.1".parse().unwrap()],
        )
    }

    #[test]
    fn issues_a_certificate_rustls_accepts_for_the_service_names() {
        let now = jiff::Timestamp::now();
        let issued = issue(&hosts(), now).unwrap();
        // The CA verifies the leaf for the service's DNS name and the IP, as the API server would.
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls::pki_types::CertificateDer::from_pem_slice(issued.ca_pem.as_bytes());
        roots.add(ca.unwrap()).unwrap();
        let leaf =
            rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::aws_lc_rs::default_provider().into(),
        )
        .build()
        .unwrap();
        let unix = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            now.as_second() as u64,
        ));
        for name in ["pod-identity-webhook.pod-identity-system.svc", "127.0.0.1"] {
            let server = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &server, &[], unix)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("evil.example").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], unix)
                .is_err()
        );
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
        assert_eq!(
            issued.not_after.as_second() - now.as_second(),
            VALIDITY.as_secs() as i64
        );
    }

    #[test]
    fn a_secret_is_reused_only_while_it_is_fresh_and_for_the_same_hosts() {
        let now = jiff::Timestamp::now();
        let issued = issue(&hosts(), now).unwrap();
        let secret = secret_for("s", &issued, &hosts(), None);
        assert!(usable(&secret, &hosts(), now).is_some());
        let late = now + jiff::SignedDuration::from_hours(24 * 280);
        assert!(
            usable(&secret, &hosts(), late).is_none(),
            "inside RENEW_BEFORE"
        );
        let other = Hosts::for_service("x", "y", &[], &[]);
        assert!(usable(&secret, &other, now).is_none(), "other hosts");
        let mut no_notes = secret.clone();
        no_notes.metadata.annotations = None;
        assert!(usable(&no_notes, &hosts(), now).is_none());
    }

    #[test]
    fn files_are_written_with_a_private_key_only_its_owner_reads() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let issued = issue(&hosts(), jiff::Timestamp::now()).unwrap();
        write_files(dir.path(), &issued).unwrap();
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tls.crt")).unwrap(),
            issued.cert_pem
        );
    }
}
