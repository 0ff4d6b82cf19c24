//! Assembling a running agent: bind every listener first (so a bad port or a missing capability
//! fails before anything serves), then build the cache and serve until told to stop.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

use pod_identity_runtime::admin;
use pod_identity_runtime::serve::{ADMIN_LISTEN_BACKLOG, LISTEN_BACKLOG};
use pod_identity_runtime::supervisor::Supervisor;

use crate::cache::{CacheConfig, CredentialCache, DEFAULT_MIN_REMAINING, SystemClock};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::server::{self, AdminState, ConnectionLimits, CredentialsState};
use crate::upstream::{Metered, Upstream};

/// Why the agent could not start. Each names the address that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot bind {addr}: permission denied; ports below 1024 need CAP_NET_BIND_SERVICE (run as root, or grant the capability: securityContext.capabilities.add: [NET_BIND_SERVICE])"
    )]
    PrivilegedPort { addr: SocketAddr },
    #[error(
        "cannot bind {addr}: the address is not on this node; run `pod-identity-agent initialize` first (it creates pod-id-link0)"
    )]
    AddressMissing { addr: SocketAddr },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Listeners bound and ready to serve. Bound synchronously, before any thread exists, so that
/// the capability to bind port 80 can be dropped before the runtime starts.
#[derive(Debug)]
pub struct BoundListeners {
    pub credentials: Vec<std::net::TcpListener>,
    pub probe: std::net::TcpListener,
    pub metrics: std::net::TcpListener,
    /// Things worth a warning (an IPv6 bind host missing), logged once logging is up.
    pub notes: Vec<String>,
}

impl BoundListeners {
    /// Bind the credentials listener on every bind host, the probe listener on localhost and the
    /// metrics listener. An IPv6 bind host that is not on the node is skipped with a note (as
    /// on IPv4-only nodes); any other failure is an error.
    pub fn bind(config: &ServerConfig) -> Result<Self, StartError> {
        let mut credentials = Vec::new();
        let mut notes = Vec::new();
        for host in &config.bind_hosts {
            let addr = SocketAddr::new(host.ip, config.port);
            match bind(addr, LISTEN_BACKLOG) {
                Ok(l) => credentials.push(l),
                Err(StartError::AddressMissing { addr }) if host.ip.is_ipv6() => {
                    notes.push(format!(
                        "IPv6 bind host {addr} is not on this node; serving IPv4 only"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        if credentials.is_empty() {
            // Only reachable when every host was IPv6 and missing.
            let addr = SocketAddr::new(config.bind_hosts[0].ip, config.port);
            return Err(StartError::AddressMissing { addr });
        }
        let probe = bind(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.probe_port),
            ADMIN_LISTEN_BACKLOG,
        )?;
        let metrics = bind(
            SocketAddr::new(config.metrics_address, config.metrics_port),
            ADMIN_LISTEN_BACKLOG,
        )?;
        Ok(Self {
            credentials,
            probe,
            metrics,
            notes,
        })
    }
}

/// Bind with a deep accept queue: a node's pods may all start at once.
///
/// SO_REUSEPORT lets the next agent bind beside this one during a rolling update (the DaemonSet
/// surges: the new pod starts, binds and turns ready before the old one is told to stop), so pods
/// never meet a closed port. Linux admits into a port's group only sockets of the same effective
/// uid, so no other user's process can join it.
fn bind(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, StartError> {
    use socket2::{Domain, Socket, Type};
    let map = |source: io::Error| match source.kind() {
        io::ErrorKind::PermissionDenied => StartError::PrivilegedPort { addr },
        io::ErrorKind::AddrNotAvailable => StartError::AddressMissing { addr },
        _ if source.raw_os_error() == Some(97) => StartError::AddressMissing { addr }, // EAFNOSUPPORT
        _ => StartError::Bind { addr, source },
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(map)?;
    socket.set_reuse_address(true).map_err(map)?;
    socket.set_reuse_port(true).map_err(map)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(map)?;
    }
    socket.set_nonblocking(true).map_err(map)?;
    socket.bind(&addr.into()).map_err(map)?;
    socket
        .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
        .map_err(map)?;
    Ok(socket.into())
}

/// A serving agent. Dropping it does not stop it; call [`RunningAgent::shutdown`].
#[derive(Debug)]
pub struct RunningAgent {
    pub credential_addrs: Vec<SocketAddr>,
    pub probe_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    tasks: Supervisor,
}

impl RunningAgent {
    /// Serve on already bound listeners with the given upstream; `limits` are the credentials
    /// listeners' (together), the probe and metrics ones get [`ConnectionLimits::admin`].
    pub fn serve(
        config: &ServerConfig,
        listeners: BoundListeners,
        upstream: Arc<dyn Upstream>,
        limits: ConnectionLimits,
    ) -> io::Result<Self> {
        let metrics = Metrics::new();
        let cache = CredentialCache::new(
            CacheConfig {
                retention: config.retention,
                max_entries: config.max_cache_size,
                min_remaining: DEFAULT_MIN_REMAINING,
                refresh_qps: f64::from(config.max_service_qps),
                jitter: true,
            },
            Arc::new(Metered::new(upstream, metrics.clone())),
            Arc::new(SystemClock),
        );
        let stats = Arc::downgrade(&cache);
        metrics.watch_cache(move || stats.upgrade().map(|c| c.stats()).unwrap_or_default());
        let mut tasks = Supervisor::new(config.shutdown_grace);
        for note in &listeners.notes {
            tracing::warn!("{note}");
        }

        let state = Arc::new(CredentialsState::new(
            cache.clone(),
            config.bind_hosts.iter().map(|h| h.ip).collect(),
            metrics.clone(),
        ));
        let credential_limits = server::per_listener(limits, listeners.credentials.len());
        let mut credential_addrs = Vec::new();
        for listener in listeners.credentials {
            let state = state.clone();
            credential_addrs.push(tasks.serve(
                "credentials",
                TcpListener::from_std(listener)?,
                credential_limits,
                |peer| Arc::new(server::Client::new(peer)),
                move |client, req| server::credentials_service(state.clone(), client, req),
            )?);
        }

        let admin = |serve_metrics| {
            let cache = cache.clone();
            AdminState {
                credential_addrs: Arc::new(credential_addrs.clone()),
                metrics: metrics.clone(),
                cache_entries: Arc::new(move || cache.len()),
                serve_metrics,
            }
        };
        // Scraped and probed every few seconds by one or two clients: small limits, so a flood
        // there costs less than one on the credentials port.
        let admin_limits = ConnectionLimits {
            header_read_timeout: limits.header_read_timeout,
            ..ConnectionLimits::admin()
        };
        let mut admin_addrs = Vec::new();
        for (name, listener, state) in [
            ("probes", listeners.probe, admin(false)),
            ("metrics", listeners.metrics, admin(true)),
        ] {
            admin_addrs.push(tasks.serve(
                name,
                TcpListener::from_std(listener)?,
                admin_limits,
                |_peer| (),
                move |(), req| admin::service(state.clone(), req),
            )?);
        }

        // A sweep can wait minutes on the refresh limiter; shutdown cuts it short, which is
        // safe: each refresh runs in its own task.
        tasks.every(config.refresh_interval, move || {
            let cache = cache.clone();
            let metrics = metrics.clone();
            async move { metrics.record_sweep(&cache.refresh_due().await) }
        });

        Ok(Self {
            credential_addrs,
            probe_addr: admin_addrs[0],
            metrics_addr: admin_addrs[1],
            tasks,
        })
    }

    /// Stop accepting, let in-flight requests finish (bounded by the grace period), and return.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_agent_binds_beside_this_one_for_a_rolling_update() {
        let first = bind("127.0.0.1:0".parse().unwrap(), LISTEN_BACKLOG).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, LISTEN_BACKLOG).expect("a second agent shares the port");
        // Both serve: connections go to one or the other until the old one closes.
        drop(first);
        let _client = std::net::TcpStream::connect(addr).expect("the new agent answers");
        drop(second);
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "nothing listens now"
        );
    }
}
