//! Every remote credential source a default chain may ask, on one loopback port, each answering
//! with an access key id that names it, so a test knows which source an SDK's chain used from
//! the key it returned.
//!
//! - the container endpoint (`GET /v1/credentials`, the format the agent serves):
//!   [`CONTAINER_ACCESS_KEY_ID`];
//! - IMDSv2 (`PUT /latest/api/token`, then `/latest/meta-data/iam/security-credentials[-extended]/`
//!   and the role under it): [`IMDS_ACCESS_KEY_ID`];
//! - STS (`POST /`, the query protocol): `AssumeRole` and `AssumeRoleWithWebIdentity` answer
//!   credentials whose key is [`sts_access_key_id`] of the role's name, so which profile or
//!   variable held the role shows in the key. Every STS call is recorded ([`StsCall`]).
//!
//! Point `AWS_CONTAINER_CREDENTIALS_FULL_URI` at [`CredentialSources::container_url`],
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` at [`CredentialSources::url`] and `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT_URL_STS` at it too: nothing a chain asks then leaves loopback. Secrets it hands
//! out are fixed, fake and never checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use crate::lock;

/// The key the container endpoint hands out.
pub const CONTAINER_ACCESS_KEY_ID: &str = "ASIACONTAINERSOURCE0";
/// The key IMDS hands out.
pub const IMDS_ACCESS_KEY_ID: &str = "ASIAIMDSSOURCE000000";
/// The secret every source hands out (fake; tests check it never reaches output).
pub const SOURCE_SECRET: &str = "FAKESOURCESECRET0000000000000000000000000";
/// The session token every source hands out.
pub const SOURCE_SESSION_TOKEN: &str = "FAKESOURCESESSIONTOKEN";
/// The IMDS role name.
const IMDS_ROLE: &str = "node-role";

/// The access key id STS answers for a role: `ASIA` and the role name's letters and digits,
/// upper-cased (`arn:aws:iam::1:role/env-web-identity` → `ASIAENVWEBIDENTITY`).
pub fn sts_access_key_id(role_arn: &str) -> String {
    let name = role_arn.rsplit('/').next().unwrap_or_default();
    let tag: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    format!("ASIA{tag}")
}

/// One STS call: its action and the role it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsCall {
    pub action: String,
    pub role_arn: String,
}

#[derive(Debug, Default)]
struct Seen {
    sts: Vec<StsCall>,
    container: usize,
    imds: usize,
}

/// The running server; dropped, it stops.
#[derive(Debug)]
pub struct CredentialSources {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl CredentialSources {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new().fallback(answer).with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen, task }
    }

    /// `http://127.0.0.1:<port>`: the IMDS and STS endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The container credentials URI.
    pub fn container_url(&self) -> String {
        format!("http://{}/v1/credentials", self.addr)
    }

    /// Every STS call so far.
    pub fn sts_calls(&self) -> Vec<StsCall> {
        lock(&self.seen).sts.clone()
    }

    /// Container endpoint requests so far.
    pub fn container_requests(&self) -> usize {
        lock(&self.seen).container
    }

    /// IMDS credential requests so far.
    pub fn imds_requests(&self) -> usize {
        lock(&self.seen).imds
    }
}

impl Drop for CredentialSources {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Credentials expiring in six hours, in the container / IMDS JSON format.
fn credentials_json(access_key_id: &str, imds: bool) -> String {
    let now = jiff::Timestamp::now();
    let expiration = now + jiff::SignedDuration::from_hours(6);
    let mut body = serde_json::json!({
        "AccessKeyId": access_key_id,
        "SecretAccessKey": SOURCE_SECRET,
        "Token": SOURCE_SESSION_TOKEN,
        "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    if imds {
        body["Code"] = "Success".into();
        body["Type"] = "AWS-HMAC".into();
        body["LastUpdated"] = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into();
    } else {
        body["AccountId"] = "111122223333".into();
    }
    body.to_string()
}

async fn answer(
    State(seen): State<Arc<Mutex<Seen>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let json = |text: String| ([(header::CONTENT_TYPE, "application/json")], text).into_response();
    if path == "/v1/credentials" {
        lock(&seen).container += 1;
        return json(credentials_json(CONTAINER_ACCESS_KEY_ID, false));
    }
    if path == "/latest/api/token" && method == Method::PUT {
        return (
            [("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
            "fake-imds-token",
        )
            .into_response();
    }
    for prefix in [
        "/latest/meta-data/iam/security-credentials-extended/",
        "/latest/meta-data/iam/security-credentials/",
    ] {
        if let Some(role) = path.strip_prefix(prefix) {
            if role.is_empty() {
                return IMDS_ROLE.into_response();
            }
            lock(&seen).imds += 1;
            return json(credentials_json(IMDS_ACCESS_KEY_ID, true));
        }
    }
    if method == Method::POST && path == "/" {
        let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let action = form.get("Action").cloned().unwrap_or_default();
        let role_arn = form.get("RoleArn").cloned().unwrap_or_default();
        lock(&seen).sts.push(StsCall {
            action: action.clone(),
            role_arn: role_arn.clone(),
        });
        if action == "AssumeRole" || action == "AssumeRoleWithWebIdentity" {
            return (
                [(header::CONTENT_TYPE, "text/xml")],
                sts_xml(&action, &role_arn),
            )
                .into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        format!("no fake source at {method} {path}"),
    )
        .into_response()
}

fn sts_xml(action: &str, role_arn: &str) -> String {
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let key = sts_access_key_id(role_arn);
    let role = role_arn.rsplit('/').next().unwrap_or_default();
    let extra = if action == "AssumeRoleWithWebIdentity" {
        "<SubjectFromWebIdentityToken>system:serviceaccount:default:app</SubjectFromWebIdentityToken>"
    } else {
        ""
    };
    format!(
        r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    {extra}
    <Credentials>
      <AccessKeyId>{key}</AccessKeyId>
      <SecretAccessKey>{SOURCE_SECRET}</SecretAccessKey>
      <SessionToken>{SOURCE_SESSION_TOKEN}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::111122223333:assumed-role/{role}/session</Arn>
      <AssumedRoleId>AROAFAKEROLEID:session</AssumedRoleId>
    </AssumedRoleUser>
  </{action}Result>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</{action}Response>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_the_role() {
        assert_eq!(
            sts_access_key_id("arn:aws:iam::111122223333:role/env-web-identity"),
            "ASIAENVWEBIDENTITY"
        );
    }
}
