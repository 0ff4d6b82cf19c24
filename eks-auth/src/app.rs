//! Assembling a running eks-auth: bind both listeners first (a bad port fails before anything
//! serves), then serve, load and refresh the issuer's keys, and watch the associations until
//! told to stop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pod_identity_runtime::serve::serve;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::exchange::Exchange;
use crate::metrics::Metrics;
use crate::server::{self, AdminState, ApiState, ConnectionLimits};

/// Why eks-auth could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Both listeners, bound.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(api: SocketAddr, admin: SocketAddr) -> Result<Self, BindError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, source })
        };
        Ok(Self {
            api: bind(api).await?,
            admin: bind(admin).await?,
        })
    }
}

/// Background work beside the listeners, each run until shutdown.
pub type Background = Vec<Box<dyn FnOnce(watch::Receiver<bool>) -> BackgroundTask + Send>>;
pub type BackgroundTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A serving eks-auth. Call [`Running::shutdown`] to stop it.
#[derive(Debug)]
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// How keys are kept fresh.
#[derive(Debug, Clone, Copy)]
pub struct KeyRefresh {
    pub periodic: Duration,
}

impl Running {
    pub fn serve(
        listeners: Listeners,
        exchange: Exchange,
        metrics: Metrics,
        limits: ConnectionLimits,
        grace: Duration,
        keys: KeyRefresh,
        background: Background,
    ) -> io::Result<Self> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let api_addr = listeners.api.local_addr()?;
        let admin_addr = listeners.admin.local_addr()?;

        let api = Arc::new(ApiState {
            exchange: exchange.clone(),
            metrics: metrics.clone(),
            limits,
        });
        tracing::info!(listener = "api", addr = %api_addr, "listening");
        tasks.spawn(serve(
            "api",
            listeners.api,
            limits.connection,
            shutdown_rx.clone(),
            grace,
            |peer| peer,
            move |peer, req| server::api_service(api.clone(), peer, req),
        ));
        let admin = AdminState {
            exchange: exchange.clone(),
            metrics,
        };
        tracing::info!(listener = "admin", addr = %admin_addr, "listening");
        tasks.spawn(serve(
            "admin",
            listeners.admin,
            limits.connection,
            shutdown_rx.clone(),
            grace,
            |peer| peer,
            move |_peer, req| server::admin_service(admin.clone(), req),
        ));

        // Keys: load at startup (retrying with backoff until it works; not ready until then),
        // then refresh periodically. Unknown kids trigger rate-limited refreshes on their own.
        let verifier = exchange.verifier.clone();
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                if verifier.refresh("startup").await.is_ok() {
                    break;
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            let mut tick = tokio::time::interval(keys.periodic);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => { let _ = verifier.refresh("periodic").await; }
                }
            }
        });
        for task in background {
            tasks.spawn(task(shutdown_rx.clone()));
        }
        Ok(Self {
            api_addr,
            admin_addr,
            shutdown,
            tasks,
        })
    }

    /// Stop accepting, let in-flight requests finish (bounded by the grace period), return.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
