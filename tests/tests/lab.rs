//! The lab end to end: `pod-identity-lab run --json` for every scenario, asserting the outcome and
//! the trace facts a reviewer relies on (the assumed role, the session tags, the refusals and who
//! refused, the shadowing verdict, the cache), on loopback, on a node (a network namespace, when
//! root), and once with moto as STS instead of the lab's own.

use std::process::Command;

use pod_identity_contracts::log_schema::{AgentRequestLine, ExchangeAuditLine};
use pod_identity_test_support::binaries::workspace_bin;
use pod_identity_test_support::moto::Moto;
use serde_json::Value;

/// One finished lab run.
struct LabRun {
    code: Option<i32>,
    hops: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl LabRun {
    fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(workspace_bin("pod-identity-lab"));
        cmd.arg("run").arg("--json").args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") || key.starts_with("POD_IDENTITY_LAB_") {
                cmd.env_remove(key);
            }
        }
        let out = cmd.output().expect("run pod-identity-lab");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let hops = stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect();
        let run = Self {
            code: out.status.code(),
            hops,
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        run.assert_well_formed();
        run
    }

    fn scenario(name: &str) -> Self {
        Self::start(&["--loopback", "--scenario", name])
    }

    /// Numbered from 1, one correlation id, no token or secret anywhere.
    fn assert_well_formed(&self) {
        assert!(!self.hops.is_empty(), "no trace; stderr: {}", self.stderr);
        let id = self.correlation_id();
        assert_eq!(id.len(), 36, "the pod uid is the correlation id");
        for (i, hop) in self.hops.iter().enumerate() {
            assert_eq!(hop["n"], i + 1, "{hop}");
            assert_eq!(hop["correlation_id"], id, "{hop}");
        }
        // A JWT starts with a base64url `{"`; secrets and session tokens are never shown.
        for text in [&self.stdout, &self.stderr] {
            assert!(!text.contains("eyJ"), "a token in the output:\n{text}");
            assert!(!text.contains("SecretAccessKey"), "{text}");
            assert!(!text.contains("SessionToken"), "{text}");
        }
    }

    fn correlation_id(&self) -> &str {
        self.hops[0]["correlation_id"].as_str().unwrap()
    }

    fn outcome(&self) -> &Value {
        let last = self.hops.last().unwrap();
        assert_eq!(last["component"], "outcome", "{last}");
        last
    }

    /// Exit 0 and an outcome that says the scenario happened as it should.
    fn assert_as_expected(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "outcome {}\nstderr: {}",
            self.outcome(),
            self.stderr
        );
        assert_eq!(self.outcome()["status"], "ok", "{}", self.outcome());
    }

    fn hops_of(&self, component: &str) -> Vec<&Value> {
        self.hops
            .iter()
            .filter(|h| h["component"] == component)
            .collect()
    }

    /// The hop of `component` whose title contains `needle`.
    fn hop(&self, component: &str, needle: &str) -> &Value {
        self.hops_of(component)
            .into_iter()
            .find(|h| h["title"].as_str().unwrap_or_default().contains(needle))
            .unwrap_or_else(|| panic!("no {component} hop with {needle:?} in:\n{}", self.stdout))
    }

    /// The hop of `component` whose title is exactly `title` (the last one, when several are).
    fn exact_hop(&self, component: &str, title: &str) -> &Value {
        self.hops_of(component)
            .into_iter()
            .rfind(|h| h["title"] == title)
            .unwrap_or_else(|| panic!("no {component} hop {title:?} in:\n{}", self.stdout))
    }

    fn details(hop: &Value) -> String {
        hop["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The agent's request line an agent hop quotes (as the agent wrote it), typed.
    fn agent_line(hop: &Value) -> AgentRequestLine {
        serde_json::from_value(hop["log"].clone()).unwrap_or_else(|e| panic!("{e}: {hop}"))
    }

    /// eks-auth's audit line an eks-auth hop quotes (as eks-auth wrote it), typed.
    fn audit_line(hop: &Value) -> ExchangeAuditLine {
        serde_json::from_value(hop["log"].clone()).unwrap_or_else(|e| panic!("{e}: {hop}"))
    }

    /// The pod's identity from its GetCallerIdentity hop.
    fn identity(&self) -> String {
        let hop = self.hop("pod", "GetCallerIdentity: ");
        hop["title"]
            .as_str()
            .unwrap()
            .trim_start_matches("GetCallerIdentity: ")
            .to_string()
    }
}

#[test]
fn happy_path_the_pod_is_its_associations_role_with_the_pods_session_tags() {
    let run = LabRun::scenario("happy-path");
    run.assert_as_expected();
    let id = run.correlation_id();
    assert!(
        run.identity()
            .starts_with("arn:aws:sts::111122223333:assumed-role/lab-pod-role/eks-lab-demo-app-"),
        "{}",
        run.identity()
    );
    // Webhook → token → SDK → agent → eks-auth → STS, in that order.
    let order: Vec<&str> = run
        .hops
        .iter()
        .map(|h| h["component"].as_str().unwrap())
        .collect();
    let at = |c: &str| order.iter().position(|x| *x == c).unwrap();
    assert!(at("webhook") < at("kubelet") && at("kubelet") < at("sdk"));
    let request = run.hop("agent", "GET /v1/credentials → 200");
    let exchange = run.hop("eks-auth", "AssumeRoleForPodIdentity → 200");
    let assume_hop = run.exact_hop("sts", "AssumeRole");
    let n = |h: &Value| h["n"].as_u64().unwrap();
    assert!(
        n(request) > at("sdk") as u64 && n(exchange) > n(request) && n(assume_hop) > n(exchange)
    );
    let (request_line, exchange_line) = (LabRun::agent_line(request), LabRun::audit_line(exchange));
    assert_eq!(
        request_line.pod.k8s_pod_uid.as_deref(),
        Some(id),
        "agent log line carries the id"
    );
    assert_eq!(request_line.cache.as_deref(), Some("miss"));
    assert_eq!(exchange_line.pod.k8s_pod_uid.as_deref(), Some(id));
    assert_eq!(
        exchange_line.pod.token_fingerprint,
        request_line.pod.token_fingerprint
    );
    let assume = LabRun::details(assume_hop);
    for tag in [
        "eks-cluster-name=lab".to_string(),
        "kubernetes-namespace=lab".into(),
        "kubernetes-service-account=demo".into(),
        "kubernetes-pod-name=demo-app".into(),
        format!("kubernetes-pod-uid={id}"),
        "eks-cluster-arn=arn:aws:eks:us-east-1:111122223333:cluster/lab".into(),
    ] {
        assert!(assume.contains(&tag), "{tag} missing:\n{assume}");
    }
    assert!(assume.contains("SigV4 valid"), "{assume}");
    assert!(assume.contains("role arn:aws:iam::111122223333:role/lab-pod-role"));
    assert!(
        assume.contains("signed by arn:aws:sts::111122223333:assumed-role/lab-eks-auth/eks-auth"),
        "{assume}"
    );
    assert!(assume.contains("duration 3600 s"), "{assume}");
    let whoami = LabRun::details(run.exact_hop("sts", "GetCallerIdentity"));
    assert!(
        whoami.contains("assumed-role/lab-pod-role") && whoami.contains("SigV4 valid"),
        "{whoami}"
    );
    // Keyless eks-auth: its token bought its role before anything else reached STS.
    let keyless = run.hop("sts", "AssumeRoleWithWebIdentity");
    assert!(n(keyless) < n(exchange));
    let keyless = LabRun::details(keyless);
    assert!(
        keyless.contains("unsigned: the credential is a web identity token")
            && keyless.contains("of system:serviceaccount:pod-identity-system:eks-auth")
            && keyless.contains("issued ASIA"),
        "{keyless}"
    );
    let eks_auth = LabRun::details(run.hop("eks-auth", "the EKS Auth API"));
    assert!(eks_auth.contains("no static keys"), "{eks_auth}");
    assert!(
        !run.stdout.contains("AKIA"),
        "a long-term key in the trace:\n{}",
        run.stdout
    );
    let patch = LabRun::details(run.hop("webhook", "injected"));
    assert!(patch.contains("add /spec/volumes"), "{patch}");
    let sdk = LabRun::details(run.hop("sdk", "container won"));
    assert!(sdk.contains("container: LOADED (EcsContainer"), "{sdk}");
    assert!(sdk.contains("environment: not loaded"), "{sdk}");
}

#[test]
fn no_association_eks_auth_answers_404_and_nothing_reaches_sts() {
    let run = LabRun::scenario("no-association");
    run.assert_as_expected();
    let agent = LabRun::agent_line(run.hop("agent", "→ 404"));
    assert_eq!(
        agent.error.code.as_deref(),
        Some("ResourceNotFoundException")
    );
    let eks = LabRun::audit_line(run.hop("eks-auth", "→ 404"));
    assert_eq!(eks.error.code.as_deref(), Some("ResourceNotFoundException"));
    run.hop("sts", "no AssumeRole reached STS");
    run.hop("pod", "no identity");
}

#[test]
fn expired_token_is_refused_by_the_agent_before_any_upstream_call() {
    let run = LabRun::scenario("expired-token");
    run.assert_as_expected();
    assert!(LabRun::details(run.hop("kubelet", "minted")).contains("EXPIRED"));
    let agent = run.hop("agent", "→ 400");
    assert!(
        LabRun::agent_line(agent)
            .error
            .message
            .unwrap()
            .contains("expired"),
        "{agent}"
    );
    run.hop("eks-auth", "no exchange reached eks-auth");
    run.hop("sts", "no AssumeRole reached STS");
}

#[test]
fn wrong_audience_is_refused_by_eks_auth_after_the_signature_check() {
    let run = LabRun::scenario("wrong-audience");
    run.assert_as_expected();
    let eks = run.hop("eks-auth", "→ 400");
    let line = LabRun::audit_line(eks);
    assert_eq!(line.error.code.as_deref(), Some("InvalidTokenException"));
    assert!(line.error.message.unwrap().contains("audience"), "{eks}");
    run.hop("sts", "no AssumeRole reached STS");
}

/// eks-auth's refusal in a run: its hop, error code and message.
fn refused_by_eks_auth(run: &LabRun, code: &str, because: &str) {
    run.assert_as_expected();
    let eks = run.hop("eks-auth", "→ 400");
    let line = LabRun::audit_line(eks);
    assert_eq!(line.error.code.as_deref(), Some(code), "{eks}");
    let message = line.error.message.unwrap();
    assert!(message.contains(because), "{eks}");
    assert!(LabRun::details(eks).contains(because), "{eks}");
    run.hop("sts", "no AssumeRole reached STS");
}

#[test]
fn a_token_stolen_to_another_node_is_refused_by_eks_auth() {
    let run = LabRun::scenario("stolen-token-other-node");
    refused_by_eks_auth(
        &run,
        "AccessDeniedException",
        "the token belongs to a pod on node lab-node, but the agent on node lab-node-2 presented it",
    );
    let eks = LabRun::audit_line(run.hop("eks-auth", "→ 400"));
    assert_eq!(
        eks.caller.as_deref(),
        Some("kube-system/eks-pod-identity-agent")
    );
    assert_eq!(eks.caller_node.as_deref(), Some("lab-node-2"));
    assert_eq!(eks.k8s_node.as_deref(), Some("lab-node"));
    assert!(
        LabRun::details(run.hop("agent", "serving")).contains("copied here from node lab-node")
    );
}

#[test]
fn an_unauthenticated_caller_is_refused_before_its_token_is_looked_at() {
    let run = LabRun::scenario("unauthenticated-caller");
    refused_by_eks_auth(
        &run,
        "AccessDeniedException",
        "the caller is not authenticated",
    );
    let eks = LabRun::audit_line(run.hop("eks-auth", "→ 400"));
    assert_eq!(eks.caller.as_deref(), Some("unauthenticated"));
    // Refused before the pod's token was verified: no pod is named.
    assert_eq!(eks.pod.k8s_pod.as_deref(), Some(""), "{eks:?}");
}

#[test]
fn a_deleted_pods_token_is_refused_by_token_review() {
    let run = LabRun::scenario("deleted-pod");
    refused_by_eks_auth(
        &run,
        "InvalidTokenException",
        "the cluster no longer accepts this token",
    );
    let eks = LabRun::audit_line(run.hop("eks-auth", "→ 400"));
    let message = eks.error.message.unwrap();
    assert!(message.contains("pod \"demo-app\""), "{message}");
    // The node binding held: only the pod's absence refused it.
    assert_eq!(eks.caller_node, eks.k8s_node);
}

#[test]
fn a_century_long_token_is_refused_for_its_lifetime() {
    let run = LabRun::scenario("long-lived-token");
    refused_by_eks_auth(
        &run,
        "InvalidTokenException",
        "longer than the 86400 s allowed",
    );
    assert!(LabRun::details(run.hop("kubelet", "minted")).contains("100 years"));
}

#[test]
fn a_role_outside_the_role_policy_is_refused_before_sts() {
    let run = LabRun::scenario("role-outside-policy");
    refused_by_eks_auth(
        &run,
        "AccessDeniedException",
        "names a role that the role policy of cluster lab does not allow for namespace lab",
    );
    let eks = LabRun::audit_line(run.hop("eks-auth", "→ 400"));
    assert_eq!(
        eks.pod.role_arn.as_deref(),
        Some("arn:aws:iam::111122223333:role/lab-admin")
    );
    let denied = eks.role_policy_denied.unwrap();
    assert!(denied.contains("role/lab-admin"), "{denied}");
    // The role trusts eks-auth: only the policy stood between the association and the role.
    assert!(
        LabRun::details(run.hop("sts", "STS at")).contains("lab-admin (trust"),
        "{}",
        run.stdout
    );
}

#[test]
fn static_keys_shadow_pod_identity_and_the_lab_says_so() {
    let run = LabRun::scenario("static-keys-shadow");
    run.assert_as_expected();
    assert_eq!(run.identity(), "arn:aws:iam::111122223333:user/ci-deployer");
    let sdk = run.hop("sdk", "environment won");
    let details = LabRun::details(sdk);
    assert!(details.contains("warning: static keys"), "{details}");
    assert!(details.contains("container: not reached"), "{details}");
}

#[test]
fn agent_down_leaves_the_pod_without_credentials() {
    let run = LabRun::scenario("agent-down");
    run.assert_as_expected();
    run.hop("agent", "not running");
    let sdk = run.hop("sdk", "found no credentials");
    assert!(LabRun::details(sdk).contains("container: FAILED"), "{sdk}");
    run.hop("pod", "no identity");
}

#[test]
fn cross_account_chains_into_the_target_role() {
    let run = LabRun::scenario("cross-account");
    run.assert_as_expected();
    assert!(
        run.identity()
            .starts_with("arn:aws:sts::444455556666:assumed-role/lab-cross-account/"),
        "{}",
        run.identity()
    );
    let assumes: Vec<String> = run
        .hops_of("sts")
        .into_iter()
        .filter(|h| h["title"] == "AssumeRole")
        .map(LabRun::details)
        .collect();
    assert_eq!(assumes.len(), 2, "{assumes:?}");
    assert!(
        assumes[0]
            .contains("signed by arn:aws:sts::111122223333:assumed-role/lab-eks-auth/eks-auth"),
        "{}",
        assumes[0]
    );
    assert!(assumes[1].contains("signed by arn:aws:sts::111122223333:assumed-role/lab-pod-role/"));
    assert!(assumes[1].contains("role arn:aws:iam::444455556666:role/lab-cross-account"));
    assert!(
        assumes[1].contains("carried from the calling session"),
        "{}",
        assumes[1]
    );
}

#[test]
fn cache_serves_the_second_process_without_an_exchange() {
    let run = LabRun::scenario("cache");
    run.assert_as_expected();
    let second = run.hop("agent", "second process: GET /v1/credentials → 200");
    assert_eq!(LabRun::agent_line(second).cache.as_deref(), Some("hit"));
    run.hop("agent", "cache: 1 miss(es)");
    let assumes = run
        .hops_of("sts")
        .into_iter()
        .filter(|h| h["title"] == "AssumeRole")
        .count();
    assert_eq!(assumes, 1);
}

#[test]
fn scenarios_lists_every_scenario_and_an_unknown_one_is_refused() {
    let out = Command::new(workspace_bin("pod-identity-lab"))
        .arg("scenarios")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "happy-path",
        "no-association",
        "expired-token",
        "wrong-audience",
        "static-keys-shadow",
        "agent-down",
        "cross-account",
        "cache",
        "stolen-token-other-node",
        "unauthenticated-caller",
        "deleted-pod",
        "long-lived-token",
        "role-outside-policy",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let out = Command::new(workspace_bin("pod-identity-lab"))
        .args(["run", "--scenario", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario \"nope\""));
    let out = Command::new(workspace_bin("pod-identity-lab"))
        .args(["component", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown component \"nope\""));
}

#[test]
fn a_pod_file_that_is_not_a_pod_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
    )
    .unwrap();
    let out = Command::new(workspace_bin("pod-identity-lab"))
        .args(["run", "--loopback", "--pod"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a v1 Pod"), "{err}");
}

#[test]
fn happy_path_on_a_node_runs_the_agent_on_the_link_local_address_without_capabilities() {
    let root = rustix::process::geteuid().is_root();
    let tools = ["ip", "setpriv"]
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok());
    if !(root && tools) {
        assert!(
            std::env::var_os("POD_IDENTITY_REQUIRE_NODE_TESTS").is_none(),
            "the lab's node mode needs root, ip and setpriv"
        );
        eprintln!("SKIPPED: the lab's node mode needs root, ip and setpriv");
        return;
    }
    let run = LabRun::start(&["--scenario", "happy-path"]);
    run.assert_as_expected();
    assert!(LabRun::details(&run.hops[0]).contains("network namespace pod-identity-lab-"));
    let agent = LabRun::details(run.hop(
        "agent",
        "agent serving http://169.254.170.23/v1/credentials",
    ));
    assert!(agent.contains("Uid 65534 65534 65534 65534"), "{agent}");
    assert!(agent.contains("CapEff 0000000000000000"), "{agent}");
    assert!(agent.contains("NoNewPrivs 1"), "{agent}");
    let pod = LabRun::details(run.hop("pod", "starts demo-app"));
    assert!(
        pod.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials"),
        "{pod}"
    );
    assert!(run.identity().contains("assumed-role/lab-pod-role/"));
    // The namespace went with the lab.
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let pid_ns = String::from_utf8_lossy(&left.stdout);
    assert!(
        !pid_ns.contains("pod-identity-lab-"),
        "namespace left behind: {pid_ns}"
    );
}

#[tokio::test]
async fn happy_path_with_moto_as_sts() {
    let Some(moto) = Moto::start("happy_path_with_moto_as_sts").await else {
        return;
    };
    let url = moto.url().to_string();
    let run = tokio::task::spawn_blocking(move || {
        LabRun::start(&[
            "--loopback",
            "--scenario",
            "happy-path",
            "--sts-endpoint",
            &url,
        ])
    })
    .await
    .unwrap();
    run.assert_as_expected();
    assert!(
        run.identity()
            .contains(":assumed-role/lab-pod-role/eks-lab-demo-app-")
    );
    let calls = moto.assume_role_calls().await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let tags = calls[0].tags();
    assert!(
        tags.contains(&(
            "kubernetes-pod-uid".to_string(),
            run.correlation_id().to_string()
        )),
        "{tags:?}"
    );
    assert_eq!(
        calls[0].param("RoleArn"),
        Some("arn:aws:iam::111122223333:role/lab-pod-role")
    );
}

#[test]
fn your_own_pod_gets_the_association_for_its_namespace_and_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: checkout\n  namespace: shop\n  annotations:\n    eks.amazonaws.com/token-expiration: \"3600\"\nspec:\n  serviceAccountName: payments\n  containers:\n    - name: main\n      image: example/checkout\n      env:\n        - name: AWS_REGION\n          value: eu-west-1\n        - name: POD_IP\n          valueFrom:\n            fieldRef: {fieldPath: status.podIP}\n    - name: sidecar\n      image: example/proxy\n",
    )
    .unwrap();
    let run = LabRun::start(&["--loopback", "--pod", file.to_str().unwrap()]);
    run.assert_as_expected();
    assert!(
        run.identity()
            .starts_with("arn:aws:sts::111122223333:assumed-role/lab-pod-role/eks-lab-checkout-"),
        "{}",
        run.identity()
    );
    let token = LabRun::details(run.hop("kubelet", "minted"));
    assert!(
        token.contains("sub system:serviceaccount:shop:payments"),
        "{token}"
    );
    assert!(token.contains("expirationSeconds 3600"), "{token}");
    let pod = LabRun::details(run.hop("pod", "starts demo-app"));
    // The pod's own region is kept; a valueFrom variable is named as not resolvable here.
    assert!(pod.contains("AWS_REGION=eu-west-1"), "{pod}");
    assert!(
        pod.contains("not set (valueFrom needs an API server): POD_IP"),
        "{pod}"
    );
}
