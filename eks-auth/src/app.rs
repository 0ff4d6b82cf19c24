//! Assembling a running eks-auth: bind both listeners first (a bad port fails before anything
//! serves), then serve (the API over HTTPS when it has a certificate, which is re-read as it
//! rotates), load and refresh the issuer's keys, and watch the associations until told to stop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pod_identity_runtime::admin;
use pod_identity_runtime::serve::{ConnectionLimits, Listener};
use pod_identity_runtime::supervisor::Supervisor;
use pod_identity_runtime::tls::ReloadingCert;
use tokio::net::TcpListener;

use crate::exchange::Exchange;
use crate::metrics::Metrics;
use crate::server::{self, AdminState, ApiLimits, ApiState};

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
    tasks: Supervisor,
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
        limits: ApiLimits,
        grace: Duration,
        keys: KeyRefresh,
    ) -> io::Result<Self> {
        let mut tasks = Supervisor::new(grace);
        let api = Arc::new(ApiState {
            exchange: exchange.clone(),
            metrics: metrics.clone(),
            limits,
        });
        let api_listener = match listeners.api_tls {
            Some(ServingCert { cert, poll }) => {
                tasks.spawn(cert.watch(poll, metrics.tls_reloads.clone()));
                Listener::tls(listeners.api, cert.acceptor())
            }
            None => {
                tracing::warn!(
                    listener = "api",
                    addr = %listeners.api.local_addr()?,
                    "the API serves plain HTTP: pod tokens and the credentials they buy cross the network in clear; give --tls-cert and --tls-key to serve HTTPS"
                );
                Listener::from(listeners.api)
            }
        };
        let api_addr = tasks.serve(
            "api",
            api_listener,
            limits.connection,
            |peer| peer,
            move |peer, req| server::api_service(api.clone(), peer, req),
        )?;
        let admin = AdminState {
            exchange: exchange.clone(),
            metrics,
        };
        let admin_limits = ConnectionLimits {
            header_read_timeout: limits.connection.header_read_timeout,
            ..ConnectionLimits::admin()
        };
        let admin_addr = tasks.serve(
            "admin",
            listeners.admin,
            admin_limits,
            |_peer| (),
            move |(), req| admin::service(admin.clone(), req),
        )?;

        // Keys: load at startup (retrying with backoff until it works; not ready until then),
        // then refresh periodically. Unknown kids trigger rate-limited refreshes on their own.
        let verifier = exchange.verifier.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(250);
            while verifier.refresh("startup").await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        let verifier = exchange.verifier.clone();
        tasks.every(keys.periodic, move || {
            let verifier = verifier.clone();
            async move {
                let _ = verifier.refresh("periodic").await;
            }
        });
        Ok(Self {
            api_addr,
            admin_addr,
            tasks,
        })
    }

    /// Stop accepting, let in-flight requests finish (bounded by the grace period), return.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
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
