//! HTTP: one route (`GET`/`POST /`), the body limit, the request's path through the checks, the
//! XML answer, and the event every request leaves behind.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as Extract};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use pod_identity_contracts::Secret;
use pod_identity_contracts::credentials::{format_expiration, short_access_key_id};
use tokio::sync::broadcast;

use super::assume::{AssumeAsk, Grant, decide};
use super::error::ApiError;
use super::event::{SignatureVerdict, StsEvent, StsOutcome, WebIdentityCaller};
use super::identity::{Caller, Registry, Session};
use super::query::Params;
use super::sigv4::{SignedRequest, authenticate};
use super::web_identity::{self, WebIdentityAsk};
use super::{EVENTS_KEPT, LabClock, MAX_BODY_BYTES, xml};

/// The only API version STS has.
const VERSION: &str = "2011-06-15";
/// An over-limit body is read and dropped up to this size so the client can read the `413`;
/// beyond it the connection is simply closed.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
const BROADCAST_CAPACITY: usize = 1024;

/// Shared by every request and by [`super::RunningSts`].
#[derive(Debug)]
pub(crate) struct State {
    registry: Registry,
    clock: LabClock,
    events: Mutex<VecDeque<StsEvent>>,
    broadcast: broadcast::Sender<StsEvent>,
}

impl State {
    pub fn new(registry: Registry, clock: LabClock) -> Self {
        Self {
            registry,
            clock,
            events: Mutex::default(),
            broadcast: broadcast::channel(BROADCAST_CAPACITY).0,
        }
    }

    pub fn events(&self) -> Vec<StsEvent> {
        self.events_lock().iter().cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StsEvent> {
        self.broadcast.subscribe()
    }

    pub fn clock(&self) -> &LabClock {
        &self.clock
    }

    fn record(&self, event: StsEvent) {
        let (outcome, detail) = match &event.outcome {
            StsOutcome::Refused { code, message, .. } => (code.as_str(), message.as_str()),
            StsOutcome::Issued { access_key_id, .. } => ("issued", access_key_id.as_str()),
            StsOutcome::CallerIdentity { arn, .. } => ("identified", arn.as_str()),
        };
        tracing::info!(
            request_id = %event.request_id,
            action = event.action.as_deref().unwrap_or("-"),
            caller = event.caller_arn.as_deref().unwrap_or("-"),
            access_key = event.caller_access_key_id.as_deref().unwrap_or("-"),
            role_arn = event.role_arn.as_deref().unwrap_or("-"),
            outcome,
            detail,
            "lab STS request"
        );
        let _ = self.broadcast.send(event.clone());
        let mut events = self.events_lock();
        if events.len() >= EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    fn events_lock(&self) -> std::sync::MutexGuard<'_, VecDeque<StsEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/", get(handle).post(handle))
        .with_state(state)
}

async fn handle(Extract(state): Extract<Arc<State>>, request: Request) -> Response {
    let now = state.clock.now();
    // AWS's request ids are UUIDs too.
    let request_id = crate::ids::uuid();
    let mut event = StsEvent {
        request_id: request_id.clone(),
        at: jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        action: None,
        caller_arn: None,
        caller_access_key_id: None,
        signature: SignatureVerdict::NotChecked,
        role_arn: None,
        role_session_name: None,
        tags: Vec::new(),
        transitive_tag_keys: Vec::new(),
        inherited_tags: Vec::new(),
        duration_seconds: None,
        policy_present: false,
        web_identity_token: None,
        web_identity: None,
        outcome: StsOutcome::Refused {
            status: 0,
            code: String::new(),
            message: String::new(),
        },
    };
    let response = match answer(&state, request, now, &request_id, &mut event).await {
        Ok(body) => xml_response(StatusCode::OK, body, &request_id),
        Err(e) => {
            event.outcome = StsOutcome::Refused {
                status: e.status.as_u16(),
                code: e.code.to_string(),
                message: e.message.clone(),
            };
            xml_response(e.status, xml::error(&e, &request_id), &request_id)
        }
    };
    state.record(event);
    response
}

/// The request's way through the checks; fills `event` as it learns things.
async fn answer(
    state: &State,
    request: Request,
    now: SystemTime,
    request_id: &str,
    event: &mut StsEvent,
) -> Result<String, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body).await?;
    let params = Params::parse(parts.uri.query(), &body)?;
    event.action = params.get("Action").map(str::to_string);
    let ask = (event.action.as_deref() == Some("AssumeRole")).then(|| {
        let ask = AssumeAsk::from_params(&params);
        event.role_arn = ask.role_arn.clone();
        event.role_session_name = ask.role_session_name.clone();
        event.tags = ask.complete_tags();
        event.transitive_tag_keys = ask.transitive_tag_keys.clone();
        event.duration_seconds = ask.duration_seconds.clone();
        event.policy_present = ask.policy.is_some();
        ask
    });

    if event.action.as_deref() == Some("AssumeRoleWithWebIdentity") {
        // Unsigned: the token in the request is the credential.
        event.signature = SignatureVerdict::NotRequired;
        let version = params.get("Version");
        if version != Some(VERSION) {
            return Err(ApiError::invalid_action(
                "AssumeRoleWithWebIdentity",
                version,
            ));
        }
        let ask = WebIdentityAsk::from_params(&params);
        return assume_role_with_web_identity(state, &ask, now, request_id, event).await;
    }

    let signed = SignedRequest {
        method: parts.method.as_str(),
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
        body: &body,
    };
    let auth = authenticate(signed, now, |id| state.registry.lookup(id));
    event.signature = auth.verdict;
    event.caller_access_key_id = auth.access_key_id.as_deref().map(short_access_key_id);
    let caller = auth.caller?;
    event.caller_arn = Some(caller.arn().to_string());

    let action = params.get("Action").ok_or_else(ApiError::missing_action)?;
    let version = params.get("Version");
    if version != Some(VERSION) {
        return Err(ApiError::invalid_action(action, version));
    }
    match (action, ask) {
        ("GetCallerIdentity", _) => {
            event.outcome = StsOutcome::CallerIdentity {
                arn: caller.arn().to_string(),
                account: caller.account().to_string(),
            };
            Ok(xml::get_caller_identity(
                caller.arn(),
                caller.user_id(),
                caller.account(),
                request_id,
            ))
        }
        ("AssumeRole", Some(ask)) => assume_role(state, &caller, &ask, now, request_id, event),
        _ => Err(ApiError::invalid_action(action, version)),
    }
}

fn assume_role(
    state: &State,
    caller: &Caller,
    ask: &AssumeAsk,
    now: SystemTime,
    request_id: &str,
    event: &mut StsEvent,
) -> Result<String, ApiError> {
    event.inherited_tags = caller
        .session()
        .map(|s| s.transitive_tags())
        .unwrap_or_default();
    let role = ask
        .role_arn
        .as_deref()
        .and_then(|arn| state.registry.role(arn));
    let grant = decide(ask, caller, role)?;
    let (session, packed_policy_size) = issue(state, grant, now, event);
    Ok(xml::assume_role(
        &assumed_role(&session, packed_policy_size),
        request_id,
    ))
}

/// Create the granted session and record it as the event's outcome.
fn issue(
    state: &State,
    grant: Grant,
    now: SystemTime,
    event: &mut StsEvent,
) -> (Arc<Session>, Option<usize>) {
    let packed_policy_size = grant.packed_policy_size;
    let duration_seconds = u32::try_from(grant.duration.as_secs()).unwrap_or(u32::MAX);
    let session = state.registry.insert_session(grant.issue(now), now);
    event.outcome = StsOutcome::Issued {
        access_key_id: short_access_key_id(&session.access_key_id),
        assumed_role_arn: session.assumed_role_arn.clone(),
        assumed_role_id: session.assumed_role_id.clone(),
        expiration: expiration_of(&session),
        duration_seconds,
    };
    (session, packed_policy_size)
}

fn expiration_of(session: &Session) -> jiff::Timestamp {
    jiff::Timestamp::try_from(session.expiration).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The credentials part of the answer (the secrets pass through here only).
fn assumed_role(session: &Session, packed_policy_size: Option<usize>) -> xml::AssumedRole<'_> {
    xml::AssumedRole {
        assumed_role_arn: &session.assumed_role_arn,
        assumed_role_id: &session.assumed_role_id,
        access_key_id: &session.access_key_id,
        secret_access_key: session.secret_access_key.expose(),
        session_token: session.session_token.expose(),
        expiration: format_expiration(expiration_of(session)),
        packed_policy_size,
    }
}

async fn assume_role_with_web_identity(
    state: &State,
    ask: &WebIdentityAsk,
    now: SystemTime,
    request_id: &str,
    event: &mut StsEvent,
) -> Result<String, ApiError> {
    event.role_arn = ask.role_arn.clone();
    event.role_session_name = ask.role_session_name.clone();
    event.duration_seconds = ask.duration_seconds.clone();
    event.policy_present = ask.policy.is_some();
    event.web_identity_token = ask.token.as_ref().map(Secret::fingerprint);
    web_identity::validate(ask)?;
    let token = ask
        .token
        .as_ref()
        .ok_or_else(|| ApiError::validation("WebIdentityToken is required"))?;
    let account = web_identity::role_account(ask);
    let identity = web_identity::verify(&state.registry, &account, token, now).await?;
    event.caller_arn = Some(identity.provider_arn.clone());
    event.web_identity = Some(WebIdentityCaller {
        provider_arn: identity.provider_arn.clone(),
        subject: identity.subject.clone(),
        audience: identity.audience.clone(),
    });
    let role = ask
        .role_arn
        .as_deref()
        .and_then(|arn| state.registry.role(arn));
    let grant = web_identity::decide(ask, &identity, role)?;
    let (session, packed_policy_size) = issue(state, grant, now, event);
    Ok(xml::assume_role_with_web_identity(
        &assumed_role(&session, packed_policy_size),
        &xml::WebIdentityResult {
            subject: &identity.subject,
            audience: &identity.audience,
            provider: &identity.issuer,
        },
        request_id,
    ))
}

/// The body, at most [`MAX_BODY_BYTES`]. A larger one is drained (up to [`DRAIN_LIMIT`],
/// without keeping it) so the client gets to read the `413` instead of a reset connection.
async fn read_body(headers: &http::HeaderMap, mut body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::unreadable_body())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(Bytes::from(kept))
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}
