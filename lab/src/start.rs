//! How a run starts each part and what it gives them: the keys it makes up, STS's accounts and
//! roles, eks-auth (keyless, with its role policy and its identity), the agent (with its own
//! token), and demo-app as a pod with exactly its mutated container environment.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use pod_identity_contracts::Secret;
use pod_identity_contracts::constants::{AGENT_IPV4, CREDENTIALS_PATH};
use pod_identity_contracts::eks_auth::CALLER_AUDIENCE;
use serde_json::{Value, json};

use crate::components::{Component, Launcher, Running};
use crate::issuer::{LabIssuer, TokenRequest};
use crate::node::{AGENT_UID, Node, NodeMode, executable_for_others, setpriv_wrapper};
use crate::pod;
use crate::sts::{
    AccessKey, OidcProvider, Role, RunningSts, StsConfig, StsEvent, WebIdentityTrust,
};

use crate::run::{
    ACCOUNT, ADMIN_ROLE, AGENT_NAMESPACE, AGENT_POD, AGENT_SERVICE_ACCOUNT, CLUSTER,
    EKS_AUTH_NAMESPACE, EKS_AUTH_ROLE, EKS_AUTH_SERVICE_ACCOUNT, NODE, POD_ROLE, POD_TIMEOUT,
    REGION, SHADOW_USER, STS_AUDIENCE, TARGET_ROLE,
};

/// Static keys the lab makes up for one run (never reused, never printed).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) access_key_id: String,
    pub(crate) secret: Secret,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        let id = crate::ids::uuid().replace('-', "").to_uppercase();
        Self {
            access_key_id: format!("{prefix}{}", &id[..16]),
            secret: Secret::new(crate::ids::uuid().replace('-', "") + &crate::ids::uuid()),
        }
    }
}

/// Where STS is.
pub(crate) enum Sts {
    Lab(RunningSts),
    External(String),
}

impl Sts {
    pub(crate) fn url(&self) -> String {
        match self {
            Sts::Lab(s) => s.url().to_string(),
            Sts::External(u) => u.clone(),
        }
    }

    pub(crate) fn events(&self) -> Vec<StsEvent> {
        match self {
            Sts::Lab(s) => s.events(),
            Sts::External(_) => Vec::new(),
        }
    }
}

/// One demo-app run: its report and its exit code.
pub(crate) struct PodRun {
    pub(crate) report: Value,
    pub(crate) exit_code: Option<i32>,
    pub(crate) elapsed: Duration,
}

pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback port nothing listens on.
pub(crate) fn closed_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind(loopback())?;
    l.local_addr()
}

pub(crate) fn sts_config(issuer: &str, shadow: &Keys) -> StsConfig {
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

/// The manifest to admit: the user's or the built-in one, with `shadow`'s static keys in its
/// first container's env when `static_keys`.
pub(crate) fn build_manifest(
    static_keys: bool,
    user: Option<&str>,
    shadow: &Keys,
) -> anyhow::Result<String> {
    let text = user.unwrap_or(pod::DEFAULT_POD);
    if !static_keys {
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
pub(crate) fn pod_platform_env(
    home: &Path,
    sts_url: &str,
    node: &Node,
) -> BTreeMap<String, String> {
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
pub(crate) fn lab_role_policy(namespace: &str) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "rules:\n  - namespaces: [{}]\n    roles: [{}, {}]\n",
        quote(namespace),
        quote(POD_ROLE),
        quote(TARGET_ROLE)
    )
}

/// A component's environment: nothing from the caller but what is listed.
pub(crate) fn base_env(home: &Path) -> BTreeMap<String, String> {
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

pub(crate) async fn start_eks_auth(
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
        "--shutdown-grace",
        "2s",
        "--log-format",
        "json",
    ]
    .map(str::to_string)
    .to_vec();
    let cmd = launcher.command(Component::EksAuth, args, &env);
    Ok((Running::spawn(Component::EksAuth, cmd)?, own.token))
}

/// A file only its owner reads (a token).
pub(crate) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
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
pub(crate) async fn eks_auth_identity(sts: &Sts, eks_auth: &Running) -> Vec<StsEvent> {
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
pub(crate) async fn start_agent(
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
pub(crate) fn agent_token_request(node: &str, node_uid: &str) -> TokenRequest {
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

pub(crate) async fn run_pod(
    launcher: &Launcher,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<PodRun> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_contracts::RolePolicy;

    #[test]
    fn the_lab_role_policy_allows_the_lab_roles_to_the_pods_namespace_only() {
        let policy = RolePolicy::from_yaml(&lab_role_policy("lab")).unwrap();
        assert_eq!(policy.check("lab", POD_ROLE, Some(TARGET_ROLE)), Ok(()));
        assert!(!policy.allows("other", POD_ROLE));
        assert!(!policy.allows("lab", "arn:aws:iam::111122223333:role/admin"));
    }
}
