//! The shipped kustomizations, rendered offline with `kubectl kustomize` for the manifest tests.
//! Without kubectl a test says it is skipped; in CI (`CI=true`, where `scripts/check-manifests`
//! installs it) that is a failure.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// `dir` (relative to the workspace root) rendered: the text, or `None` when kubectl is missing.
pub fn render_text(test: &str, dir: &str) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = match Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(&root)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "{test}: kubectl is required in CI: {e}"
            );
            eprintln!("SKIPPED {test}: kubectl is not installed");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("kustomize prints UTF-8"))
}

/// `dir` rendered, one JSON value per object.
pub fn render(test: &str, dir: &str) -> Option<Vec<Value>> {
    Some(objects(&render_text(test, dir)?))
}

/// A multi-document YAML stream (kustomize's or `helm template`'s output), one value per object.
pub fn objects(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// A kustomization of the workspace's own directories, written under `target/` (kustomize
/// refuses absolute paths), rendered, then removed: to check that parts compose.
pub fn render_together(test: &str, dirs: &[&str], components: &[&str]) -> Option<Vec<Value>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let name = format!("target/manifests-{}-{test}", std::process::id());
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir).expect("a scratch kustomization directory");
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|d| format!("../../{d}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources: [{}]\ncomponents: [{}]\n",
            list(dirs),
            list(components)
        ),
    )
    .expect("write the scratch kustomization");
    let rendered = render(test, &name);
    let _ = std::fs::remove_dir_all(&dir);
    rendered
}

/// Helm as `scripts/helm` builds it (under `target/tools`; `scripts/check-manifests` builds it
/// before the tests run), or `None` with a named skip (a failure in CI).
pub fn helm(test: &str) -> Option<std::path::PathBuf> {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools");
    let built = std::fs::read_dir(tools)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("helm"))
        .find(|p| p.is_file());
    if built.is_none() {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "{test}: Helm is required in CI (scripts/check-manifests builds it)"
        );
        eprintln!("SKIPPED {test}: Helm is not built (scripts/helm builds it)");
    }
    built
}
