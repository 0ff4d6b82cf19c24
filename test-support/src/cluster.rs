//! The local Kubernetes control plane of `scripts/cluster up --control-plane-only`, for tests:
//! where it is, a kube client and kubectl for it, a namespace per test, and a lock that lets a
//! test stop a shared component without pulling it from under the others.
//!
//! `scripts/test` brings the cluster up (building Kubernetes from source the first time), exports
//! [`ENV_CLUSTER`] and takes it down when the tests end, also when they fail. Run alone, a
//! cluster test skips by name unless [`ENV_REQUIRE_CLUSTER`] is set (scripts/test sets it wherever
//! Go is installed, and CI always): then a missing cluster is a failure.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// Path of the `env` file `scripts/cluster up` writes (KEY=value lines).
pub const ENV_CLUSTER: &str = "POD_IDENTITY_CLUSTER_ENV";
/// Set to make a missing cluster a failure instead of a skip.
pub const ENV_REQUIRE_CLUSTER: &str = "POD_IDENTITY_REQUIRE_CLUSTER";
/// Path of the `env` file of `scripts/cluster up` (a whole node, in its own network namespace).
pub const ENV_NODE_CLUSTER: &str = "POD_IDENTITY_NODE_CLUSTER_ENV";
/// Set to make a missing node cluster a failure instead of a skip.
pub const ENV_REQUIRE_NODE_CLUSTER: &str = "POD_IDENTITY_REQUIRE_NODE_CLUSTER";

/// A running local control plane.
#[derive(Debug, Clone)]
pub struct Cluster {
    vars: HashMap<String, String>,
}

impl Cluster {
    /// The control plane, or `None` with a named skip (a panic where the cluster is required).
    pub fn get(test: &str) -> Option<Self> {
        Self::from_env(
            test,
            ENV_CLUSTER,
            ENV_REQUIRE_CLUSTER,
            "scripts/cluster up --control-plane-only",
        )
    }

    /// The whole node (`scripts/cluster up`), or `None` with a named skip (a panic where it is
    /// required). Its API server is inside the node's network namespace: use [`Cluster::kubectl`].
    pub fn node(test: &str) -> Option<Self> {
        Self::from_env(
            test,
            ENV_NODE_CLUSTER,
            ENV_REQUIRE_NODE_CLUSTER,
            "scripts/cluster up",
        )
    }

    fn from_env(test: &str, env: &str, require: &str, starter: &str) -> Option<Self> {
        let why = match std::env::var(env) {
            Ok(path) => match std::fs::read_to_string(&path) {
                Ok(text) => return Some(Self::parse(&text)),
                Err(e) => format!("{env}={path} cannot be read: {e}"),
            },
            Err(_) => {
                format!("no local cluster ({env} unset; scripts/test starts one with {starter})")
            }
        };
        assert!(std::env::var_os(require).is_none(), "{test}: {why}");
        eprintln!("SKIPPED {test}: {why}");
        None
    }

    fn parse(text: &str) -> Self {
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Self { vars }
    }

    /// One of the `CLUSTER_*` facts (`CLUSTER_SERVER`, `CLUSTER_EKS_AUTH`, …) or `KUBECONFIG`.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("the cluster's env file has no {key}"))
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &str {
        self.var("KUBECONFIG")
    }

    /// The API server's URL, which is also the service-account issuer.
    pub fn server(&self) -> &str {
        self.var("CLUSTER_SERVER")
    }

    /// The cluster's state directory.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.var("CLUSTER_DIR"))
    }

    /// A kube client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        client_for(Path::new(self.kubeconfig())).await
    }

    /// `kubectl ARGS...` with the admin kubeconfig (inside the node's network namespace where
    /// the cluster has one); its output, whatever its exit status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command(self.var("CLUSTER_KUBECTL"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// `program`, run where it reaches the API server: inside the node's network namespace for
    /// the node cluster (its API server listens there), as is for the control plane.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.vars.get("CLUSTER_NETNS") {
            Some(netns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{netns}")).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// `scripts/cluster ARGS...`; panics with its output unless it succeeds.
    pub fn script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
        let out = Command::new(script)
            .args(args)
            .env("CLUSTER_DIR", self.dir())
            .env("CLUSTER_PORT_BASE", self.var("CLUSTER_PORT_BASE"))
            .output()
            .expect("scripts/cluster runs");
        assert!(
            out.status.success(),
            "scripts/cluster {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Share the cluster with other tests (they may run at the same time).
    pub fn shared(&self) -> ClusterLock {
        self.lock(false)
    }

    /// Have the cluster alone: for a test that stops or removes something others rely on.
    pub fn exclusive(&self) -> ClusterLock {
        self.lock(true)
    }

    fn lock(&self, exclusive: bool) -> ClusterLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir().join("tests.lock"))
            .expect("the cluster's lock file opens");
        let mode = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, mode).expect("flock");
        ClusterLock { _file: file }
    }

    /// A namespace of the test's own, deleted on drop (`name` plus a suffix unique to this run).
    pub async fn namespace(&self, name: &str) -> TestNamespace {
        let client = self.client().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let full = format!("{name}-{:06x}", (nanos ^ std::process::id()) & 0xff_ffff);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": full}
        }))
        .expect("a namespace");
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            // Left by an earlier run of the same test: start clean.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create namespace {full}: {e}"),
        }
        TestNamespace {
            name: full,
            kubeconfig: PathBuf::from(self.kubeconfig()),
        }
    }
}

/// A kube client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("the kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is usable");
    kube::Client::try_from(config).expect("a kube client")
}

/// Held while a test uses the cluster; see [`Cluster::shared`] and [`Cluster::exclusive`].
#[derive(Debug)]
pub struct ClusterLock {
    _file: File,
}

/// A namespace deleted when the test ends (whether it passed or not).
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        // Drop may run inside a runtime that this thread blocks: a thread, runtime and client
        // of its own. Pods go first, at once: with no kubelet, a pod bound to a node would
        // otherwise wait for one forever and hold its namespace in Terminating.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let client = client_for(&kubeconfig).await;
                let now = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    pods.delete_collection(&now, &Default::default()),
                )
                .await;
                let api: Api<Namespace> = Api::all(client);
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    api.delete(&name, &DeleteParams::default()),
                )
                .await;
            });
        })
        .join();
    }
}

/// A pod bound to a node (`control-plane-test-node`, created if missing: no kubelet runs it), and
/// a token for it from the real TokenRequest API, for `audience`.
pub async fn bound_token(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    pod: &str,
    audience: &str,
) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": "control-plane-test-node"}})).unwrap();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create node: {e}"),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let created = match pods.get_opt(pod).await.unwrap() {
        Some(p) => p,
        None => {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": pod},
                "spec": {
                    "serviceAccountName": sa,
                    "nodeName": "control-plane-test-node",
                    "containers": [{"name": "app", "image": "pod-identity/demo-app:dev"}]
                }
            }))
            .unwrap();
            pods.create(&PostParams::default(), &p).await.unwrap()
        }
    };
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": [audience],
            "expirationSeconds": 3600,
            "boundObjectRef": {
                "kind": "Pod", "apiVersion": "v1",
                "name": pod, "uid": created.metadata.uid.unwrap()
            }
        }
    }))
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("a token")
        .token
        .expect("a token")
}
