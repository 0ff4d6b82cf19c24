//! The subcommands end to end: `serve` (validate, load, bind, serve, wait for SIGTERM or SIGINT,
//! drain), `mutate` (one pod offline) and `audit` (pods that lack the injection).

use std::io::Read;
use std::sync::Arc;

use crate::app::{RunningWebhook, StartError};
use crate::audit;
use crate::config::{
    AuditArgs, AuditOutput, CertsArgs, ConfigError, InjectionArgs, MutateArgs, MutateOutput,
    ServeArgs,
};
use crate::metrics::Metrics;
use crate::offline::{self, OfflineError};
use crate::review::Reviewer;
use crate::store::{self, StoreError};
use pod_identity_associations::{AssociationStore, RolePolicyStore, Sources};
use pod_identity_runtime::exit::Failure;
use pod_identity_runtime::logger::LogError;

/// Exit code of `audit` when it found pods that lack the injection.
pub const EXIT_FINDINGS: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Input {
        path: String,
        #[source]
        source: OfflineError,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Associations(#[from] pod_identity_associations::StoreError),
    #[error("associations did not load within 30 s: {0}")]
    NotReady(String),
    #[error(transparent)]
    Certs(#[from] crate::certs::CertsError),
    #[error(transparent)]
    Access(#[from] pod_identity_associations::AccessError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Logging(#[from] LogError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Failure for RunError {
    /// Errors the operator fixes in the flags or the files they name (exit code 64).
    fn is_config(&self) -> bool {
        match self {
            RunError::Config(_)
            | RunError::Logging(_)
            | RunError::Store(_)
            | RunError::Associations(_)
            | RunError::Read { .. } => true,
            RunError::Start(e) => e.is_config(),
            _ => false,
        }
    }
}

/// `serve`.
pub async fn serve(args: ServeArgs) -> Result<(), RunError> {
    let config = args.validate()?;
    pod_identity_runtime::open_files::raise_and_log();
    let webhook = RunningWebhook::start(&config).await?;
    tracing::info!(
        associations = %config.associations.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        custom_resources = config.watch_custom_resources,
        region = config.settings.region.as_deref().unwrap_or(""),
        ipv6 = config.settings.ipv6,
        version = pod_identity_contracts::version::RELEASE,
        revision = pod_identity_contracts::version::REVISION,
        "webhook ready"
    );
    pod_identity_runtime::signal::shutdown().await?;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    webhook.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// `mutate`: prints the pod (YAML) or the patch (JSON) to stdout, warnings to stderr.
pub fn mutate(args: MutateArgs) -> Result<(), RunError> {
    let settings = args.injection.settings()?;
    let set = store::load_file(&args.associations)?;
    let path = args.file.display().to_string();
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| RunError::Read {
                path: path.clone(),
                source,
            })?;
        s
    } else {
        std::fs::read_to_string(&args.file).map_err(|source| RunError::Read {
            path: path.clone(),
            source,
        })?
    };
    let policy = role_policy(&args.injection)?;
    let reviewer = Reviewer::new(
        store::guarded(Arc::new(set), policy),
        settings,
        Metrics::new(),
    );
    let result = offline::mutate_document(&text, &args.namespace, &reviewer)
        .map_err(|source| RunError::Input { path, source })?;
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    let out = match args.output {
        MutateOutput::Pod => serde_yaml_ng::to_string(&result.pod).unwrap_or_default(),
        MutateOutput::Patch => {
            let mut s = serde_json::to_string_pretty(&result.patch).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    print!("{out}");
    Ok(())
}

/// `audit`: prints one line per finding; `Ok(true)` when there were findings.
pub async fn audit(args: AuditArgs) -> Result<bool, RunError> {
    let settings = args.injection.settings()?;
    if args.associations.is_none() && !args.watch_custom_resources {
        return Err(ConfigError::NoAssociationSource.into());
    }
    let policy = role_policy(&args.injection)?;
    let client = kube::Client::try_default().await?;
    if args.watch_custom_resources {
        // A one-shot command: say at once what is wrong rather than wait on the watcher's retries.
        pod_identity_associations::check_access(&client).await?;
    }
    let (associations, sources) = AssociationStore::start(Sources {
        file: args.associations.clone(),
        kube: args.watch_custom_resources.then(|| client.clone()),
        ..Sources::default()
    })
    .await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !associations.is_ready() {
        if tokio::time::Instant::now() >= deadline {
            let status = associations.status();
            let why: Vec<String> = [("file", status.file), ("custom resources", status.kube)]
                .into_iter()
                .filter_map(|(name, s)| Some(format!("{name}: {}", s?.last_error?)))
                .collect();
            return Err(RunError::NotReady(if why.is_empty() {
                "no source finished loading".into()
            } else {
                why.join("; ")
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let store = store::guarded(Arc::new(associations), policy);
    let report = audit::audit(
        client,
        args.namespace.as_deref(),
        store.as_ref(),
        &settings,
        args.include_finished,
    )
    .await?;
    sources.shutdown().await;
    for f in &report.findings {
        match args.output {
            AuditOutput::Text => println!("{f}"),
            AuditOutput::Json => println!("{}", serde_json::to_string(f).unwrap_or_default()),
        }
    }
    eprintln!(
        "audit: {} pods, {} with an association, {} without Pod Identity",
        report.pods_seen,
        report.pods_associated,
        report.findings.len()
    );
    Ok(!report.findings.is_empty())
}

/// The role policy of `--role-policy`, read once (the offline subcommands).
fn role_policy(args: &InjectionArgs) -> Result<Option<RolePolicyStore>, RunError> {
    match &args.role_policy {
        Some(path) => Ok(Some(RolePolicyStore::from_policy(RolePolicyStore::load(
            path,
        )?))),
        None => Ok(None),
    }
}

/// `certs`: the serving certificate in its Secret and its CA in the webhook configuration.
pub async fn certs(args: CertsArgs) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    crate::certs::run(args, client).await?;
    Ok(())
}
