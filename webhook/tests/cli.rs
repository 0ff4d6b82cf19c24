//! The offline subcommands of the binary: `mutate` prints what `serve` would do to a pod.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const ASSOCIATIONS: &str = "associations:
  - {namespace: default, serviceAccount: s3-reader, roleArn: 'arn:aws:iam::111122223333:role/s3-reader'}
";

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: reader
  annotations:
    eks.amazonaws.com/skip-containers: ghost
spec:
  serviceAccountName: s3-reader
  containers:
    - name: app
      image: amazon/aws-cli
      args: [s3, ls]
";

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn mutate_prints_the_pod_or_the_patch() {
    let dir = tempfile::tempdir().unwrap();
    let assoc = dir.path().join("a.yaml");
    std::fs::write(&assoc, ASSOCIATIONS).unwrap();
    let pod_path = dir.path().join("pod.yaml");
    std::fs::write(&pod_path, POD).unwrap();
    let assoc = assoc.to_str().unwrap();

    let out = run(
        &[
            "mutate",
            "--associations",
            assoc,
            "-f",
            pod_path.to_str().unwrap(),
            "--aws-default-region",
            "us-west-2",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"],
        "enabled"
    );
    assert_eq!(pod["spec"]["containers"][0]["args"][0], "s3");
    let env = pod["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI") && env.contains("us-west-2"),
        "{env}"
    );
    assert_eq!(pod["spec"]["volumes"][0]["name"], "eks-pod-identity-token");
    // Warnings go to stderr, the pod alone to stdout.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ghost"), "{stderr}");

    // The patch, from stdin; applying it gives the same pod.
    let out = run(
        &[
            "mutate",
            "--associations",
            assoc,
            "-f",
            "-",
            "-o",
            "patch",
            "--aws-default-region",
            "us-west-2",
        ],
        Some(POD),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch: json_patch::Patch = serde_json::from_slice(&out.stdout).unwrap();
    let mut original: Value = serde_yaml_ng::from_str(POD).unwrap();
    json_patch::patch(&mut original, &patch).unwrap();
    assert_eq!(original, pod);

    // Mutating the mutated pod: an empty patch.
    let mutated = serde_yaml_ng::to_string(&pod).unwrap();
    let out = run(
        &[
            "mutate",
            "--associations",
            assoc,
            "-f",
            "-",
            "-o",
            "patch",
            "--aws-default-region",
            "us-west-2",
        ],
        Some(&mutated),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");

    // Not a pod, and a missing associations file.
    let out = run(
        &["mutate", "--associations", assoc, "-f", "-"],
        Some("apiVersion: v1\nkind: Service\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a v1 Pod"));
    let out = run(
        &["mutate", "--associations", "/nonexistent/a.yaml", "-f", "-"],
        Some(POD),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/a.yaml"));
}

#[test]
fn mutate_under_a_role_policy_leaves_a_pod_outside_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let assoc = dir.path().join("a.yaml");
    std::fs::write(&assoc, ASSOCIATIONS).unwrap();
    let policy = dir.path().join("role-policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - {namespaces: [default], roles: ['arn:aws:iam::111122223333:role/other']}\n",
    )
    .unwrap();
    let (assoc, policy) = (assoc.to_str().unwrap(), policy.to_str().unwrap());
    let args = ["mutate", "--associations", assoc, "--role-policy", policy];
    let out = run(
        &[&args[..], &["-f", "-", "-o", "patch"]].concat(),
        Some(POD),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not allowed for namespace default by the role policy"),
        "{stderr}"
    );

    // A malformed policy is the operator's to fix: exit 64, naming the file and the field.
    std::fs::write(
        policy,
        "rules:\n  - {namespaces: [default], roles: [s3-reader]}\n",
    )
    .unwrap();
    let out = run(&[&args[..], &["-f", "-"]].concat(), Some(POD));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("role-policy.yaml") && stderr.contains("rule #0 roles[0]"),
        "{stderr}"
    );
}

/// `audit` end to end: the binary reads a kubeconfig pointing at a fake API server (plain HTTP on
/// 127.0.0.1) that answers the pod LIST with real PodList JSON; exit code 3 means findings.
#[tokio::test(flavor = "multi_thread")]
async fn audit_reports_from_a_kubeconfig_and_exits_3() {
    use axum::routing::get;
    let list = serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
        "items": [
            {"metadata": {"name": "missed", "namespace": "default"},
             "spec": {"serviceAccountName": "s3-reader", "containers": [{"name": "app", "image": "x"}]},
             "status": {"phase": "Running"}},
            {"metadata": {"name": "other", "namespace": "default"},
             "spec": {"containers": [{"name": "app", "image": "x"}]},
             "status": {"phase": "Running"}}
        ]
    });
    let app = axum::Router::new().route(
        "/api/v1/pods",
        get(move || {
            let list = list.clone();
            async move { axum::Json(list) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\nusers:\n- name: nobody\n  user: {{}}\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    let assoc = dir.path().join("a.yaml");
    std::fs::write(&assoc, ASSOCIATIONS).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args(["audit", "--associations"])
        .arg(&assoc)
        .args(["-o", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let findings: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(findings.len(), 1, "{stdout}");
    assert_eq!(findings[0]["pod"], "missed");
    assert_eq!(findings[0]["serviceAccount"], "s3-reader");
    assert!(
        stderr.contains("2 pods, 1 with an association, 1 without Pod Identity"),
        "{stderr}"
    );
}
