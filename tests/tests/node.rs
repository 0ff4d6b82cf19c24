//! The agent on a node, for real: a network namespace is the node. `initialize` gives it
//! `pod-id-link0` with 169.254.170.23 and fd00:ec2::23; the agent runs as uid 65534 holding only
//! CAP_NET_BIND_SERVICE, binds port 80 on both, and drops everything; real SDKs inside the
//! namespace (Rust, botocore, JavaScript, Go, Java and the AWS CLI), configured only with what
//! the webhook injects, get credentials from it on both addresses.
//!
//! Needs root (CI runs as root). Elsewhere each test says it is skipped, by name; under
//! `scripts/test` as root (`POD_IDENTITY_REQUIRE_NODE_TESTS=1`) a skip is a failure.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use pod_identity_contracts::constants::{FULL_URI_IPV4, FULL_URI_IPV6};
use pod_identity_test_support::moto::{ENV_REQUIRE_BOTOCORE, python_with};
use pod_identity_test_support::pod::{pod_environment, sdk_result};
use pod_identity_test_support::sdk_clients::{Sdk, sdk_client};
use pod_identity_test_support::{ChildGuard, FakeEksAuth, TokenBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(20);
const SDK_CHILD_FLAG: &str = "POD_IDENTITY_NODE_SDK_CHILD";

/// Root and iproute2 present, else a named skip (a failure where node tests are required).
fn node_tests_possible(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && ip && setpriv {
        return true;
    }
    let why = format!("needs root, iproute2 and setpriv (root={root}, ip={ip}, setpriv={setpriv})");
    assert!(
        std::env::var_os("POD_IDENTITY_REQUIRE_NODE_TESTS").is_none(),
        "{test}: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// The agent binary, freshly built.
fn agent_bin() -> &'static str {
    pod_identity_test_support::workspace_bin("pod-identity-agent")
}

/// A network namespace that is deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("pia-e2e-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]));
        Self { name }
    }

    /// `ip netns exec <ns> <program> <args…>`.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A thread living inside the namespace with its own runtime: futures spawned on `handle`
/// open their sockets inside the node.
struct NetnsThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NetnsThread {
    fn enter(ns: &Netns) -> Self {
        let path = format!("/run/netns/{}", ns.name);
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).expect("open the namespace");
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter the namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tx.send(rt.handle().clone()).unwrap();
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        Self {
            handle: rx.recv().expect("namespace thread started"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    async fn run<F: std::future::Future + Send + 'static>(&self, fut: F) -> F::Output
    where
        F::Output: Send + 'static,
    {
        self.handle
            .spawn(fut)
            .await
            .expect("task inside the namespace")
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Raw HTTP/1.1 from inside the namespace; returns (status, body).
async fn raw_get(ns: &NetnsThread, addr: &'static str, host: &str, token: &str) -> (u16, String) {
    let req = format!(
        "GET /v1/credentials HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    ns.run(async move {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect inside the node");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    })
    .await
}

fn proc_status(pid: u32, task: Option<&str>) -> String {
    let path = match task {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    std::fs::read_to_string(path).unwrap_or_default()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim_start_matches(':').trim())
        })
        .unwrap_or_else(|| panic!("no {name} in /proc status"))
}

/// The pod's side for the Rust SDK: started by the node test inside the namespace with only the
/// injected variables; resolves the default chain and prints what it got, never a secret.
#[tokio::test]
#[ignore = "started inside the node namespace by agent_on_a_node_serves_real_sdks_with_no_capabilities"]
async fn node_sdk_child() {
    if std::env::var_os(SDK_CHILD_FLAG).is_none() {
        return;
    }
    use aws_credential_types::provider::ProvideCredentials;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let creds = config
        .credentials_provider()
        .expect("a default chain")
        .provide_credentials()
        .await
        .expect("credentials from the agent on the node");
    println!(
        "SDK_RESULT {}",
        serde_json::json!({"access_key_id": creds.access_key_id()})
    );
}

/// A pod's environment inside the node; HOME does not exist there.
fn pod_command(mut cmd: Command, full_uri: &str, token_file: &std::path::Path) -> Command {
    pod_environment(
        &mut cmd,
        full_uri,
        token_file,
        std::path::Path::new("/nonexistent"),
    );
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_on_a_node_serves_real_sdks_with_no_capabilities() {
    if !node_tests_possible("agent_on_a_node_serves_real_sdks_with_no_capabilities") {
        return;
    }
    let agent = agent_bin();
    // The other languages' SDK clients, built before anything starts (`None`: skipped, named).
    let clients: Vec<(Sdk, std::path::PathBuf)> = [Sdk::JavaScript, Sdk::Go, Sdk::Java, Sdk::Cli]
        .into_iter()
        .filter_map(|sdk| {
            sdk_client(sdk, "agent_on_a_node_serves_real_sdks_with_no_capabilities")
                .map(|run| (sdk, run))
        })
        .collect();
    let ns = Netns::create();

    // initialize: the link, both addresses, both routes; a second run changes nothing.
    let first = run(ns.command(agent).args(["initialize"]));
    let first = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(first.contains("\"changed\":true"), "{first}");
    let second = run(ns.command(agent).args(["initialize"]));
    let second = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(
        second.contains("\"changed\":false"),
        "initialize is not idempotent: {second}"
    );
    let addrs = run(ns.command("ip").args(["addr", "show", "pod-id-link0"]));
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(
        addrs.contains("169.254.170.23/32") && addrs.contains("fd00:ec2::23/128"),
        "{addrs}"
    );
    let routes = run(ns.command("ip").args(["route", "show", "table", "main"]));
    assert!(String::from_utf8_lossy(&routes.stdout).contains("169.254.170.23 dev pod-id-link0"));

    // EKS Auth, reachable from inside the node.
    let inside = NetnsThread::enter(&ns);
    let fake = std::sync::Arc::new(inside.run(FakeEksAuth::start()).await);

    // The agent as a DaemonSet runs it: uid 65534, only CAP_NET_BIND_SERVICE, default bind hosts, port 80.
    let mut cmd = ns.command("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--inh-caps",
        "+net_bind_service",
        "--ambient-caps",
        "+net_bind_service",
        agent,
        "server",
        "--cluster-name",
        "lab",
        "--probe-port",
        "0",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--endpoint",
    ])
    .arg(fake.url());
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", "/nonexistent")
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "AKIDNODEROLEEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "NODESECRETKEYEXAMPLE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::new(cmd.spawn().expect("start the agent"));
    let stdout = child.capture_stdout();
    let stderr = child.capture_stderr();
    let pid = child.id().expect("agent pid");
    for addr in ["169.254.170.23:80", "[fd00:ec2::23]:80"] {
        stdout
            .wait_for_json(
                |v| v["message"] == "listening" && v["addr"] == addr,
                TIMEOUT,
            )
            .await
            .unwrap_or_else(|e| panic!("agent not listening on {addr}: {e}\n{}", stderr.text()));
    }
    let ready = stdout
        .wait_for_json(|v| v["message"] == "agent ready", TIMEOUT)
        .await
        .unwrap();
    // Its start line says which release and revision it is.
    assert_eq!(ready["version"], pod_identity_contracts::version::RELEASE);
    assert_eq!(ready["revision"], pod_identity_contracts::version::REVISION);

    // It holds no capability and cannot gain one, on every thread.
    let status = proc_status(pid, None);
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(field(&status, set), "0000000000000000", "{set}:\n{status}");
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(
        field(&status, "Uid").split_whitespace().next(),
        Some("65534")
    );
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tasks.len() > 1, "expected runtime threads");
    for task in &tasks {
        let st = proc_status(pid, Some(task));
        assert_eq!(field(&st, "CapEff"), "0000000000000000", "thread {task}");
        assert_eq!(field(&st, "CapPrm"), "0000000000000000", "thread {task}");
    }
    let dropped = stdout
        .json_lines()
        .into_iter()
        .find(|v| v["message"] == "capabilities dropped")
        .expect("the capability sets are logged");
    assert!(
        dropped["caps.before"]
            .as_str()
            .unwrap()
            .contains("CAP_NET_BIND_SERVICE")
    );

    // Both addresses serve; a request naming the node otherwise is refused.
    let token = TokenBuilder::new().sign();
    let (status, body) = raw_get(&inside, "169.254.170.23:80", "169.254.170.23", &token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_get(&inside, "[fd00:ec2::23]:80", "[fd00:ec2::23]", &token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_get(&inside, "169.254.170.23:80", "127.0.0.1", &token).await;
    assert_eq!(status, 403, "{body}");

    // Real SDKs in the node, with only the injected variables.
    let dir = tempfile::tempdir().unwrap();
    let token_file = pod_identity_test_support::pod::write_token_file(
        dir.path(),
        &TokenBuilder::new().pod("sdk-pod").sign(),
    );
    for uri in [FULL_URI_IPV4, FULL_URI_IPV6] {
        let mut child = ns.command(std::env::current_exe().unwrap().to_str().unwrap());
        child.args(["node_sdk_child", "--exact", "--ignored", "--nocapture"]);
        let mut child = pod_command(child, uri, &token_file);
        let out =
            tokio::task::spawn_blocking(move || child.env(SDK_CHILD_FLAG, "1").output().unwrap())
                .await
                .unwrap();
        let got = sdk_result(&out);
        assert!(
            fake.issued()
                .iter()
                .any(|c| got["access_key_id"] == c.access_key_id.as_str()),
            "Rust SDK via {uri}: {got}"
        );
    }
    if let Some(python) = python_with(
        "botocore",
        ENV_REQUIRE_BOTOCORE,
        "agent_on_a_node_serves_real_sdks_with_no_capabilities",
    ) {
        for uri in [FULL_URI_IPV4, FULL_URI_IPV6] {
            let mut py = ns.command(&python);
            py.args(["-c", BOTOCORE]);
            let mut py = pod_command(py, uri, &token_file);
            let out = tokio::task::spawn_blocking(move || py.output().unwrap())
                .await
                .unwrap();
            let got = sdk_result(&out);
            assert_eq!(got["method"], "container-role", "botocore via {uri}");
            assert!(
                fake.issued()
                    .iter()
                    .any(|c| got["access_key_id"] == c.access_key_id.as_str()),
                "botocore via {uri}: {got}"
            );
        }
    }
    // JavaScript, Go, Java and the AWS CLI, each on both addresses: each SDK allows plain HTTP
    // only to the hosts it knows for containers, and these are the two it must know.
    for (sdk, client) in &clients {
        for uri in [FULL_URI_IPV4, FULL_URI_IPV6] {
            let mut cmd = pod_command(ns.command(client.to_str().unwrap()), uri, &token_file);
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            let got = sdk_result(&out);
            assert!(
                fake.issued()
                    .iter()
                    .any(|c| got["access_key_id"] == c.access_key_id.as_str()),
                "{sdk:?} via {uri}: {got}"
            );
        }
    }

    // SIGTERM: clean exit 0.
    child.terminate().unwrap();
    let exit = child.wait_for_exit(TIMEOUT).await.unwrap();
    assert_eq!(exit.code(), Some(0), "{}", stderr.text());
    drop(fake);
    drop(inside);
}

const BOTOCORE: &str = r#"
import json, botocore.session
creds = botocore.session.get_session().get_credentials()
print("SDK_RESULT " + json.dumps({"method": creds.method, "access_key_id": creds.get_frozen_credentials().access_key}))
"#;

#[tokio::test]
async fn agent_without_the_capability_names_it() {
    if !node_tests_possible("agent_without_the_capability_names_it") {
        return;
    }
    let agent = agent_bin();
    let ns = Netns::create();
    run(ns.command(agent).args(["initialize"]));
    let out = ns
        .command("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps",
            "-all",
        ])
        .args([
            agent,
            "server",
            "--cluster-name",
            "lab",
            "-b",
            "169.254.170.23",
            "--probe-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .env("AWS_REGION", "us-west-2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CAP_NET_BIND_SERVICE"), "{stderr}");
    assert!(stderr.contains("169.254.170.23:80"), "{stderr}");
}
