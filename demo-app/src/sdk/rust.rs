//! Which source the Rust SDK's profile step used, named as the other SDKs' models name theirs.
//! demo-app walks aws-config's real providers; this only names the profile's kind of credentials,
//! by aws-config's own precedence: `aws-config/src/profile/credentials/repr.rs`, `resolve_chain`
//! and `base_provider` (aws-config 1.8.13, `Cargo.lock`): role_arn (chained from
//! source_profile/credential_source), web identity, SSO, credential_process, static keys.

use super::Source;
use super::profile::{Holds, ProfileFiles, holds};

/// The source the selected profile gives aws-config, if any.
pub fn profile_source(files: &ProfileFiles) -> Option<Source> {
    let h = holds(&files.merged());
    [
        (Holds::AssumeRole, Source::AssumeRole),
        (Holds::AssumeRoleFromSource, Source::AssumeRole),
        (Holds::WebIdentity, Source::ProfileWebIdentity),
        (Holds::Sso, Source::Sso),
        (Holds::Process, Source::Process),
        (Holds::StaticKeys, Source::Profile),
    ]
    .into_iter()
    .find_map(|(held, source)| h.contains(&held).then_some(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_before_static_keys() {
        let files = ProfileFiles::parse(
            "[default]\nrole_arn = arn:r\nsource_profile = base\naws_access_key_id = A\naws_secret_access_key = s\n",
            "",
        );
        assert_eq!(profile_source(&files), Some(Source::AssumeRole));
        assert_eq!(profile_source(&ProfileFiles::parse("", "")), None);
    }
}
