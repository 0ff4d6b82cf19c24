//! A real Kubernetes node (`scripts/cluster up`): etcd, kube-apiserver, controller-manager,
//! scheduler, containerd, kubelet and kube-proxy built or installed here, inside one network
//! namespace that is the node, running images built here. What the product needs from a node,
//! shown on it: pods run from local images with projected service-account tokens for the Pod
//! Identity audience, ClusterIP Services work, and a hostNetwork server on the node's
//! 169.254.170.23:80 (where the agent listens) answers pods.
//!
//! Needs root; under scripts/test as root a missing node is a failure, elsewhere a named skip.

use std::time::{Duration, Instant};

use pod_identity_test_support::cluster::Cluster;

/// A namespace of the test's own on the node cluster, deleted on drop.
struct Namespace<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl<'a> Namespace<'a> {
    fn create(cluster: &'a Cluster, name: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let out = cluster.kubectl(&["create", "namespace", &name]);
        assert!(out.status.success(), "{out:?}");
        // The controller-manager gives it a default ServiceAccount; pods need it.
        wait(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || {
                cluster
                    .kubectl(&["get", "serviceaccount", "default", "-n", &name])
                    .status
                    .success()
            },
        );
        Self { cluster, name }
    }

    fn apply(&self, manifest: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.yaml");
        std::fs::write(&path, manifest).unwrap();
        let out = self
            .cluster
            .kubectl(&["apply", "-n", &self.name, "-f", path.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
    }

    /// Waits until the pod has finished, and returns its phase and log.
    fn finished(&self, pod: &str) -> (String, String) {
        let mut phase = String::new();
        wait(
            &format!("pod {pod} to finish"),
            Duration::from_secs(90),
            || {
                let out = self.cluster.kubectl(&[
                    "get",
                    "pod",
                    pod,
                    "-n",
                    &self.name,
                    "-o",
                    "jsonpath={.status.phase}",
                ]);
                phase = String::from_utf8_lossy(&out.stdout).to_string();
                phase == "Succeeded" || phase == "Failed"
            },
        );
        let out = self.cluster.kubectl(&["logs", pod, "-n", &self.name]);
        (phase, String::from_utf8_lossy(&out.stdout).to_string())
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A pod from the busybox image built here (never pulled), with `script` as its shell command.
fn busybox_pod(name: &str, script: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
{extra_spec}
  containers:
    - name: main
      image: localhost/busybox:local
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", {script:?}]
"#
    )
}

#[test]
fn a_pod_runs_from_a_local_image_with_a_projected_pod_identity_token() {
    let Some(cluster) = Cluster::node("a_pod_runs_from_a_local_image") else {
        return;
    };
    let ns = Namespace::create(&cluster, "node-token");
    // The volume the webhook injects, by hand: the kubelet asks the API server for a token for
    // the Pod Identity audience and keeps it in the file SDKs read. Only its size is printed.
    let volume = r#"  volumes:
    - name: eks-pod-identity-token
      projected:
        sources:
          - serviceAccountToken:
              audience: pods.eks.amazonaws.com
              expirationSeconds: 86400
              path: eks-pod-identity-token"#;
    let mut pod = busybox_pod(
        "token",
        "echo node=$NODE_NAME; wc -c < /var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
        volume,
    );
    pod.push_str(
        r#"      env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
      volumeMounts:
        - name: eks-pod-identity-token
          mountPath: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount
          readOnly: true
"#,
    );
    ns.apply(&pod);
    let (phase, log) = ns.finished("token");
    assert_eq!(phase, "Succeeded", "{log}");
    assert!(
        log.contains(&format!("node={}", cluster.var("CLUSTER_NODE"))),
        "{log}"
    );
    let bytes: usize = log
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no token size in {log:?}"));
    assert!(bytes > 500, "a projected token of {bytes} bytes");
}

#[test]
fn pods_reach_a_host_network_server_on_169_254_170_23_and_a_cluster_ip_service() {
    let Some(cluster) = Cluster::node("pods_reach_a_host_network_server") else {
        return;
    };
    let ns = Namespace::create(&cluster, "node-network");
    // Where the agent will listen: the node's 169.254.170.23, port 80, from the host network.
    let mut server = busybox_pod(
        "agent-address",
        "mkdir -p /www && echo served-on-the-node > /www/index.html && exec httpd -f -p 169.254.170.23:80 -h /www",
        "  hostNetwork: true",
    );
    server.push_str(
        "      readinessProbe: {tcpSocket: {host: 169.254.170.23, port: 80}, periodSeconds: 1}\n",
    );
    ns.apply(&server);
    // And a pod behind a ClusterIP Service (kube-proxy's iptables rules).
    let mut web = busybox_pod(
        "web",
        "mkdir -p /www && echo served-by-a-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        "",
    );
    web = web.replace("  name: web\n", "  name: web\n  labels: {app: web}\n");
    web.push_str("      readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n");
    ns.apply(&web);
    ns.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    for pod in ["agent-address", "web"] {
        wait(
            &format!("{pod} to be ready"),
            Duration::from_secs(60),
            || {
                let out = cluster.kubectl(&[
                    "get",
                    "pod",
                    pod,
                    "-n",
                    &ns.name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                out.stdout == b"True"
            },
        );
    }
    // busybox's wget crashes in a scratch image (static glibc name lookups): plain HTTP by nc.
    let client = busybox_pod(
        "client",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 169.254.170.23 80 | tail -1; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $WEB_SERVICE_HOST 80 | tail -1",
        "",
    );
    ns.apply(&client);
    let (phase, log) = ns.finished("client");
    assert_eq!(phase, "Succeeded", "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        ["served-on-the-node", "served-by-a-pod"],
        "direct to 169.254.170.23, then through the ClusterIP Service"
    );
}
