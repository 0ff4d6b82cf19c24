//! The scenarios, as data: for each, in one table ([`SPECS`]), its name, what it changes about
//! the happy path ([`Change`], which the run applies), what must come of it ([`Expect`], which the
//! run checks) and the explanation the lab prints at the end. A new scenario that combines the
//! changes below touches this file only.

use serde::Serialize;

/// One scenario of the lab (its [`Spec`] says everything about it).
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

/// What a scenario changes about the happy path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The association between the pod's admission and its exchange.
    pub association: AssociationChange,
    /// The association has a target role in another account.
    pub cross_account: bool,
    /// The pod's spec sets static keys.
    pub static_keys: bool,
    /// The agent the pod's token reaches.
    pub agent: AgentChange,
    /// The token the kubelet writes.
    pub token: TokenChange,
    /// A second process in the pod runs with the same token.
    pub second_process: bool,
}

impl Change {
    pub const HAPPY_PATH: Change = Change {
        association: AssociationChange::Kept,
        cross_account: false,
        static_keys: false,
        agent: AgentChange::OnThisNode,
        token: TokenChange::Fresh,
        second_process: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssociationChange {
    Kept,
    /// Deleted after the pod was admitted.
    Deleted,
    /// Edited after admission to name a role the namespace's role policy does not allow.
    PointedAtAdmin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChange {
    OnThisNode,
    /// Nothing listens where the pod asks.
    Down,
    /// The token is copied to another node, whose agent presents its own (other) node's token.
    OnOtherNode,
    /// The caller presents no token of its own.
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenChange {
    Fresh,
    /// Already past its `exp`.
    Expired,
    /// For IRSA's audience, sts.amazonaws.com.
    WrongAudience,
    /// Minted to live a century.
    LongLived,
    /// Its pod is deleted after the token was copied.
    PodDeleted,
}

/// What must come of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// demo-app ends with working credentials.
    pub credentials: bool,
    /// The provider that wins the SDK's chain.
    pub winner: WinnerExpect,
    /// Part of the ARN STS reports for the winning credentials (checked against the lab's STS).
    pub identity: Option<&'static str>,
    pub agent: AgentExpect,
    pub eks_auth: EksAuthExpect,
    /// AssumeRole calls STS issues (a non-zero count is checked against the lab's STS only).
    pub assumes: Option<usize>,
    /// Requests that miss the agent's cache.
    pub misses: Option<usize>,
}

impl Expect {
    /// The pod gets a role through the container provider.
    const ROLE: Expect = Expect {
        credentials: true,
        winner: WinnerExpect::Provider("container"),
        identity: None,
        agent: AgentExpect::Answers(200),
        eks_auth: EksAuthExpect::Unchecked,
        assumes: None,
        misses: None,
    };
    /// eks-auth refuses the exchange with `code` after the agent's own checks passed (the agent
    /// passes its 400 on), and nothing reaches STS.
    const fn refused_by_eks_auth(code: &'static str) -> Expect {
        Expect {
            agent: AgentExpect::Answers(400),
            eks_auth: EksAuthExpect::Answers(code),
            assumes: Some(0),
            ..Expect::REFUSED
        }
    }

    /// The pod gets nothing.
    const REFUSED: Expect = Expect {
        credentials: false,
        winner: WinnerExpect::Unchecked,
        identity: None,
        agent: AgentExpect::Unreached,
        eks_auth: EksAuthExpect::Unchecked,
        assumes: None,
        misses: None,
    };
}

/// Which provider of the SDK's chain wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinnerExpect {
    Unchecked,
    Provider(&'static str),
    /// None: the chain ends without credentials.
    Nobody,
}

/// The agent's first answer to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentExpect {
    Answers(u16),
    /// Only demo-app's own look at the container step reaches it, never the SDK.
    AtMostOneLook,
    /// No agent answers.
    Unreached,
}

/// eks-auth's answer to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EksAuthExpect {
    Unchecked,
    /// This EKS Auth error code.
    Answers(&'static str),
    /// The request never reaches it.
    NotAsked,
}

/// A scenario, whole.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    /// One line for `pod-identity-lab scenarios`.
    pub summary: &'static str,
    pub change: Change,
    pub expect: Expect,
    /// Printed after the trace.
    pub explanation: &'static str,
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

    /// Its row of [`SPECS`] (in the order of [`Scenario::ALL`]).
    pub fn spec(self) -> &'static Spec {
        &SPECS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line for `pod-identity-lab scenarios`.
    pub fn summary(self) -> &'static str {
        self.spec().summary
    }

    pub fn change(self) -> Change {
        self.spec().change
    }

    pub fn expect(self) -> Expect {
        self.spec().expect
    }

    /// Whether demo-app must end with working credentials.
    pub fn expects_credentials(self) -> bool {
        self.spec().expect.credentials
    }

    /// The explanation printed after the trace.
    pub fn explanation(self) -> &'static str {
        self.spec().explanation
    }
}

/// Every scenario, in the order of [`Scenario`]'s variants.
pub const SPECS: [Spec; 13] = [
    // HappyPath
    Spec {
        name: "happy-path",
        summary: "the pod's SDK gets its association's role through agent, eks-auth and STS",
        change: Change::HAPPY_PATH,
        expect: Expect {
            identity: Some(":assumed-role/lab-pod-role/"),
            assumes: Some(1),
            ..Expect::ROLE
        },
        explanation: "The webhook saw an association for the pod's service account and injected the token \
volume and the two variables. The SDK found nothing earlier in its chain, so the container provider \
sent the projected token to the agent. The agent checked the Host header and the token's shape and \
time (it cannot check the signature: it has no keys), missed its cache and asked EKS Auth. eks-auth \
verified the signature against the issuer's JWKS, then issuer, audience and time, found the \
association, and assumed its role with the pod's session tags. The credentials came back through the \
agent, and STS accepted their signature on GetCallerIdentity: the pod is the association's role.",
    },
    // NoAssociation
    Spec {
        name: "no-association",
        summary: "the association is deleted after the pod was admitted: eks-auth answers 404",
        change: Change {
            association: AssociationChange::Deleted,
            ..Change::HAPPY_PATH
        },
        expect: Expect {
            agent: AgentExpect::Answers(404),
            eks_auth: EksAuthExpect::Answers("ResourceNotFoundException"),
            assumes: Some(0),
            ..Expect::REFUSED
        },
        explanation: "The pod was admitted while the association existed, so it carries the injection. By the \
time it asked, the association was gone: eks-auth verified the token, found no association for \
(namespace, service account) and answered ResourceNotFoundException (404); the agent passed the 404 on \
and cached nothing. The SDK treats an error from a configured container provider as final, so the pod \
has no credentials. Fix: recreate the association (no pod restart is needed).",
    },
    // ExpiredToken
    Spec {
        name: "expired-token",
        summary: "the kubelet stopped refreshing the token: the agent refuses it (400) before any call",
        change: Change {
            token: TokenChange::Expired,
            ..Change::HAPPY_PATH
        },
        expect: Expect {
            agent: AgentExpect::Answers(400),
            eks_auth: EksAuthExpect::NotAsked,
            assumes: Some(0),
            ..Expect::REFUSED
        },
        explanation: "The token's exp is in the past, as when the kubelet cannot refresh a projected token. \
The agent checks time validity before spending an upstream call and answers 400 without asking EKS \
Auth; eks-auth and STS never see the request. A real pod recovers when the kubelet writes a fresh \
token (the SDK re-reads the file on every fetch).",
    },
    // WrongAudience
    Spec {
        name: "wrong-audience",
        summary: "the token is for another audience (IRSA's sts.amazonaws.com): eks-auth refuses it",
        change: Change {
            token: TokenChange::WrongAudience,
            ..Change::HAPPY_PATH
        },
        expect: Expect::refused_by_eks_auth("InvalidTokenException"),
        explanation: "The token is validly signed but its audience is sts.amazonaws.com (an IRSA token), not \
pods.eks.amazonaws.com. The agent does not verify tokens, so it forwarded it; eks-auth verified the \
signature, then refused the audience with InvalidTokenException (400). No call reached STS: a token \
minted for one purpose cannot be spent on another.",
    },
    // StaticKeysShadow
    Spec {
        name: "static-keys-shadow",
        summary: "static keys in the pod's env win over Pod Identity: the pod acts as an IAM user",
        change: Change {
            static_keys: true,
            ..Change::HAPPY_PATH
        },
        expect: Expect {
            credentials: true,
            winner: WinnerExpect::Provider("environment"),
            identity: Some(":user/ci-deployer"),
            // demo-app looks at the container step itself (one request); the SDK never asks.
            agent: AgentExpect::AtMostOneLook,
            eks_auth: EksAuthExpect::Unchecked,
            assumes: None,
            misses: None,
        },
        explanation: "The pod's spec sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Every SDK asks the \
environment first, so the static keys won and the SDK never reached the container step: the pod acts \
as the IAM user the keys belong to, not as its association's role. (The one request the agent saw is \
demo-app's own look at the container step, showing the role the pod would have had.) The webhook \
cannot help: it never overrides variables a pod sets. Remove the keys from the spec and rotate them.",
    },
    // AgentDown
    Spec {
        name: "agent-down",
        summary: "no agent on the node: the container provider cannot connect and the SDK has no credentials",
        change: Change {
            agent: AgentChange::Down,
            ..Change::HAPPY_PATH
        },
        expect: Expect {
            winner: WinnerExpect::Nobody,
            agent: AgentExpect::Unreached,
            ..Expect::REFUSED
        },
        explanation: "The pod is injected but nothing listens on the agent's address (the DaemonSet is not \
running on this node). The container provider is configured, so aws-config treats its connection \
error as final: the chain stops there and IMDS is not tried (demo-app shows the step that ended it). \
An SDK that fell through to IMDS on a node that does not block it would get the node's role instead, \
which is why nodes should block IMDS for pods (docs/agent-on-a-node.md). Check the agent DaemonSet's \
pods and readiness on this node.",
    },
    // CrossAccount
    Spec {
        name: "cross-account",
        summary: "the association has a target role in another account: two AssumeRole hops",
        change: Change {
            cross_account: true,
            ..Change::HAPPY_PATH
        },
        expect: Expect {
            identity: Some("444455556666:assumed-role/lab-cross-account/"),
            assumes: Some(2),
            ..Expect::ROLE
        },
        explanation: "The association names a target role in account 444455556666. eks-auth first assumed the \
association's role in the cluster's account with the pod's transitive session tags, then, from that \
session, the target role (role chaining: at most one hour). The target role trusts the first role, \
not the pod: the pod ends up in the other account without holding any long-lived key of it.",
    },
    // Cache
    Spec {
        name: "cache",
        summary: "a second pod process with the same token is served from the agent's cache",
        change: Change {
            second_process: true,
            ..Change::HAPPY_PATH
        },
        expect: Expect {
            identity: Some(":assumed-role/lab-pod-role/"),
            assumes: Some(1),
            misses: Some(1),
            ..Expect::ROLE
        },
        explanation: "Two pod processes presented the same token. The first missed the agent's cache and \
caused one exchange; every later request, the second process's included, was a cache hit (keyed by \
the token's digest) answered without EKS Auth or STS. The timings show the difference.",
    },
    // StolenTokenOtherNode
    Spec {
        name: "stolen-token-other-node",
        summary: "the pod's token, copied to another node, is presented by that node's agent: eks-auth refuses it (403-class AccessDenied)",
        change: Change {
            agent: AgentChange::OnOtherNode,
            ..Change::HAPPY_PATH
        },
        expect: Expect::refused_by_eks_auth("AccessDeniedException"),
        explanation: "The pod's token names the node it was projected on (kubernetes.io.node, name and uid). \
Here it was copied and presented by the agent of another node, which sent its own token, bound to \
its own node, as every agent does. eks-auth verified both tokens, saw two different nodes and \
answered AccessDeniedException; nothing reached STS. A copied token works only on its own node, \
only through that node's agent. On EKS, nothing binds a token to the presenting node.",
    },
    // UnauthenticatedCaller
    Spec {
        name: "unauthenticated-caller",
        summary: "the token reaches eks-auth from a caller with no identity of its own: eks-auth refuses it",
        change: Change {
            agent: AgentChange::Anonymous,
            ..Change::HAPPY_PATH
        },
        expect: Expect::refused_by_eks_auth("AccessDeniedException"),
        explanation: "Whoever holds a copy of a pod's token can reach eks-auth directly (a NetworkPolicy is \
only as good as the CNI). Here the caller sent the token with no token of its own, as a bare curl \
would: eks-auth refused it with AccessDeniedException before looking at the pod's token, and nothing \
reached STS. Only node agents, each proving who it is with its own projected token, are served \
(--allow-unauthenticated-callers exists for tests, and says so loudly).",
    },
    // DeletedPod
    Spec {
        name: "deleted-pod",
        summary: "the token outlives its pod: copied before the pod was deleted, it is refused by TokenReview",
        change: Change {
            token: TokenChange::PodDeleted,
            ..Change::HAPPY_PATH
        },
        expect: Expect::refused_by_eks_auth("InvalidTokenException"),
        explanation: "The token was copied out of the pod, then the pod was deleted. Its signature stays \
valid until exp, and the agent (which has no keys and asks no one) forwarded it. But eks-auth asks \
the API server before every exchange (TokenReview, --token-review as shipped), and a bound token dies \
with its pod: the API server no longer knows the pod, eks-auth answered InvalidTokenException and \
nothing reached STS. The same holds for the agent's own token when its pod is gone.",
    },
    // LongLivedToken
    Spec {
        name: "long-lived-token",
        summary: "a token minted to live 100 years: valid signature, valid now, refused by eks-auth for its lifetime",
        change: Change {
            token: TokenChange::LongLived,
            ..Change::HAPPY_PATH
        },
        expect: Expect::refused_by_eks_auth("InvalidTokenException"),
        explanation: "The token's signature is valid and it is valid now, but it was minted to live for 100 \
years (exp - iat), as a TokenRequest with a huge expirationSeconds could be. The agent cannot judge a \
lifetime it has no policy for and forwarded it; eks-auth refuses any token meant to live longer \
than 24 h (--max-token-lifetime, EKS's default token life), so a copied token cannot buy \
credentials for a century. Nothing reached STS.",
    },
    // RoleOutsidePolicy
    Spec {
        name: "role-outside-policy",
        summary: "the association is edited to name an admin role its namespace may not get: eks-auth refuses before STS (the role policy)",
        change: Change {
            association: AssociationChange::PointedAtAdmin,
            ..Change::HAPPY_PATH
        },
        expect: Expect::refused_by_eks_auth("AccessDeniedException"),
        explanation: "After the pod was admitted, someone who may write associations in its namespace \
pointed the association at lab-admin, a role that trusts eks-auth as every pod role does. STS would \
have granted it: whoever writes an association could otherwise name any role eks-auth can assume. \
The operator's role policy (--role-policy, separate from who writes associations) says which roles \
each namespace may get, and eks-auth checked it before calling STS: AccessDeniedException, the \
denied role in the audit line (role_policy.denied), nothing reached STS. The webhook applies the \
same policy at admission. EKS guards the same step with iam:PassRole when an association is created.",
    },
];

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

    #[test]
    fn each_variant_has_its_own_row_and_only_the_happy_path_changes_nothing() {
        for (i, s) in Scenario::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i, "ALL is in the order of the variants");
            let unchanged = s.change() == Change::HAPPY_PATH;
            assert_eq!(unchanged, s == Scenario::HappyPath, "{}", s.name());
        }
        // No two scenarios change the same thing.
        let mut changes: Vec<_> = Scenario::ALL
            .iter()
            .map(|s| format!("{:?}", s.change()))
            .collect();
        changes.sort();
        changes.dedup();
        assert_eq!(changes.len(), Scenario::ALL.len());
    }
}
