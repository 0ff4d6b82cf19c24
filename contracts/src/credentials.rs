//! The container-credentials JSON the agent returns and every AWS SDK reads.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The 200 body of `GET /v1/credentials`, field names exactly as the SDKs expect them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(with = "expiration_format")]
    pub expiration: Timestamp,
}

/// The error body of the agent: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentErrorBody {
    pub code: String,
    pub message: String,
}

/// Formats `Expiration` as RFC 3339 in UTC with whole seconds and a `Z` suffix
/// (`2026-11-26T20:00:00Z`): the JS and Rust SDKs reject `+00:00`.
pub fn format_expiration(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

mod expiration_format {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_expiration(*ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Timestamp>().map_err(serde::de::Error::custom)
    }
}

/// The account id (fourth field) of an ARN such as
/// `arn:aws:sts::111122223333:assumed-role/role/session`, if it is twelve digits.
pub fn account_id_from_arn(arn: &str) -> Option<&str> {
    let mut fields = arn.split(':');
    if fields.next() != Some("arn") {
        return None;
    }
    let account = fields.nth(3)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

/// `ASIAEXAMPLE…`: the first eight characters of an access key id, enough to correlate.
pub fn short_access_key_id(id: &str) -> String {
    let head: String = id.chars().take(8).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_exactly_as_sdks_expect() {
        let c = ContainerCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new("secret"),
            token: Secret::new("session"),
            account_id: Some("111122223333".into()),
            expiration: Timestamp::from_second(1_795_723_200).unwrap(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret","Token":"session","AccountId":"111122223333","Expiration":"2026-11-26T20:00:00Z"}"#
        );
        let back: ContainerCredentials = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(!format!("{c:?}").contains("secret\""));
    }

    #[test]
    fn expiration_drops_subseconds_and_uses_z() {
        let ts = Timestamp::from_millisecond(1_795_723_200_999).unwrap();
        assert_eq!(format_expiration(ts), "2026-11-26T20:00:00Z");
    }

    #[test]
    fn account_id_comes_from_the_arn() {
        assert_eq!(
            account_id_from_arn("arn:aws:sts::111122223333:assumed-role/r/s"),
            Some("111122223333")
        );
        assert_eq!(
            account_id_from_arn("arn:aws:sts::1234:assumed-role/r/s"),
            None
        );
        assert_eq!(account_id_from_arn("not-an-arn"), None);
        assert_eq!(account_id_from_arn(""), None);
    }
}
