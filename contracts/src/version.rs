//! The product's release and the git revision it was built from: what every binary answers to
//! `version` and `--version`, logs when it starts, and its image carries as OCI labels.
//!
//! The revision comes from `POD_IDENTITY_GIT_REVISION` at build time (`.ci/run`,
//! `scripts/images` and the Dockerfile set it from git). A build without it says `unknown`, so an
//! ordinary `cargo build` does not rebuild every crate after each commit.

use std::sync::OnceLock;

/// The release (the workspace's version).
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = match option_env!("POD_IDENTITY_GIT_REVISION") {
    Some(r) if !r.is_empty() => r,
    _ => "unknown",
};

/// `0.1.0 (revision 1a2b3c4d5e6f)`, for `--version` and `version`.
pub fn long() -> &'static str {
    static LONG: OnceLock<String> = OnceLock::new();
    LONG.get_or_init(|| format!("{RELEASE} (revision {REVISION})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_release_and_revision() {
        assert!(long().starts_with(RELEASE), "{}", long());
        assert!(long().ends_with(&format!("(revision {REVISION})")));
        assert!(!REVISION.is_empty());
    }
}
