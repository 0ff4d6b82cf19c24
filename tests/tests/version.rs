//! Every binary says which release and git revision it is: `--version` and `version` (the
//! agent's in the official agent's words), and the product's images carry the same as OCI labels.
//! The revision is baked in from `POD_IDENTITY_GIT_REVISION` (`.ci/run` sets it); where it was
//! set, it must be the one the binaries report.

use std::process::Command;

use pod_identity_contracts::version::{RELEASE, REVISION};
use pod_identity_test_support::workspace_bin;
use serde_json::Value;

/// `pod-identity-bench` answers the same, tested in its own crate (`bench/tests/version.rs`:
/// `cargo test --workspace` builds a binary only for its own package's tests).
const BINARIES: [&str; 5] = [
    "pod-identity-agent",
    "eks-auth",
    "pod-identity-webhook",
    "demo-app",
    "pod-identity-lab",
];

fn stdout_of(bin: &str, arg: &str) -> String {
    let out = Command::new(workspace_bin(bin)).arg(arg).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_binary_reports_its_release_and_revision() {
    let long = format!("{RELEASE} (revision {REVISION})");
    for bin in BINARIES {
        for arg in ["--version", "version"] {
            let said = stdout_of(bin, arg);
            let expected = if bin == "pod-identity-agent" && arg == "version" {
                format!("EKS Pod Identity Agent version {long}\n")
            } else {
                format!("{bin} {long}\n")
            };
            assert_eq!(said, expected, "{bin} {arg}");
        }
    }
    // Where the build was given a revision (CI), it is the checkout's.
    if let Some(given) = option_env!("POD_IDENTITY_GIT_REVISION") {
        assert_eq!(REVISION, given);
        let head = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), REVISION);
    } else if std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!("CI builds must set POD_IDENTITY_GIT_REVISION (.ci/run does)");
    }
}

/// The config of an OCI archive's one image: `index.json` → manifest → config.
fn image_config(archive: &std::path::Path) -> Value {
    let read = |member: &str| -> Value {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(archive)
            .arg(member)
            .output()
            .unwrap();
        assert!(out.status.success(), "{member} in {}", archive.display());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let blob = |digest: &Value| {
        format!(
            "blobs/sha256/{}",
            digest.as_str().unwrap().trim_start_matches("sha256:")
        )
    };
    let index = read("index.json");
    let manifest = read(&blob(&index["manifests"][0]["digest"]));
    read(&blob(&manifest["config"]["digest"]))
}

#[test]
fn the_product_images_carry_oci_labels_of_their_release_and_revision() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/images"));
    let required = std::env::var_os("POD_IDENTITY_REQUIRE_NODE_CLUSTER").is_some();
    if !dir.join("agent.oci.tar").exists() {
        assert!(
            !required,
            "no images in {} (scripts/images builds them)",
            dir.display()
        );
        eprintln!("SKIPPED the_product_images_carry_oci_labels: no images built (scripts/images)");
        return;
    }
    for image in ["agent", "webhook", "eks-auth", "demo-app"] {
        let config = image_config(&dir.join(format!("{image}.oci.tar")));
        let labels = &config["config"]["Labels"];
        if !required && labels.get("org.opencontainers.image.version").is_none() {
            eprintln!(
                "SKIPPED the_product_images_carry_oci_labels: {image}'s image predates its labels (scripts/images rebuilds it)"
            );
            return;
        }
        assert_eq!(
            labels["org.opencontainers.image.version"], RELEASE,
            "{image}: {labels}"
        );
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://github.com/pod-identity-rs/pod-identity"
        );
        // Images built with this test run's binaries carry its revision; older images from a
        // developer's earlier build may say another, but never nothing.
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap_or("");
        assert!(!revision.is_empty(), "{image}: {labels}");
        if required {
            assert_eq!(revision, REVISION, "{image}");
        }
    }
}
