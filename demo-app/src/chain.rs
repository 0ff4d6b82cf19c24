//! The walk: aws-config's own providers, in the default chain's order, with its semantics —
//! "not loaded" means try the next provider, any other error stops the chain.

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::meta::region::ProvideRegion;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_types::error::display::DisplayErrorContext;
use pod_identity_contracts::constants::{ENV_FULL_URI, ENV_TOKEN_FILE};
use pod_identity_contracts::credentials::short_access_key_id;
use serde::Serialize;

use crate::container::{self, ContainerDetails};
use crate::environment::Environment;

/// The default chain's providers, in the Rust SDK's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Environment,
    Profile,
    WebIdentity,
    Container,
    Imds,
}

impl StepKind {
    pub const ORDER: [StepKind; 5] = [
        StepKind::Environment,
        StepKind::Profile,
        StepKind::WebIdentity,
        StepKind::Container,
        StepKind::Imds,
    ];

    pub fn title(self) -> &'static str {
        match self {
            StepKind::Environment => "environment variables (static keys)",
            StepKind::Profile => "profile files (AWS_PROFILE, ~/.aws/config and credentials)",
            StepKind::WebIdentity => "web identity token (IRSA)",
            StepKind::Container => "container credentials (EKS Pod Identity, ECS)",
            StepKind::Imds => "EC2 instance metadata (the node's role)",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            StepKind::Environment => "environment",
            StepKind::Profile => "profile",
            StepKind::WebIdentity => "web-identity",
            StepKind::Container => "container",
            StepKind::Imds => "imds",
        }
    }

    /// Does credentials' provider name (as aws-config sets it) belong to this step?
    pub fn owns_provider_name(self, name: &str) -> bool {
        match self {
            StepKind::Environment => name == "EnvironmentVariable",
            // A profile can source credentials many ways (static, process, SSO, role chaining).
            StepKind::Profile => !matches!(name, "EnvironmentVariable" | "EcsContainer" | "IMDSv2"),
            StepKind::WebIdentity => name == "WebIdentityToken",
            StepKind::Container => name == "EcsContainer",
            StepKind::Imds => name == "IMDSv2",
        }
    }
}

/// What one step came to.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// Credentials found: the chain stops here.
    Loaded {
        provider: String,
        access_key_id: String,
        expiration: Option<String>,
    },
    /// Not configured or found nothing: the chain goes on.
    NotLoaded { reason: String },
    /// Configured but failed: the chain stops here, with an error.
    Failed { reason: String },
    /// An earlier step ended the chain.
    NotReached,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub kind: StepKind,
    pub title: &'static str,
    pub configured: bool,
    /// What it saw: variables (secret values shown as `(set)`) and files.
    pub seen: Vec<String>,
    pub outcome: Outcome,
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerDetails>,
}

/// The walk's result: the steps, and the credentials of the winner (kept out of the report).
#[derive(Debug)]
pub struct Walk {
    pub steps: Vec<Step>,
    pub winner: Option<(StepKind, Credentials)>,
}

/// Walk the chain.
pub async fn walk(env: &Environment) -> Walk {
    let now = jiff::Timestamp::now().as_second();
    let mut steps = Vec::new();
    let mut winner = None;
    let mut stopped = false;
    for kind in StepKind::ORDER {
        let seen = seen_by(kind, env);
        let configured = configured(kind, env);
        let container = if kind == StepKind::Container && configured {
            Some(container::inspect(env, now).await)
        } else {
            None
        };
        let (outcome, why) = if stopped {
            (
                Outcome::NotReached,
                "not asked: an earlier step ended the chain".to_string(),
            )
        } else {
            match provide(kind).await {
                Ok(creds) => {
                    stopped = true;
                    let provider = provider_name(&creds);
                    let outcome = Outcome::Loaded {
                        provider: provider.clone(),
                        access_key_id: short_access_key_id(creds.access_key_id()),
                        expiration: creds
                            .expiry()
                            .and_then(|t| jiff::Timestamp::try_from(t).ok())
                            .map(|t| t.to_string()),
                    };
                    winner = Some((kind, creds));
                    (
                        outcome,
                        format!(
                            "credentials found ({provider}): the chain stops here and this provider wins"
                        ),
                    )
                }
                Err(e @ CredentialsError::CredentialsNotLoaded(_)) => (
                    Outcome::NotLoaded {
                        reason: DisplayErrorContext(&e).to_string(),
                    },
                    "not loaded: the chain goes on to the next step".to_string(),
                ),
                Err(e) => {
                    stopped = true;
                    (
                        Outcome::Failed {
                            reason: DisplayErrorContext(&e).to_string(),
                        },
                        "configured but failed: the chain stops here with this error (later steps are never asked)".to_string(),
                    )
                }
            }
        };
        steps.push(Step {
            kind,
            title: kind.title(),
            configured,
            seen,
            outcome,
            why,
            container,
        });
    }
    Walk { steps, winner }
}

async fn provide(kind: StepKind) -> aws_credential_types::provider::Result {
    match kind {
        StepKind::Environment => {
            EnvironmentVariableCredentialsProvider::new()
                .provide_credentials()
                .await
        }
        // Both call STS (a role in the profile, web identity), which needs the region the
        // default chain would give them; without it a role profile fails with "missing signing
        // region" where aws-config's own chain succeeds.
        StepKind::Profile => {
            ProfileFileCredentialsProvider::builder()
                .configure(&provider_config().await)
                .build()
                .provide_credentials()
                .await
        }
        StepKind::WebIdentity => {
            let conf = provider_config().await;
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&conf)
                .build()
                .provide_credentials()
                .await
        }
        StepKind::Container => {
            EcsCredentialsProvider::builder()
                .build()
                .provide_credentials()
                .await
        }
        StepKind::Imds => {
            ImdsCredentialsProvider::builder()
                .build()
                .provide_credentials()
                .await
        }
    }
}

/// What the default chain gives its providers: the default region.
async fn provider_config() -> aws_config::provider_config::ProviderConfig {
    let region = aws_config::default_provider::region::default_provider()
        .region()
        .await;
    aws_config::provider_config::ProviderConfig::default().with_region(region)
}

/// aws-config records which provider made credentials only in their `Debug` form (secrets are
/// redacted there); read the name from it.
pub fn provider_name(creds: &Credentials) -> String {
    let debug = format!("{creds:?}");
    debug
        .split("provider_name: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("unknown")
        .to_string()
}

fn configured(kind: StepKind, env: &Environment) -> bool {
    match kind {
        StepKind::Environment => env.env_keys(),
        StepKind::Profile => env.profile_configured(),
        StepKind::WebIdentity => env.web_identity(),
        StepKind::Container => env.container(),
        StepKind::Imds => env.get("AWS_EC2_METADATA_DISABLED") != Some("true"),
    }
}

fn seen_by(kind: StepKind, env: &Environment) -> Vec<String> {
    let vars: &[&str] = match kind {
        StepKind::Environment => &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ],
        StepKind::Profile => &[
            "AWS_PROFILE",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        ],
        StepKind::WebIdentity => &[
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
            "AWS_ROLE_SESSION_NAME",
        ],
        StepKind::Container => &[
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            ENV_FULL_URI,
            ENV_TOKEN_FILE,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        ],
        StepKind::Imds => &[
            "AWS_EC2_METADATA_DISABLED",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        ],
    };
    let mut seen: Vec<String> = vars.iter().filter_map(|v| env.show(v)).collect();
    if kind == StepKind::Profile {
        seen.push(format!("profile {:?}", env.profile()));
        for file in [env.config_file(), env.credentials_file()]
            .into_iter()
            .flatten()
        {
            let state = if file.exists() { "exists" } else { "absent" };
            seen.push(format!("{} ({state})", file.display()));
        }
    }
    seen
}

/// Configurations that hide Pod Identity, worth a warning whatever won.
pub fn shadowing_warnings(env: &Environment) -> Vec<String> {
    let mut warnings = Vec::new();
    if env.container() {
        if env.env_keys() {
            warnings.push("static keys in the environment (AWS_ACCESS_KEY_ID) come first in every SDK (JavaScript v3 skips them only when AWS_PROFILE is set): Pod Identity is never asked".into());
        }
        if env.profile_configured() {
            warnings.push(format!(
                "profile {:?} is configured and comes before container credentials: if it yields credentials, Pod Identity is never asked",
                env.profile()
            ));
        }
        if env.web_identity() {
            warnings.push("IRSA (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN) comes before container credentials in every SDK: Pod Identity is hidden".into());
        }
    }
    warnings
}

/// Where other SDKs' chains differ from aws-config's, for the reader comparing with a Python pod.
pub const SDK_DIFFERENCES: &[&str] = &[
    "botocore (boto3, AWS CLI): environment → assume-role profile → web identity → SSO → shared credentials file → credential_process → config file → container → IMDS; web identity from the environment comes before static keys in the credentials file, where Rust reads the profile first",
    "botocore treats credentials with under 15 minutes left as stale and refetches them on every call (blocking under 10 minutes); the Rust SDK refreshes 5-10 seconds before expiry",
    "Java v2: environment → web identity (environment) → profile → container → IMDS, and a provider that fails does not stop its chain (an SSO profile without a token, a missing token file: the next provider is asked)",
    "Go v2 decides once, when the config loads: environment keys → AWS_WEB_IDENTITY_TOKEN_FILE → profile → container → IMDS, even when IMDS is disabled (it then fails); JavaScript v3 skips the environment's keys whenever AWS_PROFILE is set",
    "demo-app --sdk python|javascript|go|java explains the chain as that SDK walks it",
    "all SDKs send the token file's content verbatim and re-read the file on every refresh; they refuse plain-http container hosts other than loopback, 169.254.170.2, 169.254.170.23 and fd00:ec2::23 (botocore also accepts the name localhost)",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment::new(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            None,
        )
    }

    #[test]
    fn provider_name_is_read_from_debug_without_secrets() {
        let c = Credentials::new(
            "AKIAEXAMPLE",
            "secret",
            Some("token".into()),
            None,
            "EcsContainer",
        );
        assert_eq!(provider_name(&c), "EcsContainer");
        assert!(StepKind::Container.owns_provider_name("EcsContainer"));
        assert!(!StepKind::Container.owns_provider_name("EnvironmentVariable"));
        assert!(StepKind::Profile.owns_provider_name("AssumeRoleProvider"));
    }

    #[test]
    fn shadowing_is_named() {
        let pod = [(ENV_FULL_URI, "http://169.254.170.23/v1/credentials")];
        assert!(shadowing_warnings(&env(&pod)).is_empty());
        let mut with_keys = pod.to_vec();
        with_keys.extend([
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        assert!(shadowing_warnings(&env(&with_keys))[0].contains("static keys"));
        let mut with_irsa = pod.to_vec();
        with_irsa.extend([
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ]);
        assert!(shadowing_warnings(&env(&with_irsa))[0].contains("IRSA"));
    }
}
