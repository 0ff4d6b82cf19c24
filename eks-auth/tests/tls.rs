//! The `eks-auth` binary with `--tls-cert` / `--tls-key`: the API over HTTPS, a rotated
//! certificate served without a restart, a broken rotation ignored, a broken pair at startup
//! refused with exit 64, and plain HTTP (no flags) with its warning. A fake issuer, no STS: the
//! API's answer to a garbage token is enough to show which TLS served it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{CLUSTER, CLUSTER_ARN, bin, write};
use pod_identity_test_support::eks_auth_process::{EksAuthOptions, EksAuthProcess, EksAuthTls};
use pod_identity_test_support::fake_issuer::FakeIssuer;
use pod_identity_test_support::tls::{TestCa, write_atomic};
use pod_identity_test_support::tokens::{TokenBuilder, jwks};

const PLAIN_WARNING: &str = "cross the network in clear";

fn options(dir: &Path, issuer: String) -> EksAuthOptions {
    let associations = dir.join("associations.yaml");
    write(&associations, common::ASSOCIATIONS);
    EksAuthOptions {
        cluster_name: CLUSTER.into(),
        issuer,
        associations,
        // Nothing here reaches STS: every request below is refused before it.
        sts_endpoint: Some("http://127.0.0.1:9".into()),
        cluster_arn: Some(CLUSTER_ARN.into()),
        ..EksAuthOptions::default()
    }
}

/// `Ok(status)` of a garbage-token exchange through `client`, or the error's full chain.
async fn exchange_status(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    client
        .post(format!(
            "{url}{}",
            pod_identity_contracts::eks_auth::request_path(CLUSTER)
        ))
        .header("content-type", "application/json")
        .body(r#"{"token":"not-a-jwt"}"#)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn serves_https_and_picks_up_a_rotated_certificate_without_restarting() {
    let issuer = FakeIssuer::start(jwks()).await;
    let dir = tempfile::tempdir().unwrap();
    let (first_ca, next_ca) = (TestCa::named("first CA"), TestCa::named("next CA"));
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    first_ca.issue().write(&cert, &key);
    let opts = EksAuthOptions {
        tls: Some(EksAuthTls {
            cert: cert.clone(),
            key: key.clone(),
            ca_pem: first_ca.pem(),
        }),
        ..options(dir.path(), issuer.url())
    };
    let mut p = EksAuthProcess::start(&bin(), &opts).await;
    p.caller_token = Some(TokenBuilder::agent().issuer(issuer.url()).sign());
    let pid = p.child.id();
    let url = p.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // The API answers over HTTPS, with its own error for a garbage token.
    let answer = p.exchange(CLUSTER, "not-a-jwt").await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.error_type, "InvalidTokenException");
    let listening = p
        .stdout
        .json_lines()
        .into_iter()
        .find(|l| l["message"] == "listening" && l["listener"] == "api")
        .unwrap();
    assert_eq!(listening["tls"], true, "{listening}");
    assert!(!p.stdout.text().contains(PLAIN_WARNING));
    // Plain HTTP on the API port gets no answer; the admin port stays plain.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let http_url = url.replacen("https://", "http://", 1);
    assert!(exchange_status(&plain, &http_url).await.is_err());
    assert_eq!(
        plain
            .get(p.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A client that trusts only the next CA is refused until the rotation.
    let next_only = next_ca.https_client();
    let refused = exchange_status(&next_only, &url).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    next_ca.issue().write(&cert, &key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match exchange_status(&next_ca.https_client(), &url).await {
            Ok(status) => {
                assert_eq!(status, 400);
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the rotated certificate is not served: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.stdout
        .wait_for_json(
            |l| l["message"] == "serving certificate reloaded",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    // New connections no longer get the first CA's certificate.
    let old = exchange_status(&first_ca.https_client(), &url)
        .await
        .unwrap_err();
    assert!(old.contains("UnknownIssuer"), "{old}");

    // Garbage in place of the certificate: a warning, and the rotated pair keeps serving.
    write_atomic(&cert, "not a certificate");
    let warning = p
        .stdout
        .wait_for_json(
            |l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("keeping the previous one"))
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["error"].as_str().unwrap().contains("tls.crt"),
        "{warning}"
    );
    assert_eq!(
        exchange_status(&next_ca.https_client(), &url).await,
        Ok(400)
    );
    let metrics = p.metrics().await;
    for line in [
        "eks_auth_tls_reloads_total{result=\"ok\"} 1",
        "eks_auth_tls_reloads_total{result=\"error\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    // All of it in one process.
    assert!(p.child.try_wait().unwrap().is_none());
    assert_eq!(p.child.id(), pid);
    assert!(!p.stderr.text().contains("panicked"), "{}", p.stderr.text());
}

#[tokio::test]
async fn a_half_or_broken_certificate_pair_exits_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (one, two) = (ca.issue(), ca.issue());
    let path = |name: &str| dir.path().join(name);
    let file = |name: &str, text: &str| {
        write(&path(name), text);
        path(name).to_str().unwrap().to_string()
    };
    let good_cert = file("good.crt", &one.cert_pem);
    let good_key = file("good.key", &one.key_pem);
    let other_key = file("other.key", &two.key_pem);
    let garbage = file("garbage.pem", "not PEM at all");
    let missing = path("missing.crt").to_str().unwrap().to_string();
    let base = options(dir.path(), "https://issuer.test".into());
    let flags = |cert: &str, key: &str| {
        ["--tls-cert", cert, "--tls-key", key]
            .map(str::to_string)
            .to_vec()
    };
    let cases: Vec<(EksAuthOptions, &str)> = vec![
        (
            EksAuthOptions {
                extra: vec!["--tls-cert".into(), good_cert.clone()],
                ..base.clone()
            },
            "--tls-cert is set but --tls-key is not",
        ),
        (
            // The variable counts like the flag.
            EksAuthOptions {
                env: vec![("EKS_AUTH_TLS_KEY".into(), good_key.clone())],
                ..base.clone()
            },
            "--tls-key is set but --tls-cert is not",
        ),
        (
            EksAuthOptions {
                extra: flags(&garbage, &good_key),
                ..base.clone()
            },
            "garbage.pem: no PEM certificate found",
        ),
        (
            EksAuthOptions {
                extra: flags(&good_cert, &garbage),
                ..base.clone()
            },
            "garbage.pem: no PEM private key found",
        ),
        (
            EksAuthOptions {
                extra: flags(&good_cert, &other_key),
                ..base.clone()
            },
            "do not form a usable pair",
        ),
        (
            EksAuthOptions {
                extra: flags(&missing, &good_key),
                ..base.clone()
            },
            "cannot read",
        ),
    ];
    for (opts, want) in cases {
        common::assert_refused(&opts, want).await;
    }
}

#[tokio::test]
async fn without_a_certificate_it_serves_plain_http_and_says_so_once() {
    let issuer = FakeIssuer::start(jwks()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = EksAuthProcess::start(&bin(), &options(dir.path(), issuer.url())).await;
    p.caller_token = Some(TokenBuilder::agent().issuer(issuer.url()).sign());
    assert!(p.url().starts_with("http://"));
    assert_eq!(p.exchange(CLUSTER, "not-a-jwt").await.status, 400);
    let warnings: Vec<_> = p
        .stdout
        .json_lines()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains(PLAIN_WARNING))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{}", p.stdout.text());
    assert_eq!(warnings[0]["level"], "WARN");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("--tls-cert and --tls-key")
    );
}
