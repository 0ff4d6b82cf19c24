//! The service-account issuer's OIDC documents as kube-apiserver serves them: where they are, and
//! the media types it negotiates. kube-apiserver (go-restful) answers `406 Not Acceptable` to a
//! request whose `Accept` does not admit the type a route produces, and its JWKS route produces
//! only `application/jwk-set+json` (RFC 7517), so a client that asks for `application/json` alone
//! gets no keys; the stand-in issuers negotiate the same way through [`accepts`].

/// Path of the discovery document under the issuer URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the key set on kube-apiserver (the discovery document's `jwks_uri`).
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Media type of the discovery document.
pub const DISCOVERY_MEDIA_TYPE: &str = "application/json";
/// Media type of the key set.
pub const JWKS_MEDIA_TYPE: &str = "application/jwk-set+json";
/// The `Accept` a client sends for either document: both types, the key set's first.
pub const ACCEPT: &str = "application/jwk-set+json, application/json";

/// Whether an `Accept` header admits `media_type`: absent or empty admits anything; otherwise one
/// of its comma-separated ranges (parameters such as `;q=0.9` ignored) must be `*/*`, `type/*`
/// or the type itself, compared without regard to case.
pub fn accepts(accept: Option<&str>, media_type: &str) -> bool {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return true;
    };
    let main_type = media_type.split('/').next().unwrap_or_default();
    accept.split(',').any(|range| {
        let range = range.split(';').next().unwrap_or_default().trim();
        range == "*/*"
            || range.eq_ignore_ascii_case(media_type)
            || range
                .strip_suffix("/*")
                .is_some_and(|t| t.eq_ignore_ascii_case(main_type))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_as_kube_apiserver_does() {
        assert!(!accepts(Some("application/json"), JWKS_MEDIA_TYPE));
        assert!(accepts(Some(ACCEPT), JWKS_MEDIA_TYPE));
        assert!(accepts(Some(ACCEPT), DISCOVERY_MEDIA_TYPE));
        for admits in [
            None,
            Some(""),
            Some("*/*"),
            Some("application/*"),
            Some("text/html, application/JWK-SET+json;q=0.5"),
        ] {
            assert!(accepts(admits, JWKS_MEDIA_TYPE), "{admits:?}");
        }
        assert!(!accepts(Some("text/*"), JWKS_MEDIA_TYPE));
        assert!(!accepts(Some("application/jwk+json"), JWKS_MEDIA_TYPE));
    }
}
