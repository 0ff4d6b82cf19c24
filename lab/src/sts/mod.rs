//! The lab's own STS: `AssumeRoleWithWebIdentity`, `AssumeRole` and `GetCallerIdentity` on
//! 127.0.0.1, so the lab needs no AWS account. The real aws-sdk-sts client talks to it (eks-auth,
//! keyless, trading its token for its role and signing with that session; the pod's SDK with the
//! temporary credentials it issued), so it speaks the AWS query protocol as STS does: a
//! form-encoded `Action=…&Version=2011-06-15&…` request signed with SigV4, an XML answer in the
//! `https://sts.amazonaws.com/doc/2011-06-15/` namespace, and AWS's error codes, HTTP statuses and,
//! where AWS's text is known, its messages (eks-auth falls back to a shorter duration on
//! "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.").
//!
//! What it decides, in the order a request meets it (`server.rs`):
//! 1. The body: at most [`MAX_BODY_BYTES`], else `413 RequestEntityTooLarge`.
//! 2. The parameters (`query.rs`): query string and form body, strictly percent-decoded UTF-8, else
//!    `404 MalformedQueryString` (AWS documents 404 for that code).
//! 3. `AssumeRoleWithWebIdentity` is unsigned: its token is checked instead (`web_identity.rs`:
//!    an OIDC provider registered for its issuer in the role's account, the issuer's keys by OIDC
//!    discovery, signature, `exp`, `aud`, then the role's trust in the exact `sub`), AWS's codes
//!    (`InvalidIdentityToken`, `ExpiredTokenException`, `IDPCommunicationError`, `AccessDenied`).
//!    Every other action goes on to 4 and 5.
//! 4. The caller (`sigv4.rs`): no `Authorization` → `403 MissingAuthenticationToken`; an unknown
//!    key, or a temporary key without its exact session token → `403 InvalidClientTokenId`;
//!    expired temporary credentials → `403 ExpiredToken`; `X-Amz-Date` more than 15 minutes off →
//!    `403 SignatureDoesNotMatch` ("Signature expired: …"); a wrong signature → `403
//!    SignatureDoesNotMatch`; a malformed `Authorization` → `400 IncompleteSignature`.
//! 5. The action: `GetCallerIdentity`, or `AssumeRole` (`assume.rs`: AWS's field constraints as
//!    `400 ValidationError`, the role's trust as `403 AccessDenied`, then the duration against the
//!    role's `MaxSessionDuration` and the one-hour role-chaining cap, the session policy, and the
//!    session tags with the calling session's transitive tags carried over). Anything else is
//!    `400 InvalidAction`, a missing `Action` `400 MissingAction`.
//!
//! Signatures are checked by re-signing the request with `aws-sigv4` (the SDK's own signer) with
//! the caller's secret, the request's time and credential scope, and exactly the headers the
//! request says it signed, then comparing in constant time; see `sigv4.rs` for how it is made
//! exact and why its trace logging is silenced.
//!
//! Every request becomes an [`StsEvent`] (caller, verdict, what was asked, what was issued or
//! refused) for the lab's trace: [`RunningSts::events`] and [`RunningSts::subscribe`]. Secrets
//! live only in [`Secret`]s and in the XML answer itself: no event, log line, error message or
//! `Debug` output contains a secret access key or a session token.
//!
//! Time comes from a [`LabClock`], which tests advance to expire credentials without sleeping.

mod assume;
mod error;
mod event;
mod identity;
mod query;
mod server;
mod sigv4;
mod web_identity;
mod xml;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use pod_identity_contracts::Secret;
use tokio::sync::broadcast;

pub use error::LabStsError;
pub use event::{SessionTag, SignatureVerdict, StsEvent, StsOutcome, WebIdentityCaller};

/// Largest request body accepted; larger ones are answered `413`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How many events [`RunningSts::events`] keeps.
pub const EVENTS_KEPT: usize = 10_000;
/// The `MaxSessionDuration` of a [`Role`] unless set (AWS's default).
pub const DEFAULT_MAX_SESSION_DURATION: Duration = Duration::from_secs(3600);

/// A long-term access key (`AKIA…`) and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl AccessKey {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: Secret) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key,
        }
    }

    /// A fresh random `AKIA…` key with a 40-character secret.
    pub fn generate() -> Self {
        let (access_key_id, secret_access_key) = identity::random_key_pair("AKIA");
        Self {
            access_key_id,
            secret_access_key,
        }
    }
}

/// A role callers may assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    arn: String,
    max_session_duration: Duration,
    trusted: Vec<String>,
    web_identity: Vec<WebIdentityTrust>,
}

/// One web-identity statement of a role's trust policy: `Principal: {Federated: <provider ARN>}`,
/// `Action: sts:AssumeRoleWithWebIdentity`, with `StringEquals` on the token's `sub` and `aud`
/// (`<issuer host/path>:sub`, `…:aud`), as IRSA-style trust policies are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentityTrust {
    /// The provider's issuer URL (`https://…`, or the lab issuer's `http://127.0.0.1:…`).
    pub issuer: String,
    /// The `sub` the token must carry, e.g. `system:serviceaccount:<ns>:<name>`.
    pub subject: String,
    /// The `aud` the token must carry.
    pub audience: String,
}

/// An IAM OpenID Connect identity provider: the issuer whose tokens `AssumeRoleWithWebIdentity`
/// accepts in one account, and the audiences (client ids) it accepts them for. Keys are fetched
/// from the issuer's OIDC discovery document at each call, as AWS fetches them (AWS caches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcProvider {
    issuer: String,
    account: String,
    client_ids: Vec<String>,
    ca_file: Option<std::path::PathBuf>,
}

impl OidcProvider {
    /// The provider for `issuer` (the tokens' `iss`, exactly) in `account`, accepting no
    /// audience yet.
    pub fn new(issuer: impl Into<String>, account: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            account: account.into(),
            client_ids: Vec::new(),
            ca_file: None,
        }
    }

    /// Accept tokens whose `aud` contains `client_id` (`sts.amazonaws.com` for IRSA-style use).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_ids.push(client_id.into());
        self
    }

    /// Trust this CA bundle (PEM) besides the system roots when fetching the issuer's keys.
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// `arn:aws:iam::<account>:oidc-provider/<issuer without its scheme>`, as IAM names it.
    pub fn arn(&self) -> String {
        let host_path = self
            .issuer
            .strip_prefix("https://")
            .or_else(|| self.issuer.strip_prefix("http://"))
            .unwrap_or(&self.issuer);
        format!("arn:aws:iam::{}:oidc-provider/{host_path}", self.account)
    }
}

impl Role {
    /// `arn:aws:iam::<account>:role/<path/>name`, trusting nobody yet, with a one-hour
    /// `MaxSessionDuration`.
    pub fn new(arn: impl Into<String>) -> Self {
        Self {
            arn: arn.into(),
            max_session_duration: DEFAULT_MAX_SESSION_DURATION,
            trusted: Vec::new(),
            web_identity: Vec::new(),
        }
    }

    /// The role's `MaxSessionDuration`: one to twelve hours, whole seconds.
    pub fn max_session_duration(mut self, max: Duration) -> Self {
        self.max_session_duration = max;
        self
    }

    /// Let `principal` assume the role: a user or role ARN (a role trusts its sessions), an
    /// assumed-role session ARN, `arn:aws:iam::<account>:root` or a bare account id (anyone in
    /// that account), or `*`.
    pub fn trust(mut self, principal: impl Into<String>) -> Self {
        self.trusted.push(principal.into());
        self
    }

    /// Let holders of a token from `trust.issuer` (an [`OidcProvider`] of the role's account)
    /// with exactly `trust.subject` and `trust.audience` assume the role with
    /// `AssumeRoleWithWebIdentity`.
    pub fn trust_web_identity(mut self, trust: WebIdentityTrust) -> Self {
        self.web_identity.push(trust);
        self
    }
}

/// The time the endpoint lives in: the system clock plus an offset tests move forward.
/// Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct LabClock {
    offset_millis: Arc<AtomicU64>,
}

impl LabClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let offset = Duration::from_millis(self.offset_millis.load(Ordering::Relaxed));
        now.checked_add(offset).unwrap_or(now)
    }

    /// Move the clock forward (credentials expire, signatures age).
    pub fn advance(&self, by: Duration) {
        let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .offset_millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_add(millis))
            });
    }
}

/// What the endpoint knows: its static keys, its roles, its clock.
#[derive(Debug, Clone, Default)]
pub struct StsConfig {
    static_keys: Vec<(AccessKey, String)>,
    roles: Vec<Role>,
    providers: Vec<OidcProvider>,
    clock: LabClock,
}

impl StsConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// A long-term key of `principal_arn` (`arn:aws:iam::<account>:user/<name>` or
    /// `arn:aws:iam::<account>:root`).
    pub fn static_key(mut self, key: AccessKey, principal_arn: impl Into<String>) -> Self {
        self.static_keys.push((key, principal_arn.into()));
        self
    }

    pub fn role(mut self, role: Role) -> Self {
        self.roles.push(role);
        self
    }

    pub fn oidc_provider(mut self, provider: OidcProvider) -> Self {
        self.providers.push(provider);
        self
    }

    pub fn clock(mut self, clock: LabClock) -> Self {
        self.clock = clock;
        self
    }
}

/// A validated STS endpoint, not yet listening.
#[derive(Debug)]
pub struct LabSts {
    state: Arc<server::State>,
}

impl LabSts {
    /// Check the config (ARNs, durations, unique keys) without binding anything.
    pub fn new(config: StsConfig) -> Result<Self, LabStsError> {
        let registry = identity::Registry::new(config.static_keys, config.roles, config.providers)?;
        Ok(Self {
            state: Arc::new(server::State::new(registry, config.clock)),
        })
    }

    /// Listen on `addr` (`127.0.0.1:0` for any free port) and serve until shut down.
    pub async fn start(self, addr: SocketAddr) -> Result<RunningSts, LabStsError> {
        let state = self.state.clone();
        let server = crate::serve::Server::start(addr, |_| server::router(state))
            .await
            .map_err(|source| LabStsError::Bind { addr, source })?;
        let local = server.local_addr();
        tracing::info!(addr = %local, "lab STS listening");
        Ok(RunningSts {
            addr: local,
            url: format!("http://{local}"),
            state: self.state,
            server,
        })
    }
}

/// The listening endpoint. Dropping it stops the server; [`RunningSts::shutdown`] also waits for
/// in-flight requests to finish.
#[derive(Debug)]
pub struct RunningSts {
    addr: SocketAddr,
    url: String,
    state: Arc<server::State>,
    server: crate::serve::Server,
}

impl RunningSts {
    /// `http://127.0.0.1:<port>`: the SDK's `endpoint_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request answered so far, oldest first (the most recent [`EVENTS_KEPT`] at most).
    pub fn events(&self) -> Vec<StsEvent> {
        self.state.events()
    }

    /// Events from now on, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<StsEvent> {
        self.state.subscribe()
    }

    /// The endpoint's clock (shared with the config's).
    pub fn clock(&self) -> &LabClock {
        self.state.clock()
    }

    /// Stop accepting, let in-flight requests finish, and wait for the server to end.
    pub async fn shutdown(self) -> Result<(), LabStsError> {
        let addr = self.addr;
        self.server
            .shutdown()
            .await
            .map_err(|source| LabStsError::Serve { addr, source })
    }
}
