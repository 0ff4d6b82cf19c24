//! One `AssumeRoleForPodIdentity` exchange, decided in order: the cluster name, the caller
//! ([`crate::caller`]: the agent's own token), the pod's token ([`crate::verify`]) and its node
//! against the caller's, the association and whether the role policy allows its roles, the
//! token's remaining life, whether the cluster still accepts both tokens ([`crate::live`], with
//! `--token-review`), then STS ([`crate::sts`]). Nothing reaches STS unless
//! everything before it passed. Every step fills in an [`Audit`] that the server logs as the one
//! audit line of the exchange.

use std::sync::Arc;

use pod_identity_associations::RolePolicyStore;
use pod_identity_contracts::association::association_arn;
use pod_identity_contracts::eks_auth::{
    AssumeRoleForPodIdentityResponse, AssumedRoleUser, Credentials, ErrorKind,
    PodIdentityAssociationRef, Subject,
};
use pod_identity_contracts::{Association, Secret};

use crate::caller::{Caller, CallerCheck, CallerPolicy};
use crate::config::ClusterArn;
use crate::live::LiveCheck;
use crate::sts::{MIN_DURATION, RoleAssumer, SessionContext, random_suffix, spec_for};
use crate::verify::{Verified, Verifier, token_fingerprint};
use pod_identity_associations::AssociationLookup;

/// A duration in milliseconds, to the microsecond (as the audit line's `latency_ms`).
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A refusal: the EKS Auth error and its message (never containing the token or a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ExchangeError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ExchangeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What the audit line says about one exchange: who, which pod, which role, which association,
/// what came of it. Filled in as far as the exchange got.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub cluster: String,
    /// The caller: `<namespace>/<service account>` of the agent, or `unauthenticated`.
    pub caller: String,
    pub caller_node: String,
    pub caller_token_fingerprint: String,
    pub token_fingerprint: String,
    pub node: String,
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    pub pod_uid: String,
    pub association_id: String,
    pub role_arn: String,
    pub target_role_arn: String,
    pub session_name: String,
    pub assumed_role_arn: String,
    pub access_key_id: String,
    pub sts_code: String,
    /// Time spent waiting on the API server (TokenReview of both tokens), in ms.
    pub review_ms: f64,
    /// Time spent waiting on STS, in ms. The exchange's own cost is its latency minus these two.
    pub sts_ms: f64,
    /// Why the role policy refused the association's roles.
    pub role_policy_denied: String,
}

/// Everything an exchange needs.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub cluster: Arc<ClusterArn>,
    pub cluster_arn: Arc<str>,
    pub audience: Arc<str>,
    pub verifier: Arc<Verifier>,
    pub associations: Arc<dyn AssociationLookup>,
    pub sts: Arc<dyn RoleAssumer>,
    /// Asks the cluster whether the token is still alive (`--token-review`).
    pub live: Option<Arc<dyn LiveCheck>>,
    /// Who may call, and the node binding.
    pub callers: Arc<CallerCheck>,
    /// Which roles each namespace may get; `None` only with `--allow-any-role`.
    pub role_policy: Option<RolePolicyStore>,
}

impl Exchange {
    pub fn new(
        cluster: ClusterArn,
        verifier: Arc<Verifier>,
        associations: Arc<dyn AssociationLookup>,
        sts: Arc<dyn RoleAssumer>,
    ) -> Self {
        let audience: Arc<str> = verifier.settings().audience.as_str().into();
        Self {
            cluster_arn: cluster.arn().into(),
            cluster: Arc::new(cluster),
            audience,
            verifier,
            associations,
            sts,
            live: None,
            callers: Arc::new(CallerCheck::new(CallerPolicy::default())),
            role_policy: None,
        }
    }

    /// Replace the default caller policy (agents of `kube-system/eks-pod-identity-agent` only,
    /// node-bound).
    pub fn with_callers(mut self, policy: CallerPolicy) -> Self {
        self.callers = Arc::new(CallerCheck::new(policy));
        self
    }

    /// Refuse associations whose roles `policy` does not allow, before STS.
    pub fn with_role_policy(mut self, policy: RolePolicyStore) -> Self {
        self.role_policy = Some(policy);
        self
    }

    /// Ask `live` about every token that passed verification, before STS.
    pub fn with_live_check(mut self, live: Arc<dyn LiveCheck>) -> Self {
        self.live = Some(live);
        self
    }

    /// Whether keys and associations are loaded.
    pub fn is_ready(&self) -> bool {
        self.verifier.is_ready() && self.associations.is_ready()
    }

    fn check_cluster(&self, name: &str) -> Result<(), ExchangeError> {
        if name == self.cluster.name {
            Ok(())
        } else {
            Err(ExchangeError::new(
                ErrorKind::ResourceNotFound,
                format!(
                    "No cluster found for name: {}.",
                    name.chars().take(100).collect::<String>()
                ),
            ))
        }
    }

    fn lookup(&self, v: &Verified, audit: &mut Audit) -> Result<Association, ExchangeError> {
        let association = self
            .associations
            .get(&v.namespace, &v.service_account)
            .ok_or_else(|| {
                ExchangeError::new(
                    ErrorKind::ResourceNotFound,
                    format!(
                        "No pod identity association for service account {}/{} in cluster {}.",
                        v.namespace, v.service_account, self.cluster.name
                    ),
                )
            })?;
        audit.association_id = association.id();
        audit.role_arn = association.role_arn.clone();
        audit.target_role_arn = association.target_role_arn.clone().unwrap_or_default();
        if let Some(policy) = &self.role_policy
            && let Err(denied) = policy.check(&association)
        {
            audit.role_policy_denied = denied.to_string();
            return Err(ExchangeError::new(
                ErrorKind::AccessDenied,
                format!(
                    "The pod identity association for service account {}/{} names a role that the role policy of cluster {} does not allow for namespace {}.",
                    v.namespace, v.service_account, self.cluster.name, v.namespace
                ),
            ));
        }
        Ok(association)
    }

    fn note_token(v: &Verified, audit: &mut Audit) {
        audit.node = v.claims.node().map(|n| n.name.clone()).unwrap_or_default();
        audit.namespace = v.namespace.clone();
        audit.service_account = v.service_account.clone();
        audit.pod = v.pod_name.clone();
        audit.pod_uid = v.pod_uid.clone();
    }

    /// Verification and lookup with the cached keys only (no IO): what the benchmark times.
    pub fn verify_and_lookup_cached(
        &self,
        token: &str,
        now: i64,
        audit: &mut Audit,
    ) -> Result<(Verified, Association), ExchangeError> {
        let v = self
            .verifier
            .verify_cached(token, now)
            .map_err(|e| ExchangeError::new(e.kind(), e.to_string()))?;
        Self::note_token(&v, audit);
        let a = self.lookup(&v, audit)?;
        Ok((v, a))
    }

    /// Authenticate the caller and note it in the audit line.
    async fn caller(
        &self,
        caller_token: Option<&Secret>,
        now: i64,
        audit: &mut Audit,
    ) -> Result<Option<Caller>, ExchangeError> {
        let token = caller_token
            .map(|t| t.expose().trim())
            .filter(|t| !t.is_empty());
        match token {
            Some(t) => {
                audit.caller_token_fingerprint = token_fingerprint(t);
                // Until the token is verified, the caller is only someone with a token.
                audit.caller = "unverified".into();
            }
            None => audit.caller = "unauthenticated".into(),
        }
        let caller = self
            .callers
            .authenticate(token, &self.verifier, now)
            .await?;
        if let Some(c) = &caller {
            audit.caller = c.service_account.to_string();
            audit.caller_node = c.node.clone();
        }
        Ok(caller)
    }

    /// The whole exchange. `caller_token` is the agent's own token
    /// ([`pod_identity_contracts::eks_auth::CALLER_TOKEN_HEADER`]).
    pub async fn exchange(
        &self,
        cluster_name: &str,
        token: &Secret,
        caller_token: Option<&Secret>,
        audit: &mut Audit,
    ) -> Result<AssumeRoleForPodIdentityResponse, ExchangeError> {
        audit.cluster = cluster_name.chars().take(100).collect();
        let token = token.expose().trim();
        audit.token_fingerprint = token_fingerprint(token);
        self.check_cluster(cluster_name)?;
        let now = jiff::Timestamp::now().as_second();
        let caller = self.caller(caller_token, now, audit).await?;
        let verified = self
            .verifier
            .verify(token, now)
            .await
            .map_err(|e| ExchangeError::new(e.kind(), e.to_string()))?;
        Self::note_token(&verified, audit);
        self.callers.bind(&verified, caller.as_ref())?;
        let association = self.lookup(&verified, audit)?;
        // Credentials never outlive the token that buys them; STS issues nothing shorter than
        // 15 minutes, so a token with less left is refused (the kubelet has renewed it by then:
        // it rotates at 80% of a token's life, and the webhook asks for at least an hour).
        let left = verified.claims.exp.saturating_sub(now);
        if left < MIN_DURATION.as_secs() as i64 {
            return Err(ExchangeError::new(
                ErrorKind::ExpiredToken,
                format!(
                    "the token expires in {left} s, sooner than the shortest credentials ({} s); present the renewed token",
                    MIN_DURATION.as_secs()
                ),
            ));
        }
        if let Some(live) = &self.live {
            let started = std::time::Instant::now();
            // Both reviews at once: the caller's (usually answered from its 30 s cache) and the
            // pod's. The caller's refusal wins: it says who may not ask.
            let caller_review = async {
                match (&caller, caller_token) {
                    (Some(caller), Some(caller_token)) => {
                        self.callers
                            .review(live.as_ref(), caller_token.expose(), caller, now)
                            .await
                    }
                    _ => Ok(()),
                }
            };
            let (caller_reviewed, pod_reviewed) =
                futures::future::join(caller_review, live.check(token, &verified, &self.audience))
                    .await;
            audit.review_ms = millis(started.elapsed());
            caller_reviewed?;
            pod_reviewed?;
        }
        let spec = spec_for(
            SessionContext {
                cluster_name: &self.cluster.name,
                cluster_arn: &self.cluster_arn,
                namespace: &verified.namespace,
                service_account: &verified.service_account,
                pod_name: &verified.pod_name,
                pod_uid: &verified.pod_uid,
            },
            &association,
            &random_suffix(),
            std::time::Duration::from_secs(left.unsigned_abs()),
        );
        audit.session_name = spec.session_name.clone();
        let started = std::time::Instant::now();
        let assumed = self.sts.assume(spec).await;
        audit.sts_ms = millis(started.elapsed());
        let assumed = assumed.map_err(|e| {
            audit.sts_code = e.sts_code.clone().unwrap_or_default();
            ExchangeError::new(e.kind, e.message)
        })?;
        audit.assumed_role_arn = assumed.assumed_role_arn.clone();
        audit.access_key_id =
            pod_identity_contracts::credentials::short_access_key_id(&assumed.access_key_id);
        let association_id = association.id();
        Ok(AssumeRoleForPodIdentityResponse {
            subject: Subject {
                namespace: verified.namespace,
                service_account: verified.service_account,
            },
            audience: self.audience.to_string(),
            pod_identity_association: PodIdentityAssociationRef {
                association_arn: association_arn(
                    &self.cluster.partition,
                    &self.cluster.region,
                    &self.cluster.account,
                    &self.cluster.name,
                    &association_id,
                ),
                association_id,
            },
            assumed_role_user: AssumedRoleUser {
                arn: assumed.assumed_role_arn,
                assume_role_id: assumed.assumed_role_id,
            },
            credentials: Credentials {
                access_key_id: assumed.access_key_id,
                secret_access_key: assumed.secret_access_key,
                session_token: assumed.session_token,
                expiration: assumed.expiration,
            },
        })
    }
}
