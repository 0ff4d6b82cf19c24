//! moto's server as the real STS peer in tests, and the Python interpreters the tests drive.
//!
//! [`Moto::start`] runs `<python> -m moto.server -H 127.0.0.1 -p 0` with request recording on,
//! waits for the port it prints, and reads back every request it received
//! ([`Moto::calls`]: action, form parameters, the signing access key), so tests assert on
//! exactly what was sent to STS: session name, tags, policy, the chained hop, or that nothing
//! was sent at all.
//!
//! The interpreter is `POD_IDENTITY_PYTHON` (scripts/test points it at its venv) or `python3`.
//! When moto is missing, [`Moto::start`] returns `None` and the test says it skipped, unless
//! `POD_IDENTITY_REQUIRE_MOTO` is set (scripts/test), where that is a failure.

use std::collections::BTreeMap;
use std::fmt;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use pod_identity_contracts::Secret;
use serde_json::Value;

use crate::process::{ChildGuard, LogCapture};

/// Env var naming the interpreter with the test requirements.
pub const ENV_PYTHON: &str = "POD_IDENTITY_PYTHON";
/// Set (by scripts/test) to fail instead of skip when moto is missing.
pub const ENV_REQUIRE_MOTO: &str = "POD_IDENTITY_REQUIRE_MOTO";
/// Set (by scripts/test) to fail instead of skip when botocore/boto3 is missing.
pub const ENV_REQUIRE_BOTOCORE: &str = "POD_IDENTITY_REQUIRE_BOTOCORE";

/// Access key id the tests give the process that talks to moto (eks-auth's own identity).
pub const CALLER_ACCESS_KEY_ID: &str = "AKIDEKSAUTHEXAMPLE01";
/// Its secret (moto does not check signatures).
pub const CALLER_SECRET_ACCESS_KEY: &str = "EKSAUTHSECRETKEYEXAMPLE0000000000000000";
/// The account moto answers GetCallerIdentity with for unknown keys.
pub const MOTO_DEFAULT_ACCOUNT: &str = "123456789012";

/// `POD_IDENTITY_PYTHON` or `python3`, if `import <module>` works with it. Otherwise `None`
/// (with a SKIPPED note on stderr naming `test`), or a panic when `require_env` is set.
pub fn python_with(module: &str, require_env: &str, test: &str) -> Option<String> {
    let python = std::env::var(ENV_PYTHON).unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os(require_env).is_none(),
        "{module} is required here ({require_env} is set) but `{python} -c 'import {module}'` failed"
    );
    eprintln!(
        "SKIPPED {test}: python module {module} is not installed (pip install -r scripts/requirements-test.txt)"
    );
    None
}

/// One request moto received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MotoCall {
    /// `Action` of the query protocol (`AssumeRole`, `GetCallerIdentity`, ...).
    pub action: String,
    /// Every form parameter, decoded (`RoleArn`, `Tags.member.1.Key`, ...).
    pub params: BTreeMap<String, String>,
    /// The access key id in the SigV4 `Authorization` header.
    pub access_key_id: Option<String>,
    /// The `X-Amz-Security-Token` header: the session token the caller signed with, if any
    /// (for a chained hop, that of the first hop's credentials, which no answer shows).
    pub security_token: Option<Secret>,
}

impl MotoCall {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// `Tags.member.N.Key/Value` as (key, value) pairs, in order.
    pub fn tags(&self) -> Vec<(String, String)> {
        (1..)
            .map_while(|i| {
                let k = self.params.get(&format!("Tags.member.{i}.Key"))?;
                let v = self.params.get(&format!("Tags.member.{i}.Value"))?;
                Some((k.clone(), v.clone()))
            })
            .collect()
    }

    /// `TransitiveTagKeys.member.N`, in order.
    pub fn transitive_tag_keys(&self) -> Vec<String> {
        (1..)
            .map_while(|i| {
                self.params
                    .get(&format!("TransitiveTagKeys.member.{i}"))
                    .cloned()
            })
            .collect()
    }
}

/// A running moto server. Stopped on drop.
pub struct Moto {
    url: String,
    child: ChildGuard,
    stderr: LogCapture,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl fmt::Debug for Moto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moto")
            .field("url", &self.url)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Moto {
    /// Start moto, or `None` if it is not installed (see the module docs). `test` names the
    /// calling test for the SKIPPED note.
    pub async fn start(test: &str) -> Option<Self> {
        let python = python_with("moto.server", ENV_REQUIRE_MOTO, test)?;
        Some(Self::start_with(&python).await)
    }

    /// Start moto with this interpreter, which must have moto installed.
    pub async fn start_with(python: &str) -> Self {
        let dir = tempfile::tempdir().expect("moto: temp dir");
        let mut cmd = Command::new(python);
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .current_dir(dir.path())
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", dir.path().join("recording.jsonl"))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        let mut child = ChildGuard::new(cmd.spawn().expect("spawn moto server"));
        let stderr = child.capture_stderr();
        let _stdout = child.capture_stdout();
        let line = stderr
            .wait_for_line(
                |l| l.contains("Running on http://127.0.0.1:"),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("moto did not start: {e}"));
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .expect("moto printed its URL")
            .trim_end_matches('/')
            .to_string();
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client");
        let moto = Self {
            url,
            child,
            stderr,
            _dir: dir,
            client,
        };
        let started = moto
            .client
            .post(format!("{}/moto-api/recorder/start-recording", moto.url))
            .send()
            .await
            .expect("moto: start recording");
        assert!(started.status().is_success(), "moto: start recording");
        moto
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give an STS client.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// moto's own log lines (one per request, werkzeug format).
    pub fn log(&self) -> &LogCapture {
        &self.stderr
    }

    /// Every API request moto received so far, in order.
    pub async fn calls(&self) -> Vec<MotoCall> {
        let resp = self
            .client
            .get(format!("{}/moto-api/recorder/download-recording", self.url))
            .send()
            .await
            .expect("moto: download recording");
        let text = resp.text().await.expect("moto: recording body");
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|entry| call_of(&entry))
            .collect()
    }

    /// The `AssumeRole` requests so far.
    pub async fn assume_role_calls(&self) -> Vec<MotoCall> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| c.action == "AssumeRole")
            .collect()
    }
}

fn call_of(entry: &Value) -> Option<MotoCall> {
    let body = entry["body"].as_str().unwrap_or_default();
    let body = if entry["body_encoded"].as_bool() == Some(true) {
        String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(body)
                .ok()?,
        )
        .into_owned()
    } else {
        body.to_string()
    };
    let params = form_params(&body);
    let action = params.get("Action")?.clone();
    let header = |name: &str| {
        entry["headers"].as_object().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
        })
    };
    let access_key_id = header("authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|rest| rest.split('/').next())
        .map(str::to_string);
    Some(MotoCall {
        action,
        params,
        access_key_id,
        security_token: header("x-amz-security-token").map(Secret::new),
    })
}

/// An `application/x-www-form-urlencoded` body's parameters: `+` is a space, `%XX` a byte, and
/// a `%` that starts no escape is kept.
fn form_params(body: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        let params = form_params("k=a%3Ab+c%2F&pct=100%&bad=%zz&multi=%C3%A9%");
        assert_eq!(params["k"], "a:b c/");
        assert_eq!(params["pct"], "100%");
        assert_eq!(params["bad"], "%zz");
        assert_eq!(params["multi"], "é%");
    }

    #[tokio::test]
    async fn starts_moto_and_records_what_it_received() {
        let Some(moto) = Moto::start("starts_moto_and_records_what_it_received").await else {
            return;
        };
        assert!(moto.url().starts_with("http://127.0.0.1:"));
        assert!(moto.calls().await.is_empty());
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(moto.url())
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00",
            )
            .body("Action=GetCallerIdentity&Version=2011-06-15")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains(MOTO_DEFAULT_ACCOUNT));
        let calls = moto.calls().await;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].action, "GetCallerIdentity");
        assert_eq!(calls[0].access_key_id.as_deref(), Some("AKIDTEST"));
        assert!(moto.assume_role_calls().await.is_empty());
    }

    #[test]
    fn parses_a_recorded_request() {
        let body = base64::engine::general_purpose::STANDARD.encode(
            "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fr&Tags.member.1.Key=k&Tags.member.1.Value=v&TransitiveTagKeys.member.1=k",
        );
        let entry = serde_json::json!({
            "headers": {
                "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00",
                "X-Amz-Security-Token": "session-of-the-caller",
            },
            "body": body, "body_encoded": true,
        });
        let call = call_of(&entry).unwrap();
        assert_eq!(call.action, "AssumeRole");
        assert_eq!(
            call.param("RoleArn"),
            Some("arn:aws:iam::111122223333:role/r")
        );
        assert_eq!(call.tags(), [("k".to_string(), "v".to_string())]);
        assert_eq!(call.transitive_tag_keys(), ["k"]);
        assert_eq!(call.access_key_id.as_deref(), Some("AKID"));
        assert_eq!(
            call.security_token.as_ref().map(Secret::expose),
            Some("session-of-the-caller")
        );
    }
}
