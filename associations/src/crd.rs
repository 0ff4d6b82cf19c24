//! The `PodIdentityAssociation` custom resource (`podidentity.dev/v1alpha1`, short name `pia`).
//!
//! The spec *is* the contracts [`Association`] (same field names as the YAML file), so the file,
//! the CRD and the store share one model. The CRD YAML checked in at each of [`CRD_PATHS`] is
//! generated from this type by [`crd_yaml`]; a unit test fails when one drifts.

use kube::{CustomResource, CustomResourceExt};
use pod_identity_contracts::Association;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the generated CRD is checked in, relative to the workspace root: the kustomize base's
/// and the Helm chart's copies.
pub const CRD_PATHS: [&str; 2] = [
    "deploy/crds/podidentityassociations.podidentity.dev.yaml",
    // Helm installs a chart's CRDs from its own crds/ folder only.
    "charts/pod-identity/crds/podidentityassociations.podidentity.dev.yaml",
];

/// Spec of a `PodIdentityAssociation`: one contracts [`Association`], unchanged on the wire.
///
/// The resource is **cluster-scoped** on purpose: mapping a service account to an IAM role is a
/// cluster-admin decision. A namespaced resource would let any namespace admin create one naming
/// any namespace's service account and any role the cluster can assume, i.e. claim any role.
/// `spec.namespace` says which namespace the association is for; `associationId` defaults to
/// the contracts derivation ([`Association::id`]).
#[allow(
    clippy::duplicated_attributes,
    reason = "clippy reads each printcolumn's repeated `type_ = \"string\"` as a duplicate attribute"
)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "podidentity.dev",
    version = "v1alpha1",
    kind = "PodIdentityAssociation",
    plural = "podidentityassociations",
    shortname = "pia",
    derive = "PartialEq",
    doc = "Maps a service account (spec.namespace, spec.serviceAccount) to the IAM role its pods get through EKS Pod Identity. Cluster-scoped: only cluster admins may grant roles.",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.namespace"),
    printcolumn(
        name = "ServiceAccount",
        type_ = "string",
        json_path = ".spec.serviceAccount"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleArn"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(transparent)]
#[schemars(
    description = "The association: the same fields as an entry of the associations file. associationId defaults to one derived from namespace and serviceAccount."
)]
pub struct PodIdentityAssociationSpec(pub Association);

impl From<Association> for PodIdentityAssociationSpec {
    fn from(association: Association) -> Self {
        Self(association)
    }
}

impl PodIdentityAssociation {
    /// The association this object declares (not yet validated).
    pub fn association(&self) -> &Association {
        &self.spec.0
    }
}

/// The CRD as YAML, exactly what is checked in at each of [`CRD_PATHS`].
pub fn crd_yaml() -> String {
    let body = serde_yaml_ng::to_string(&PodIdentityAssociation::crd())
        .expect("a CustomResourceDefinition always serializes to YAML");
    format!(
        "# Generated from pod_identity_associations::crd::PodIdentityAssociation; do not edit.\n\
         # Regenerate: UPDATE_CRDS=1 cargo test -p pod-identity-associations crd_\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn crd_checked_in_matches_the_rust_type() {
        let generated = crd_yaml();
        for path in CRD_PATHS {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(path);
            if std::env::var_os("UPDATE_CRDS").is_some_and(|v| v == "1") {
                std::fs::write(&path, &generated).unwrap();
                continue;
            }
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == generated,
                "{} is out of date with the PodIdentityAssociation type; regenerate it with \
                 `UPDATE_CRDS=1 cargo test -p pod-identity-associations crd_` and commit the result",
                path.display()
            );
        }
    }

    #[test]
    fn crd_is_cluster_scoped_with_the_agreed_names() {
        let crd = PodIdentityAssociation::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("podidentityassociations.podidentity.dev")
        );
        assert_eq!(crd.spec.group, "podidentity.dev");
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.kind, "PodIdentityAssociation");
        assert_eq!(crd.spec.names.short_names, Some(vec!["pia".to_string()]));
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let mut required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["namespace", "roleArn", "serviceAccount"]);
        for field in [
            "namespace",
            "serviceAccount",
            "roleArn",
            "targetRoleArn",
            "disableSessionTags",
            "policy",
            "associationId",
        ] {
            assert!(
                spec["properties"][field].is_object(),
                "spec.{field} missing: {spec}"
            );
        }
        // Kubernetes rejects additionalProperties beside properties in a structural schema.
        assert!(spec.get("additionalProperties").is_none(), "{spec}");
    }

    #[test]
    fn spec_is_the_contracts_association_on_the_wire() {
        let json = serde_json::json!({
            "apiVersion": "podidentity.dev/v1alpha1",
            "kind": "PodIdentityAssociation",
            "metadata": {"name": "s3-reader"},
            "spec": {
                "namespace": "default",
                "serviceAccount": "s3-reader",
                "roleArn": "arn:aws:iam::111122223333:role/s3-reader",
                "disableSessionTags": true
            }
        });
        let pia: PodIdentityAssociation = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(pia.association().service_account, "s3-reader");
        assert!(pia.association().disable_session_tags);
        assert_eq!(serde_json::to_value(&pia).unwrap()["spec"], json["spec"]);
    }
}
