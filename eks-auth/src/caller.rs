//! Who is asking, and may they ask for this pod? Off EKS, a pod's token alone would be a bearer
//! credential: anyone holding a copy could trade it here from anywhere. So the agent presents its
//! own projected service-account token with each exchange ([`CALLER_TOKEN_HEADER`], audience
//! [`CALLER_AUDIENCE`]); this module verifies it like a pod token (signature, issuer, lifetime,
//! and TokenReview when the exchange has a live check), requires one of the configured agent
//! ServiceAccounts, and binds the exchange to the agent's node: the pod token's
//! `kubernetes.io.node` (name and uid) must equal the agent token's. A copied token then works only
//! on its own node, and only through that node's agent.
//!
//! Two explicit escapes, both off by default and logged at startup: callers without a token
//! (`--allow-unauthenticated-callers`, e.g. a bare EKS Auth client in tests) and pod tokens
//! without node claims (`--allow-tokens-without-node`, clusters before Kubernetes 1.30).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use pod_identity_contracts::eks_auth::{CALLER_AUDIENCE, CALLER_TOKEN_HEADER, ErrorKind};
use pod_identity_contracts::secret::digest;

use crate::exchange::ExchangeError;
use crate::live::LiveCheck;
use crate::verify::{Verified, Verifier, token_fingerprint};

/// How long a caller token's positive TokenReview answer is reused. An agent sends the same token
/// for up to an hour, and a thousand pods starting at once must not cost a thousand reviews of
/// it; a deleted agent pod is noticed within this.
pub const CALLER_REVIEW_TTL_SECONDS: i64 = 30;
/// Most caller tokens whose review is remembered (one or two per node).
const CALLER_REVIEW_CACHE: usize = 4096;

/// A ServiceAccount allowed to call, as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for ServiceAccountRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "{s:?} is not a ServiceAccount as namespace/name (e.g. kube-system/eks-pod-identity-agent)"
            )),
        }
    }
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who may call and what they must prove.
#[derive(Debug, Clone)]
pub struct CallerPolicy {
    /// Audience the caller's token must carry.
    pub audience: String,
    /// ServiceAccounts whose tokens may call (the agent's).
    pub service_accounts: Vec<ServiceAccountRef>,
    /// Serve callers that present no token (no node binding then).
    pub allow_unauthenticated: bool,
    /// Serve pod tokens that name no node (no node binding then).
    pub allow_tokens_without_node: bool,
}

impl Default for CallerPolicy {
    fn default() -> Self {
        Self {
            audience: CALLER_AUDIENCE.to_string(),
            service_accounts: vec![
                pod_identity_contracts::eks_auth::DEFAULT_CALLER_SERVICE_ACCOUNT
                    .parse()
                    .expect("the default caller is namespace/name"),
            ],
            allow_unauthenticated: false,
            allow_tokens_without_node: false,
        }
    }
}

/// An authenticated caller: an agent pod and the node it runs on.
#[derive(Debug, Clone)]
pub struct Caller {
    pub service_account: ServiceAccountRef,
    pub pod: String,
    pub node: String,
    pub node_uid: String,
    pub token_fingerprint: String,
    /// The caller's verified token, for its TokenReview.
    pub verified: Verified,
}

/// Verifies callers and binds pod tokens to their node.
#[derive(Debug)]
pub struct CallerCheck {
    policy: CallerPolicy,
    /// Caller tokens the API server confirmed, by digest, until when (unix seconds).
    reviewed: Mutex<HashMap<[u8; 32], i64>>,
    /// Reviews under way, by digest: concurrent exchanges presenting the same caller token share
    /// one TokenReview and its answer (single flight), so an agent's burst costs one review.
    inflight: Mutex<HashMap<[u8; 32], Arc<Review>>>,
}

/// One TokenReview's answer: until when the token is confirmed, or why not.
type Review = tokio::sync::OnceCell<Result<i64, ExchangeError>>;

fn denied(message: impl Into<String>) -> ExchangeError {
    ExchangeError::new(ErrorKind::AccessDenied, message)
}

impl CallerCheck {
    pub fn new(policy: CallerPolicy) -> Self {
        Self {
            policy,
            reviewed: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &CallerPolicy {
        &self.policy
    }

    /// Verify the caller's token (`None`: the caller sent none). `Ok(None)` only when
    /// unauthenticated callers are allowed.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
        verifier: &Verifier,
        now: i64,
    ) -> Result<Option<Caller>, ExchangeError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            if self.policy.allow_unauthenticated {
                return Ok(None);
            }
            return Err(denied(format!(
                "the caller is not authenticated: eks-auth serves only node agents that send their own service-account token in {CALLER_TOKEN_HEADER}"
            )));
        };
        let verified = verifier
            .verify_for(token, now, &self.policy.audience)
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::ServiceUnavailable {
                    ExchangeError::new(e.kind(), e.to_string())
                } else {
                    denied(format!("the caller's identity token is not valid: {e}"))
                }
            })?;
        let service_account = ServiceAccountRef {
            namespace: verified.namespace.clone(),
            name: verified.service_account.clone(),
        };
        if !self.policy.service_accounts.contains(&service_account) {
            return Err(denied(format!(
                "the caller {service_account} is not an allowed node agent"
            )));
        }
        let Some(node) = verified.claims.node().filter(|n| !n.name.is_empty()) else {
            return Err(denied(
                "the caller's identity token names no node (it must be a projected token of a pod on a node)",
            ));
        };
        Ok(Some(Caller {
            service_account,
            pod: verified.pod_name.clone(),
            node: node.name.clone(),
            node_uid: node.uid.clone(),
            token_fingerprint: token_fingerprint(token),
            verified,
        }))
    }

    /// The pod token must name the caller's node (name and uid).
    pub fn bind(&self, pod: &Verified, caller: Option<&Caller>) -> Result<(), ExchangeError> {
        let Some(node) = pod.claims.node().filter(|n| !n.name.is_empty()) else {
            if self.policy.allow_tokens_without_node {
                return Ok(());
            }
            return Err(denied(
                "the pod's token names no node, so it cannot be bound to the node presenting it; clusters before Kubernetes 1.30 need --allow-tokens-without-node",
            ));
        };
        let Some(caller) = caller else {
            return Ok(());
        };
        if node.name != caller.node || node.uid != caller.node_uid {
            return Err(denied(format!(
                "the token belongs to a pod on node {}, but the agent on node {} presented it",
                node.name, caller.node
            )));
        }
        Ok(())
    }

    /// Ask the cluster whether the caller's token is still alive (its agent pod not deleted),
    /// reusing a positive answer for [`CALLER_REVIEW_TTL_SECONDS`] and never past the token's
    /// `exp`.
    pub async fn review(
        &self,
        live: &dyn LiveCheck,
        token: &str,
        caller: &Caller,
        now: i64,
    ) -> Result<(), ExchangeError> {
        let token = token.trim();
        let key = digest(token.as_bytes());
        if self.lock().get(&key).is_some_and(|until| now < *until) {
            return Ok(());
        }
        let review = {
            let mut inflight = lock(&self.inflight);
            if inflight.len() >= CALLER_REVIEW_CACHE {
                // Left behind only by reviews whose every waiter went away; none is needed.
                inflight.retain(|_, r| Arc::strong_count(r) > 1);
            }
            inflight.entry(key).or_default().clone()
        };
        let answer = review
            .get_or_init(|| async {
                live.check(token, &caller.verified, &self.policy.audience)
                    .await
                    .map(|()| (now + CALLER_REVIEW_TTL_SECONDS).min(caller.verified.claims.exp))
                    .map_err(|e| match e.kind {
                        ErrorKind::ServiceUnavailable => e,
                        _ => denied(format!("the caller's {}", e.message)),
                    })
            })
            .await
            .clone();
        {
            let mut inflight = lock(&self.inflight);
            if inflight.get(&key).is_some_and(|r| Arc::ptr_eq(r, &review)) {
                inflight.remove(&key);
            }
        }
        let until = answer?;
        let mut reviewed = self.lock();
        if reviewed.len() >= CALLER_REVIEW_CACHE {
            reviewed.retain(|_, until| now < *until);
            if reviewed.len() >= CALLER_REVIEW_CACHE {
                reviewed.clear();
            }
        }
        reviewed.insert(key, until);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], i64>> {
        lock(&self.reviewed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::future::BoxFuture;

    use super::*;

    /// A TokenReview that takes a while and says yes (or no), counting the times it is asked.
    #[derive(Debug, Default)]
    struct SlowReview {
        asked: AtomicUsize,
        refuse: bool,
    }

    impl LiveCheck for SlowReview {
        fn check<'a>(
            &'a self,
            _token: &'a str,
            _verified: &'a Verified,
            _audience: &'a str,
        ) -> BoxFuture<'a, Result<(), ExchangeError>> {
            Box::pin(async move {
                self.asked.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.refuse {
                    Err(ExchangeError::new(
                        ErrorKind::InvalidToken,
                        "token is no longer valid",
                    ))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn caller(exp: i64) -> Caller {
        let claims = serde_json::from_value(serde_json::json!({
            "iss": "https://issuer.test",
            "aud": ["eks-auth.podidentity.dev"],
            "sub": "system:serviceaccount:kube-system:eks-pod-identity-agent",
            "exp": exp,
        }))
        .unwrap();
        Caller {
            service_account: "kube-system/eks-pod-identity-agent".parse().unwrap(),
            pod: "agent-1".into(),
            node: "node-1".into(),
            node_uid: "uid-1".into(),
            token_fingerprint: "sha256:0".into(),
            verified: Verified {
                namespace: "kube-system".into(),
                service_account: "eks-pod-identity-agent".into(),
                pod_name: "agent-1".into(),
                pod_uid: "pod-uid".into(),
                claims,
            },
        }
    }

    #[tokio::test]
    async fn a_burst_with_one_caller_token_costs_one_review_and_shares_its_answer() {
        let check = CallerCheck::new(CallerPolicy::default());
        let live = SlowReview::default();
        let c = caller(10_000);
        let burst = (0..64).map(|_| check.review(&live, "caller-token", &c, 1_000));
        let answers = futures::future::join_all(burst).await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(live.asked.load(Ordering::SeqCst), 1);
        assert!(
            lock(&check.inflight).is_empty(),
            "the review is not left behind"
        );
        // Remembered for the TTL, then asked again.
        check
            .review(&live, "caller-token", &c, 1_029)
            .await
            .unwrap();
        assert_eq!(live.asked.load(Ordering::SeqCst), 1);
        check
            .review(&live, "caller-token", &c, 1_030)
            .await
            .unwrap();
        assert_eq!(live.asked.load(Ordering::SeqCst), 2);

        // A refusal is shared by the burst that waited for it, and not remembered.
        let refusing = SlowReview {
            refuse: true,
            ..SlowReview::default()
        };
        let burst = (0..16).map(|_| check.review(&refusing, "deleted-agent", &c, 1_000));
        let answers = futures::future::join_all(burst).await;
        assert_eq!(refusing.asked.load(Ordering::SeqCst), 1);
        for a in &answers {
            let e = a.as_ref().unwrap_err();
            assert_eq!(e.kind, ErrorKind::AccessDenied);
            assert!(e.message.starts_with("the caller's"), "{e:?}");
        }
        assert!(
            check
                .review(&refusing, "deleted-agent", &c, 1_001)
                .await
                .is_err()
        );
        assert_eq!(refusing.asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn service_accounts_parse_as_namespace_slash_name() {
        let sa: ServiceAccountRef = "kube-system/eks-pod-identity-agent".parse().unwrap();
        assert_eq!(sa.namespace, "kube-system");
        assert_eq!(sa.name, "eks-pod-identity-agent");
        assert_eq!(sa.to_string(), "kube-system/eks-pod-identity-agent");
        for bad in ["", "agent", "/agent", "ns/", "a/b/c"] {
            let err = bad.parse::<ServiceAccountRef>().unwrap_err();
            assert!(err.contains("namespace/name"), "{bad:?}: {err}");
        }
    }
}
