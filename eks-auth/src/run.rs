//! The binary end to end: validate, load the API certificate, build the STS client and the key
//! source, resolve the cluster ARN, bind, serve, wait for SIGTERM or SIGINT, drain.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{KeyRefresh, Listeners, Running, ServingCert};
use pod_identity_associations::{AssociationStore, RolePolicyStore, Sources};
use pod_identity_runtime::exit::Failure;
use pod_identity_runtime::logger::LogError;
use pod_identity_runtime::tls::{ReloadingCert, TlsError};

use crate::config::{Cli, ClusterArn, Config, ConfigError, KeySourceConfig, RolePolicyConfig};
use crate::exchange::Exchange;
use crate::keys::{KeyError, KeySource};
use crate::live::TokenReviewer;
use crate::metrics::Metrics;
use crate::server::ApiLimits;
use crate::sts::{SdkAssumer, StsError};
use crate::verify::{Verifier, VerifierSettings};
use pod_identity_associations::AssociationLookup;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--tls-cert / --tls-key: {0}")]
    Tls(#[from] TlsError),
    #[error("associations: {0}")]
    Associations(#[from] pod_identity_associations::StoreError),
    #[error("--role-policy: {0}")]
    RolePolicy(pod_identity_associations::StoreError),
    #[error("--watch-custom-resources / --token-review: no Kubernetes client configuration: {0}")]
    Kube(String),
    #[error("issuer keys: {0}")]
    Keys(#[from] KeyError),
    #[error("no AWS region configured for STS: set AWS_REGION, or give --cluster-arn")]
    NoRegion,
    #[error(
        "cannot learn eks-auth's own AWS account for the cluster ARN (give --cluster-arn to skip this): {0}"
    )]
    Identity(StsError),
    #[error(transparent)]
    Bind(#[from] crate::app::BindError),
    #[error(transparent)]
    Logging(#[from] LogError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Failure for RunError {
    fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::Config(_)
                | RunError::Logging(_)
                | RunError::Tls(_)
                | RunError::Associations(_)
                | RunError::RolePolicy(_)
                | RunError::Kube(_)
                | RunError::Keys(_)
                | RunError::NoRegion
        )
    }
}

/// Install the logger, start the runtime, serve until SIGTERM or SIGINT, drain.
pub fn main(cli: Cli) -> Result<ExitCode, RunError> {
    let _log_guard = crate::telemetry::LOGGER.init(&cli.log.log_level, cli.log.log_format)?;
    let result = pod_identity_runtime::exit::runtime(None)?.block_on(run(cli));
    if let Err(e) = &result {
        tracing::error!(error = %e, "exiting");
    }
    result.map(|()| ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<(), RunError> {
    let config = cli.validate()?;
    pod_identity_runtime::open_files::raise_and_log();
    // First: a bad pair is the operator's to fix, whatever else is wrong or slow to reach.
    let api_tls = match &config.tls {
        Some(files) => Some(ServingCert {
            cert: ReloadingCert::load(files.clone())?,
            poll: config.tls_poll,
        }),
        None => None,
    };
    let metrics = Metrics::new();
    let kube = if config.watch_custom_resources || config.token_review {
        Some(
            kube::Client::try_default()
                .await
                .map_err(|e| RunError::Kube(e.to_string()))?,
        )
    } else {
        None
    };
    let (associations, association_tasks) = AssociationStore::start(Sources {
        file: config.associations.clone(),
        file_poll_interval: config.associations_poll,
        kube: kube.clone().filter(|_| config.watch_custom_resources),
    })
    .await?;
    // Before anything is served: a bad policy is the operator's to fix, not a reason to allow all.
    let role_policy = match &config.role_policy {
        RolePolicyConfig::File(path) => Some(
            RolePolicyStore::start(path.clone(), config.associations_poll)
                .await
                .map_err(RunError::RolePolicy)?,
        ),
        RolePolicyConfig::AllowAny => {
            tracing::warn!(
                "--allow-any-role: no role policy; whoever can write an association can name any role eks-auth can assume; give --role-policy FILE to bound them"
            );
            None
        }
    };
    let key_source = match &config.key_source {
        KeySourceConfig::File(path) => KeySource::File(path.clone()),
        KeySourceConfig::Discovery {
            ca_file,
            token_file,
        } => KeySource::discovery(&config.issuer, ca_file.as_deref(), token_file.clone())?,
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .operation_attempt_timeout(std::time::Duration::from_secs(5))
                .operation_timeout(std::time::Duration::from_secs(15))
                .build(),
        )
        .load()
        .await;
    let sts = SdkAssumer::new(&sdk, config.sts_endpoint.as_deref(), metrics.clone());
    let cluster = resolve_cluster(&config, &sdk, &sts).await?;
    let verifier = Arc::new(Verifier::new(
        VerifierSettings {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
            min_refresh: config.jwks_min_refresh,
            max_lifetime: config.max_token_lifetime,
        },
        key_source,
        metrics.clone(),
    ));
    let mut exchange = Exchange::new(
        cluster,
        verifier,
        Arc::new(associations) as Arc<dyn AssociationLookup>,
        Arc::new(sts),
    )
    .with_callers(config.callers.clone());
    warn_about_callers(&config.callers);
    if config.token_review
        && let Some(client) = kube
    {
        exchange = exchange.with_live_check(Arc::new(TokenReviewer::new(client)));
    }
    let mut policy_tasks = None;
    if let Some((policy, tasks)) = role_policy {
        exchange = exchange.with_role_policy(policy);
        policy_tasks = Some(tasks);
    }
    let listeners = Listeners::bind(
        SocketAddr::new(config.bind_address, config.port),
        SocketAddr::new(config.metrics_address, config.metrics_port),
        api_tls,
    )
    .await?;
    let running = Running::serve(
        listeners,
        exchange.clone(),
        metrics,
        ApiLimits::default(),
        config.shutdown_grace,
        KeyRefresh {
            periodic: config.jwks_refresh,
        },
    )?;
    tracing::info!(
        cluster_name = %config.cluster_name,
        cluster_arn = %exchange.cluster_arn,
        issuer = %config.issuer,
        sts_endpoint = config.sts_endpoint.as_deref().unwrap_or("default"),
        token_review = config.token_review,
        role_policy = %match &config.role_policy {
            RolePolicyConfig::File(path) => path.display().to_string(),
            RolePolicyConfig::AllowAny => "none: any role".into(),
        },
        version = pod_identity_contracts::version::RELEASE,
        revision = pod_identity_contracts::version::REVISION,
        "eks-auth started"
    );
    pod_identity_runtime::signal::shutdown().await?;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    running.shutdown().await;
    association_tasks.shutdown().await;
    if let Some(tasks) = policy_tasks {
        tasks.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The cluster's ARN, and eks-auth's own AWS identity: asked of STS before serving when the ARN
/// must be derived from it, else in the background (a slow STS does not delay the start).
async fn resolve_cluster(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    sts: &SdkAssumer,
) -> Result<ClusterArn, RunError> {
    if let Some(arn) = &config.cluster_arn {
        let sts = sts.clone();
        tokio::spawn(async move {
            match sts.identity().await {
                Ok(identity) => announce_identity(&sts, &identity),
                Err(e) => tracing::warn!(
                    error = %e,
                    "could not ask STS who eks-auth is (GetCallerIdentity); exchanges will tell"
                ),
            }
        });
        return Ok(arn.clone());
    }
    let region = sdk.region().ok_or(RunError::NoRegion)?.to_string();
    let identity = sts.identity().await.map_err(RunError::Identity)?;
    announce_identity(sts, &identity);
    Ok(ClusterArn {
        partition: identity.partition,
        region,
        account: identity.account,
        name: config.cluster_name.clone(),
    })
}

/// Say who eks-auth is in AWS; a role session (keyless, by web identity) makes every pod role
/// a role chain, capped at an hour, which the assumer then asks for directly.
fn announce_identity(sts: &SdkAssumer, identity: &crate::sts::OwnIdentity) {
    tracing::info!(arn = %identity.arn, "eks-auth's own AWS identity");
    if identity.is_role_session() {
        sts.set_role_session();
        tracing::info!(
            "eks-auth runs as a role session: pod roles are assumed by role chaining, which STS caps at one hour"
        );
    } else if identity.is_long_term_user() {
        tracing::warn!(
            arn = %identity.arn,
            "eks-auth runs on an IAM user's long-term keys, which it holds in memory and its Secret at rest; prefer a web identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, see docs/eks-auth.md)"
        );
    }
}

/// The escapes from caller authentication, said loudly at every start.
fn warn_about_callers(policy: &crate::caller::CallerPolicy) {
    if policy.allow_unauthenticated {
        tracing::warn!(
            "--allow-unauthenticated-callers: callers without their own token are served, so a copied pod token buys credentials from anywhere that reaches eks-auth; for tests only"
        );
    }
    if policy.allow_tokens_without_node {
        tracing::warn!(
            "--allow-tokens-without-node: pod tokens that name no node are served without a node binding"
        );
    }
    let callers: Vec<String> = policy
        .service_accounts
        .iter()
        .map(|s| s.to_string())
        .collect();
    tracing::info!(callers = %callers.join(","), caller_audience = %policy.audience, "node agents authenticate with their own token");
}
