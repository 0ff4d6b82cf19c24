//! Pod identity associations: which role a (namespace, service account) pair gets.
//!
//! One model for the webhook (should this pod be injected?) and eks-auth (which role to assume),
//! and the YAML file format both read:
//!
//! ```yaml
//! associations:
//!   - namespace: default
//!     serviceAccount: s3-reader
//!     roleArn: arn:aws:iam::111122223333:role/s3-reader
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why an association file or entry was refused. Each names the entry it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssociationError {
    #[error("associations file is not valid YAML of the expected shape: {0}")]
    Parse(String),
    #[error("association #{index} ({key}): {reason}")]
    Invalid {
        index: usize,
        key: String,
        reason: String,
    },
    #[error("association #{index}: {key} is associated twice (first at #{first})")]
    Duplicate {
        index: usize,
        first: usize,
        key: String,
    },
}

/// One association, in the field names of the file format and of the custom resource's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Association {
    /// Namespace of the pods' service account.
    pub namespace: String,
    /// Name of the service account whose pods get the role.
    pub service_account: String,
    /// Role assumed with the pod's session tags.
    pub role_arn: String,
    /// Role assumed next, from `role_arn`'s session (cross-account chaining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_role_arn: Option<String>,
    /// Assume the role without the pod's session tags (required to set `policy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_session_tags: bool,
    /// Session policy JSON, allowed only with session tags disabled (as on EKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Stable id; derived from namespace and service account when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_id: Option<String>,
}

/// The associations file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationsFile {
    #[serde(default)]
    pub associations: Vec<Association>,
}

impl Association {
    /// `namespace/serviceAccount`, the key shown in logs and errors.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.service_account)
    }

    /// The association id: the configured one, or `a-` and 17 characters derived from the key,
    /// so the id is stable across reloads and restarts.
    pub fn id(&self) -> String {
        if let Some(id) = &self.association_id {
            return id.clone();
        }
        derive_association_id(&self.namespace, &self.service_account)
    }

    /// Field checks; returns the reason for the first failure.
    pub fn validate(&self) -> Result<(), String> {
        check_dns_label("namespace", &self.namespace, 63)?;
        check_dns_subdomain("serviceAccount", &self.service_account)?;
        check_role_arn("roleArn", &self.role_arn)?;
        if let Some(target) = &self.target_role_arn {
            check_role_arn("targetRoleArn", target)?;
        }
        if let Some(policy) = &self.policy {
            if !self.disable_session_tags {
                return Err("policy is only allowed with disableSessionTags: true".into());
            }
            if policy.len() > 2048 {
                return Err(format!(
                    "policy is {} characters, more than 2048",
                    policy.len()
                ));
            }
            if serde_json::from_str::<serde_json::Value>(policy).is_err() {
                return Err("policy is not valid JSON".into());
            }
        }
        if let Some(id) = &self.association_id
            && (id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err("associationId must be 1-64 letters, digits or '-'".into());
        }
        Ok(())
    }
}

/// Derive `a-` + 17 lowercase hex digits from the key.
pub fn derive_association_id(namespace: &str, service_account: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update(b"/");
    hasher.update(service_account.as_bytes());
    let digest = hasher.finalize();
    // "a-" and the first 17 hex digits of the digest.
    let mut id = String::with_capacity(2 + 18);
    id.push_str("a-");
    crate::ids::push_hex(&mut id, &digest[..9]);
    id.truncate(2 + 17);
    id
}

/// The ARN EKS gives an association.
pub fn association_arn(
    partition: &str,
    region: &str,
    account: &str,
    cluster: &str,
    id: &str,
) -> String {
    format!("arn:{partition}:eks:{region}:{account}:podidentityassociation/{cluster}/{id}")
}

fn check_dns_label(field: &str, v: &str, max: usize) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {v:?} is not a valid Kubernetes name (lowercase letters, digits, '-')"
        ))
    }
}

fn check_dns_subdomain(field: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 253 {
        return Err(format!("{field} must be 1-253 characters"));
    }
    for label in v.split('.') {
        check_dns_label(field, label, 63).map_err(|_| {
            format!(
                "{field} {v:?} is not a valid Kubernetes name (lowercase letters, digits, '-', '.')"
            )
        })?;
    }
    Ok(())
}

fn check_role_arn(field: &str, v: &str) -> Result<(), String> {
    // arn:<partition>:iam::<12 digits>:role/<path/name>
    let parts: Vec<&str> = v.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {v:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
        ))
    }
}

/// A validated set of associations, looked up by (namespace, service account).
#[derive(Debug, Clone, Default)]
pub struct AssociationSet {
    by_key: HashMap<(String, String), Association>,
}

impl AssociationSet {
    /// Parse and validate the YAML file format. All or nothing: one bad entry refuses the file,
    /// so a bad edit never half-applies.
    pub fn from_yaml(text: &str) -> Result<Self, AssociationError> {
        let file: AssociationsFile = if text.trim().is_empty() {
            AssociationsFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| AssociationError::Parse(e.to_string()))?
        };
        Self::from_associations(file.associations)
    }

    /// Validate a list (from a file or from custom resources).
    pub fn from_associations(list: Vec<Association>) -> Result<Self, AssociationError> {
        let mut by_key = HashMap::with_capacity(list.len());
        let mut first_index = HashMap::with_capacity(list.len());
        for (index, assoc) in list.into_iter().enumerate() {
            let key = assoc.key();
            assoc
                .validate()
                .map_err(|reason| AssociationError::Invalid {
                    index,
                    key: key.clone(),
                    reason,
                })?;
            let map_key = (assoc.namespace.clone(), assoc.service_account.clone());
            if let Some(&first) = first_index.get(&map_key) {
                return Err(AssociationError::Duplicate { index, first, key });
            }
            first_index.insert(map_key.clone(), index);
            by_key.insert(map_key, assoc);
        }
        Ok(Self { by_key })
    }

    pub fn get(&self, namespace: &str, service_account: &str) -> Option<&Association> {
        // Borrowed-key lookup without allocating would need a custom key type; two small
        // allocations per lookup are far below the cost of the exchange around it.
        self.by_key
            .get(&(namespace.to_string(), service_account.to_string()))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Association> {
        self.by_key.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
associations:
  - namespace: default
    serviceAccount: s3-reader
    roleArn: arn:aws:iam::111122223333:role/s3-reader
  - namespace: team-b
    serviceAccount: app
    roleArn: arn:aws:iam::111122223333:role/hop
    targetRoleArn: arn:aws:iam::444455556666:role/target
    disableSessionTags: true
    policy: '{"Version":"2012-10-17","Statement":[]}'
    associationId: a-custom
"#;

    #[test]
    fn parses_and_looks_up() {
        let set = AssociationSet::from_yaml(GOOD).unwrap();
        assert_eq!(set.len(), 2);
        let a = set.get("default", "s3-reader").unwrap();
        assert_eq!(a.role_arn, "arn:aws:iam::111122223333:role/s3-reader");
        // "a-" and the first 17 hex digits of SHA-256("default/s3-reader"), as before.
        assert_eq!(a.id(), "a-28d0267f999d65beb");
        assert_eq!(
            derive_association_id("team-a", "app"),
            "a-9755a0f1eb3e1eb40"
        );
        assert_eq!(set.get("team-b", "app").unwrap().id(), "a-custom");
        assert!(set.get("default", "other").is_none());
    }

    #[test]
    fn empty_file_is_an_empty_set() {
        assert!(AssociationSet::from_yaml("").unwrap().is_empty());
        assert!(
            AssociationSet::from_yaml("associations: []")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn refuses_bad_files_whole_with_a_reason() {
        let cases = [
            ("associations: [", "not valid YAML"),
            ("associations:\n  - namespace: default\n", "not valid YAML"),
            ("associatons: []", "not valid YAML"),
            (
                "associations:\n  - {namespace: Default, serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/r'}",
                "namespace",
            ),
            (
                "associations:\n  - {namespace: d, serviceAccount: a, roleArn: 'arn:aws:iam::1:role/r'}",
                "roleArn",
            ),
            (
                "associations:\n  - {namespace: d, serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/r', policy: '{}'}",
                "disableSessionTags",
            ),
            (
                "associations:\n  - {namespace: d, serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/r', disableSessionTags: true, policy: '{'}",
                "not valid JSON",
            ),
            (
                "associations:\n  - {namespace: d, serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/r'}\n  - {namespace: d, serviceAccount: a, roleArn: 'arn:aws:iam::111122223333:role/q'}",
                "twice",
            ),
        ];
        for (text, expect) in cases {
            let err = AssociationSet::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?} -> {err}");
        }
    }

    #[test]
    fn arn_of_an_association() {
        assert_eq!(
            association_arn("aws", "us-west-2", "111122223333", "lab", "a-1"),
            "arn:aws:eks:us-west-2:111122223333:podidentityassociation/lab/a-1"
        );
    }
}
