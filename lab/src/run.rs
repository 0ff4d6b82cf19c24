//! `pod-identity-lab run`: start the cluster's and AWS's parts, admit the pod, mint its token,
//! run it, and trace every hop.
//!
//! Order, as on a cluster: the issuer (kube-apiserver's keys), STS, eks-auth, the agent on the
//! node; then the pod's admission through the webhook, the kubelet's token, and demo-app with
//! exactly the mutated container environment. The trace is built from what each part reported
//! itself: the webhook's patch, the token's claims, demo-app's JSON report, the agent's and
//! eks-auth's own log lines, and the STS endpoint's record of every call.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use pod_identity_contracts::RolePolicy;
use pod_identity_contracts::association::{Association, AssociationSet, AssociationsFile};
use pod_identity_contracts::constants::{
    AGENT_IPV4, AUDIENCE, CREDENTIALS_PATH, ENV_FULL_URI, ENV_TOKEN_FILE,
};
use pod_identity_contracts::credentials::short_access_key_id;
use pod_identity_contracts::eks_auth::CALLER_AUDIENCE;
use pod_identity_contracts::log_schema::{AgentRequestLine, ExchangeAuditLine};
use serde::Deserialize as _;

use crate::components::Launcher;
use crate::facts::Facts;
use crate::hops::{
    admission_hop, agent_hops, cache_timing_hop, credentials_hop, eks_auth_hops, identity_hop,
    lines_for, sdk_hops, sts_hops, token_hop,
};
use crate::issuer::{LabIssuer, TokenRequest};
use crate::node::{Node, NodeMode};
use crate::pod::{self, PodRoot};
use crate::scenario::{AgentChange, AssociationChange, Scenario, TokenChange};
use crate::start::{
    Keys, Sts, agent_token_request, build_manifest, closed_port, eks_auth_identity,
    lab_role_policy, loopback, pod_platform_env, run_pod, start_agent, start_eks_auth, sts_config,
};
use crate::sts::LabSts;
use crate::trace::{Status, Trace};

/// The lab cluster's name.
pub const CLUSTER: &str = "lab";
/// The region everything runs in.
pub const REGION: &str = "us-east-1";
/// The cluster's account.
pub const ACCOUNT: &str = "111122223333";
/// The account of the cross-account scenario's target role.
pub const OTHER_ACCOUNT: &str = "444455556666";
/// The association's role.
pub const POD_ROLE: &str = "arn:aws:iam::111122223333:role/lab-pod-role";
/// The role role-outside-policy's association is edited to: it trusts eks-auth, but the role
/// policy gives it to no namespace.
pub const ADMIN_ROLE: &str = "arn:aws:iam::111122223333:role/lab-admin";
/// The cross-account scenario's target role.
pub const TARGET_ROLE: &str = "arn:aws:iam::444455556666:role/lab-cross-account";
/// The role eks-auth runs as, by web identity (no static keys).
pub const EKS_AUTH_ROLE: &str = "arn:aws:iam::111122223333:role/lab-eks-auth";
/// eks-auth's pod: its namespace and ServiceAccount (the `sub` its role trusts).
pub const EKS_AUTH_NAMESPACE: &str = "pod-identity-system";
pub const EKS_AUTH_SERVICE_ACCOUNT: &str = "eks-auth";
/// The audience of eks-auth's own token: the one IAM OIDC providers accept for STS.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// The IAM user whose static keys shadow Pod Identity in `static-keys-shadow`.
pub const SHADOW_USER: &str = "arn:aws:iam::111122223333:user/ci-deployer";
/// The node's name in tokens.
pub const NODE: &str = "lab-node";
/// The lifetime of the long-lived-token scenario's token: a century.
pub(crate) const LONG_LIVED_SECONDS: i64 = 100 * 365 * 86_400;
/// The node a stolen token is carried to (stolen-token-other-node).
pub const OTHER_NODE: &str = "lab-node-2";
/// The agent DaemonSet's pod on the node, and its ServiceAccount (eks-auth's default caller).
pub const AGENT_NAMESPACE: &str = "kube-system";
pub const AGENT_SERVICE_ACCOUNT: &str = "eks-pod-identity-agent";
pub const AGENT_POD: &str = "eks-pod-identity-agent-lab01";
/// How long demo-app may take.
pub(crate) const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// What `run` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub pod_manifest: Option<String>,
    pub json: bool,
    pub colour: bool,
    pub sts_endpoint: Option<String>,
}

/// What came of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario showed what it exists to show.
    pub as_expected: bool,
    /// What did not match, when something did not.
    pub unexpected: Vec<String>,
}

/// Run one scenario; the trace goes to `out` as it happens.
pub async fn run(
    options: Options,
    node: &Node,
    out: Box<dyn Write + Send>,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let scenario = options.scenario;
    let change = scenario.change();
    let pod_uid = crate::ids::uuid();
    let mut trace = Trace::new(pod_uid.clone(), options.json, options.colour, out);
    let dir = tempfile::Builder::new()
        .prefix("pod-identity-lab-")
        .tempdir()
        .context("create the lab's temporary directory")?;

    trace.say(&format!(
        "pod-identity-lab: scenario {} — {}\ncorrelation id (the pod's uid, carried by the token, the agent's and eks-auth's log lines and the STS session tag kubernetes-pod-uid): {pod_uid}\n",
        scenario.name(),
        scenario.summary()
    ));
    let mode_details = match &node.mode {
        NodeMode::Namespace { name } => vec![
            format!("network namespace {name}: the agent gets {AGENT_IPV4}:80 as on a node"),
            "everything else listens on this namespace's 127.0.0.1 and vanishes with it".into(),
        ],
        NodeMode::Loopback { why } => vec![
            format!("loopback mode: {why}"),
            format!(
                "the agent listens on 127.0.0.1 instead of {AGENT_IPV4}:80, and the pod's {ENV_FULL_URI} is pointed there"
            ),
        ],
    };
    trace.hop("lab", Status::Info, "the lab's node", mode_details, None);

    // 1. The cluster's token issuer.
    let issuer = LabIssuer::start(loopback()).await?;
    trace.hop(
        "issuer",
        Status::Info,
        format!("service-account token issuer at {}", issuer.url()),
        vec![
            format!(
                "RS256 key generated for this run, kid {}; OIDC discovery at {}{}",
                issuer.kid(),
                issuer.url(),
                crate::issuer::DISCOVERY_PATH
            ),
            format!(
                "JWKS at {}{} (what eks-auth verifies tokens against)",
                issuer.url(),
                crate::issuer::JWKS_PATH
            ),
        ],
        None,
    );

    // 2. STS.
    let shadow_keys = Keys::new("AKIA");
    let sts = match &options.sts_endpoint {
        Some(url) => Sts::External(url.clone()),
        None => Sts::Lab(
            LabSts::new(sts_config(issuer.url(), &shadow_keys))?
                .start(loopback())
                .await
                .context("start the lab's STS")?,
        ),
    };
    let sts_details = match &sts {
        Sts::Lab(_) => vec![
            "the lab's own STS: AssumeRoleWithWebIdentity, AssumeRole and GetCallerIdentity over the AWS query protocol"
                .into(),
            "every signed request's SigV4 signature is checked against the keys it knows or issued; web identity tokens against the issuer's JWKS, fetched by OIDC discovery".into(),
            format!(
                "OIDC provider {} for the issuer, audience {STS_AUDIENCE}",
                crate::sts::OidcProvider::new(issuer.url(), ACCOUNT).arn()
            ),
            format!(
                "roles: {EKS_AUTH_ROLE} (trusts tokens of system:serviceaccount:{EKS_AUTH_NAMESPACE}:{EKS_AUTH_SERVICE_ACCOUNT}), {POD_ROLE} and {ADMIN_ROLE} (trust {EKS_AUTH_ROLE}), {TARGET_ROLE} (trusts {POD_ROLE})"
            ),
        ],
        Sts::External(_) => vec![
            "an STS given with --sts-endpoint: the lab sees its calls only through eks-auth's log"
                .into(),
        ],
    };
    trace.hop(
        "sts",
        Status::Info,
        format!("STS at {}", sts.url()),
        sts_details,
        None,
    );

    // 3. The pod manifest and the associations.
    let manifest = build_manifest(
        change.static_keys,
        options.pod_manifest.as_deref(),
        &shadow_keys,
    )?;
    let (raw_pod, namespace) = pod::read_manifest(&manifest)?;
    let service_account = pod::service_account_of(&raw_pod);
    let association = Association {
        namespace: namespace.clone(),
        service_account: service_account.clone(),
        role_arn: POD_ROLE.into(),
        target_role_arn: change.cross_account.then(|| TARGET_ROLE.to_string()),
        disable_session_tags: false,
        policy: None,
        association_id: None,
    };
    let at_admission = AssociationSet::from_associations(vec![association.clone()])?;
    let at_exchange = match change.association {
        AssociationChange::Deleted => Vec::new(),
        AssociationChange::PointedAtAdmin => vec![Association {
            role_arn: ADMIN_ROLE.into(),
            ..association.clone()
        }],
        AssociationChange::Kept => vec![association.clone()],
    };
    let associations_file = dir.path().join("associations.yaml");
    std::fs::write(
        &associations_file,
        serde_yaml_ng::to_string(&AssociationsFile {
            associations: at_exchange.clone(),
        })?,
    )?;

    // The operator's role policy: the pod's namespace may get the lab's two roles, nothing else.
    let role_policy_file = dir.path().join("role-policy.yaml");
    std::fs::write(&role_policy_file, lab_role_policy(&namespace))?;

    // 4. eks-auth.
    let launcher = Launcher::current()?;
    let (mut eks_auth, eks_auth_token) = start_eks_auth(
        &launcher,
        &issuer,
        &sts.url(),
        &associations_file,
        &role_policy_file,
        dir.path(),
    )
    .await?;
    let eks_auth_addr = eks_auth.listening("api").await?;
    let startup_calls = eks_auth_identity(&sts, &eks_auth).await;
    trace.hop(
        "eks-auth",
        Status::Info,
        format!("eks-auth at http://{eks_auth_addr} (the EKS Auth API)"),
        vec![
            format!(
                "cluster {CLUSTER}, issuer {}, audience {AUDIENCE}",
                issuer.url()
            ),
            format!(
                "associations file: {}",
                if at_exchange.is_empty() {
                    "empty (the association was deleted after admission)".to_string()
                } else {
                    at_exchange
                        .iter()
                        .map(|a| format!("{} → {} [{}]", a.key(), a.role_arn, a.id()))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            format!("role policy: namespace {namespace} may get {POD_ROLE} and {TARGET_ROLE}"),
            format!(
                "no static keys: its own AWS identity is {EKS_AUTH_ROLE}, by web identity with its projected token ({EKS_AUTH_NAMESPACE}/{EKS_AUTH_SERVICE_ACCOUNT}, audience {STS_AUDIENCE}, fingerprint {})",
                eks_auth_token.fingerprint()
            ),
            "so each pod role is assumed from a role session (role chaining): STS grants at most an hour, and the agent refreshes before it ends".into(),
            format!(
                "serves node agents only (kube-system/eks-pod-identity-agent, each with its own token), and asks the API server at {} (TokenReview) whether both tokens' pods still exist",
                issuer.url()
            ),
        ],
        None,
    );

    // eks-auth's own identity: its web identity exchange and GetCallerIdentity, as it starts.
    sts_hops(
        &mut trace,
        &startup_calls,
        &sts,
        "AssumeRoleWithWebIdentity",
    );
    sts_hops(&mut trace, &startup_calls, &sts, "GetCallerIdentity");
    let startup_sts_calls = startup_calls.len();

    // 5. The agent on the node, with its own token from the kubelet (eks-auth serves only agents,
    // and only for pods on their own node).
    let node_uid = crate::ids::uuid();
    let mut agent = None;
    let mut agent_uri = format!("http://{AGENT_IPV4}{CREDENTIALS_PATH}");
    if change.agent == AgentChange::Down {
        if !node.mode.is_namespace() {
            agent_uri = format!("http://{}{CREDENTIALS_PATH}", closed_port()?);
        }
        trace.hop(
            "agent",
            Status::Skipped,
            "the agent is not running on this node (scenario agent-down)",
            vec![format!(
                "nothing listens where the pod will ask: {agent_uri}"
            )],
            None,
        );
    } else {
        // The agent's node: this one, or in stolen-token-other-node another (with its own uid),
        // whose agent is handed the token copied from this node's pod.
        let (agent_node, agent_node_uid) = if change.agent == AgentChange::OnOtherNode {
            (OTHER_NODE.to_string(), crate::ids::uuid())
        } else {
            (NODE.to_string(), node_uid.clone())
        };
        let identity = if change.agent == AgentChange::Anonymous {
            None
        } else {
            let minted = issuer.mint(&agent_token_request(&agent_node, &agent_node_uid))?;
            let file = crate::node::write_agent_token(
                dir.path(),
                minted.token.expose(),
                node.mode.is_namespace(),
            )?;
            Some((minted, file))
        };
        let (running, uri, mut details) = start_agent(
            &launcher,
            node,
            &format!("http://{eks_auth_addr}"),
            identity.as_ref().map(|(_, file)| file.as_path()),
            dir.path(),
        )
        .await?;
        match &identity {
            Some((minted, file)) => details.push(format!(
                "its own token: {AGENT_NAMESPACE}/{AGENT_SERVICE_ACCOUNT} on node {agent_node}, audience {CALLER_AUDIENCE}, {} (sent to eks-auth with each exchange, fingerprint {})",
                file.display(),
                minted.token.fingerprint()
            )),
            None => details.push(
                "scenario: this caller presents no token of its own (as a bare EKS Auth client, or a curl with a copied token)".into(),
            ),
        }
        if change.agent == AgentChange::OnOtherNode {
            details.push(format!(
                "scenario: this is the agent of node {OTHER_NODE}; the pod's token was copied here from node {NODE}"
            ));
        }
        agent_uri = uri;
        trace.hop(
            "agent",
            Status::Info,
            format!("agent serving {agent_uri}"),
            details,
            None,
        );
        agent = Some(running);
    }

    // 6. Admission.
    let role_policy = RolePolicy::from_yaml(&lab_role_policy(&namespace))?;
    let admitted = pod::admit(&manifest, at_admission, Some(role_policy), REGION)?;
    admission_hop(&mut trace, &admitted, &association);

    // 7. The kubelet's token.
    let projected = admitted.projected_token();
    let root = PodRoot::new(dir.path().join("pod-root"));
    let mut minted = None;
    if let Some(projected) = &projected {
        let now = jiff::Timestamp::now().as_second();
        let issued_at = if change.token == TokenChange::Expired {
            now - projected.expiration_seconds - 3600
        } else {
            now
        };
        let audience = if change.token == TokenChange::WrongAudience {
            "sts.amazonaws.com".to_string()
        } else {
            projected.audience.clone()
        };
        let token = issuer.mint(&TokenRequest {
            namespace: admitted.namespace.clone(),
            service_account: admitted.service_account.clone(),
            service_account_uid: crate::ids::uuid(),
            pod: admitted.name.clone(),
            pod_uid: pod_uid.clone(),
            node: NODE.into(),
            node_uid: node_uid.clone(),
            audience,
            issued_at,
            expiration_seconds: if change.token == TokenChange::LongLived {
                LONG_LIVED_SECONDS
            } else {
                projected.expiration_seconds
            },
        })?;
        if change.token == TokenChange::PodDeleted {
            // `kubectl delete pod`, after someone copied the token out of it.
            issuer.delete_pod(&pod_uid);
        }
        let written = root.write_token(projected, token.token.expose())?;
        token_hop(&mut trace, change.token, &token, projected, &written, now);
        minted = Some(token);
    } else {
        trace.hop(
            "kubelet",
            Status::Skipped,
            "no projected token: the spec has no Pod Identity volume",
            vec![],
            None,
        );
    }

    // 8. The pod.
    let pod::ContainerEnv {
        literal: env,
        unresolved,
    } = admitted.environment()?;
    let mut pod_env = root.remap(&env, projected.as_ref());
    let mut notes = Vec::new();
    if !unresolved.is_empty() {
        notes.push(format!(
            "not set (valueFrom needs an API server): {}",
            unresolved.join(", ")
        ));
    }
    if let Some(p) = &projected {
        notes.push(format!(
            "{ENV_TOKEN_FILE}: {} remapped to {} (no mount namespace)",
            p.path_in_container,
            root.host_path(&p.path_in_container).display()
        ));
    }
    if pod_env.contains_key(ENV_FULL_URI) && !node.mode.is_namespace() {
        notes.push(format!(
            "{ENV_FULL_URI}: {} pointed at {agent_uri} (loopback mode)",
            pod_env[ENV_FULL_URI]
        ));
        pod_env.insert(ENV_FULL_URI.into(), agent_uri.clone());
    }
    let home = dir.path().join("pod-home");
    std::fs::create_dir_all(&home)?;
    let lab_env = pod_platform_env(&home, &sts.url(), node);
    let shown: Vec<String> = pod_env
        .iter()
        .map(|(k, v)| {
            if k.contains("SECRET") || k.contains("SESSION_TOKEN") {
                format!("{k}=(set)")
            } else if k == "AWS_ACCESS_KEY_ID" {
                format!("{k}={}", short_access_key_id(v))
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    let mut details = vec![format!(
        "the container's environment, as the webhook left it: {}",
        shown.join(" ")
    )];
    details.extend(notes);
    details.push(format!(
        "the lab adds what a pod gets from its image and cluster: {}",
        lab_env.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    trace.hop(
        "pod",
        Status::Info,
        format!(
            "pod {}/{} starts demo-app (service account {})",
            admitted.namespace, admitted.name, admitted.service_account
        ),
        details,
        None,
    );
    let mut full_env = lab_env;
    full_env.extend(pod_env);

    let first = run_pod(&launcher, &full_env).await?;
    sdk_hops(&mut trace, &first);
    let fingerprint = minted.as_ref().map(|m| m.token.fingerprint());
    // The agent's log line is written a moment after its answer.
    if let (Some(agent), Some(fp)) = (&agent, &fingerprint) {
        let _ = agent
            .stdout
            .wait_for(
                |v| {
                    AgentRequestLine::deserialize(v)
                        .is_ok_and(|l| l.pod.token_fingerprint.as_deref() == Some(fp.as_str()))
                },
                Duration::from_secs(2),
            )
            .await;
    }
    let agent_lines = agent
        .as_ref()
        .map(|a| lines_for::<AgentRequestLine>(a, fingerprint.as_deref()))
        .unwrap_or_default();
    agent_hops(&mut trace, &agent_lines, "");
    let eks_lines = lines_for::<ExchangeAuditLine>(&eks_auth, fingerprint.as_deref())
        .into_iter()
        .filter(|l| l.audit == Some(true))
        .collect::<Vec<_>>();
    eks_auth_hops(&mut trace, &eks_lines, agent_lines.is_empty());
    let sts_events = sts.events().split_off(startup_sts_calls);
    sts_hops(&mut trace, &sts_events, &sts, "AssumeRole");
    credentials_hop(&mut trace, &first);
    sts_hops(&mut trace, &sts_events, &sts, "GetCallerIdentity");
    identity_hop(&mut trace, &first);

    // The cache scenario: the same token, a second process.
    let mut second = None;
    if change.second_process {
        trace.hop(
            "pod",
            Status::Info,
            "a second process in the pod starts demo-app with the same token",
            vec![],
            None,
        );
        let run = run_pod(&launcher, &full_env).await?;
        if let Some(agent) = &agent {
            let seen = agent_lines.len();
            let _ = agent
                .stdout
                .wait_for(
                    |_| lines_for::<AgentRequestLine>(agent, fingerprint.as_deref()).len() > seen,
                    Duration::from_secs(2),
                )
                .await;
        }
        let all = agent
            .as_ref()
            .map(|a| lines_for::<AgentRequestLine>(a, fingerprint.as_deref()))
            .unwrap_or_default();
        agent_hops(
            &mut trace,
            &all[agent_lines.len().min(all.len())..],
            "second process: ",
        );
        cache_timing_hop(&mut trace, &all, agent_lines.len());
        second = Some((run, all));
    }

    // The outcome.
    let final_sts = sts.events();
    let facts = Facts {
        scenario,
        first: &first,
        second: second.as_ref().map(|(r, _)| r),
        agent_lines: &second
            .as_ref()
            .map(|(_, all)| all.clone())
            .unwrap_or(agent_lines.clone()),
        eks_lines: &eks_lines,
        sts_events: &final_sts,
        sts_is_lab: matches!(sts, Sts::Lab(_)),
    };
    let unexpected = facts.check();
    let as_expected = unexpected.is_empty();
    let mut details: Vec<String> = scenario
        .explanation()
        .split(". ")
        .map(|s| s.trim_end_matches('.').to_string() + ".")
        .collect();
    details.extend(unexpected.iter().map(|u| format!("UNEXPECTED: {u}")));
    details.push(format!(
        "the whole run took {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    trace.hop(
        "outcome",
        if as_expected {
            Status::Ok
        } else {
            Status::Refused
        },
        format!(
            "{}: {}",
            scenario.name(),
            if as_expected {
                "happened as it should"
            } else {
                "did NOT happen as it should"
            }
        ),
        details,
        None,
    );

    if let Some(mut a) = agent {
        a.stop().await;
    }
    eks_auth.stop().await;
    Ok(Outcome {
        as_expected,
        unexpected,
    })
}
