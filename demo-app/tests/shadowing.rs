//! The shadowing table: for every SDK and every case, the real SDK's default chain runs in the
//! case's environment and demo-app's `--json --sdk <sdk>` answer must name the same source (and
//! agree on whether it fails).
//!
//! Every source a chain can reach is on loopback and answers with an access key id that names
//! it (test-support's `credential_sources`: container endpoint, IMDS, and STS, whose keys name
//! the role asked for), and each file or variable holds keys of its own, so the key the real SDK
//! returns says which source won. Where the SDK fails instead, its error says which provider
//! failed (SSO without a cached token; Go's IMDS when disabled). Nothing reaches AWS:
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_STS` and `AWS_EC2_METADATA_SERVICE_ENDPOINT` all point
//! at the loopback server. The Rust SDK runs as this test binary's child (aws-config's default
//! chain); the others are the clients of `tests/sdk-clients` (botocore with the project's
//! interpreter). A client whose toolchain is missing skips with a note, or fails where required
//! (`POD_IDENTITY_REQUIRE_*`, `CI=true`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pod_identity_test_support::TokenBuilder;
use pod_identity_test_support::credential_sources::{
    CONTAINER_ACCESS_KEY_ID, CredentialSources, IMDS_ACCESS_KEY_ID, SOURCE_SECRET,
    SOURCE_SESSION_TOKEN, sts_access_key_id,
};
use pod_identity_test_support::pod::RESULT_PREFIX;
use pod_identity_test_support::sdk_clients::{ERROR_PREFIX, Sdk, botocore_client, sdk_client};
use serde_json::Value;

const CHILD_FLAG: &str = "DEMO_APP_SHADOWING_RUST_CHILD";
const SECRET: &str = "SHADOWINGSECRET000000000000000000000000000";

// One access key id per place keys can be written, so the returned key names the winner.
const ENV_KEY: &str = "AKIAENVIRONMENT00000";
const CREDENTIALS_FILE_KEY: &str = "AKIACREDENTIALSFILE0";
const CONFIG_FILE_KEY: &str = "AKIACONFIGFILE000000";
const APP_PROFILE_KEY: &str = "AKIAAPPPROFILE000000";
const BASE_PROFILE_KEY: &str = "AKIABASEPROFILE00000";
const PROCESS_KEY: &str = "AKIAPROCESSSOURCE000";
const PROFILE_ROLE: &str = "arn:aws:iam::111122223333:role/profile-role";
const ENV_WEB_IDENTITY_ROLE: &str = "arn:aws:iam::111122223333:role/env-web-identity";
const PROFILE_WEB_IDENTITY_ROLE: &str = "arn:aws:iam::111122223333:role/profile-web-identity";

/// What a case puts in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`.
    EnvKeys,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (IRSA).
    WebIdentity,
    /// The same, but the token file is not there (a leftover IRSA setting).
    WebIdentityNoToken,
    /// What the webhook injects: the container URI and the token file.
    Container,
    /// IMDS left enabled (at the loopback server); every other case disables it.
    Imds,
    /// `AWS_PROFILE=app`.
    ProfileApp,
}

/// One row: variables, the config file, the credentials file (`{dir}` is the case's directory).
struct Case {
    name: &'static str,
    vars: &'static [Var],
    config: &'static str,
    credentials: &'static str,
}

const CREDENTIALS_DEFAULT: &str = "[default]\naws_access_key_id = AKIACREDENTIALSFILE0\naws_secret_access_key = SHADOWINGSECRET000000000000000000000000000\n";
const CONFIG_KEYS: &str = "[default]\naws_access_key_id = AKIACONFIGFILE000000\naws_secret_access_key = SHADOWINGSECRET000000000000000000000000000\n";
const CONFIG_ROLE: &str = "[default]\nrole_arn = arn:aws:iam::111122223333:role/profile-role\nsource_profile = base\nrole_session_name = shadowing\n";
const CREDENTIALS_BASE: &str = "[base]\naws_access_key_id = AKIABASEPROFILE00000\naws_secret_access_key = SHADOWINGSECRET000000000000000000000000000\n";
const CONFIG_PROCESS: &str = "[default]\ncredential_process = {dir}/process.sh\n";
const CONFIG_WEB_IDENTITY: &str = "[default]\nweb_identity_token_file = {dir}/token\nrole_arn = arn:aws:iam::111122223333:role/profile-web-identity\nrole_session_name = shadowing\n";
const CONFIG_SSO: &str = "[default]\nsso_start_url = https://shadowing.awsapps.com/start\nsso_region = us-west-2\nsso_account_id = 111122223333\nsso_role_name = shadowing\n";
const CONFIG_SSO_SESSION: &str = "[default]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = shadowing\n[sso-session corp]\nsso_start_url = https://shadowing.awsapps.com/start\nsso_region = us-west-2\nsso_registration_scopes = sso:account:access\n";
const CREDENTIALS_APP: &str = "[app]\naws_access_key_id = AKIAAPPPROFILE000000\naws_secret_access_key = SHADOWINGSECRET000000000000000000000000000\n";

use Var::*;

const CASES: &[Case] = &[
    Case {
        name: "nothing (IMDS disabled)",
        vars: &[],
        config: "",
        credentials: "",
    },
    Case {
        name: "IMDS",
        vars: &[Imds],
        config: "",
        credentials: "",
    },
    Case {
        name: "container",
        vars: &[Container],
        config: "",
        credentials: "",
    },
    Case {
        name: "container + IMDS",
        vars: &[Container, Imds],
        config: "",
        credentials: "",
    },
    Case {
        name: "env keys + container",
        vars: &[EnvKeys, Container],
        config: "",
        credentials: "",
    },
    Case {
        name: "credentials file + container",
        vars: &[Container],
        config: "",
        credentials: CREDENTIALS_DEFAULT,
    },
    Case {
        name: "config file keys + container",
        vars: &[Container],
        config: CONFIG_KEYS,
        credentials: "",
    },
    Case {
        name: "role_arn+source_profile + container",
        vars: &[Container],
        config: CONFIG_ROLE,
        credentials: CREDENTIALS_BASE,
    },
    Case {
        name: "credential_process + container",
        vars: &[Container],
        config: CONFIG_PROCESS,
        credentials: "",
    },
    Case {
        name: "web identity (env) + container",
        vars: &[WebIdentity, Container],
        config: "",
        credentials: "",
    },
    Case {
        name: "web identity (profile) + container",
        vars: &[Container],
        config: CONFIG_WEB_IDENTITY,
        credentials: "",
    },
    Case {
        name: "SSO profile + container",
        vars: &[Container],
        config: CONFIG_SSO,
        credentials: "",
    },
    Case {
        name: "sso-session profile + container",
        vars: &[Container],
        config: CONFIG_SSO_SESSION,
        credentials: "",
    },
    Case {
        name: "SSO profile alone",
        vars: &[],
        config: CONFIG_SSO,
        credentials: "",
    },
    Case {
        name: "env keys + credentials file",
        vars: &[EnvKeys],
        config: "",
        credentials: CREDENTIALS_DEFAULT,
    },
    Case {
        name: "AWS_PROFILE + env keys + container",
        vars: &[ProfileApp, EnvKeys, Container],
        config: "",
        credentials: CREDENTIALS_APP,
    },
    Case {
        name: "web identity (env) + credentials file",
        vars: &[WebIdentity],
        config: "",
        credentials: CREDENTIALS_DEFAULT,
    },
    Case {
        name: "web identity (env) + role profile",
        vars: &[WebIdentity],
        config: CONFIG_ROLE,
        credentials: CREDENTIALS_BASE,
    },
    Case {
        name: "web identity (env) + IMDS",
        vars: &[WebIdentity, Imds],
        config: "",
        credentials: "",
    },
    Case {
        name: "credential_process + credentials file",
        vars: &[],
        config: CONFIG_PROCESS,
        credentials: CREDENTIALS_DEFAULT,
    },
    Case {
        name: "SSO profile + web identity (env)",
        vars: &[WebIdentity],
        config: CONFIG_SSO,
        credentials: "",
    },
    Case {
        name: "web identity (env, token file missing) + container",
        vars: &[WebIdentityNoToken, Container],
        config: "",
        credentials: "",
    },
    Case {
        name: "web identity (env, token file missing) + credentials file",
        vars: &[WebIdentityNoToken],
        config: "",
        credentials: CREDENTIALS_DEFAULT,
    },
];

/// What a chain came to, in demo-app's source names: credentials from a source, or an error
/// (naming the source whose provider failed, when it is one a test can tell).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Credentials(String),
    Fails(Option<String>),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Credentials(s) => write!(f, "{s}"),
            Answer::Fails(Some(s)) => write!(f, "{s} fails"),
            Answer::Fails(None) => write!(f, "no credentials"),
        }
    }
}

/// The source a returned key names.
fn source_of_key(key: &str) -> String {
    let known = [
        (ENV_KEY.to_string(), "environment"),
        (CREDENTIALS_FILE_KEY.to_string(), "profile"),
        (CONFIG_FILE_KEY.to_string(), "profile"),
        (APP_PROFILE_KEY.to_string(), "profile"),
        (BASE_PROFILE_KEY.to_string(), "source-profile-without-role"),
        (PROCESS_KEY.to_string(), "process"),
        (sts_access_key_id(PROFILE_ROLE), "assume-role"),
        (sts_access_key_id(ENV_WEB_IDENTITY_ROLE), "web-identity"),
        (
            sts_access_key_id(PROFILE_WEB_IDENTITY_ROLE),
            "profile-web-identity",
        ),
        (CONTAINER_ACCESS_KEY_ID.to_string(), "container"),
        (IMDS_ACCESS_KEY_ID.to_string(), "imds"),
    ];
    known
        .iter()
        .find(|(k, _)| k == key)
        .map_or_else(|| format!("unknown key {key}"), |(_, s)| s.to_string())
}

/// The failing provider an SDK's error names, where a test can tell.
fn source_of_error(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    // Each SDK's words for a missing SSO token (botocore also names its picked `method sso`).
    let sso = ["sso token", "sso session", "sso/cache", "method sso"];
    if sso.iter().any(|m| lower.contains(m)) {
        Some("sso".into())
    } else if lower.contains("no-such-token") || lower.contains("no such file or directory") {
        // (aws-config's error does not name the missing token file; the others' do.)
        Some("web-identity".into())
    } else if lower.contains("access disabled to ec2 imds") {
        Some("imds".into())
    } else {
        None
    }
}

/// The answer in a client's output (its result or error line).
fn real_answer(stdout: &str, stderr: &str) -> Answer {
    for line in stdout.lines() {
        // (The Rust child's line follows libtest's `test ... ` on the same line.)
        if let Some((_, json)) = line.split_once(RESULT_PREFIX) {
            let v: Value = serde_json::from_str(json).expect("result line is JSON");
            return Answer::Credentials(source_of_key(v["access_key_id"].as_str().unwrap_or("")));
        }
        if let Some((_, json)) = line.split_once(ERROR_PREFIX) {
            let v: Value = serde_json::from_str(json).expect("error line is JSON");
            let mut message = v["message"].as_str().unwrap_or("").to_string();
            if let Some(method) = v["method"].as_str() {
                // botocore names the lazy provider it picked even when it then failed.
                message.push_str(&format!(" (method {method})"));
            }
            return Answer::Fails(source_of_error(&message));
        }
    }
    panic!("no result or error line:\n{stdout}\n{stderr}");
}

/// demo-app's answer from its `--json` report.
fn demo_answer(report: &Value) -> Answer {
    let source = report["source"].as_str().map(str::to_string);
    if report["source_fails"] == true {
        return Answer::Fails(source);
    }
    if let Some(s) = source {
        return Answer::Credentials(s);
    }
    // No source: the chain found nothing, or (Java) every provider that took over failed and the
    // chain went on; the error then names those.
    let failed: Vec<String> = report["failed_over"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .filter(|s| s == "sso" || s == "web-identity")
        .collect();
    Answer::Fails(failed.into_iter().next())
}

/// The case's directory: its files, the token files, the credential_process script.
fn prepare(dir: &Path, case: &Case) {
    let fill = |text: &str| text.replace("{dir}", &dir.display().to_string());
    std::fs::write(dir.join("config"), fill(case.config)).unwrap();
    std::fs::write(dir.join("credentials"), fill(case.credentials)).unwrap();
    std::fs::write(
        dir.join("token"),
        TokenBuilder::new().audience("sts.amazonaws.com").sign(),
    )
    .unwrap();
    std::fs::write(dir.join("pod-token"), TokenBuilder::new().sign()).unwrap();
    let script = dir.join("process.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho '{{\"Version\": 1, \"AccessKeyId\": \"{PROCESS_KEY}\", \"SecretAccessKey\": \"{SECRET}\"}}'\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The case's environment, on a command cleared of everything else.
fn environment(cmd: &mut Command, dir: &Path, case: &Case, sources: &CredentialSources) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .env("AWS_REGION", "us-west-2")
        .env("AWS_DEFAULT_REGION", "us-west-2")
        .env("AWS_ENDPOINT_URL", sources.url())
        .env("AWS_ENDPOINT_URL_STS", sources.url())
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", sources.url())
        .env("AWS_MAX_ATTEMPTS", "1");
    if !case.vars.contains(&Imds) {
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    }
    for var in case.vars {
        match var {
            EnvKeys => {
                cmd.env("AWS_ACCESS_KEY_ID", ENV_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET);
            }
            WebIdentity => {
                cmd.env("AWS_WEB_IDENTITY_TOKEN_FILE", dir.join("token"))
                    .env("AWS_ROLE_ARN", ENV_WEB_IDENTITY_ROLE)
                    .env("AWS_ROLE_SESSION_NAME", "shadowing");
            }
            WebIdentityNoToken => {
                cmd.env("AWS_WEB_IDENTITY_TOKEN_FILE", dir.join("no-such-token"))
                    .env("AWS_ROLE_ARN", ENV_WEB_IDENTITY_ROLE)
                    .env("AWS_ROLE_SESSION_NAME", "shadowing");
            }
            Container => {
                cmd.env(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    sources.container_url(),
                )
                .env(
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    dir.join("pod-token"),
                );
            }
            Imds => {}
            ProfileApp => {
                cmd.env("AWS_PROFILE", "app");
            }
        }
    }
}

async fn output(mut cmd: Command) -> std::process::Output {
    let mut cmd = tokio::process::Command::from(std::mem::replace(&mut cmd, Command::new("true")));
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the client finished within 60 s")
        .expect("the client ran")
}

/// Run every case with `client` (a command for the real SDK) and demo-app `--sdk sdk`; fail with
/// the whole table when any row disagrees.
async fn table(sdk: &str, client: impl Fn() -> Command, extra: &[(&str, &str)]) {
    let sources = CredentialSources::start().await;
    let mut rows = Vec::new();
    let mut mismatches = 0;
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), case);

        let mut real = client();
        environment(&mut real, dir.path(), case, &sources);
        real.envs(extra.iter().copied());
        let out = output(real).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        for secret in [SECRET, SOURCE_SECRET, SOURCE_SESSION_TOKEN] {
            assert!(
                !stdout.contains(secret),
                "a secret in the {sdk} client's output:\n{stdout}"
            );
        }
        let real = real_answer(&stdout, &stderr);

        let mut demo = Command::new(env!("CARGO_BIN_EXE_demo-app"));
        demo.args(["--json", "--sdk", sdk]);
        environment(&mut demo, dir.path(), case, &sources);
        let out = output(demo).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for secret in [SECRET, SOURCE_SECRET, SOURCE_SESSION_TOKEN] {
            assert!(
                !text.contains(secret),
                "a secret in demo-app's report:\n{text}"
            );
        }
        let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "demo-app --json is not JSON ({e}):\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(report["sdk"], sdk, "{report:#}");
        let demo = demo_answer(&report);
        let agree = demo == real;
        if std::env::var_os("SHADOWING_VERBOSE").is_some() {
            eprintln!("=== {sdk} / {}: {}", case.name, stdout.trim());
        }
        if !agree {
            mismatches += 1;
            eprintln!(
                "--- {sdk} / {}: the real SDK said:\n{stdout}{stderr}\ndemo-app said:\n{report:#}",
                case.name
            );
        }
        rows.push(format!(
            "{:<45} real: {:<28} demo-app: {:<28} {}",
            case.name,
            real.to_string(),
            demo.to_string(),
            if agree { "ok" } else { "DIFFERS" }
        ));
    }
    eprintln!("{sdk}:\n{}", rows.join("\n"));
    assert_eq!(
        mismatches,
        0,
        "demo-app --sdk {sdk} disagrees with the real SDK:\n{}",
        rows.join("\n")
    );
}

/// The Rust SDK's side: aws-config's default chain in this process's environment. Started as a
/// child by `rust_sdk`; ignored otherwise.
#[tokio::test]
#[ignore = "started as a child process by rust_sdk"]
async fn rust_sdk_child() {
    if std::env::var_os(CHILD_FLAG).is_none() {
        return;
    }
    use aws_credential_types::provider::ProvideCredentials;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    match config
        .credentials_provider()
        .expect("a default chain")
        .provide_credentials()
        .await
    {
        Ok(c) => println!(
            "{RESULT_PREFIX}{}",
            serde_json::json!({"access_key_id": c.access_key_id()})
        ),
        Err(e) => println!(
            "{ERROR_PREFIX}{}",
            serde_json::json!({"message": aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()})
        ),
    }
}

#[tokio::test]
async fn rust_sdk() {
    table(
        "rust",
        || {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "rust_sdk_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]);
            cmd
        },
        &[(CHILD_FLAG, "1")],
    )
    .await;
}

#[tokio::test]
async fn python_botocore() {
    let Some(_) = botocore_client("python_botocore") else {
        return;
    };
    table(
        "python",
        || botocore_client("python_botocore").unwrap(),
        &[],
    )
    .await;
}

#[tokio::test]
async fn javascript() {
    let Some(run) = sdk_client(Sdk::JavaScript, "javascript") else {
        return;
    };
    table("javascript", || Command::new(&run), &[]).await;
}

#[tokio::test]
async fn go() {
    let Some(run) = sdk_client(Sdk::Go, "go") else {
        return;
    };
    table("go", || Command::new(&run), &[]).await;
}

#[tokio::test]
async fn java() {
    let Some(run) = sdk_client(Sdk::Java, "java") else {
        return;
    };
    table("java", || Command::new(&run), &[]).await;
}
