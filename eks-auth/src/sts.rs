//! The STS side of an exchange: what to ask ([`AssumeSpec`], built by [`spec_for`]), and asking
//! it through aws-sdk-sts with eks-auth's own credentials ([`SdkAssumer`]).
//!
//! One `AssumeRole` to the association's role, with the session name
//! `eks-<cluster>-<pod>-<suffix>` and the six transitive session tags (unless disabled); then,
//! when the association has a `targetRoleArn`, a second `AssumeRole` from that session to it.
//! The session policy goes on the hop whose credentials are returned (the last one).
//! Duration: 6 h, falling back through 3 h, 2 h and 1 h while STS says the role's
//! `MaxSessionDuration` is lower (what a role accepted is remembered for an hour, so the ladder
//! is climbed once per role, not per exchange); the chained hop asks for 1 h, the most AWS allows
//! for role chaining.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::Tag;
use futures::future::BoxFuture;
use pod_identity_contracts::Secret;
use pod_identity_contracts::eks_auth::ErrorKind;

use crate::metrics::Metrics;

/// Duration asked for first (as EKS Auth: 6 hours).
pub const PREFERRED_DURATION: Duration = Duration::from_secs(6 * 3600);
/// Duration every role allows (the smallest `MaxSessionDuration`), and the role-chaining cap.
pub const FALLBACK_DURATION: Duration = Duration::from_secs(3600);
/// STS's shortest session (`DurationSeconds` 900).
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// Durations tried in turn while STS says the role's `MaxSessionDuration` is lower.
pub const DURATION_LADDER: [Duration; 4] = [
    PREFERRED_DURATION,
    Duration::from_secs(3 * 3600),
    Duration::from_secs(2 * 3600),
    FALLBACK_DURATION,
];
/// How long a role's learned duration is remembered (a role's maximum may be raised).
pub const LEARNED_DURATION_TTL: Duration = Duration::from_secs(3600);
/// The key under which a duration learned for every role is kept (no role ARN looks like it).
const EVERY_ROLE: &str = "*";
/// Longest role session name STS accepts.
pub const MAX_SESSION_NAME: usize = 64;

/// One session tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTag {
    pub key: &'static str,
    pub value: String,
}

/// Everything STS is asked for one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeSpec {
    pub role_arn: String,
    pub target_role_arn: Option<String>,
    pub session_name: String,
    /// Empty when the association disables session tags. All are transitive.
    pub tags: Vec<SessionTag>,
    pub policy: Option<String>,
    /// The longest session allowed: the presenting token's remaining life, so credentials
    /// never outlive the token that bought them. At least [`MIN_DURATION`].
    pub max_duration: Duration,
}

/// What the pod gets.
#[derive(Debug, Clone)]
pub struct Assumed {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    /// Unix seconds.
    pub expiration: i64,
    pub assumed_role_arn: String,
    pub assumed_role_id: String,
    /// The `DurationSeconds` STS accepted.
    pub requested: Duration,
}

/// An STS failure, already mapped to the EKS Auth error a caller can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StsError {
    pub kind: ErrorKind,
    pub message: String,
    /// STS's own error code, for logs (`AccessDenied`, `Throttling`, ...).
    pub sts_code: Option<String>,
}

/// Calls STS for an exchange.
pub trait RoleAssumer: Send + Sync + std::fmt::Debug + 'static {
    fn assume(&self, spec: AssumeSpec) -> BoxFuture<'static, Result<Assumed, StsError>>;
}

/// Inputs of [`spec_for`] that come from the cluster and the verified token.
#[derive(Debug, Clone, Copy)]
pub struct SessionContext<'a> {
    pub cluster_name: &'a str,
    pub cluster_arn: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
}

/// The AssumeRole request(s) for one association and pod.
pub fn spec_for(
    ctx: SessionContext<'_>,
    association: &pod_identity_contracts::Association,
    suffix: &str,
    max_duration: Duration,
) -> AssumeSpec {
    let tags = if association.disable_session_tags {
        Vec::new()
    } else {
        vec![
            tag("eks-cluster-arn", ctx.cluster_arn),
            tag("eks-cluster-name", ctx.cluster_name),
            tag("kubernetes-namespace", ctx.namespace),
            tag("kubernetes-service-account", ctx.service_account),
            tag("kubernetes-pod-name", ctx.pod_name),
            tag("kubernetes-pod-uid", ctx.pod_uid),
        ]
    };
    AssumeSpec {
        role_arn: association.role_arn.clone(),
        target_role_arn: association.target_role_arn.clone(),
        session_name: session_name(ctx.cluster_name, ctx.pod_name, suffix),
        tags,
        policy: association.policy.clone(),
        max_duration: max_duration.max(MIN_DURATION),
    }
}

fn tag(key: &'static str, value: &str) -> SessionTag {
    // Tag values: up to 256 of [\p{L}\p{Z}\p{N}_.:/=+\-@]. Kubernetes names and uids, cluster
    // names and ARNs already fit; anything else is replaced rather than failing the call.
    let value: String = value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect();
    SessionTag { key, value }
}

/// `eks-<cluster>-<pod>-<suffix>`, at most 64 characters of `[\w+=,.@-]`: the cluster and pod
/// part is cut to fit, the suffix (which makes the session unique) is kept whole.
pub fn session_name(cluster: &str, pod: &str, suffix: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let suffix: String = clean(suffix).chars().take(16).collect();
    let budget = MAX_SESSION_NAME - "eks-".len() - 1 - suffix.len();
    let mut middle = format!("{}-{}", clean(cluster), clean(pod));
    middle.truncate(budget);
    format!("eks-{middle}-{suffix}")
}

/// A random 10-character suffix of `[a-z0-9]`.
pub fn random_suffix() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// [`RoleAssumer`] over aws-sdk-sts.
#[derive(Debug, Clone)]
pub struct SdkAssumer {
    sdk: aws_config::SdkConfig,
    client: aws_sdk_sts::Client,
    endpoint: Option<String>,
    metrics: Metrics,
    /// Per role: the longest duration STS accepted after refusing a longer one, and when, so a
    /// role with a short `MaxSessionDuration` costs the ladder once, not on every exchange.
    learned: Arc<std::sync::Mutex<std::collections::HashMap<String, (Duration, Instant)>>>,
    /// Set by [`SdkAssumer::set_role_session`].
    role_session: Arc<std::sync::atomic::AtomicBool>,
}

impl SdkAssumer {
    /// eks-auth's own credentials and region from `sdk` (the default chain); `endpoint`
    /// overrides the STS URL.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: Option<&str>, metrics: Metrics) -> Self {
        let client = aws_sdk_sts::Client::from_conf(sts_config(sdk, endpoint, None));
        Self {
            sdk: sdk.clone(),
            client,
            endpoint: endpoint.map(str::to_string),
            metrics,
            learned: Arc::default(),
            role_session: Arc::default(),
        }
    }

    /// eks-auth's own identity, from GetCallerIdentity.
    pub async fn identity(&self) -> Result<OwnIdentity, StsError> {
        let out = self
            .client
            .get_caller_identity()
            .send()
            .await
            .map_err(map_sdk_error)?;
        let account = out.account().unwrap_or_default().to_string();
        let arn = out.arn().unwrap_or_default().to_string();
        let partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
        if account.len() != 12 {
            return Err(StsError {
                kind: ErrorKind::InternalServer,
                message: "STS GetCallerIdentity returned no account".into(),
                sts_code: None,
            });
        }
        Ok(OwnIdentity {
            account,
            partition,
            arn,
        })
    }

    /// eks-auth's own credentials are a role session (web identity, or any assumed role):
    /// every AssumeRole it makes is role chaining, which STS caps at an hour, so it asks for an
    /// hour straight away instead of climbing down the ladder.
    pub fn set_role_session(&self) {
        self.role_session
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Who eks-auth is in AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnIdentity {
    pub account: String,
    pub partition: String,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>` for a role session (keyless),
    /// `arn:aws:iam::<account>:user/<name>` for static keys.
    pub arn: String,
}

impl OwnIdentity {
    /// A role session: AssumeRole from it is role chaining.
    pub fn is_role_session(&self) -> bool {
        self.arn.contains(":assumed-role/")
    }

    /// An IAM user's long-term keys.
    pub fn is_long_term_user(&self) -> bool {
        self.arn.contains(":user/")
    }
}

fn sts_config(
    sdk: &aws_config::SdkConfig,
    endpoint: Option<&str>,
    credentials: Option<aws_credential_types::Credentials>,
) -> aws_sdk_sts::Config {
    let mut builder = aws_sdk_sts::config::Builder::from(sdk);
    if let Some(ep) = endpoint {
        builder = builder.endpoint_url(ep);
    }
    if let Some(c) = credentials {
        builder = builder.credentials_provider(c);
    }
    builder.build()
}

impl RoleAssumer for SdkAssumer {
    fn assume(&self, spec: AssumeSpec) -> BoxFuture<'static, Result<Assumed, StsError>> {
        let this = self.clone();
        Box::pin(async move {
            let first = this.hop(&this.client, &spec, true).await?;
            let Some(target) = &spec.target_role_arn else {
                return Ok(first);
            };
            let creds = aws_credential_types::Credentials::new(
                first.access_key_id.clone(),
                first.secret_access_key.expose(),
                Some(first.session_token.expose().to_string()),
                None,
                "eks-auth-chain",
            );
            let client = aws_sdk_sts::Client::from_conf(sts_config(
                &this.sdk,
                this.endpoint.as_deref(),
                Some(creds),
            ));
            let second = AssumeSpec {
                role_arn: target.clone(),
                target_role_arn: None,
                session_name: spec.session_name.clone(),
                // Transitive tags carry over from the first session by themselves.
                tags: Vec::new(),
                policy: spec.policy.clone(),
                max_duration: spec.max_duration,
            };
            this.hop(&client, &second, false).await
        })
    }
}

impl SdkAssumer {
    async fn hop(
        &self,
        client: &aws_sdk_sts::Client,
        spec: &AssumeSpec,
        first_hop: bool,
    ) -> Result<Assumed, StsError> {
        // The session policy applies to the credentials returned: the last hop.
        let last_hop = !first_hop || spec.target_role_arn.is_none();
        let policy = if last_hop { spec.policy.clone() } else { None };
        let durations = durations_to_try(
            first_hop,
            self.learned_duration(&spec.role_arn),
            spec.max_duration,
        );
        let tried_longer = std::sync::atomic::AtomicBool::new(false);
        let chained = std::sync::atomic::AtomicBool::new(false);
        let result = assume_with_fallback(&durations, |duration| {
            if duration < durations[0] {
                tried_longer.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let chained = &chained;
            let client = client.clone();
            let metrics = self.metrics.clone();
            let spec = spec.clone();
            let policy = policy.clone();
            async move {
                let tags: Vec<Tag> = spec
                    .tags
                    .iter()
                    .map(|t| {
                        Tag::builder()
                            .key(t.key)
                            .value(&t.value)
                            .build()
                            .expect("key and value are set")
                    })
                    .collect();
                let transitive: Vec<String> = spec.tags.iter().map(|t| t.key.to_string()).collect();
                let started = Instant::now();
                let result = client
                    .assume_role()
                    .role_arn(&spec.role_arn)
                    .role_session_name(&spec.session_name)
                    .duration_seconds(i32::try_from(duration.as_secs()).unwrap_or(3600))
                    .set_tags((!tags.is_empty()).then_some(tags))
                    .set_transitive_tag_keys((!transitive.is_empty()).then_some(transitive))
                    .set_policy(policy)
                    .send()
                    .await;
                metrics
                    .sts_latency
                    .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
                    .observe(started.elapsed().as_secs_f64());
                let out = result.map_err(map_sdk_error).inspect_err(|e| {
                    if is_chaining_limit(e) {
                        chained.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                })?;
                let creds = out.credentials().ok_or_else(|| StsError {
                    kind: ErrorKind::InternalServer,
                    message: "STS answered AssumeRole without credentials".into(),
                    sts_code: None,
                })?;
                let user = out.assumed_role_user().ok_or_else(|| StsError {
                    kind: ErrorKind::InternalServer,
                    message: "STS answered AssumeRole without an assumed role user".into(),
                    sts_code: None,
                })?;
                Ok(Assumed {
                    access_key_id: creds.access_key_id().to_string(),
                    secret_access_key: Secret::new(creds.secret_access_key()),
                    session_token: Secret::new(creds.session_token()),
                    expiration: creds.expiration().secs(),
                    assumed_role_arn: user.arn().to_string(),
                    assumed_role_id: user.assumed_role_id().to_string(),
                    requested: duration,
                })
            }
        })
        .await;
        if first_hop
            && let Ok(assumed) = &result
            && tried_longer.load(std::sync::atomic::Ordering::Relaxed)
        {
            // The role-chaining cap is a property of eks-auth's own identity (a role session,
            // e.g. from web identity), not of the role: it holds for every role.
            let key = if chained.load(std::sync::atomic::Ordering::Relaxed) {
                EVERY_ROLE
            } else {
                spec.role_arn.as_str()
            };
            self.remember_duration(key, assumed.requested);
        }
        result
    }

    fn learned_duration(&self, role: &str) -> Option<Duration> {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        let live = |key: &str| {
            learned
                .get(key)
                .filter(|(_, at)| at.elapsed() < LEARNED_DURATION_TTL)
                .map(|(d, _)| *d)
        };
        let chained = self
            .role_session
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(FALLBACK_DURATION);
        [live(role), live(EVERY_ROLE), chained]
            .into_iter()
            .flatten()
            .min()
    }

    fn remember_duration(&self, role: &str, d: Duration) {
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if learned.len() > 10_000 {
            learned.clear();
        }
        learned.insert(role.to_string(), (d, Instant::now()));
    }
}

/// The ladder for a hop: the first hop from what the role accepted before (or the top), a chained
/// hop at the role-chaining cap; rungs longer than `max` (the token's remaining life) give way to
/// `max` itself, so credentials end when the token does, not earlier than they need to.
fn durations_to_try(first_hop: bool, learned: Option<Duration>, max: Duration) -> Vec<Duration> {
    let ladder: Vec<Duration> = if first_hop {
        DURATION_LADDER
            .into_iter()
            .filter(|d| learned.is_none_or(|s| *d <= s))
            .collect()
    } else {
        vec![FALLBACK_DURATION]
    };
    let max = max.max(MIN_DURATION);
    let cut = ladder.iter().any(|d| *d > max);
    let mut out: Vec<Duration> = ladder.into_iter().filter(|d| *d <= max).collect();
    if cut && out.first() != Some(&max) {
        out.insert(0, max);
    }
    out
}

/// Try each duration in turn while STS says the duration is too long for the role.
pub async fn assume_with_fallback<F, Fut>(
    durations: &[Duration],
    mut call: F,
) -> Result<Assumed, StsError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Assumed, StsError>>,
{
    let mut last = None;
    for &d in durations {
        match call(d).await {
            Ok(a) => return Ok(a),
            Err(e) if is_duration_error(&e) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StsError {
        kind: ErrorKind::InternalServer,
        message: "no duration to try".into(),
        sts_code: None,
    }))
}

fn is_duration_error(e: &StsError) -> bool {
    e.sts_code.as_deref() == Some("ValidationError") && e.message.contains("DurationSeconds")
}

/// STS's refusal of more than an hour to a role session ("…exceeds the 1 hour session limit for
/// roles assumed by role chaining."): eks-auth itself runs as a role session.
fn is_chaining_limit(e: &StsError) -> bool {
    is_duration_error(e) && e.message.contains("role chaining")
}

/// Map an STS error code to what the EKS Auth caller can act on.
pub fn kind_for_sts_code(code: &str) -> ErrorKind {
    match code {
        "AccessDenied" | "AccessDeniedException" => ErrorKind::AccessDenied,
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => ErrorKind::Throttling,
        _ => ErrorKind::InternalServer,
    }
}

fn map_sdk_error<E, R>(err: SdkError<E, R>) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown").to_string();
            let kind = kind_for_sts_code(&code);
            let sts_message = e.message().unwrap_or("no message");
            let message = match kind {
                ErrorKind::AccessDenied => format!(
                    "eks-auth is not allowed to assume the role (check the role's trust policy): {sts_message}"
                ),
                ErrorKind::Throttling => format!("STS is throttling: {sts_message}"),
                _ => format!("STS refused the request ({code}): {sts_message}"),
            };
            StsError {
                kind,
                message,
                sts_code: Some(code),
            }
        }
        SdkError::TimeoutError(_) => StsError {
            kind: ErrorKind::ServiceUnavailable,
            message: "STS did not answer in time".into(),
            sts_code: None,
        },
        SdkError::DispatchFailure(_) => StsError {
            kind: ErrorKind::ServiceUnavailable,
            message: "STS is unreachable".into(),
            sts_code: None,
        },
        _ => StsError {
            kind: ErrorKind::InternalServer,
            message: "STS answered with something that is not an AssumeRole response".into(),
            sts_code: None,
        },
    }
}

/// Shared handle.
pub type SharedAssumer = Arc<dyn RoleAssumer>;

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_contracts::Association;

    #[test]
    fn no_rung_outlives_the_token() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let m = |n: u64| Duration::from_secs(n * 60);
        // A fresh 24 h token: the whole ladder.
        assert_eq!(
            durations_to_try(true, None, h(20)),
            DURATION_LADDER.to_vec()
        );
        // 5 h left: 5 h first, then the rungs below it.
        assert_eq!(
            durations_to_try(true, None, h(5)),
            vec![h(5), h(3), h(2), h(1)]
        );
        // Exactly a rung: no duplicate.
        assert_eq!(durations_to_try(true, None, h(3)), vec![h(3), h(2), h(1)]);
        // What the role accepted before still caps the top.
        assert_eq!(durations_to_try(true, Some(h(2)), h(5)), vec![h(2), h(1)]);
        // 40 minutes left: 40 minutes, for either hop.
        assert_eq!(durations_to_try(true, None, m(40)), vec![m(40)]);
        assert_eq!(durations_to_try(false, None, m(40)), vec![m(40)]);
        assert_eq!(durations_to_try(false, None, h(5)), vec![FALLBACK_DURATION]);
        // Never below STS's minimum.
        assert_eq!(durations_to_try(true, None, m(1)), vec![MIN_DURATION]);
    }

    fn assoc() -> Association {
        Association {
            namespace: "default".into(),
            service_account: "s3-reader".into(),
            role_arn: "arn:aws:iam::111122223333:role/r".into(),
            target_role_arn: None,
            disable_session_tags: false,
            policy: None,
            association_id: None,
        }
    }

    fn ctx() -> SessionContext<'static> {
        SessionContext {
            cluster_name: "lab",
            cluster_arn: "arn:aws:eks:us-west-2:111122223333:cluster/lab",
            namespace: "default",
            service_account: "s3-reader",
            pod_name: "web-0",
            pod_uid: "uid-1",
        }
    }

    #[test]
    fn session_names_fit_and_keep_the_suffix() {
        assert_eq!(
            session_name("lab", "web-0", "abc123"),
            "eks-lab-web-0-abc123"
        );
        let long = session_name(&"c".repeat(100), &"p".repeat(253), "suffix1234");
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("eks-ccc") && long.ends_with("-suffix1234"));
        let odd = session_name("a b", "pod/x:y", "s");
        assert_eq!(odd, "eks-a-b-pod-x-y-s");
        for c in random_suffix().chars() {
            assert!(c.is_ascii_lowercase() || c.is_ascii_digit());
        }
        assert_ne!(random_suffix(), random_suffix());
    }

    #[test]
    fn six_transitive_tags_unless_disabled() {
        let spec = spec_for(ctx(), &assoc(), "x", PREFERRED_DURATION);
        let keys: Vec<_> = spec.tags.iter().map(|t| t.key).collect();
        assert_eq!(
            keys,
            [
                "eks-cluster-arn",
                "eks-cluster-name",
                "kubernetes-namespace",
                "kubernetes-service-account",
                "kubernetes-pod-name",
                "kubernetes-pod-uid"
            ]
        );
        assert_eq!(spec.tags[0].value, ctx().cluster_arn);
        let mut a = assoc();
        a.disable_session_tags = true;
        a.policy = Some("{}".into());
        let spec = spec_for(ctx(), &a, "x", PREFERRED_DURATION);
        assert!(spec.tags.is_empty());
        assert_eq!(spec.policy.as_deref(), Some("{}"));
    }

    #[test]
    fn sts_codes_map_to_actionable_errors() {
        assert_eq!(kind_for_sts_code("AccessDenied"), ErrorKind::AccessDenied);
        assert_eq!(kind_for_sts_code("Throttling"), ErrorKind::Throttling);
        assert_eq!(
            kind_for_sts_code("RegionDisabledException"),
            ErrorKind::InternalServer
        );
        assert_eq!(
            kind_for_sts_code("MalformedPolicyDocument"),
            ErrorKind::InternalServer
        );
    }

    fn assumed(d: Duration) -> Assumed {
        Assumed {
            access_key_id: "ASIA".into(),
            secret_access_key: Secret::new("s"),
            session_token: Secret::new("t"),
            expiration: d.as_secs() as i64,
            assumed_role_arn: "arn".into(),
            assumed_role_id: "id".into(),
            requested: d,
        }
    }

    #[tokio::test]
    async fn falls_back_to_one_hour_when_the_role_allows_less_than_six() {
        let mut asked = Vec::new();
        let got = assume_with_fallback(&DURATION_LADDER, |d| {
            asked.push(d);
            async move {
                if d > FALLBACK_DURATION {
                    Err(StsError {
                        kind: ErrorKind::InternalServer,
                        message: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.".into(),
                        sts_code: Some("ValidationError".into()),
                    })
                } else {
                    Ok(assumed(d))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(asked, DURATION_LADDER);
        assert_eq!(got.expiration, 3600);
        assert_eq!(got.requested, FALLBACK_DURATION);

        // Other errors stop at once.
        let mut calls = 0;
        let e = assume_with_fallback(&[PREFERRED_DURATION, FALLBACK_DURATION], |_| {
            calls += 1;
            async {
                Err(StsError {
                    kind: ErrorKind::AccessDenied,
                    message: "no".into(),
                    sts_code: Some("AccessDenied".into()),
                })
            }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(e.kind, ErrorKind::AccessDenied);
    }
}
