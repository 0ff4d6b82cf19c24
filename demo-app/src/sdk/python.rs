//! botocore's default chain (boto3 and the AWS CLI run the same one).
//!
//! Order: `botocore/credentials.py`, `create_credential_resolver` (`pre_profile`,
//! `ProfileProviderBuilder.providers`, `post_profile`), botocore 1.43.11
//! (`scripts/requirements-test.txt`): env, assume-role, assume-role-with-web-identity, sso,
//! shared-credentials-file, login, custom-process, config-file, (ec2-credentials-file, boto2
//! config: not modelled), container-role, iam-role. `CredentialResolver.load_credentials` returns
//! the first provider's credentials; an exception stops it. The role, web identity and SSO
//! providers pick lazily: they take over when configured and fail later, on first use.

use super::profile::{Holds, Section, holds};
use super::providers::{container, env_keys, imds, profile_by};
use super::{ChainModel, Ctx, Decision, OnFailure, Provider, Sdk, Source};

pub fn model() -> ChainModel {
    ChainModel {
        sdk: Sdk::Python,
        label: "botocore 1.43 (boto3, AWS CLI) CredentialResolver",
        on_failure: OnFailure::Stop,
        providers: vec![
            env_keys("env"),
            Provider {
                name: "assume-role",
                vars: &["AWS_PROFILE"],
                decide: |c| {
                    profile_by(c, &[Holds::AssumeRole, Holds::AssumeRoleFromSource])
                        .unwrap_or_else(|| Decision::skip("the profile has no role_arn to assume"))
                },
            },
            Provider {
                name: "assume-role-with-web-identity",
                vars: &["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"],
                decide: web_identity,
            },
            Provider {
                name: "sso",
                vars: &[],
                decide: |c| {
                    profile_by(c, &[Holds::Sso])
                        .unwrap_or_else(|| Decision::skip("the profile has no SSO settings"))
                },
            },
            Provider {
                name: "shared-credentials-file",
                vars: &["AWS_SHARED_CREDENTIALS_FILE"],
                decide: |c| static_keys_in(c.files.in_credentials(), "the credentials file"),
            },
            Provider {
                name: "custom-process",
                vars: &[],
                decide: |c| {
                    profile_by(c, &[Holds::Process])
                        .unwrap_or_else(|| Decision::skip("the profile has no credential_process"))
                },
            },
            Provider {
                name: "config-file",
                vars: &["AWS_CONFIG_FILE"],
                decide: |c| static_keys_in(c.files.in_config(), "the config file"),
            },
            container("container-role"),
            imds("iam-role"),
        ],
    }
}

/// botocore reads static keys from each file with a provider of its own.
fn static_keys_in(section: Option<&Section>, file: &str) -> Decision {
    match section {
        Some(s) if holds(s).contains(&Holds::StaticKeys) => Decision::use_(
            Source::Profile,
            format!("{file} has static keys for the profile"),
        ),
        _ => Decision::skip(format!("no static keys for the profile in {file}")),
    }
}

/// botocore reads each setting from the environment first, then from the profile.
fn web_identity(c: &Ctx) -> Decision {
    let profile = c.files.merged();
    let (token, source) = match c.env.get("AWS_WEB_IDENTITY_TOKEN_FILE") {
        Some(t) => (t.to_string(), Source::WebIdentity),
        None => match profile.get("web_identity_token_file") {
            Some(t) => (t.clone(), Source::ProfileWebIdentity),
            None => return Decision::skip("no web identity token file (environment or profile)"),
        },
    };
    let role = c
        .env
        .get("AWS_ROLE_ARN")
        .or(profile.get("role_arn").map(String::as_str));
    let fails = match role {
        None => Some("a token file but no role ARN: botocore raises".to_string()),
        Some(_) => c.token_file_failure(&token),
    };
    Decision::use_failing(
        source,
        "a web identity token file and role ARN: botocore calls STS AssumeRoleWithWebIdentity",
        fails,
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn web_identity_comes_before_the_credentials_file() {
        let s = setup(
            &[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/"),
                ("AWS_ROLE_ARN", "arn:r"),
                CONTAINER,
            ],
            "",
            STATIC,
        );
        // "/" exists but is no file: the model says it fails.
        assert_eq!(
            verdict(Sdk::Python, &s),
            (Some("web-identity"), true, vec![])
        );
        let s = setup(&[CONTAINER], "", STATIC);
        assert_eq!(verdict(Sdk::Python, &s), (Some("profile"), false, vec![]));
        let s = setup(&[CONTAINER, IMDS_OFF], "", "");
        assert_eq!(verdict(Sdk::Python, &s), (Some("container"), false, vec![]));
        let s = setup(&[IMDS_OFF], "", "");
        assert_eq!(verdict(Sdk::Python, &s), (None, false, vec![]));
    }
}
