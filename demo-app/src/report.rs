//! The whole run and its two renderings: a terminal report and one JSON document.

use std::fmt::Write as _;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use serde::Serialize;

use crate::chain::{self, Outcome, SDK_DIFFERENCES, Step, StepKind};
use crate::environment::Environment;
use crate::identity::{self, Identity};
use crate::sdk::profile::ProfileFiles;
use crate::sdk::{Sdk, Source};

/// Exit codes: 0 credentials found and they work.
pub const EXIT_NO_CREDENTIALS: i32 = 1;
pub const EXIT_CHAIN_FAILED: i32 = 2;
pub const EXIT_IDENTITY_FAILED: i32 = 3;
pub const EXIT_MISMATCH: i32 = 4;

#[derive(Debug, Clone, Serialize)]
pub struct CrossCheck {
    /// Provider name aws-config's real default chain produced (or its error).
    pub sdk_default_chain: String,
    pub matches: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `rust`: the SDK whose chain this is (the models' reports name theirs).
    pub sdk: Sdk,
    pub steps: Vec<Step>,
    pub winner: Option<StepKind>,
    /// Where the winning (or failing) step's credentials come from, named as the models name
    /// theirs (a profile step says which kind of profile).
    pub source: Option<Source>,
    pub source_fails: bool,
    /// Always empty: aws-config stops at the first provider that fails.
    pub failed_over: Vec<Source>,
    pub warnings: Vec<String>,
    pub sdk_differences: Vec<&'static str>,
    pub identity: Option<Identity>,
    pub identity_error: Option<String>,
    pub cross_check: CrossCheck,
    /// One line: what happened.
    pub verdict: String,
    pub exit_code: i32,
}

/// Walk the chain, ask STS who we are, and cross-check with aws-config's default chain.
pub async fn run() -> Report {
    let env = Environment::from_process();
    let walk = chain::walk(&env).await;
    let warnings = chain::shadowing_warnings(&env);
    let winner = walk.winner.as_ref().map(|(k, _)| *k);
    let (source, source_fails) = source_of(&walk.steps, &ProfileFiles::load(&env));

    let sdk_default_chain = match aws_config::defaults(BehaviorVersion::latest())
        .load()
        .await
        .credentials_provider()
    {
        Some(p) => match p.provide_credentials().await {
            Ok(c) => chain::provider_name(&c),
            Err(e) => format!("error: {e}"),
        },
        None => "none".into(),
    };
    let matches = match winner {
        Some(kind) => kind.owns_provider_name(&sdk_default_chain),
        None => sdk_default_chain.starts_with("error"),
    };

    let (identity, identity_error) = match &walk.winner {
        Some((_, creds)) => match identity::get_caller_identity(creds.clone()).await {
            Ok(id) => (Some(id), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };

    let failed = walk.steps.iter().find_map(|s| match &s.outcome {
        Outcome::Failed { reason } => Some((s.kind, reason.clone())),
        _ => None,
    });
    let (verdict, exit_code) = if !matches {
        (
            format!(
                "BUG: demo-app says {} but aws-config's default chain used {sdk_default_chain}",
                winner.map_or("no provider", StepKind::id)
            ),
            EXIT_MISMATCH,
        )
    } else if let Some((kind, reason)) = failed {
        (
            format!(
                "the {} step failed and stopped the chain: {reason}",
                kind.id()
            ),
            EXIT_CHAIN_FAILED,
        )
    } else if let Some(kind) = winner {
        match (&identity, &identity_error) {
            (Some(id), _) => (
                format!(
                    "credentials from the {} step; STS says {}",
                    kind.id(),
                    id.arn
                ),
                0,
            ),
            (None, Some(e)) => (
                format!(
                    "credentials from the {} step, but STS GetCallerIdentity failed: {e}",
                    kind.id()
                ),
                EXIT_IDENTITY_FAILED,
            ),
            (None, None) => unreachable!("identity is asked whenever there is a winner"),
        }
    } else {
        (
            "no credentials: every step of the chain said not loaded".into(),
            EXIT_NO_CREDENTIALS,
        )
    };

    Report {
        sdk: Sdk::Rust,
        steps: walk.steps,
        winner,
        source,
        source_fails,
        failed_over: Vec::new(),
        warnings,
        sdk_differences: SDK_DIFFERENCES.to_vec(),
        identity,
        identity_error,
        cross_check: CrossCheck {
            sdk_default_chain,
            matches,
        },
        verdict,
        exit_code,
    }
}

/// The source of the step the walk ended on: the provider name aws-config gave the credentials
/// when it loaded them, else (it failed) what the profile holds.
fn source_of(steps: &[Step], files: &ProfileFiles) -> (Option<Source>, bool) {
    for step in steps {
        let (fails, provider) = match &step.outcome {
            Outcome::Loaded { provider, .. } => (false, Some(provider.as_str())),
            Outcome::Failed { .. } => (true, None),
            Outcome::NotLoaded { .. } | Outcome::NotReached => continue,
        };
        let source = match step.kind {
            StepKind::Environment => Source::Environment,
            StepKind::WebIdentity => Source::WebIdentity,
            StepKind::Container => Source::Container,
            StepKind::Imds => Source::Imds,
            StepKind::Profile => match provider {
                Some("ProfileFile") => Source::Profile,
                Some("CredentialProcess") => Source::Process,
                Some("WebIdentityToken") => Source::ProfileWebIdentity,
                Some("AssumeRoleProvider") => Source::AssumeRole,
                Some("SSO") => Source::Sso,
                _ => crate::sdk::rust::profile_source(files).unwrap_or(Source::Profile),
            },
        };
        return (Some(source), fails);
    }
    (None, false)
}

/// ANSI colour when on (both reports' look).
pub(crate) struct Style {
    pub(crate) on: bool,
}

impl Style {
    pub(crate) fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The terminal rendering.
pub fn render_text(report: &Report, color: bool) -> String {
    let s = Style { on: color };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        s.paint(
            "1",
            "AWS SDK default credential chain (Rust aws-config order)"
        )
    );
    for (i, step) in report.steps.iter().enumerate() {
        let (mark, code) = match &step.outcome {
            Outcome::Loaded { .. } => ("WON", "32"),
            Outcome::NotLoaded { .. } => ("next", "2"),
            Outcome::Failed { .. } => ("FAILED", "31"),
            Outcome::NotReached => ("not asked", "2"),
        };
        let _ = writeln!(
            out,
            "\n{}. {} [{}]  configured: {}",
            i + 1,
            step.title,
            s.paint(code, mark),
            if step.configured { "yes" } else { "no" }
        );
        for seen in &step.seen {
            let _ = writeln!(out, "     saw {seen}");
        }
        match &step.outcome {
            Outcome::Loaded {
                provider,
                access_key_id,
                expiration,
            } => {
                let _ = writeln!(
                    out,
                    "     {provider}: {access_key_id}, expires {}",
                    expiration.as_deref().unwrap_or("never")
                );
            }
            Outcome::NotLoaded { reason } | Outcome::Failed { reason } => {
                let _ = writeln!(out, "     {reason}");
            }
            Outcome::NotReached => {}
        }
        let _ = writeln!(out, "     → {}", step.why);
        if let Some(c) = &step.container {
            if let Some(uri) = &c.uri {
                let _ = writeln!(
                    out,
                    "     URI {uri}: Rust SDK {}, botocore {}",
                    yes_no(c.rust_sdk_accepts),
                    yes_no(c.botocore_accepts)
                );
            }
            if let Some(note) = &c.uri_note {
                let _ = writeln!(out, "     note: {note}");
            }
            if let Some(t) = &c.token_file {
                let _ = writeln!(
                    out,
                    "     token file {} ({}, mode {}, {} bytes)",
                    t.path,
                    if t.exists { "present" } else { "missing" },
                    t.mode.as_deref().unwrap_or("?"),
                    t.bytes.unwrap_or(0)
                );
                if let Some(cl) = &t.claims {
                    let _ = writeln!(
                        out,
                        "       claims (unverified): iss {} aud {:?}",
                        cl.iss, cl.aud
                    );
                    let _ = writeln!(
                        out,
                        "       sub {}  pod {}  node {}  expires in {} s  {}",
                        cl.sub,
                        cl.pod.as_deref().unwrap_or("-"),
                        cl.node.as_deref().unwrap_or("-"),
                        cl.expires_in_seconds,
                        cl.fingerprint
                    );
                }
                if let Some(p) = &t.problem {
                    let _ = writeln!(out, "       {}", s.paint("33", p));
                }
            }
            if let Some(ex) = &c.exchange {
                let _ = writeln!(
                    out,
                    "     agent answered {} in {} ms: {}",
                    ex.status.map_or("nothing".into(), |st| st.to_string()),
                    ex.latency_ms,
                    match (&ex.access_key_id, &ex.error) {
                        (Some(id), _) =>
                            format!("{id}, expires {}", ex.expiration.as_deref().unwrap_or("?")),
                        (None, Some(e)) => e.clone(),
                        (None, None) => "-".into(),
                    }
                );
            }
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out);
        for w in &report.warnings {
            let _ = writeln!(out, "{} {w}", s.paint("33", "warning:"));
        }
    }
    let _ = writeln!(out, "\nOther SDKs:");
    for d in &report.sdk_differences {
        let _ = writeln!(out, "  - {d}");
    }
    let _ = writeln!(
        out,
        "\ncross-check: aws-config's default chain used {} ({})",
        report.cross_check.sdk_default_chain,
        if report.cross_check.matches {
            "agrees"
        } else {
            "DISAGREES"
        }
    );
    let code = if report.exit_code == 0 { "32" } else { "31" };
    let _ = writeln!(out, "{}", s.paint(&format!("1;{code}"), &report.verdict));
    out
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "accepts it",
        Some(false) => "refuses it",
        None => "?",
    }
}
