//! The AWS SDK for Go v2's default chain: not a chain at all but one decision, made when
//! `config.LoadDefaultConfig` resolves the configuration; the provider it picks is the only one
//! ever asked.
//!
//! Order: `config/resolve_credentials.go`, `resolveCredentialChain` and `resolveCredsFromProfile`,
//! `github.com/aws/aws-sdk-go-v2/config` v1.33.19 (`tests/sdk-clients/go/go.mod`): environment
//! keys, web identity from the environment (before the profile), then the profile (role with
//! source_profile, static keys, credential_source, web identity, SSO, login, credential_process),
//! then container (relative URI first), and otherwise IMDS, even when it is disabled (then it
//! fails on first use).

use super::profile::Holds;
use super::providers::{container, env_keys, profile_by};
use super::{ChainModel, Decision, OnFailure, Provider, Sdk, Source};

pub fn model() -> ChainModel {
    ChainModel {
        sdk: Sdk::Go,
        label: "Go v2 config v1.33 LoadDefaultConfig",
        on_failure: OnFailure::Stop,
        providers: vec![
            env_keys("environment (StaticCredentialsProvider)"),
            Provider {
                name: "web identity from the environment (stscreds.WebIdentityRoleProvider)",
                vars: &["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"],
                decide: |c| match c.env.get("AWS_WEB_IDENTITY_TOKEN_FILE") {
                    Some(token) => {
                        let fails = if c.env.is_set("AWS_ROLE_ARN") {
                            c.token_file_failure(token)
                        } else {
                            Some(
                                "AWS_WEB_IDENTITY_TOKEN_FILE without AWS_ROLE_ARN: Go fails".into(),
                            )
                        };
                        Decision::use_failing(
                            Source::WebIdentity,
                            "AWS_WEB_IDENTITY_TOKEN_FILE is set: Go decides for web identity before looking at the profile",
                            fails,
                        )
                    }
                    None => Decision::skip("AWS_WEB_IDENTITY_TOKEN_FILE is not set"),
                },
            },
            Provider {
                name: "shared config profile",
                vars: &[
                    "AWS_PROFILE",
                    "AWS_CONFIG_FILE",
                    "AWS_SHARED_CREDENTIALS_FILE",
                ],
                // `resolveCredsFromProfile`'s order.
                decide: |c| {
                    profile_by(
                        c,
                        &[
                            Holds::AssumeRole,
                            Holds::StaticKeys,
                            Holds::AssumeRoleFromSource,
                            Holds::WebIdentity,
                            Holds::Sso,
                            Holds::Process,
                        ],
                    )
                    .unwrap_or_else(|| Decision::skip("the profile holds no credentials"))
                },
            },
            container("container (endpointcreds)"),
            Provider {
                name: "IMDS (ec2rolecreds)",
                vars: &["AWS_EC2_METADATA_DISABLED"],
                decide: |c| {
                    let fails = c.imds_disabled().then(|| "AWS_EC2_METADATA_DISABLED=true: Go picked IMDS anyway and fails with \"access disabled to EC2 IMDS\"".to_string());
                    Decision::use_failing(
                        Source::Imds,
                        "nothing else is configured: Go falls back to IMDS",
                        fails,
                    )
                },
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn go_decides_once() {
        let s = setup(&[IMDS_OFF], "", "");
        assert_eq!(verdict(Sdk::Go, &s), (Some("imds"), true, vec![]));
        let s = setup(
            &[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/"),
                ("AWS_ROLE_ARN", "arn:r"),
            ],
            "",
            STATIC,
        );
        assert_eq!(verdict(Sdk::Go, &s).0, Some("web-identity"));
        let s = setup(&[CONTAINER], "", STATIC);
        assert_eq!(verdict(Sdk::Go, &s), (Some("profile"), false, vec![]));
    }
}
