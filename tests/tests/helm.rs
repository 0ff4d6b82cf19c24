//! The Helm chart on the local node (`scripts/cluster up`): the whole product installed with one
//! `helm install` of `deploy/local/helm-values.yaml`, in place of the kustomize overlay, as an
//! operator moving to the chart would do. A pod gets its role through the chart's webhook,
//! agent and eks-auth; `helm upgrade` to a new image tag rolls all three while a pod keeps
//! fetching, and not one fetch fails; `helm uninstall` leaves only what the chart documents (the
//! CRD, and the webhook's certificate Secret its `certs` init container made). The kustomize
//! product comes back however the test ends. Skipped by name without the node cluster or Helm
//! (`scripts/helm`), except where they are required.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use pod_identity_test_support::cluster::Cluster;
use pod_identity_test_support::manifests;
use pod_identity_test_support::node_cluster::{
    Namespace, assert_pod_gets_the_role, failed_fetches, no_pods, rollout_status,
    status_fetcher_pod, wait, with_association,
};
use serde_json::Value;

const AGENT: &str = "app.kubernetes.io/name=eks-pod-identity-agent";
const LOCAL: &str = "deploy/local/cluster";
const PRODUCT: [(&str, &str); 3] = [
    ("kube-system", "daemonset/eks-pod-identity-agent"),
    ("pod-identity-system", "deployment/eks-auth"),
    ("pod-identity-system", "deployment/pod-identity-webhook"),
];

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

/// `kubectl ARGS -f FILE` of `objects`.
fn kubectl_objects(cluster: &Cluster, args: &[&str], objects: &[Value]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, list.to_string()).unwrap();
    let mut all = args.to_vec();
    all.extend(["-f", file.to_str().unwrap()]);
    cluster.kubectl(&all)
}

/// Waits until each part of the product has rolled out.
fn product_rolled_out(cluster: &Cluster) {
    for (namespace, object) in PRODUCT {
        let out = rollout_status(cluster, namespace, object, 180);
        assert!(out.status.success(), "{object}: {out:?}");
    }
}

/// Puts the kustomize product back (and the chart's away), however the test ends.
struct RestoreKustomizeProduct<'a> {
    cluster: &'a Cluster,
    helm: PathBuf,
}

impl Drop for RestoreKustomizeProduct<'_> {
    fn drop(&mut self) {
        let c = self.cluster;
        let _ = helm(
            c,
            &self.helm,
            &["uninstall", "pod-identity", "-n", "kube-system", "--wait"],
        );
        let _ = c.kubectl(&["apply", "-k", root().join(LOCAL).to_str().unwrap()]);
        for (namespace, object) in PRODUCT {
            let _ = rollout_status(c, namespace, object, 180);
        }
    }
}

/// The images of the product's pods in `namespace` (their containers'), sorted, deduplicated.
fn images(cluster: &Cluster, namespace: &str) -> Vec<String> {
    let out = cluster.kubectl(&[
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/name in (eks-pod-identity-agent,eks-auth,pod-identity-webhook)",
        "-o",
        "jsonpath={.items[*].spec.containers[*].image}",
    ]);
    let mut images: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    images.sort();
    images.dedup();
    images
}

#[test]
fn the_chart_installs_upgrades_and_uninstalls_the_product() {
    const TEST: &str = "the_chart_installs_upgrades_and_uninstalls_the_product";
    let Some(cluster) = Cluster::node(TEST) else {
        return;
    };
    let Some(bin) = manifests::helm(TEST) else {
        return;
    };
    let _alone = cluster.exclusive();
    let _restore = RestoreKustomizeProduct {
        cluster: &cluster,
        helm: bin.clone(),
    };
    // The kustomize product off the cluster but for its namespace (which holds the TLS Secret
    // scripts/cluster-node made) and the CRD (which holds the associations).
    let kustomized: Vec<Value> = manifests::render(TEST, LOCAL)
        .unwrap()
        .into_iter()
        .filter(|o| o["kind"] != "Namespace" && o["kind"] != "CustomResourceDefinition")
        .collect();
    let out = kubectl_objects(&cluster, &["delete", "--wait=true"], &kustomized);
    assert!(out.status.success(), "{out:?}");
    wait(
        "the kustomize agent to leave the node",
        Duration::from_secs(60),
        || no_pods(&cluster, "kube-system", AGENT),
    );

    // One `helm install`, waiting until every part is ready.
    let release = |verb: &str, extra: &[&str]| {
        let mut args = vec![
            verb,
            "pod-identity",
            "charts/pod-identity",
            "-n",
            "kube-system",
            "-f",
            "deploy/local/helm-values.yaml",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--wait", "--timeout", "180s"]);
        helm(&cluster, &bin, &args)
    };
    let install = release("install", &[]);
    assert!(install.status.success(), "helm install: {install:?}");
    product_rolled_out(&cluster);
    let (ns, _association) = with_association(&cluster, "node-helm");
    assert_pod_gets_the_role(&cluster, &ns, "demo", "app");

    // A new image tag for the whole product (the same images, tagged anew in the node's
    // containerd: no registry here), while a pod keeps fetching.
    let socket = cluster.dir().join("containerd/containerd.sock");
    for image in ["agent", "webhook", "eks-auth"] {
        let out = cluster
            .command("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "images", "tag", "--force"])
            .arg(format!("docker.io/pod-identity/{image}:dev"))
            .arg(format!("docker.io/pod-identity/{image}:upgrade"))
            .output()
            .expect("ctr runs");
        assert!(out.status.success(), "ctr images tag {image}: {out:?}");
    }
    ns.apply_once_injected(&status_fetcher_pod("fetcher", 200));
    let fetched = |ns: &Namespace| {
        let out = ns.cluster.kubectl(&["logs", "fetcher", "-n", &ns.name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait("the first fetches", Duration::from_secs(60), || {
        fetched(&ns).matches("200 OK").count() >= 3
    });
    let upgrade = release("upgrade", &["--set", "image.tag=upgrade"]);
    assert!(upgrade.status.success(), "helm upgrade: {upgrade:?}");
    product_rolled_out(&cluster);
    let during = fetched(&ns).lines().count();
    assert!(
        during < 200,
        "the upgrade outlasted the fetches; nothing was shown"
    );
    for namespace in ["kube-system", "pod-identity-system"] {
        wait(
            &format!("only upgraded pods in {namespace}"),
            Duration::from_secs(90),
            || {
                images(&cluster, namespace)
                    .iter()
                    .all(|i| i.ends_with(":upgrade"))
            },
        );
    }
    let (phase, log) = ns.finished("fetcher");
    assert_eq!(phase, "Succeeded", "{log}");
    eprintln!("helm upgrade of all three parts done after {during} of 200 fetches");
    let failed = failed_fetches(&log);
    assert!(
        failed.is_empty(),
        "fetches failed while the chart upgraded (after {during} fetches): {failed:?}\n{log}"
    );
    assert_eq!(log.lines().count(), 200, "{log}");
    assert_pod_gets_the_role(&cluster, &ns, "demo-after-upgrade", "app");

    // Uninstalled: nothing of the chart's is left but the CRD.
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
        "daemonset,deployment,service,serviceaccount,configmap,secret,role,rolebinding,\
         clusterrole,clusterrolebinding,mutatingwebhookconfiguration,networkpolicy,\
         poddisruptionbudget",
        "-A",
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
    let crd = cluster.kubectl(&["get", "crd", "podidentityassociations.podidentity.dev"]);
    assert!(crd.status.success(), "the CRD is kept: {crd:?}");
}
