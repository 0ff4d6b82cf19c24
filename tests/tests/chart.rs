//! The Helm chart (`charts/pod-identity`) renders the product exactly as the kustomize bases do, and
//! takes a values file written for the official eks-pod-identity-agent chart: its defaults give
//! `deploy/agent`'s DaemonSet, its hybrid switches `deploy/agent-hybrid`'s, its off-EKS values
//! `deploy/agent-off-eks`'s; with the webhook and eks-auth on, every object of
//! `deploy/any-cluster`, and with `deploy/local/helm-values.yaml` those of `deploy/local/cluster`. Helm comes from `scripts/helm` (built by `scripts/check-manifests`,
//! which runs before the tests); without it the tests say they are skipped, except in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use pod_identity_test_support::manifests::{self, objects, of_kind, render};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm template` of the chart with `values` (YAML), the CRD included.
fn helm_template(helm: &Path, values: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    Command::new(helm)
        .args(["template", "pod-identity", "charts/pod-identity"])
        .args(["-n", "kube-system", "--include-crds", "-f"])
        .arg(&file)
        .current_dir(root())
        .output()
        .unwrap()
}

/// [`helm_template`], one JSON value per object; `None` without Helm.
fn template(test: &str, values: &str) -> Option<Vec<Value>> {
    let out = helm_template(&manifests::helm(test)?, values);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(objects(&String::from_utf8(out.stdout).unwrap()))
}

fn daemonset<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    of_kind(docs, "DaemonSet")
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no DaemonSet {name}"))
}

/// What must be the same wherever the agent is installed from: placement, privileges, probes,
/// rollout, resources, volumes. Args and the image are compared by the tests themselves.
fn essentials(ds: &Value) -> Value {
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let init = &pod["initContainers"][0];
    json!({
        "affinity": pod["affinity"],
        "tolerations": pod["tolerations"],
        "hostNetwork": pod["hostNetwork"],
        "automount": pod["automountServiceAccountToken"],
        "serviceAccount": pod["serviceAccountName"],
        "priorityClassName": pod["priorityClassName"],
        "podSecurity": pod["securityContext"],
        "initSecurity": init["securityContext"],
        "initArgv": argv(init),
        "security": c["securityContext"],
        "liveness": c["livenessProbe"],
        "readiness": c["readinessProbe"],
        "resources": c["resources"],
        "updateStrategy": ds["spec"]["updateStrategy"],
        "volumes": pod["volumes"],
        "mounts": c["volumeMounts"],
    })
}

/// What the container runs, past the image's entrypoint: the chart runs `/go-runner
/// /eks-pod-identity-agent <subcommand>` as its command (as the official one does), the kustomize
/// base passes the subcommand as the first argument to the image's `/eks-pod-identity-agent`.
fn argv(c: &Value) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    argv.retain(|a| a != "/go-runner" && a != "/eks-pod-identity-agent");
    argv
}

/// The server's flags as `--flag value` pairs, whichever way they were written.
fn flags(ds: &Value) -> Vec<(String, String)> {
    let mut args = argv(&ds["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(args.first().map(String::as_str), Some("server"));
    args.remove(0);
    let mut out = Vec::new();
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        if let Some((flag, value)) = a.split_once('=') {
            out.push((flag.to_string(), value.to_string()));
        } else if it.peek().is_some_and(|n| !n.starts_with('-')) {
            out.push((a, it.next().unwrap()));
        } else {
            out.push((a, "true".into()));
        }
    }
    out.sort();
    out
}

fn env(ds: &Value) -> Value {
    ds["spec"]["template"]["spec"]["containers"][0]["env"].clone()
}

/// The chart with `values` renders the agent DaemonSet of the kustomization `dir`; the chart's
/// objects, or `None` when a tool is missing.
fn same_agent_as(test: &str, values: &str, dir: &str) -> Option<Vec<Value>> {
    let (chart, base) = (template(test, values)?, render(test, dir)?);
    let ours = daemonset(&chart, "eks-pod-identity-agent");
    let theirs = daemonset(&base, "eks-pod-identity-agent");
    assert_eq!(essentials(ours), essentials(theirs), "{dir}");
    assert_eq!(flags(ours), flags(theirs), "{dir}");
    assert_eq!(env(ours), env(theirs), "{dir}");
    Some(chart)
}

#[test]
fn the_charts_agent_is_the_kustomize_bases_agent() {
    const TEST: &str = "the_charts_agent_is_the_kustomize_bases_agent";
    let values = "clusterName: CLUSTER_NAME\nenv:\n  AWS_REGION: REGION\n";
    let Some(chart) = same_agent_as(TEST, values, "deploy/agent") else {
        return;
    };
    assert_eq!(
        of_kind(&chart, "DaemonSet").len(),
        1,
        "hybrid DaemonSets are off by default"
    );
    // The ServiceAccount off EKS callers are checked against.
    let sa = of_kind(&chart, "ServiceAccount");
    assert_eq!(sa[0]["metadata"]["name"], "eks-pod-identity-agent");
    assert_eq!(sa[0]["automountServiceAccountToken"], false);

    // Off EKS: eks-auth's endpoint, its CA and the agent's own token, as deploy/agent-off-eks.
    let off = format!(
        "{values}agent:\n  eksAuth:\n    endpoint: https://eks-auth.pod-identity-system.svc:8080\n    \
         caConfigMap: eks-auth-ca\n    identityToken: true\n"
    );
    same_agent_as(TEST, &off, "deploy/agent-off-eks");
}

/// A values file as users of the official chart write it (the keys its README documents).
const OFFICIAL_VALUES: &str = r#"
clusterName: prod
env:
  AWS_REGION: eu-west-1
image:
  override: registry.example/pod-identity-agent:0.1.0
agent:
  additionalArgs:
    "-v": "trace"
daemonsets:
  hybrid:
    create: true
  hybrid-bottlerocket:
    create: true
tolerations:
  - key: dedicated
    operator: Exists
"#;

#[test]
fn a_values_file_for_the_official_chart_installs_this_agent() {
    const TEST: &str = "a_values_file_for_the_official_chart_installs_this_agent";
    let Some(chart) = template(TEST, OFFICIAL_VALUES) else {
        return;
    };
    let hybrid_base = render(TEST, "deploy/agent-hybrid").unwrap();
    let cloud = daemonset(&chart, "eks-pod-identity-agent");
    let hybrid = daemonset(&chart, "eks-pod-identity-agent-hybrid");
    daemonset(&chart, "eks-pod-identity-agent-hybrid-bottlerocket");
    for ds in [cloud, hybrid] {
        let c = &ds["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "registry.example/pod-identity-agent:0.1.0");
        assert_eq!(
            c["command"],
            json!(["/go-runner", "/eks-pod-identity-agent", "server"])
        );
        let f = flags(ds);
        assert!(
            f.contains(&("--cluster-name".into(), "prod".into())),
            "{f:?}"
        );
        assert!(f.contains(&("-v".into(), "trace".into())), "{f:?}");
        assert_eq!(
            env(ds),
            json!([{"name": "AWS_REGION", "value": "eu-west-1"}])
        );
        assert_eq!(
            ds["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "dedicated", "operator": "Exists"}])
        );
    }
    // The hybrid DaemonSet is deploy/agent-hybrid's: placement, credentials file, rotation.
    let theirs = daemonset(&hybrid_base, "eks-pod-identity-agent-hybrid");
    let pod = |ds: &Value, field: &str| ds["spec"]["template"]["spec"][field].clone();
    assert_eq!(pod(hybrid, "affinity"), pod(theirs, "affinity"));
    assert_eq!(pod(hybrid, "volumes"), pod(theirs, "volumes"));
    assert_eq!(
        hybrid["spec"]["template"]["spec"]["containers"][0]["volumeMounts"],
        theirs["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    );
    assert!(flags(hybrid).contains(&("--rotate-credentials".into(), "true".into())));
    assert!(
        !flags(cloud)
            .iter()
            .any(|(f, _)| f == "--rotate-credentials")
    );
}

/// Labels on the objects themselves, which the chart gives every object (Helm's and the
/// `app.kubernetes.io` ones) and the kustomize bases only some: compared on Namespaces alone
/// (but for Helm's own), where they mean something (pod security, the webhook's skip). Selectors and pod templates
/// are compared whole.
fn without_helm_labels(mut object: Value) -> Value {
    let namespace = object["kind"] == "Namespace";
    if let Some(labels) = object
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        let helms = [
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
        ];
        labels.retain(|k, _| {
            !(k.starts_with("helm.sh/")
                || helms.contains(&k.as_str())
                || (k.starts_with("app.kubernetes.io/") && !namespace))
        });
        if labels.is_empty() {
            object["metadata"].as_object_mut().unwrap().remove("labels");
        }
    }
    // A file in a ConfigMap is compared as the YAML it holds (the bases' files have comments).
    if object["kind"] == "ConfigMap"
        && let Some(data) = object.pointer_mut("/data").and_then(Value::as_object_mut)
    {
        for value in data.values_mut() {
            let text = value.as_str().unwrap_or_default();
            *value = serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        }
    }
    object
}

/// Each object by kind, namespace and name, normalized, except those `skip` names.
fn by_id(docs: &[Value], skip: &[(&str, &str)]) -> std::collections::BTreeMap<String, Value> {
    docs.iter()
        .filter(|o| {
            !skip
                .iter()
                .any(|(kind, name)| o["kind"] == *kind && o["metadata"]["name"] == *name)
        })
        .map(|o| {
            let id = format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            );
            (id, without_helm_labels(o.clone()))
        })
        .collect()
}

/// The chart's objects are the kustomization's, one by one (the agent DaemonSet is compared
/// by `essentials` and `flags`: the chart runs it through `/go-runner` as the official one).
fn same_objects(chart: &[Value], base: &[Value], skip: &[(&str, &str)], dir: &str) {
    let skip: Vec<_> = skip
        .iter()
        .copied()
        .chain([("DaemonSet", "eks-pod-identity-agent")])
        .collect();
    let (ours, theirs) = (by_id(chart, &skip), by_id(base, &skip));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the chart and {dir} make different objects"
    );
    for (id, object) in &ours {
        assert_eq!(object, &theirs[id], "{id}: the chart and {dir} differ");
    }
    let ours = daemonset(chart, "eks-pod-identity-agent");
    let theirs = daemonset(base, "eks-pod-identity-agent");
    assert_eq!(essentials(ours), essentials(theirs), "{dir}");
    assert_eq!(flags(ours), flags(theirs), "{dir}");
}

/// The placeholders deploy/any-cluster leaves for an overlay, as values.
const ANY_CLUSTER_VALUES: &str = r#"
clusterName: CLUSTER_NAME
env:
  AWS_REGION: REGION
agent:
  eksAuth:
    caConfigMap: eks-auth-ca
webhook:
  enabled: true
  tls: cert-manager
eksAuth:
  enabled: true
  issuer: ISSUER_URL
  roleArn: EKS_AUTH_ROLE_ARN
  nodeCIDRs: [192.0.2.0/24]
"#;

#[test]
fn the_whole_chart_is_the_any_cluster_kustomization() {
    const TEST: &str = "the_whole_chart_is_the_any_cluster_kustomization";
    let Some(chart) = template(TEST, ANY_CLUSTER_VALUES) else {
        return;
    };
    let base = render(TEST, "deploy/any-cluster").unwrap();
    same_objects(&chart, &base, &[], "deploy/any-cluster");
    // The agent calls this chart's eks-auth, with its own token, without being told.
    let agent = daemonset(&chart, "eks-pod-identity-agent");
    assert_eq!(env(agent), env(daemonset(&base, "eks-pod-identity-agent")));
}

#[test]
fn the_local_values_are_the_local_cluster_kustomization() {
    const TEST: &str = "the_local_values_are_the_local_cluster_kustomization";
    let values = std::fs::read_to_string(root().join("deploy/local/helm-values.yaml")).unwrap();
    let Some(chart) = template(TEST, &values) else {
        return;
    };
    let base = render(TEST, "deploy/local/cluster").unwrap();
    // scripts/cluster-node makes the namespace (it holds the TLS Secret made from the node's
    // CA); the kustomize agent takes its stand-in keys from a Secret, the chart's from `env`.
    let skip = [
        ("Namespace", "pod-identity-system"),
        ("Secret", "eks-pod-identity-agent-aws-credentials"),
    ];
    same_objects(&chart, &base, &skip, "deploy/local/cluster");
}

#[test]
fn each_part_of_the_chart_can_be_left_out() {
    const TEST: &str = "each_part_of_the_chart_can_be_left_out";
    let kinds = |docs: &[Value]| -> Vec<String> {
        let mut kinds: Vec<String> = docs
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        kinds.sort();
        kinds
    };
    // On EKS: the agent (and the CRD, which `--skip-crds` leaves out), nothing of the webhook's
    // or eks-auth's.
    let Some(eks) = template(TEST, "clusterName: prod\n") else {
        return;
    };
    assert_eq!(
        kinds(&eks),
        [
            "CustomResourceDefinition podidentityassociations.podidentity.dev",
            "DaemonSet eks-pod-identity-agent",
            "ServiceAccount eks-pod-identity-agent",
        ]
    );
    // The webhook alone (e.g. for its audit): no agent, no eks-auth.
    let webhook = template(
        TEST,
        "daemonsets:\n  cloud:\n    create: false\nwebhook:\n  enabled: true\n",
    )
    .unwrap();
    let names = kinds(&webhook);
    assert!(
        names
            .iter()
            .all(|n| !n.contains("eks-pod-identity-agent") && !n.contains("eks-auth")),
        "{names:#?}"
    );
    assert!(
        names.contains(&"Deployment pod-identity-webhook".to_string()),
        "{names:#?}"
    );
    assert!(
        names.contains(&"ConfigMap pod-identity-associations".to_string()),
        "{names:#?}"
    );
}

#[test]
fn eks_auth_without_its_required_values_is_refused_with_what_is_missing() {
    const TEST: &str = "eks_auth_without_its_required_values_is_refused_with_what_is_missing";
    let Some(helm) = manifests::helm(TEST) else {
        return;
    };
    let cases = [
        ("eksAuth:\n  enabled: true\n", "eksAuth.issuer"),
        (
            "eksAuth:\n  enabled: true\n  issuer: https://i\n",
            "eksAuth.roleArn",
        ),
        (
            "eksAuth:\n  enabled: true\n  issuer: https://i\n  roleArn: arn:aws:iam::1:role/r\n",
            "eksAuth.nodeCIDRs",
        ),
        ("webhook:\n  enabled: true\n  tls: none\n", "webhook.tls"),
    ];
    for (values, missing) in cases {
        let out = helm_template(&helm, values);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{values}: rendered");
        assert!(stderr.contains(missing), "{values}: {stderr}");
    }
}
