//! A real Kubernetes node (`scripts/cluster up`): etcd, kube-apiserver, controller-manager,
//! scheduler, containerd, kubelet and kube-proxy built or installed here, inside one network
//! namespace that is the node, running images built here, with the product deployed by its own
//! manifests (deploy/local/cluster/): eks-auth, the webhook, the agent DaemonSet. Here a pod gets
//! its role the way it does on EKS: the API server calls the webhook, the kubelet projects the
//! token, the pod's SDK calls the agent on 169.254.170.23, the agent asks eks-auth, eks-auth
//! asks STS (moto, outside the cluster).
//!
//! Needs root; under scripts/test as root a missing node is a failure, elsewhere a named skip.

use std::time::Duration;

use pod_identity_contracts::log_schema::ExchangeAuditLine;
use pod_identity_test_support::cluster::Cluster;
use pod_identity_test_support::node_cluster::{
    Namespace, agent_pod, assert_pod_gets_the_role, busybox_pod, demo_app_pod, failed_fetches,
    no_pods, report, rollout_status, service_account, status_fetcher_pod, wait, with_association,
};

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
/// `daemonsets.cloud.volumes`/`volumeMounts`, as an operator off EKS would; the agent's own token
/// for eks-auth the same way (`--identity-token-file` and a projected volume). The chart names no
/// ServiceAccount, so the agent is `kube-system/default`, which eks-auth is told to accept. The
/// node's AWS identity comes from the local overlay's Secret (on EKS: the instance role).
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
                 "-v", "trace", "--endpoint", "https://10.96.0.80:8080",
                 "--identity-token-file", "/var/run/secrets/eks-auth/token"]
          ports:
            - {containerPort: 80, protocol: TCP, name: proxy}
            - {containerPort: 2703, protocol: TCP, name: probes-port}
          env:
            - {name: AWS_REGION, value: us-east-1}
            - {name: AWS_CA_BUNDLE, value: /etc/eks-auth-ca/ca.crt}
          volumeMounts:
            - {name: eks-auth-ca, mountPath: /etc/eks-auth-ca, readOnly: true}
            - {name: eks-auth-identity, mountPath: /var/run/secrets/eks-auth, readOnly: true}
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
        - name: eks-auth-identity
          projected:
            sources:
              - serviceAccountToken: {audience: eks-auth.podidentity.dev, expirationSeconds: 3600, path: token}
"#;

/// eks-auth's `--caller-service-accounts` as shipped, and with the chart's agent added.
const CALLERS_SHIPPED: &str = "--caller-service-accounts=kube-system/eks-pod-identity-agent";
const CALLERS_WITH_CHART: &str =
    "--caller-service-accounts=kube-system/eks-pod-identity-agent,kube-system/default";

/// Replaces eks-auth's caller list `from` with `to` (a JSON patch that first tests the index),
/// and waits for the rollout.
fn set_eks_auth_callers(cluster: &Cluster, from: &str, to: &str) -> bool {
    let out = cluster.kubectl(&[
        "get",
        "deployment",
        "eks-auth",
        "-n",
        "pod-identity-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    let args: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let Some(i) = args.iter().position(|a| a == from) else {
        return false;
    };
    let patch = serde_json::json!([
        {"op": "test", "path": format!("/spec/template/spec/containers/0/args/{i}"), "value": from},
        {"op": "replace", "path": format!("/spec/template/spec/containers/0/args/{i}"), "value": to},
    ]);
    let out = cluster.kubectl(&[
        "patch",
        "deployment",
        "eks-auth",
        "-n",
        "pod-identity-system",
        "--type=json",
        "-p",
        &patch.to_string(),
    ]);
    out.status.success()
        && rollout_status(cluster, "pod-identity-system", "deployment/eks-auth", 90)
            .status
            .success()
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
        set_eks_auth_callers(c, CALLERS_WITH_CHART, CALLERS_SHIPPED);
    }
}

#[test]
fn our_image_is_a_drop_in_under_the_official_chart() {
    let Some(cluster) = Cluster::node("our_image_is_a_drop_in_under_the_official_chart") else {
        return;
    };
    let _alone = cluster.exclusive();
    let _restore = RestoreOurAgent(&cluster);
    assert!(
        set_eks_auth_callers(&cluster, CALLERS_SHIPPED, CALLERS_WITH_CHART),
        "eks-auth does not run with {CALLERS_SHIPPED}"
    );
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
    let pod = status_fetcher_pod("fetcher", 100);
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
    let failed = failed_fetches(&log);
    assert!(
        failed.is_empty(),
        "fetches failed while the agent rolled: {failed:?}\n{log}"
    );
    assert_eq!(log.lines().count(), 100, "{log}");
}

/// The names of the running agent pods on the node (two while a rolling update overlaps them).
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

/// POST a pod token to eks-auth's Service from inside the node (where kube-proxy routes the
/// ClusterIP), over HTTPS trusting the node's CA, with `caller` as the agent's own token; returns
/// curl's `-i` output (status line, headers, body). Tokens travel in files, never in arguments.
fn post_to_eks_auth(cluster: &Cluster, token: &str, caller: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, serde_json::json!({ "token": token }).to_string()).unwrap();
    let headers = dir.path().join("headers");
    let mut h = "content-type: application/json\n".to_string();
    if let Some(caller) = caller {
        h.push_str(&format!("x-pod-identity-caller-token: {caller}\n"));
    }
    std::fs::write(&headers, h).unwrap();
    let ca = format!("{}/pki/ca.crt", cluster.var("CLUSTER_DIR"));
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            cluster.var("CLUSTER_NETNS"),
            "curl",
            "-sS",
            "-i",
        ])
        .args(["--max-time", "20", "--cacert", &ca])
        .arg("-H")
        .arg(format!("@{}", headers.display()))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg("https://10.96.0.80:8080/clusters/local/assume-role-for-pod-identity")
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl create token`: a token of `namespace/sa` for `audience`, bound to `pod` (so the API
/// server adds the pod's node, and TokenReview follows the pod's life).
fn bound_token(cluster: &Cluster, namespace: &str, sa: &str, audience: &str, pod: &str) -> String {
    let out = cluster.kubectl(&[
        "create",
        "token",
        sa,
        "-n",
        namespace,
        "--audience",
        audience,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        pod,
        "--duration",
        "1h",
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// On the real API server and node: eks-auth serves a pod's token only with the token of an
/// agent on the same node, checks both tokens with TokenReview, and says why it refuses. (The
/// other-node attack needs a second node: eks-auth/tests/attacks.rs and the lab's
/// `stolen-token-other-node` mint it.)
#[test]
fn eks_auth_serves_a_pod_token_only_through_the_agent_of_its_node() {
    let Some(cluster) =
        Cluster::node("eks_auth_serves_a_pod_token_only_through_the_agent_of_its_node")
    else {
        return;
    };
    let _shared = cluster.shared();
    let (ns, _association) = with_association(&cluster, "node-callers");
    ns.apply(&busybox_pod(
        "holder",
        "sleep 600",
        "  serviceAccountName: app",
    ));
    wait("pod holder to run", Duration::from_secs(60), || {
        ns.jsonpath("pod/holder", "{.status.phase}") == "Running"
    });
    let token = bound_token(
        &cluster,
        &ns.name,
        "app",
        "pods.eks.amazonaws.com",
        "holder",
    );
    let agent = agent_pod(&cluster);
    assert!(
        !agent.is_empty() && !agent.contains(' '),
        "one agent pod: {agent:?}"
    );
    let caller = bound_token(
        &cluster,
        "kube-system",
        "eks-pod-identity-agent",
        "eks-auth.podidentity.dev",
        &agent,
    );

    // A copied token, sent straight to eks-auth (an unsigned curl from anywhere in the cluster).
    let answer = post_to_eks_auth(&cluster, &token, None);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("x-amzn-errortype: AccessDeniedException"),
        "{answer}"
    );
    assert!(
        answer.contains("the caller is not authenticated"),
        "{answer}"
    );
    // The pod's own token cannot pose as an agent's.
    let answer = post_to_eks_auth(&cluster, &token, Some(&token));
    assert!(
        answer.contains("x-amzn-errortype: AccessDeniedException"),
        "{answer}"
    );

    // Through the agent's identity on the pod's node: served, the audit line naming both.
    let answer = post_to_eks_auth(&cluster, &token, Some(&caller));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("assumed-role/local-cluster-demo/"),
        "{answer}"
    );
    let logs = cluster.kubectl(&[
        "logs",
        "-n",
        "pod-identity-system",
        "deployment/eks-auth",
        "--tail=200",
    ]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    let node = cluster.var("CLUSTER_NODE");
    let audit = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<ExchangeAuditLine>(l).ok())
        .rfind(|l| {
            l.audit == Some(true)
                && l.pod.k8s_pod.as_deref() == Some("holder")
                && l.outcome.as_deref() == Some("success")
        })
        .unwrap_or_else(|| panic!("no audit line for holder: {logs}"));
    assert_eq!(
        audit.caller.as_deref(),
        Some("kube-system/eks-pod-identity-agent"),
        "{audit:?}"
    );
    assert_eq!(audit.caller_node.as_deref(), Some(node), "{audit:?}");
    assert_eq!(audit.k8s_node.as_deref(), Some(node), "{audit:?}");
    for secret in [&token, &caller] {
        assert!(!logs.contains(secret.as_str()), "a token in eks-auth's log");
    }

    // The pod is deleted: TokenReview makes its token worthless, agent or not.
    let out = cluster.kubectl(&[
        "delete",
        "pod",
        "holder",
        "-n",
        &ns.name,
        "--wait=true",
        "--grace-period=0",
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    // The API server learns of the deletion through its own watch: a moment, retried.
    let mut answer = String::new();
    wait(
        "TokenReview to refuse the deleted pod's token",
        Duration::from_secs(30),
        || {
            answer = post_to_eks_auth(&cluster, &token, Some(&caller));
            answer.contains("x-amzn-errortype: InvalidTokenException")
        },
    );
    assert!(answer.contains("no longer accepts this token"), "{answer}");
}

/// eks-auth holds no AWS key on the node: the kubelet's token for audience `sts.amazonaws.com`
/// bought its role by web identity (the SDK's default chain, as shipped), which it says at start.
#[test]
fn eks_auth_runs_keyless_on_its_projected_token() {
    let Some(cluster) = Cluster::node("eks_auth_runs_keyless_on_its_projected_token") else {
        return;
    };
    let _shared = cluster.shared();
    let spec = cluster.kubectl(&[
        "get",
        "-n",
        "pod-identity-system",
        "deployment/eks-auth",
        "-o",
        "jsonpath={.spec.template.spec}",
    ]);
    let spec = String::from_utf8_lossy(&spec.stdout).to_string();
    assert!(
        spec.contains("\"audience\":\"sts.amazonaws.com\""),
        "{spec}"
    );
    assert!(
        !spec.contains("AWS_ACCESS_KEY_ID") && !spec.contains("envFrom"),
        "{spec}"
    );
    let mut log = String::new();
    wait(
        "eks-auth to say who it is in AWS",
        Duration::from_secs(30),
        || {
            let out =
                cluster.kubectl(&["logs", "-n", "pod-identity-system", "deployment/eks-auth"]);
            log = String::from_utf8_lossy(&out.stdout).to_string();
            log.contains("eks-auth's own AWS identity")
        },
    );
    assert!(
        log.contains("\"arn\":\"arn:aws:sts::111122223333:assumed-role/local-eks-auth/eks-auth\""),
        "{log}"
    );
    assert!(log.contains("eks-auth runs as a role session"), "{log}");
    assert!(!log.contains("long-term keys"), "{log}");
}
