//! The lab STS's `AssumeRoleWithWebIdentity` against the real aws-sdk-sts client, with tokens
//! from the lab's issuer: how eks-auth runs without static keys. Each refusal AWS documents for a
//! bad token, and the role chaining that follows (pod roles assumed from a web identity session
//! get at most an hour).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;
use pod_identity_lab::issuer::{LabIssuer, TokenRequest};
use pod_identity_lab::sts::{
    LabClock, LabSts, OidcProvider, Role, RunningSts, SignatureVerdict, StsConfig, StsOutcome,
    WebIdentityCaller, WebIdentityTrust,
};

const ACCOUNT: &str = "111122223333";
const EKS_AUTH_ROLE: &str = "arn:aws:iam::111122223333:role/eks-auth";
const POD_ROLE: &str = "arn:aws:iam::111122223333:role/pods/s3-reader";
const OTHER_POD_ROLE: &str = "arn:aws:iam::111122223333:role/pods/queue-reader";
/// A role in an account with no OIDC provider for the issuer.
const FOREIGN_ROLE: &str = "arn:aws:iam::444455556666:role/eks-auth";
const SUBJECT: &str = "system:serviceaccount:pod-identity-system:eks-auth";
const STS_AUDIENCE: &str = "sts.amazonaws.com";

struct Lab {
    issuer: LabIssuer,
    sts: RunningSts,
}

async fn lab() -> Lab {
    let issuer = LabIssuer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sts = start_sts(&issuer, LabClock::new()).await;
    Lab { issuer, sts }
}

async fn start_sts(issuer: &LabIssuer, clock: LabClock) -> RunningSts {
    let trust = WebIdentityTrust {
        issuer: issuer.url().to_string(),
        subject: SUBJECT.into(),
        audience: STS_AUDIENCE.into(),
    };
    let config = StsConfig::new()
        .oidc_provider(OidcProvider::new(issuer.url(), ACCOUNT).client_id(STS_AUDIENCE))
        .role(
            Role::new(EKS_AUTH_ROLE)
                .trust_web_identity(trust.clone())
                .max_session_duration(Duration::from_secs(4 * 3600)),
        )
        .role(Role::new(FOREIGN_ROLE).trust_web_identity(trust))
        .role(
            Role::new(POD_ROLE)
                .trust(EKS_AUTH_ROLE)
                .max_session_duration(Duration::from_secs(12 * 3600)),
        )
        .role(
            Role::new(OTHER_POD_ROLE)
                .trust(EKS_AUTH_ROLE)
                .max_session_duration(Duration::from_secs(12 * 3600)),
        )
        .clock(clock);
    LabSts::new(config)
        .unwrap()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A token for eks-auth's pod, as the kubelet projects it.
fn token(issuer: &LabIssuer, service_account: &str, audience: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    issuer
        .mint(&TokenRequest {
            namespace: "pod-identity-system".into(),
            service_account: service_account.into(),
            service_account_uid: "0f0e0d0c-sa".into(),
            pod: "eks-auth-6d9c-abcde".into(),
            pod_uid: "0b6c7d1e-uid".into(),
            node: "node-1".into(),
            node_uid: "9a8b7c6d-node".into(),
            audience: audience.into(),
            issued_at: now,
            expiration_seconds: 3600,
        })
        .unwrap()
        .token
        .expose()
        .to_string()
}

/// A client without credentials: `AssumeRoleWithWebIdentity` is unsigned.
fn anonymous(url: &str) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

async fn exchange(
    lab_sts: &RunningSts,
    role: &str,
    token: &str,
    duration: Option<i32>,
) -> Result<
    aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput,
    (String, String),
> {
    anonymous(lab_sts.url())
        .assume_role_with_web_identity()
        .role_arn(role)
        .role_session_name("eks-auth")
        .web_identity_token(token)
        .set_duration_seconds(duration)
        .send()
        .await
        .map_err(|e| {
            (
                e.code().unwrap_or("none").to_string(),
                e.message().unwrap_or("").to_string(),
            )
        })
}

#[tokio::test]
async fn a_service_account_token_buys_a_session_that_chains_for_at_most_an_hour() {
    let lab = lab().await;
    let jwt = token(&lab.issuer, "eks-auth", STS_AUDIENCE);
    let out = exchange(&lab.sts, EKS_AUTH_ROLE, &jwt, Some(7200))
        .await
        .unwrap();
    assert_eq!(out.subject_from_web_identity_token(), Some(SUBJECT));
    assert_eq!(out.audience(), Some(STS_AUDIENCE));
    assert_eq!(out.provider(), Some(lab.issuer.url()));
    let user = out.assumed_role_user().unwrap();
    assert_eq!(
        user.arn(),
        "arn:aws:sts::111122223333:assumed-role/eks-auth/eks-auth"
    );
    let creds = out.credentials().unwrap();
    assert!(creds.access_key_id().starts_with("ASIA"));
    let left = SystemTime::try_from(*creds.expiration())
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(7100) && left <= Duration::from_secs(7200),
        "{left:?}"
    );

    let event = lab.sts.events().pop().unwrap();
    assert_eq!(event.signature, SignatureVerdict::NotRequired);
    assert_eq!(
        event.web_identity,
        Some(WebIdentityCaller {
            provider_arn: format!(
                "arn:aws:iam::{ACCOUNT}:oidc-provider/{}",
                lab.issuer.url().trim_start_matches("http://")
            ),
            subject: SUBJECT.into(),
            audience: STS_AUDIENCE.into(),
        })
    );
    let fingerprint = pod_identity_contracts::Secret::new(jwt.clone()).fingerprint();
    assert_eq!(
        event.web_identity_token.as_deref(),
        Some(fingerprint.as_str())
    );
    assert!(!format!("{event:?}").contains(&jwt));

    // The session signs like any other: it is eks-auth's identity, and pod roles trusting the
    // role accept it, for an hour at most (role chaining).
    let signed = aws_sdk_sts::Client::new(&session_config(creds, Some(lab.sts.url())));
    let me = signed.get_caller_identity().send().await.unwrap();
    assert_eq!(me.arn(), Some(user.arn()));
    assert_eq!(me.account(), Some(ACCOUNT));
    let six_hours = signed
        .assume_role()
        .role_arn(POD_ROLE)
        .role_session_name("eks-lab-web-0")
        .duration_seconds(6 * 3600)
        .send()
        .await
        .unwrap_err();
    assert_eq!(six_hours.code(), Some("ValidationError"));
    assert!(
        six_hours.message().unwrap_or_default().contains(
            "DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining"
        ),
        "{six_hours:?}"
    );
    let pod = signed
        .assume_role()
        .role_arn(POD_ROLE)
        .role_session_name("eks-lab-web-0")
        .duration_seconds(3600)
        .send()
        .await
        .unwrap();
    assert_eq!(
        pod.assumed_role_user().unwrap().arn(),
        "arn:aws:sts::111122223333:assumed-role/s3-reader/eks-lab-web-0"
    );
}

/// eks-auth on a web identity session: the one-hour chaining cap is its own, so it climbs down
/// the duration ladder once and then asks every role for an hour straight away.
#[tokio::test]
async fn keyless_eks_auth_learns_the_chaining_cap_once_for_every_role() {
    use eks_auth::sts::{AssumeSpec, RoleAssumer, SdkAssumer};
    let lab = lab().await;
    let out = exchange(
        &lab.sts,
        EKS_AUTH_ROLE,
        &token(&lab.issuer, "eks-auth", STS_AUDIENCE),
        None,
    )
    .await
    .unwrap();
    let creds = out.credentials().unwrap();
    let sdk = session_config(creds, None);
    let assumer = SdkAssumer::new(&sdk, Some(lab.sts.url()), eks_auth::metrics::Metrics::new());
    let spec = |role: &str| AssumeSpec {
        role_arn: role.into(),
        target_role_arn: None,
        session_name: "eks-lab-web-0".into(),
        tags: Vec::new(),
        policy: None,
        max_duration: Duration::from_secs(86_400),
    };
    let asked = |from: usize| -> Vec<String> {
        lab.sts.events()[from..]
            .iter()
            .filter_map(|e| e.duration_seconds.clone())
            .collect()
    };
    let before = lab.sts.events().len();
    let first = assumer.assume(spec(POD_ROLE)).await.unwrap();
    assert_eq!(first.requested, Duration::from_secs(3600));
    assert_eq!(asked(before), ["21600", "10800", "7200", "3600"]);
    let before = lab.sts.events().len();
    let second = assumer.assume(spec(OTHER_POD_ROLE)).await.unwrap();
    assert_eq!(second.requested, Duration::from_secs(3600));
    assert_eq!(asked(before), ["3600"]);

    // Told at start that it is a role session (what GetCallerIdentity says of a keyless
    // eks-auth), an assumer asks for an hour from the first exchange.
    let told = SdkAssumer::new(&sdk, Some(lab.sts.url()), eks_auth::metrics::Metrics::new());
    let me = told.identity().await.unwrap();
    assert!(me.is_role_session() && !me.is_long_term_user(), "{me:?}");
    told.set_role_session();
    let before = lab.sts.events().len();
    told.assume(spec(POD_ROLE)).await.unwrap();
    assert_eq!(asked(before), ["3600"]);
}

#[tokio::test]
async fn tokens_aws_would_refuse_are_refused_with_its_codes() {
    let lab = lab().await;
    let good = token(&lab.issuer, "eks-auth", STS_AUDIENCE);

    // Another audience: the provider accepts sts.amazonaws.com only.
    let e = exchange(
        &lab.sts,
        EKS_AUTH_ROLE,
        &token(&lab.issuer, "eks-auth", "pods.eks.amazonaws.com"),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        (
            "InvalidIdentityToken".into(),
            "Incorrect token audience".into()
        )
    );

    // Another service account of the same cluster: the role's trust names eks-auth's only.
    let e = exchange(
        &lab.sts,
        EKS_AUTH_ROLE,
        &token(&lab.issuer, "default", STS_AUDIENCE),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        (
            "AccessDenied".into(),
            "Not authorized to perform sts:AssumeRoleWithWebIdentity".into()
        )
    );

    // A role of an account that registered no provider for this issuer.
    let e = exchange(&lab.sts, FOREIGN_ROLE, &good, None)
        .await
        .unwrap_err();
    assert_eq!(e.0, "InvalidIdentityToken");
    assert_eq!(
        e.1,
        format!(
            "No OpenIDConnect provider found in your account for {}",
            lab.issuer.url()
        )
    );

    // Another issuer's token (its own keys, its own iss): no provider either.
    let stranger = LabIssuer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let e = exchange(
        &lab.sts,
        EKS_AUTH_ROLE,
        &token(&stranger, "eks-auth", STS_AUDIENCE),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.0, "InvalidIdentityToken");

    // A stranger's token claiming the registered issuer: the signature does not verify.
    let forged = forge_issuer(
        &token(&stranger, "eks-auth", STS_AUDIENCE),
        lab.issuer.url(),
    );
    let e = exchange(&lab.sts, EKS_AUTH_ROLE, &forged, None)
        .await
        .unwrap_err();
    assert_eq!(e.0, "InvalidIdentityToken");
    assert!(e.1.contains("could not be validated"), "{e:?}");

    // Not a JWT at all; a role session longer than the role allows.
    let e = exchange(&lab.sts, EKS_AUTH_ROLE, "not.a.jwt", None)
        .await
        .unwrap_err();
    assert_eq!(e.0, "InvalidIdentityToken");
    let e = exchange(&lab.sts, EKS_AUTH_ROLE, &good, Some(5 * 3600))
        .await
        .unwrap_err();
    assert_eq!(e.0, "ValidationError");
    assert!(e.1.contains("MaxSessionDuration"), "{e:?}");

    // No refusal quotes a token, and every event carries fingerprints only.
    for event in lab.sts.events() {
        let text = format!("{event:?}");
        assert!(!text.contains(&good) && !text.contains(&forged), "{text}");
        if let StsOutcome::Refused { message, .. } = &event.outcome {
            assert!(!message.contains("eyJ"), "{message}");
        }
    }
}

#[tokio::test]
async fn expired_tokens_and_an_unreachable_issuer() {
    let issuer = LabIssuer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let clock = LabClock::new();
    let sts = start_sts(&issuer, clock.clone()).await;
    let jwt = token(&issuer, "eks-auth", STS_AUDIENCE);
    clock.advance(Duration::from_secs(3601));
    let e = exchange(&sts, EKS_AUTH_ROLE, &jwt, None).await.unwrap_err();
    assert_eq!(e.0, "ExpiredTokenException");
    assert!(
        e.1.starts_with("Token expired: current date/time "),
        "{e:?}"
    );

    // The issuer's discovery is gone: STS cannot fetch a key to verify with.
    let fresh = LabClock::new();
    let sts = start_sts(&issuer, fresh).await;
    drop(issuer);
    let e = exchange(&sts, EKS_AUTH_ROLE, &jwt, None).await.unwrap_err();
    assert_eq!(e.0, "IDPCommunicationError");
}

#[tokio::test]
async fn providers_are_checked_before_listening() {
    for (provider, why) in [
        (
            OidcProvider::new("ftp://issuer", ACCOUNT).client_id(STS_AUDIENCE),
            "not an http(s) URL",
        ),
        (
            OidcProvider::new("https://issuer", "12").client_id(STS_AUDIENCE),
            "12 digits",
        ),
        (OidcProvider::new("https://issuer", ACCOUNT), "no client id"),
    ] {
        let e = LabSts::new(StsConfig::new().oidc_provider(provider)).unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
    let twice = StsConfig::new()
        .oidc_provider(OidcProvider::new("https://issuer", ACCOUNT).client_id("a"))
        .oidc_provider(OidcProvider::new("https://issuer", ACCOUNT).client_id("b"));
    assert!(LabSts::new(twice).is_err());
}

/// An SDK config signing with the web identity session's credentials.
fn session_config(
    creds: &aws_sdk_sts::types::Credentials,
    endpoint: Option<&str>,
) -> aws_config::SdkConfig {
    let session = Credentials::new(
        creds.access_key_id(),
        creds.secret_access_key(),
        Some(creds.session_token().to_string()),
        None,
        "web-identity",
    );
    let mut config = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(session),
        );
    if let Some(url) = endpoint {
        config = config.endpoint_url(url);
    }
    config.build()
}

/// `token` with its payload's `iss` replaced (the signature no longer matches).
fn forge_issuer(token: &str, iss: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["iss"] = iss.into();
    let payload = engine.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}
