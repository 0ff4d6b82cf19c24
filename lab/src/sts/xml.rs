//! The XML answers, element for element as STS writes them, every value escaped.

use std::fmt::{self, Write};

use super::error::ApiError;

pub(crate) const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// What an `AssumeRole` answer carries (the secrets only pass through here).
pub(crate) struct AssumedRole<'a> {
    pub assumed_role_arn: &'a str,
    pub assumed_role_id: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: &'a str,
    /// `2026-01-02T03:04:05Z`.
    pub expiration: String,
    pub packed_policy_size: Option<usize>,
}

impl fmt::Debug for AssumedRole<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumedRole")
            .field("assumed_role_arn", &self.assumed_role_arn)
            .field("assumed_role_id", &self.assumed_role_id)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &"** redacted **")
            .field("expiration", &self.expiration)
            .field("packed_policy_size", &self.packed_policy_size)
            .finish()
    }
}

pub(crate) fn get_caller_identity(
    arn: &str,
    user_id: &str,
    account: &str,
    request_id: &str,
) -> String {
    let mut body = String::new();
    element(&mut body, "Arn", arn);
    element(&mut body, "UserId", user_id);
    element(&mut body, "Account", account);
    response("GetCallerIdentity", &body, request_id)
}

pub(crate) fn assume_role(r: &AssumedRole<'_>, request_id: &str) -> String {
    response("AssumeRole", &assumed_role_body(r), request_id)
}

/// `<AssumedRoleUser>`, `<Credentials>` and, when present, `<PackedPolicySize>`.
fn assumed_role_body(r: &AssumedRole<'_>) -> String {
    let mut user = String::new();
    element(&mut user, "Arn", r.assumed_role_arn);
    element(&mut user, "AssumedRoleId", r.assumed_role_id);
    let mut creds = String::new();
    element(&mut creds, "AccessKeyId", r.access_key_id);
    element(&mut creds, "SecretAccessKey", r.secret_access_key);
    element(&mut creds, "SessionToken", r.session_token);
    element(&mut creds, "Expiration", &r.expiration);
    let mut body =
        format!("<AssumedRoleUser>{user}</AssumedRoleUser><Credentials>{creds}</Credentials>");
    if let Some(size) = r.packed_policy_size {
        element(&mut body, "PackedPolicySize", &size.to_string());
    }
    body
}

/// Who a web identity answer says the caller was.
pub(crate) struct WebIdentityResult<'a> {
    pub subject: &'a str,
    pub audience: &'a str,
    /// The token's `iss` (what STS reports as `Provider` for OIDC tokens).
    pub provider: &'a str,
}

/// `AssumeRoleWithWebIdentity`'s answer: `AssumeRole`'s plus who the token named.
pub(crate) fn assume_role_with_web_identity(
    r: &AssumedRole<'_>,
    who: &WebIdentityResult<'_>,
    request_id: &str,
) -> String {
    let mut body = String::new();
    element(&mut body, "SubjectFromWebIdentityToken", who.subject);
    element(&mut body, "Audience", who.audience);
    body.push_str(&assumed_role_body(r));
    element(&mut body, "Provider", who.provider);
    response("AssumeRoleWithWebIdentity", &body, request_id)
}

/// `<ErrorResponse>` as the query protocol writes it.
pub(crate) fn error(e: &ApiError, request_id: &str) -> String {
    let mut inner = String::new();
    element(&mut inner, "Type", e.fault());
    element(&mut inner, "Code", e.code);
    element(&mut inner, "Message", &e.message);
    let mut out = format!("<ErrorResponse xmlns=\"{NAMESPACE}\"><Error>{inner}</Error>");
    element(&mut out, "RequestId", request_id);
    out.push_str("</ErrorResponse>\n");
    out
}

fn response(action: &str, result: &str, request_id: &str) -> String {
    let mut meta = String::new();
    element(&mut meta, "RequestId", request_id);
    format!(
        "<{action}Response xmlns=\"{NAMESPACE}\">\n  <{action}Result>{result}</{action}Result>\n  \
         <ResponseMetadata>{meta}</ResponseMetadata>\n</{action}Response>\n"
    )
}

fn element(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(value));
}

/// Text content escaped; characters XML 1.0 cannot hold at all become U+FFFD.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let role = AssumedRole {
            assumed_role_arn: "arn:aws:sts::1:assumed-role/r/s",
            assumed_role_id: "AROA1:s",
            access_key_id: "ASIA1",
            secret_access_key: "SECRETKEY",
            session_token: "SESSIONTOKEN",
            expiration: "2026-01-02T03:04:05Z".into(),
            packed_policy_size: None,
        };
        let debug = format!("{role:?}");
        assert!(
            debug.contains("ASIA1") && debug.contains("** redacted **"),
            "{debug}"
        );
        assert!(!debug.contains("SECRETKEY") && !debug.contains("SESSIONTOKEN"));
    }

    #[test]
    fn escapes_markup_and_unrepresentable_characters() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{0}b\rc\td"), "a\u{FFFD}b&#13;c\td");
    }

    #[test]
    fn errors_have_the_query_protocol_shape() {
        let e = ApiError::access_denied("arn:aws:iam::1:user/<x>", "r");
        let xml = error(&e, "req-1");
        assert_eq!(
            xml,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
             <Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/&lt;x&gt; is not authorized to \
             perform: sts:AssumeRole on resource: r</Message></Error><RequestId>req-1</RequestId></ErrorResponse>\n"
        );
    }

    #[test]
    fn caller_identity_has_result_and_metadata() {
        let xml = get_caller_identity(
            "arn:aws:iam::111122223333:user/u",
            "AIDA1",
            "111122223333",
            "r1",
        );
        assert!(xml.starts_with(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        ));
        assert!(xml.contains("<GetCallerIdentityResult><Arn>arn:aws:iam::111122223333:user/u</Arn><UserId>AIDA1</UserId><Account>111122223333</Account></GetCallerIdentityResult>"));
        assert!(xml.contains("<ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata>"));
    }
}
