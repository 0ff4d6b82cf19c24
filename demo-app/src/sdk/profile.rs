//! The shared profile files as every SDK reads them: `~/.aws/config` (`[default]`,
//! `[profile NAME]`, `[sso-session NAME]`) and `~/.aws/credentials` (`[NAME]`), and the selected
//! profile (`AWS_PROFILE`, else `default`). Each SDK's model asks it what the profile holds and
//! applies its own precedence; this module decides nothing about order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::environment::Environment;

/// One section's `key = value` pairs.
pub type Section = BTreeMap<String, String>;

/// The two files, parsed.
#[derive(Debug, Clone, Default)]
pub struct ProfileFiles {
    /// Profiles of the config file, by name (`[profile x]` → `x`).
    pub config: BTreeMap<String, Section>,
    /// `[sso-session NAME]` sections of the config file.
    pub sso_sessions: BTreeMap<String, Section>,
    /// Profiles of the credentials file.
    pub credentials: BTreeMap<String, Section>,
    /// The selected profile's name.
    pub selected: String,
    /// `~/.aws/sso/cache`, where `aws sso login` leaves its tokens.
    pub sso_cache: Option<PathBuf>,
}

/// What a profile can hold, in no SDK's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// `aws_access_key_id` and `aws_secret_access_key`.
    StaticKeys,
    /// `role_arn` with `source_profile` (and no web identity file).
    AssumeRole,
    /// `role_arn` with `credential_source` (Environment, EcsContainer, Ec2InstanceMetadata).
    AssumeRoleFromSource,
    /// `role_arn` with `web_identity_token_file`.
    WebIdentity,
    /// `sso_start_url`/`sso_session`/... (IAM Identity Center).
    Sso,
    /// `credential_process`.
    Process,
}

impl ProfileFiles {
    /// Read the files `env` points at (missing files are empty).
    pub fn load(env: &Environment) -> Self {
        let read = |p: Option<PathBuf>| {
            p.and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        let mut files = Self::parse(&read(env.config_file()), &read(env.credentials_file()));
        files.selected = env.profile().to_string();
        files.sso_cache = env.home().map(|h| h.join(".aws/sso/cache"));
        files
    }

    /// Parse the two files' text (selected profile `default`).
    pub fn parse(config: &str, credentials: &str) -> Self {
        let mut files = Self {
            selected: "default".into(),
            ..Self::default()
        };
        for (header, section) in sections(config) {
            if let Some(name) = header.strip_prefix("profile ") {
                files.config.insert(name.trim().to_string(), section);
            } else if let Some(name) = header.strip_prefix("sso-session ") {
                files.sso_sessions.insert(name.trim().to_string(), section);
            } else if header == "default" {
                files.config.insert(header, section);
            }
        }
        files.credentials = sections(credentials).into_iter().collect();
        files
    }

    /// The selected profile as the config file has it.
    pub fn in_config(&self) -> Option<&Section> {
        self.config.get(&self.selected)
    }

    /// The selected profile as the credentials file has it.
    pub fn in_credentials(&self) -> Option<&Section> {
        self.credentials.get(&self.selected)
    }

    /// Whether either file has the selected profile.
    pub fn exists(&self) -> bool {
        self.in_config().is_some() || self.in_credentials().is_some()
    }

    /// The selected profile with both files merged (the credentials file wins a key both set),
    /// as most SDKs see it.
    pub fn merged(&self) -> Section {
        self.merged_named(&self.selected)
    }

    /// A named profile, merged.
    pub fn merged_named(&self, name: &str) -> Section {
        let mut out = self.config.get(name).cloned().unwrap_or_default();
        if let Some(c) = self.credentials.get(name) {
            out.extend(c.clone());
        }
        out
    }

    /// Whether a cached SSO token may exist (any token file in `~/.aws/sso/cache`).
    pub fn sso_token_cached(&self) -> bool {
        self.sso_cache
            .as_deref()
            .and_then(|d| std::fs::read_dir(d).ok())
            .is_some_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
            })
    }

    /// Where the selected profile was found, for the report.
    pub fn describe(&self) -> String {
        let place = match (self.in_config(), self.in_credentials()) {
            (Some(_), Some(_)) => "the config and credentials files",
            (Some(_), None) => "the config file",
            (None, Some(_)) => "the credentials file",
            (None, None) => return format!("profile {:?}: in neither file", self.selected),
        };
        let keys: Vec<&str> = self
            .merged()
            .into_keys()
            .filter(|k| !k.contains("secret") && !k.contains("token"))
            .map(|k| leak_name(&k))
            .collect();
        format!(
            "profile {:?} in {place}: {}",
            self.selected,
            keys.join(", ")
        )
    }
}

/// The names of known profile keys as static strings (unknown ones as `other`), so the report
/// shows which keys a profile sets and never a value.
fn leak_name(key: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "aws_access_key_id",
        "role_arn",
        "source_profile",
        "credential_source",
        "web_identity_token_file",
        "role_session_name",
        "sso_start_url",
        "sso_session",
        "sso_region",
        "sso_account_id",
        "sso_role_name",
        "credential_process",
        "region",
    ];
    KNOWN
        .iter()
        .find(|k| **k == key)
        .copied()
        .unwrap_or("other")
}

/// What a section holds (several at once is possible: each SDK picks by its own precedence).
pub fn holds(section: &Section) -> Vec<Holds> {
    let has = |k: &str| section.get(k).is_some_and(|v| !v.is_empty());
    let mut out = Vec::new();
    if has("aws_access_key_id") && has("aws_secret_access_key") {
        out.push(Holds::StaticKeys);
    }
    if has("role_arn") && has("web_identity_token_file") {
        out.push(Holds::WebIdentity);
    } else if has("role_arn") && has("source_profile") {
        out.push(Holds::AssumeRole);
    } else if has("role_arn") && has("credential_source") {
        out.push(Holds::AssumeRoleFromSource);
    }
    if [
        "sso_start_url",
        "sso_session",
        "sso_account_id",
        "sso_region",
        "sso_role_name",
    ]
    .iter()
    .any(|k| has(k))
    {
        out.push(Holds::Sso);
    }
    if has("credential_process") {
        out.push(Holds::Process);
    }
    out
}

/// `[header]` sections of an INI file, in order; comments and nested (indented) keys ignored.
fn sections(text: &str) -> Vec<(String, Section)> {
    let mut out: Vec<(String, Section)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((header.trim().to_string(), Section::new()));
        } else if let (Some((key, value)), Some((_, section))) =
            (line.split_once('='), out.last_mut())
        {
            section.insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    out
}

/// Whether a path names an existing file.
pub fn file_exists(path: &str) -> bool {
    Path::new(path).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_as_sdks_read_them() {
        let files = ProfileFiles::parse(
            "# c\n[default]\nregion = us-west-2\n[profile app]\nrole_arn = arn:r\nsource_profile = base\n  nested = x\n[sso-session corp]\nsso_start_url = https://x\n",
            "[base]\naws_access_key_id = AKIA\naws_secret_access_key = s\n",
        );
        assert_eq!(files.config["app"]["source_profile"], "base");
        assert!(!files.config["app"].contains_key("nested"));
        assert!(files.sso_sessions.contains_key("corp"));
        assert_eq!(holds(&files.config["app"]), [Holds::AssumeRole]);
        assert_eq!(holds(&files.credentials["base"]), [Holds::StaticKeys]);
        assert!(files.exists());
        let described = files.describe();
        assert!(described.contains("region"), "{described}");
    }

    #[test]
    fn describe_never_shows_a_value() {
        let mut files = ProfileFiles::parse(
            "",
            "[default]\naws_access_key_id = AKIAVISIBLE\naws_secret_access_key = hidden-secret\nfoo = bar\n",
        );
        files.selected = "default".into();
        let d = files.describe();
        assert!(
            !d.contains("hidden-secret") && !d.contains("AKIAVISIBLE") && !d.contains("bar"),
            "{d}"
        );
        assert!(
            d.contains("aws_access_key_id") && d.contains("other"),
            "{d}"
        );
    }
}
