//! Providers that several SDKs have in the same shape, and the profile decision every SDK makes
//! with its own precedence ([`profile_by`]).

use super::profile::{Holds, holds};
use super::{Ctx, Decision, Provider, Source};

/// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`.
pub fn env_keys(name: &'static str) -> Provider {
    Provider {
        name,
        vars: &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        decide: env_keys_decision,
    }
}

pub fn env_keys_decision(c: &Ctx) -> Decision {
    if c.env_keys() {
        Decision::use_(
            Source::Environment,
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set",
        )
    } else {
        Decision::skip("no keys in the environment")
    }
}

/// Web identity from `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, both required.
pub fn env_web_identity(name: &'static str) -> Provider {
    Provider {
        name,
        vars: &["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"],
        decide: |c| match (
            c.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            c.env.get("AWS_ROLE_ARN"),
        ) {
            (Some(token), Some(_)) => Decision::use_failing(
                Source::WebIdentity,
                "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are set: STS AssumeRoleWithWebIdentity",
                c.token_file_failure(token),
            ),
            _ => Decision::skip("AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not both set"),
        },
    }
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`: Pod Identity's provider.
pub fn container(name: &'static str) -> Provider {
    Provider {
        name,
        vars: &[
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ],
        decide: |c| {
            if c.container() {
                Decision::use_(Source::Container, "a container credentials URI is set")
            } else {
                Decision::skip("no container credentials URI")
            }
        },
    }
}

/// IMDS, not asked when `AWS_EC2_METADATA_DISABLED=true` (the chain then ends without credentials).
pub fn imds(name: &'static str) -> Provider {
    Provider {
        name,
        vars: &["AWS_EC2_METADATA_DISABLED"],
        decide: |c| {
            if c.imds_disabled() {
                Decision::skip(
                    "AWS_EC2_METADATA_DISABLED=true: IMDS is not asked, and the chain ends without credentials",
                )
            } else {
                Decision::use_(Source::Imds, "IMDS is enabled: the node's role")
            }
        },
    }
}

/// What the profile (both files merged) gives, taking the first of `order` it holds; `None` when
/// it holds none of them.
pub fn profile_by(c: &Ctx, order: &[Holds]) -> Option<Decision> {
    let section = c.files.merged();
    let held = holds(&section);
    let first = order.iter().copied().find(|h| held.contains(h))?;
    Some(match first {
        Holds::StaticKeys => Decision::use_(Source::Profile, "the profile has static keys"),
        Holds::AssumeRole => Decision::use_(
            Source::AssumeRole,
            "the profile has role_arn with source_profile: STS AssumeRole",
        ),
        Holds::AssumeRoleFromSource => Decision::use_(
            Source::AssumeRole,
            "the profile has role_arn with credential_source: STS AssumeRole",
        ),
        Holds::WebIdentity => Decision::use_failing(
            Source::ProfileWebIdentity,
            "the profile has web_identity_token_file and role_arn: STS AssumeRoleWithWebIdentity",
            section
                .get("web_identity_token_file")
                .and_then(|t| c.token_file_failure(t)),
        ),
        Holds::Sso => {
            Decision::use_failing(Source::Sso, "the profile has SSO settings", c.sso_failure())
        }
        Holds::Process => Decision::use_(Source::Process, "the profile has credential_process"),
    })
}
