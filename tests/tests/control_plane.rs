//! The product against a real Kubernetes control plane (`scripts/cluster up --control-plane-only`:
//! etcd, kube-apiserver and kube-controller-manager built from source): the webhook called by the
//! API server through its MutatingWebhookConfiguration, its certificate made without
//! cert-manager, eks-auth verifying tokens minted by the real TokenRequest API through the API
//! server's own discovery, associations as live PodIdentityAssociation objects.
//!
//! Each test works in a namespace of its own and holds the cluster shared; the one that stops the
//! webhook or removes the CRD holds it alone. Without a cluster each test says it is skipped
//! (a failure under scripts/test where Go is installed, and in CI).

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use pod_identity_contracts::UnverifiedToken;
use pod_identity_test_support::TokenBuilder;
use pod_identity_test_support::cluster::{Cluster, ClusterLock, TestNamespace, bound_token};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(200);
/// How long a live change may take to reach the webhook or eks-auth.
const FOLLOW: Duration = Duration::from_secs(15);
const ROLE_A: &str = "arn:aws:iam::111122223333:role/control-plane-a";
const ROLE_B: &str = "arn:aws:iam::111122223333:role/control-plane-b";

/// What a test works with: the cluster, held shared or alone, a client and its own namespace.
/// Fields drop in order: the namespace goes before the lock is released.
struct Ctx {
    cluster: Cluster,
    client: kube::Client,
    ns: TestNamespace,
    _lock: ClusterLock,
}

impl Ctx {
    async fn new(test: &str, namespace: &str, alone: bool) -> Option<Self> {
        let cluster = Cluster::get(test)?;
        let lock = if alone {
            cluster.exclusive()
        } else {
            cluster.shared()
        };
        let client = cluster.client().await;
        let ns = cluster.namespace(namespace).await;
        Some(Self {
            cluster,
            client,
            ns,
            _lock: lock,
        })
    }
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../webhook/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every key of `expected` is in `actual` with a matching value; lists match element by element.
/// The API server fills defaults the fixtures do not spell out; nothing else may differ, but for
/// the tolerations, to which its DefaultTolerationSeconds plugin adds `unreachable`.
fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Array(e), Value::Array(a)) if path.ends_with(".tolerations") => {
            for item in e {
                assert!(a.contains(item), "{path}: {item} missing in {actual}");
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let child = format!("{path}.{k}");
                let got = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{child} missing in {actual}"));
                assert_subset(v, got, &child);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path}: {expected} vs {actual}");
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                assert_subset(e, a, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(expected, actual, "{path}"),
    }
}

async fn association(client: &kube::Client, name: &str, namespace: &str, sa: &str, role: &str) {
    let api: Api<kube::core::DynamicObject> = Api::all_with(client.clone(), &pia_resource());
    let obj = json!({
        "apiVersion": "podidentity.dev/v1alpha1",
        "kind": "PodIdentityAssociation",
        "metadata": {"name": name},
        "spec": {"namespace": namespace, "serviceAccount": sa, "roleArn": role}
    });
    api.patch(
        name,
        &PatchParams::apply("control-plane-test").force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply PodIdentityAssociation {name}: {e}"));
}

async fn delete_association(client: &kube::Client, name: &str) {
    let api: Api<kube::core::DynamicObject> = Api::all_with(client.clone(), &pia_resource());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

fn pia_resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: "podidentity.dev".into(),
        version: "v1alpha1".into(),
        api_version: "podidentity.dev/v1alpha1".into(),
        kind: "PodIdentityAssociation".into(),
        plural: "podidentityassociations".into(),
    }
}

/// Deletes the association when the test ends, passed or failed.
struct AssociationGuard {
    kubeconfig: String,
    name: String,
}

impl Drop for AssociationGuard {
    fn drop(&mut self) {
        let (kubeconfig, name) = (self.kubeconfig.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let client = pod_identity_test_support::cluster::client_for(
                        std::path::Path::new(&kubeconfig),
                    )
                    .await;
                    delete_association(&client, &name).await;
                });
        })
        .join();
    }
}

async fn guarded_association(
    cluster: &Cluster,
    client: &kube::Client,
    ns: &TestNamespace,
    sa: &str,
    role: &str,
) -> AssociationGuard {
    let name = format!("{}-{sa}", ns.name);
    association(client, &name, &ns.name, sa, role).await;
    AssociationGuard {
        kubeconfig: cluster.kubeconfig().to_string(),
        name,
    }
}

async fn service_account(client: &kube::Client, ns: &str, name: &str) -> ServiceAccount {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("create ServiceAccount {ns}/{name}: {e}"))
}

/// Server-side dry-run creations of `pod` until the webhook has the association (it learns of it
/// through its watch), then the real creation.
async fn create_pod_once_injected(client: &kube::Client, ns: &str, pod: &Value) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod.clone()).unwrap();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + FOLLOW;
    loop {
        let got = api.create(&dry, &pod).await.expect("dry-run create");
        if injected(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never injected {ns}: {got:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod")
}

fn injected(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("eks.amazonaws.com/pod-identity"))
}

/// The fixture's pod, moved to `ns`.
fn fixture_pod(case: &str, ns: &str) -> Value {
    let mut pod = fixture(&format!("{case}.json"))["request"]["object"].clone();
    pod["metadata"]["namespace"] = json!(ns);
    pod
}

#[tokio::test]
async fn the_api_server_calls_the_webhook_and_pods_come_back_as_the_fixtures_say() {
    let Some(ctx) = Ctx::new("the_api_server_calls_the_webhook", "webhook", false).await else {
        return;
    };
    let Ctx {
        cluster,
        client,
        ns,
        ..
    } = &ctx;
    service_account(client, &ns.name, "s3-reader").await;
    service_account(client, &ns.name, "unassociated").await;
    let _association = guarded_association(cluster, client, ns, "s3-reader", ROLE_A).await;

    // With an association: the stored pod is the fixture's expected pod, plus only the API
    // server's own defaults and metadata.
    let created =
        create_pod_once_injected(client, &ns.name, &fixture_pod("inject-basic", &ns.name)).await;
    let mut expected = fixture("inject-basic.expected.json")["pod"].clone();
    expected["metadata"]["namespace"] = json!(ns.name);
    assert_subset(&expected, &serde_json::to_value(&created).unwrap(), "pod");

    // Without one: untouched.
    let mut bare = fixture_pod("inject-basic", &ns.name);
    bare["metadata"]["name"] = json!("unassociated");
    bare["spec"]["serviceAccountName"] = json!("unassociated");
    bare["spec"]["serviceAccount"] = json!("unassociated");
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let stored = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(bare).unwrap(),
        )
        .await
        .unwrap();
    assert!(!injected(&stored), "{stored:?}");
    let spec = stored.spec.unwrap();
    assert!(spec.containers[0].env.is_none(), "{:?}", spec.containers[0]);
    assert!(
        spec.volumes
            .unwrap_or_default()
            .iter()
            .all(|v| v.name != "eks-pod-identity-token")
    );
}

#[tokio::test]
async fn a_pod_in_an_excluded_namespace_is_untouched_even_with_an_association() {
    let Some(cluster) = Cluster::get("a_pod_in_an_excluded_namespace_is_untouched") else {
        return;
    };
    let _shared = cluster.shared();
    let client = cluster.client().await;
    // kube-system is excluded by the MutatingWebhookConfiguration's namespaceSelector.
    let sa = format!("excluded-{}", std::process::id());
    service_account(&client, "kube-system", &sa).await;
    let name = format!("kube-system-{sa}");
    association(&client, &name, "kube-system", &sa, ROLE_A).await;
    let _guard = AssociationGuard {
        kubeconfig: cluster.kubeconfig().to_string(),
        name,
    };
    // Give the webhook the time it needs to see the association, then create.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pod = fixture_pod("inject-basic", "kube-system");
    pod["metadata"]["name"] = json!(sa);
    pod["spec"]["serviceAccountName"] = json!(sa);
    pod["spec"]["serviceAccount"] = json!(sa);
    let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let stored = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap();
    let _ = api
        .delete(
            &sa,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    let _ = sas.delete(&sa, &DeleteParams::default()).await;
    assert!(!injected(&stored), "{stored:?}");
}

/// The webhook stopped: pods are still created (failurePolicy Ignore), without the injection, and
/// `pod-identity-webhook audit` against the API server names them.
#[tokio::test]
async fn with_the_webhook_down_pods_are_admitted_and_audit_finds_them() {
    let Some(ctx) = Ctx::new("with_the_webhook_down_pods_are_admitted", "fail-open", true).await
    else {
        return;
    };
    let Ctx {
        cluster,
        client,
        ns,
        ..
    } = &ctx;
    service_account(client, &ns.name, "s3-reader").await;
    let _association = guarded_association(cluster, client, ns, "s3-reader", ROLE_A).await;
    // Proof the webhook serves this namespace while it runs.
    create_pod_once_injected(client, &ns.name, &fixture_pod("inject-basic", &ns.name)).await;

    struct Restart<'a>(&'a Cluster);
    impl Drop for Restart<'_> {
        fn drop(&mut self) {
            self.0.script(&["start", "webhook"]);
        }
    }
    cluster.script(&["stop", "webhook"]);
    let _restart = Restart(cluster);

    let mut pod = fixture_pod("inject-basic", &ns.name);
    pod["metadata"]["name"] = json!("admitted-without-webhook");
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let stored = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .expect("failurePolicy Ignore admits the pod");
    assert!(!injected(&stored), "{stored:?}");

    let out = Command::new(format!(
        "{}/pod-identity-webhook",
        cluster.var("CLUSTER_BIN_DIR")
    ))
    .args([
        "audit",
        "--watch-custom-resources",
        "-n",
        &ns.name,
        "-o",
        "json",
    ])
    .env("KUBECONFIG", cluster.kubeconfig())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "audit exits 3 on findings: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].to_string().contains("admitted-without-webhook"),
        "{findings:?}"
    );
}

/// `certs` against the real API server: a second run reuses the Secret and leaves the caBundle;
/// a Secret it did not make is refused, not overwritten; a missing configuration is a plain error.
#[tokio::test]
async fn certs_reuses_its_secret_and_refuses_a_foreign_one() {
    let Some(cluster) = Cluster::get("certs_reuses_its_secret") else {
        return;
    };
    let _shared = cluster.shared();
    let client = cluster.client().await;
    let certs = |extra: &[&str]| {
        let out = Command::new(format!(
            "{}/pod-identity-webhook",
            cluster.var("CLUSTER_BIN_DIR")
        ))
        .args([
            "certs",
            "--namespace",
            "pod-identity-system",
            "--ip-address",
            "127.0.0.1",
        ])
        .args(extra)
        .env(
            "KUBECONFIG",
            format!(
                "{}/pod-identity-webhook.kubeconfig",
                cluster.dir().display()
            ),
        )
        .output()
        .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, log) = certs(&[]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("\"outcome\":\"Reused\""), "{log}");
    assert!(log.contains("\"ca_bundle_changed\":false"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");

    // Someone else's Secret: refused, and left as it was.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "pod-identity-system");
    let name = format!("foreign-{}", std::process::id());
    let foreign: Secret = serde_json::from_value(
        json!({"metadata": {"name": name}, "stringData": {"tls.crt": "theirs"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let admin = Command::new(format!(
        "{}/pod-identity-webhook",
        cluster.var("CLUSTER_BIN_DIR")
    ))
    .args([
        "certs",
        "--namespace",
        "pod-identity-system",
        "--secret",
        &name,
    ])
    .env("KUBECONFIG", cluster.kubeconfig())
    .output()
    .unwrap();
    let kept = secrets.get(&name).await.unwrap();
    secrets
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&admin.stderr);
    assert_eq!(admin.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is not a TLS secret of this webhook"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(
        kept.data.unwrap()["tls.crt"].0,
        b"theirs".to_vec(),
        "the foreign Secret was changed"
    );

    let (code, log) = certs(&["--webhook-configuration", "no-such-configuration"]);
    assert_ne!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("no-such-configuration"), "{log}");
}

/// The node agent's own token, as the agent on `control-plane-test-node` (where [`bound_token`]
/// puts every pod) would present it: ServiceAccount `kube-system/eks-pod-identity-agent`,
/// audience `eks-auth.podidentity.dev`, bound to its DaemonSet pod, minted once per test binary.
fn caller_token(cluster: &Cluster) -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let objects = r#"
apiVersion: v1
kind: Node
metadata: {name: control-plane-test-node}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: eks-pod-identity-agent, namespace: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: eks-pod-identity-agent-test, namespace: kube-system}
spec:
  serviceAccountName: eks-pod-identity-agent
  nodeName: control-plane-test-node
  containers: [{name: agent, image: pod-identity/agent:dev}]
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, objects).unwrap();
        let out = cluster.kubectl(&["apply", "-f", path.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let out = cluster.kubectl(&[
            "create",
            "token",
            "eks-pod-identity-agent",
            "-n",
            "kube-system",
            "--audience",
            pod_identity_contracts::eks_auth::CALLER_AUDIENCE,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "eks-pod-identity-agent-test",
            "--duration",
            "1h",
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// One `AssumeRoleForPodIdentity` call, as the agent on the pods' node: (status, error type,
/// body).
async fn exchange(cluster: &Cluster, token: &str) -> (u16, String, Value) {
    let url = format!(
        "{}/clusters/{}/assume-role-for-pod-identity",
        cluster.var("CLUSTER_EKS_AUTH"),
        cluster.var("CLUSTER_NAME")
    );
    let caller = caller_token(cluster);
    let resp = reqwest::Client::new()
        .post(url)
        .header(
            pod_identity_contracts::eks_auth::CALLER_TOKEN_HEADER,
            caller,
        )
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("eks-auth answers");
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, kind, resp.json().await.unwrap_or(Value::Null))
}

/// Polls the exchange until `done` says so or [`FOLLOW`] passes.
async fn exchange_until(
    cluster: &Cluster,
    token: &str,
    what: &str,
    done: impl Fn(u16, &str, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + FOLLOW;
    loop {
        let (status, kind, body) = exchange(cluster, token).await;
        if done(status, &kind, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {status} {kind} after {FOLLOW:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn eks_auth_exchanges_real_bound_tokens_and_follows_associations_live() {
    let Some(ctx) = Ctx::new("eks_auth_exchanges_real_bound_tokens", "exchange", false).await
    else {
        return;
    };
    let Ctx {
        cluster,
        client,
        ns,
        ..
    } = &ctx;
    service_account(client, &ns.name, "app").await;
    let token = bound_token(client, &ns.name, "app", "app-0", "pods.eks.amazonaws.com").await;

    // No association yet.
    let (status, kind, _) = exchange(cluster, &token).await;
    assert_eq!((status, kind.as_str()), (404, "ResourceNotFoundException"));

    // Created: eks-auth follows within seconds and assumes that role for this pod.
    let guard = guarded_association(cluster, client, ns, "app", ROLE_A).await;
    let body = exchange_until(cluster, &token, "association created", |s, _, _| s == 200).await;
    assert_eq!(
        body["subject"],
        json!({"namespace": ns.name, "serviceAccount": "app"})
    );
    let arn = body["assumedRoleUser"]["arn"].as_str().unwrap();
    assert!(arn.contains("assumed-role/control-plane-a/"), "{arn}");
    assert!(
        body["credentials"]["sessionToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    // Changed: the next exchange assumes the new role.
    association(client, &guard.name, &ns.name, "app", ROLE_B).await;
    exchange_until(cluster, &token, "association changed", |s, _, b| {
        s == 200
            && b["assumedRoleUser"]["arn"]
                .as_str()
                .is_some_and(|a| a.contains("assumed-role/control-plane-b/"))
    })
    .await;

    // Deleted: refused again.
    delete_association(client, &guard.name).await;
    exchange_until(cluster, &token, "association deleted", |s, k, _| {
        s == 404 && k == "ResourceNotFoundException"
    })
    .await;
}

#[tokio::test]
async fn eks_auth_refuses_another_audience_and_another_key() {
    let Some(ctx) = Ctx::new("eks_auth_refuses_another_audience", "refusals", false).await else {
        return;
    };
    let Ctx {
        cluster,
        client,
        ns,
        ..
    } = &ctx;
    service_account(client, &ns.name, "app").await;
    let _association = guarded_association(cluster, client, ns, "app", ROLE_A).await;
    let good = bound_token(client, &ns.name, "app", "app-0", "pods.eks.amazonaws.com").await;
    exchange_until(cluster, &good, "the association", |s, _, _| s == 200).await;

    // The API server's own audience: a real token of the same pod, refused.
    let other_audience = bound_token(
        client,
        &ns.name,
        "app",
        "app-0",
        "https://kubernetes.default.svc",
    )
    .await;
    let (status, kind, body) = exchange(cluster, &other_audience).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "InvalidTokenException"),
        "{body}"
    );

    // The same claims, signed by a key the issuer never published.
    let claims = UnverifiedToken::parse(&good).unwrap().claims;
    let k8s = claims.kubernetes.unwrap();
    let forged = TokenBuilder::new()
        .issuer(cluster.server())
        .namespace(&ns.name)
        .service_account("app")
        .service_account_uid(&k8s.serviceaccount.uid)
        .pod(&k8s.pod.as_ref().unwrap().name)
        .pod_uid(&k8s.pod.as_ref().unwrap().uid)
        .node(&k8s.node.as_ref().unwrap().name)
        .node_uid(&k8s.node.as_ref().unwrap().uid)
        .sign();
    let (status, kind, body) = exchange(cluster, &forged).await;
    assert_eq!(
        (status, kind.as_str()),
        (400, "InvalidTokenException"),
        "{body}"
    );
    for secret in [&good, &other_audience, &forged] {
        let log = std::fs::read_to_string(cluster.dir().join("logs/eks-auth.log")).unwrap();
        pod_identity_test_support::assert_no_secrets(&log, &[secret.as_str()]);
    }
}

/// What the real API server puts in a bound token parses in our contracts: pod, node, service
/// account, `jti`, the audience, and the issuer eks-auth is configured with.
#[tokio::test]
async fn real_bound_token_claims_parse_in_contracts() {
    let Some(ctx) = Ctx::new("real_bound_token_claims_parse", "claims", false).await else {
        return;
    };
    let Ctx {
        cluster,
        client,
        ns,
        ..
    } = &ctx;
    let sa = service_account(client, &ns.name, "app").await;
    let token = bound_token(client, &ns.name, "app", "app-0", "pods.eks.amazonaws.com").await;
    let parsed = UnverifiedToken::parse(&token).expect("the real token parses");
    assert_eq!(parsed.header.alg, "RS256");
    let c = parsed.claims;
    assert_eq!(c.iss, cluster.server());
    assert!(c.aud.contains("pods.eks.amazonaws.com"));
    assert_eq!(c.subject().unwrap(), (ns.name.as_str(), "app"));
    c.check_structure().unwrap();
    let exp = c.exp;
    let iat = c.iat.expect("iat");
    assert_eq!(exp - iat, 3600);
    assert!(c.jti.as_deref().is_some_and(|j| !j.is_empty()), "jti");
    let k8s = c.kubernetes.expect("kubernetes.io");
    assert_eq!(k8s.namespace, ns.name);
    assert_eq!(k8s.serviceaccount.name, "app");
    assert_eq!(Some(&k8s.serviceaccount.uid), sa.metadata.uid.as_ref());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = pods.get("app-0").await.unwrap();
    assert_eq!(k8s.pod.as_ref().unwrap().name, "app-0");
    assert_eq!(
        Some(&k8s.pod.as_ref().unwrap().uid),
        pod.metadata.uid.as_ref()
    );
    let node = Api::<Node>::all(client.clone())
        .get("control-plane-test-node")
        .await
        .unwrap();
    let token_node = k8s.node.expect("node claims (Kubernetes >= 1.32)");
    assert_eq!(token_node.name, "control-plane-test-node");
    assert_eq!(Some(&token_node.uid), node.metadata.uid.as_ref());
}

/// `audit` with a kubeconfig that cannot work, and with the CRD gone: one plain sentence each, at
/// once, no panic. The running webhook and eks-auth ride out the missing CRD and follow again
/// once it is back.
#[tokio::test]
async fn bad_kube_access_gets_plain_errors_and_the_services_recover_from_a_missing_crd() {
    let Some(ctx) = Ctx::new("bad_kube_access_gets_plain_errors", "access", true).await else {
        return;
    };
    let Ctx {
        cluster,
        client,
        ns,
        ..
    } = &ctx;
    let dir = tempfile::tempdir().unwrap();
    let admin = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    let audit = |kubeconfig: &str| {
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig).unwrap();
        let started = Instant::now();
        let out = Command::new(format!(
            "{}/pod-identity-webhook",
            cluster.var("CLUSTER_BIN_DIR")
        ))
        .args(["--log-level", "error", "audit", "--watch-custom-resources"])
        .env("KUBECONFIG", &path)
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
        (out.status.code(), stderr)
    };

    // Nothing listens where the kubeconfig points.
    let unreachable = admin.replace(cluster.server(), "https://127.0.0.1:1");
    let (code, text) = audit(&unreachable);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot reach the Kubernetes API"), "{text}");

    // Credentials the API server does not take (as with an expired token).
    let sa_kubeconfig =
        std::fs::read_to_string(cluster.dir().join("pod-identity-webhook.kubeconfig")).unwrap();
    let token_line = sa_kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .unwrap();
    let refused = sa_kubeconfig.replace(
        token_line,
        "    token: eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl",
    );
    let (code, text) = audit(&refused);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused the client's credentials"), "{text}");

    // The CRD removed.
    struct Reinstall<'a>(&'a Cluster);
    impl Drop for Reinstall<'_> {
        fn drop(&mut self) {
            let crds = format!("{}/../deploy/crds", env!("CARGO_MANIFEST_DIR"));
            let out = self.0.kubectl(&["apply", "-k", &crds]);
            assert!(out.status.success(), "{out:?}");
            let out = self.0.kubectl(&[
                "wait",
                "--for",
                "condition=established",
                "--timeout",
                "30s",
                "crd/podidentityassociations.podidentity.dev",
            ]);
            assert!(out.status.success(), "{out:?}");
        }
    }
    let out = cluster.kubectl(&[
        "delete",
        "crd",
        "podidentityassociations.podidentity.dev",
        "--wait",
    ]);
    assert!(out.status.success(), "{out:?}");
    let reinstall = Reinstall(cluster);
    let (code, text) = audit(&admin);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("CRD is not installed"), "{text}");
    drop(reinstall);

    // Back: the webhook (still running) injects for a new association, and is still ready.
    service_account(client, &ns.name, "s3-reader").await;
    let _association = guarded_association(cluster, client, ns, "s3-reader", ROLE_A).await;
    create_pod_once_injected(client, &ns.name, &fixture_pod("inject-basic", &ns.name)).await;
    for admin_url in ["CLUSTER_WEBHOOK_ADMIN", "CLUSTER_EKS_AUTH_ADMIN"] {
        let url = format!("{}/readyz", cluster.var(admin_url));
        let status = reqwest::get(&url).await.unwrap().status();
        assert!(status.is_success(), "{url}: {status}");
    }
}

/// A stolen token dies with its pod: eks-auth asks the API server (TokenReview) before STS, so
/// once the pod is deleted its token, still well signed and unexpired, buys nothing. A token of
/// the same ServiceAccount for a pod that still runs keeps working.
#[tokio::test]
async fn a_deleted_pods_token_is_refused_by_token_review() {
    let Some(ctx) = Ctx::new("a_deleted_pods_token_is_refused", "deleted-pod", false).await else {
        return;
    };
    let Ctx {
        cluster,
        client,
        ns,
        ..
    } = &ctx;
    service_account(client, &ns.name, "app").await;
    let _association = guarded_association(cluster, client, ns, "app", ROLE_A).await;
    let doomed = bound_token(client, &ns.name, "app", "doomed", "pods.eks.amazonaws.com").await;
    let alive = bound_token(client, &ns.name, "app", "alive", "pods.eks.amazonaws.com").await;
    exchange_until(cluster, &doomed, "the association", |s, _, _| s == 200).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("doomed", &now).await.unwrap();
    let body = exchange_until(cluster, &doomed, "the pod deleted", |s, k, _| {
        s == 400 && k == "InvalidTokenException"
    })
    .await;
    let message = body["message"].as_str().unwrap_or_default();
    // The live check's refusal: it runs after the signature and before STS.
    assert!(message.contains("no longer accepts this token"), "{body}");
    let (status, _, body) = exchange(cluster, &alive).await;
    assert_eq!(status, 200, "{body}");
}
