//! What the agent checks before it spends an upstream call: the Host the pod used, and the token's
//! presence, shape and time validity. Pure functions of the request head, so every refusal is
//! unit-tested here and the server only maps them to responses.

use std::fmt;
use std::net::IpAddr;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HOST};
use pod_identity_contracts::claims::{ServiceAccountClaims, TokenError, UnverifiedToken};
use pod_identity_contracts::secret::{digest, fingerprint_of_digest};

/// A request refused by the agent itself, before any upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The refused token's fingerprint, for the audit line, when there was a token to refuse.
    pub fingerprint: Option<String>,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fingerprint: None,
        }
    }
}

/// The Host must name one of the addresses the agent serves on. A request that reaches the agent
/// under another name (the node IP through hostNetwork, a DNS rebinding page in a browser on the
/// node, `localhost` from another process) is refused with 403.
pub fn check_host(
    uri_host: Option<&str>,
    headers: &HeaderMap,
    bind_hosts: &[IpAddr],
) -> Result<(), Refusal> {
    let raw = match uri_host {
        Some(h) => Some(h),
        None => headers.get(HOST).and_then(|v| v.to_str().ok()),
    };
    let Some(raw) = raw else {
        return Err(Refusal::new(
            403,
            "AccessDenied",
            "Access Denied. The request has no Host header; call the agent at http://169.254.170.23/v1/credentials or http://[fd00:ec2::23]/v1/credentials",
        ));
    };
    if host_ip(raw).is_some_and(|ip| bind_hosts.contains(&ip)) {
        return Ok(());
    }
    let shown: String = raw.chars().take(64).filter(|c| !c.is_control()).collect();
    Err(Refusal::new(
        403,
        "AccessDenied",
        format!(
            "Access Denied. Called agent through invalid address {shown:?}; use {}",
            bind_hosts
                .iter()
                .map(|ip| match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                })
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    ))
}

/// The IP a Host value names: `1.2.3.4`, `1.2.3.4:80`, `[fd00:ec2::23]`, `[fd00:ec2::23]:80`.
/// Names are never resolved: a name is not an address the agent serves on.
fn host_ip(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if is_port(port) => h,
        _ => raw,
    };
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The raw token from `Authorization`, used verbatim as the SDKs send it.
pub fn token_from_headers(headers: &HeaderMap) -> Result<&str, Refusal> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(Refusal::new(
            400,
            "MissingToken",
            "Service account token cannot be empty: send the projected token in the Authorization header",
        ));
    };
    let token = value.to_str().map_err(|_| {
        Refusal::new(
            400,
            "InvalidToken",
            "Service account token cannot be parsed: the Authorization header is not visible ASCII",
        )
    })?;
    if token.trim().is_empty() {
        return Err(Refusal::new(
            400,
            "MissingToken",
            "Service account token cannot be empty: send the projected token in the Authorization header",
        ));
    }
    Ok(token)
}

/// Parse without verifying, then check time validity (no leeway, as the official agent) and that
/// it is a pod's service-account token.
pub fn parse_token(token: &str, now_epoch: i64) -> Result<UnverifiedToken, Refusal> {
    let parsed = UnverifiedToken::parse(token).map_err(refusal_for)?;
    parsed
        .claims
        .check_time(now_epoch, 0)
        .map_err(refusal_for)?;
    parsed.claims.check_structure().map_err(refusal_for)?;
    Ok(parsed)
}

/// A token that passed every check the agent makes itself, with the digest it is cached under.
#[derive(Debug, Clone)]
pub struct CheckedToken<'a> {
    /// The `Authorization` value, trimmed: the bytes cached and sent upstream.
    pub raw: &'a str,
    /// SHA-256 of `raw`, the cache key.
    pub key: [u8; 32],
    /// What logs show for it ([`fingerprint_of_digest`] of `key`).
    pub fingerprint: String,
    pub claims: ServiceAccountClaims,
}

/// The checks on the token of a request whose Host passed and whose token the cache does not
/// know: present ([`token_from_headers`]), then [`parse_token`] at `now_epoch`. A pure function of
/// the request head and the clock (the fuzz target `agent_request` drives it). A refusal of a
/// token that was there carries its fingerprint.
pub fn check_token(headers: &HeaderMap, now_epoch: i64) -> Result<CheckedToken<'_>, Refusal> {
    let raw = token_from_headers(headers)?.trim();
    // The bytes the cache's `get_known` is given: the header is visible ASCII, where `trim` and
    // `trim_ascii` agree.
    let key = digest(raw.as_bytes());
    let fingerprint = fingerprint_of_digest(&key);
    match parse_token(raw, now_epoch) {
        Ok(parsed) => Ok(CheckedToken {
            raw,
            key,
            fingerprint,
            claims: parsed.claims,
        }),
        Err(mut refusal) => {
            refusal.fingerprint = Some(fingerprint);
            Err(refusal)
        }
    }
}

/// What every log line about a token says: its fingerprint, namespace, service account, pod name
/// and pod uid. Taken from the claims once, when the token is validated, and kept in its cache
/// entry, so a cache hit logs them without parsing the token again. One allocation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenLabels {
    text: Box<str>,
    /// Where each of the first four parts ends in `text`.
    ends: [u32; 4],
}

impl TokenLabels {
    pub fn new(
        fingerprint: &str,
        namespace: &str,
        service_account: &str,
        pod: &str,
        pod_uid: &str,
    ) -> Self {
        let parts = [fingerprint, namespace, service_account, pod, pod_uid];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 4];
        for (i, part) in parts.into_iter().enumerate() {
            text.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                // A token is at most a few KiB, far below u32::MAX.
                *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
            }
        }
        Self {
            text: text.into_boxed_str(),
            ends,
        }
    }

    /// The labels of a token with this fingerprint and these (validated) claims.
    pub fn of(fingerprint: &str, claims: &ServiceAccountClaims) -> Self {
        let (namespace, service_account) = claims.subject().unwrap_or_default();
        let (pod, pod_uid) = claims
            .pod()
            .map(|p| (p.name.as_str(), p.uid.as_str()))
            .unwrap_or_default();
        Self::new(fingerprint, namespace, service_account, pod, pod_uid)
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| e as usize);
        self.text.get(start..end).unwrap_or("")
    }

    /// `sha256:` and 12 hex digits ([`pod_identity_contracts::secret::fingerprint_of_digest`]).
    pub fn fingerprint(&self) -> &str {
        self.part(0)
    }

    pub fn namespace(&self) -> &str {
        self.part(1)
    }

    pub fn service_account(&self) -> &str {
        self.part(2)
    }

    pub fn pod(&self) -> &str {
        self.part(3)
    }

    pub fn pod_uid(&self) -> &str {
        self.part(4)
    }
}

impl fmt::Debug for TokenLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenLabels")
            .field("fingerprint", &self.fingerprint())
            .field("namespace", &self.namespace())
            .field("service_account", &self.service_account())
            .field("pod", &self.pod())
            .field("pod_uid", &self.pod_uid())
            .finish()
    }
}

fn refusal_for(err: TokenError) -> Refusal {
    let code = match &err {
        TokenError::Missing => "MissingToken",
        TokenError::Expired { .. } => "ExpiredToken",
        TokenError::NotYetValid { .. } => "TokenNotYetValid",
        _ => "InvalidToken",
    };
    let prefix = match &err {
        TokenError::Expired { .. } | TokenError::NotYetValid { .. } => {
            "Service account token failed basic claim validations"
        }
        _ => "Service account token cannot be parsed",
    };
    Refusal::new(400, code, format!("{prefix}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hosts() -> Vec<IpAddr> {
        vec![
            "169.254.170.23".parse().unwrap(),
            "fd00:ec2::23".parse().unwrap(),
        ]
    }

    fn with_host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn host_must_name_a_bind_host() {
        for ok in [
            "169.254.170.23",
            "169.254.170.23:80",
            "[fd00:ec2::23]",
            "[fd00:ec2::23]:80",
            "[FD00:EC2::23]",
            "[fd00:ec2:0:0:0:0:0:23]",
        ] {
            check_host(None, &with_host(ok), &hosts()).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        }
        for bad in [
            "127.0.0.1",
            "localhost",
            "169.254.170.2",
            "10.0.0.7:80",
            "169.254.170.23.nip.io",
            "[fd00:ec2::23]x",
            "fd00:ec2::23",
            "169.254.170.23:80:80",
            "",
        ] {
            let err = check_host(None, &with_host(bad), &hosts()).unwrap_err();
            assert_eq!(err.status, 403, "{bad}");
            assert!(
                err.message.contains("169.254.170.23 or [fd00:ec2::23]"),
                "{}",
                err.message
            );
        }
        assert_eq!(
            check_host(None, &HeaderMap::new(), &hosts())
                .unwrap_err()
                .status,
            403
        );
        // An absolute-form request target wins over the header, as in HTTP/1.1.
        check_host(Some("169.254.170.23"), &with_host("evil"), &hosts()).unwrap();
        assert!(check_host(Some("evil"), &with_host("169.254.170.23"), &hosts()).is_err());
    }

    #[test]
    fn refusal_message_does_not_echo_control_characters_or_long_hosts() {
        let long = "a".repeat(500);
        let err = check_host(None, &with_host(&long), &hosts()).unwrap_err();
        assert!(err.message.len() < 250, "{}", err.message);
    }

    #[test]
    fn token_header_must_be_present_and_non_empty() {
        assert_eq!(
            token_from_headers(&HeaderMap::new()).unwrap_err().code,
            "MissingToken"
        );
        let mut m = HeaderMap::new();
        m.insert(AUTHORIZATION, HeaderValue::from_static("   "));
        assert_eq!(token_from_headers(&m).unwrap_err().code, "MissingToken");
        m.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"tok\xffen").unwrap(),
        );
        assert_eq!(token_from_headers(&m).unwrap_err().code, "InvalidToken");
        m.insert(AUTHORIZATION, HeaderValue::from_static("a.b.c"));
        assert_eq!(token_from_headers(&m).unwrap(), "a.b.c");
    }

    #[test]
    fn token_labels_keep_each_part_apart() {
        let l = TokenLabels::new("sha256:0123456789ab", "ns", "sa", "web-0", "uid-1");
        assert_eq!(
            (
                l.fingerprint(),
                l.namespace(),
                l.service_account(),
                l.pod(),
                l.pod_uid()
            ),
            ("sha256:0123456789ab", "ns", "sa", "web-0", "uid-1")
        );
        let empty = TokenLabels::new("sha256:0123456789ab", "", "", "", "");
        assert_eq!((empty.namespace(), empty.pod_uid()), ("", ""));
        assert_eq!(TokenLabels::default().fingerprint(), "");
        assert!(format!("{l:?}").contains("pod: \"web-0\""));
    }

    #[test]
    fn check_token_fingerprints_what_it_refuses() {
        assert_eq!(
            check_token(&HeaderMap::new(), 0).unwrap_err().fingerprint,
            None
        );
        let mut m = HeaderMap::new();
        m.insert(AUTHORIZATION, HeaderValue::from_static("  not-a-jwt "));
        let err = check_token(&m, 0).unwrap_err();
        assert_eq!((err.status, err.code), (400, "InvalidToken"));
        assert_eq!(
            err.fingerprint.as_deref(),
            Some(pod_identity_contracts::secret::fingerprint(b"not-a-jwt").as_str()),
            "the fingerprint of the trimmed token, the bytes the cache keys"
        );
        let token = pod_identity_test_support::tokens::TokenBuilder::new().sign();
        m.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!(" {token}\t")).unwrap(),
        );
        let ok = check_token(&m, pod_identity_test_support::tokens::now()).unwrap();
        assert_eq!(ok.raw, token);
        assert_eq!(ok.key, digest(token.as_bytes()));
        assert_eq!(
            ok.fingerprint,
            pod_identity_contracts::secret::fingerprint(token.as_bytes())
        );
        assert_eq!(ok.claims.subject().unwrap(), ("default", "s3-reader"));
    }

    #[test]
    fn token_refusals_are_400_with_a_code() {
        let err = parse_token("not-a-jwt", 0).unwrap_err();
        assert_eq!((err.status, err.code), (400, "InvalidToken"));
        assert!(
            err.message
                .starts_with("Service account token cannot be parsed")
        );
    }
}
