//! Helpers for tests on the node cluster (`scripts/cluster up`, see [`crate::cluster`]): a
//! namespace of the test's own, associations, pods from the images built here (busybox and
//! demo-app), the demo-app report, rollouts and the agent's pod.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;

/// The role `scripts/cluster up` lets eks-auth assume out of the box (docs/local-cluster.md).
pub const ROLE: &str = "arn:aws:iam::111122223333:role/local-cluster-demo";

/// A namespace of the test's own on the node cluster, deleted on drop.
#[derive(Debug)]
pub struct Namespace<'a> {
    pub cluster: &'a Cluster,
    pub name: String,
}

impl<'a> Namespace<'a> {
    pub fn create(cluster: &'a Cluster, name: &str) -> Self {
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

    pub fn apply(&self, manifest: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.yaml");
        std::fs::write(&path, manifest).unwrap();
        let out = self
            .cluster
            .kubectl(&["apply", "-n", &self.name, "-f", path.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
    }

    /// `kubectl get OBJECT -n NS -o jsonpath=PATH`.
    pub fn jsonpath(&self, object: &str, path: &str) -> String {
        let out = self.cluster.kubectl(&[
            "get",
            object,
            "-n",
            &self.name,
            "-o",
            &format!("jsonpath={path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies a PodIdentityAssociation for this namespace's `sa`, deleted when the guard drops.
    pub fn associate(&self, sa: &str, role: &str) -> Association<'a> {
        let name = format!("{}-{sa}", self.name);
        self.apply(&format!(
            "apiVersion: podidentity.dev/v1alpha1\nkind: PodIdentityAssociation\nmetadata: {{name: {name}}}\nspec: {{namespace: {ns}, serviceAccount: {sa}, roleArn: \"{role}\"}}\n",
            ns = self.name
        ));
        Association {
            cluster: self.cluster,
            name,
        }
    }

    /// Applies `pod` once a server-side dry run shows the webhook injecting it (the webhook
    /// learns of a new association through its watch, a moment after it is made).
    pub fn apply_once_injected(&self, pod: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod.yaml");
        std::fs::write(&path, pod).unwrap();
        let path = path.to_str().unwrap();
        wait(
            "the webhook to inject the pod",
            Duration::from_secs(30),
            || {
                let out = self.cluster.kubectl(&[
                    "create",
                    "--dry-run=server",
                    "-o",
                    "json",
                    "-n",
                    &self.name,
                    "-f",
                    path,
                ]);
                String::from_utf8_lossy(&out.stdout).contains("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            },
        );
        self.apply(pod);
    }

    /// Waits until the pod has finished, and returns its phase and log.
    pub fn finished(&self, pod: &str) -> (String, String) {
        let mut phase = String::new();
        wait(
            &format!("pod {pod} to finish"),
            Duration::from_secs(90),
            || {
                phase = self.jsonpath(&format!("pod/{pod}"), "{.status.phase}");
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

/// A PodIdentityAssociation, deleted on drop.
#[derive(Debug)]
pub struct Association<'a> {
    cluster: &'a Cluster,
    pub name: String,
}

impl Association<'_> {
    pub fn delete(&self) {
        let out = self.cluster.kubectl(&[
            "delete",
            "podidentityassociation",
            &self.name,
            "--ignore-not-found",
        ]);
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Association<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "podidentityassociation",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}

pub fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A pod from the busybox image built here (never pulled), with `script` as its shell command.
pub fn busybox_pod(name: &str, script: &str, extra_spec: &str) -> String {
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

/// A busybox pod of service account `app` that fetches its credentials from the agent `times`
/// times, every 0.3 s, with the env and token the webhook gives it, and prints each answer's
/// status line (`fetch N: HTTP/1.1 200 OK`). No retry: one failed fetch shows.
pub fn status_fetcher_pod(name: &str, times: u32) -> String {
    let script = format!(
        "i=0; while [ $i -lt {times} ]; do i=$((i+1)); r=$( {{ printf 'GET /v1/credentials HTTP/1.1\\r\\nHost: 169.254.170.23\\r\\nConnection: close\\r\\nAuthorization: %s\\r\\n\\r\\n' \"$(cat $AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)\"; }} | nc -w 2 169.254.170.23 80 2>&1 | head -1); echo \"fetch $i: ${{r:-no answer}}\"; sleep 0.3; done"
    );
    busybox_pod(name, &script, "  serviceAccountName: app").replace(
        "restartPolicy: Never",
        "restartPolicy: Never\n  terminationGracePeriodSeconds: 1",
    )
}

/// The lines of a [`status_fetcher_pod`]'s log that are not a 200.
pub fn failed_fetches(log: &str) -> Vec<&str> {
    log.lines().filter(|l| !l.ends_with("200 OK")).collect()
}

pub fn demo_app_pod(cluster: &Cluster, name: &str, sa: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  serviceAccountName: {sa}
  restartPolicy: Never
  containers:
    - name: app
      image: pod-identity/demo-app:dev
      imagePullPolicy: Never
      args: ["--json"]
      env:
        - {{name: AWS_REGION, value: us-east-1}}
        - {{name: AWS_ENDPOINT_URL_STS, value: "{sts}"}}
        # No instance metadata on this node: the chain's last step would only wait.
        - {{name: AWS_EC2_METADATA_DISABLED, value: "true"}}
"#,
        sts = cluster.var("CLUSTER_STS")
    )
}

/// demo-app's JSON report from a pod log. The log interleaves the container's stdout (the
/// report) and stderr (one `demo-app: …` verdict line) line by line, so that line may sit
/// anywhere, even inside the report: it is dropped first.
pub fn report(log: &str) -> Value {
    let stdout: String = log
        .lines()
        .filter(|l| !l.starts_with("demo-app: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let start = stdout
        .find("{\n")
        .unwrap_or_else(|| panic!("no report in {log:?}"));
    serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("demo-app's report does not parse: {log}"))
}

pub fn service_account(ns: &Namespace, name: &str) {
    let out = ns
        .cluster
        .kubectl(&["create", "serviceaccount", name, "-n", &ns.name]);
    assert!(out.status.success(), "{out:?}");
}

/// A namespace of the test's own whose service account `app` has an association for [`ROLE`].
pub fn with_association<'a>(cluster: &'a Cluster, name: &str) -> (Namespace<'a>, Association<'a>) {
    let ns = Namespace::create(cluster, name);
    service_account(&ns, "app");
    let association = ns.associate("app", ROLE);
    (ns, association)
}

/// The happy path, timed: a pod whose service account has an association gets the role.
pub fn assert_pod_gets_the_role(cluster: &Cluster, ns: &Namespace, pod: &str, sa: &str) {
    let started = Instant::now();
    // The webhook and eks-auth each learn of a new association through their own watch: the pod
    // may start before eks-auth knows it (EKS is eventually consistent here too). Like an app
    // in a Deployment, it is restarted until it gets its credentials.
    let manifest =
        demo_app_pod(cluster, pod, sa).replace("restartPolicy: Never", "restartPolicy: OnFailure");
    ns.apply_once_injected(&manifest);
    let (phase, log) = ns.finished(pod);
    let elapsed = started.elapsed();
    let report = report(&log);
    assert_eq!(phase, "Succeeded", "{log}");
    assert_eq!(report["winner"], "container", "{report:#}");
    let arn = report["identity"]["arn"].as_str().unwrap_or_default();
    assert!(
        arn.starts_with("arn:aws:sts::111122223333:assumed-role/local-cluster-demo/"),
        "the pod's identity is {arn:?}: {report:#}"
    );
    eprintln!("{pod}: from apply to the pod's assumed role in {elapsed:?}");
}

/// `kubectl rollout status` of `object` in `namespace`, waiting at most `secs`.
pub fn rollout_status(cluster: &Cluster, namespace: &str, object: &str, secs: u32) -> Output {
    cluster.kubectl(&[
        "rollout",
        "status",
        "-n",
        namespace,
        object,
        &format!("--timeout={secs}s"),
    ])
}

/// Whether no pod in `namespace` matches `selector` (any pod, whatever its phase).
pub fn no_pods(cluster: &Cluster, namespace: &str, selector: &str) -> bool {
    let out = cluster.kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "name"]);
    out.status.success() && out.stdout.is_empty()
}

pub fn agent_pod(cluster: &Cluster) -> String {
    let out = cluster.kubectl(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "app.kubernetes.io/name=eks-pod-identity-agent",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
