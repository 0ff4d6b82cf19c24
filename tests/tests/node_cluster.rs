//! A real Kubernetes node (`scripts/cluster up`): etcd, kube-apiserver, controller-manager,
//! scheduler, containerd, kubelet and kube-proxy built or installed here, inside one network
//! namespace that is the node, running images built here, with the product deployed by its own
//! manifests (deploy/local/cluster/): eks-auth, the webhook, the agent DaemonSet. Here a pod gets
//! its role the way it does on EKS: the API server calls the webhook, the kubelet projects the
//! token, the pod's SDK calls the agent on 169.254.170.23, the agent asks eks-auth, eks-auth
//! asks STS (moto, outside the cluster).
//!
//! Needs root; under scripts/test as root a missing node is a failure, elsewhere a named skip.

use std::process::Output;
use std::time::{Duration, Instant};

use pod_identity_test_support::cluster::Cluster;
use serde_json::Value;

/// The role `scripts/cluster up` lets eks-auth assume out of the box (docs/local-cluster.md).
const ROLE: &str = "arn:aws:iam::111122223333:role/local-cluster-demo";

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

    /// `kubectl get OBJECT -n NS -o jsonpath=PATH`.
    fn jsonpath(&self, object: &str, path: &str) -> String {
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
    fn associate(&self, sa: &str, role: &str) -> Association<'a> {
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
    fn apply_once_injected(&self, pod: &str) {
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
    fn finished(&self, pod: &str) -> (String, String) {
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
struct Association<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Association<'_> {
    fn delete(&self) {
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

/// A pod running demo-app (`--json`) as `sa`: it walks the SDK's default chain and asks STS who
/// the winning credentials are.
fn demo_app_pod(cluster: &Cluster, name: &str, sa: &str) -> String {
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
fn report(log: &str) -> Value {
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

fn service_account(ns: &Namespace, name: &str) {
    let out = ns
        .cluster
        .kubectl(&["create", "serviceaccount", name, "-n", &ns.name]);
    assert!(out.status.success(), "{out:?}");
}

/// A namespace of the test's own whose service account `app` has an association for [`ROLE`].
fn with_association<'a>(cluster: &'a Cluster, name: &str) -> (Namespace<'a>, Association<'a>) {
    let ns = Namespace::create(cluster, name);
    service_account(&ns, "app");
    let association = ns.associate("app", ROLE);
    (ns, association)
}

/// The happy path, timed: a pod whose service account has an association gets the role.
fn assert_pod_gets_the_role(cluster: &Cluster, ns: &Namespace, pod: &str, sa: &str) {
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

#[test]
fn a_pod_gets_its_role_from_the_agent_on_the_node() {
    let Some(cluster) = Cluster::node("a_pod_gets_its_role_from_the_agent_on_the_node") else {
        return;
    };
    let _shared = cluster.shared();
    let (ns, _association) = with_association(&cluster, "node-role");
    assert_pod_gets_the_role(&cluster, &ns, "demo", "app");
    // What the webhook put into the pod, as the API server stored it.
    let env = ns.jsonpath("pod/demo", "{.spec.containers[0].env}");
    assert!(
        env.contains("http://169.254.170.23/v1/credentials"),
        "{env}"
    );
    let volumes = ns.jsonpath("pod/demo", "{.spec.volumes}");
    assert!(volumes.contains("pods.eks.amazonaws.com"), "{volumes}");
}

#[test]
fn a_pod_without_an_association_is_left_alone_and_gets_nothing() {
    let Some(cluster) = Cluster::node("a_pod_without_an_association_is_left_alone") else {
        return;
    };
    let _shared = cluster.shared();
    let ns = Namespace::create(&cluster, "node-none");
    service_account(&ns, "app");
    ns.apply(&demo_app_pod(&cluster, "demo", "app"));
    let (phase, log) = ns.finished("demo");
    assert_eq!(phase, "Failed", "no credentials, so demo-app fails: {log}");
    let report = report(&log);
    assert!(report["winner"].is_null(), "{report:#}");
    let env = ns.jsonpath("pod/demo", "{.spec.containers[0].env}");
    assert!(
        !env.contains("AWS_CONTAINER"),
        "the webhook left the pod alone: {env}"
    );
    // Its own projected token, sent to the agent by hand, gets no credentials either: eks-auth
    // finds no association for the service account. (nc shuts its write side when its input
    // ends: the agent answers all the same.)
    let mut pod = busybox_pod(
        "by-hand",
        "{ printf 'GET /v1/credentials HTTP/1.1\\r\\nHost: 169.254.170.23\\r\\nConnection: close\\r\\nAuthorization: %s\\r\\n\\r\\n' \"$(cat /var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token)\"; } | nc -w 10 169.254.170.23 80 | head -1",
        r#"  serviceAccountName: app
  volumes:
    - name: token
      projected:
        sources:
          - serviceAccountToken: {audience: pods.eks.amazonaws.com, expirationSeconds: 86400, path: eks-pod-identity-token}"#,
    );
    pod.push_str(
        "      volumeMounts: [{name: token, mountPath: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount, readOnly: true}]\n",
    );
    ns.apply(&pod);
    let (phase, log) = ns.finished("by-hand");
    assert_eq!(phase, "Succeeded", "{log}");
    let status = log.lines().next().unwrap_or_default();
    assert!(
        status.starts_with("HTTP/1.1 4"),
        "the agent refuses a pod without an association: {log}"
    );
}

/// The agent's process on the node, read from `/proc`: the container's capability sets and
/// no_new_privs.
fn agent_process_status(cluster: &Cluster, daemonset_pod_label: &str) -> String {
    let out = cluster.kubectl(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        daemonset_pod_label,
        "-o",
        "jsonpath={.items[0].status.containerStatuses[0].containerID}",
    ]);
    let id = String::from_utf8_lossy(&out.stdout);
    let id = id
        .strip_prefix("containerd://")
        .unwrap_or_else(|| panic!("no running agent container: {out:?}"));
    let socket = cluster.dir().join("containerd/containerd.sock");
    let tasks = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .expect("ctr runs");
    let tasks = String::from_utf8_lossy(&tasks.stdout);
    let pid = tasks
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no task {id} in {tasks}"));
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status reads")
}

fn status_field<'s>(status: &'s str, field: &str) -> &'s str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn assert_holds_no_privilege(status: &str) {
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            status_field(status, set),
            "0000000000000000",
            "{set}: {status}"
        );
    }
    assert_eq!(status_field(status, "NoNewPrivs"), "1", "{status}");
}

#[test]
fn the_running_agent_holds_no_capability() {
    let Some(cluster) = Cluster::node("the_running_agent_holds_no_capability") else {
        return;
    };
    let _shared = cluster.shared();
    let status = agent_process_status(&cluster, "app.kubernetes.io/name=eks-pod-identity-agent");
    assert_holds_no_privilege(&status);
    assert!(status.contains("Name:\teks-pod-identi"), "{status}");
}

/// The DaemonSet the official eks-pod-identity-agent chart renders (templates/daemonset.yaml with
/// its default values), with only the image changed, `--endpoint` added through the chart's
/// `agent.additionalArgs`, and eks-auth's CA through its `env` (AWS_CA_BUNDLE) and
/// `daemonsets.cloud.volumes`/`volumeMounts`, as an operator off EKS would. The node's AWS
/// identity comes from the local overlay's Secret (on EKS: the instance role).
const OFFICIAL_CHART_DAEMONSET: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: official-chart-agent
  namespace: kube-system
spec:
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: "10%"}}
  selector:
    matchLabels: {app.kubernetes.io/name: official-chart-agent}
  template:
    metadata:
      labels: {app.kubernetes.io/name: official-chart-agent}
    spec:
      automountServiceAccountToken: false
      priorityClassName: system-node-critical
      hostNetwork: true
      terminationGracePeriodSeconds: 30
      tolerations: [{operator: Exists}]
      initContainers:
        - name: eks-pod-identity-agent-init
          image: pod-identity/agent:dev
          imagePullPolicy: Never
          command: ['/go-runner', '/eks-pod-identity-agent', 'initialize']
          args: ["-v", "trace"]
          securityContext:
            privileged: true
      containers:
        - name: eks-pod-identity-agent
          image: pod-identity/agent:dev
          imagePullPolicy: Never
          command: ['/go-runner', '/eks-pod-identity-agent', 'server']
          args: ["--port", "80", "--cluster-name", "local", "--probe-port", "2703",
                 "-v", "trace", "--endpoint", "https://10.96.0.80:8080"]
          ports:
            - {containerPort: 80, protocol: TCP, name: proxy}
            - {containerPort: 2703, protocol: TCP, name: probes-port}
          env:
            - {name: AWS_REGION, value: us-east-1}
            - {name: AWS_CA_BUNDLE, value: /etc/eks-auth-ca/ca.crt}
          volumeMounts:
            - {name: eks-auth-ca, mountPath: /etc/eks-auth-ca, readOnly: true}
          envFrom:
            - secretRef: {name: eks-pod-identity-agent-aws-credentials}
          securityContext:
            capabilities:
              add: [CAP_NET_BIND_SERVICE]
          livenessProbe:
            failureThreshold: 3
            httpGet: {host: localhost, path: /healthz, port: probes-port, scheme: HTTP}
            initialDelaySeconds: 30
            timeoutSeconds: 10
          readinessProbe:
            failureThreshold: 30
            httpGet: {host: localhost, path: /readyz, port: probes-port, scheme: HTTP}
            initialDelaySeconds: 1
            timeoutSeconds: 10
      volumes:
        - {name: eks-auth-ca, configMap: {name: eks-auth-ca}}
"#;

/// `kubectl rollout status` of `object` in `namespace`, waiting at most `secs`.
fn rollout_status(cluster: &Cluster, namespace: &str, object: &str, secs: u32) -> Output {
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
fn no_pods(cluster: &Cluster, namespace: &str, selector: &str) -> bool {
    let out = cluster.kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "name"]);
    out.status.success() && out.stdout.is_empty()
}

/// Puts our DaemonSet back however the test ends.
struct RestoreOurAgent<'a>(&'a Cluster);

impl Drop for RestoreOurAgent<'_> {
    fn drop(&mut self) {
        let c = self.0;
        let _ = c.kubectl(&[
            "delete",
            "daemonset",
            "-n",
            "kube-system",
            "official-chart-agent",
            "--wait=true",
            "--timeout=60s",
        ]);
        let _ = c.kubectl(&[
            "patch",
            "daemonset",
            "-n",
            "kube-system",
            "eks-pod-identity-agent",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]"#,
        ]);
        let _ = rollout_status(c, "kube-system", "daemonset/eks-pod-identity-agent", 120);
    }
}

#[test]
fn our_image_is_a_drop_in_under_the_official_chart() {
    let Some(cluster) = Cluster::node("our_image_is_a_drop_in_under_the_official_chart") else {
        return;
    };
    let _alone = cluster.exclusive();
    let _restore = RestoreOurAgent(&cluster);
    // Our DaemonSet off the node (an operator would uninstall it), the chart's in its place.
    let out = cluster.kubectl(&[
        "patch", "daemonset", "-n", "kube-system", "eks-pod-identity-agent", "--type=merge",
        "-p", r#"{"spec":{"template":{"spec":{"nodeSelector":{"pod-identity.dev/no-such-node":"true"}}}}}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    wait(
        "our agent to leave the node",
        Duration::from_secs(60),
        || {
            no_pods(
                &cluster,
                "kube-system",
                "app.kubernetes.io/name=eks-pod-identity-agent",
            )
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("official.yaml");
    std::fs::write(&path, OFFICIAL_CHART_DAEMONSET).unwrap();
    let out = cluster.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = rollout_status(
        &cluster,
        "kube-system",
        "daemonset/official-chart-agent",
        90,
    );
    let logs = cluster.kubectl(&[
        "logs",
        "-n",
        "kube-system",
        "daemonset/official-chart-agent",
        "--all-containers",
        "--tail=20",
    ]);
    assert!(
        out.status.success(),
        "the chart's DaemonSet is not ready: {out:?} {logs:?}"
    );

    let (ns, _association) = with_association(&cluster, "node-chart");
    assert_pod_gets_the_role(&cluster, &ns, "demo", "app");
    // go-runner ran the agent in its place: one process, which dropped what the chart gave it.
    let status = agent_process_status(&cluster, "app.kubernetes.io/name=official-chart-agent");
    assert_holds_no_privilege(&status);
}

#[test]
fn a_deleted_association_stops_the_next_fresh_exchange() {
    let Some(cluster) = Cluster::node("a_deleted_association_stops_the_next_fresh_exchange") else {
        return;
    };
    let _shared = cluster.shared();
    let (ns, association) = with_association(&cluster, "node-deleted");
    assert_pod_gets_the_role(&cluster, &ns, "before", "app");
    association.delete();
    // A new pod (a new token, so no cached credentials) of the same service account, made with
    // the env the webhook gave the first one: eks-auth refuses it once it has seen the deletion.
    let mut attempt = 0;
    wait(
        "eks-auth to refuse the deleted association",
        Duration::from_secs(60),
        || {
            attempt += 1;
            let name = format!("after-{attempt}");
            let mut pod = demo_app_pod(&cluster, &name, "app");
            pod = pod.replace(
            "        - {name: AWS_EC2_METADATA_DISABLED, value: \"true\"}\n",
            "        - {name: AWS_EC2_METADATA_DISABLED, value: \"true\"}\n        - {name: AWS_CONTAINER_CREDENTIALS_FULL_URI, value: \"http://169.254.170.23/v1/credentials\"}\n        - {name: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, value: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token}\n      volumeMounts: [{name: token, mountPath: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount, readOnly: true}]\n",
        );
            pod.push_str("  volumes:\n    - name: token\n      projected:\n        sources:\n          - serviceAccountToken: {audience: pods.eks.amazonaws.com, expirationSeconds: 86400, path: eks-pod-identity-token}\n");
            ns.apply(&pod);
            let (phase, log) = ns.finished(&name);
            phase == "Failed" && report(&log)["identity"].is_null()
        },
    );
}

#[test]
fn a_rolling_update_of_the_agent_fails_no_fetch() {
    let Some(cluster) = Cluster::node("a_rolling_update_of_the_agent_fails_no_fetch") else {
        return;
    };
    let _alone = cluster.exclusive();
    let (ns, _association) = with_association(&cluster, "node-roll");
    // A pod that fetches its credentials from the agent every few hundred milliseconds, with the
    // env and token the webhook gives it, and prints each answer's status line.
    let mut pod = busybox_pod(
        "fetcher",
        "i=0; while [ $i -lt 100 ]; do i=$((i+1)); r=$( { printf 'GET /v1/credentials HTTP/1.1\\r\\nHost: 169.254.170.23\\r\\nConnection: close\\r\\nAuthorization: %s\\r\\n\\r\\n' \"$(cat $AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)\"; } | nc -w 2 169.254.170.23 80 2>&1 | head -1); echo \"fetch $i: ${r:-no answer}\"; sleep 0.3; done",
        "  serviceAccountName: app",
    );
    pod = pod.replace(
        "restartPolicy: Never",
        "restartPolicy: Never\n  terminationGracePeriodSeconds: 1",
    );
    ns.apply_once_injected(&pod);
    let fetched = |ns: &Namespace| {
        let out = ns.cluster.kubectl(&["logs", "fetcher", "-n", &ns.name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait("the first fetches", Duration::from_secs(60), || {
        fetched(&ns).matches("200 OK").count() >= 3
    });
    let before = agent_pod(&cluster);
    let out = cluster.kubectl(&[
        "rollout",
        "restart",
        "-n",
        "kube-system",
        "daemonset/eks-pod-identity-agent",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = rollout_status(
        &cluster,
        "kube-system",
        "daemonset/eks-pod-identity-agent",
        90,
    );
    assert!(out.status.success(), "{out:?}");
    wait("the old agent to be gone", Duration::from_secs(60), || {
        agent_pod(&cluster) != before
    });
    let during = fetched(&ns).lines().count();
    assert!(
        during < 100,
        "the update outlasted the fetches; nothing was shown"
    );
    let (phase, log) = ns.finished("fetcher");
    assert_eq!(phase, "Succeeded", "{log}");
    let failed: Vec<&str> = log.lines().filter(|l| !l.ends_with("200 OK")).collect();
    assert!(
        failed.is_empty(),
        "fetches failed while the agent rolled: {failed:?}\n{log}"
    );
    assert_eq!(log.lines().count(), 100, "{log}");
}

/// The names of the running agent pods on the node (two while a rolling update overlaps them).
fn agent_pod(cluster: &Cluster) -> String {
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

/// Scales eks-auth back up however the test ends.
struct RestoreEksAuth<'a>(&'a Cluster);

impl Drop for RestoreEksAuth<'_> {
    fn drop(&mut self) {
        let c = self.0;
        let _ = c.kubectl(&[
            "scale",
            "-n",
            "pod-identity-system",
            "deployment/eks-auth",
            "--replicas=1",
        ]);
        let _ = rollout_status(c, "pod-identity-system", "deployment/eks-auth", 90);
    }
}

/// A busybox pod of service account `app` that fetches from the agent `times` times, 0.5 s apart,
/// printing each answer (status line, then body) after a `fetch N` line.
fn fetcher_pod(name: &str, times: u32) -> String {
    let mut pod = busybox_pod(
        name,
        &format!(
            "i=0; while [ $i -lt {times} ]; do i=$((i+1)); echo \"fetch $i\"; {{ printf 'GET /v1/credentials HTTP/1.1\\r\\nHost: 169.254.170.23\\r\\nConnection: close\\r\\nAuthorization: %s\\r\\n\\r\\n' \"$(cat $AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)\"; }} | nc -w 5 169.254.170.23 80 2>&1 | grep -v -i '^[a-z-]*: \\|^.$\\|\"SecretAccessKey\\|\"Token'; sleep 0.5; done"
        ),
        "  serviceAccountName: app",
    );
    pod = pod.replace(
        "restartPolicy: Never",
        "restartPolicy: Never\n  terminationGracePeriodSeconds: 1",
    );
    pod
}

#[test]
fn with_eks_auth_gone_the_agent_serves_what_it_holds_then_a_clear_error() {
    let Some(cluster) = Cluster::node("with_eks_auth_gone_the_agent_serves_what_it_holds") else {
        return;
    };
    let _alone = cluster.exclusive();
    let (ns, _association) = with_association(&cluster, "node-no-eks-auth");
    let _restore = RestoreEksAuth(&cluster);
    ns.apply_once_injected(&fetcher_pod("cached", 40));
    let log = |pod: &str| {
        let out = cluster.kubectl(&["logs", pod, "-n", &ns.name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait("the first fetch", Duration::from_secs(60), || {
        log("cached").contains("200 OK")
    });
    let out = cluster.kubectl(&[
        "scale",
        "-n",
        "pod-identity-system",
        "deployment/eks-auth",
        "--replicas=0",
    ]);
    assert!(out.status.success(), "{out:?}");
    wait("eks-auth to be gone", Duration::from_secs(60), || {
        no_pods(
            &cluster,
            "pod-identity-system",
            "app.kubernetes.io/name=eks-auth",
        )
    });
    let gone_at = log("cached").matches("fetch ").count();
    // A pod whose credentials the agent holds keeps getting them.
    let (phase, cached) = ns.finished("cached");
    assert_eq!(phase, "Succeeded", "{cached}");
    let after: Vec<&str> = cached.split("fetch ").skip(gone_at + 1).collect();
    assert!(!after.is_empty(), "no fetch after eks-auth left: {cached}");
    for answer in &after {
        assert!(
            answer.contains("HTTP/1.1 200 OK"),
            "a cached fetch failed: {answer}\n{cached}"
        );
    }
    // A new pod (a token the agent has not seen) gets a plain server error, not a hang.
    ns.apply(&fetcher_pod("fresh", 1));
    let (_, fresh) = ns.finished("fresh");
    assert!(fresh.contains("HTTP/1.1 5"), "{fresh}");
    assert!(!fresh.contains("AccessKeyId"), "{fresh}");
}

#[test]
fn the_report_is_read_whatever_line_the_verdict_interleaves_at() {
    let log = "{\n  \"winner\": null,\ndemo-app: the container step failed: { source: \"x\" }\n  \"exit_code\": 2\n}\n";
    assert_eq!(report(log)["exit_code"], 2);
    let log = "demo-app: failed { a }\n{\n  \"exit_code\": 0\n}\n";
    assert_eq!(report(log)["exit_code"], 0);
}
