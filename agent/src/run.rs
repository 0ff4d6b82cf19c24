//! The `server` subcommand end to end: validate, build the upstream client, bind, serve, wait for
//! SIGTERM or SIGINT, drain.

use std::sync::Arc;

use crate::agent::{BoundListeners, RunningAgent, StartError};
use crate::config::{ConfigError, ServerArgs};
use crate::eks_auth::{ClientError, EksAuthUpstream};
use crate::server::ConnectionLimits;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("`{0}` is not implemented in this build")]
    NotYet(&'static str),
}

impl RunError {
    /// Errors the operator fixes in the configuration (exit code 64).
    pub fn is_config(&self) -> bool {
        matches!(self, RunError::Config(_) | RunError::Client(_))
    }
}

pub async fn server(args: ServerArgs) -> Result<(), RunError> {
    let config = args.validate()?;
    let upstream = EksAuthUpstream::from_env(
        &config.cluster_name,
        config.endpoint.as_deref(),
        config.rotate_credentials,
    )
    .await?;
    let listeners = BoundListeners::bind(&config).await?;
    let agent = RunningAgent::serve(
        &config,
        listeners,
        Arc::new(upstream),
        ConnectionLimits {
            header_read_timeout: config.header_read_timeout,
            ..ConnectionLimits::default()
        },
    )?;
    tracing::info!(
        cluster_name = %config.cluster_name,
        endpoint = config.endpoint.as_deref().unwrap_or("default"),
        "agent ready"
    );
    wait_for_signal().await?;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    agent.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
