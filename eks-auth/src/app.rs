//! Assembling a running eks-auth: bind both listeners first (a bad port fails before anything
//! serves), then serve (the API over HTTPS when it has a certificate, which is re-read as it
//! rotates), load and refresh the issuer's keys, and watch the associations until told to stop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pod_identity_runtime::serve::{Listener, serve};
use pod_identity_runtime::tls::ReloadingCert;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

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

/// The API listener's certificate, loaded, and how often its files are looked at.
#[derive(Debug, Clone)]
pub struct ServingCert {
    pub cert: Arc<ReloadingCert>,
    pub poll: Duration,
}

/// Both listeners, bound; the API one serves HTTPS when it has a certificate.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
    pub api_tls: Option<ServingCert>,
}

impl Listeners {
    pub async fn bind(
        api: SocketAddr,
        admin: SocketAddr,
        api_tls: Option<ServingCert>,
    ) -> Result<Self, BindError> {
        use pod_identity_runtime::serve::{ADMIN_LISTEN_BACKLOG, LISTEN_BACKLOG};
        let bind = |addr: SocketAddr, backlog: u32| async move {
            pod_identity_runtime::serve::bind(addr, backlog)
                .map_err(|source| BindError { addr, source })
        };
        Ok(Self {
            api: bind(api, LISTEN_BACKLOG).await?,
            admin: bind(admin, ADMIN_LISTEN_BACKLOG).await?,
            api_tls,
        })
    }
}

/// A serving eks-auth. Call [`Running::shutdown`] to stop it.
#[derive(Debug)]
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Polls the API certificate's files; runs until aborted.
    cert_watch: Option<JoinHandle<()>>,
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
        let tls = listeners.api_tls.is_some();
        tracing::info!(listener = "api", addr = %api_addr, tls, "listening");
        let (api_listener, cert_watch) = match listeners.api_tls {
            Some(ServingCert { cert, poll }) => (
                Listener::tls(listeners.api, cert.acceptor()),
                Some(cert.watch(poll, metrics.tls_reloads.clone())),
            ),
            None => {
                tracing::warn!(
                    listener = "api",
                    addr = %api_addr,
                    "the API serves plain HTTP: pod tokens and the credentials they buy cross the network in clear; give --tls-cert and --tls-key to serve HTTPS"
                );
                (Listener::from(listeners.api), None)
            }
        };
        tasks.spawn(serve(
            "api",
            api_listener,
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
        let admin_limits = pod_identity_runtime::serve::ConnectionLimits {
            header_read_timeout: limits.connection.header_read_timeout,
            ..pod_identity_runtime::serve::ConnectionLimits::admin()
        };
        tasks.spawn(serve(
            "admin",
            listeners.admin,
            admin_limits,
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
        Ok(Self {
            api_addr,
            admin_addr,
            shutdown,
            tasks,
            cert_watch,
        })
    }

    /// Stop accepting, let in-flight requests finish (bounded by the grace period), return.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some(w) = self.cert_watch {
            w.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections larger than tokio's default backlog (128) all connect at once while
    /// nothing accepts yet: none waits for a SYN retransmit (`pod-identity-bench eks-auth` saw
    /// 128 overflow under 1,000 pods arriving at once).
    #[tokio::test]
    async fn the_accept_queue_holds_a_burst() {
        let listeners = Listeners::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            None,
        )
        .await
        .unwrap();
        let listener = listeners.api;
        let addr = listener.local_addr().unwrap();
        let connects = (0..400).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            connected, 400,
            "connections beyond the accept queue wait for a SYN retransmit"
        );
        drop(listener);
    }
}
