//! Who signed the request, and whether the signature is theirs.
//!
//! The check re-signs the request with `aws-sigv4`, the signer aws-sdk-sts itself uses, and
//! compares the result with the request's `Signature` in constant time. Three settings make the
//! re-signing reproduce exactly what the client signed rather than what `aws-sigv4` would choose
//! to sign:
//! - only the headers the request lists in `SignedHeaders` are handed to the signer, and its
//!   default exclusion list (`user-agent`, `x-amzn-trace-id`, …) is emptied, so the canonical
//!   headers are the client's list, no more and no less;
//! - `x-amz-date` and `x-amz-security-token` are not handed over as headers: the signer writes
//!   them itself from the request's own time and token, and signs the token only when the client
//!   did (`SessionTokenMode`);
//! - time, region and service come from the request's `X-Amz-Date` and credential scope.
//!
//! A header the client says it signed but did not send, a missing `host`, or any difference in
//! method, path, query, header values or body changes the canonical request and so the
//! signature. `aws-sigv4` logs the canonical request (session token included) at TRACE level,
//! so the re-signing runs with no tracing subscriber: no log line can carry the token.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    SessionTokenMode, SignableBody, SignableRequest, SigningSettings, sign,
};
use http::HeaderMap;
use pod_identity_contracts::Secret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::event::SignatureVerdict;
use super::identity::Caller;

/// How far `X-Amz-Date` may be from the endpoint's clock.
pub(crate) const TIME_WINDOW: Duration = Duration::from_secs(15 * 60);
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "sts";
const BASIC_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// What a signature check needs from the request.
#[derive(Clone, Copy)]
pub(crate) struct SignedRequest<'a> {
    pub method: &'a str,
    /// Path and query exactly as received.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Header names and the body's length only: `X-Amz-Security-Token` is the caller's session token.
impl fmt::Debug for SignedRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRequest")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// The result of [`authenticate`]: the verdict for the trace, the scope's access key id (even
/// when unknown or unverified), and the caller or the AWS error to answer.
#[derive(Debug)]
pub(crate) struct Authentication {
    pub verdict: SignatureVerdict,
    pub access_key_id: Option<String>,
    pub caller: Result<Caller, ApiError>,
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization<'a> {
    pub access_key_id: &'a str,
    pub scope_date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub terminator: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Identify and verify the signer of `req` at time `now`; `lookup` finds an access key's owner.
pub(crate) fn authenticate(
    req: SignedRequest<'_>,
    now: SystemTime,
    lookup: impl FnOnce(&str) -> Option<Caller>,
) -> Authentication {
    let refuse = |verdict, id: Option<&str>, error| Authentication {
        verdict,
        access_key_id: id.map(str::to_string),
        caller: Err(error),
    };
    let Some(header) = req.headers.get(http::header::AUTHORIZATION) else {
        return refuse(
            SignatureVerdict::Missing,
            None,
            ApiError::missing_authentication_token(),
        );
    };
    let auth = match header
        .to_str()
        .map_err(|_| ApiError::incomplete_signature("The Authorization header is not ASCII."))
        .and_then(parse_authorization)
    {
        Ok(auth) => auth,
        Err(e) => return refuse(SignatureVerdict::Malformed, None, e),
    };
    let id = Some(auth.access_key_id);
    let signed_at = match check_scope(&auth, req.headers) {
        Ok(t) => t,
        Err(e) => return refuse(SignatureVerdict::Malformed, id, e),
    };
    let Some(caller) = lookup(auth.access_key_id) else {
        return refuse(
            SignatureVerdict::UnknownAccessKey,
            id,
            ApiError::invalid_client_token_id(),
        );
    };
    let token = match check_token(&caller, req.headers, now) {
        Ok(token) => token,
        Err((verdict, e)) => return refuse(verdict, id, e),
    };
    if let Err(e) = check_time_window(signed_at, now) {
        return refuse(SignatureVerdict::OutsideTimeWindow, id, e);
    }
    let expected = expected_signature(
        req,
        &auth,
        caller.secret_access_key(),
        token.filter(|_| auth.signed_headers.contains(&"x-amz-security-token")),
        signed_at,
    );
    let matches = expected
        .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())));
    if !matches {
        return refuse(
            SignatureVerdict::Mismatch,
            id,
            ApiError::signature_does_not_match(),
        );
    }
    Authentication {
        verdict: SignatureVerdict::Valid,
        access_key_id: id.map(str::to_string),
        caller: Ok(caller),
    }
}

/// Split the `Authorization` header into its parts.
pub(crate) fn parse_authorization(value: &str) -> Result<Authorization<'_>, ApiError> {
    let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if algorithm != ALGORITHM {
        return Err(ApiError::incomplete_signature(format!(
            "Unsupported AWS 'algorithm': '{}'. Only '{ALGORITHM}' is supported.",
            algorithm.chars().take(40).collect::<String>()
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let missing: Vec<String> = [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
    ]
    .iter()
    .filter(|(_, missing)| *missing)
    .map(|(name, _)| format!("Authorization header requires '{name}' parameter."))
    .collect();
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(ApiError::incomplete_signature(missing.join(" ")));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, terminator] = scope[..] else {
        return Err(ApiError::incomplete_signature(
            "Credential must be <access key id>/<date>/<region>/<service>/aws4_request.",
        ));
    };
    if access_key_id.is_empty() || region.is_empty() {
        return Err(ApiError::incomplete_signature(
            "Credential must name an access key id and a region.",
        ));
    }
    let signed_headers: Vec<&str> = signed_headers.split(';').collect();
    if signed_headers.iter().any(|h| h.is_empty()) {
        return Err(ApiError::incomplete_signature(
            "SignedHeaders must be a ';'-separated list of header names.",
        ));
    }
    Ok(Authorization {
        access_key_id,
        scope_date,
        region,
        service,
        terminator,
        signed_headers,
        signature,
    })
}

/// The request time, once date, scope and signed headers are usable.
fn check_scope(auth: &Authorization<'_>, headers: &HeaderMap) -> Result<SystemTime, ApiError> {
    let date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::incomplete_signature(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        })?;
    let signed_at = parse_amz_date(date).ok_or_else(|| {
        ApiError::incomplete_signature(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'.",
            date.chars().take(40).collect::<String>()
        ))
    })?;
    if auth.scope_date != &date[..8] {
        return Err(ApiError::signature_problem(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{date}'.",
            auth.scope_date.chars().take(16).collect::<String>(),
            &date[..8]
        )));
    }
    if auth.service != SERVICE {
        return Err(ApiError::signature_problem(format!(
            "Credential should be scoped to correct service: '{SERVICE}'. "
        )));
    }
    if auth.terminator != "aws4_request" {
        return Err(ApiError::signature_problem(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'. ",
            auth.terminator.chars().take(40).collect::<String>()
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&required) {
            return Err(ApiError::signature_problem(format!(
                "'{required}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    Ok(signed_at)
}

/// The session token presented, if it is the caller's; temporary credentials must be unexpired.
fn check_token<'h>(
    caller: &Caller,
    headers: &'h HeaderMap,
    now: SystemTime,
) -> Result<Option<&'h str>, (SignatureVerdict, ApiError)> {
    let invalid = (
        SignatureVerdict::InvalidSessionToken,
        ApiError::invalid_client_token_id(),
    );
    let presented = match headers.get("x-amz-security-token") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| invalid.clone())?),
    };
    match (caller.session(), presented) {
        (None, None) => Ok(None),
        (None, Some(_)) | (Some(_), None) => Err(invalid),
        (Some(session), Some(token)) => {
            let same: bool = session
                .session_token
                .expose()
                .as_bytes()
                .ct_eq(token.as_bytes())
                .into();
            if !same {
                return Err(invalid);
            }
            if now >= session.expiration {
                return Err((SignatureVerdict::ExpiredToken, ApiError::expired_token()));
            }
            Ok(Some(token))
        }
    }
}

fn check_time_window(signed_at: SystemTime, now: SystemTime) -> Result<(), ApiError> {
    let signed = basic_format(signed_at);
    if signed_at + TIME_WINDOW < now {
        return Err(ApiError::signature_problem(format!(
            "Signature expired: {signed} is now earlier than {} ({} - 15 min.)",
            basic_format(now - TIME_WINDOW),
            basic_format(now)
        )));
    }
    if signed_at > now + TIME_WINDOW {
        return Err(ApiError::signature_problem(format!(
            "Signature not yet current: {signed} is still later than {} ({} + 15 min.)",
            basic_format(now + TIME_WINDOW),
            basic_format(now)
        )));
    }
    Ok(())
}

/// The signature the caller's secret gives for `req`, or `None` if the request cannot be signed
/// (a signed header value that is not visible ASCII, an unparsable path).
fn expected_signature(
    req: SignedRequest<'_>,
    auth: &Authorization<'_>,
    secret: &Secret,
    session_token: Option<&str>,
    signed_at: SystemTime,
) -> Option<String> {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in &auth.signed_headers {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        for value in req.headers.get_all(*name) {
            headers.push((name, value.to_str().ok()?));
        }
    }
    // Without a host value aws-sigv4 would take it from the URI, which has none (and panics).
    if !headers.iter().any(|(name, _)| *name == "host") {
        return None;
    }
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    settings.session_token_mode = if session_token.is_some() {
        SessionTokenMode::Include
    } else {
        SessionTokenMode::Exclude
    };
    let identity = aws_credential_types::Credentials::new(
        auth.access_key_id,
        secret.expose(),
        session_token.map(str::to_string),
        None,
        "lab-sts",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(signed_at)
        .settings(settings)
        .build()
        .ok()?
        .into();
    let request = SignableRequest::new(
        req.method,
        req.path_and_query,
        headers.into_iter(),
        SignableBody::Bytes(req.body),
    )
    .ok()?;
    // No subscriber while signing: aws-sigv4 traces the canonical request, token included.
    let output =
        tracing::dispatcher::with_default(&tracing::Dispatch::none(), || sign(request, &params))
            .ok()?;
    Some(output.signature().to_string())
}

/// `20240102T030405Z` → that instant; anything else → `None`.
pub(crate) fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 {
        return None;
    }
    let dt = jiff::civil::DateTime::strptime(BASIC_FORMAT, s).ok()?;
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    // Only the canonical spelling: the signer writes the time back in this exact form.
    (ts.strftime(BASIC_FORMAT).to_string() == s).then(|| SystemTime::from(ts))
}

fn basic_format(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.strftime(BASIC_FORMAT).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_header_names_only() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-security-token", "SESSIONTOKEN".parse().unwrap());
        let req = SignedRequest {
            method: "POST",
            path_and_query: "/",
            headers: &headers,
            body: b"Action=AssumeRole",
        };
        let debug = format!("{req:?}");
        assert!(debug.contains("x-amz-security-token"), "{debug}");
        assert!(
            !debug.contains("SESSIONTOKEN") && !debug.contains("Action"),
            "{debug}"
        );
    }

    #[test]
    fn parses_the_authorization_header() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/sts/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AKIDEXAMPLE");
        assert_eq!(a.scope_date, "20150830");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.service, "sts");
        assert_eq!(a.terminator, "aws4_request");
        assert_eq!(a.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert!(a.signature.starts_with("5d672d79"));
    }

    #[test]
    fn incomplete_headers_say_what_is_missing() {
        let e = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/sts/aws4_request",
        )
        .unwrap_err();
        assert_eq!(e.code, "IncompleteSignature");
        assert!(e.message.contains("'Signature'") && e.message.contains("'SignedHeaders'"));
        assert!(!e.message.contains("'Credential'"));
        for bad in [
            "",
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 Credential=A/20150830/sts/aws4_request, SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 Credential=/20150830/r/sts/aws4_request, SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/sts/aws4_request, SignedHeaders=host;;x, Signature=x",
        ] {
            assert_eq!(
                parse_authorization(bad).unwrap_err().code,
                "IncompleteSignature",
                "{bad}"
            );
        }
    }

    #[test]
    fn amz_dates_round_trip_exactly() {
        let t = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(basic_format(t), "20150830T123600Z");
        for bad in [
            "2015-08-30T12:36:00Z",
            "20150830T123600",
            "20151330T123600Z",
            "2015083OT123600Z",
            "20150830t123600z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_time_window_is_fifteen_minutes_each_way() {
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert!(check_time_window(now - TIME_WINDOW, now).is_ok());
        assert!(check_time_window(now + TIME_WINDOW, now).is_ok());
        let e = check_time_window(now - TIME_WINDOW - Duration::from_secs(1), now).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert_eq!(
            e.message,
            "Signature expired: 20150830T122059Z is now earlier than 20150830T122100Z (20150830T123600Z - 15 min.)"
        );
        let e = check_time_window(now + TIME_WINDOW + Duration::from_secs(1), now).unwrap_err();
        assert!(
            e.message
                .starts_with("Signature not yet current: 20150830T125101Z")
        );
    }
}
