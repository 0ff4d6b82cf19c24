//! The AWS SDK for Java v2's default chain.
//!
//! Order: `software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider` (its private chain
//! builder), `software.amazon.awssdk:auth` 2.59.1 (`tests/sdk-clients/java/pom.xml`): system
//! properties, environment, web identity (environment), profile, container, instance profile.
//! The profile's own precedence: `internal/ProfileCredentialsUtils` (web identity, SSO, role with
//! source_profile, role with credential_source, credential_process, session keys, static keys).
//! `AwsCredentialsProviderChain` catches any provider's exception and asks the next one: a
//! provider that fails does not stop Java's chain, unlike every other SDK's.

use super::profile::Holds;
use super::providers::{container, env_keys, env_web_identity, imds, profile_by};
use super::{ChainModel, Ctx, Decision, OnFailure, Provider, Sdk, Source};

pub fn model() -> ChainModel {
    ChainModel {
        sdk: Sdk::Java,
        label: "Java v2 2.59 DefaultCredentialsProvider",
        on_failure: OnFailure::Next,
        providers: vec![
            Provider {
                name: "SystemPropertyCredentialsProvider",
                vars: &[],
                decide: |_| {
                    Decision::skip(
                        "JVM system properties aws.accessKeyId/aws.secretAccessKey: not visible from outside the JVM, assumed unset",
                    )
                },
            },
            env_keys("EnvironmentVariableCredentialsProvider"),
            env_web_identity("WebIdentityTokenFileCredentialsProvider"),
            Provider {
                name: "ProfileCredentialsProvider",
                vars: &[
                    "AWS_PROFILE",
                    "AWS_CONFIG_FILE",
                    "AWS_SHARED_CREDENTIALS_FILE",
                ],
                decide: profile,
            },
            container("ContainerCredentialsProvider"),
            imds("InstanceProfileCredentialsProvider"),
        ],
    }
}

/// `ProfileCredentialsUtils`' precedence; a profile that exists but holds nothing fails (and
/// Java goes on).
fn profile(c: &Ctx) -> Decision {
    if !c.files.exists() {
        return Decision::skip(format!("profile {:?} is in neither file", c.files.selected));
    }
    profile_by(
        c,
        &[
            Holds::WebIdentity,
            Holds::Sso,
            Holds::AssumeRole,
            Holds::AssumeRoleFromSource,
            Holds::Process,
            Holds::StaticKeys,
        ],
    )
    .unwrap_or_else(|| {
        Decision::use_failing(
            Source::Profile,
            "the profile exists",
            Some("it holds no credentials".into()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn a_failing_provider_does_not_stop_java() {
        let sso = "[default]\nsso_start_url = https://x\nsso_region = us-east-1\nsso_account_id = 1\nsso_role_name = r\n";
        let s = setup(&[CONTAINER], sso, "");
        assert_eq!(
            verdict(Sdk::Java, &s),
            (Some("container"), false, vec!["sso"])
        );
        let s = setup(&[IMDS_OFF], sso, "");
        assert_eq!(verdict(Sdk::Java, &s), (None, false, vec!["sso"]));
        let s = setup(&[CONTAINER, KEY, SECRET], "", STATIC);
        assert_eq!(verdict(Sdk::Java, &s), (Some("environment"), false, vec![]));
    }
}
