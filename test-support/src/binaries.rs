//! This workspace's binaries, for tests that run them across crates.
//!
//! `cargo test --workspace --no-run` runs once per test process and reports every executable,
//! so a test never runs a stale binary. It is the build `cargo nextest run --workspace` (and
//! `cargo test --workspace`) already did, with the same feature unification (dev-dependencies
//! included), so under the test command it is a no-op. `cargo build --workspace --bins` was not:
//! without dev-dependencies it unifies features differently, rebuilt much of the dependency tree
//! and relinked every binary, which took longer than a test may run on a fresh CI machine. A
//! per-package build would be worse still (a different unification per package).
//! It runs with the environment of the shell, not the one cargo gives a test (see below).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

fn built() -> &'static HashMap<String, String> {
    static BINS: OnceLock<HashMap<String, String>> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // Run cargo as the shell that started the tests did: without the variables cargo sets
        // for a test process (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts such as
        // ring's declare `rerun-if-env-changed` on them, so inheriting them made this inner
        // build rebuild ring and everything above it, and replace the running test binary.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let set_for_tests = key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || key.starts_with("CARGO_CFG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("NEXTEST")
                || matches!(
                    key,
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                );
            if set_for_tests {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["test", "--workspace", "--no-run", "--message-format=json"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo test --workspace --no-run");
        assert!(
            out.status.success(),
            "cargo test --workspace --no-run failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact")
            // The binaries themselves, not their unit-test harnesses.
            .filter(|v| v["profile"]["test"] == false)
            .filter(|v| {
                v["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
            .filter_map(|v| {
                let name = v["target"]["name"].as_str()?.to_string();
                let exe = v["executable"].as_str()?.to_string();
                Some((name, exe))
            })
            .collect()
    })
}

/// Path of the workspace binary `name` (e.g. `pod-identity-agent`, `eks-auth`), freshly built.
pub fn workspace_bin(name: &str) -> &'static str {
    built()
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no workspace binary named {name:?}"))
}
