//! The report for a modelled SDK: the same look as the Rust walk's ([`crate::report`]), with the
//! model's steps, its verdict and the shadowing warnings. Nothing is fetched: a model says what
//! the SDK would do.

use std::fmt::Write as _;

use serde::Serialize;

use super::profile::ProfileFiles;
use super::{ChainModel, Ctx, ModelOutcome, ModelStep, Sdk, Source, shadowing_warnings};
use crate::environment::Environment;
use crate::report::{EXIT_CHAIN_FAILED, EXIT_NO_CREDENTIALS, Style};

#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub sdk: Sdk,
    /// The chain modelled and the SDK version it was checked against.
    pub chain: &'static str,
    pub profile: String,
    pub steps: Vec<ModelStep>,
    /// Where the chain gets its credentials (or fails): the same names for every SDK.
    pub winner: Option<Source>,
    /// The same as `winner` (the Rust report's `winner` names its step; `source` is common).
    pub source: Option<Source>,
    pub source_fails: bool,
    pub failed_over: Vec<Source>,
    pub warnings: Vec<String>,
    pub verdict: String,
    pub exit_code: i32,
}

/// Evaluate `model` against the process's environment.
pub fn run(model: &ChainModel) -> ModelReport {
    let env = Environment::from_process();
    evaluate(model, &env, &ProfileFiles::load(&env))
}

pub fn evaluate(model: &ChainModel, env: &Environment, files: &ProfileFiles) -> ModelReport {
    let ctx = Ctx { env, files };
    let (steps, v) = model.walk(&ctx);
    let warnings = shadowing_warnings(model.sdk, &steps, env.container());
    let (verdict, exit_code) = match (v.source, v.source_fails) {
        (Some(s), false) => (
            format!(
                "{} would take credentials from the {} provider",
                model.sdk.id(),
                s.id()
            ),
            0,
        ),
        (Some(s), true) => (
            format!(
                "{} would pick the {} provider and fail there, stopping the chain",
                model.sdk.id(),
                s.id()
            ),
            EXIT_CHAIN_FAILED,
        ),
        (None, _) => (
            format!("{} would find no credentials", model.sdk.id()),
            EXIT_NO_CREDENTIALS,
        ),
    };
    ModelReport {
        sdk: model.sdk,
        chain: model.label,
        profile: files.describe(),
        steps,
        winner: v.source,
        source: v.source,
        source_fails: v.source_fails,
        failed_over: v.failed_over,
        warnings,
        verdict,
        exit_code,
    }
}

/// The terminal rendering, in the look of the Rust walk's.
pub fn render_text(report: &ModelReport, color: bool) -> String {
    let s = Style { on: color };
    let paint = |code: &str, text: &str| s.paint(code, text);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        paint(
            "1",
            &format!(
                "AWS SDK default credential chain ({} order, modelled)",
                report.chain
            )
        )
    );
    let _ = writeln!(out, "     {}", report.profile);
    for (i, step) in report.steps.iter().enumerate() {
        let (mark, code, detail) = match &step.outcome {
            ModelOutcome::Picks { source } => (
                "WON",
                "32",
                Some(format!("credentials from {}", source.id())),
            ),
            ModelOutcome::Fails { source, reason } => {
                ("FAILED", "31", Some(format!("{}: {reason}", source.id())))
            }
            ModelOutcome::FailsAndGoesOn { source, reason } => (
                "failed, next",
                "33",
                Some(format!("{}: {reason}", source.id())),
            ),
            ModelOutcome::NotConfigured => ("next", "2", None),
            ModelOutcome::NotReached => ("not asked", "2", None),
        };
        let _ = writeln!(
            out,
            "\n{}. {} [{}]",
            i + 1,
            step.provider,
            paint(code, mark)
        );
        for seen in &step.seen {
            let _ = writeln!(out, "     saw {seen}");
        }
        if let Some(d) = detail {
            let _ = writeln!(out, "     {d}");
        }
        let _ = writeln!(out, "     → {}", step.why);
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out);
        for w in &report.warnings {
            let _ = writeln!(out, "{} {w}", paint("33", "warning:"));
        }
    }
    let _ = writeln!(
        out,
        "\nmodel: demo-app's reading of the {} chain (checked against the real SDK by demo-app/tests/shadowing.rs); nothing was fetched",
        report.sdk.id()
    );
    let code = if report.exit_code == 0 { "32" } else { "31" };
    let _ = writeln!(out, "{}", paint(&format!("1;{code}"), &report.verdict));
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Sdk, model};
    use super::*;

    fn report(sdk: Sdk, s: &Setup) -> ModelReport {
        evaluate(&model(sdk).unwrap(), &s.env, &s.files)
    }

    #[test]
    fn each_sdk_is_warned_of_what_hides_pod_identity_from_it() {
        let sso = "[default]\nsso_start_url = https://x\nsso_region = us-east-1\n";
        let s = setup(&[CONTAINER, IMDS_OFF], sso, "");
        let go = report(Sdk::Go, &s);
        assert_eq!(go.exit_code, EXIT_CHAIN_FAILED);
        assert!(
            go.warnings[0].contains("fails, which stops the chain"),
            "{:?}",
            go.warnings
        );
        let java = report(Sdk::Java, &s);
        assert_eq!((java.exit_code, java.winner), (0, Some(Source::Container)));
        assert!(
            java.warnings[0].contains("the chain goes on"),
            "{:?}",
            java.warnings
        );

        let s = setup(&[CONTAINER, KEY, SECRET], "", "");
        let python = report(Sdk::Python, &s);
        assert!(
            python.warnings[0].contains("yields credentials"),
            "{:?}",
            python.warnings
        );
        // Nothing before the container provider: no warning.
        let s = setup(&[CONTAINER], "", "");
        assert!(report(Sdk::JavaScript, &s).warnings.is_empty());
        // No container provider configured: nothing to hide.
        let s = setup(&[KEY, SECRET], "", "");
        assert!(report(Sdk::Python, &s).warnings.is_empty());
    }

    #[test]
    fn the_text_report_numbers_steps_and_never_shows_a_secret() {
        let s = setup(
            &[
                CONTAINER,
                KEY,
                ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
            ],
            "",
            "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = file-secret-value\n",
        );
        let r = report(Sdk::Java, &s);
        let text = render_text(&r, false);
        assert!(
            text.contains("1. SystemPropertyCredentialsProvider [next]"),
            "{text}"
        );
        assert!(
            text.contains("2. EnvironmentVariableCredentialsProvider [WON]"),
            "{text}"
        );
        assert!(text.contains("warning:"), "{text}");
        let json = serde_json::to_string(&r).unwrap();
        for out in [&text, &json] {
            assert!(
                !out.contains("very-secret-value") && !out.contains("file-secret-value"),
                "{out}"
            );
            assert!(!out.contains("AKIAFILE"), "{out}");
        }
        assert!(
            json.contains(r#""winner":"environment""#) && json.contains(r#""sdk":"java""#),
            "{json}"
        );
    }
}
