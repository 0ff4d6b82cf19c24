//! The trace's hops, each read from what a part reported itself: the webhook's patch, the
//! token's claims, demo-app's JSON report, the agent's and eks-auth's log lines, and the STS
//! endpoint's record of every call.

use std::ops::Deref;
use std::path::Path;

use pod_identity_contracts::association::Association;
use pod_identity_contracts::constants::CREDENTIALS_PATH;
use pod_identity_contracts::log_schema::{AgentRequestLine, ExchangeAuditLine};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::components::Running;
use crate::issuer::Minted;
use crate::pod::{self, Admitted};
use crate::scenario::TokenChange;
use crate::sts::{StsEvent, StsOutcome};
use crate::trace::{Status, Trace};

use crate::run::LONG_LIVED_SECONDS;
use crate::start::{PodRun, Sts};

/// A log line as the component wrote it (shown in the trace) and as read (`log_schema`).
#[derive(Debug, Clone)]
pub(crate) struct Logged<T> {
    pub(crate) raw: Value,
    pub(crate) line: T,
}

impl<T> Deref for Logged<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.line
    }
}

/// A log line that names the token it is about.
pub(crate) trait AboutToken: DeserializeOwned {
    fn token_fingerprint(&self) -> Option<&str>;
}

impl AboutToken for AgentRequestLine {
    fn token_fingerprint(&self) -> Option<&str> {
        self.pod.token_fingerprint.as_deref()
    }
}

impl AboutToken for ExchangeAuditLine {
    fn token_fingerprint(&self) -> Option<&str> {
        self.pod.token_fingerprint.as_deref()
    }
}

/// A component's JSON log lines about this run's token.
pub(crate) fn lines_for<T: AboutToken>(
    running: &Running,
    fingerprint: Option<&str>,
) -> Vec<Logged<T>> {
    let Some(fp) = fingerprint else {
        return Vec::new();
    };
    running
        .log()
        .into_iter()
        .filter_map(|raw| {
            let line = T::deserialize(&raw).ok()?;
            (line.token_fingerprint() == Some(fp)).then_some(Logged { raw, line })
        })
        .collect()
}

pub(crate) fn admission_hop(trace: &mut Trace, admitted: &Admitted, association: &Association) {
    let injected = !admitted.patch.is_empty();
    let mut details = vec![format!(
        "AdmissionReview CREATE pods {}/{}: service account {} → association {} ({})",
        admitted.namespace,
        admitted.name,
        admitted.service_account,
        association.id(),
        association.role_arn
    )];
    if injected {
        details.push(format!("JSONPatch, {} operations:", admitted.patch.len()));
        details.extend(
            admitted
                .patch_summary()
                .into_iter()
                .map(|l| format!("  {l}")),
        );
    }
    details.extend(admitted.warnings.iter().map(|w| format!("warning: {w}")));
    trace.hop(
        "webhook",
        if injected {
            Status::Ok
        } else {
            Status::Skipped
        },
        if injected {
            "admitted and injected (token volume, mount, env, label)"
        } else {
            "admitted without injection"
        },
        details,
        None,
    );
}

pub(crate) fn token_hop(
    trace: &mut Trace,
    token_change: TokenChange,
    minted: &Minted,
    projected: &pod::ProjectedToken,
    written: &Path,
    now: i64,
) {
    let c = &minted.claims;
    let k8s = c.kubernetes.as_ref();
    let left = c.exp - now;
    let mut details = vec![
        format!("header: alg RS256, kid {}", minted.kid),
        format!("iss {}", c.iss),
        format!("aud {}", c.aud.as_vec().join(",")),
        format!("sub {}", c.sub),
        format!(
            "kubernetes.io: pod {} (uid {}), node {}",
            k8s.and_then(|k| k.pod.as_ref())
                .map_or("-", |p| p.name.as_str()),
            k8s.and_then(|k| k.pod.as_ref())
                .map_or("-", |p| p.uid.as_str()),
            k8s.and_then(|k| k.node.as_ref())
                .map_or("-", |p| p.name.as_str()),
        ),
        if left > 0 {
            format!(
                "expires in {left} s (expirationSeconds {})",
                projected.expiration_seconds
            )
        } else {
            format!("EXPIRED {} s ago", -left)
        },
        format!(
            "written to {} (mode {:o}), fingerprint {}",
            written.display(),
            projected.mode,
            minted.token.fingerprint()
        ),
    ];
    match token_change {
        TokenChange::Expired => details.push("scenario: the token is already expired".into()),
        TokenChange::WrongAudience => details.push(format!(
            "scenario: minted for sts.amazonaws.com, though the volume asks for {}",
            projected.audience
        )),
        TokenChange::PodDeleted => details.push(
            "scenario: the pod was deleted after its token was copied (the API server no longer knows it)"
                .into(),
        ),
        TokenChange::LongLived => details.push(format!(
            "scenario: minted to live {LONG_LIVED_SECONDS} s (100 years), though the volume asks for {} s",
            projected.expiration_seconds
        )),
        TokenChange::Fresh => {}
    }
    trace.hop(
        "kubelet",
        Status::Ok,
        "projected service-account token minted (TokenRequest) and written",
        details,
        None,
    );
}

pub(crate) fn sdk_hops(trace: &mut Trace, run: &PodRun) {
    let steps = run.report["steps"].as_array().cloned().unwrap_or_default();
    let mut details = Vec::new();
    for step in &steps {
        let outcome = &step["outcome"];
        let result = outcome["result"].as_str().unwrap_or("?");
        let what = match result {
            "loaded" => format!(
                "LOADED ({}, {})",
                outcome["provider"].as_str().unwrap_or_default(),
                outcome["access_key_id"].as_str().unwrap_or_default()
            ),
            "not-loaded" => format!(
                "not loaded → next: {}",
                outcome["reason"].as_str().unwrap_or_default()
            ),
            "failed" => format!(
                "FAILED → chain stops: {}",
                outcome["reason"].as_str().unwrap_or_default()
            ),
            _ => "not reached".into(),
        };
        details.push(format!(
            "{}: {what}",
            step["kind"].as_str().unwrap_or_default()
        ));
    }
    for w in run.report["warnings"].as_array().into_iter().flatten() {
        details.push(format!("warning: {}", w.as_str().unwrap_or_default()));
    }
    let winner = run.report["winner"].as_str();
    trace.hop(
        "sdk",
        if winner.is_some() {
            Status::Ok
        } else {
            Status::Refused
        },
        match winner {
            Some(w) => format!("the default credential chain: {w} won"),
            None => "the default credential chain found no credentials".to_string(),
        },
        details,
        None,
    );
}

pub(crate) fn agent_hops(trace: &mut Trace, lines: &[Logged<AgentRequestLine>], prefix: &str) {
    let Some(first) = lines.first() else {
        trace.hop(
            "agent",
            Status::Skipped,
            format!("{prefix}no request from this pod reached the agent"),
            vec![],
            None,
        );
        return;
    };
    let status = first.answer.http_status.unwrap_or(0);
    let mut details = vec![
        "first request: demo-app's own look at the container step, with the pod's token"
            .to_string(),
        format!(
            "Host header names a bind host: {}",
            if status == 403 { "NO (403)" } else { "yes" }
        ),
        format!(
            "token present, a JWT, not alg none, subject and time valid: {}",
            // A 400 the agent passes on from EKS Auth went upstream (cache "error"): its own
            // checks had passed.
            if status == 400 && first.cache.as_deref() != Some("error") {
                "NO (400)"
            } else {
                "yes"
            }
        ),
        format!(
            "cache: {} (keyed by the token's digest, {})",
            first.cache.as_deref().unwrap_or("-"),
            first.pod.token_fingerprint.as_deref().unwrap_or("-")
        ),
    ];
    if let Some(code) = first.error.code.as_deref() {
        details.push(format!(
            "answer {status} {code}: {}",
            first.error.message.as_deref().unwrap_or_default()
        ));
    } else {
        details.push(format!(
            "answer 200: {} for {}, expires {}",
            first.pod.access_key_id.as_deref().unwrap_or("-"),
            first.pod.role_arn.as_deref().unwrap_or("-"),
            first.expiration.as_deref().unwrap_or("-")
        ));
    }
    details.push(format!(
        "latency {} ms",
        first.answer.latency_ms.unwrap_or_default()
    ));
    if lines.len() > 1 {
        let rest: Vec<String> = lines[1..]
            .iter()
            .map(|l| {
                format!(
                    "{} {} ({} ms)",
                    l.answer.http_status.unwrap_or(0),
                    l.cache.as_deref().unwrap_or("-"),
                    l.answer.latency_ms.unwrap_or_default()
                )
            })
            .collect();
        details.push(format!(
            "then {} more from this pod (the SDK's container provider, then aws-config's default chain for demo-app's cross-check): {}",
            rest.len(),
            rest.join(", ")
        ));
    }
    trace.hop(
        "agent",
        if status == 200 {
            Status::Ok
        } else {
            Status::Refused
        },
        format!("{prefix}GET {CREDENTIALS_PATH} → {status}"),
        details,
        Some(first.raw.clone()),
    );
}

pub(crate) fn eks_auth_hops(
    trace: &mut Trace,
    lines: &[Logged<ExchangeAuditLine>],
    agent_silent: bool,
) {
    let Some(line) = lines.first() else {
        trace.hop(
            "eks-auth",
            Status::Skipped,
            "no exchange reached eks-auth",
            vec![if agent_silent {
                "the agent was not asked".into()
            } else {
                "the agent answered without asking EKS Auth".into()
            }],
            None,
        );
        return;
    };
    let status = line.answer.http_status.unwrap_or(0);
    let mut details = Vec::new();
    if let Some(caller) = line.caller.as_deref().filter(|c| !c.is_empty()) {
        details.push(match caller {
            "unauthenticated" => "caller: sent no token of its own".into(),
            "unverified" => format!(
                "caller: sent a token of its own ({}) that was not accepted",
                line.caller_token_fingerprint.as_deref().unwrap_or("-")
            ),
            _ => format!(
                "caller: {caller} on node {} (its own token {}, verified like a pod's)",
                line.caller_node.as_deref().unwrap_or("-"),
                line.caller_token_fingerprint.as_deref().unwrap_or("-")
            ),
        });
    }
    if status == 200 {
        let node = line.k8s_node.as_deref().unwrap_or("");
        details.extend([
            "signature verified against the issuer's JWKS (RS256, kid pinned to its key)"
                .to_string(),
            if node.is_empty() {
                "the pod's token names no node: not bound to one (--allow-tokens-without-node)"
                    .to_string()
            } else {
                format!("the pod's token is bound to node {node}, the caller's node (name and uid)")
            },
            "issuer, audience pods.eks.amazonaws.com, time and subject: accepted".into(),
            "TokenReview: the API server still knows the pod (and the agent's pod)".into(),
            format!(
                "association {} for {}/{} → {}",
                line.pod.association_id.as_deref().unwrap_or("-"),
                line.pod.k8s_namespace.as_deref().unwrap_or("-"),
                line.pod.k8s_service_account.as_deref().unwrap_or("-"),
                line.pod.role_arn.as_deref().unwrap_or("-")
            ),
            format!(
                "session {} → {} ({})",
                line.session_name.as_deref().unwrap_or("-"),
                line.assumed_role_arn.as_deref().unwrap_or("-"),
                line.pod.access_key_id.as_deref().unwrap_or("-")
            ),
        ]);
    } else {
        details.push(format!(
            "refused {status} {}: {}",
            line.error.code.as_deref().unwrap_or("-"),
            line.error.message.as_deref().unwrap_or("-")
        ));
        // eks-auth writes the field on every refusal, empty when the policy was not why.
        if let Some(role) = line.role_policy_denied.as_deref().filter(|r| !r.is_empty()) {
            details.push(format!("role policy: {role} (checked before STS)"));
        }
    }
    trace.hop(
        "eks-auth",
        if status == 200 {
            Status::Ok
        } else {
            Status::Refused
        },
        format!("AssumeRoleForPodIdentity → {status}"),
        details,
        Some(line.raw.clone()),
    );
}

pub(crate) fn sts_hops(trace: &mut Trace, events: &[StsEvent], sts: &Sts, action: &str) {
    if let Sts::External(url) = sts {
        if action == "AssumeRole" {
            trace.hop(
                "sts",
                Status::Info,
                format!("STS calls went to {url} (not recorded by the lab)"),
                vec!["eks-auth's log line above names the assumed role".into()],
                None,
            );
        }
        return;
    }
    let mine: Vec<&StsEvent> = events
        .iter()
        .filter(|e| e.action.as_deref() == Some(action))
        .collect();
    if mine.is_empty() && action == "AssumeRole" {
        trace.hop(
            "sts",
            Status::Skipped,
            "no AssumeRole reached STS",
            vec![],
            None,
        );
    }
    for e in mine {
        let verdict = serde_json::to_value(e.signature)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut details = match (&e.web_identity, &e.web_identity_token) {
            (Some(who), token) => vec![format!(
                "unsigned: the credential is a web identity token (fingerprint {}) of {}, audience {}, verified against {}",
                token.as_deref().unwrap_or("-"),
                who.subject,
                who.audience,
                who.provider_arn
            )],
            (None, Some(token)) => vec![format!(
                "unsigned: a web identity token (fingerprint {token}) STS could not verify"
            )],
            (None, None) => vec![format!(
                "signed by {} ({}): SigV4 {verdict}",
                e.caller_arn.as_deref().unwrap_or("unknown"),
                e.caller_access_key_id.as_deref().unwrap_or("-"),
            )],
        };
        if let Some(role) = &e.role_arn {
            details.push(format!(
                "role {role}, session {}, duration {} s",
                e.role_session_name.as_deref().unwrap_or("-"),
                e.duration_seconds.as_deref().unwrap_or("3600 (default)")
            ));
        }
        let tags = |list: &[crate::sts::SessionTag]| {
            list.iter()
                .map(|t| format!("{}={}", t.key, t.value))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !e.tags.is_empty() {
            details.push(format!("session tags: {}", tags(&e.tags)));
            details.push(format!("transitive: {}", e.transitive_tag_keys.join(", ")));
        }
        if !e.inherited_tags.is_empty() {
            details.push(format!(
                "carried from the calling session: {}",
                tags(&e.inherited_tags)
            ));
        }
        let ok = match &e.outcome {
            StsOutcome::Issued {
                access_key_id,
                assumed_role_arn,
                expiration,
                ..
            } => {
                details.push(format!(
                    "issued {access_key_id} for {assumed_role_arn}, expires {expiration}"
                ));
                true
            }
            StsOutcome::CallerIdentity { arn, .. } => {
                details.push(format!("answered {arn}"));
                true
            }
            StsOutcome::Refused {
                status,
                code,
                message,
            } => {
                details.push(format!("refused {status} {code}: {message}"));
                false
            }
        };
        trace.hop(
            "sts",
            if ok { Status::Ok } else { Status::Refused },
            action,
            details,
            None,
        );
    }
}

pub(crate) fn credentials_hop(trace: &mut Trace, run: &PodRun) {
    let container = run.report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["kind"] == "container");
    let Some(exchange) = container.and_then(|c| c["container"]["exchange"].as_object()) else {
        return;
    };
    let status = exchange.get("status").and_then(Value::as_u64);
    let details = match status {
        Some(200) => vec![
            format!(
                "access key {}, expires {} (secret key and session token never shown)",
                exchange["access_key_id"].as_str().unwrap_or("-"),
                exchange["expiration"].as_str().unwrap_or("-")
            ),
            format!("round trip {} ms", exchange["latency_ms"]),
        ],
        _ => vec![format!(
            "no credentials: {}",
            exchange
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no answer")
        )],
    };
    trace.hop(
        "pod",
        if status == Some(200) {
            Status::Ok
        } else {
            Status::Refused
        },
        match status {
            Some(s) => format!("the agent's answer reached the pod: {s}"),
            None => "the pod got no answer from the agent".into(),
        },
        details,
        None,
    );
}

pub(crate) fn identity_hop(trace: &mut Trace, run: &PodRun) {
    let verdict = run.report["verdict"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match run.report["identity"]["arn"].as_str() {
        Some(arn) => trace.hop(
            "pod",
            Status::Ok,
            format!("GetCallerIdentity: {arn}"),
            vec![
                format!("demo-app: {verdict}"),
                format!("the pod's run took {} ms", run.elapsed.as_millis()),
            ],
            None,
        ),
        None => trace.hop(
            "pod",
            Status::Refused,
            "no identity: the pod has no working credentials",
            vec![
                format!(
                    "demo-app exited {}: {verdict}",
                    run.exit_code.map_or("by signal".into(), |c| c.to_string())
                ),
                run.report["identity_error"]
                    .as_str()
                    .map(|e| format!("GetCallerIdentity: {e}"))
                    .unwrap_or_default(),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
            None,
        ),
    }
}

pub(crate) fn cache_timing_hop(
    trace: &mut Trace,
    all: &[Logged<AgentRequestLine>],
    first_count: usize,
) {
    let latency = |l: &Logged<AgentRequestLine>| l.answer.latency_ms.unwrap_or_default();
    let misses: Vec<f64> = all
        .iter()
        .filter(|l| l.cache.as_deref() == Some("miss"))
        .map(latency)
        .collect();
    let hits: Vec<f64> = all
        .iter()
        .skip(first_count)
        .filter(|l| l.cache.as_deref() == Some("hit"))
        .map(latency)
        .collect();
    let avg = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    trace.hop(
        "agent",
        Status::Info,
        format!(
            "cache: {} miss(es) at {:.2} ms, the second process's {} hit(s) at {:.2} ms on average",
            misses.len(),
            avg(&misses),
            hits.len(),
            avg(&hits)
        ),
        vec!["a hit is answered from memory: no EKS Auth call, no STS call".into()],
        None,
    );
}
