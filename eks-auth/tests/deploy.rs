//! `deploy/eks-auth` renders offline with `kubectl kustomize` and keeps its security settings:
//! two non-root replicas on a read-only filesystem with every capability dropped and the
//! runtime's seccomp profile, RBAC limited to watching PodIdentityAssociations and reviewing tokens,
//! and a NetworkPolicy that admits no pod; keyless; the parts compose (deploy/any-cluster) and the
//! local install leaves no placeholder. Skipped (by name) without kubectl, except in CI.

use pod_identity_contracts::RolePolicy;
use pod_identity_test_support::manifests;
use serde_json::Value;

fn render() -> Option<Vec<Value>> {
    render_dir("deploy/eks-auth")
}

fn render_dir(dir: &str) -> Option<Vec<Value>> {
    manifests::render("eks-auth deploy tests", dir)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    manifests::of_kind(docs, kind)
}

#[test]
fn deploy_renders_with_the_security_settings() {
    let Some(docs) = render() else {
        return;
    };
    let deploy = find(&docs, "Deployment")[0];
    assert_eq!(deploy["metadata"]["namespace"], "pod-identity-system");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for flag in [
        "--cluster-name=",
        "--issuer=",
        "--associations=",
        "--watch-custom-resources",
        "--role-policy=",
    ] {
        assert!(
            args.iter().any(|a| a.starts_with(flag)),
            "{flag} in {args:?}"
        );
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    let role = find(&docs, "ClusterRole")[0];
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": ["podidentity.dev"], "resources": ["podidentityassociations"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
        ])
    );

    let svc = find(&docs, "Service")[0];
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);

    let np = find(&docs, "NetworkPolicy")[0];
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    for rule in np["spec"]["ingress"].as_array().unwrap() {
        for from in rule["from"].as_array().unwrap() {
            assert!(
                from.get("podSelector").is_none(),
                "no pod may reach eks-auth: {from}"
            );
        }
    }
    assert_eq!(
        np["spec"]["ingress"][0]["from"],
        serde_json::json!([{"ipBlock": {"cidr": "192.0.2.0/24"}}])
    );
}

/// The role policy eks-auth is started with, as rendered: the ConfigMap mounted where
/// `--role-policy` points, parsed as eks-auth parses it.
fn role_policy_of(docs: &[Value]) -> RolePolicy {
    let deploy = find(docs, "Deployment")[0];
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let path = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--role-policy="))
        .expect("--role-policy");
    let (dir, file) = path.rsplit_once('/').unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("the policy's directory is mounted");
    let volume = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let name = volume["configMap"]["name"].as_str().unwrap();
    let cm = find(docs, "ConfigMap")
        .into_iter()
        .find(|cm| cm["metadata"]["name"] == name)
        .expect("the policy's ConfigMap is rendered");
    RolePolicy::from_yaml(cm["data"][file].as_str().unwrap()).unwrap()
}

#[test]
fn deploy_ships_a_role_policy_that_allows_nothing_until_written() {
    let Some(docs) = render_dir("deploy/any-cluster") else {
        return;
    };
    assert!(role_policy_of(&docs).is_empty());
}

#[test]
fn the_local_node_allows_its_demo_role_to_its_demo_namespaces_only() {
    let Some(docs) = render_dir("deploy/local/cluster") else {
        return;
    };
    let policy = role_policy_of(&docs);
    let demo = "arn:aws:iam::111122223333:role/local-cluster-demo";
    assert!(policy.allows("demo", demo));
    assert!(policy.allows("node-role-4242", demo));
    assert!(!policy.allows("kube-system", demo));
    assert!(!policy.allows("demo", "arn:aws:iam::111122223333:role/admin"));
}

/// The env var `name` of the eks-auth container, as rendered.
fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn deploy_is_keyless_and_static_keys_are_a_component() {
    let Some(docs) = render() else {
        return;
    };
    let pod = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert!(c.get("envFrom").is_none(), "no Secret of keys: {c}");
    assert_eq!(env_of(c, "AWS_ROLE_ARN"), Some("EKS_AUTH_ROLE_ARN"));
    assert_eq!(env_of(c, "AWS_ROLE_SESSION_NAME"), Some("eks-auth"));
    // The token file is the projected token for STS, in a volume of its own.
    let file = env_of(c, "AWS_WEB_IDENTITY_TOKEN_FILE").expect("a web identity token file");
    let (dir, name) = file.rsplit_once('/').unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("the token's directory is mounted");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let token = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "sts.amazonaws.com");
    assert_eq!(token["path"], name);
    assert_eq!(pod["serviceAccountName"], "eks-auth");

    // The component puts an IAM user's keys back, and nothing of web identity stays.
    let rendered = manifests::render_together(
        "deploy_is_keyless_and_static_keys_are_a_component",
        &["deploy/eks-auth"],
        &["deploy/eks-auth/static-keys"],
    );
    let docs = rendered.unwrap();
    let pod = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["envFrom"],
        serde_json::json!([{"secretRef": {"name": "eks-auth-aws-credentials"}}])
    );
    for name in [
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_SESSION_NAME",
    ] {
        assert!(env_of(c, name).is_none(), "{name} left: {c}");
    }
    assert!(
        !serde_json::to_string(pod)
            .unwrap()
            .contains("sts.amazonaws.com"),
        "{pod}"
    );
    assert_eq!(env_of(c, "AWS_REGION"), Some("REGION"));
}

/// What an overlay must replace (deploy/any-cluster's header lists them).
const PLACEHOLDERS: [&str; 5] = [
    "CLUSTER_NAME",
    "ISSUER_URL",
    "EKS_AUTH_ROLE_ARN",
    "value: REGION",
    "192.0.2.0/24",
];

fn rendered_text(dir: &str) -> Option<String> {
    manifests::render_text(
        "the_parts_compose_and_the_local_install_leaves_no_placeholder",
        dir,
    )
}

/// The parts compose: the whole product renders with each shared object once (the namespace,
/// the CRD, the role policy, the one associations ConfigMap that the webhook and eks-auth both
/// mount), and the local node's install, which the tests apply, leaves no placeholder.
#[test]
fn the_parts_compose_and_the_local_install_leaves_no_placeholder() {
    let Some(docs) = render_dir("deploy/any-cluster") else {
        return;
    };
    let named = |kind: &str, name: &str| {
        find(&docs, kind)
            .into_iter()
            .filter(|d| d["metadata"]["name"] == name)
            .count()
    };
    assert_eq!(named("Namespace", "pod-identity-system"), 1);
    assert_eq!(
        named(
            "CustomResourceDefinition",
            "podidentityassociations.podidentity.dev"
        ),
        1
    );
    assert_eq!(named("ConfigMap", "pod-identity-role-policy"), 1);
    assert_eq!(named("ConfigMap", "pod-identity-associations"), 1);
    for deployment in ["eks-auth", "pod-identity-webhook"] {
        let d = find(&docs, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == deployment)
            .unwrap();
        let mounted: Vec<&str> = d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["configMap"]["name"].as_str())
            .collect();
        assert!(
            mounted.contains(&"pod-identity-associations"),
            "{deployment} reads the shared associations: {mounted:?}"
        );
    }
    assert_eq!(find(&docs, "DaemonSet").len(), 1, "the agent");

    // The bases keep their placeholders (so this check can fail)...
    let whole = rendered_text("deploy/any-cluster").unwrap();
    for p in PLACEHOLDERS {
        assert!(
            whole.contains(p),
            "{p} is no longer a placeholder of the bases"
        );
    }
    // ...and the install the tests apply replaces every one.
    let local = rendered_text("deploy/local/cluster").unwrap();
    for p in PLACEHOLDERS {
        assert!(!local.contains(p), "deploy/local/cluster leaves {p}");
    }
}
