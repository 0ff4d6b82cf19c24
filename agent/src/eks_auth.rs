//! [`Upstream`] over the real aws-sdk-eksauth client.
//!
//! Node credentials and region come from the SDK's default chain (on EKS: the node role via IMDS
//! and `AWS_REGION` from the manifest). `--endpoint` overrides the URL (eks-auth off EKS);
//! `AWS_CA_BUNDLE` adds the CAs that sign its certificate ([`crate::ca_bundle`]);
//! `--rotate-credentials` swaps the chain for the node's shared credentials file, re-read every
//! minute (hybrid nodes).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, future};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_eksauth::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eksauth::operation::assume_role_for_pod_identity::{
    AssumeRoleForPodIdentityError, AssumeRoleForPodIdentityOutput,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use futures::future::BoxFuture;
use jiff::Timestamp;
use pod_identity_contracts::Secret;
use pod_identity_contracts::credentials::{ContainerCredentials, account_id_from_arn};

use crate::ca_bundle::{self, CaBundleError};
use crate::identity::{IdentityError, IdentityHeader};
use crate::upstream::{
    ATTEMPT_TIMEOUT, CONNECT_TIMEOUT, Fetched, Upstream, UpstreamError, UpstreamErrorKind,
};

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no AWS region configured for the EKS Auth client: set AWS_REGION (the official manifests do)"
    )]
    NoRegion,
    #[error(transparent)]
    CaBundle(#[from] CaBundleError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The EKS Auth client for one cluster.
#[derive(Debug, Clone)]
pub struct EksAuthUpstream {
    client: aws_sdk_eksauth::Client,
    cluster_name: Arc<str>,
}

impl EksAuthUpstream {
    /// Build from the default chain and `AWS_CA_BUNDLE`. `endpoint` overrides the EKS Auth URL;
    /// `identity_token_file` is the agent's own token for eks-auth ([`crate::identity`]).
    pub async fn from_env(
        cluster_name: &str,
        endpoint: Option<&str>,
        rotate_credentials: bool,
        identity_token_file: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(bundle) = ca_bundle::from_env()? {
            tracing::info!(
                ca_bundle = %bundle.path.display(),
                certificates = bundle.certificates,
                "EKS Auth client trusts the system's CAs and AWS_CA_BUNDLE's"
            );
            loader = loader.http_client(bundle.http_client());
        }
        if rotate_credentials {
            loader = loader.credentials_provider(RotatingSharedCredentials::from_env());
        }
        let identity = identity_token_file
            .map(|path| IdentityHeader::new(path.to_path_buf()))
            .transpose()?;
        if let Some(path) = identity_token_file {
            tracing::info!(identity_token_file = %path.display(), "EKS Auth requests carry the agent's own token");
        }
        Self::with_identity(&loader.load().await, cluster_name, identity)
    }

    /// Build from an SDK config the caller assembled (tests, the local run, the lab).
    pub fn new(sdk: &aws_config::SdkConfig, cluster_name: &str) -> Result<Self, ClientError> {
        Self::with_identity(sdk, cluster_name, None)
    }

    /// [`Self::new`], sending the agent's own token with each request when `identity` is set.
    pub fn with_identity(
        sdk: &aws_config::SdkConfig,
        cluster_name: &str,
        identity: Option<IdentityHeader>,
    ) -> Result<Self, ClientError> {
        if sdk.region().is_none() {
            return Err(ClientError::NoRegion);
        }
        let mut config = aws_sdk_eksauth::config::Builder::from(sdk);
        if let Some(identity) = identity {
            config = config.interceptor(identity);
        }
        Ok(Self {
            client: aws_sdk_eksauth::Client::from_conf(config.build()),
            cluster_name: cluster_name.into(),
        })
    }
}

impl Upstream for EksAuthUpstream {
    fn fetch(&self, token: Arc<Secret>) -> BoxFuture<'static, Result<Fetched, UpstreamError>> {
        let client = self.client.clone();
        let cluster = self.cluster_name.clone();
        Box::pin(async move {
            let result = client
                .assume_role_for_pod_identity()
                .cluster_name(cluster.as_ref())
                .token(token.expose())
                .send()
                .await;
            match result {
                Ok(output) => from_output(&output, Timestamp::now()),
                Err(err) => Err(map_sdk_error(err)),
            }
        })
    }
}

/// Check and convert a 200 answer. Missing parts are an error, never a cache entry.
pub fn from_output(
    output: &AssumeRoleForPodIdentityOutput,
    now: Timestamp,
) -> Result<Fetched, UpstreamError> {
    let creds = output
        .credentials()
        .ok_or_else(|| UpstreamError::bad_response("EKS Auth answer has no credentials"))?;
    let role = output
        .assumed_role_user()
        .ok_or_else(|| UpstreamError::bad_response("EKS Auth answer has no assumedRoleUser"))?;
    let association_id = output
        .pod_identity_association()
        .map(|a| a.association_id().to_string())
        .unwrap_or_default();
    let expiration = Timestamp::from_second(creds.expiration().secs())
        .map_err(|_| UpstreamError::bad_response("credential expiration is out of range"))?;
    let container = ContainerCredentials {
        access_key_id: creds.access_key_id().to_string(),
        secret_access_key: Secret::new(creds.secret_access_key()),
        token: Secret::new(creds.session_token()),
        account_id: account_id_from_arn(role.arn()).map(str::to_string),
        expiration,
    };
    Fetched::new(container, association_id, role.arn().to_string(), now)
}

/// Map an SDK failure to what the pod is told. Messages carry the upstream's own words (which
/// never contain our secrets) and no request data.
pub fn map_sdk_error(err: SdkError<AssumeRoleForPodIdentityError, HttpResponse>) -> UpstreamError {
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let seen = service.raw().status().as_u16();
            let message = e.message().unwrap_or("no message").to_string();
            match e.code() {
                // A modeled error: its contract status, whatever the wire said.
                Some(code) => {
                    let status = pod_identity_contracts::eks_auth::ErrorKind::from_name(code)
                        .map_or(seen, |k| k.status());
                    UpstreamError {
                        kind: UpstreamErrorKind::Api {
                            code: code.to_string(),
                            status: if (400..600).contains(&status) {
                                status
                            } else {
                                502
                            },
                        },
                        message: format!("EKS Auth refused the exchange: {message}"),
                    }
                }
                // An error status with no error shape: pass the status through.
                None if (400..600).contains(&seen) => UpstreamError {
                    kind: UpstreamErrorKind::Api {
                        code: "UnknownError".into(),
                        status: seen,
                    },
                    message: format!("EKS Auth answered HTTP {seen} without an error shape"),
                },
                // A success status whose body could not be read: never a 2xx to the pod.
                None => UpstreamError::bad_response(format!(
                    "EKS Auth answered HTTP {seen} with a body that is not a valid AssumeRoleForPodIdentity response"
                )),
            }
        }
        SdkError::TimeoutError(_) => UpstreamError {
            kind: UpstreamErrorKind::Timeout,
            message: "EKS Auth did not answer in time".into(),
        },
        SdkError::DispatchFailure(d) if d.is_timeout() => UpstreamError {
            kind: UpstreamErrorKind::Timeout,
            message: "EKS Auth did not answer in time".into(),
        },
        SdkError::DispatchFailure(d) => UpstreamError {
            kind: UpstreamErrorKind::Network,
            message: match d.as_connector_error() {
                Some(c) => format!("cannot reach EKS Auth: {}", error_chain(c)),
                None => "cannot reach EKS Auth".into(),
            },
        },
        SdkError::ResponseError(_) => {
            UpstreamError::bad_response("EKS Auth sent an answer that is not valid rest-json")
        }
        other => UpstreamError {
            kind: UpstreamErrorKind::Unavailable,
            message: format!("cannot call EKS Auth: {}", error_chain(&other)),
        },
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Re-reads profile `default` of the shared credentials file on every call and hands out the
/// result for one minute, as the official agent's `--rotate-credentials` does.
#[derive(Debug, Clone)]
pub struct RotatingSharedCredentials {
    path: Option<std::path::PathBuf>,
}

impl RotatingSharedCredentials {
    pub const LIFETIME: Duration = Duration::from_secs(60);

    /// `AWS_SHARED_CREDENTIALS_FILE`, else the SDK's default (`~/.aws/credentials`).
    pub fn from_env() -> Self {
        Self {
            path: std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").map(Into::into),
        }
    }

    async fn load(&self) -> provider::Result {
        let files = match &self.path {
            Some(path) => EnvConfigFiles::builder()
                .with_file(EnvConfigFileKind::Credentials, path)
                .build(),
            None => EnvConfigFiles::builder()
                .include_default_credentials_file(true)
                .build(),
        };
        // A new provider per call parses the file afresh: that is the point of rotation.
        let fresh = ProfileFileCredentialsProvider::builder()
            .profile_files(files)
            .profile_name("default")
            .build();
        let creds = fresh.provide_credentials().await?;
        Ok(Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            creds.session_token().map(str::to_string),
            Some(SystemTime::now() + Self::LIFETIME),
            "RotatingSharedCredentials",
        ))
    }
}

impl ProvideCredentials for RotatingSharedCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_eksauth::types::{
        AssumedRoleUser, Credentials as EksCredentials, PodIdentityAssociation,
    };
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_types::DateTime;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    const NOW: i64 = 1_795_700_000;

    fn output(
        expiration: i64,
        with_creds: bool,
        with_role: bool,
    ) -> AssumeRoleForPodIdentityOutput {
        let mut b = AssumeRoleForPodIdentityOutput::builder()
            .audience("pods.eks.amazonaws.com")
            .pod_identity_association(
                PodIdentityAssociation::builder()
                    .association_arn(
                        "arn:aws:eks:us-west-2:111122223333:podidentityassociation/lab/a-1",
                    )
                    .association_id("a-1")
                    .build()
                    .unwrap(),
            );
        if with_creds {
            b = b.credentials(
                EksCredentials::builder()
                    .access_key_id("ASIAEXAMPLE")
                    .secret_access_key("SECRETKEY")
                    .session_token("SESSIONTOKEN")
                    .expiration(DateTime::from_secs(expiration))
                    .build()
                    .unwrap(),
            );
        }
        if with_role {
            b = b.assumed_role_user(
                AssumedRoleUser::builder()
                    .arn("arn:aws:sts::111122223333:assumed-role/r/s")
                    .assume_role_id("AROA:s")
                    .build()
                    .unwrap(),
            );
        }
        b.build().expect("all required fields set")
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    #[test]
    fn a_good_answer_becomes_the_container_body() {
        let f = from_output(&output(NOW + 3600, true, true), now()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
        assert_eq!(body["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(body["AccountId"], "111122223333");
        assert_eq!(body["Token"], "SESSIONTOKEN");
        assert_eq!(f.association_id, "a-1");
        assert_eq!(f.expiration.as_second(), NOW + 3600);
    }

    #[test]
    fn incomplete_or_expired_answers_are_bad_responses() {
        for (out, why) in [
            (output(NOW + 3600, false, true), "no credentials"),
            (output(NOW + 3600, true, false), "no assumedRoleUser"),
            (output(NOW - 1, true, true), "already expired"),
        ] {
            let err = from_output(&out, now()).unwrap_err();
            assert_eq!(err.kind, UpstreamErrorKind::BadResponse, "{why}");
            assert_eq!(err.status(), 502, "{why}");
            assert!(!err.message.contains("SECRETKEY") && !err.message.contains("SESSIONTOKEN"));
        }
    }

    fn raw(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::empty())
    }

    fn service(
        code: Option<&str>,
        status: u16,
    ) -> SdkError<AssumeRoleForPodIdentityError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("upstream says no");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        SdkError::service_error(
            AssumeRoleForPodIdentityError::generic(meta.build()),
            raw(status),
        )
    }

    #[test]
    fn modeled_errors_keep_their_code_and_contract_status() {
        let e = map_sdk_error(service(Some("AccessDeniedException"), 400));
        assert_eq!((e.code(), e.status()), ("AccessDeniedException", 400));
        assert!(e.is_irrecoverable());
        assert!(e.message.contains("upstream says no"));
        let e = map_sdk_error(service(Some("ResourceNotFoundException"), 404));
        assert_eq!((e.status(), e.is_irrecoverable()), (404, true));
        let e = map_sdk_error(service(Some("ThrottlingException"), 429));
        assert_eq!((e.status(), e.is_irrecoverable()), (429, false));
        let e = map_sdk_error(service(Some("InternalServerException"), 500));
        assert_eq!((e.status(), e.is_irrecoverable()), (500, false));
    }

    #[test]
    fn unmodeled_errors_keep_the_status_but_never_a_2xx() {
        let e = map_sdk_error(service(Some("SomethingNew"), 418));
        assert_eq!((e.code(), e.status()), ("SomethingNew", 418));
        let e = map_sdk_error(service(None, 503));
        assert_eq!((e.code(), e.status()), ("UnknownError", 503));
        // An unreadable 200 must not reach the pod as a 200.
        let e = map_sdk_error(service(None, 200));
        assert_eq!(
            (e.kind.clone(), e.status()),
            (UpstreamErrorKind::BadResponse, 502)
        );
        let e = map_sdk_error(service(Some("Weird"), 200));
        assert_eq!(e.status(), 502);
    }

    #[test]
    fn transport_failures_are_retryable_5xx() {
        let e = map_sdk_error(SdkError::timeout_error("slow"));
        assert_eq!((e.code(), e.status()), ("UpstreamTimeout", 504));
        let e = map_sdk_error(SdkError::dispatch_failure(ConnectorError::timeout(
            "slow".into(),
        )));
        assert_eq!(e.status(), 504);
        let e = map_sdk_error(SdkError::dispatch_failure(ConnectorError::io(
            "connection refused".into(),
        )));
        assert_eq!((e.code(), e.status()), ("UpstreamUnreachable", 503));
        assert!(e.message.contains("connection refused"));
        let e = map_sdk_error(SdkError::response_error("truncated", raw(200)));
        assert_eq!(e.status(), 502);
        let e = map_sdk_error(SdkError::construction_failure(
            "no credentials to sign with",
        ));
        assert_eq!(e.status(), 503);
        assert!(!e.is_irrecoverable());
    }

    #[tokio::test]
    async fn rotating_credentials_reread_the_file_every_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let write = |key: &str| {
            std::fs::write(
                &path,
                format!(
                    "[default]\naws_access_key_id = {key}\naws_secret_access_key = secret-{key}\n"
                ),
            )
            .unwrap()
        };
        let provider = RotatingSharedCredentials {
            path: Some(path.clone()),
        };
        write("AKIDFIRST");
        let first = provider.provide_credentials().await.unwrap();
        assert_eq!(first.access_key_id(), "AKIDFIRST");
        let lifetime = first
            .expiry()
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(
            lifetime <= RotatingSharedCredentials::LIFETIME,
            "re-read within a minute"
        );
        write("AKIDROTATED");
        assert_eq!(
            provider
                .provide_credentials()
                .await
                .unwrap()
                .access_key_id(),
            "AKIDROTATED"
        );
        // A broken file is an error for that call, not a panic.
        std::fs::write(&path, "[default]\nnot ini").unwrap();
        assert!(provider.provide_credentials().await.is_err());
    }
}
