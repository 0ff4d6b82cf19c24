//! The container step in detail, the one EKS Pod Identity uses: the URI and whether SDKs accept
//! it, the token file and its (unverified) claims, and one exchange with the agent.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use pod_identity_contracts::claims::UnverifiedToken;
use pod_identity_contracts::constants::{ENV_FULL_URI, ENV_TOKEN_FILE};
use pod_identity_contracts::credentials::short_access_key_id;
use serde::Serialize;

use crate::environment::Environment;

/// Container-credential details for the report. Never holds a token or a secret.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ContainerDetails {
    pub uri: Option<String>,
    /// Whether the Rust SDK (aws-config) accepts this URI.
    pub rust_sdk_accepts: Option<bool>,
    /// Whether botocore accepts it (it also allows `localhost`).
    pub botocore_accepts: Option<bool>,
    pub uri_note: Option<String>,
    pub token_file: Option<TokenFile>,
    pub exchange: Option<Exchange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenFile {
    pub path: String,
    pub exists: bool,
    pub mode: Option<String>,
    pub bytes: Option<u64>,
    /// SDKs reject a token with a trailing newline.
    pub trailing_newline: bool,
    pub claims: Option<Claims>,
    pub problem: Option<String>,
}

/// Claims as read without verification, for display.
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub iss: String,
    pub aud: Vec<String>,
    pub sub: String,
    pub pod: Option<String>,
    pub node: Option<String>,
    pub expires_in_seconds: i64,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub access_key_id: Option<String>,
    pub expiration: Option<String>,
    pub error: Option<String>,
}

/// Hosts the SDKs accept over plain http, besides loopback addresses.
const ALLOWED_HTTP_HOSTS: &[&str] = &["169.254.170.2", "169.254.170.23", "fd00:ec2::23"];

/// Whether an http(s) container URI's host is one the SDKs accept: `(rust, botocore, note)`.
pub fn host_acceptance(uri: &str) -> (bool, bool, Option<String>) {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return (false, false, Some("not a URL".into()));
    };
    if scheme == "https" {
        return (true, true, None);
    }
    if scheme != "http" {
        return (
            false,
            false,
            Some(format!("scheme {scheme} is not http(s)")),
        );
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    match host.parse::<IpAddr>() {
        Ok(ip) => {
            let ok = ip.is_loopback() || ALLOWED_HTTP_HOSTS.contains(&ip.to_string().as_str());
            let note = (!ok).then(|| {
                format!("http to {ip} is refused by the SDKs: only loopback, 169.254.170.2, 169.254.170.23 and fd00:ec2::23 are allowed without TLS")
            });
            (ok, ok, note)
        }
        Err(_) if host == "localhost" => (
            true,
            true,
            Some("the Rust SDK resolves `localhost` and accepts it only if every address is loopback; botocore accepts it by name".into()),
        ),
        Err(_) => (
            false,
            false,
            Some(format!("http to the name {host:?}: SDKs resolve it and accept it only if every address is allowed")),
        ),
    }
}

/// Gather the details (one GET to the agent when a URI and token are there).
pub async fn inspect(env: &Environment, now_epoch: i64) -> ContainerDetails {
    let mut details = ContainerDetails::default();
    let uri = env.get(ENV_FULL_URI).map(str::to_string).or_else(|| {
        env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|rel| format!("http://169.254.170.2{rel}"))
    });
    if let Some(uri) = &uri {
        let (rust, boto, note) = host_acceptance(uri);
        details.rust_sdk_accepts = Some(rust);
        details.botocore_accepts = Some(boto);
        details.uri_note = note;
    }
    details.uri = uri.clone();
    let token = match env.get(ENV_TOKEN_FILE) {
        Some(path) => {
            let (file, token) = read_token_file(path, now_epoch);
            details.token_file = Some(file);
            token
        }
        None => None,
    };
    if let (Some(uri), Some(token)) = (uri, token) {
        details.exchange = Some(exchange(&uri, &token).await);
    }
    details
}

fn read_token_file(path: &str, now_epoch: i64) -> (TokenFile, Option<String>) {
    let mut file = TokenFile {
        path: path.to_string(),
        exists: false,
        mode: None,
        bytes: None,
        trailing_newline: false,
        claims: None,
        problem: None,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            file.problem = Some(format!("cannot stat the token file: {e}"));
            return (file, None);
        }
    };
    file.exists = true;
    file.mode = Some(format!("{:04o}", meta.permissions().mode() & 0o7777));
    file.bytes = Some(meta.len());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            file.problem = Some(format!("cannot read the token file: {e}"));
            return (file, None);
        }
    };
    file.trailing_newline = text.ends_with('\n');
    if file.trailing_newline {
        file.problem =
            Some("the token ends with a newline: the SDKs will refuse to send it".into());
    }
    match UnverifiedToken::parse(&text) {
        Ok(t) => {
            let c = &t.claims;
            file.claims = Some(Claims {
                iss: c.iss.clone(),
                aud: c.aud.as_vec().into_iter().map(str::to_string).collect(),
                sub: c.sub.clone(),
                pod: c.pod().map(|p| p.name.clone()),
                node: c.node().map(|n| n.name.clone()),
                expires_in_seconds: c.exp - now_epoch,
                fingerprint: pod_identity_contracts::fingerprint(text.trim().as_bytes()),
            });
        }
        Err(e) => file.problem = Some(format!("the token file does not hold a JWT: {e}")),
    }
    (file, Some(text.trim().to_string()))
}

async fn exchange(uri: &str, token: &str) -> Exchange {
    let started = Instant::now();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return Exchange {
                status: None,
                latency_ms: 0.0,
                access_key_id: None,
                expiration: None,
                error: Some(e.to_string()),
            };
        }
    };
    let result = client.get(uri).header("Authorization", token).send().await;
    let mut ex = Exchange {
        status: None,
        latency_ms: 0.0,
        access_key_id: None,
        expiration: None,
        error: None,
    };
    match result {
        Ok(resp) => {
            ex.status = Some(resp.status().as_u16());
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            ex.latency_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
            if let Some(id) = body["AccessKeyId"].as_str() {
                ex.access_key_id = Some(short_access_key_id(id));
                ex.expiration = body["Expiration"].as_str().map(str::to_string);
            } else {
                ex.error = Some(format!(
                    "{}: {}",
                    body["code"].as_str().unwrap_or("error"),
                    body["message"].as_str().unwrap_or("no message")
                ));
            }
        }
        Err(e) => {
            ex.latency_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
            ex.error = Some(format!("cannot reach the agent: {e}"));
        }
    }
    ex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_host_rules() {
        assert!(host_acceptance("http://169.254.170.23/v1/credentials").0);
        assert!(host_acceptance("http://[fd00:ec2::23]/v1/credentials").0);
        assert!(host_acceptance("http://127.0.0.1:8080/v1/credentials").0);
        assert!(host_acceptance("http://[::1]:8080/x").0);
        assert_eq!(
            host_acceptance("https://anything.example/x"),
            (true, true, None)
        );
        let (rust, boto, note) = host_acceptance("http://10.0.0.5/v1/credentials");
        assert!(!rust && !boto && note.unwrap().contains("refused"));
        let (rust, boto, note) = host_acceptance("http://localhost:80/x");
        assert!(rust && boto && note.unwrap().contains("resolves"));
        assert!(!host_acceptance("ftp://x").0);
    }
}
