//! eks-auth across binaries, with moto as the real STS:
//!
//! - a pod's SDK (botocore, and the Rust SDK) → `pod-identity-agent` → `eks-auth` → moto: the
//!   credentials the pod ends up with are the role's, and moto accepts them (GetCallerIdentity
//!   answers with the assumed-role ARN);
//! - boto3's own `eks-auth` client against eks-auth, success and modeled errors, unchanged but
//!   for the endpoint;
//! - eks-auth over TLS with a private CA: the agent trusts it through `AWS_CA_BUNDLE` only (and
//!   fails with a TLS error without it, or after the certificate rotated to another CA), boto3
//!   through `verify=`.
//!
//! Each test says SKIPPED by name when moto or boto3 is missing; under scripts/test
//! (`POD_IDENTITY_REQUIRE_MOTO`, `POD_IDENTITY_REQUIRE_BOTOCORE`) that is a failure.

use std::path::Path;

use pod_identity_test_support::agent_process::AgentLaunch;
use pod_identity_test_support::eks_auth_process::{EksAuthOptions, EksAuthProcess, EksAuthTls};
use pod_identity_test_support::fake_issuer::FakeIssuer;
use pod_identity_test_support::moto::{ENV_REQUIRE_BOTOCORE, Moto, python_with};
use pod_identity_test_support::pod::{pod_environment, sdk_result, write_token_file};
use pod_identity_test_support::tls::TestCa;
use pod_identity_test_support::tokens::{TokenBuilder, jwks, now};
use pod_identity_test_support::{AgentProcess, keys, workspace_bin};
use serde_json::Value;
use tokio::process::Command;

const CLUSTER: &str = "lab";
const CLUSTER_ARN: &str = "arn:aws:eks:us-west-2:111122223333:cluster/lab";
const ASSOCIATIONS: &str = "associations:\n  - namespace: default\n    serviceAccount: s3-reader\n    roleArn: arn:aws:iam::111122223333:role/s3-reader\n";
const RUST_SDK_CHILD: &str = "POD_IDENTITY_E2E_RUST_SDK_CHILD";

/// moto, an issuer, eks-auth between them.
struct Exchange {
    moto: Moto,
    issuer: FakeIssuer,
    eks_auth: EksAuthProcess,
    dir: tempfile::TempDir,
}

impl Exchange {
    async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None, &[]).await
    }

    /// As [`Exchange::start`], eks-auth serving HTTPS with a certificate from `ca` when given
    /// (its files: [`Exchange::tls_files`]).
    async fn start_with(test: &str, ca: Option<&TestCa>, extra: &[&str]) -> Option<Self> {
        let moto = Moto::start(test).await?;
        let issuer = FakeIssuer::start(jwks()).await;
        let dir = tempfile::tempdir().unwrap();
        let associations = dir.path().join("associations.yaml");
        std::fs::write(&associations, ASSOCIATIONS).unwrap();
        let tls = ca.map(|ca| {
            let (cert, key) = tls_files(dir.path());
            ca.issue().write(&cert, &key);
            EksAuthTls {
                cert,
                key,
                ca_pem: ca.pem(),
            }
        });
        let opts = EksAuthOptions {
            cluster_name: CLUSTER.into(),
            issuer: issuer.url(),
            jwks_file: None,
            associations,
            sts_endpoint: Some(moto.url().to_string()),
            cluster_arn: Some(CLUSTER_ARN.into()),
            tls,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..EksAuthOptions::default()
        };
        let eks_auth = EksAuthProcess::start(Path::new(workspace_bin("eks-auth")), &opts).await;
        std::fs::write(
            dir.path().join(AGENT_IDENTITY_FILE),
            TokenBuilder::agent().issuer(issuer.url()).sign(),
        )
        .unwrap();
        Some(Self {
            moto,
            issuer,
            eks_auth,
            dir,
        })
    }

    fn token(&self) -> TokenBuilder {
        // As the webhook asks for it: a 24 h token (eks-auth's credentials end with the token).
        TokenBuilder::new()
            .issuer(self.issuer.url())
            .expires_at(now() + 86_400)
    }
}

/// The agent's own token (`--identity-token-file`), as its kubelet would project it, in the
/// stand's directory.
const AGENT_IDENTITY_FILE: &str = "agent-identity-token";

/// eks-auth's certificate and key files under `dir`.
fn tls_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join("tls.crt"), dir.join("tls.key"))
}

/// The agent binary on loopback, pointed at eks-auth, with its own identity token.
async fn start_agent(x: &Exchange, endpoint: &str) -> AgentProcess {
    let identity = x.dir.path().join(AGENT_IDENTITY_FILE);
    AgentProcess::start(
        workspace_bin("pod-identity-agent"),
        CLUSTER,
        endpoint,
        &["--identity-token-file", identity.to_str().unwrap()],
    )
    .await
}

/// As [`start_agent`], trusting the CA in `bundle` too (`AWS_CA_BUNDLE`).
async fn start_agent_trusting(x: &Exchange, endpoint: &str, bundle: &Path) -> AgentProcess {
    let identity = x.dir.path().join(AGENT_IDENTITY_FILE);
    let how = AgentLaunch {
        bin: workspace_bin("pod-identity-agent"),
        extra: &["--identity-token-file", identity.to_str().unwrap()],
        env: &[("AWS_CA_BUNDLE", bundle.to_str().unwrap())],
        ..AgentLaunch::default()
    };
    AgentProcess::launch(&how, CLUSTER, endpoint).await
}

/// A pod's environment (test-support's), plus moto's URL for the identity check.
fn pod_command(
    program: impl AsRef<std::ffi::OsStr>,
    agent: &AgentProcess,
    token_file: &Path,
    home: &Path,
    moto: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    pod_environment(&mut cmd, &agent.credentials_url(), token_file, home);
    cmd.env("MOTO_URL", moto);
    cmd
}

/// What every pod run must show: one exchange, audited, signed by eks-auth's key, and the
/// credentials accepted by moto as the assumed role.
async fn assert_the_pod_is_the_role(
    x: &Exchange,
    agent: &AgentProcess,
    result: &Value,
    token: &str,
) {
    let arn = result["arn"].as_str().unwrap();
    assert!(
        arn.starts_with("arn:aws:sts::111122223333:assumed-role/s3-reader/eks-lab-web-0-"),
        "{result}"
    );
    assert_eq!(result["account"], "111122223333");
    let calls = x.moto.calls().await;
    let assume: Vec<_> = calls.iter().filter(|c| c.action == "AssumeRole").collect();
    assert_eq!(assume.len(), 1, "{calls:?}");
    assert_eq!(assume[0].tags().len(), 6);
    // The pod's GetCallerIdentity was signed with the credentials eks-auth got from moto.
    let ident = calls
        .iter()
        .rfind(|c| c.action == "GetCallerIdentity")
        .expect("the pod called moto");
    assert!(
        ident.access_key_id.as_deref().unwrap().starts_with("ASIA"),
        "{ident:?}"
    );
    let audit = x.eks_auth.wait_for_audit_lines(1).await;
    assert_eq!(audit[0].outcome.as_deref(), Some("success"));
    assert_eq!(audit[0].pod.k8s_pod.as_deref(), Some("web-0"));
    assert_eq!(audit[0].assumed_role_arn.as_deref(), Some(arn));
    // The agent proved who it is, and the pod's token was bound to its node.
    assert_eq!(
        audit[0].caller.as_deref(),
        Some("kube-system/eks-pod-identity-agent")
    );
    assert_eq!(audit[0].caller_node, audit[0].k8s_node);
    let identity = std::fs::read_to_string(x.dir.path().join(AGENT_IDENTITY_FILE)).unwrap();
    for log in [&x.eks_auth.stdout, &agent.stdout, &agent.stderr] {
        log.assert_no_secrets(&[token, identity.as_str()]);
    }
}

const BOTO_POD_SCRIPT: &str = r#"
import json, os, boto3
session = boto3.session.Session()
creds = session.get_credentials()
ident = session.client("sts", endpoint_url=os.environ["MOTO_URL"]).get_caller_identity()
print("SDK_RESULT " + json.dumps({"method": creds.method, "arn": ident["Arn"], "account": ident["Account"]}))
"#;

#[tokio::test]
async fn botocore_pod_gets_the_role_through_the_agent_and_eks_auth() {
    const TEST: &str = "botocore_pod_gets_the_role_through_the_agent_and_eks_auth";
    let Some(python) = python_with("boto3", ENV_REQUIRE_BOTOCORE, TEST) else {
        return;
    };
    let Some(x) = Exchange::start(TEST).await else {
        return;
    };
    let agent = start_agent(&x, &x.eks_auth.url()).await;
    let token = x.token().sign();
    let file = write_token_file(x.dir.path(), &token);
    let mut cmd = pod_command(python, &agent, &file, x.dir.path(), x.moto.url());
    cmd.args(["-c", BOTO_POD_SCRIPT]);
    let result = sdk_result(&Command::from(cmd).output().await.unwrap());
    assert_eq!(result["method"], "container-role");
    assert_the_pod_is_the_role(&x, &agent, &result, &token).await;
}

/// The Rust pod: runs in a child process whose environment is exactly the pod's. Ignored unless
/// the parent test starts it.
#[tokio::test]
#[ignore = "started as a child process by rust_sdk_pod_gets_the_role_through_the_agent_and_eks_auth"]
async fn rust_sdk_pod_child() {
    if std::env::var_os(RUST_SDK_CHILD).is_none() {
        return;
    }
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let moto = std::env::var("MOTO_URL").unwrap();
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&config)
            .endpoint_url(moto)
            .build(),
    );
    let ident = sts
        .get_caller_identity()
        .send()
        .await
        .expect("moto answers");
    println!(
        "SDK_RESULT {}",
        serde_json::json!({"arn": ident.arn(), "account": ident.account()})
    );
}

#[tokio::test]
async fn rust_sdk_pod_gets_the_role_through_the_agent_and_eks_auth() {
    let Some(x) =
        Exchange::start("rust_sdk_pod_gets_the_role_through_the_agent_and_eks_auth").await
    else {
        return;
    };
    let agent = start_agent(&x, &x.eks_auth.url()).await;
    let token = x.token().sign();
    let file = write_token_file(x.dir.path(), &token);
    let exe = std::env::current_exe().unwrap();
    let mut cmd = pod_command(exe, &agent, &file, x.dir.path(), x.moto.url());
    cmd.args(["rust_sdk_pod_child", "--exact", "--ignored", "--nocapture"])
        .env(RUST_SDK_CHILD, "1");
    let result = sdk_result(&Command::from(cmd).output().await.unwrap());
    assert_the_pod_is_the_role(&x, &agent, &result, &token).await;
}

const BOTO_EKS_AUTH_SCRIPT: &str = r#"
import json, os, boto3, botocore
c = boto3.client("eks-auth", endpoint_url=os.environ["EKS_AUTH_URL"], region_name="us-west-2",
                 aws_access_key_id="AKIDCALLEREXAMPLE", aws_secret_access_key="callersecret")
r = c.assume_role_for_pod_identity(clusterName="lab", token=os.environ["TOKEN"])
out = {
    "subject": r["subject"], "audience": r["audience"],
    "association": r["podIdentityAssociation"], "arn": r["assumedRoleUser"]["arn"],
    "assumeRoleId": r["assumedRoleUser"]["assumeRoleId"],
    "accessKeyId": r["credentials"]["accessKeyId"],
    "expiration": int(r["credentials"]["expiration"].timestamp()),
    "errors": {},
}
for name, cluster, token in [("expired", "lab", os.environ["EXPIRED"]),
                             ("cluster", "other", os.environ["TOKEN"]),
                             ("forged", "lab", os.environ["FORGED"])]:
    try:
        c.assume_role_for_pod_identity(clusterName=cluster, token=token)
        out["errors"][name] = None
    except botocore.exceptions.ClientError as e:
        modeled = type(e).__name__
        out["errors"][name] = [e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], modeled]
print("SDK_RESULT " + json.dumps(out))
"#;

#[tokio::test]
async fn boto3_eks_auth_client_works_against_eks_auth() {
    const TEST: &str = "boto3_eks_auth_client_works_against_eks_auth";
    let Some(python) = python_with("boto3", ENV_REQUIRE_BOTOCORE, TEST) else {
        return;
    };
    // boto3's client sends no caller token: served only by the explicit flag, said loudly.
    let Some(x) = Exchange::start_with(TEST, None, &["--allow-unauthenticated-callers"]).await
    else {
        return;
    };
    assert!(
        x.eks_auth.stdout.text().contains(
            "--allow-unauthenticated-callers: callers without their own token are served"
        )
    );
    let token = x.token().sign();
    let expired = x
        .token()
        .issued_at(now() - 7200)
        .not_before(now() - 7200)
        .expires_at(now() - 600)
        .sign();
    let forged = x.token().sign_with_key(&keys::SECOND);
    let out = Command::new(python)
        .args(["-c", BOTO_EKS_AUTH_SCRIPT])
        .env("EKS_AUTH_URL", x.eks_auth.url())
        .env("TOKEN", &token)
        .env("EXPIRED", &expired)
        .env("FORGED", &forged)
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    let r = sdk_result(&out);
    assert_eq!(
        r["subject"],
        serde_json::json!({"namespace": "default", "serviceAccount": "s3-reader"})
    );
    assert_eq!(r["audience"], "pods.eks.amazonaws.com");
    let id = r["association"]["associationId"].as_str().unwrap();
    assert_eq!(
        r["association"]["associationArn"],
        format!("arn:aws:eks:us-west-2:111122223333:podidentityassociation/lab/{id}")
    );
    assert!(
        r["arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:sts::111122223333:assumed-role/s3-reader/eks-lab-web-0-")
    );
    assert!(r["accessKeyId"].as_str().unwrap().starts_with("ASIA"));
    let lifetime = r["expiration"].as_i64().unwrap() - now();
    assert!(
        (6 * 3600 - 60..=6 * 3600 + 5).contains(&lifetime),
        "{lifetime}"
    );
    assert_eq!(
        r["errors"]["expired"],
        serde_json::json!(["ExpiredTokenException", 400, "ExpiredTokenException"])
    );
    assert_eq!(
        r["errors"]["cluster"],
        serde_json::json!([
            "ResourceNotFoundException",
            404,
            "ResourceNotFoundException"
        ])
    );
    assert_eq!(
        r["errors"]["forged"],
        serde_json::json!(["InvalidTokenException", 400, "InvalidTokenException"])
    );
    // Only the one good exchange reached STS, audited as unauthenticated.
    assert_eq!(x.moto.assume_role_calls().await.len(), 1);
    let audit = x.eks_auth.audit_lines();
    assert!(
        audit.iter().any(|l| l.outcome.as_deref() == Some("success")
            && l.caller.as_deref() == Some("unauthenticated")),
        "{audit:?}"
    );
    x.eks_auth
        .stdout
        .assert_no_secrets(&[token.as_str(), expired.as_str(), forged.as_str()]);
}

#[tokio::test]
async fn the_agent_trusts_eks_auth_private_ca_through_aws_ca_bundle_only() {
    let ca = TestCa::named("eks-auth private CA");
    let Some(x) = Exchange::start_with(
        "the_agent_trusts_eks_auth_private_ca_through_aws_ca_bundle_only",
        Some(&ca),
        &[],
    )
    .await
    else {
        return;
    };
    let endpoint = x.eks_auth.url();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let bundle = x.dir.path().join("ca.pem");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let token = x.token().sign();

    // Trusting the bundle: credentials, from eks-auth, from moto.
    let agent = start_agent_trusting(&x, &endpoint, &bundle).await;
    let trusted = agent.log_lines("EKS Auth client trusts the system's CAs and AWS_CA_BUNDLE's");
    assert_eq!(trusted.len(), 1, "{}", agent.stdout.text());
    assert_eq!(trusted[0]["ca_bundle"], bundle.to_str().unwrap());
    assert_eq!(trusted[0]["certificates"], 1);
    let (status, body) = agent.fetch(&token).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{body}"
    );
    assert_eq!(
        x.eks_auth.wait_for_audit_lines(1).await[0]
            .outcome
            .as_deref(),
        Some("success")
    );

    // The same agent without the bundle: the system's CAs do not know eks-auth's. The pod is
    // told plainly that EKS Auth is out of reach, the agent's audit line says why; eks-auth
    // never sees the request.
    let untrusting = start_agent(&x, &endpoint).await;
    let (status, body) = untrusting.fetch(&token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["message"], "the agent cannot reach EKS Auth; retry later",
        "{body}"
    );
    let refused = untrusting.request_logs(1).await;
    let detail = refused[0].error.message.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("cannot reach EKS Auth") && detail.contains("UnknownIssuer"),
        "{refused:?}"
    );
    assert_eq!(x.eks_auth.audit_lines().len(), 1);

    // eks-auth's certificate rotates to another CA without a restart: an agent that trusts only
    // that CA gets credentials from the same process.
    let next = TestCa::named("next eks-auth CA");
    let (cert, key) = tls_files(x.dir.path());
    next.issue().write(&cert, &key);
    x.eks_auth
        .stdout
        .wait_for_json(
            |l| l["message"] == "serving certificate reloaded",
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let next_bundle = x.dir.path().join("next-ca.pem");
    std::fs::write(&next_bundle, next.pem()).unwrap();
    let after = start_agent_trusting(&x, &endpoint, &next_bundle).await;
    let (status, body) = after.fetch(&token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(x.eks_auth.wait_for_audit_lines(2).await.len(), 2);
    assert_eq!(x.moto.assume_role_calls().await.len(), 2);

    for logs in [
        &x.eks_auth.stdout,
        &agent.stdout,
        &untrusting.stdout,
        &after.stdout,
    ] {
        logs.assert_no_secrets(&[token.as_str()]);
    }
}

const BOTO_EKS_AUTH_TLS_SCRIPT: &str = r#"
import json, os, boto3, botocore.config, botocore.exceptions
def call(verify):
    c = boto3.client("eks-auth", endpoint_url=os.environ["EKS_AUTH_URL"], region_name="us-west-2",
                     aws_access_key_id="AKIDCALLEREXAMPLE", aws_secret_access_key="callersecret",
                     verify=verify, config=botocore.config.Config(retries={"max_attempts": 1}))
    return c.assume_role_for_pod_identity(clusterName="lab", token=os.environ["TOKEN"])
out = {"arn": call(os.environ["CA_FILE"])["assumedRoleUser"]["arn"]}
try:
    call(True)
    out["default_trust"] = None
except botocore.exceptions.SSLError as e:
    out["default_trust"] = str(e)
print("SDK_RESULT " + json.dumps(out))
"#;

#[tokio::test]
async fn boto3_eks_auth_client_verifies_eks_auth_with_the_private_ca() {
    const TEST: &str = "boto3_eks_auth_client_verifies_eks_auth_with_the_private_ca";
    let Some(python) = python_with("boto3", ENV_REQUIRE_BOTOCORE, TEST) else {
        return;
    };
    let ca = TestCa::named("eks-auth private CA");
    // boto3's client sends no caller token: served only by the explicit flag.
    let Some(x) = Exchange::start_with(TEST, Some(&ca), &["--allow-unauthenticated-callers"]).await
    else {
        return;
    };
    let ca_file = x.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let token = x.token().sign();
    let out = Command::new(python)
        .args(["-c", BOTO_EKS_AUTH_TLS_SCRIPT])
        .env("EKS_AUTH_URL", x.eks_auth.url())
        .env("CA_FILE", &ca_file)
        .env("TOKEN", &token)
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .output()
        .await
        .unwrap();
    let r = sdk_result(&out);
    assert!(
        r["arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:sts::111122223333:assumed-role/s3-reader/eks-lab-web-0-"),
        "{r}"
    );
    // botocore's own CAs (certifi) do not include the private one.
    let refused = r["default_trust"].as_str().unwrap();
    assert!(refused.contains("CERTIFICATE_VERIFY_FAILED"), "{refused}");
    assert_eq!(x.moto.assume_role_calls().await.len(), 1);
    x.eks_auth.stdout.assert_no_secrets(&[token.as_str()]);
}
