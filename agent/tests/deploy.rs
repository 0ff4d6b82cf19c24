//! `deploy/agent` and its hybrid variants render offline and place the agent as the official
//! chart does: the cloud DaemonSet on Linux amd64/arm64 nodes but never Fargate, auto-mode or
//! hybrid ones; `deploy/agent-hybrid` (and `-bottlerocket`) on hybrid nodes only, each with the
//! node's rotating credentials file and `--rotate-credentials`; the three compose, each node
//! kind matched by exactly one.

use pod_identity_test_support::manifests::{of_kind, render, render_together};
use serde_json::{Value, json};

/// The DaemonSet's one node-selector term, as (key, operator, values).
fn placement(ds: &Value) -> Vec<(String, String, Vec<String>)> {
    ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        ["matchExpressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let values = e["values"]
                .as_array()
                .map(|v| v.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (
                e["key"].as_str().unwrap().to_string(),
                e["operator"].as_str().unwrap().to_string(),
                values,
            )
        })
        .collect()
}

/// Whether a node with `labels` matches the DaemonSet's term (what the scheduler decides).
fn schedules_on(ds: &Value, labels: &[(&str, &str)]) -> bool {
    placement(ds).iter().all(|(key, op, values)| {
        let have = labels.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        match op.as_str() {
            "In" => have.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => have.is_none_or(|v| !values.iter().any(|x| x == v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("operator {other}"),
        }
    })
}

#[test]
fn the_cloud_and_hybrid_daemonsets_compose_and_split_the_nodes() {
    const TEST: &str = "the_cloud_and_hybrid_daemonsets_compose_and_split_the_nodes";
    let Some(docs) = render_together(
        TEST,
        &[
            "deploy/agent",
            "deploy/agent-hybrid",
            "deploy/agent-hybrid-bottlerocket",
        ],
        &[],
    ) else {
        return;
    };
    let daemonsets = of_kind(&docs, "DaemonSet");
    let named = |name: &str| {
        *daemonsets
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no DaemonSet {name}"))
    };
    let cloud = named("eks-pod-identity-agent");
    let hybrid = named("eks-pod-identity-agent-hybrid");
    let bottlerocket = named("eks-pod-identity-agent-hybrid-bottlerocket");

    let linux = [
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        linux.iter().chain(extra).copied().collect()
    };
    let nodes = [
        ("an EC2 node", with(&[])),
        (
            "an arm64 EC2 node",
            vec![
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/arch", "arm64"),
            ],
        ),
        (
            "a Fargate node",
            with(&[("eks.amazonaws.com/compute-type", "fargate")]),
        ),
        (
            "an auto-mode node",
            with(&[("eks.amazonaws.com/compute-type", "auto")]),
        ),
        (
            "a hybrid node",
            with(&[("eks.amazonaws.com/compute-type", "hybrid")]),
        ),
        (
            "a Bottlerocket hybrid node",
            with(&[
                ("eks.amazonaws.com/compute-type", "hybrid"),
                ("os.bottlerocket.aws/variant", "metal-k8s-1.33"),
                ("os.bottlerocket.aws/version", "1.40.0"),
            ]),
        ),
        (
            "a Windows node",
            vec![
                ("kubernetes.io/os", "windows"),
                ("kubernetes.io/arch", "amd64"),
            ],
        ),
    ];
    let expected = [
        [true, false, false],
        [true, false, false],
        [false, false, false],
        [false, false, false],
        [false, true, false],
        [false, false, true],
        [false, false, false],
    ];
    for ((what, labels), want) in nodes.iter().zip(expected) {
        let got = [
            schedules_on(cloud, labels),
            schedules_on(hybrid, labels),
            schedules_on(bottlerocket, labels),
        ];
        assert_eq!(got, want, "{what}: cloud, hybrid, bottlerocket");
    }

    for (ds, host_path) in [
        (hybrid, "/eks-hybrid/.aws"),
        (bottlerocket, "/var/eks-hybrid/.aws"),
    ] {
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert!(
            c["args"]
                .as_array()
                .unwrap()
                .contains(&json!("--rotate-credentials=true")),
            "{}",
            c["args"]
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "aws-credentials", "mountPath": "/root/.aws", "readOnly": true}])
        );
        assert_eq!(
            pod["volumes"],
            json!([{"name": "aws-credentials", "hostPath": {"path": host_path, "type": "Directory"}}])
        );
        // Each DaemonSet selects its own pods only.
        assert_eq!(
            ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
            ds["metadata"]["name"]
        );
        assert_eq!(
            pod["serviceAccountName"], ds["metadata"]["name"],
            "a ServiceAccount of its own"
        );
    }
    assert_eq!(
        bottlerocket["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seLinuxOptions"],
        json!({"type": "spc_t"})
    );
    // The cloud agent reads no node file and stays as hardened as before.
    assert!(
        cloud["spec"]["template"]["spec"].get("volumes").is_none(),
        "{cloud}"
    );
    assert!(render(TEST, "deploy/agent").is_some());
}
