//! A test stand for the eks-auth binary: moto as STS, a fake issuer (OIDC discovery) or a JWKS
//! file, an associations file, and the binary itself on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_identity_test_support::eks_auth_process::{EksAuthOptions, EksAuthProcess};
use pod_identity_test_support::fake_issuer::FakeIssuer;
use pod_identity_test_support::moto::Moto;
use pod_identity_test_support::tokens::{TokenBuilder, jwks};

pub const CLUSTER: &str = "lab";
pub const CLUSTER_ARN: &str = "arn:aws:eks:us-west-2:111122223333:cluster/lab";

/// The associations every stand starts with.
pub const ASSOCIATIONS: &str = r#"
associations:
  - namespace: default
    serviceAccount: s3-reader
    roleArn: arn:aws:iam::111122223333:role/s3-reader
  - namespace: team-b
    serviceAccount: chained
    roleArn: arn:aws:iam::111122223333:role/hop
    targetRoleArn: arn:aws:iam::444455556666:role/target
    associationId: a-chained
  - namespace: team-b
    serviceAccount: scoped
    roleArn: arn:aws:iam::111122223333:role/scoped
    disableSessionTags: true
    policy: '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'
"#;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_eks-auth"))
}

pub struct Stand {
    pub moto: Moto,
    pub issuer: FakeIssuer,
    pub eks_auth: EksAuthProcess,
    pub dir: tempfile::TempDir,
}

impl Stand {
    /// moto, a discovery issuer publishing the primary test key, eks-auth with `extra` flags.
    /// `None` when moto is not installed (the test then skips, see `Moto::start`).
    pub async fn start(test: &str, extra: &[&str]) -> Option<Self> {
        Self::start_with(test, |opts| {
            opts.extra = extra.iter().map(|s| s.to_string()).collect();
        })
        .await
    }

    /// As [`Stand::start`], with the options changed by `change` first.
    pub async fn start_with(test: &str, change: impl FnOnce(&mut EksAuthOptions)) -> Option<Self> {
        let moto = Moto::start(test).await?;
        let issuer = FakeIssuer::start(jwks()).await;
        let dir = tempfile::tempdir().unwrap();
        let associations = dir.path().join("associations.yaml");
        std::fs::write(&associations, ASSOCIATIONS).unwrap();
        let mut opts = EksAuthOptions {
            cluster_name: CLUSTER.into(),
            issuer: issuer.url(),
            jwks_file: None,
            associations,
            sts_endpoint: Some(moto.url().to_string()),
            cluster_arn: Some(CLUSTER_ARN.into()),
            ..EksAuthOptions::default()
        };
        change(&mut opts);
        let mut eks_auth = EksAuthProcess::start(&bin(), &opts).await;
        eks_auth.caller_token = Some(TokenBuilder::agent().issuer(issuer.url()).sign());
        Some(Self {
            moto,
            issuer,
            eks_auth,
            dir,
        })
    }

    /// A token from this stand's issuer (good unless changed).
    pub fn token(&self) -> TokenBuilder {
        TokenBuilder::new().issuer(self.issuer.url())
    }

    /// The agent's own token from this stand's issuer (the one [`Stand::start`] sends).
    pub fn agent_token(&self) -> TokenBuilder {
        TokenBuilder::agent().issuer(self.issuer.url())
    }

    pub fn associations_path(&self) -> PathBuf {
        self.dir.path().join("associations.yaml")
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// eks-auth started with `opts` exits 64 and says `want` on stderr (`eks-auth: …`), no panic.
pub async fn assert_refused(opts: &EksAuthOptions, want: &str) {
    let mut p = EksAuthProcess::spawn(&bin(), opts);
    let status = p
        .child
        .wait_for_exit(Duration::from_secs(20))
        .await
        .unwrap();
    p.stderr
        .wait_for_line(
            |l| l.starts_with("eks-auth: ") && l.contains(want),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{want}: {e}"));
    assert_eq!(status.code(), Some(64), "{want}: {}", p.stderr.text());
    assert!(!p.stderr.text().contains("panicked"), "{want}");
}
