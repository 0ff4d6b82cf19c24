//! The HTTP/1 accept loop under every listener of the agent, eks-auth and the webhook: connection
//! limits against slow or oversized clients, a bound on open connections, TLS where the listener
//! has a certificate ([`Listener::tls`], the handshake bounded like the request headers), and a
//! graceful stop. Routes and answers are each binary's own `service`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Limits that protect a listener from slow or oversized clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must finish its TLS handshake, and then send its request headers, within this
    /// (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head; beyond it hyper answers 431.
    pub max_header_bytes: usize,
    /// Connections served at once per listener; more wait in the accept queue.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
        }
    }
}

/// A bound socket and, when it serves HTTPS, the TLS its connections start with.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("tcp", &self.tcp)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Listener {
    /// Connections on `tcp` speak TLS through `acceptor` (e.g. [`crate::tls::ReloadingCert`]'s).
    pub fn tls(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        Self {
            tcp,
            tls: Some(acceptor),
        }
    }
}

/// Plain HTTP.
impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }
}

/// The next connection on `listener`, with `TCP_NODELAY` set (answers are small and written
/// whole). An accept error (EMFILE and friends) is logged and retried after a short pause
/// instead of spinning. Cancel-safe.
pub async fn accept(listener: &TcpListener, name: &'static str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accept connections on `listener` and serve each request with `service`, handing it what
/// `context` made of the connection's peer once per connection, until `shutdown` flips; then let
/// open connections finish their current request within `grace`.
pub async fn serve<Ctx, C, F, Fut, B>(
    name: &'static str,
    listener: impl Into<Listener>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    context: Ctx,
    service: F,
) where
    Ctx: Fn(SocketAddr) -> C,
    C: Clone + Send + Sync + 'static,
    F: Fn(C, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Listener { tcp: listener, tls } = listener.into();
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) * 2)
        // A client may shut its write side once the request is sent (nc, some proxies): it still
        // gets its answer. hyper's default closes such a connection at once, dropping a request
        // that was waiting on EKS Auth and its audit line with it.
        .half_close(true)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = accept(&listener, name) => accepted,
        };
        let svc = service.clone();
        let ctx = context(peer);
        let svc = service_fn(move |req| {
            let svc = svc.clone();
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(svc(ctx, req).await) }
        });
        let Some(acceptor) = &tls else {
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
            tokio::spawn(async move {
                ended(name, peer, conn.await);
                drop(permit);
            });
            continue;
        };
        // The handshake runs on the connection's own task; the watcher counts it as open
        // from now, so a stop waits for it too.
        let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    ended(name, peer, watcher.watch(conn).await);
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = name, client.addr = %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(listener = name, client.addr = %peer, "TLS handshake timed out");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            grace_ms = grace.as_millis() as u64,
            "connections still open after the grace period; closing them"
        );
    }
}

fn ended(name: &'static str, peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(listener = name, client.addr = %peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{CertFiles, ReloadingCert};
    use pod_identity_test_support::tls::TestCa;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_tls_listener_serves_clients_that_trust_its_ca_and_drops_silent_ones() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        ca.issue().write(&files.cert, &files.key);
        let cert = ReloadingCert::load(files).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(
            "test",
            Listener::tls(tcp, cert.acceptor()),
            limits,
            stopped,
            Duration::from_secs(1),
            |peer| peer,
            |peer: SocketAddr, _req| async move { Response::new(peer.ip().to_string()) },
        ));
        let url = format!("https://127.0.0.1:{}/", addr.port());

        let answer = ca.https_client().get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "127.0.0.1");
        // Plain HTTP on the TLS port is no request.
        let plain = reqwest::Client::builder().no_proxy().build().unwrap();
        let http = format!("http://127.0.0.1:{}/", addr.port());
        assert!(plain.get(&http).send().await.is_err());
        // Nor is TLS that trusts another CA.
        let other = TestCa::named("another CA").https_client();
        let e = other.get(&url).send().await.unwrap_err();
        assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
        // A client that never starts its handshake is closed after the header timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the loop stops")
            .unwrap();
    }

    /// An answer that takes a moment, as one waiting on EKS Auth does.
    async fn slow(_: (), _: Request<Incoming>) -> Response<String> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Response::new("answered".to_string())
    }

    #[tokio::test]
    async fn a_client_that_shuts_its_write_side_still_gets_its_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(
            "test",
            listener,
            ConnectionLimits::default(),
            stopped,
            Duration::from_secs(1),
            |_| (),
            slow,
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
        assert!(answer.ends_with("answered"), "{answer:?}");
        stop.send(true).unwrap();
        server.await.unwrap();
    }
}
