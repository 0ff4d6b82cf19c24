//! Other SDKs' default chains, as models: each SDK's providers in its own order, with its rules
//! for when a provider takes over and what happens when it fails, evaluated against this
//! environment and its profile files. The Rust SDK needs no model: demo-app walks aws-config's
//! real providers ([`crate::chain`]); [`rust`] only names which source its profile step used.
//!
//! Each model cites the SDK source file where its order is defined, at the version the tests pin
//! (`tests/sdk-clients`, `scripts/requirements-test.txt`); `demo-app/tests/shadowing.rs` runs each
//! real SDK in every case of a shadowing table and requires the model's answer to match.

pub mod go;
pub mod java;
pub mod javascript;
pub mod profile;
pub mod providers;
pub mod python;
pub mod report;
pub mod rust;

use serde::Serialize;

use crate::environment::Environment;
use profile::ProfileFiles;

/// The SDKs demo-app explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sdk {
    /// aws-config (walked live, with a cross-check against its default chain).
    Rust,
    /// botocore (boto3, and the AWS CLI's copy of it).
    Python,
    /// The AWS SDK for JavaScript v3 (`fromNodeProviderChain`).
    #[value(name = "javascript")]
    JavaScript,
    /// The AWS SDK for Go v2 (`config.LoadDefaultConfig`).
    Go,
    /// The AWS SDK for Java v2 (`DefaultCredentialsProvider`).
    Java,
}

impl Sdk {
    pub fn id(self) -> &'static str {
        match self {
            Sdk::Rust => "rust",
            Sdk::Python => "python",
            Sdk::JavaScript => "javascript",
            Sdk::Go => "go",
            Sdk::Java => "java",
        }
    }
}

/// Where credentials come from: the same names for every SDK, so answers compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    Environment,
    /// Static keys in the selected profile (either file).
    Profile,
    /// The profile's `role_arn` with `source_profile`/`credential_source` (STS AssumeRole).
    AssumeRole,
    /// The profile's `credential_process`.
    Process,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (IRSA).
    WebIdentity,
    /// The profile's `web_identity_token_file` + `role_arn`.
    ProfileWebIdentity,
    /// The profile's SSO settings (IAM Identity Center).
    Sso,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`/`_RELATIVE_URI`: EKS Pod Identity (or ECS).
    Container,
    /// EC2 instance metadata: the node's role.
    Imds,
}

impl Source {
    pub fn id(self) -> &'static str {
        match self {
            Source::Environment => "environment",
            Source::Profile => "profile",
            Source::AssumeRole => "assume-role",
            Source::Process => "process",
            Source::WebIdentity => "web-identity",
            Source::ProfileWebIdentity => "profile-web-identity",
            Source::Sso => "sso",
            Source::Container => "container",
            Source::Imds => "imds",
        }
    }
}

/// What the model sees: the environment and the profile files.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub env: &'a Environment,
    pub files: &'a ProfileFiles,
}

impl Ctx<'_> {
    pub fn env_keys(&self) -> bool {
        self.env.env_keys()
    }

    pub fn container(&self) -> bool {
        self.env.container()
    }

    pub fn imds_disabled(&self) -> bool {
        self.env
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Why an SSO profile fails now, if it must: no token from `aws sso login` is cached.
    pub fn sso_failure(&self) -> Option<String> {
        (!self.files.sso_token_cached()).then(|| {
            "no cached SSO token (~/.aws/sso/cache is empty; `aws sso login` was never run): the SSO provider fails".to_string()
        })
    }

    /// Why a web identity token file fails now, if it must: it does not exist.
    pub fn token_file_failure(&self, path: &str) -> Option<String> {
        (!profile::file_exists(path)).then(|| format!("the token file {path} does not exist"))
    }
}

/// One provider's decision for this environment.
#[derive(Debug)]
pub enum Decision {
    /// Not configured: the chain goes on.
    Skip(String),
    /// It takes credentials from `source` (and fails, with `fails` as the reason, when it must).
    Use {
        source: Source,
        why: String,
        fails: Option<String>,
    },
}

impl Decision {
    pub fn skip(why: impl Into<String>) -> Self {
        Decision::Skip(why.into())
    }

    pub fn use_(source: Source, why: impl Into<String>) -> Self {
        Decision::Use {
            source,
            why: why.into(),
            fails: None,
        }
    }

    pub fn use_failing(source: Source, why: impl Into<String>, fails: Option<String>) -> Self {
        Decision::Use {
            source,
            why: why.into(),
            fails,
        }
    }
}

/// One provider of an SDK's chain.
#[derive(Debug)]
pub struct Provider {
    /// The SDK's own name for it.
    pub name: &'static str,
    /// Variables it reads, shown when set.
    pub vars: &'static [&'static str],
    pub decide: fn(&Ctx) -> Decision,
}

/// What an SDK's chain does when a provider that took over fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The chain stops with that provider's error.
    Stop,
    /// The chain goes on to the next provider (Java v2's `AwsCredentialsProviderChain`).
    Next,
}

/// One SDK's chain.
#[derive(Debug)]
pub struct ChainModel {
    pub sdk: Sdk,
    /// The chain's name and the SDK version the model was checked against.
    pub label: &'static str,
    pub providers: Vec<Provider>,
    pub on_failure: OnFailure,
}

/// What one step of a model came to.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ModelOutcome {
    /// This provider takes the credentials: the chain stops here.
    Picks { source: Source },
    /// This provider takes over and fails: the chain stops with its error.
    Fails { source: Source, reason: String },
    /// This provider takes over and fails, and this SDK goes on to the next provider.
    FailsAndGoesOn { source: Source, reason: String },
    /// Not configured: the chain goes on.
    NotConfigured,
    /// An earlier step ended the chain.
    NotReached,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelStep {
    pub provider: &'static str,
    pub seen: Vec<String>,
    pub outcome: ModelOutcome,
    pub why: String,
}

/// The model's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The source whose provider the chain ends on (with credentials, or with its error).
    pub source: Option<Source>,
    /// That provider fails: the SDK raises its error.
    pub source_fails: bool,
    /// Providers that failed before it while the chain went on (only where the SDK does that).
    pub failed_over: Vec<Source>,
}

impl ChainModel {
    /// Evaluate the chain, step by step.
    pub fn walk(&self, ctx: &Ctx) -> (Vec<ModelStep>, Verdict) {
        let mut steps = Vec::new();
        let mut verdict = Verdict {
            source: None,
            source_fails: false,
            failed_over: Vec::new(),
        };
        let mut stopped = false;
        for p in &self.providers {
            let seen = p.vars.iter().filter_map(|v| ctx.env.show(v)).collect();
            let (outcome, why) = if stopped {
                (
                    ModelOutcome::NotReached,
                    "not asked: an earlier step ended the chain".to_string(),
                )
            } else {
                match (p.decide)(ctx) {
                    Decision::Skip(why) => (ModelOutcome::NotConfigured, why),
                    Decision::Use {
                        source,
                        why,
                        fails: None,
                    } => {
                        stopped = true;
                        verdict.source = Some(source);
                        (ModelOutcome::Picks { source }, why)
                    }
                    Decision::Use {
                        source,
                        why,
                        fails: Some(reason),
                    } => match self.on_failure {
                        OnFailure::Stop => {
                            stopped = true;
                            verdict.source = Some(source);
                            verdict.source_fails = true;
                            (ModelOutcome::Fails { source, reason }, why)
                        }
                        OnFailure::Next => {
                            verdict.failed_over.push(source);
                            (ModelOutcome::FailsAndGoesOn { source, reason }, why)
                        }
                    },
                }
            };
            steps.push(ModelStep {
                provider: p.name,
                seen,
                outcome,
                why,
            });
        }
        (steps, verdict)
    }
}

/// The model of `sdk` (`None` for Rust, which is walked live).
pub fn model(sdk: Sdk) -> Option<ChainModel> {
    match sdk {
        Sdk::Rust => None,
        Sdk::Python => Some(python::model()),
        Sdk::JavaScript => Some(javascript::model()),
        Sdk::Go => Some(go::model()),
        Sdk::Java => Some(java::model()),
    }
}

/// Warnings when something hides Pod Identity (the container provider) from this SDK.
pub fn shadowing_warnings(
    sdk: Sdk,
    steps: &[ModelStep],
    container_configured: bool,
) -> Vec<String> {
    if !container_configured {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    for step in steps {
        match &step.outcome {
            ModelOutcome::Picks { source: Source::Container }
            | ModelOutcome::Fails {
                source: Source::Container,
                ..
            } => break,
            ModelOutcome::Picks { source } => warnings.push(format!(
                "{} ({}) comes before container credentials in the {} chain and yields credentials: Pod Identity is never asked",
                step.provider,
                source.id(),
                sdk.id()
            )),
            ModelOutcome::Fails { source, .. } => warnings.push(format!(
                "{} ({}) comes before container credentials in the {} chain and fails, which stops the chain: Pod Identity is never asked",
                step.provider,
                source.id(),
                sdk.id()
            )),
            ModelOutcome::FailsAndGoesOn { source, .. } => warnings.push(format!(
                "{} ({}) is configured before container credentials in the {} chain; it fails here and the chain goes on, but once it works it hides Pod Identity",
                step.provider,
                source.id(),
                sdk.id()
            )),
            ModelOutcome::NotConfigured | ModelOutcome::NotReached => {}
        }
    }
    warnings
}

#[cfg(test)]
pub(crate) mod testing {
    //! An environment and profile files built in memory for the models' unit tests.

    use std::collections::BTreeMap;

    use super::*;

    pub struct Setup {
        pub env: Environment,
        pub files: ProfileFiles,
    }

    pub fn setup(vars: &[(&str, &str)], config: &str, credentials: &str) -> Setup {
        let env = Environment::new(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            None,
        );
        let mut files = ProfileFiles::parse(config, credentials);
        files.selected = env.profile().to_string();
        Setup { env, files }
    }

    /// The model's verdict as `(source, fails)`.
    pub fn verdict(sdk: Sdk, s: &Setup) -> (Option<&'static str>, bool, Vec<&'static str>) {
        let ctx = Ctx {
            env: &s.env,
            files: &s.files,
        };
        let (_, v) = model(sdk).unwrap().walk(&ctx);
        (
            v.source.map(Source::id),
            v.source_fails,
            v.failed_over.into_iter().map(Source::id).collect(),
        )
    }

    pub const CONTAINER: (&str, &str) = (
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://169.254.170.23/v1/credentials",
    );
    pub const KEY: (&str, &str) = ("AWS_ACCESS_KEY_ID", "AKIAENV");
    pub const SECRET: (&str, &str) = ("AWS_SECRET_ACCESS_KEY", "s");
    pub const IMDS_OFF: (&str, &str) = ("AWS_EC2_METADATA_DISABLED", "true");
    pub const STATIC: &str = "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = s\n";
}
