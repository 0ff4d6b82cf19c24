//! The pod: its manifest, its admission through the webhook's own review path, and what the
//! kubelet would then do for it (the projected token's file, the container's environment).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pod_identity_associations::RolePolicyStore;
use pod_identity_contracts::RolePolicy;
use pod_identity_contracts::association::AssociationSet;
use pod_identity_contracts::constants::TOKEN_VOLUME_NAME;
use pod_identity_webhook::metrics::Metrics;
use pod_identity_webhook::mutate::Settings;
use pod_identity_webhook::offline::{self, Offline};
use pod_identity_webhook::review::Reviewer;
use pod_identity_webhook::store::guarded;
use serde_json::Value;

/// The pod the lab runs when no `--pod` is given: one container running demo-app as the
/// `demo` service account of namespace `lab`.
pub const DEFAULT_POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: demo-app
  namespace: lab
spec:
  serviceAccountName: demo
  containers:
    - name: app
      image: ghcr.io/pod-identity-rs/demo-app:latest
      command: [demo-app]
";

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("the pod manifest: {0}")]
    Manifest(String),
    #[error("admission: {0}")]
    Admission(#[from] offline::OfflineError),
    #[error("the mutated pod has no container to run")]
    NoContainer,
    #[error("cannot write the projected token under {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A pod as the API server stored it after admission.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    /// The webhook's JSONPatch (empty: left alone).
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
    /// The pod after the patch.
    pub pod: Value,
}

/// A container's environment: literal values in order, and the names of `valueFrom` entries the
/// lab cannot resolve (it has no API server).
#[derive(Debug, Clone, Default)]
pub struct ContainerEnv {
    pub literal: Vec<(String, String)>,
    pub unresolved: Vec<String>,
}

/// The projected token the mutated spec asks the kubelet for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedToken {
    pub audience: String,
    pub expiration_seconds: i64,
    /// Where the container sees the token file.
    pub path_in_container: String,
    /// File mode (the volume's `defaultMode`, else the kubelet's 0644).
    pub mode: u32,
}

/// Read a manifest (YAML or JSON) and fill what the API server would: the namespace.
pub fn read_manifest(text: &str) -> Result<(Value, String), PodError> {
    let pod: Value =
        serde_yaml_ng::from_str(text).map_err(|e| PodError::Manifest(e.to_string()))?;
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    Ok((pod, namespace))
}

/// The ServiceAccount the pod runs as: `spec.serviceAccountName`, or `default`.
pub fn service_account_of(pod: &Value) -> String {
    pod.pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// Admit the pod's creation: the AdmissionReview the API server would send, through the same
/// `Reviewer` `pod-identity-webhook serve` uses, with the patch applied.
/// With `role_policy`, as `serve --role-policy` does: no injection for a role outside it.
pub fn admit(
    text: &str,
    associations: AssociationSet,
    role_policy: Option<RolePolicy>,
    region: &str,
) -> Result<Admitted, PodError> {
    let (pod, namespace) = read_manifest(text)?;
    let settings = Settings {
        region: Some(region.to_string()),
        ipv6: false,
    };
    let reviewer = Reviewer::new(
        guarded(
            Arc::new(associations),
            role_policy.map(RolePolicyStore::from_policy),
        ),
        settings,
        Metrics::new(),
    );
    let Offline {
        patch,
        pod: mutated,
        warnings,
    } = offline::mutate_document(text, &namespace, &reviewer)?;
    Ok(Admitted {
        name: pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("pod")
            .to_string(),
        service_account: service_account_of(&pod),
        namespace,
        patch,
        warnings,
        pod: mutated,
    })
}

impl Admitted {
    /// The first container: the one the lab runs demo-app as.
    pub fn container(&self) -> Result<&Value, PodError> {
        self.pod
            .pointer("/spec/containers/0")
            .ok_or(PodError::NoContainer)
    }

    /// The projected token the first container mounts, if the spec has one.
    pub fn projected_token(&self) -> Option<ProjectedToken> {
        let volumes = self.pod.pointer("/spec/volumes")?.as_array()?;
        let volume = volumes
            .iter()
            .find(|v| v["name"] == TOKEN_VOLUME_NAME && v.get("projected").is_some())?;
        let source = volume["projected"]["sources"]
            .as_array()?
            .iter()
            .find_map(|s| s.get("serviceAccountToken"))?;
        let container = self.container().ok()?;
        let mount = container["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == TOKEN_VOLUME_NAME)?;
        let dir = mount["mountPath"].as_str()?;
        let file = source["path"].as_str()?;
        Some(ProjectedToken {
            audience: source["audience"].as_str().unwrap_or_default().to_string(),
            expiration_seconds: source["expirationSeconds"].as_i64().unwrap_or(3600),
            path_in_container: format!("{}/{file}", dir.trim_end_matches('/')),
            mode: volume["projected"]["defaultMode"]
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(0o644),
        })
    }

    /// The first container's environment as the lab can give it.
    pub fn environment(&self) -> Result<ContainerEnv, PodError> {
        let container = self.container()?;
        let mut literal = Vec::new();
        let mut unresolved = Vec::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let Some(name) = var["name"].as_str() else {
                continue;
            };
            match var.get("value") {
                Some(Value::String(v)) => literal.push((name.to_string(), v.clone())),
                None if var.get("valueFrom").is_some() => unresolved.push(name.to_string()),
                _ => literal.push((name.to_string(), String::new())),
            }
        }
        Ok(ContainerEnv {
            literal,
            unresolved,
        })
    }

    /// What the webhook changed, one line per operation: `add /spec/volumes/-`, …
    pub fn patch_summary(&self) -> Vec<String> {
        let patch = serde_json::to_value(&self.patch).unwrap_or_default();
        patch
            .as_array()
            .into_iter()
            .flatten()
            .map(|op| {
                let path = op["path"].as_str().unwrap_or_default();
                let name = op["value"]["name"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                format!("{} {path}{name}", op["op"].as_str().unwrap_or_default())
            })
            .collect()
    }
}

/// The pod's filesystem as far as the lab gives it one: a directory standing for `/`, under
/// which container paths are remapped (the lab runs no mount namespace).
#[derive(Debug, Clone)]
pub struct PodRoot {
    root: PathBuf,
}

impl PodRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where a container path lives on this machine.
    pub fn host_path(&self, in_container: &str) -> PathBuf {
        self.root.join(in_container.trim_start_matches('/'))
    }

    /// Write the token as the kubelet does: the file alone, no trailing newline, the mode the
    /// volume asks for.
    pub fn write_token(&self, token: &ProjectedToken, value: &str) -> Result<PathBuf, PodError> {
        let path = self.host_path(&token.path_in_container);
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, value)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(token.mode))
        };
        write(&path).map_err(|source| PodError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The container's environment with every value naming a file under the pod's volumes
    /// remapped to where the lab put it.
    pub fn remap(
        &self,
        env: &[(String, String)],
        token: Option<&ProjectedToken>,
    ) -> BTreeMap<String, String> {
        env.iter()
            .map(|(k, v)| {
                let value = match token {
                    Some(t) if *v == t.path_in_container => {
                        self.host_path(v).to_string_lossy().into_owned()
                    }
                    _ => v.clone(),
                };
                (k.clone(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_identity_contracts::association::Association;
    use pod_identity_contracts::constants::{ENV_FULL_URI, ENV_TOKEN_FILE, TOKEN_FILE_PATH};

    fn associations(ns: &str, sa: &str) -> AssociationSet {
        AssociationSet::from_associations(vec![Association {
            namespace: ns.into(),
            service_account: sa.into(),
            role_arn: "arn:aws:iam::111122223333:role/lab-pod-role".into(),
            target_role_arn: None,
            disable_session_tags: false,
            policy: None,
            association_id: None,
        }])
        .unwrap()
    }

    #[test]
    fn the_default_pod_is_injected_and_its_token_and_env_follow_the_spec() {
        let admitted = admit(DEFAULT_POD, associations("lab", "demo"), None, "us-east-1").unwrap();
        assert_eq!(admitted.namespace, "lab");
        assert_eq!(admitted.service_account, "demo");
        assert!(!admitted.patch.is_empty());
        let token = admitted.projected_token().expect("a projected token");
        assert_eq!(token.audience, "pods.eks.amazonaws.com");
        assert_eq!(token.path_in_container, TOKEN_FILE_PATH);
        let env = admitted.environment().unwrap();
        assert!(env.unresolved.is_empty());
        let env: BTreeMap<_, _> = env.literal.into_iter().collect();
        assert_eq!(
            env[ENV_FULL_URI],
            "http://169.254.170.23/v1/credentials".to_string()
        );
        assert_eq!(env[ENV_TOKEN_FILE], TOKEN_FILE_PATH.to_string());
        assert_eq!(env["AWS_REGION"], "us-east-1".to_string());
        assert!(
            admitted
                .patch_summary()
                .iter()
                .any(|l| l.contains("/spec/volumes"))
        );

        let dir = tempfile::tempdir().unwrap();
        let root = PodRoot::new(dir.path());
        let written = root.write_token(&token, "header.payload.sig").unwrap();
        assert_eq!(
            std::fs::read_to_string(&written).unwrap(),
            "header.payload.sig"
        );
        let pairs: Vec<(String, String)> = env.into_iter().collect();
        let remapped = root.remap(&pairs, Some(&token));
        assert_eq!(
            remapped[ENV_TOKEN_FILE],
            written.to_string_lossy().into_owned()
        );
        assert_eq!(
            remapped[ENV_FULL_URI],
            "http://169.254.170.23/v1/credentials"
        );
    }

    #[test]
    fn a_pod_whose_role_is_outside_the_role_policy_is_left_alone() {
        let policy = RolePolicy::from_yaml(
            "rules:\n  - {namespaces: [lab], roles: ['arn:aws:iam::111122223333:role/other']}\n",
        )
        .unwrap();
        let admitted = admit(
            DEFAULT_POD,
            associations("lab", "demo"),
            Some(policy),
            "us-east-1",
        )
        .unwrap();
        assert!(admitted.patch.is_empty());
        assert!(
            admitted.warnings.iter().any(|w| w.contains("role policy")),
            "{:?}",
            admitted.warnings
        );
    }

    #[test]
    fn a_pod_without_an_association_is_left_alone() {
        let admitted = admit(DEFAULT_POD, associations("lab", "other"), None, "us-east-1").unwrap();
        assert!(admitted.patch.is_empty());
        assert!(admitted.projected_token().is_none());
    }

    #[test]
    fn a_manifest_that_is_not_a_pod_is_a_clear_error() {
        let err = admit(
            "kind: Service\napiVersion: v1\n",
            associations("lab", "demo"),
            None,
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a v1 Pod"), "{err}");
        let err = read_manifest("{not yaml").unwrap_err();
        assert!(err.to_string().contains("manifest"), "{err}");
    }
}
