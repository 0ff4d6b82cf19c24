//! Real AWS SDKs in other languages as a pod's program: the small clients in `tests/sdk-clients/`
//! (JavaScript v3, Go v2, Java v2, the AWS CLI v1), built by `scripts/sdk-clients` into `target/sdk-clients/`
//! when missing or changed. Each resolves its SDK's default credential chain and prints one
//! [`RESULT_PREFIX`](crate::pod::RESULT_PREFIX) line without any secret, or one
//! [`ERROR_PREFIX`] line and exits 1.
//!
//! When a client's toolchain (node/npm, go, java/javac/mvn, python3) is missing, [`sdk_client`] returns
//! `None` and the test says it skipped, unless the SDK's `POD_IDENTITY_REQUIRE_*_SDK` variable is
//! set (scripts/test) or `CI=true`, where that is a failure: the botocore convention of
//! [`crate::moto`]. [`botocore_client`] is botocore's client, run by the project's interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pod::pod_environment;

/// Prefix of the line a client prints when its SDK refused to give credentials.
pub const ERROR_PREFIX: &str = "SDK_ERROR ";

/// The script that builds the clients.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/sdk-clients");

/// One SDK with a client in `tests/sdk-clients/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// `@aws-sdk/credential-providers` `fromNodeProviderChain()`.
    JavaScript,
    /// `github.com/aws/aws-sdk-go-v2/config` `LoadDefaultConfig`, then `Credentials.Retrieve`.
    Go,
    /// `software.amazon.awssdk:auth` `DefaultCredentialsProvider`.
    Java,
    /// The AWS CLI v1's session (`awscli.clidriver`), with its own copy of botocore.
    Cli,
}

impl Sdk {
    /// Its folder under `tests/sdk-clients/` and `target/sdk-clients/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Sdk::JavaScript => "javascript",
            Sdk::Go => "go",
            Sdk::Java => "java",
            Sdk::Cli => "cli",
        }
    }

    /// Set (by scripts/test) to fail instead of skip when this SDK's toolchain is missing.
    pub fn require_env(self) -> &'static str {
        match self {
            Sdk::JavaScript => "POD_IDENTITY_REQUIRE_JS_SDK",
            Sdk::Go => "POD_IDENTITY_REQUIRE_GO_SDK",
            Sdk::Java => "POD_IDENTITY_REQUIRE_JAVA_SDK",
            Sdk::Cli => "POD_IDENTITY_REQUIRE_CLI_SDK",
        }
    }
}

/// The client's `run` executable, built first if missing or changed. `None` (with a SKIPPED
/// note on stderr naming `test`) when its toolchain is missing, or a panic when
/// [`Sdk::require_env`] is set. Blocks while it builds: call it before starting servers.
pub fn sdk_client(sdk: Sdk, test: &str) -> Option<PathBuf> {
    let out = Command::new(SCRIPT)
        .arg(sdk.dir_name())
        .output()
        .expect("run scripts/sdk-clients");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        let require = sdk.require_env();
        assert!(
            !required(require),
            "the {sdk:?} SDK client is required here ({require} or CI=true is set) but cannot be built:\n{stderr}"
        );
        eprintln!("SKIPPED {test}: {}", stderr.trim());
        return None;
    }
    assert!(
        out.status.success(),
        "scripts/sdk-clients {} failed:\n{stderr}",
        sdk.dir_name()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run = stdout
        .lines()
        .find_map(|l| l.strip_prefix(sdk.dir_name())?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("scripts/sdk-clients printed no path:\n{stdout}"));
    Some(PathBuf::from(run))
}

/// `run` in a pod's environment (see [`pod_environment`]), for an async run.
pub fn pod_command(
    run: &Path,
    full_uri: &str,
    token_file: &Path,
    home: &Path,
) -> tokio::process::Command {
    let mut cmd = Command::new(run);
    pod_environment(&mut cmd, full_uri, token_file, home);
    tokio::process::Command::from(cmd)
}

/// Whether a missing client is a failure here: `require_env` is set, or this is CI.
fn required(require_env: &str) -> bool {
    std::env::var_os(require_env).is_some() || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// botocore's client (`tests/sdk-clients/cli/client.py --botocore`): the command that runs it with the
/// interpreter holding the pinned botocore (`POD_IDENTITY_PYTHON`, else the project's `.venv`,
/// else `python3`). `None`, with a SKIPPED note naming `test`, when botocore cannot be imported;
/// a panic instead when `POD_IDENTITY_REQUIRE_BOTOCORE` or `CI=true` is set.
pub fn botocore_client(test: &str) -> Option<Command> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let venv = format!("{root}/.venv/bin/python");
    let python = std::env::var(crate::moto::ENV_PYTHON).unwrap_or_else(|_| {
        if Path::new(&venv).exists() {
            venv
        } else {
            "python3".into()
        }
    });
    let ok = Command::new(&python)
        .args(["-c", "import botocore"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let require = crate::moto::ENV_REQUIRE_BOTOCORE;
        assert!(
            !required(require),
            "botocore is required here ({require} or CI=true is set) but `{python} -c 'import botocore'` failed"
        );
        eprintln!(
            "SKIPPED {test}: botocore is not installed for {python} (scripts/venv, or pip install -r scripts/requirements-test.txt)"
        );
        return None;
    }
    let mut cmd = Command::new(python);
    cmd.arg(format!("{root}/tests/sdk-clients/cli/client.py"))
        .arg("--botocore");
    Some(cmd)
}
