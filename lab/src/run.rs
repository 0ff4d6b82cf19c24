//! `pod-identity-lab run`: start the cluster's and AWS's parts, admit the pod, mint its token,
//! run it, and trace every hop.
//!
//! Order, as on a cluster: the issuer (kube-apiserver's keys), STS, eks-auth, the agent on the
//! node; then the pod's admission through the webhook, the kubelet's token, and demo-app with
//! exactly the mutated container environment. The trace is built from what each part reported
//! itself: the webhook's patch, the token's claims, demo-app's JSON report, the agent's and
//! eks-auth's own log lines, and the STS endpoint's record of every call.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use pod_identity_contracts::association::{Association, AssociationSet, AssociationsFile};
use pod_identity_contracts::constants::{
    AGENT_IPV4, AUDIENCE, CREDENTIALS_PATH, ENV_FULL_URI, ENV_TOKEN_FILE,
};
use pod_identity_contracts::credentials::short_access_key_id;
use pod_identity_contracts::eks_auth::CALLER_AUDIENCE;
use pod_identity_contracts::{RolePolicy, Secret};
use serde_json::{Value, json};

use crate::components::{Component, Launcher, Running};
use crate::issuer::{LabIssuer, Minted, TokenRequest};
use crate::node::{AGENT_UID, Node, NodeMode, executable_for_others, setpriv_wrapper};
use crate::pod::{self, Admitted, PodRoot};
use crate::scenario::Scenario;
use crate::sts::{
    AccessKey, LabSts, OidcProvider, Role, RunningSts, StsConfig, StsEvent, StsOutcome,
    WebIdentityTrust,
};
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
const LONG_LIVED_SECONDS: i64 = 100 * 365 * 86_400;
/// The node a stolen token is carried to (stolen-token-other-node).
pub const OTHER_NODE: &str = "lab-node-2";
/// The agent DaemonSet's pod on the node, and its ServiceAccount (eks-auth's default caller).
pub const AGENT_NAMESPACE: &str = "kube-system";
pub const AGENT_SERVICE_ACCOUNT: &str = "eks-pod-identity-agent";
pub const AGENT_POD: &str = "eks-pod-identity-agent-lab01";
/// How long demo-app may take.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Static keys the lab makes up for one run (never reused, never printed).
#[derive(Debug, Clone)]
struct Keys {
    access_key_id: String,
    secret: Secret,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let id = crate::ids::uuid().replace('-', "").to_uppercase();
        Self {
            access_key_id: format!("{prefix}{}", &id[..16]),
            secret: Secret::new(crate::ids::uuid().replace('-', "") + &crate::ids::uuid()),
        }
    }
}

/// Where STS is.
enum Sts {
    Lab(RunningSts),
    External(String),
}

impl Sts {
    fn url(&self) -> String {
        match self {
            Sts::Lab(s) => s.url().to_string(),
            Sts::External(u) => u.clone(),
        }
    }

    fn events(&self) -> Vec<StsEvent> {
        match self {
            Sts::Lab(s) => s.events(),
            Sts::External(_) => Vec::new(),
        }
    }
}

/// One demo-app run: its report and its exit code.
struct PodRun {
    report: Value,
    exit_code: Option<i32>,
    elapsed: Duration,
}

/// Run one scenario; the trace goes to `out` as it happens.
pub async fn run(
    options: Options,
    node: &Node,
    out: Box<dyn Write + Send>,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let scenario = options.scenario;
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
    let manifest = build_manifest(scenario, options.pod_manifest.as_deref(), &shadow_keys)?;
    let (raw_pod, namespace) = pod::read_manifest(&manifest)?;
    let service_account = pod::service_account_of(&raw_pod);
    let association = Association {
        namespace: namespace.clone(),
        service_account: service_account.clone(),
        role_arn: POD_ROLE.into(),
        target_role_arn: (scenario == Scenario::CrossAccount).then(|| TARGET_ROLE.to_string()),
        disable_session_tags: false,
        policy: None,
        association_id: None,
    };
    let at_admission = AssociationSet::from_associations(vec![association.clone()])?;
    let at_exchange = match scenario {
        Scenario::NoAssociation => Vec::new(),
        Scenario::RoleOutsidePolicy => vec![Association {
            role_arn: ADMIN_ROLE.into(),
            ..association.clone()
        }],
        _ => vec![association.clone()],
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
    if scenario == Scenario::AgentDown {
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
        let (agent_node, agent_node_uid) = if scenario == Scenario::StolenTokenOtherNode {
            (OTHER_NODE.to_string(), crate::ids::uuid())
        } else {
            (NODE.to_string(), node_uid.clone())
        };
        let identity = if scenario == Scenario::UnauthenticatedCaller {
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
        if scenario == Scenario::StolenTokenOtherNode {
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
        let issued_at = if scenario == Scenario::ExpiredToken {
            now - projected.expiration_seconds - 3600
        } else {
            now
        };
        let audience = if scenario == Scenario::WrongAudience {
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
            expiration_seconds: if scenario == Scenario::LongLivedToken {
                LONG_LIVED_SECONDS
            } else {
                projected.expiration_seconds
            },
        })?;
        if scenario == Scenario::DeletedPod {
            // `kubectl delete pod`, after someone copied the token out of it.
            issuer.delete_pod(&pod_uid);
        }
        let written = root.write_token(projected, token.token.expose())?;
        token_hop(&mut trace, scenario, &token, projected, &written, now);
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
                |v| v["token.fingerprint"] == fp.as_str(),
                Duration::from_secs(2),
            )
            .await;
    }
    let agent_lines = agent
        .as_ref()
        .map(|a| lines_for(a, fingerprint.as_deref()))
        .unwrap_or_default();
    agent_hops(&mut trace, &agent_lines, "");
    let eks_lines = lines_for(&eks_auth, fingerprint.as_deref())
        .into_iter()
        .filter(|v| v["audit"] == true)
        .collect::<Vec<_>>();
    eks_auth_hops(&mut trace, &eks_lines, agent_lines.is_empty());
    let sts_events = sts.events().split_off(startup_sts_calls);
    sts_hops(&mut trace, &sts_events, &sts, "AssumeRole");
    credentials_hop(&mut trace, &first);
    sts_hops(&mut trace, &sts_events, &sts, "GetCallerIdentity");
    identity_hop(&mut trace, &first);

    // The cache scenario: the same token, a second process.
    let mut second = None;
    if scenario == Scenario::Cache {
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
                    |_| lines_for(agent, fingerprint.as_deref()).len() > seen,
                    Duration::from_secs(2),
                )
                .await;
        }
        let all = agent
            .as_ref()
            .map(|a| lines_for(a, fingerprint.as_deref()))
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

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback port nothing listens on.
fn closed_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind(loopback())?;
    l.local_addr()
}

fn sts_config(issuer: &str, shadow: &Keys) -> StsConfig {
    let key = |k: &Keys| AccessKey::new(k.access_key_id.clone(), k.secret.clone());
    StsConfig::new()
        .oidc_provider(OidcProvider::new(issuer, ACCOUNT).client_id(STS_AUDIENCE))
        .static_key(key(shadow), SHADOW_USER)
        .role(
            Role::new(EKS_AUTH_ROLE).trust_web_identity(WebIdentityTrust {
                issuer: issuer.into(),
                subject: format!(
                    "system:serviceaccount:{EKS_AUTH_NAMESPACE}:{EKS_AUTH_SERVICE_ACCOUNT}"
                ),
                audience: STS_AUDIENCE.into(),
            }),
        )
        .role(
            Role::new(POD_ROLE)
                .max_session_duration(Duration::from_secs(12 * 3600))
                .trust(EKS_AUTH_ROLE),
        )
        .role(Role::new(ADMIN_ROLE).trust(EKS_AUTH_ROLE))
        .role(Role::new(TARGET_ROLE).trust(POD_ROLE))
}

/// The manifest to admit: the user's or the built-in one, with the scenario's change.
fn build_manifest(scenario: Scenario, user: Option<&str>, shadow: &Keys) -> anyhow::Result<String> {
    let text = user.unwrap_or(pod::DEFAULT_POD);
    if scenario != Scenario::StaticKeysShadow {
        return Ok(text.to_string());
    }
    let (mut pod, _) = pod::read_manifest(text)?;
    let container = pod
        .pointer_mut("/spec/containers/0")
        .and_then(Value::as_object_mut)
        .context("the pod has no container")?;
    let env = container
        .entry("env")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = env {
        list.push(json!({"name": "AWS_ACCESS_KEY_ID", "value": shadow.access_key_id}));
        list.push(json!({"name": "AWS_SECRET_ACCESS_KEY", "value": shadow.secret.expose()}));
    }
    Ok(serde_json::to_string(&pod)?)
}

/// What a container gets besides its spec's env: a home without AWS files, a PATH, the STS
/// endpoint of the lab's AWS, and (loopback only) an IMDS that is not there.
fn pod_platform_env(home: &Path, sts_url: &str, node: &Node) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("HOME".into(), home.display().to_string());
    env.insert("PATH".into(), "/usr/bin:/bin".into());
    env.insert("AWS_ENDPOINT_URL_STS".into(), sts_url.into());
    env.insert(
        "AWS_CONFIG_FILE".into(),
        home.join(".aws/config").display().to_string(),
    );
    env.insert(
        "AWS_SHARED_CREDENTIALS_FILE".into(),
        home.join(".aws/credentials").display().to_string(),
    );
    if !node.mode.is_namespace() {
        // This machine may sit on a cloud whose IMDS would answer; a node of the lab has none.
        if let Ok(addr) = closed_port() {
            env.insert(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
                format!("http://{addr}"),
            );
        }
    }
    env
}

/// The lab's role policy file: `namespace` may get [`POD_ROLE`] and [`TARGET_ROLE`]. JSON strings
/// are YAML, so any namespace a manifest names stays one string.
fn lab_role_policy(namespace: &str) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "rules:\n  - namespaces: [{}]\n    roles: [{}, {}]\n",
        quote(namespace),
        quote(POD_ROLE),
        quote(TARGET_ROLE)
    )
}

/// A component's environment: nothing from the caller but what is listed.
fn base_env(home: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("HOME".into(), home.display().to_string());
    env.insert("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.insert("AWS_REGION".into(), REGION.into());
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    env.insert(
        "AWS_CONFIG_FILE".into(),
        home.join("config").display().to_string(),
    );
    env.insert(
        "AWS_SHARED_CREDENTIALS_FILE".into(),
        home.join("credentials").display().to_string(),
    );
    env
}

async fn start_eks_auth(
    launcher: &Launcher,
    issuer: &LabIssuer,
    sts_url: &str,
    associations: &Path,
    role_policy: &Path,
    dir: &Path,
) -> anyhow::Result<(Running, Secret)> {
    let mut env = base_env(dir);
    // Keyless: the kubelet's token for eks-auth's own pod, which STS trades for its role (the
    // SDK's default chain reads these three variables, as for IRSA).
    let now = jiff::Timestamp::now().as_second();
    let own = issuer.mint(&TokenRequest {
        namespace: EKS_AUTH_NAMESPACE.into(),
        service_account: EKS_AUTH_SERVICE_ACCOUNT.into(),
        service_account_uid: crate::ids::uuid(),
        pod: "eks-auth-lab".into(),
        pod_uid: crate::ids::uuid(),
        node: NODE.into(),
        node_uid: crate::ids::uuid(),
        audience: STS_AUDIENCE.into(),
        issued_at: now,
        expiration_seconds: 86_400,
    })?;
    let token_file = dir.join("eks-auth-token");
    write_private(&token_file, own.token.expose())?;
    env.insert("AWS_ROLE_ARN".into(), EKS_AUTH_ROLE.into());
    env.insert(
        "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
        token_file.display().to_string(),
    );
    env.insert("AWS_ROLE_SESSION_NAME".into(), "eks-auth".into());
    // The web identity call is the SDK's own; it finds the lab's STS here (--sts-endpoint is
    // eks-auth's, for its AssumeRole calls).
    env.insert("AWS_ENDPOINT_URL_STS".into(), sts_url.into());
    // The lab's API server answers eks-auth's TokenReview (--token-review, as shipped).
    let kubeconfig = dir.join("eks-auth.kubeconfig");
    std::fs::write(&kubeconfig, issuer.kubeconfig())?;
    env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    let cluster_arn = format!("arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}");
    let args: Vec<String> = [
        "--cluster-name",
        CLUSTER,
        "--cluster-arn",
        &cluster_arn,
        "--issuer",
        issuer.url(),
        "--associations",
        &associations.display().to_string(),
        "--role-policy",
        &role_policy.display().to_string(),
        "--sts-endpoint",
        sts_url,
        "--token-review",
        "--bind-address",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--shutdown-grace-seconds",
        "2",
        "--log-format",
        "json",
    ]
    .map(str::to_string)
    .to_vec();
    let cmd = launcher.command(Component::EksAuth, args, &env);
    Ok((Running::spawn(Component::EksAuth, cmd)?, own.token))
}

/// A file only its owner reads (a token).
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())
}

/// eks-auth asks STS who it is as it starts (keyless, after trading its token for its role):
/// wait for that, so the pod's exchange finds it done, and return the STS calls so far.
async fn eks_auth_identity(sts: &Sts, eks_auth: &Running) -> Vec<StsEvent> {
    let _ = eks_auth
        .stdout
        .wait_for(
            |v| {
                v["message"] == "eks-auth's own AWS identity"
                    || v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("could not ask STS who eks-auth is"))
            },
            Duration::from_secs(20),
        )
        .await;
    sts.events()
}

/// Start the agent: on a node, `initialize` as root then `server` as uid 65534 with only
/// CAP_NET_BIND_SERVICE on the default addresses and port 80; else on loopback.
async fn start_agent(
    launcher: &Launcher,
    node: &Node,
    endpoint: &str,
    identity_file: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<(Running, String, Vec<String>)> {
    let home = dir.join("node-home");
    std::fs::create_dir_all(&home)?;
    let node_keys = Keys::new("AKIA");
    let mut env = base_env(&home);
    env.insert("AWS_ACCESS_KEY_ID".into(), node_keys.access_key_id.clone());
    env.insert(
        "AWS_SECRET_ACCESS_KEY".into(),
        node_keys.secret.expose().to_string(),
    );
    let mut common = [
        "--cluster-name",
        CLUSTER,
        "--probe-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--endpoint",
        endpoint,
        "--shutdown-grace",
        "2s",
    ]
    .map(str::to_string)
    .to_vec();
    if let Some(file) = identity_file {
        common.extend(["--identity-token-file".into(), file.display().to_string()]);
    }
    match &node.mode {
        NodeMode::Namespace { .. } => {
            let mut init = Running::spawn(
                Component::Agent,
                launcher.command(Component::Agent, ["initialize"], &env),
            )?;
            let status = init.finish(Duration::from_secs(20)).await?;
            if !status.success() {
                anyhow::bail!("agent initialize failed ({status}):\n{}", init.output());
            }
            let bin_dir = dir.join("bin");
            std::fs::create_dir_all(&bin_dir)?;
            let exe = executable_for_others(launcher.exe(), &bin_dir)?;
            let as_daemonset = launcher.wrapped(exe, setpriv_wrapper());
            let mut args = vec!["server".to_string()];
            args.extend(common);
            let mut running = Running::spawn(
                Component::Agent,
                as_daemonset.command(Component::Agent, args, &env),
            )?;
            let addr = running.listening("credentials").await?;
            let status = running
                .child
                .id()
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
                .unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map_or("?".to_string(), |v| {
                        v.split_whitespace().collect::<Vec<_>>().join(" ")
                    })
            };
            let details = vec![
                format!(
                    "`initialize` (root, NET_ADMIN) gave the node {AGENT_IPV4} on a link of its own"
                ),
                format!(
                    "`server` started as uid {AGENT_UID} with only CAP_NET_BIND_SERVICE (setpriv, as the DaemonSet's securityContext), bound {addr}, then dropped it"
                ),
                format!(
                    "/proc says: Uid {}, CapEff {}, CapPrm {}, NoNewPrivs {}",
                    field("Uid:"),
                    field("CapEff:"),
                    field("CapPrm:"),
                    field("NoNewPrivs:")
                ),
                format!("EKS Auth endpoint: {endpoint}"),
            ];
            Ok((
                running,
                format!("http://{AGENT_IPV4}{CREDENTIALS_PATH}"),
                details,
            ))
        }
        NodeMode::Loopback { .. } => {
            let mut args = vec![
                "server".to_string(),
                "--bind-hosts".into(),
                "127.0.0.1".into(),
                "--port".into(),
                "0".into(),
            ];
            args.extend(common);
            let mut running = Running::spawn(
                Component::Agent,
                launcher.command(Component::Agent, args, &env),
            )?;
            let addr = running.listening("credentials").await?;
            let details = vec![format!(
                "bound {addr} (loopback mode), EKS Auth endpoint: {endpoint}"
            )];
            Ok((running, format!("http://{addr}{CREDENTIALS_PATH}"), details))
        }
    }
}

/// What the agent's kubelet asks TokenRequest for: the DaemonSet pod's token for eks-auth.
fn agent_token_request(node: &str, node_uid: &str) -> TokenRequest {
    TokenRequest {
        namespace: AGENT_NAMESPACE.into(),
        service_account: AGENT_SERVICE_ACCOUNT.into(),
        service_account_uid: crate::ids::uuid(),
        pod: AGENT_POD.into(),
        pod_uid: crate::ids::uuid(),
        node: node.into(),
        node_uid: node_uid.into(),
        audience: CALLER_AUDIENCE.into(),
        issued_at: jiff::Timestamp::now().as_second(),
        expiration_seconds: 3600,
    }
}

async fn run_pod(launcher: &Launcher, env: &BTreeMap<String, String>) -> anyhow::Result<PodRun> {
    let started = Instant::now();
    let mut running = Running::spawn(
        Component::DemoApp,
        launcher.command(Component::DemoApp, ["--json", "--no-color"], env),
    )?;
    let status = running.finish(POD_TIMEOUT).await?;
    let stdout = running.stdout.all().join("\n");
    let report: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "demo-app printed no JSON report ({status}):\n{}",
            running.output()
        )
    })?;
    Ok(PodRun {
        report,
        exit_code: status.code(),
        elapsed: started.elapsed(),
    })
}

/// A component's JSON log lines about this run's token.
fn lines_for(running: &Running, fingerprint: Option<&str>) -> Vec<Value> {
    let Some(fp) = fingerprint else {
        return Vec::new();
    };
    running
        .log()
        .into_iter()
        .filter(|v| v["token.fingerprint"] == fp)
        .collect()
}

fn admission_hop(trace: &mut Trace, admitted: &Admitted, association: &Association) {
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

fn token_hop(
    trace: &mut Trace,
    scenario: Scenario,
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
    match scenario {
        Scenario::ExpiredToken => details.push("scenario: the token is already expired".into()),
        Scenario::WrongAudience => details.push(format!(
            "scenario: minted for sts.amazonaws.com, though the volume asks for {}",
            projected.audience
        )),
        Scenario::DeletedPod => details.push(
            "scenario: the pod was deleted after its token was copied (the API server no longer knows it)"
                .into(),
        ),
        Scenario::LongLivedToken => details.push(format!(
            "scenario: minted to live {LONG_LIVED_SECONDS} s (100 years), though the volume asks for {} s",
            projected.expiration_seconds
        )),
        _ => {}
    }
    trace.hop(
        "kubelet",
        Status::Ok,
        "projected service-account token minted (TokenRequest) and written",
        details,
        None,
    );
}

fn sdk_hops(trace: &mut Trace, run: &PodRun) {
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

fn agent_hops(trace: &mut Trace, lines: &[Value], prefix: &str) {
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
    let status = first["http.status"].as_u64().unwrap_or(0);
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
            if status == 400 && first["cache"] != "error" {
                "NO (400)"
            } else {
                "yes"
            }
        ),
        format!(
            "cache: {} (keyed by the token's digest, {})",
            first["cache"].as_str().unwrap_or("-"),
            first["token.fingerprint"].as_str().unwrap_or("-")
        ),
    ];
    if let Some(code) = first["error.code"].as_str() {
        details.push(format!(
            "answer {status} {code}: {}",
            first["error.message"].as_str().unwrap_or_default()
        ));
    } else {
        details.push(format!(
            "answer 200: {} for {}, expires {}",
            first["access_key_id"].as_str().unwrap_or("-"),
            first["role_arn"].as_str().unwrap_or("-"),
            first["expiration"].as_str().unwrap_or("-")
        ));
    }
    details.push(format!(
        "latency {} ms",
        first["latency_ms"].as_f64().unwrap_or_default()
    ));
    if lines.len() > 1 {
        let rest: Vec<String> = lines[1..]
            .iter()
            .map(|l| {
                format!(
                    "{} {} ({} ms)",
                    l["http.status"].as_u64().unwrap_or(0),
                    l["cache"].as_str().unwrap_or("-"),
                    l["latency_ms"].as_f64().unwrap_or_default()
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
        Some(first.clone()),
    );
}

fn eks_auth_hops(trace: &mut Trace, lines: &[Value], agent_silent: bool) {
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
    let status = line["http.status"].as_u64().unwrap_or(0);
    let mut details = Vec::new();
    if let Some(caller) = line["caller"].as_str().filter(|c| !c.is_empty()) {
        details.push(match caller {
            "unauthenticated" => "caller: sent no token of its own".into(),
            "unverified" => format!(
                "caller: sent a token of its own ({}) that was not accepted",
                line["caller.token_fingerprint"].as_str().unwrap_or("-")
            ),
            _ => format!(
                "caller: {caller} on node {} (its own token {}, verified like a pod's)",
                line["caller.node"].as_str().unwrap_or("-"),
                line["caller.token_fingerprint"].as_str().unwrap_or("-")
            ),
        });
    }
    if status == 200 {
        let node = line["k8s.node"].as_str().unwrap_or("");
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
                line["association_id"].as_str().unwrap_or("-"),
                line["k8s.namespace"].as_str().unwrap_or("-"),
                line["k8s.service_account"].as_str().unwrap_or("-"),
                line["role_arn"].as_str().unwrap_or("-")
            ),
            format!(
                "session {} → {} ({})",
                line["session_name"].as_str().unwrap_or("-"),
                line["assumed_role_arn"].as_str().unwrap_or("-"),
                line["access_key_id"].as_str().unwrap_or("-")
            ),
        ]);
    } else {
        details.push(format!(
            "refused {status} {}: {}",
            line["error.code"].as_str().unwrap_or("-"),
            line["error.message"].as_str().unwrap_or("-")
        ));
        if let Some(role) = line["role_policy.denied"].as_str() {
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
        Some(line.clone()),
    );
}

fn sts_hops(trace: &mut Trace, events: &[StsEvent], sts: &Sts, action: &str) {
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

fn credentials_hop(trace: &mut Trace, run: &PodRun) {
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

fn identity_hop(trace: &mut Trace, run: &PodRun) {
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

fn cache_timing_hop(trace: &mut Trace, all: &[Value], first_count: usize) {
    let latency = |l: &Value| l["latency_ms"].as_f64().unwrap_or_default();
    let misses: Vec<f64> = all
        .iter()
        .filter(|l| l["cache"] == "miss")
        .map(latency)
        .collect();
    let hits: Vec<f64> = all
        .iter()
        .skip(first_count)
        .filter(|l| l["cache"] == "hit")
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

/// What a run produced, checked against what its scenario must show.
struct Facts<'a> {
    scenario: Scenario,
    first: &'a PodRun,
    second: Option<&'a PodRun>,
    agent_lines: &'a [Value],
    eks_lines: &'a [Value],
    sts_events: &'a [StsEvent],
    sts_is_lab: bool,
}

impl Facts<'_> {
    fn check(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        let mut expect = |ok: bool, what: &str| {
            if !ok {
                wrong.push(what.to_string());
            }
        };
        let winner = self.first.report["winner"].as_str();
        let arn = self.first.report["identity"]["arn"].as_str().unwrap_or("");
        let worked = self.first.exit_code == Some(0);
        let agent_status = self
            .agent_lines
            .first()
            .and_then(|l| l["http.status"].as_u64());
        let eks_code = self
            .eks_lines
            .first()
            .and_then(|l| l["error.code"].as_str());
        let assumes = self
            .sts_events
            .iter()
            .filter(|e| {
                e.action.as_deref() == Some("AssumeRole")
                    && matches!(e.outcome, StsOutcome::Issued { .. })
            })
            .count();
        let lab_sts = self.sts_is_lab;
        expect(
            worked == self.scenario.expects_credentials(),
            &format!(
                "demo-app {} credentials (exit {:?})",
                if worked { "found" } else { "found no" },
                self.first.exit_code
            ),
        );
        match self.scenario {
            Scenario::HappyPath | Scenario::Cache => {
                expect(
                    winner == Some("container"),
                    "the container provider should win",
                );
                expect(
                    arn.contains(":assumed-role/lab-pod-role/") || !lab_sts,
                    "the identity should be the association's role",
                );
                expect(agent_status == Some(200), "the agent should answer 200");
                if lab_sts {
                    expect(assumes == 1, "exactly one AssumeRole should reach STS");
                }
            }
            Scenario::NoAssociation => {
                expect(agent_status == Some(404), "the agent should answer 404");
                expect(
                    eks_code == Some("ResourceNotFoundException"),
                    "eks-auth should answer ResourceNotFoundException",
                );
                expect(assumes == 0, "nothing should reach STS");
            }
            Scenario::ExpiredToken => {
                expect(agent_status == Some(400), "the agent should answer 400");
                expect(self.eks_lines.is_empty(), "eks-auth should not be asked");
                expect(assumes == 0, "nothing should reach STS");
            }
            Scenario::StaticKeysShadow => {
                expect(
                    winner == Some("environment"),
                    "the environment provider should win",
                );
                expect(
                    arn.ends_with(":user/ci-deployer") || !lab_sts,
                    "the identity should be the IAM user of the static keys",
                );
                // demo-app looks at the container step itself (one request); the SDK never asks.
                expect(
                    self.agent_lines.len() <= 1,
                    "only demo-app's own look should reach the agent, never the SDK",
                );
            }
            Scenario::AgentDown => {
                expect(winner.is_none(), "no provider should win");
                expect(self.agent_lines.is_empty(), "no agent should answer");
            }
            // Refused by eks-auth after the agent's own checks passed: the agent passes the 400 on.
            Scenario::WrongAudience
            | Scenario::LongLivedToken
            | Scenario::DeletedPod
            | Scenario::StolenTokenOtherNode
            | Scenario::UnauthenticatedCaller
            | Scenario::RoleOutsidePolicy => {
                let code = match self.scenario {
                    Scenario::StolenTokenOtherNode
                    | Scenario::UnauthenticatedCaller
                    | Scenario::RoleOutsidePolicy => "AccessDeniedException",
                    _ => "InvalidTokenException",
                };
                expect(
                    agent_status == Some(400),
                    "the agent should pass on eks-auth's 400",
                );
                expect(
                    eks_code == Some(code),
                    &format!("eks-auth should answer {code}"),
                );
                expect(assumes == 0, "nothing should reach STS");
            }
            Scenario::CrossAccount => {
                expect(
                    winner == Some("container"),
                    "the container provider should win",
                );
                expect(
                    arn.contains(&format!("{OTHER_ACCOUNT}:assumed-role/lab-cross-account/"))
                        || !lab_sts,
                    "the identity should be the target role in the other account",
                );
                if lab_sts {
                    expect(assumes == 2, "two AssumeRole calls should reach STS");
                }
            }
        }
        if self.scenario == Scenario::Cache {
            let second_ok = self.second.is_some_and(|s| s.exit_code == Some(0));
            expect(second_ok, "the second process should get credentials too");
            let first_miss = self
                .agent_lines
                .iter()
                .filter(|l| l["cache"] == "miss")
                .count();
            expect(first_miss == 1, "exactly one request should miss the cache");
        }
        wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_role_policy_allows_the_lab_roles_to_the_pods_namespace_only() {
        let policy = RolePolicy::from_yaml(&lab_role_policy("lab")).unwrap();
        assert_eq!(policy.check("lab", POD_ROLE, Some(TARGET_ROLE)), Ok(()));
        assert!(!policy.allows("other", POD_ROLE));
        assert!(!policy.allows("lab", "arn:aws:iam::111122223333:role/admin"));
    }
}
