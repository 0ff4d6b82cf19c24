//! A fake EKS Auth upstream on `127.0.0.1:0`, speaking the real rest-json wire format.
//!
//! `POST /clusters/{clusterName}/assume-role-for-pod-identity` with `{"token": "..."}` answers
//! as AWS does: a 200 [`AssumeRoleForPodIdentityResponse`], or an error with the
//! `x-amzn-errortype` header, a `{"message": "..."}` body and the status of its [`ErrorKind`].
//! Each call consumes one scripted [`Behavior`]; when the script runs out, the default one
//! (settable at runtime) applies. Every call is recorded (cluster, token fingerprint, whether it
//! was SigV4-signed, when), so tests assert on what the client did, not only on what it got.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use pod_identity_contracts::eks_auth::ErrorKind;
//! use pod_identity_test_support::fake_eks_auth::{Behavior, FakeEksAuth};
//! let fake = FakeEksAuth::builder()
//!     .cluster("lab")
//!     .script(vec![Behavior::fail(ErrorKind::Throttling, "slow down"), Behavior::Succeed])
//!     .start()
//!     .await;
//! // point the client at fake.url() ...
//! fake.wait_for_calls(2, Duration::from_secs(5)).await.unwrap();
//! fake.shutdown().await;
//! # }
//! ```
//!
//! The token is parsed without verifying its signature (as the contracts' [`UnverifiedToken`]
//! does) only to fill in the subject; a wrong cluster name gives `ResourceNotFoundException`,
//! an unparseable, mis-shaped or wrong-audience token `InvalidTokenException`, an expired one
//! `ExpiredTokenException`. Scripted failures (`Fail`, `Garbage`, `Hang`) answer before any of
//! those checks.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use pod_identity_contracts::association::{association_arn, derive_association_id};
use pod_identity_contracts::constants::AUDIENCE;
use pod_identity_contracts::eks_auth::{
    AssumeRoleForPodIdentityResponse, AssumedRoleUser, Credentials, ERROR_TYPE_HEADER, ErrorKind,
    PodIdentityAssociationRef, Subject,
};
use pod_identity_contracts::{Secret, UnverifiedToken, fingerprint};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{TimedOut, lock};

/// Account of every role and association the fake hands out.
pub const ACCOUNT_ID: &str = "111122223333";
/// Region in the association ARNs the fake hands out.
pub const REGION: &str = "us-west-2";
/// Cluster name the fake serves unless told otherwise.
pub const DEFAULT_CLUSTER: &str = "lab";
/// Lifetime of issued credentials unless told otherwise (as EKS Auth: 6 hours).
pub const DEFAULT_CREDENTIALS_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// What the fake does with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Check the cluster and token, then return fresh credentials.
    Succeed,
    /// Answer with this modeled error and message, whatever the request.
    Fail(ErrorKind, String),
    /// Answer with exactly this status, body and `Content-Type` (none if `None`).
    Garbage {
        status: u16,
        body: String,
        content_type: Option<String>,
    },
    /// Wait this long (on top of the builder's latency), then behave as `Succeed`.
    Delay(Duration),
    /// Never answer (until the fake shuts down).
    Hang,
    /// As `Succeed`, but the credentials expired a minute ago.
    ExpiredCredentials,
    /// As `Succeed`, but without `credentials.sessionToken`.
    MissingField,
}

impl Behavior {
    pub fn fail(kind: ErrorKind, message: impl Into<String>) -> Self {
        Behavior::Fail(kind, message.into())
    }

    /// A `Garbage` answer labelled `application/json`.
    pub fn garbage(status: u16, body: impl Into<String>) -> Self {
        Behavior::Garbage {
            status,
            body: body.into(),
            content_type: Some("application/json".into()),
        }
    }
}

/// One call as the fake saw it, recorded before it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `{clusterName}` from the path.
    pub cluster: String,
    /// `sha256:…` fingerprint of the `token` field, if the body had one.
    pub token_fingerprint: Option<String>,
    /// Whether an `Authorization: AWS4-HMAC-SHA256 …` header was present (it is not checked).
    pub signed: bool,
    /// `sha256:…` fingerprint of the `x-amz-security-token` header (the caller's session token),
    /// if it sent one.
    pub security_token_fingerprint: Option<String>,
    pub at: Instant,
}

/// Credentials the fake issued, so tests can check that exactly these reached the pod, and
/// that none of their secrets reached a log (see [`FakeEksAuth::issued_secrets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Unix seconds.
    pub expiration: i64,
    pub namespace: String,
    pub service_account: String,
    pub assumed_role_arn: String,
    pub association_id: String,
}

/// Configures and starts a [`FakeEksAuth`].
#[derive(Debug, Clone)]
pub struct FakeEksAuthBuilder {
    cluster: String,
    lifetime: Duration,
    latency: Duration,
    script: Vec<Behavior>,
    default: Behavior,
}

impl Default for FakeEksAuthBuilder {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_CLUSTER.into(),
            lifetime: DEFAULT_CREDENTIALS_LIFETIME,
            latency: Duration::ZERO,
            script: Vec::new(),
            default: Behavior::Succeed,
        }
    }
}

impl FakeEksAuthBuilder {
    /// The one cluster name the fake knows (default `lab`); others get `ResourceNotFound`.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// Lifetime of issued credentials (default 6 h).
    pub fn credentials_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Delay before every answer (default none).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Behaviors for the first calls, one per call, in order.
    pub fn script(mut self, script: Vec<Behavior>) -> Self {
        self.script = script;
        self
    }

    /// Behavior once the script is used up (default `Succeed`).
    pub fn default_behavior(mut self, behavior: Behavior) -> Self {
        self.default = behavior;
        self
    }

    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start(self) -> FakeEksAuth {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake EKS Auth: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake EKS Auth: local addr");
        let shared = Arc::new(Shared {
            cluster: self.cluster,
            lifetime: self.lifetime,
            latency: self.latency,
            script: Mutex::new(Script {
                queue: self.script.into(),
                default: self.default,
            }),
            requests: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            calls: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            counter: AtomicU64::new(0),
            noise: RandomState::new(),
            panic: Mutex::new(None),
        });
        let app = Router::new()
            .route(
                "/clusters/{cluster}/assume-role-for-pod-identity",
                post(assume_role_for_pod_identity),
            )
            .fallback(unknown_operation)
            .with_state(shared.clone());
        let mut stop = shared.shutdown.subscribe();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .expect("fake EKS Auth: serve");
        });
        FakeEksAuth {
            addr,
            shared,
            task: Some(task),
        }
    }
}

/// A running fake EKS Auth. Shuts down on drop; [`shutdown`](Self::shutdown) also re-raises any
/// panic of its handlers (so does drop, unless the test is already panicking).
pub struct FakeEksAuth {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeEksAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeEksAuth")
            .field("addr", &self.addr)
            .field("cluster", &self.shared.cluster)
            .field("calls", &self.calls())
            .finish()
    }
}

impl FakeEksAuth {
    pub fn builder() -> FakeEksAuthBuilder {
        FakeEksAuthBuilder::default()
    }

    /// A fake with every default: cluster `lab`, always `Succeed`.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The cluster name it serves.
    pub fn cluster(&self) -> &str {
        &self.shared.cluster
    }

    /// Calls to the operation so far (any outcome).
    pub fn calls(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Calls that carried the token with this fingerprint (see `contracts::fingerprint`).
    pub fn calls_for(&self, token_fingerprint: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.token_fingerprint.as_deref() == Some(token_fingerprint))
            .count()
    }

    /// Calls that carried this token.
    pub fn calls_for_token(&self, token: &str) -> usize {
        self.calls_for(&fingerprint(token.as_bytes()))
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Every set of credentials returned so far, in order.
    pub fn issued(&self) -> Vec<IssuedCredentials> {
        lock(&self.shared.issued).clone()
    }

    /// The secret access keys and session tokens issued so far: the list to hand to
    /// [`crate::assert_no_secrets`].
    pub fn issued_secrets(&self) -> Vec<String> {
        lock(&self.shared.issued)
            .iter()
            .flat_map(|c| [c.secret_access_key.clone(), c.session_token.clone()])
            .collect()
    }

    /// Replaces the behavior used once the script is empty.
    pub fn set_default(&self, behavior: Behavior) {
        lock(&self.shared.script).default = behavior;
    }

    /// Appends behaviors to the script.
    pub fn push_script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        lock(&self.shared.script).queue.extend(behaviors);
    }

    /// Waits until at least `n` calls arrived, then returns all recorded calls.
    pub async fn wait_for_calls(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, TimedOut> {
        let mut rx = self.shared.calls.subscribe();
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|calls| *calls >= n)).await,
            Ok(Ok(_))
        );
        if reached {
            Ok(self.requests())
        } else {
            Err(TimedOut {
                waited_for: format!("{n} call(s) to the fake EKS Auth"),
                after: timeout,
                detail: format!("it saw {}", self.calls()),
            })
        }
    }

    /// Stops serving (hanging calls are released), waits for the server task, and re-raises
    /// the first panic of a handler or of the server.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(_) => {}
                Err(_) => panic!("fake EKS Auth did not shut down within 5s"),
            }
        }
        if let Some(panic) = lock(&self.shared.panic).take() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for FakeEksAuth {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        if std::thread::panicking() {
            return;
        }
        if let Some(panic) = lock(&self.shared.panic).take() {
            std::panic::resume_unwind(panic);
        }
    }
}

struct Script {
    queue: VecDeque<Behavior>,
    default: Behavior,
}

struct Shared {
    cluster: String,
    lifetime: Duration,
    latency: Duration,
    script: Mutex<Script>,
    requests: Mutex<Vec<RecordedRequest>>,
    issued: Mutex<Vec<IssuedCredentials>>,
    calls: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
    counter: AtomicU64,
    noise: RandomState,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Shared {
    fn next_behavior(&self) -> Behavior {
        let mut script = lock(&self.script);
        match script.queue.pop_front() {
            Some(b) => b,
            None => script.default.clone(),
        }
    }

    /// Sleeps, or returns early when the fake shuts down.
    async fn pause(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    /// `len` hex digits, different for every (n, salt) and every run.
    fn noise(&self, n: u64, salt: &str, len: usize) -> String {
        let mut out = String::with_capacity(len + 16);
        let mut i = 0u64;
        while out.len() < len {
            out.push_str(&format!("{:016x}", self.noise.hash_one((n, salt, i))));
            i += 1;
        }
        out.truncate(len);
        out
    }
}

async fn assume_role_for_pod_identity(
    State(shared): State<Arc<Shared>>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("token")?.as_str().map(str::to_string));
    let signed = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256"));
    let security_token_fingerprint = headers
        .get("x-amz-security-token")
        .map(|v| fingerprint(v.as_bytes()));
    {
        let mut requests = lock(&shared.requests);
        requests.push(RecordedRequest {
            cluster: cluster.clone(),
            token_fingerprint: token.as_deref().map(|t| fingerprint(t.as_bytes())),
            signed,
            security_token_fingerprint,
            at: Instant::now(),
        });
        let n = requests.len();
        shared.calls.send_replace(n);
    }
    let behavior = shared.next_behavior();
    // A task of its own, so a panic is caught here and re-raised on shutdown.
    let answer = tokio::spawn(respond(shared.clone(), behavior, cluster, token)).await;
    match answer {
        Ok(response) => response,
        Err(e) => {
            if let Ok(panic) = e.try_into_panic() {
                lock(&shared.panic).get_or_insert(panic);
            }
            error_response(500, "InternalServerException", "the fake EKS Auth panicked")
        }
    }
}

enum Flavor {
    Normal,
    Expired,
    NoSessionToken,
}

async fn respond(
    shared: Arc<Shared>,
    behavior: Behavior,
    cluster: String,
    token: Option<String>,
) -> Response {
    #[cfg(test)]
    if cluster == tests::PANIC_CLUSTER {
        panic!("asked to panic");
    }
    shared.pause(shared.latency).await;
    match behavior {
        Behavior::Succeed => succeed(&shared, &cluster, token, Flavor::Normal),
        Behavior::ExpiredCredentials => succeed(&shared, &cluster, token, Flavor::Expired),
        Behavior::MissingField => succeed(&shared, &cluster, token, Flavor::NoSessionToken),
        Behavior::Delay(d) => {
            shared.pause(d).await;
            succeed(&shared, &cluster, token, Flavor::Normal)
        }
        Behavior::Fail(kind, message) => error(kind, &message),
        Behavior::Garbage {
            status,
            body,
            content_type,
        } => {
            let mut r = Response::builder().status(status);
            if let Some(ct) = content_type {
                r = r.header(header::CONTENT_TYPE, ct);
            }
            r.body(Body::from(body))
                .expect("fake EKS Auth: Garbage status must be a valid HTTP status")
        }
        Behavior::Hang => {
            let _ = shared.shutdown.subscribe().wait_for(|s| *s).await;
            error(ErrorKind::ServiceUnavailable, "the fake EKS Auth shut down")
        }
    }
}

fn succeed(shared: &Shared, cluster: &str, token: Option<String>, flavor: Flavor) -> Response {
    if cluster != shared.cluster {
        return error(
            ErrorKind::ResourceNotFound,
            &format!("No cluster found for name: {cluster}."),
        );
    }
    let Some(token) = token else {
        return error(
            ErrorKind::InvalidRequest,
            "the body must be a JSON object with a string field 'token'",
        );
    };
    let parsed = match UnverifiedToken::parse(&token) {
        Ok(t) => t,
        Err(e) => return error(ErrorKind::InvalidToken, &e.to_string()),
    };
    let claims = &parsed.claims;
    let now = jiff::Timestamp::now().as_second();
    if let Err(e) = claims
        .check_structure()
        .and_then(|()| claims.check_audience(AUDIENCE))
    {
        return error(ErrorKind::InvalidToken, &e.to_string());
    }
    if let Err(e) = claims.check_time(now, 0) {
        let kind = if e.is_expired() {
            ErrorKind::ExpiredToken
        } else {
            ErrorKind::InvalidToken
        };
        return error(kind, &e.to_string());
    }
    let (namespace, service_account) = claims.subject().expect("checked by check_structure");
    let pod = claims.pod().map_or("unknown", |p| p.name.as_str());

    let n = shared.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let mut session = format!("eks-{cluster}-{pod}");
    session.truncate(64 - 9);
    session = format!("{session}-{}", shared.noise(n, "session-name", 8));
    let role_arn =
        format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/{service_account}-role/{session}");
    let association_id = derive_association_id(namespace, service_account);
    let expiration = match flavor {
        Flavor::Expired => now - 60,
        _ => now + i64::try_from(shared.lifetime.as_secs()).unwrap_or(i64::MAX / 2),
    };
    let issued = IssuedCredentials {
        access_key_id: format!("ASIA{n:016}"),
        secret_access_key: format!("FAKESECRET{}", shared.noise(n, "secret", 30)),
        session_token: format!("FAKESESSIONTOKEN{n:08}{}", shared.noise(n, "session", 96)),
        expiration,
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        assumed_role_arn: role_arn.clone(),
        association_id: association_id.clone(),
    };
    let response = AssumeRoleForPodIdentityResponse {
        subject: Subject {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        },
        audience: AUDIENCE.to_string(),
        pod_identity_association: PodIdentityAssociationRef {
            association_arn: association_arn("aws", REGION, ACCOUNT_ID, cluster, &association_id),
            association_id,
        },
        assumed_role_user: AssumedRoleUser {
            arn: role_arn,
            assume_role_id: format!(
                "AROA{}:{session}",
                shared.noise(n, "role-id", 17).to_uppercase()
            ),
        },
        credentials: Credentials {
            access_key_id: issued.access_key_id.clone(),
            secret_access_key: Secret::new(issued.secret_access_key.clone()),
            session_token: Secret::new(issued.session_token.clone()),
            expiration,
        },
    };
    let mut body = serde_json::to_value(&response).expect("response serializes");
    if let Flavor::NoSessionToken = flavor
        && let Some(creds) = body["credentials"].as_object_mut()
    {
        creds.remove("sessionToken");
    }
    lock(&shared.issued).push(issued);
    json_response(200, None, &body)
}

fn error(kind: ErrorKind, message: &str) -> Response {
    error_response(kind.status(), kind.name(), message)
}

fn error_response(status: u16, name: &str, message: &str) -> Response {
    json_response(status, Some(name), &json!({ "message": message }))
}

fn json_response(status: u16, error_type: Option<&str>, body: &Value) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).expect("valid status"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(name) = error_type {
        r = r.header(ERROR_TYPE_HEADER, name);
    }
    r.body(Body::from(body.to_string()))
        .expect("response builds")
}

async fn unknown_operation() -> Response {
    error_response(
        404,
        "UnknownOperationException",
        "the fake EKS Auth serves only POST /clusters/{clusterName}/assume-role-for-pod-identity",
    )
}

#[cfg(test)]
mod tests {
    use pod_identity_contracts::eks_auth::request_path;

    use super::*;
    use crate::tokens::{TokenBuilder, now};

    pub(super) const PANIC_CLUSTER: &str = "panic-please";

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn call(fake: &FakeEksAuth, cluster: &str, token: &str) -> reqwest::Response {
        client()
            .post(format!("{}{}", fake.url(), request_path(cluster)))
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap()
    }

    async fn error_of(r: reqwest::Response) -> (u16, String, String) {
        let status = r.status().as_u16();
        let name = r
            .headers()
            .get(ERROR_TYPE_HEADER)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: Value = r.json().await.unwrap();
        (status, name, body["message"].as_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn success_returns_unique_recognizable_credentials_and_records_calls() {
        let fake = FakeEksAuth::start().await;
        assert!(fake.url().starts_with("http://127.0.0.1:"));
        let token = TokenBuilder::new().sign();

        let r = call(&fake, "lab", &token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let first: AssumeRoleForPodIdentityResponse = r.json().await.unwrap();
        assert_eq!(first.subject.namespace, "default");
        assert_eq!(first.subject.service_account, "s3-reader");
        assert_eq!(first.audience, AUDIENCE);
        let c = &first.credentials;
        assert_eq!(c.access_key_id, "ASIA0000000000000001");
        assert!(c.secret_access_key.expose().contains("SECRET"));
        assert_eq!(c.secret_access_key.expose().len(), 40);
        assert!(c.session_token.expose().contains("SESSION"));
        let lifetime = c.expiration - now();
        assert!((6 * 3600 - 5..=6 * 3600).contains(&lifetime), "{lifetime}");
        let id = &first.pod_identity_association.association_id;
        assert!(id.starts_with("a-") && id.len() == 19, "{id}");
        assert!(
            first
                .pod_identity_association
                .association_arn
                .ends_with(&format!(":podidentityassociation/lab/{id}"))
        );
        let arn = &first.assumed_role_user.arn;
        assert!(
            arn.starts_with("arn:aws:sts::111122223333:assumed-role/s3-reader-role/eks-lab-web-0-"),
            "{arn}"
        );
        assert!(arn.rsplit('/').next().unwrap().len() <= 64);

        // A signed call, from another pod.
        let other = TokenBuilder::new().pod("web-1").sign();
        let r = client()
            .post(format!("{}{}", fake.url(), request_path("lab")))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-west-2/eks-auth/aws4_request, SignedHeaders=host, Signature=00",
            )
            .json(&json!({ "token": other }))
            .send()
            .await
            .unwrap();
        let second: AssumeRoleForPodIdentityResponse = r.json().await.unwrap();
        assert_eq!(second.credentials.access_key_id, "ASIA0000000000000002");
        assert_ne!(
            second.credentials.secret_access_key,
            first.credentials.secret_access_key
        );
        assert_ne!(
            second.credentials.session_token,
            first.credentials.session_token
        );

        assert_eq!(fake.calls(), 2);
        assert_eq!(fake.calls_for(&fingerprint(token.as_bytes())), 1);
        assert_eq!(fake.calls_for_token(&other), 1);
        let reqs = fake.requests();
        assert_eq!(
            reqs.iter()
                .map(|r| (r.cluster.as_str(), r.signed))
                .collect::<Vec<_>>(),
            [("lab", false), ("lab", true)]
        );
        assert!(reqs[0].at <= reqs[1].at);
        let issued = fake.issued();
        assert_eq!(issued.len(), 2);
        assert_eq!(
            issued[0].session_token,
            first.credentials.session_token.expose()
        );
        assert_eq!(fake.issued_secrets().len(), 4);
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn every_error_kind_has_its_status_header_and_message() {
        let fake = FakeEksAuth::builder()
            .script(
                ErrorKind::ALL
                    .into_iter()
                    .map(|k| Behavior::fail(k, format!("scripted {k}")))
                    .collect(),
            )
            .start()
            .await;
        let token = TokenBuilder::new().sign();
        for kind in ErrorKind::ALL {
            let (status, name, message) = error_of(call(&fake, "lab", &token).await).await;
            assert_eq!(status, kind.status(), "{kind}");
            assert_eq!(name, kind.name());
            assert_eq!(message, format!("scripted {kind}"));
        }
        assert_eq!(call(&fake, "lab", &token).await.status(), 200);
        assert_eq!(fake.calls(), ErrorKind::ALL.len() + 1);
    }

    #[tokio::test]
    async fn checks_cluster_and_token_like_eks_auth() {
        let fake = FakeEksAuth::builder().cluster("prod").start().await;
        let good = TokenBuilder::new().sign();
        let expired = TokenBuilder::new()
            .issued_at(now() - 7200)
            .not_before(now() - 7200)
            .expires_at(now() - 3600)
            .sign();
        let cases = [
            ("lab", good.as_str(), 404, "ResourceNotFoundException"),
            ("prod", "not-a-jwt", 400, "InvalidTokenException"),
            (
                "prod",
                &TokenBuilder::new().unsigned_alg_none(),
                400,
                "InvalidTokenException",
            ),
            (
                "prod",
                &TokenBuilder::new().audience("sts.amazonaws.com").sign(),
                400,
                "InvalidTokenException",
            ),
            ("prod", &expired, 400, "ExpiredTokenException"),
        ];
        for (cluster, token, status, name) in cases {
            let (s, n, message) = error_of(call(&fake, cluster, token).await).await;
            assert_eq!((s, n.as_str()), (status, name), "{cluster} {message}");
            assert!(!message.contains(token), "{message}");
        }
        let r = client()
            .post(format!("{}{}", fake.url(), request_path("prod")))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await.1, "InvalidRequestException");
        let r = client()
            .get(format!("{}/other", fake.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await.1, "UnknownOperationException");
        assert_eq!(call(&fake, "prod", &good).await.status(), 200);
        assert!(fake.requests()[0].token_fingerprint.is_some());
        assert_eq!(fake.requests()[5].token_fingerprint, None);
    }

    #[tokio::test]
    async fn script_is_consumed_in_order_then_the_default_applies() {
        let fake = FakeEksAuth::builder()
            .latency(Duration::from_millis(20))
            .script(vec![
                Behavior::fail(ErrorKind::Throttling, "slow down"),
                Behavior::Garbage {
                    status: 200,
                    body: "<html>".into(),
                    content_type: Some("text/html".into()),
                },
                Behavior::ExpiredCredentials,
                Behavior::MissingField,
                Behavior::Delay(Duration::from_millis(50)),
            ])
            .start()
            .await;
        let token = TokenBuilder::new().sign();

        assert_eq!(
            error_of(call(&fake, "lab", &token).await).await.1,
            "ThrottlingException"
        );

        let r = call(&fake, "lab", &token).await;
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()[header::CONTENT_TYPE].to_str().unwrap()
            ),
            (200, "text/html")
        );
        assert_eq!(r.text().await.unwrap(), "<html>");

        let r: Value = call(&fake, "lab", &token).await.json().await.unwrap();
        assert!(r["credentials"]["expiration"].as_i64().unwrap() < now());

        let r: Value = call(&fake, "lab", &token).await.json().await.unwrap();
        assert!(r["credentials"].get("sessionToken").is_none(), "{r}");
        assert!(r["credentials"].get("secretAccessKey").is_some());

        let started = Instant::now();
        assert_eq!(call(&fake, "lab", &token).await.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(70));

        assert_eq!(call(&fake, "lab", &token).await.status(), 200);
        fake.set_default(Behavior::fail(ErrorKind::InternalServer, "down"));
        assert_eq!(call(&fake, "lab", &token).await.status(), 500);
        fake.push_script([Behavior::Succeed]);
        assert_eq!(call(&fake, "lab", &token).await.status(), 200);
        assert_eq!(call(&fake, "lab", &token).await.status(), 500);
        assert_eq!(fake.calls_for_token(&token), 9);
    }

    #[tokio::test]
    async fn hang_never_answers_until_shutdown() {
        let fake = FakeEksAuth::builder()
            .script(vec![Behavior::Hang])
            .start()
            .await;
        let token = TokenBuilder::new().sign();
        let pending = call(&fake, "lab", &token);
        let outcome = tokio::time::timeout(Duration::from_millis(300), pending).await;
        assert!(outcome.is_err(), "Hang answered");
        let reqs = fake
            .wait_for_calls(1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reqs.len(), 1);

        // A hanging call does not block shutdown.
        let fake2 = FakeEksAuth::builder()
            .default_behavior(Behavior::Hang)
            .start()
            .await;
        let url = format!("{}{}", fake2.url(), request_path("lab"));
        let hung =
            tokio::spawn(
                async move { client().post(url).json(&json!({"token": "x"})).send().await },
            );
        fake2
            .wait_for_calls(1, Duration::from_secs(5))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), fake2.shutdown())
            .await
            .expect("shutdown with a hanging call in flight");
        let _ = hung.await;
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn wait_for_calls_times_out_with_a_reason() {
        let fake = FakeEksAuth::start().await;
        let err = fake
            .wait_for_calls(1, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("it saw 0"), "{err}");
    }

    #[tokio::test]
    #[should_panic(expected = "asked to panic")]
    async fn handler_panics_are_re_raised_on_shutdown() {
        let fake = FakeEksAuth::start().await;
        let r = call(&fake, PANIC_CLUSTER, "x").await;
        assert_eq!(r.status(), 500);
        fake.shutdown().await;
    }
}
