//! The request's parameters: the query string and the form body, `application/x-www-form-urlencoded`
//! decoded strictly. A `%` not followed by two hex digits, or bytes that are not UTF-8 once
//! decoded, make the request `MalformedQueryString` rather than being guessed at.

use std::collections::HashMap;

use super::error::ApiError;

/// Decoded parameters; the first occurrence of a name wins.
#[derive(Debug, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// The query string (if any) then the body.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let body = std::str::from_utf8(body)
            .map_err(|_| ApiError::malformed_query_string("the body is not UTF-8"))?;
        let mut params = Self::default();
        for source in [query.unwrap_or(""), body] {
            for pair in source.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let name = decode(name)?;
                if name.is_empty() {
                    return Err(ApiError::malformed_query_string("a parameter has no name"));
                }
                let value = decode(value)?;
                params.0.entry(name).or_insert(value);
            }
        }
        Ok(params)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `Prefix.member.1`, `Prefix.member.2`, … up to the first missing index.
    pub fn members(&self, prefix: &str) -> Vec<&str> {
        (1..)
            .map_while(|i| self.get(&format!("{prefix}.member.{i}")))
            .collect()
    }
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::malformed_query_string("'%' is not followed by two hex digits")
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::malformed_query_string("a decoded parameter is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_and_query_first_wins() {
        let p = Params::parse(
            Some("Action=GetCallerIdentity"),
            b"Action=AssumeRole&RoleSessionName=a%2Bb+c&Empty=&Flag&&Tags.member.1.Key=k",
        )
        .unwrap();
        assert_eq!(p.get("Action"), Some("GetCallerIdentity"));
        assert_eq!(p.get("RoleSessionName"), Some("a+b c"));
        assert_eq!(p.get("Empty"), Some(""));
        assert_eq!(p.get("Flag"), Some(""));
        assert_eq!(p.get("Tags.member.1.Key"), Some("k"));
        assert_eq!(p.get("Missing"), None);
    }

    #[test]
    fn members_stop_at_the_first_gap() {
        let p = Params::parse(None, b"K.member.1=a&K.member.2=b&K.member.4=d").unwrap();
        assert_eq!(p.members("K"), ["a", "b"]);
        assert!(p.members("Other").is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_decode_exactly() {
        for bad in [
            &b"Action=%zz"[..],
            b"Action=%+1",
            b"Action=%4",
            b"Action=%",
            b"=value",
            b"Action=%FF%FE",
            b"Action=\xff",
        ] {
            let e = Params::parse(None, bad).unwrap_err();
            assert_eq!(e.code, "MalformedQueryString", "{bad:?}");
        }
    }
}
