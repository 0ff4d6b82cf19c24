//! The log lines other crates read: the agent's line per credentials request and eks-auth's audit
//! line per exchange. Their field names are written once here, as constants the writers log under,
//! and the structs here are what readers (the lab, tests, the bench) parse those JSON lines into
//! instead of indexing a `serde_json::Value` by string.
//!
//! Both binaries log one flat JSON object per line (`runtime::log_format`): `timestamp`, `level`,
//! `message`, then the event's fields under their dotted names. A reader tolerates what it does not
//! know (other lines, fields added later), so every field of a struct is an `Option`: a refused
//! request has no `role_arn`, a served one no `error.code`, and a line of another kind that shares
//! a field (the agent's cache lines carry `token.fingerprint`) parses with the rest `None`.
//!
//! The fields both lines carry come in groups, each a small struct flattened into both lines: the
//! [`Head`] of every line, the [`Answer`] (status, latency, client), the [`Pod`] (who asked, what
//! it was given) and the [`Refusal`]. Flattening changes only the Rust side: on the wire a line is
//! still one flat object, read as `line.pod.k8s_pod` for `"k8s.pod"`.
//!
//! serde's `rename` takes a literal, not a constant, so each name is spelled twice in this file;
//! the tests below hold the constants and the structs to the same names.

use serde::{Deserialize, Serialize};

/// Field names. Shared names mean the same in both lines.
pub mod key {
    pub const TIMESTAMP: &str = "timestamp";
    pub const LEVEL: &str = "level";
    pub const MESSAGE: &str = "message";

    /// The HTTP status answered.
    pub const HTTP_STATUS: &str = "http.status";
    /// From the request's arrival to its answer, in milliseconds.
    pub const LATENCY_MS: &str = "latency_ms";
    /// `sha256:` and the first 12 hex digits of the SHA-256 of the pod's token.
    pub const TOKEN_FINGERPRINT: &str = "token.fingerprint";
    pub const K8S_NODE: &str = "k8s.node";
    pub const K8S_NAMESPACE: &str = "k8s.namespace";
    pub const K8S_SERVICE_ACCOUNT: &str = "k8s.service_account";
    pub const K8S_POD: &str = "k8s.pod";
    pub const K8S_POD_UID: &str = "k8s.pod_uid";
    pub const ASSOCIATION_ID: &str = "association_id";
    pub const ROLE_ARN: &str = "role_arn";
    pub const ACCESS_KEY_ID: &str = "access_key_id";
    pub const CLIENT_ADDR: &str = "client.addr";
    /// The EKS Auth error code of a refusal.
    pub const ERROR_CODE: &str = "error.code";
    pub const ERROR_MESSAGE: &str = "error.message";

    // The agent's request line only.
    /// How the cache answered: `hit`, `miss`, `coalesced`, `stale`, `bypass`; `none` for a request
    /// the agent refused itself, `error` for one EKS Auth refused or could not answer.
    pub const CACHE: &str = "cache";
    /// The served credentials' expiration (RFC 3339).
    pub const EXPIRATION: &str = "expiration";

    // eks-auth's audit line only.
    /// `true` on every audit line.
    pub const AUDIT: &str = "audit";
    /// `success`, or the EKS Auth error code.
    pub const OUTCOME: &str = "outcome";
    pub const REVIEW_MS: &str = "review_ms";
    pub const STS_MS: &str = "sts_ms";
    pub const REQUEST_ID: &str = "request_id";
    pub const CLUSTER: &str = "cluster";
    /// `<namespace>/<service account>` of the calling agent, `unauthenticated` or `unverified`.
    pub const CALLER: &str = "caller";
    pub const CALLER_NODE: &str = "caller.node";
    pub const CALLER_TOKEN_FINGERPRINT: &str = "caller.token_fingerprint";
    pub const TARGET_ROLE_ARN: &str = "target_role_arn";
    pub const SESSION_NAME: &str = "session_name";
    pub const ASSUMED_ROLE_ARN: &str = "assumed_role_arn";
    /// STS's own error code.
    pub const STS_CODE: &str = "sts.code";
    pub const ROLE_POLICY_DENIED: &str = "role_policy.denied";
}

/// The `message` of the agent's line for a request it answered with credentials (INFO).
pub const CREDENTIALS_SERVED: &str = "credentials served";
/// The `message` of the agent's line for a request it refused or could not answer (WARN).
pub const CREDENTIALS_REFUSED: &str = "credentials refused";
/// The `message` of eks-auth's audit line (INFO on success, WARN on a refusal).
pub const EXCHANGE: &str = "exchange";

/// The head of every line: when, at which level, which event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Head {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a request was answered, and to whom.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(rename = "http.status", skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(rename = "client.addr", skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
}

/// The pod a request was for (named by its token) and what it was given: its association, the
/// role and the access key of the credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    #[serde(rename = "token.fingerprint", skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    #[serde(rename = "k8s.namespace", skip_serializing_if = "Option::is_none")]
    pub k8s_namespace: Option<String>,
    #[serde(
        rename = "k8s.service_account",
        skip_serializing_if = "Option::is_none"
    )]
    pub k8s_service_account: Option<String>,
    #[serde(rename = "k8s.pod", skip_serializing_if = "Option::is_none")]
    pub k8s_pod: Option<String>,
    #[serde(rename = "k8s.pod_uid", skip_serializing_if = "Option::is_none")]
    pub k8s_pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
}

/// Why a request was refused: the EKS Auth error code and its message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(rename = "error.code", skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(rename = "error.message", skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The agent's line per credentials request: [`CREDENTIALS_SERVED`] or [`CREDENTIALS_REFUSED`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRequestLine {
    #[serde(flatten)]
    pub head: Head,
    #[serde(flatten)]
    pub answer: Answer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(flatten)]
    pub pod: Pod,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(flatten)]
    pub error: Refusal,
}

impl AgentRequestLine {
    /// Whether this is the line of a request (served or refused), not another agent line.
    pub fn is_request(&self) -> bool {
        matches!(
            self.head.message.as_deref(),
            Some(CREDENTIALS_SERVED | CREDENTIALS_REFUSED)
        )
    }
}

/// eks-auth's audit line per exchange ([`EXCHANGE`], `audit: true`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeAuditLine {
    #[serde(flatten)]
    pub head: Head,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(flatten)]
    pub answer: Answer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(flatten)]
    pub error: Refusal,
    #[serde(rename = "sts.code", skip_serializing_if = "Option::is_none")]
    pub sts_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(rename = "caller.node", skip_serializing_if = "Option::is_none")]
    pub caller_node: Option<String>,
    #[serde(
        rename = "caller.token_fingerprint",
        skip_serializing_if = "Option::is_none"
    )]
    pub caller_token_fingerprint: Option<String>,
    #[serde(rename = "k8s.node", skip_serializing_if = "Option::is_none")]
    pub k8s_node: Option<String>,
    #[serde(flatten)]
    pub pod: Pod,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assumed_role_arn: Option<String>,
    #[serde(rename = "role_policy.denied", skip_serializing_if = "Option::is_none")]
    pub role_policy_denied: Option<String>,
}

impl ExchangeAuditLine {
    /// Whether this is an audit line, not another eks-auth line.
    pub fn is_audit(&self) -> bool {
        self.audit == Some(true) && self.head.message.as_deref() == Some(EXCHANGE)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::key::*;
    use super::*;

    /// A line with every one of `keys`, each with a value of its field's type.
    fn line_with(keys: &[&str]) -> Value {
        let mut line = Map::new();
        for (i, &k) in keys.iter().enumerate() {
            let value = match k {
                HTTP_STATUS => json!(200 + i),
                LATENCY_MS | REVIEW_MS | STS_MS => json!(0.5 + i as f64),
                AUDIT => json!(true),
                _ => json!(format!("value of {k}")),
            };
            line.insert(k.to_string(), value);
        }
        Value::Object(line)
    }

    /// Every constant names a field of the struct and every field has a constant: a line with
    /// exactly those keys survives a round trip through the struct, no key lost, none added.
    fn same_names<T: serde::de::DeserializeOwned + Serialize>(keys: &[&str]) {
        let line = line_with(keys);
        let parsed: T = serde_json::from_value(line.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), line);
    }

    #[test]
    fn the_agent_line_has_the_named_fields() {
        same_names::<AgentRequestLine>(&[
            TIMESTAMP,
            LEVEL,
            MESSAGE,
            HTTP_STATUS,
            LATENCY_MS,
            CACHE,
            TOKEN_FINGERPRINT,
            K8S_NAMESPACE,
            K8S_SERVICE_ACCOUNT,
            K8S_POD,
            K8S_POD_UID,
            ASSOCIATION_ID,
            ROLE_ARN,
            ACCESS_KEY_ID,
            EXPIRATION,
            CLIENT_ADDR,
            ERROR_CODE,
            ERROR_MESSAGE,
        ]);
    }

    #[test]
    fn the_exchange_line_has_the_named_fields() {
        same_names::<ExchangeAuditLine>(&[
            TIMESTAMP,
            LEVEL,
            MESSAGE,
            AUDIT,
            OUTCOME,
            HTTP_STATUS,
            LATENCY_MS,
            REVIEW_MS,
            STS_MS,
            REQUEST_ID,
            CLIENT_ADDR,
            ERROR_CODE,
            ERROR_MESSAGE,
            STS_CODE,
            CLUSTER,
            CALLER,
            CALLER_NODE,
            CALLER_TOKEN_FINGERPRINT,
            TOKEN_FINGERPRINT,
            K8S_NODE,
            K8S_NAMESPACE,
            K8S_SERVICE_ACCOUNT,
            K8S_POD,
            K8S_POD_UID,
            ASSOCIATION_ID,
            ROLE_ARN,
            TARGET_ROLE_ARN,
            SESSION_NAME,
            ASSUMED_ROLE_ARN,
            ACCESS_KEY_ID,
            ROLE_POLICY_DENIED,
        ]);
    }

    /// A reader takes lines of other kinds and fields it does not know.
    #[test]
    fn other_lines_and_unknown_fields_parse() {
        let cache_line: AgentRequestLine = serde_json::from_str(
            r#"{"timestamp":"2026-11-26T17:06:35.000007Z","level":"DEBUG","message":"refresh","token.fingerprint":"sha256:0123456789ab","coalesced":true}"#,
        )
        .unwrap();
        assert_eq!(
            cache_line.pod.token_fingerprint.as_deref(),
            Some("sha256:0123456789ab")
        );
        assert!(!cache_line.is_request());
        let served: AgentRequestLine =
            serde_json::from_value(json!({"message": CREDENTIALS_SERVED, "http.status": 200}))
                .unwrap();
        assert!(served.is_request());
        assert_eq!(served.answer.http_status, Some(200));
        let audit: ExchangeAuditLine =
            serde_json::from_value(json!({"message": EXCHANGE, "audit": true, "new": [1]}))
                .unwrap();
        assert!(audit.is_audit());
    }

    /// Lines as the binaries write them (a field added later included) parse into the groups, and
    /// are written back with the same names and values: the groups leave the wire flat.
    #[test]
    fn written_lines_parse_into_their_groups_and_back() {
        let served = r#"{"timestamp":"2026-11-26T17:06:35.000007Z","level":"INFO","message":"credentials served","http.status":200,"latency_ms":0.042,"cache":"hit","token.fingerprint":"sha256:0123456789ab","k8s.namespace":"lab","k8s.service_account":"demo","k8s.pod":"demo-app","k8s.pod_uid":"773ee4fd","association_id":"a-1","role_arn":"arn:aws:iam::111122223333:role/r","access_key_id":"ASIA…MPLE","expiration":"2026-11-26T23:06:35Z","client.addr":"127.0.0.1:5000","later":1}"#;
        let line: AgentRequestLine = serde_json::from_str(served).unwrap();
        assert!(line.is_request());
        assert_eq!(line.head.level.as_deref(), Some("INFO"));
        assert_eq!(line.answer.http_status, Some(200));
        assert_eq!(line.answer.latency_ms, Some(0.042));
        assert_eq!(line.answer.client_addr.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(line.cache.as_deref(), Some("hit"));
        assert_eq!(line.pod.k8s_pod.as_deref(), Some("demo-app"));
        assert_eq!(line.pod.access_key_id.as_deref(), Some("ASIA…MPLE"));
        assert_eq!(line.error, Refusal::default());
        let mut written: Value = serde_json::from_str(served).unwrap();
        written.as_object_mut().unwrap().remove("later");
        assert_eq!(serde_json::to_value(&line).unwrap(), written);

        let refused = r#"{"timestamp":"2026-11-26T17:06:35.000007Z","level":"WARN","message":"exchange","audit":true,"outcome":"AccessDeniedException","http.status":403,"latency_ms":3,"review_ms":1.5,"sts_ms":0.0,"request_id":"r-1","client.addr":"127.0.0.1:5001","error.code":"AccessDeniedException","error.message":"no","sts.code":"","cluster":"lab","caller":"unauthenticated","caller.node":"","caller.token_fingerprint":"","token.fingerprint":"sha256:0123456789ab","k8s.node":"","k8s.namespace":"lab","k8s.service_account":"demo","k8s.pod":"demo-app","k8s.pod_uid":"773ee4fd","association_id":"","role_arn":"","target_role_arn":"","session_name":"","role_policy.denied":"","later":{"a":1}}"#;
        let line: ExchangeAuditLine = serde_json::from_str(refused).unwrap();
        assert!(line.is_audit());
        assert_eq!(line.answer.http_status, Some(403));
        assert_eq!(line.answer.latency_ms, Some(3.0));
        assert_eq!(line.error.code.as_deref(), Some("AccessDeniedException"));
        assert_eq!(line.error.message.as_deref(), Some("no"));
        assert_eq!(line.pod.k8s_namespace.as_deref(), Some("lab"));
        assert_eq!(line.pod.association_id.as_deref(), Some(""));
        assert_eq!(line.pod.access_key_id, None);
        let mut written: Value = serde_json::from_str(refused).unwrap();
        written.as_object_mut().unwrap().remove("later");
        written[LATENCY_MS] = json!(3.0);
        assert_eq!(serde_json::to_value(&line).unwrap(), written);
    }

    /// A line with none of the fields is written as `{}`: no group adds a key of its own.
    #[test]
    fn an_empty_line_is_an_empty_object() {
        assert_eq!(
            serde_json::to_string(&AgentRequestLine::default()).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::to_string(&ExchangeAuditLine::default()).unwrap(),
            "{}"
        );
    }
}
