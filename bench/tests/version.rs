//! `pod-identity-bench` says which release and git revision it is, as every binary does
//! (`tests/tests/version.rs` checks the others).

use std::process::Command;

use pod_identity_contracts::version::long;

#[test]
fn reports_its_release_and_revision() {
    for arg in ["--version", "version"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pod-identity-bench"))
            .arg(arg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{arg}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("pod-identity-bench {}\n", long()),
            "{arg}"
        );
    }
}
