//! A pod's side in tests: a child process whose environment holds only what the webhook injects,
//! the token file the kubelet writes, and the one result line the pod programs print.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pod_identity_contracts::constants::{ENV_FULL_URI, ENV_TOKEN_FILE};
use serde_json::Value;

/// Prefix of the line a pod program prints its (secret-free) result on.
pub const RESULT_PREFIX: &str = "SDK_RESULT ";

/// Clear every `AWS_*` variable and give `cmd` a pod's environment: the two injected variables,
/// a region (as EKS sets), no IMDS, and no profile files (paths under `home`, which need not
/// exist). Wrap in `tokio::process::Command::from` for an async run.
pub fn pod_environment(cmd: &mut Command, full_uri: &str, token_file: &Path, home: &Path) {
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_DEFAULT_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env(ENV_FULL_URI, full_uri)
        .env(ENV_TOKEN_FILE, token_file);
}

/// Write `token` as `<dir>/eks-pod-identity-token`, without a trailing newline, as the kubelet
/// does (the SDKs refuse one).
pub fn write_token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("eks-pod-identity-token");
    std::fs::write(&path, token).expect("write the token file");
    path
}

/// The JSON a pod program printed after [`RESULT_PREFIX`]; panics with both streams when the
/// program failed or printed no result.
pub fn sdk_result(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the pod program failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .unwrap_or_else(|| panic!("no {RESULT_PREFIX}line in:\n{stdout}"));
    serde_json::from_str(line).expect("the result line is JSON")
}

/// The JSON a pod program printed after `prefix` when it failed (an SDK's refusal), as
/// [`sdk_result`] does for success; panics with both streams when it succeeded or printed no
/// such line.
pub fn sdk_failure(out: &Output, prefix: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the pod program succeeded where it should fail:\n{stdout}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}line in:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).expect("the error line is JSON")
}
