//! Assembling a running webhook: load the certificate and associations and bind both listeners
//! first (so a bad file or a taken port fails before anything serves), then serve until told to
//! stop and drain.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::review::Reviewer;
use crate::server::{self, AdminState};
use crate::store::AssociationLookup;
use pod_identity_associations::{AssociationStore, RolePolicyStore, Sources, StoreError};
use pod_identity_runtime::admin;
use pod_identity_runtime::serve::{ConnectionLimits, Listener};
use pod_identity_runtime::supervisor::Supervisor;
use pod_identity_runtime::tls::{CertFiles, ReloadingCert, TlsError};

/// A caller (the API server) must finish its TLS handshake and request headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the webhook could not start. Each names the file or address that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--watch-custom-resources: no Kubernetes client configuration: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl StartError {
    /// Errors the operator fixes in the configuration or its files (exit 64).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::Tls(_) | StartError::Store(_) | StartError::Kube(_)
        )
    }
}

/// A serving webhook. Call [`RunningWebhook::shutdown`] to stop it.
#[derive(Debug)]
pub struct RunningWebhook {
    pub admission_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    tasks: Supervisor,
}

async fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, StartError> {
    pod_identity_runtime::serve::bind(addr, backlog)
        .map_err(|source| StartError::Bind { addr, source })
}

impl RunningWebhook {
    /// Start the shared association store (file and/or custom resources), bind and serve.
    pub async fn start(config: &ServeConfig) -> Result<Self, StartError> {
        let metrics = Metrics::new();
        let kube = if config.watch_custom_resources {
            Some(kube::Client::try_default().await?)
        } else {
            None
        };
        let (store, sources) = AssociationStore::start(Sources {
            file: config.associations.clone(),
            file_poll_interval: config.reload_interval,
            kube,
        })
        .await?;
        let mut tasks = vec![sources];
        let policy = match &config.role_policy {
            Some(path) => {
                let (policy, policy_tasks) =
                    RolePolicyStore::start(path.clone(), config.reload_interval).await?;
                tasks.push(policy_tasks);
                Some(policy)
            }
            None => None,
        };
        let store = crate::store::guarded(Arc::new(store), policy);
        let mut running = Self::start_with(config, store, metrics).await?;
        for sources in tasks {
            running.tasks.on_shutdown(sources.shutdown());
        }
        Ok(running)
    }

    /// Load the certificate, bind and serve with any association store.
    pub async fn start_with(
        config: &ServeConfig,
        store: Arc<dyn AssociationLookup>,
        metrics: Metrics,
    ) -> Result<Self, StartError> {
        let cert = ReloadingCert::load(CertFiles {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
        })?;
        use pod_identity_runtime::serve::{ADMIN_LISTEN_BACKLOG, LISTEN_BACKLOG};
        let admission = bind(SocketAddr::new(config.address, config.port), LISTEN_BACKLOG).await?;
        let admin = bind(
            SocketAddr::new(config.address, config.metrics_port),
            ADMIN_LISTEN_BACKLOG,
        )
        .await?;
        let mut tasks = Supervisor::new(config.shutdown_grace);
        tasks.spawn(cert.watch(config.reload_interval, metrics.tls_reloads.clone()));
        metrics.store_ready.set(i64::from(store.is_ready()));
        let reviewer = Reviewer::new(store.clone(), config.settings.clone(), metrics.clone());
        // Its clients are the API servers, a few addresses (or one, behind a proxy) each
        // sending many reviews at once: no lower cap per client than per listener. 256
        // connections over TLS are ~25 MiB at worst, beside the bodies' own budget.
        let limits = ConnectionLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: 256,
            max_connections_per_client: 256,
            ..ConnectionLimits::default()
        };
        let admin_limits = ConnectionLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            ..ConnectionLimits::admin()
        };
        let body_limits = server::BodyLimits::new(config.max_body_bytes);
        let admission_addr = tasks.serve(
            "admission",
            Listener::tls(admission, cert.acceptor()),
            limits,
            |peer| peer.ip(),
            move |client, req| {
                server::admission_service(reviewer.clone(), body_limits.clone(), client, req)
            },
        )?;
        let admin_state = AdminState { metrics, store };
        let metrics_addr = tasks.serve(
            "metrics",
            admin,
            admin_limits,
            |_peer| (),
            move |(), req| admin::service(admin_state.clone(), req),
        )?;
        Ok(Self {
            admission_addr,
            metrics_addr,
            tasks,
        })
    }

    /// Stop accepting, finish in-flight requests (within the grace period), stop the watchers
    /// and the association sources.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}
