//! The role policy: which IAM roles the associations of each namespace may name.
//!
//! On EKS, whoever creates an association needs `iam:PassRole` on its role; off EKS, whoever can
//! write an association (a file entry, a `PodIdentityAssociation`) could otherwise name any role
//! that trusts eks-auth. This policy is the operator's answer, kept apart from the associations
//! (a ConfigMap in eks-auth's namespace, which association writers cannot edit). eks-auth refuses
//! an exchange outside it and the webhook does not inject for it.
//!
//! ```yaml
//! rules:
//!   - namespaces: [payments]
//!     roles: [arn:aws:iam::111122223333:role/payments-api]
//!   # One rule for every team, each confined to its own roles: {namespace} is the pod's namespace.
//!   - namespaces: ["team-*"]
//!     roles: ["arn:aws:iam::111122223333:role/{namespace}-*"]
//! ```
//!
//! Deny by default: an association is allowed only when its `roleArn`, and its `targetRoleArn`
//! when set, each match a role pattern of a rule whose namespace pattern matches its namespace.
//! Patterns take `*` (any run of characters) and `?` (one character), as IAM's do. A role pattern
//! names its partition and account exactly (no wildcard before `:role/`), so no pattern reaches
//! into an account nobody wrote down. `{namespace}` exists because `team-*` → `role/team-*` would
//! let team-a name team-b's roles. Matching is on the ARN as written, case-sensitive: a role the
//! policy does not spell is refused.

use serde::Deserialize;

/// Placeholder in a role pattern for the namespace being checked.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// Why a role policy file was refused. Each names the rule and field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolePolicyError {
    #[error("role policy is not valid YAML of the expected shape: {0}")]
    Parse(String),
    #[error("role policy rule #{rule} {field}: {reason}")]
    Invalid {
        rule: usize,
        field: String,
        reason: String,
    },
}

/// Why an association is outside the policy. The message names the field, the ARN and the
/// namespace, for the audit line; clients get a plainer message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {role_arn} is not allowed for namespace {namespace} by the role policy")]
pub struct RoleDenied {
    /// `roleArn` or `targetRoleArn`.
    pub field: &'static str,
    pub role_arn: String,
    pub namespace: String,
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    namespaces: Vec<String>,
    roles: Vec<String>,
}

/// The file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<RuleFile>,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    namespaces: Vec<String>,
    roles: Vec<String>,
}

/// A validated role policy. The empty policy allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePolicy {
    rules: Vec<Rule>,
}

impl RolePolicy {
    /// Parse and validate the YAML file format, all or nothing.
    pub fn from_yaml(text: &str) -> Result<Self, RolePolicyError> {
        let file: PolicyFile = if text.trim().is_empty() {
            PolicyFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| RolePolicyError::Parse(e.to_string()))?
        };
        let mut rules = Vec::with_capacity(file.rules.len());
        for (rule, r) in file.rules.into_iter().enumerate() {
            let invalid = |field: String, reason: String| RolePolicyError::Invalid {
                rule,
                field,
                reason,
            };
            if r.namespaces.is_empty() {
                return Err(invalid("namespaces".into(), "is empty".into()));
            }
            if r.roles.is_empty() {
                return Err(invalid("roles".into(), "is empty".into()));
            }
            for (i, ns) in r.namespaces.iter().enumerate() {
                check_namespace_pattern(ns)
                    .map_err(|reason| invalid(format!("namespaces[{i}] {ns:?}"), reason.into()))?;
            }
            for (i, role) in r.roles.iter().enumerate() {
                check_role_pattern(role)
                    .map_err(|reason| invalid(format!("roles[{i}] {role:?}"), reason))?;
            }
            rules.push(Rule {
                namespaces: r.namespaces,
                roles: r.roles,
            });
        }
        Ok(Self { rules })
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `namespace` may be given `role_arn`.
    pub fn allows(&self, namespace: &str, role_arn: &str) -> bool {
        self.rules.iter().any(|rule| {
            rule.namespaces.iter().any(|p| glob_match(p, namespace))
                && rule.roles.iter().any(|p| {
                    if p.contains(NAMESPACE_PLACEHOLDER) {
                        // A namespace is a DNS label: it cannot carry a wildcard into the pattern.
                        glob_match(&p.replace(NAMESPACE_PLACEHOLDER, namespace), role_arn)
                    } else {
                        glob_match(p, role_arn)
                    }
                })
        })
    }

    /// Check every role an association would assume: `role_arn`, then `target_role_arn`.
    pub fn check(
        &self,
        namespace: &str,
        role_arn: &str,
        target_role_arn: Option<&str>,
    ) -> Result<(), RoleDenied> {
        let roles = [
            ("roleArn", Some(role_arn)),
            ("targetRoleArn", target_role_arn),
        ];
        for (field, arn) in roles {
            if let Some(arn) = arn
                && !self.allows(namespace, arn)
            {
                return Err(RoleDenied {
                    field,
                    role_arn: arn.to_string(),
                    namespace: namespace.to_string(),
                });
            }
        }
        Ok(())
    }
}

fn check_namespace_pattern(p: &str) -> Result<(), &'static str> {
    let ok = !p.is_empty()
        && p.len() <= 63
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'*' | b'?')
        });
    if ok {
        Ok(())
    } else {
        Err("is not a namespace name or pattern (lowercase letters, digits, '-', '*', '?')")
    }
}

fn check_role_pattern(p: &str) -> Result<(), String> {
    // arn:<partition>:iam::<12 digits>:role/<name pattern>, wildcards only in the name pattern.
    let Some((head, name)) = p.split_once(":role/") else {
        return Err("is not an IAM role ARN pattern (arn:aws:iam::<account>:role/<name>)".into());
    };
    let parts: Vec<&str> = head.split(':').collect();
    let head_ok = parts.len() == 5
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[1]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit());
    if !head_ok {
        return Err(
            "must name its partition and 12-digit account exactly (arn:aws:iam::<account>:role/<name>); wildcards only after role/"
                .into(),
        );
    }
    let rest = name.replace(NAMESPACE_PLACEHOLDER, "");
    if name.is_empty() || rest.contains(['{', '}']) || rest.contains(char::is_whitespace) {
        return Err(format!(
            "the role name pattern must be non-empty, without spaces, and its only placeholder {NAMESPACE_PLACEHOLDER}"
        ));
    }
    Ok(())
}

/// `*` matches any run of characters (none included), `?` exactly one; everything else itself.
/// Backtracks only to the last `*`: at worst pattern × text steps, never exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
rules:
  - namespaces: [payments]
    roles: [arn:aws:iam::111122223333:role/payments-api]
  - namespaces: ["team-*"]
    roles: ["arn:aws:iam::111122223333:role/{namespace}-*"]
  - namespaces: [chain]
    roles:
      - arn:aws:iam::111122223333:role/hop
      - arn:aws:iam::444455556666:role/target-?
"#;

    fn policy() -> RolePolicy {
        RolePolicy::from_yaml(POLICY).unwrap()
    }

    #[test]
    fn exact_rules() {
        let p = policy();
        assert_eq!(p.len(), 3);
        assert!(p.allows("payments", "arn:aws:iam::111122223333:role/payments-api"));
        assert!(!p.allows("payments", "arn:aws:iam::111122223333:role/payments-admin"));
        assert!(!p.allows("payments2", "arn:aws:iam::111122223333:role/payments-api"));
        assert!(!p.allows("default", "arn:aws:iam::111122223333:role/payments-api"));
    }

    #[test]
    fn namespace_placeholder_confines_each_team_to_its_roles() {
        let p = policy();
        assert!(p.allows("team-a", "arn:aws:iam::111122223333:role/team-a-reader"));
        assert!(!p.allows("team-a", "arn:aws:iam::111122223333:role/team-b-reader"));
        assert!(!p.allows("team-a", "arn:aws:iam::999999999999:role/team-a-reader"));
        assert!(!p.allows("team", "arn:aws:iam::111122223333:role/team-reader"));
    }

    #[test]
    fn target_role_is_checked_too() {
        let p = policy();
        let hop = "arn:aws:iam::111122223333:role/hop";
        assert_eq!(
            p.check(
                "chain",
                hop,
                Some("arn:aws:iam::444455556666:role/target-1")
            ),
            Ok(())
        );
        let e = p
            .check(
                "chain",
                hop,
                Some("arn:aws:iam::444455556666:role/target-10"),
            )
            .unwrap_err();
        assert_eq!(e.field, "targetRoleArn");
        assert_eq!(
            e.to_string(),
            "targetRoleArn arn:aws:iam::444455556666:role/target-10 is not allowed for namespace chain by the role policy"
        );
        let e = p
            .check("chain", "arn:aws:iam::111122223333:role/admin", None)
            .unwrap_err();
        assert_eq!(e.field, "roleArn");
    }

    #[test]
    fn empty_policy_allows_nothing() {
        for text in ["", "rules: []"] {
            let p = RolePolicy::from_yaml(text).unwrap();
            assert!(p.is_empty());
            assert!(!p.allows("default", "arn:aws:iam::111122223333:role/r"));
        }
    }

    #[test]
    fn globs() {
        for (p, t) in [
            ("*", ""),
            ("*", "abc"),
            ("a*c", "abbbc"),
            ("a*c", "ac"),
            ("a?c", "abc"),
            ("*b*", "abc"),
            ("a*b*c", "axbxxc"),
            ("role/*", "role/path/name"),
        ] {
            assert!(glob_match(p, t), "{p} ~ {t}");
        }
        for (p, t) in [
            ("a?c", "ac"),
            ("a*c", "abcd"),
            ("abc", "ab"),
            ("ab", "abc"),
            ("", "a"),
        ] {
            assert!(!glob_match(p, t), "{p} !~ {t}");
        }
        // No exponential blow-up on a hostile pattern.
        let text = "a".repeat(10_000);
        assert!(!glob_match(&format!("{}b", "*a".repeat(50)), &text));
    }

    #[test]
    fn refuses_bad_files_naming_the_rule_and_field() {
        let cases = [
            ("rules: [", "line"),
            ("rule: []", "unknown field `rule`"),
            (
                "rules:\n  - {namespaces: [a], role: [x]}",
                "unknown field `role`",
            ),
            (
                "rules:\n  - {namespaces: [], roles: ['arn:aws:iam::111122223333:role/r']}",
                "rule #0 namespaces: is empty",
            ),
            (
                "rules:\n  - {namespaces: [a], roles: []}",
                "rule #0 roles: is empty",
            ),
            (
                "rules:\n  - {namespaces: [Team], roles: ['arn:aws:iam::111122223333:role/r']}",
                "rule #0 namespaces[0] \"Team\"",
            ),
            (
                "rules:\n  - {namespaces: [a], roles: ['arn:aws:iam::111122223333:role/r']}\n  - {namespaces: [b], roles: ['arn:aws:iam::*:role/r']}",
                "rule #1 roles[0]",
            ),
            (
                "rules:\n  - {namespaces: [a], roles: ['arn:aws:iam::111122223333:user/r']}",
                "not an IAM role ARN pattern",
            ),
            (
                "rules:\n  - {namespaces: [a], roles: ['arn:*:iam::111122223333:role/r']}",
                "exactly",
            ),
            (
                "rules:\n  - {namespaces: [a], roles: ['arn:aws:iam::111122223333:role/']}",
                "non-empty",
            ),
            (
                "rules:\n  - {namespaces: [a], roles: ['arn:aws:iam::111122223333:role/{ns}-x']}",
                "placeholder",
            ),
        ];
        for (text, want) in cases {
            let e = RolePolicy::from_yaml(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?} -> {e}");
        }
    }
}
