//! A snapshot of the variables and files the credential chain looks at, taken once. Values of
//! secret variables are never kept: only whether they are set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pod_identity_contracts::constants::{ENV_FULL_URI, ENV_TOKEN_FILE};

/// Variables whose values are secrets: recorded as set or not, never read into the report.
const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// Variables the default chain reads.
const CHAIN_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ENV_FULL_URI,
    ENV_TOKEN_FILE,
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// What the chain can see.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    home: Option<PathBuf>,
}

impl Environment {
    /// The process environment.
    pub fn from_process() -> Self {
        let vars = CHAIN_VARS
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        Self::new(vars, std::env::var_os("HOME").map(PathBuf::from))
    }

    pub fn new(vars: BTreeMap<String, String>, home: Option<PathBuf>) -> Self {
        let vars = vars
            .into_iter()
            .map(|(k, v)| {
                if SECRET_VARS.contains(&k.as_str()) {
                    (k, "(set)".to_string())
                } else {
                    (k, v)
                }
            })
            .collect();
        Self { vars, home }
    }

    /// A non-empty variable's value (secret ones read as "(set)").
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn is_set(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// `KEY=value` for display; secret values shown as `(set)`.
    pub fn show(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| format!("{key}={v}"))
    }

    /// `$HOME`, where `~/.aws` is.
    pub fn home(&self) -> Option<&std::path::Path> {
        self.home.as_deref()
    }

    pub fn config_file(&self) -> Option<PathBuf> {
        self.get("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(".aws/config")))
    }

    pub fn credentials_file(&self) -> Option<PathBuf> {
        self.get("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(".aws/credentials")))
    }

    pub fn profile(&self) -> &str {
        self.get("AWS_PROFILE").unwrap_or("default")
    }

    pub fn env_keys(&self) -> bool {
        self.is_set("AWS_ACCESS_KEY_ID") && self.is_set("AWS_SECRET_ACCESS_KEY")
    }

    pub fn web_identity(&self) -> bool {
        self.is_set("AWS_WEB_IDENTITY_TOKEN_FILE") && self.is_set("AWS_ROLE_ARN")
    }

    pub fn container(&self) -> bool {
        self.is_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") || self.is_set(ENV_FULL_URI)
    }

    /// True when the profile files exist and name the selected profile.
    pub fn profile_configured(&self) -> bool {
        let section = |path: Option<PathBuf>, header: String| {
            path.and_then(|p| std::fs::read_to_string(p).ok())
                .is_some_and(|text| text.lines().any(|l| l.trim() == header))
        };
        let name = self.profile();
        let config_header = if name == "default" {
            "[default]".to_string()
        } else {
            format!("[profile {name}]")
        };
        section(self.config_file(), config_header)
            || section(self.credentials_file(), format!("[{name}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_never_kept() {
        let env = Environment::new(
            BTreeMap::from([
                ("AWS_ACCESS_KEY_ID".into(), "AKIAEXAMPLE".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "very-secret".into()),
                ("AWS_SESSION_TOKEN".into(), "session-secret".into()),
            ]),
            None,
        );
        assert!(env.env_keys());
        let shown = format!("{env:?} {:?}", env.show("AWS_SECRET_ACCESS_KEY"));
        assert!(
            !shown.contains("very-secret") && !shown.contains("session-secret"),
            "{shown}"
        );
        assert_eq!(
            env.show("AWS_SECRET_ACCESS_KEY").unwrap(),
            "AWS_SECRET_ACCESS_KEY=(set)"
        );
    }

    #[test]
    fn profile_detection_reads_the_selected_section() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            "[other]\naws_access_key_id = A\n",
        )
        .unwrap();
        let env = |profile: &str| {
            Environment::new(
                BTreeMap::from([
                    (
                        "AWS_SHARED_CREDENTIALS_FILE".into(),
                        dir.path().join("credentials").display().to_string(),
                    ),
                    (
                        "AWS_CONFIG_FILE".into(),
                        dir.path().join("none").display().to_string(),
                    ),
                    ("AWS_PROFILE".into(), profile.into()),
                ]),
                None,
            )
        };
        assert!(env("other").profile_configured());
        assert!(!env("default").profile_configured());
    }
}
