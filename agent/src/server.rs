//! The agent's HTTP surfaces: the credentials endpoint on every bind host, and what the probe
//! (localhost) and metrics listeners say of the agent (their routes are the service shell's,
//! `pod_identity_runtime::admin`). Routes and responses only; the decisions live in
//! `validate` (what is refused) and `cache` (what is served).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use pod_identity_contracts::Secret;
use pod_identity_contracts::constants::{CREDENTIALS_PATH, MAX_TOKEN_BYTES};
use pod_identity_contracts::credentials::AgentErrorBody;
use pod_identity_contracts::log_schema::{self, key};
use pod_identity_runtime::admin::{Check, Health};
use pod_identity_runtime::log_format::DirectLine;
use pod_identity_runtime::logger;
use tracing::Level;

use crate::cache::{Answer, CacheOutcome, CredentialCache, TokenInfo};
use crate::metrics::{Metrics, RequestCounters};
use crate::upstream::Metered;
use crate::validate::{self, Refusal, TokenLabels};

pub type Body = Full<Bytes>;

pub use pod_identity_runtime::serve::{ConnectionLimits, serve};

/// Connections the credentials listeners hold at once, across every bind host. With heads of at
/// most [`MAX_CREDENTIALS_HEAD_BYTES`] that is ~26 MiB at worst, beside an agent of ~25 MiB
/// inside its 96 Mi limit; a node runs at most a few hundred pods, each asking one at a time.
pub const MAX_CREDENTIALS_CONNECTIONS: usize = 512;
/// A pod's request head: its token (at most `MAX_TOKEN_BYTES`) and a few small headers.
pub const MAX_CREDENTIALS_HEAD_BYTES: usize = MAX_TOKEN_BYTES + 4 * 1024;
/// Connections from one address. Each pod has its own, but hostNetwork pods share the node's:
/// enough for all of those at once, and at the cap the client's oldest is closed, not the new.
pub const MAX_CREDENTIALS_CONNECTIONS_PER_CLIENT: usize = 64;

/// The credentials listeners' limits (all of them together; see [`per_listener`]).
pub fn credentials_limits(header_read_timeout: Duration) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout,
        max_header_bytes: MAX_CREDENTIALS_HEAD_BYTES,
        max_connections: MAX_CREDENTIALS_CONNECTIONS,
        max_connections_per_client: MAX_CREDENTIALS_CONNECTIONS_PER_CLIENT,
    }
}

/// `limits` shared by `listeners` listeners (one per bind host), so that together they hold
/// no more than `limits` allow.
pub fn per_listener(limits: ConnectionLimits, listeners: usize) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: (limits.max_connections / listeners.max(1)).max(1),
        ..limits
    }
}

/// State of the credentials endpoint.
#[derive(Debug)]
pub struct CredentialsState {
    pub cache: Arc<CredentialCache<Metered>>,
    pub bind_hosts: Vec<IpAddr>,
    pub metrics: Metrics,
    /// The counters every answer bumps, resolved once.
    pub counters: RequestCounters,
}

impl CredentialsState {
    pub fn new(
        cache: Arc<CredentialCache<Metered>>,
        bind_hosts: Vec<IpAddr>,
        metrics: Metrics,
    ) -> Self {
        Self {
            counters: RequestCounters::new(&metrics),
            cache,
            bind_hosts,
            metrics,
        }
    }
}

/// The client of a connection, with its address as logged, rendered once per connection.
#[derive(Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub logged: Box<str>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            logged: addr.to_string().into_boxed_str(),
        }
    }
}

/// Serve one request on a credentials listener.
pub async fn credentials_service(
    state: Arc<CredentialsState>,
    client: Arc<Client>,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.uri().path() != CREDENTIALS_PATH {
        return not_found();
    }
    let started = Instant::now();
    match credentials(&state, &req).await {
        Ok(served) => {
            log_served(&served, elapsed_ms(started), &client);
            state.counters.ok.inc();
            json_response(StatusCode::OK, served.fetched.body.clone())
        }
        Err(failure) => {
            let labels = failure.labels.as_deref();
            tracing::warn!(
                { key::HTTP_STATUS } = failure.status,
                { key::LATENCY_MS } = elapsed_ms(started),
                { key::ERROR_CODE } = failure.code,
                { key::ERROR_MESSAGE } = %failure.detail,
                { key::CACHE } = failure.outcome,
                { key::TOKEN_FINGERPRINT } = labels.map_or("", TokenLabels::fingerprint),
                { key::K8S_NAMESPACE } = labels.map_or("", TokenLabels::namespace),
                { key::K8S_SERVICE_ACCOUNT } = labels.map_or("", TokenLabels::service_account),
                { key::K8S_POD } = labels.map_or("", TokenLabels::pod),
                { key::CLIENT_ADDR } = &*client.logged,
                "{}",
                log_schema::CREDENTIALS_REFUSED
            );
            let body = serde_json::to_vec(&AgentErrorBody {
                code: failure.code.to_string(),
                message: failure.message,
            })
            .unwrap_or_default();
            let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_GATEWAY);
            state
                .metrics
                .http_response
                .with_label_values(&[status.as_str()])
                .inc();
            json_response(status, Bytes::from(body))
        }
    }
}

/// The line of an answered request. The hottest line the agent logs (every cache hit), so with
/// JSON logs it is written straight to the log writer; the bytes are those of the `tracing` event
/// ([`log_served_event`]), which text logs (and a test) still use. Both, and the filter check, are
/// expanded from the one list of the line's fields, `served_line!`.
fn log_served(served: &Served, latency_ms: f64, client: &Client) {
    if !served_line_enabled() {
        return;
    }
    let direct = logger::write_direct(&Level::INFO, |line| {
        served_fields(line, served, latency_ms, client);
    });
    if !direct {
        log_served_event(served, latency_ms, client);
    }
}

/// The served line's values, borrowed from the answer.
struct ServedLine<'a> {
    http_status: u64,
    latency_ms: f64,
    cache: &'a str,
    token_fingerprint: &'a str,
    k8s_namespace: &'a str,
    k8s_service_account: &'a str,
    k8s_pod: &'a str,
    k8s_pod_uid: &'a str,
    association_id: &'a str,
    role_arn: &'a str,
    access_key_id: &'a str,
    expiration: &'a str,
    client_addr: &'a str,
}

impl<'a> ServedLine<'a> {
    #[inline(always)]
    fn of(served: &'a Served, latency_ms: f64, client: &'a Client) -> Self {
        let (fetched, labels) = (&served.fetched, &served.labels);
        Self {
            http_status: 200,
            latency_ms,
            cache: served.outcome.as_str(),
            token_fingerprint: labels.fingerprint(),
            k8s_namespace: labels.namespace(),
            k8s_service_account: labels.service_account(),
            k8s_pod: labels.pod(),
            k8s_pod_uid: labels.pod_uid(),
            association_id: &fetched.association_id,
            role_arn: &fetched.assumed_role_arn,
            access_key_id: &fetched.log_access_key_id,
            expiration: &fetched.log_expiration,
            client_addr: &client.logged,
        }
    }
}

/// The served line, defined once: after its message ([`log_schema::CREDENTIALS_SERVED`]), its
/// fields in the order they are written, each as its name in [`key`], the [`DirectLine`] method
/// that writes it and the [`ServedLine`] field it takes. `served_line!(then!(args))` expands
/// `then!(args; fields)`: the line written straight ([`served_fields`]), the `tracing` event
/// ([`log_served_event`]) and the filter check ([`served_line_enabled`]) are all made so.
macro_rules! served_line {
    ($then:ident!($($args:tt)*)) => {
        $then!($($args)*;
            HTTP_STATUS u64 http_status,
            LATENCY_MS f64 latency_ms,
            CACHE str cache,
            TOKEN_FINGERPRINT str token_fingerprint,
            K8S_NAMESPACE str k8s_namespace,
            K8S_SERVICE_ACCOUNT str k8s_service_account,
            K8S_POD str k8s_pod,
            K8S_POD_UID str k8s_pod_uid,
            ASSOCIATION_ID str association_id,
            ROLE_ARN str role_arn,
            ACCESS_KEY_ID str access_key_id,
            EXPIRATION str expiration,
            CLIENT_ADDR str client_addr,
        )
    };
}

macro_rules! served_direct {
    ($line:ident, $v:ident; $($key:ident $kind:ident $field:ident,)*) => {
        $line
            .str(key::MESSAGE, log_schema::CREDENTIALS_SERVED)
            $(.$kind(key::$key, $v.$field))*
    };
}

macro_rules! served_event {
    ($v:ident; $($key:ident $kind:ident $field:ident,)*) => {
        tracing::info!($({ key::$key } = $v.$field,)* "{}", log_schema::CREDENTIALS_SERVED)
    };
}

macro_rules! served_enabled {
    (; $($key:ident $kind:ident $field:ident,)*) => {
        tracing::enabled!(
            kind: tracing::metadata::Kind::EVENT,
            Level::INFO,
            message,
            $({ key::$key } = (),)*
        )
    };
}

/// Whether the filter lets the served line through, asked as the event's own callsite would be:
/// an event at INFO here, with its fields (a filter directive may name fields).
fn served_line_enabled() -> bool {
    served_line!(served_enabled!())
}

fn served_fields(line: &mut DirectLine<'_>, served: &Served, latency_ms: f64, client: &Client) {
    let v = ServedLine::of(served, latency_ms, client);
    served_line!(served_direct!(line, v));
}

fn log_served_event(served: &Served, latency_ms: f64, client: &Client) {
    let v = ServedLine::of(served, latency_ms, client);
    served_line!(served_event!(v));
}

struct Served {
    fetched: Arc<crate::upstream::Fetched>,
    outcome: CacheOutcome,
    labels: Arc<TokenLabels>,
}

struct Failure {
    status: u16,
    code: String,
    /// What the pod is told.
    message: String,
    /// What the audit line says: the same for the agent's own refusals; EKS Auth's full answer
    /// or the transport error for upstream failures.
    detail: String,
    outcome: &'static str,
    /// What is known of the token: the fingerprint alone if it did not parse.
    labels: Option<Arc<TokenLabels>>,
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure {
            status: r.status,
            code: r.code.to_string(),
            detail: r.message.clone(),
            message: r.message,
            outcome: "none",
            labels: r
                .fingerprint
                .map(|f| Arc::new(TokenLabels::new(&f, "", "", "", ""))),
        }
    }
}

/// A request for a token the cache knows (cached, or being fetched) needs the Host check and the
/// cache's record of the token (its bytes, validity window and log labels); only a request the
/// cache cannot answer from that parses and checks the token.
async fn credentials(state: &CredentialsState, req: &Request<Incoming>) -> Result<Served, Failure> {
    validate::check_host(req.uri().host(), req.headers(), &state.bind_hosts)?;
    // The header's bytes as they are: only a token that passed every check below was cached or
    // sent upstream, and the cache answers only for those very bytes, so anything else is
    // unknown and checked.
    if let Some(value) = req.headers().get(AUTHORIZATION)
        && let Some((answer, labels)) = state.cache.get_known(value.as_bytes().trim_ascii()).await
    {
        return served(answer, labels);
    }
    let token = validate::check_token(req.headers(), Timestamp::now().as_second())?;
    let claims = token.claims;
    let labels = Arc::new(TokenLabels::of(&token.fingerprint, &claims));
    let info = TokenInfo {
        key: token.key,
        token: Arc::new(Secret::new(token.raw)),
        token_exp: Timestamp::from_second(claims.exp).unwrap_or(Timestamp::MAX),
        // An `nbf` out of range was in the past: parse_token accepted the token.
        not_before: claims.nbf.and_then(|nbf| Timestamp::from_second(nbf).ok()),
        labels: Arc::clone(&labels),
    };
    let answer = state.cache.get(info).await;
    served(answer, labels)
}

/// Turn the cache's answer into what the request logs and returns (the cache counted it).
fn served(answer: Answer, labels: Arc<TokenLabels>) -> Result<Served, Failure> {
    match answer {
        Ok((fetched, outcome)) => Ok(Served {
            fetched,
            outcome,
            labels,
        }),
        Err(err) => Err(Failure {
            status: err.status(),
            code: err.code().to_string(),
            message: err.for_pod().to_string(),
            detail: err.message,
            outcome: "error",
            labels: Some(labels),
        }),
    }
}

fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The official agent answers unknown paths with Go's stock 404; its probes rely on it.
pub use pod_identity_runtime::admin::not_found;

/// State of the probe and metrics listeners.
#[derive(Clone)]
pub struct AdminState {
    /// Credentials listeners; ready when each answers.
    pub credential_addrs: Arc<Vec<SocketAddr>>,
    pub metrics: Metrics,
    pub cache_entries: Arc<dyn Fn() -> usize + Send + Sync>,
    pub serve_metrics: bool,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("credential_addrs", &self.credential_addrs)
            .field("serve_metrics", &self.serve_metrics)
            .finish_non_exhaustive()
    }
}

/// `/healthz` and `/readyz` alike, with the official agent's answers: like it, both probe the
/// credentials listeners, since a live process whose listeners stopped answering must be
/// restarted, not kept. `/metrics` on the metrics listener only.
impl Health for AdminState {
    async fn live(&self) -> Check {
        match probe_listeners(&self.credential_addrs).await {
            Ok(()) => Check::new(StatusCode::OK, ""),
            Err(ProbeFailure::Timeout) => Check::new(
                StatusCode::REQUEST_TIMEOUT,
                "credentials listener timed out\n",
            ),
            Err(ProbeFailure::Failed) => Check::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error occurred\n",
            ),
        }
    }

    async fn ready(&self) -> Check {
        self.live().await
    }

    fn metrics(&self) -> Option<Vec<u8>> {
        if !self.serve_metrics {
            return None;
        }
        self.metrics
            .cache_entries
            .set(i64::try_from((self.cache_entries)()).unwrap_or(i64::MAX));
        Some(self.metrics.encode())
    }
}

#[derive(Debug)]
enum ProbeFailure {
    Timeout,
    Failed,
}

/// Each credentials listener must answer `GET /` with 404 within 2 s.
async fn probe_listeners(addrs: &[SocketAddr]) -> Result<(), ProbeFailure> {
    for addr in addrs {
        match tokio::time::timeout(Duration::from_secs(2), probe_one(*addr)).await {
            Err(_) => return Err(ProbeFailure::Timeout),
            Ok(Ok(StatusCode::NOT_FOUND)) => {}
            Ok(Ok(status)) => {
                tracing::warn!(addr = %addr, http.status = status.as_u16(), "probe: unexpected answer");
                return Err(ProbeFailure::Failed);
            }
            Ok(Err(e)) => {
                tracing::warn!(addr = %addr, error = %e, "probe: listener does not answer");
                return Err(ProbeFailure::Failed);
            }
        }
    }
    Ok(())
}

async fn probe_one(
    addr: SocketAddr,
) -> Result<StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let req = Request::get("/")
        .header(HOST, host)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    driver.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pod_identity_contracts::log_schema::AgentRequestLine;
    use pod_identity_runtime::log_format::{JsonLines, direct_line};

    use super::*;
    use crate::upstream::Fetched;

    fn served(role_arn: &str, pod: &str) -> Served {
        Served {
            fetched: Arc::new(Fetched::from_parts(
                Bytes::from_static(b"{}"),
                Timestamp::from_second(1_800_000_000).unwrap(),
                "ASIAEXAMPLEKEY123456".to_string(),
                "a-0123456789abcdef".to_string(),
                role_arn.to_string(),
            )),
            outcome: CacheOutcome::Hit,
            labels: Arc::new(TokenLabels::new(
                "sha256:0123456789ab",
                "team-a",
                "reader",
                pod,
                "0f1e2d3c-0000-4000-8000-000000000001",
            )),
        }
    }

    /// The line without its timestamp, which differs between two lines.
    fn untimed(line: &str) -> String {
        let rest = line.strip_prefix("{\"timestamp\":\"").expect(line);
        rest.split_once('"').expect(line).1.to_string()
    }

    /// The written-straight line and the `tracing` event it stands for are the same bytes, values
    /// that need escaping included.
    #[test]
    fn the_direct_served_line_is_the_tracing_line() {
        let client = Client::new("10.0.0.7:41234".parse().unwrap());
        for (role, pod, latency) in [
            ("arn:aws:iam::111122223333:role/app", "web-0", 0.012),
            (
                "arn:with \"quotes\" \\ and \u{1} control",
                "pod\n\t",
                1234.5,
            ),
            ("", "", 0.0),
        ] {
            let served = served(role, pod);
            let mut direct = String::new();
            assert!(direct_line(
                &Level::INFO,
                |line| served_fields(line, &served, latency, &client),
                |line| direct.push_str(line),
            ));

            let out = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&out);
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || WriteTo(Arc::clone(&sink)))
                .json()
                .event_format(JsonLines::default())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                log_served_event(&served, latency, &client);
            });
            let event = String::from_utf8(out.lock().unwrap().clone()).unwrap();

            assert!(
                direct.ends_with("}\n") && direct.lines().count() == 1,
                "{direct}"
            );
            assert_eq!(untimed(&direct), untimed(&event));
            let parsed: AgentRequestLine = serde_json::from_str(&direct).unwrap();
            assert_eq!(parsed.pod.role_arn.as_deref(), Some(role));
            assert_eq!(parsed.pod.k8s_pod.as_deref(), Some(pod));
            assert_eq!(
                parsed.head.message.as_deref(),
                Some(log_schema::CREDENTIALS_SERVED)
            );
            assert_eq!(parsed.answer.http_status, Some(200));
            assert_eq!(parsed.cache.as_deref(), Some("hit"));
        }
    }

    /// Level and field directives decide for the written-straight line as for the event, through
    /// the subscriber the binary installs (the filter beside the library caps).
    #[test]
    fn the_served_line_obeys_the_filter_as_the_event_would() {
        for (filter, expected) in [
            ("info", true),
            ("warn", false),
            ("warn,pod_identity_agent::server=info", true),
            ("info,pod_identity_agent::server=warn", false),
            // Only events with an `error.code` field at info: the served line has none.
            ("warn,pod_identity_agent::server[{error.code}]=info", false),
            ("warn,pod_identity_agent::server[{cache}]=info", true),
        ] {
            let subscriber = pod_identity_runtime::logger::subscriber(
                tracing_subscriber::EnvFilter::new(filter),
                pod_identity_runtime::logger::LogFormat::Json,
                std::io::sink,
            );
            let enabled = tracing::subscriber::with_default(subscriber, served_line_enabled);
            assert_eq!(enabled, expected, "{filter}");
        }
    }

    struct WriteTo(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for WriteTo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
