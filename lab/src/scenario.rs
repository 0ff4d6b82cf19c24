//! The scenarios: what each one changes about the happy path, what must come of it, and the
//! explanation the lab prints at the end.

use serde::Serialize;

/// One scenario of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    HappyPath,
    NoAssociation,
    ExpiredToken,
    WrongAudience,
    StaticKeysShadow,
    AgentDown,
    CrossAccount,
    Cache,
    StolenTokenOtherNode,
    UnauthenticatedCaller,
    DeletedPod,
    LongLivedToken,
    RoleOutsidePolicy,
}

impl Scenario {
    pub const ALL: [Scenario; 13] = [
        Scenario::HappyPath,
        Scenario::NoAssociation,
        Scenario::ExpiredToken,
        Scenario::WrongAudience,
        Scenario::StaticKeysShadow,
        Scenario::AgentDown,
        Scenario::CrossAccount,
        Scenario::Cache,
        Scenario::StolenTokenOtherNode,
        Scenario::UnauthenticatedCaller,
        Scenario::DeletedPod,
        Scenario::LongLivedToken,
        Scenario::RoleOutsidePolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::HappyPath => "happy-path",
            Scenario::NoAssociation => "no-association",
            Scenario::ExpiredToken => "expired-token",
            Scenario::WrongAudience => "wrong-audience",
            Scenario::StaticKeysShadow => "static-keys-shadow",
            Scenario::AgentDown => "agent-down",
            Scenario::CrossAccount => "cross-account",
            Scenario::Cache => "cache",
            Scenario::StolenTokenOtherNode => "stolen-token-other-node",
            Scenario::UnauthenticatedCaller => "unauthenticated-caller",
            Scenario::DeletedPod => "deleted-pod",
            Scenario::LongLivedToken => "long-lived-token",
            Scenario::RoleOutsidePolicy => "role-outside-policy",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line for `pod-identity-lab scenarios`.
    pub fn summary(self) -> &'static str {
        match self {
            Scenario::HappyPath => {
                "the pod's SDK gets its association's role through agent, eks-auth and STS"
            }
            Scenario::NoAssociation => {
                "the association is deleted after the pod was admitted: eks-auth answers 404"
            }
            Scenario::ExpiredToken => {
                "the kubelet stopped refreshing the token: the agent refuses it (400) before any call"
            }
            Scenario::WrongAudience => {
                "the token is for another audience (IRSA's sts.amazonaws.com): eks-auth refuses it"
            }
            Scenario::StaticKeysShadow => {
                "static keys in the pod's env win over Pod Identity: the pod acts as an IAM user"
            }
            Scenario::AgentDown => {
                "no agent on the node: the container provider cannot connect and the SDK has no credentials"
            }
            Scenario::CrossAccount => {
                "the association has a target role in another account: two AssumeRole hops"
            }
            Scenario::Cache => {
                "a second pod process with the same token is served from the agent's cache"
            }
            Scenario::StolenTokenOtherNode => {
                "the pod's token, copied to another node, is presented by that node's agent: eks-auth refuses it (403-class AccessDenied)"
            }
            Scenario::UnauthenticatedCaller => {
                "the token reaches eks-auth from a caller with no identity of its own: eks-auth refuses it"
            }
            Scenario::DeletedPod => {
                "the token outlives its pod: copied before the pod was deleted, it is refused by TokenReview"
            }
            Scenario::LongLivedToken => {
                "a token minted to live 100 years: valid signature, valid now, refused by eks-auth for its lifetime"
            }
            Scenario::RoleOutsidePolicy => {
                "the association is edited to name an admin role its namespace may not get: eks-auth refuses before STS (the role policy)"
            }
        }
    }

    /// Whether demo-app must end with working credentials.
    pub fn expects_credentials(self) -> bool {
        matches!(
            self,
            Scenario::HappyPath
                | Scenario::StaticKeysShadow
                | Scenario::CrossAccount
                | Scenario::Cache
        )
    }

    /// The explanation printed after the trace.
    pub fn explanation(self) -> &'static str {
        match self {
            Scenario::HappyPath => {
                "The webhook saw an association for the pod's service account and injected the token \
volume and the two variables. The SDK found nothing earlier in its chain, so the container provider \
sent the projected token to the agent. The agent checked the Host header and the token's shape and \
time (it cannot check the signature: it has no keys), missed its cache and asked EKS Auth. eks-auth \
verified the signature against the issuer's JWKS, then issuer, audience and time, found the \
association, and assumed its role with the pod's session tags. The credentials came back through the \
agent, and STS accepted their signature on GetCallerIdentity: the pod is the association's role."
            }
            Scenario::NoAssociation => {
                "The pod was admitted while the association existed, so it carries the injection. By the \
time it asked, the association was gone: eks-auth verified the token, found no association for \
(namespace, service account) and answered ResourceNotFoundException (404); the agent passed the 404 on \
and cached nothing. The SDK treats an error from a configured container provider as final, so the pod \
has no credentials. Fix: recreate the association (no pod restart is needed)."
            }
            Scenario::ExpiredToken => {
                "The token's exp is in the past, as when the kubelet cannot refresh a projected token. \
The agent checks time validity before spending an upstream call and answers 400 without asking EKS \
Auth; eks-auth and STS never see the request. A real pod recovers when the kubelet writes a fresh \
token (the SDK re-reads the file on every fetch)."
            }
            Scenario::WrongAudience => {
                "The token is validly signed but its audience is sts.amazonaws.com (an IRSA token), not \
pods.eks.amazonaws.com. The agent does not verify tokens, so it forwarded it; eks-auth verified the \
signature, then refused the audience with InvalidTokenException (400). No call reached STS: a token \
minted for one purpose cannot be spent on another."
            }
            Scenario::StaticKeysShadow => {
                "The pod's spec sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Every SDK asks the \
environment first, so the static keys won and the SDK never reached the container step: the pod acts \
as the IAM user the keys belong to, not as its association's role. (The one request the agent saw is \
demo-app's own look at the container step, showing the role the pod would have had.) The webhook \
cannot help: it never overrides variables a pod sets. Remove the keys from the spec and rotate them."
            }
            Scenario::AgentDown => {
                "The pod is injected but nothing listens on the agent's address (the DaemonSet is not \
running on this node). The container provider is configured, so aws-config treats its connection \
error as final: the chain stops there and IMDS is not tried (demo-app shows the step that ended it). \
An SDK that fell through to IMDS on a node that does not block it would get the node's role instead, \
which is why nodes should block IMDS for pods (docs/agent-on-a-node.md). Check the agent DaemonSet's \
pods and readiness on this node."
            }
            Scenario::CrossAccount => {
                "The association names a target role in account 444455556666. eks-auth first assumed the \
association's role in the cluster's account with the pod's transitive session tags, then, from that \
session, the target role (role chaining: at most one hour). The target role trusts the first role, \
not the pod: the pod ends up in the other account without holding any long-lived key of it."
            }
            Scenario::Cache => {
                "Two pod processes presented the same token. The first missed the agent's cache and \
caused one exchange; every later request, the second process's included, was a cache hit (keyed by \
the token's digest) answered without EKS Auth or STS. The timings show the difference."
            }
            Scenario::StolenTokenOtherNode => {
                "The pod's token names the node it was projected on (kubernetes.io.node, name and uid). \
Here it was copied and presented by the agent of another node, which sent its own token, bound to \
its own node, as every agent does. eks-auth verified both tokens, saw two different nodes and \
answered AccessDeniedException; nothing reached STS. A copied token works only on its own node, \
only through that node's agent. On EKS, nothing binds a token to the presenting node."
            }
            Scenario::UnauthenticatedCaller => {
                "Whoever holds a copy of a pod's token can reach eks-auth directly (a NetworkPolicy is \
only as good as the CNI). Here the caller sent the token with no token of its own, as a bare curl \
would: eks-auth refused it with AccessDeniedException before looking at the pod's token, and nothing \
reached STS. Only node agents, each proving who it is with its own projected token, are served \
(--allow-unauthenticated-callers exists for tests, and says so loudly)."
            }
            Scenario::DeletedPod => {
                "The token was copied out of the pod, then the pod was deleted. Its signature stays \
valid until exp, and the agent (which has no keys and asks no one) forwarded it. But eks-auth asks \
the API server before every exchange (TokenReview, --token-review as shipped), and a bound token dies \
with its pod: the API server no longer knows the pod, eks-auth answered InvalidTokenException and \
nothing reached STS. The same holds for the agent's own token when its pod is gone."
            }
            Scenario::LongLivedToken => {
                "The token's signature is valid and it is valid now, but it was minted to live for 100 \
years (exp - iat), as a TokenRequest with a huge expirationSeconds could be. The agent cannot judge a \
lifetime it has no policy for and forwarded it; eks-auth refuses any token meant to live longer \
than 24 h (--max-token-lifetime-seconds, EKS's default token life), so a copied token cannot buy \
credentials for a century. Nothing reached STS."
            }
            Scenario::RoleOutsidePolicy => {
                "After the pod was admitted, someone who may write associations in its namespace \
pointed the association at lab-admin, a role that trusts eks-auth as every pod role does. STS would \
have granted it: whoever writes an association could otherwise name any role eks-auth can assume. \
The operator's role policy (--role-policy, separate from who writes associations) says which roles \
each namespace may get, and eks-auth checked it before calling STS: AccessDeniedException, the \
denied role in the audit line (role_policy.denied), nothing reached STS. The webhook applies the \
same policy at admission. EKS guards the same step with iam:PassRole when an association is created."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
            assert!(!s.summary().is_empty() && !s.explanation().is_empty());
        }
        let mut names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Scenario::ALL.len());
        assert_eq!(Scenario::from_name("nope"), None);
    }
}
