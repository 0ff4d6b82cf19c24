//! The Helm chart on the local node (`scripts/cluster up`): `helm install` of the agent in place
//! of the kustomize one, as an operator would (the off-EKS values pointing it at eks-auth), a pod
//! gets its role; `helm upgrade` rolls it and a pod still gets its role; `helm uninstall` leaves
//! nothing of it behind. The kustomize agent comes back however the test ends. Skipped by name
//! without the node cluster or Helm (`scripts/helm`), except where they are required.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use pod_identity_test_support::cluster::Cluster;
use pod_identity_test_support::manifests;
use pod_identity_test_support::node_cluster::{
    assert_pod_gets_the_role, no_pods, rollout_status, wait, with_association,
};

const AGENT: &str = "app.kubernetes.io/name=eks-pod-identity-agent";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm ARGS` against the node cluster (its API server lives in the node's network namespace).
fn helm(cluster: &Cluster, bin: &Path, args: &[&str]) -> Output {
    cluster
        .command(bin)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .current_dir(root())
        .output()
        .expect("helm runs")
}

/// What an operator of the local node would write: the agent image built here, the local
/// cluster's name and region, the node's stand-in keys (moto checks none), and eks-auth at its
/// fixed ClusterIP, trusted through its CA, with the agent's own token.
const VALUES: &str = r#"
clusterName: local
image:
  override: docker.io/pod-identity/agent:dev
  pullPolicy: IfNotPresent
env:
  AWS_REGION: us-east-1
  AWS_ACCESS_KEY_ID: AKIALOCALNODE0000001
  AWS_SECRET_ACCESS_KEY: local-cluster-node-stand-in
agent:
  eksAuth:
    endpoint: https://10.96.0.80:8080
    caConfigMap: eks-auth-ca
    identityToken: true
"#;

/// Puts the kustomize agent back (and the chart's away), however the test ends.
struct RestoreKustomizeAgent<'a> {
    cluster: &'a Cluster,
    helm: PathBuf,
}

impl Drop for RestoreKustomizeAgent<'_> {
    fn drop(&mut self) {
        let c = self.cluster;
        let _ = helm(
            c,
            &self.helm,
            &["uninstall", "pod-identity", "-n", "kube-system", "--wait"],
        );
        let dir = root().join("deploy/local/cluster");
        let _ = c.kubectl(&["apply", "-k", dir.to_str().unwrap()]);
        let _ = rollout_status(c, "kube-system", "daemonset/eks-pod-identity-agent", 120);
    }
}

#[test]
fn the_chart_installs_upgrades_and_uninstalls_the_agent() {
    const TEST: &str = "the_chart_installs_upgrades_and_uninstalls_the_agent";
    let Some(cluster) = Cluster::node(TEST) else {
        return;
    };
    let Some(bin) = manifests::helm(TEST) else {
        return;
    };
    let _alone = cluster.exclusive();
    let _restore = RestoreKustomizeAgent {
        cluster: &cluster,
        helm: bin.clone(),
    };
    // The kustomize agent off the cluster, as an operator moving to the chart would do.
    for object in [
        "daemonset/eks-pod-identity-agent",
        "serviceaccount/eks-pod-identity-agent",
    ] {
        let out = cluster.kubectl(&["delete", "-n", "kube-system", object, "--wait=true"]);
        assert!(out.status.success(), "{out:?}");
    }
    wait(
        "the kustomize agent to leave the node",
        Duration::from_secs(60),
        || no_pods(&cluster, "kube-system", AGENT),
    );

    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, VALUES).unwrap();
    let values = values.to_str().unwrap();
    // `helm install` / `helm upgrade` of the chart with the values, waiting until it is ready.
    let release = |verb: &str, extra: &[&str]| {
        let mut args = vec![
            verb,
            "pod-identity",
            "charts/pod-identity",
            "-n",
            "kube-system",
            "-f",
            values,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--wait", "--timeout", "120s"]);
        helm(&cluster, &bin, &args)
    };
    let install = release("install", &[]);
    assert!(install.status.success(), "helm install: {install:?}");
    let (ns, _association) = with_association(&cluster, "node-helm");
    assert_pod_gets_the_role(&cluster, &ns, "demo", "app");

    // An upgrade that changes the pod template rolls the agent; the next pod still gets its role.
    let upgrade = release(
        "upgrade",
        &["--set", "podLabels.pod-identity\\.dev/revision=2"],
    );
    assert!(upgrade.status.success(), "helm upgrade: {upgrade:?}");
    let out = rollout_status(
        &cluster,
        "kube-system",
        "daemonset/eks-pod-identity-agent",
        120,
    );
    assert!(out.status.success(), "{out:?}");
    let labels = cluster.kubectl(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        AGENT,
        "-o",
        "jsonpath={.items[*].metadata.labels.pod-identity\\.dev/revision}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&labels.stdout).trim(),
        "2",
        "{labels:?}"
    );
    assert_pod_gets_the_role(&cluster, &ns, "demo-after-upgrade", "app");

    // Uninstalled: nothing of the chart's is left.
    let uninstall = helm(
        &cluster,
        &bin,
        &["uninstall", "pod-identity", "-n", "kube-system", "--wait"],
    );
    assert!(uninstall.status.success(), "helm uninstall: {uninstall:?}");
    wait(
        "the chart's agent to leave the node",
        Duration::from_secs(60),
        || no_pods(&cluster, "kube-system", AGENT),
    );
    let left = cluster.kubectl(&[
        "get",
        "daemonset,serviceaccount",
        "-n",
        "kube-system",
        "-l",
        "app.kubernetes.io/managed-by=Helm",
        "-o",
        "name",
    ]);
    assert!(left.status.success(), "{left:?}");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "left behind"
    );
}
