//! The AWS SDK for JavaScript v3's default chain (`fromNodeProviderChain()`).
//!
//! Order: `@aws-sdk/credential-provider-node/dist-cjs/index.js`, `defaultProvider`, in
//! `@aws-sdk/credential-providers` 3.1175.0 (`tests/sdk-clients/javascript/package-lock.json`):
//! fromEnv (skipped whenever AWS_PROFILE is set), fromSSO (skipped: no SSO inputs were given),
//! fromIni, fromProcess, fromTokenFile (web identity from the environment), then the container
//! provider if a URI is set, else IMDS. The profile's own precedence:
//! `@aws-sdk/credential-provider-ini/dist-cjs/index.js`, `resolveProfileData` (role, static keys,
//! web identity, credential_process, SSO). The chain goes on only past errors marked
//! `tryNextLink`; a provider that took over and fails stops it.

use super::profile::Holds;
use super::providers::{env_keys_decision, env_web_identity, profile_by};
use super::{ChainModel, Ctx, Decision, OnFailure, Provider, Sdk, Source};

pub fn model() -> ChainModel {
    ChainModel {
        sdk: Sdk::JavaScript,
        label: "JavaScript v3 3.1175 fromNodeProviderChain",
        on_failure: OnFailure::Stop,
        providers: vec![
            Provider {
                name: "fromEnv",
                vars: &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"],
                decide: |c| {
                    if c.env.is_set("AWS_PROFILE") {
                        Decision::skip(
                            "AWS_PROFILE is set: JavaScript skips the environment's keys and goes to the profile",
                        )
                    } else {
                        env_keys_decision(c)
                    }
                },
            },
            Provider {
                name: "fromSSO",
                vars: &[],
                decide: |_| {
                    Decision::skip(
                        "skipped in the default chain (no SSO inputs given to it); an SSO profile is read by fromIni",
                    )
                },
            },
            Provider {
                name: "fromIni",
                vars: &[
                    "AWS_PROFILE",
                    "AWS_CONFIG_FILE",
                    "AWS_SHARED_CREDENTIALS_FILE",
                ],
                decide: ini,
            },
            Provider {
                name: "fromProcess",
                vars: &[],
                decide: |_| {
                    Decision::skip("a credential_process profile was already taken by fromIni")
                },
            },
            env_web_identity("fromTokenFile"),
            Provider {
                name: "remoteProvider (fromHttp, fromContainerMetadata, fromInstanceMetadata)",
                vars: &[
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_EC2_METADATA_DISABLED",
                ],
                decide: |c| {
                    if c.container() {
                        Decision::use_(Source::Container, "a container credentials URI is set")
                    } else if c.imds_disabled() {
                        Decision::skip(
                            "no container URI and AWS_EC2_METADATA_DISABLED=true: no credentials",
                        )
                    } else {
                        Decision::use_(
                            Source::Imds,
                            "no container URI and IMDS is enabled: the node's role",
                        )
                    }
                },
            },
        ],
    }
}

/// `resolveProfileData`'s precedence; a profile that holds nothing passes to the next provider.
fn ini(c: &Ctx) -> Decision {
    if !c.files.exists() {
        return Decision::skip(format!("profile {:?} is in neither file", c.files.selected));
    }
    profile_by(
        c,
        &[
            Holds::AssumeRole,
            Holds::AssumeRoleFromSource,
            Holds::StaticKeys,
            Holds::WebIdentity,
            Holds::Process,
            Holds::Sso,
        ],
    )
    .unwrap_or_else(|| Decision::skip("the profile holds no credentials"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn aws_profile_hides_the_environment_keys() {
        let app = "[app]\naws_access_key_id = A\naws_secret_access_key = s\n";
        let s = setup(&[KEY, SECRET, ("AWS_PROFILE", "app"), CONTAINER], "", app);
        assert_eq!(
            verdict(Sdk::JavaScript, &s),
            (Some("profile"), false, vec![])
        );
        let s = setup(&[KEY, SECRET, CONTAINER], "", app);
        assert_eq!(
            verdict(Sdk::JavaScript, &s),
            (Some("environment"), false, vec![])
        );
    }
}
