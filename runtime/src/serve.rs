//! The HTTP/1 accept loop under every listener of the agent, eks-auth and the webhook: connection
//! limits against slow or oversized clients, a bound on open connections, TLS where the listener
//! has a certificate ([`Listener::tls`], the handshake bounded like the request headers), and a
//! graceful stop. Routes and answers are each binary's own `service`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

/// Limits that protect a listener from slow or oversized clients.
///
/// Memory: a connection costs at most about `2 × max_header_bytes` of read buffer (hyper grows
/// it by doubling) plus ~8 KiB of write buffer and task state, so `max_connections` is sized
/// from the manifest's memory limit; see [`ConnectionLimits::worst_case_bytes`]. Neither cap
/// ever stops the accept loop: a listener at a cap closes the oldest connection of the client
/// holding the most, or refuses the new one if it comes from that client, so a slow client
/// cannot make another wait (see [`Clients`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must finish its TLS handshake, and then send its request headers, within this
    /// (slowloris). Also how long a keep-alive connection may sit idle.
    pub header_read_timeout: Duration,
    /// Largest request head; beyond it hyper answers 431.
    pub max_header_bytes: usize,
    /// Connections held at once per listener.
    pub max_connections: usize,
    /// Connections held at once per client IP address; beyond it new ones are closed unread.
    /// On the agent every pod has its own address, but hostNetwork pods all share the node's.
    pub max_connections_per_client: usize,
}

impl Default for ConnectionLimits {
    /// A public API's listener: 16 KiB heads, 1024 connections (~40 MiB at worst), 64 per client.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            max_connections_per_client: 64,
        }
    }
}

impl ConnectionLimits {
    /// A probe or metrics listener: scraped every few seconds by one or two clients, so it
    /// holds few connections with small heads (~2 MiB at worst) and is no easier to exhaust
    /// than the API beside it.
    pub fn admin() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 8 * 1024,
            max_connections: 64,
            max_connections_per_client: 16,
        }
    }

    /// Bytes of hyper's read buffer a connection may fill before its head is refused.
    fn max_buf_bytes(&self) -> usize {
        // hyper refuses a `max_buf_size` under 8 KiB; a little over the head limit lets hyper
        // answer 431 rather than close.
        (self.max_header_bytes + 1024).max(8192)
    }

    /// Most memory the listener's connections hold while reading heads: each one's read buffer
    /// (grown by doubling, so up to twice what it holds), its write buffer and its task.
    pub fn worst_case_bytes(&self) -> usize {
        let per_connection = 2 * self.max_buf_bytes() + 8 * 1024 + 2 * 1024;
        self.max_connections * per_connection
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

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Whether its connections speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Plain HTTP.
impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }
}

/// Connections the kernel holds for `accept`, per listener (tokio's `TcpListener::bind` asks for
/// 1024; Linux caps it at `net.core.somaxconn`, 4096 by default since 5.4).
///
/// A flood whose connections are closed at a cap reconnects at once: the accept queue then
/// holds up to one connection per flooding client, and when it is full the kernel drops a
/// well-behaved client's handshake, which retries after 1 s, then 3 s. Measured on eks-auth
/// under 5,000 slow clients: 1,024 overflowed (108,210 drops in 19 s, exchanges of 1.0 to
/// 2.1 s); 4,096 keeps a queued connection's wait to the loop's accept rate.
pub const LISTEN_BACKLOG: u32 = 4096;

/// The accept queue of probe and metrics listeners. Their connection cap is small (64), so under
/// a flood a deep queue only makes a scrape wait behind thousands of connections that will be
/// closed unread (measured: 36 ms at 1,024 against 953 ms at 4,096 for eks-auth's admin listener
/// under 2,000 slow clients); overflowing it costs a scraper one SYN retry, never a pod.
pub const ADMIN_LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with an accept queue of `backlog` ([`LISTEN_BACKLOG`] or
/// [`ADMIN_LISTEN_BACKLOG`]) and `SO_REUSEADDR` (as `TcpListener::bind`). Inside a tokio runtime.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
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
    let clients = Clients::new(name, limits);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_buf_bytes())
        // A client may shut its write side once the request is sent (nc, some proxies): it still
        // gets its answer. hyper's default closes such a connection at once, dropping a request
        // that was waiting on EKS Auth and its audit line with it.
        .half_close(true)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = accept(&listener, name) => accepted,
        };
        let Some(slot) = clients.admit(peer.ip()) else {
            continue;
        };
        let svc = service.clone();
        let ctx = context(peer);
        let busy = slot.busy.clone();
        let svc = service_fn(move |req| {
            let svc = svc.clone();
            let ctx = ctx.clone();
            let busy = Busy::new(busy.clone());
            async move {
                let answer = svc(ctx, req).await;
                drop(busy);
                Ok::<_, Infallible>(answer)
            }
        });
        let Some(acceptor) = &tls else {
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
            tokio::spawn(async move {
                if let Some(result) = slot.unless_evicted(conn).await {
                    ended(name, peer, result);
                }
            });
            continue;
        };
        // The handshake runs on the connection's own task; the watcher counts it as open
        // from now, so a stop waits for it too.
        let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(slot.unless_evicted(async move {
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
        }));
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

/// The connections a listener holds, by client address, oldest first.
///
/// The caps never make the accept loop wait: a semaphore taken before `accept` lets thousands of
/// slow clients hold every permit while a pod's request waits in the kernel's queue for their
/// header timeouts. Instead every connection is accepted and then judged at once:
/// - a client at its own cap has the new connection closed unread (cheap, and the client only
///   hurts itself, or the neighbours sharing its address);
/// - at the listener's cap, a client holding about as many as the busiest has it closed too,
///   and any other gets in by closing the oldest *idle* connection of the busiest client that
///   has one (waiting for a request's head, or between requests; never one serving a request,
///   whose answer, and on eks-auth whose credentials, would be lost). A client with few
///   connections is thus never shut out by clients with many (only by as many clients as the
///   cap, each with one, which on a node's few hundred pods cannot happen).
///
/// Closing unread matters: evicting an old connection for every new one from a flood turns each
/// reconnection into a full read, and the flood's reconnect loop into a CPU storm that queues a
/// pod's connection behind it (measured: 2 s fetches, see docs/benchmarks-log.md).
struct Clients {
    name: &'static str,
    limits: ConnectionLimits,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    total: usize,
    by_client: HashMap<IpAddr, VecDeque<Held>>,
    refused: u64,
    evicted: u64,
    warned_at: Option<Instant>,
}

/// A connection in the table: its id, what closes it, and whether it is serving a request.
struct Held {
    id: u64,
    evict: Arc<Notify>,
    busy: Arc<AtomicBool>,
}

/// One admitted connection: closed when its [`Notify`] fires, forgotten when dropped.
struct Slot {
    clients: Arc<Clients>,
    client: IpAddr,
    id: u64,
    evict: Arc<Notify>,
    busy: Arc<AtomicBool>,
}

/// Marks a connection busy while its request is served.
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn new(flag: Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How often, at most, a listener at its caps says so at `warn`.
const LIMIT_WARN_EVERY: Duration = Duration::from_secs(10);

impl Clients {
    fn new(name: &'static str, limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            name,
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    /// Count a new connection from `client`, or `None`: close it unread.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        // One client, however it reaches us (an IPv4-mapped IPv6 address is the IPv4 one).
        let client = client.to_canonical();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let own = table.by_client.get(&client).map_or(0, VecDeque::len);
        if own >= self.limits.max_connections_per_client.max(1) {
            self.note_limit(&mut table, client, false);
            return None;
        }
        if table.total >= self.limits.max_connections.max(1) {
            // Evict only for a client at least two behind the one it takes from: between clients
            // within one of each other a swap changes nothing but costs a connection, and a flood
            // that reconnects at once would keep swapping forever. The busiest first, and only
            // an idle connection.
            // One pass, no allocation: this runs for every connection a flood opens.
            let busiest_idle = table
                .by_client
                .iter()
                .filter(|(_, held)| held.len() >= own + 2)
                .filter(|(_, held)| held.iter().any(|h| !h.busy.load(Ordering::Acquire)))
                .max_by_key(|(_, held)| held.len())
                .map(|(ip, _)| *ip);
            if !busiest_idle.is_some_and(|ip| self.evict_oldest_idle(&mut table, ip)) {
                self.note_limit(&mut table, client, false);
                return None;
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        table.total += 1;
        let evict = Arc::new(Notify::new());
        let busy = Arc::new(AtomicBool::new(false));
        table.by_client.entry(client).or_default().push_back(Held {
            id,
            evict: evict.clone(),
            busy: busy.clone(),
        });
        Some(Slot {
            clients: self.clone(),
            client,
            id,
            evict,
            busy,
        })
    }

    /// Close `client`'s oldest connection that is not serving a request; false if all are.
    fn evict_oldest_idle(&self, table: &mut Table, client: IpAddr) -> bool {
        let Some(held) = table.by_client.get_mut(&client) else {
            return false;
        };
        let Some(at) = held.iter().position(|h| !h.busy.load(Ordering::Acquire)) else {
            return false;
        };
        let Some(gone) = held.remove(at) else {
            return false;
        };
        if held.is_empty() {
            table.by_client.remove(&client);
        }
        table.total -= 1;
        // A stored permit: the connection closes even if its task has not started yet.
        gone.evict.notify_one();
        self.note_limit(table, client, true);
        true
    }

    /// Count a refusal or eviction; say so at `debug` each time, at `warn` once in a while (a
    /// line per connection would let a flood fill the log).
    fn note_limit(&self, table: &mut Table, client: IpAddr, evicted: bool) {
        if evicted {
            table.evicted += 1;
        } else {
            table.refused += 1;
        }
        tracing::debug!(listener = self.name, client.addr = %client, evicted, "connection limit reached");
        let now = Instant::now();
        if table
            .warned_at
            .is_none_or(|at| now.duration_since(at) >= LIMIT_WARN_EVERY)
        {
            table.warned_at = Some(now);
            tracing::warn!(
                listener = self.name,
                client.addr = %client,
                refused_total = table.refused,
                evicted_total = table.evicted,
                max_connections = self.limits.max_connections,
                max_connections_per_client = self.limits.max_connections_per_client,
                "connection limit reached: closing connections of the busiest clients"
            );
        }
    }

    fn forget(&self, client: IpAddr, id: u64) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(held) = table.by_client.get_mut(&client) else {
            return;
        };
        // Usually the oldest; an evicted connection is already gone from the table.
        let Some(at) = held.iter().position(|h| h.id == id) else {
            return;
        };
        held.remove(at);
        if held.is_empty() {
            table.by_client.remove(&client);
        }
        table.total -= 1;
    }
}

impl Slot {
    /// Run `conn` until it ends (`Some`) or the connection is evicted (`None`: dropping `conn`
    /// closes the socket).
    async fn unless_evicted<T>(self, conn: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = conn => Some(out),
            () = self.evict.notified() => None,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.clients.forget(self.client, self.id);
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn clients(max: usize, per_client: usize) -> Arc<Clients> {
        Clients::new(
            "test",
            ConnectionLimits {
                max_connections: max,
                max_connections_per_client: per_client,
                ..ConnectionLimits::default()
            },
        )
    }

    fn held(clients: &Clients, client: IpAddr) -> usize {
        let table = clients.table.lock().unwrap();
        table.by_client.get(&client).map_or(0, VecDeque::len)
    }

    #[test]
    fn a_client_at_its_cap_has_new_connections_refused_and_others_still_get_in() {
        let clients = clients(100, 2);
        let first = clients.admit(ip(2)).unwrap();
        let _second = clients.admit(ip(2)).unwrap();
        assert!(clients.admit(ip(2)).is_none());
        assert!(clients.admit(ip(3)).is_some());
        // One of its own closes: the client may connect again.
        drop(first);
        assert!(clients.admit(ip(2)).is_some());
    }

    #[tokio::test]
    async fn at_the_listeners_cap_a_client_with_fewer_closes_the_busiest_clients_oldest() {
        let clients = clients(4, 10);
        let flood: Vec<Slot> = (0..3).map(|_| clients.admit(ip(2)).unwrap()).collect();
        let _other = clients.admit(ip(3)).unwrap();
        // Full. The busiest client gets no more.
        assert!(clients.admit(ip(2)).is_none());
        // One two behind it gets in, and the busiest's oldest connection is told to close.
        let _second = clients.admit(ip(3)).expect("two behind the busiest");
        assert_eq!((held(&clients, ip(2)), held(&clients, ip(3))), (2, 2));
        let mut flood = flood.into_iter();
        let oldest = flood.next().unwrap();
        tokio::time::timeout(Duration::from_secs(1), oldest.evict.notified())
            .await
            .expect("the oldest was evicted");
        drop(oldest);
        assert_eq!(
            held(&clients, ip(2)),
            2,
            "an evicted slot is forgotten once"
        );
        // Now level: swapping would change nothing, so neither gets more.
        assert!(clients.admit(ip(3)).is_none());
        // A pod with none still gets in.
        let pod = clients.admit(ip(5)).expect("a client with none is served");
        drop(pod);
        assert_eq!(clients.table.lock().unwrap().total, 3);
    }

    #[tokio::test]
    async fn a_connection_serving_a_request_is_never_evicted() {
        let clients = clients(3, 10);
        let busy: Vec<Slot> = (0..2).map(|_| clients.admit(ip(2)).unwrap()).collect();
        let idle = clients.admit(ip(2)).unwrap();
        let marks: Vec<Busy> = busy.iter().map(|s| Busy::new(s.busy.clone())).collect();
        // Full; the busiest's oldest two are serving, so its idle third goes.
        let _pod = clients.admit(ip(3)).expect("an idle connection makes room");
        tokio::time::timeout(Duration::from_secs(1), idle.evict.notified())
            .await
            .expect("the idle one was evicted");
        drop(idle);
        // Now every connection of the busiest is serving: the newcomer is refused instead.
        assert!(clients.admit(ip(4)).is_none());
        for slot in &busy {
            assert!(
                tokio::time::timeout(Duration::from_millis(50), slot.evict.notified())
                    .await
                    .is_err(),
                "a serving connection was told to close"
            );
        }
        // Done serving: idle again, and evictable.
        drop(marks);
        assert!(clients.admit(ip(4)).is_some());
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_same_client() {
        let clients = clients(100, 1);
        let _v4 = clients.admit(ip(2)).unwrap();
        let mapped = "::ffff:127.0.0.2".parse::<IpAddr>().unwrap();
        assert!(clients.admit(mapped).is_none());
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
