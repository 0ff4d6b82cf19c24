//! The kustomize base in `deploy/webhook/` keeps the promises docs/webhook.md makes: read as
//! plain YAML (no kubectl needed), checked field by field. `kubectl kustomize deploy/webhook`
//! renders it (CI: see the report of issue 5).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/webhook")
}

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(base().join(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn one(file: &str, kind: &str) -> Value {
    docs(file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{kind} missing in {file}"))
}

#[test]
fn every_resource_is_listed_and_parses() {
    let k = one("kustomization.yaml", "Kustomization");
    let resources: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in resources.iter().filter(|r| r.ends_with(".yaml")) {
        assert!(!docs(r).is_empty(), "{r}");
    }
    // What it shares with eks-auth is deploy/common, listed once beside both.
    let common = std::fs::read_to_string(base().join("../common/kustomization.yaml")).unwrap();
    assert!(common.contains("- ../crds"), "the CRD is referenced");
    assert!(
        common.contains("- ../role-policy"),
        "the role policy is referenced"
    );
    let set = pod_identity_contracts::association::AssociationSet::from_yaml(
        &std::fs::read_to_string(base().join("../common/associations.yaml")).unwrap(),
    );
    assert!(set.is_ok(), "the shipped associations file is valid");
    let policy = pod_identity_contracts::RolePolicy::from_yaml(
        &std::fs::read_to_string(base().join("../role-policy/role-policy.yaml")).unwrap(),
    );
    assert!(
        policy.is_ok_and(|p| p.is_empty()),
        "the shipped role policy is valid and allows nothing until written"
    );
}

#[test]
fn the_webhook_configuration_never_blocks_pods() {
    let mwc = one(
        "mutatingwebhookconfiguration.yaml",
        "MutatingWebhookConfiguration",
    );
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "pod-identity-system/pod-identity-webhook"
    );
    let w = &mwc["webhooks"][0];
    assert_eq!(w["admissionReviewVersions"], serde_json::json!(["v1"]));
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    assert!(w["timeoutSeconds"].as_u64().unwrap() <= 5);
    assert_eq!(w["clientConfig"]["service"]["path"], "/mutate");
    assert_eq!(w["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    assert_eq!(w["rules"][0]["resources"], serde_json::json!(["pods"]));
    let excluded = w["namespaceSelector"]["matchExpressions"][0]["values"].to_string();
    assert!(excluded.contains("kube-system") && excluded.contains("pod-identity-system"));
    assert_eq!(
        w["objectSelector"]["matchExpressions"][0]["key"],
        pod_identity_webhook::mutate::SKIP_WEBHOOK_LABEL
    );
}

#[test]
fn the_deployment_is_hardened_and_highly_available() {
    let d = one("deployment.yaml", "Deployment");
    assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &d["spec"]["template"]["spec"];
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let args = c["args"].to_string();
    for flag in [
        "serve",
        "--tls-cert=",
        "--tls-key=",
        "--associations=",
        "--role-policy=",
        "--watch-custom-resources",
    ] {
        assert!(args.contains(flag), "{flag} in {args}");
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let pdb = one("poddisruptionbudget.yaml", "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let role = one("rbac.yaml", "ClusterRole");
    assert_eq!(role["rules"][0]["apiGroups"][0], "podidentity.dev");
    assert_eq!(role["rules"][0]["resources"][0], "podidentityassociations");
}
