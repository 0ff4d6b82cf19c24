//! The Helm chart (`charts/pod-identity`) renders the agent exactly as the kustomize bases do, and
//! takes a values file written for the official eks-pod-identity-agent chart: its defaults give
//! `deploy/agent`'s DaemonSet, its hybrid switches `deploy/agent-hybrid`'s, its off-EKS values
//! `deploy/agent-off-eks`'s. Helm comes from `scripts/helm` (built by `scripts/check-manifests`,
//! which runs before the tests); without it the tests say they are skipped, except in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use pod_identity_test_support::manifests::{self, objects, of_kind, render};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm template` of the chart with `values` (YAML), one JSON value per object.
fn template(test: &str, values: &str) -> Option<Vec<Value>> {
    let helm = manifests::helm(test)?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let out = Command::new(helm)
        .args([
            "template",
            "pod-identity",
            "charts/pod-identity",
            "-n",
            "kube-system",
            "-f",
        ])
        .arg(&file)
        .current_dir(root())
        .output()
        .unwrap();
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
