//! The subcommands end to end.
//!
//! `server`: validate, bind every listener, drop every capability and set no_new_privs, and only
//! then start logging's writer thread and the tokio runtime (capabilities are per thread, so no
//! thread ever holds one), raise the open-file limit to its hard value, build the EKS Auth client,
//! serve, and drain on SIGTERM or SIGINT.

use std::sync::Arc;

use crate::agent::{BoundListeners, RunningAgent, StartError};
use crate::config::{ConfigError, InitializeArgs, ServerArgs, ServerConfig};
use crate::eks_auth::{ClientError, EksAuthUpstream};
use crate::initialize::{InitError, initialize};
use crate::privileges::{self, PrivilegeError};
use crate::telemetry;
use pod_identity_runtime::exit::Failure;
use pod_identity_runtime::flags::LogFlags;
use pod_identity_runtime::log_writer::LogGuard;
use pod_identity_runtime::logger::{self, LogError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Logging(#[from] LogError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Initialize(#[from] InitError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Failure for RunError {
    /// Errors the operator fixes in the configuration (exit code 64).
    fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::Config(_) | RunError::Client(_) | RunError::Logging(_)
        )
    }
}

fn init_logging(flags: &LogFlags) -> Result<LogGuard, RunError> {
    Ok(telemetry::LOGGER.init(&flags.log_level, flags.log_format)?)
}

/// `server`. Blocks until shutdown.
pub fn server(args: ServerArgs, logging: &LogFlags) -> Result<(), RunError> {
    // Fail on a bad level before binding anything.
    logger::level_directive(&logging.log_level)?;
    let config = args.validate()?;
    let listeners = BoundListeners::bind(&config)?;
    let dropped = privileges::drop_all()?;
    let _guard = init_logging(logging)?;
    tracing::info!(
        caps.before = %serde_json::to_string(&dropped.before).unwrap_or_default(),
        caps.after = %serde_json::to_string(&dropped.after).unwrap_or_default(),
        no_new_privs = dropped.no_new_privs,
        note = dropped.bounding_note.as_deref().unwrap_or(""),
        "capabilities dropped"
    );
    pod_identity_runtime::open_files::raise_and_log();
    let runtime = pod_identity_runtime::exit::runtime(Some(config.worker_threads))?;
    let result = runtime.block_on(serve(config, listeners));
    if let Err(e) = &result {
        tracing::error!(error = %e, "exiting");
    }
    result
}

async fn serve(config: ServerConfig, listeners: BoundListeners) -> Result<(), RunError> {
    let upstream = EksAuthUpstream::from_env(
        &config.cluster_name,
        config.endpoint.as_deref(),
        config.rotate_credentials,
        config.identity_token_file.as_deref(),
    )
    .await?;
    let limits = crate::server::credentials_limits(config.header_read_timeout);
    let agent = RunningAgent::serve(&config, listeners, Arc::new(upstream), limits)?;
    tracing::info!(
        cluster_name = %config.cluster_name,
        endpoint = config.endpoint.as_deref().unwrap_or("default"),
        version = pod_identity_contracts::version::RELEASE,
        revision = pod_identity_contracts::version::REVISION,
        "agent ready"
    );
    pod_identity_runtime::signal::shutdown().await?;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    agent.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// `initialize`. Runs in the privileged init container.
pub fn initialize_node(args: InitializeArgs, logging: &LogFlags) -> Result<(), RunError> {
    let _guard = init_logging(logging)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(initialize(&args.link_name, args.link_kind))?;
    for warning in &report.warnings {
        tracing::warn!(link = %args.link_name, "{warning}");
    }
    tracing::info!(
        link = %args.link_name,
        link_kind = report.link,
        changes = %report.changes.join("; "),
        changed = !report.changes.is_empty(),
        "node initialized"
    );
    Ok(())
}
