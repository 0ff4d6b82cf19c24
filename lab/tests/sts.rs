//! The lab's STS against the real aws-sdk-sts client (and eks-auth's own `SdkAssumer`), plus raw
//! HTTP requests no SDK would send.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::Tag;
use pod_identity_contracts::Secret;
use pod_identity_lab::sts::{
    AccessKey, LabSts, LabStsError, Role, RunningSts, SessionTag, SignatureVerdict, StsConfig,
    StsEvent, StsOutcome,
};

const ACCOUNT: &str = "111122223333";
const EKS_AUTH: &str = "arn:aws:iam::111122223333:user/eks-auth";
const MALLORY: &str = "arn:aws:iam::444455556666:user/mallory";
/// MaxSessionDuration 1 h (the default), trusts eks-auth.
const POD_ROLE: &str = "arn:aws:iam::111122223333:role/pods/s3-reader";
/// MaxSessionDuration 2 h, trusts eks-auth.
const TWO_HOUR_ROLE: &str = "arn:aws:iam::111122223333:role/batch";
/// Trusts sessions of POD_ROLE (role chaining).
const TARGET_ROLE: &str = "arn:aws:iam::111122223333:role/target";
const EKS_TAGS: [(&str, &str); 6] = [
    (
        "eks-cluster-arn",
        "arn:aws:eks:us-east-1:111122223333:cluster/lab",
    ),
    ("eks-cluster-name", "lab"),
    ("kubernetes-namespace", "default"),
    ("kubernetes-service-account", "s3-reader"),
    ("kubernetes-pod-name", "web-0"),
    ("kubernetes-pod-uid", "0b6c7d1e-uid"),
];

struct Lab {
    sts: RunningSts,
    eks_auth: AccessKey,
    mallory: AccessKey,
}

async fn lab() -> Lab {
    let eks_auth = AccessKey::generate();
    let mallory = AccessKey::generate();
    let config = StsConfig::new()
        .static_key(eks_auth.clone(), EKS_AUTH)
        .static_key(mallory.clone(), MALLORY)
        .role(Role::new(POD_ROLE).trust(EKS_AUTH))
        .role(
            Role::new(TWO_HOUR_ROLE)
                .trust(EKS_AUTH)
                .max_session_duration(Duration::from_secs(7200)),
        )
        .role(Role::new(TARGET_ROLE).trust(POD_ROLE));
    let sts = LabSts::new(config)
        .unwrap()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Lab {
        sts,
        eks_auth,
        mallory,
    }
}

fn client(url: &str, key: &AccessKey, token: Option<&Secret>) -> aws_sdk_sts::Client {
    let creds = Credentials::new(
        &key.access_key_id,
        key.secret_access_key.expose(),
        token.map(|t| t.expose().to_string()),
        None,
        "test",
    );
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(creds)
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

/// Temporary credentials as the SDK returned them.
struct Issued {
    key: AccessKey,
    token: Secret,
    arn: String,
    role_id: String,
    expiration: SystemTime,
    packed: Option<i32>,
}

async fn assume(
    client: &aws_sdk_sts::Client,
    role: &str,
    session: &str,
    tags: &[(&str, &str)],
    duration: Option<i32>,
) -> Result<Issued, (String, String, u16)> {
    let tags: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
        .collect();
    let transitive: Vec<String> = tags.iter().map(|t| t.key().to_string()).collect();
    let out = client
        .assume_role()
        .role_arn(role)
        .role_session_name(session)
        .set_duration_seconds(duration)
        .set_tags((!tags.is_empty()).then_some(tags))
        .set_transitive_tag_keys((!transitive.is_empty()).then_some(transitive))
        .send()
        .await
        .map_err(sdk_error)?;
    let creds = out.credentials().unwrap();
    let user = out.assumed_role_user().unwrap();
    Ok(Issued {
        key: AccessKey::new(
            creds.access_key_id(),
            Secret::new(creds.secret_access_key()),
        ),
        token: Secret::new(creds.session_token()),
        arn: user.arn().to_string(),
        role_id: user.assumed_role_id().to_string(),
        expiration: SystemTime::try_from(*creds.expiration()).unwrap(),
        packed: out.packed_policy_size(),
    })
}

/// (code, message, HTTP status) of a service error; panics on anything else.
fn sdk_error<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> (String, String, u16)
where
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    let e = err
        .as_service_error()
        .unwrap_or_else(|| panic!("not a service error: {err:?}"));
    (
        e.code().unwrap_or_default().to_string(),
        e.message().unwrap_or_default().to_string(),
        status,
    )
}

async fn caller_identity(
    client: &aws_sdk_sts::Client,
) -> Result<(String, String, String), (String, String, u16)> {
    let out = client
        .get_caller_identity()
        .send()
        .await
        .map_err(sdk_error)?;
    Ok((
        out.arn().unwrap_or_default().to_string(),
        out.user_id().unwrap_or_default().to_string(),
        out.account().unwrap_or_default().to_string(),
    ))
}

/// The message of an `AssumeRole` that had to be refused with `code` and `status`.
#[track_caller]
fn refused(result: Result<Issued, (String, String, u16)>, code: &str, status: u16) -> String {
    match result {
        Ok(issued) => panic!("issued {} where {code} was expected", issued.arn),
        Err((got, message, got_status)) => {
            assert_eq!((got.as_str(), got_status), (code, status), "{message}");
            message
        }
    }
}

fn last_event(lab: &Lab) -> StsEvent {
    lab.sts.events().pop().expect("an event")
}

fn refused_code(event: &StsEvent) -> &str {
    match &event.outcome {
        StsOutcome::Refused { code, .. } => code,
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn get_caller_identity_with_static_keys() {
    let lab = lab().await;
    let (arn, user_id, account) = caller_identity(&client(lab.sts.url(), &lab.eks_auth, None))
        .await
        .unwrap();
    assert_eq!(arn, EKS_AUTH);
    assert_eq!(account, ACCOUNT);
    assert!(
        user_id.starts_with("AIDA") && user_id.len() == 21,
        "{user_id}"
    );

    let e = last_event(&lab);
    assert_eq!(e.action.as_deref(), Some("GetCallerIdentity"));
    assert_eq!(e.signature, SignatureVerdict::Valid);
    assert_eq!(e.caller_arn.as_deref(), Some(EKS_AUTH));
    let short = e.caller_access_key_id.unwrap();
    assert!(
        lab.eks_auth
            .access_key_id
            .starts_with(short.trim_end_matches('…'))
    );
    assert_ne!(short, lab.eks_auth.access_key_id);
    assert_eq!(
        e.outcome,
        StsOutcome::CallerIdentity {
            arn: EKS_AUTH.into(),
            account: ACCOUNT.into()
        }
    );
}

#[tokio::test]
async fn assumed_role_credentials_identify_as_the_session() {
    let lab = lab().await;
    let mut live = lab.sts.subscribe();
    let eks_auth = client(lab.sts.url(), &lab.eks_auth, None);
    let before = SystemTime::now();
    let issued = assume(&eks_auth, POD_ROLE, "eks-lab-web-0-abc", &EKS_TAGS, None)
        .await
        .unwrap();
    assert_eq!(
        issued.arn,
        "arn:aws:sts::111122223333:assumed-role/s3-reader/eks-lab-web-0-abc"
    );
    assert!(issued.role_id.starts_with("AROA") && issued.role_id.ends_with(":eks-lab-web-0-abc"));
    assert!(issued.key.access_key_id.starts_with("ASIA"));
    assert_eq!(issued.key.access_key_id.len(), 20);
    assert_eq!(issued.key.secret_access_key.expose().len(), 40);
    let lifetime = issued.expiration.duration_since(before).unwrap();
    assert!(
        lifetime > Duration::from_secs(3590) && lifetime <= Duration::from_secs(3601),
        "{lifetime:?}"
    );
    assert!(issued.packed.is_some_and(|p| p > 0 && p < 100));

    let event = live.recv().await.unwrap();
    assert_eq!(event.action.as_deref(), Some("AssumeRole"));
    assert_eq!(event.role_arn.as_deref(), Some(POD_ROLE));
    assert_eq!(
        event.role_session_name.as_deref(),
        Some("eks-lab-web-0-abc")
    );
    assert_eq!(event.tags.len(), 6);
    assert_eq!(event.tags[2].key, "kubernetes-namespace");
    assert_eq!(event.transitive_tag_keys.len(), 6);
    assert!(!event.policy_present);
    assert_eq!(event.duration_seconds, None);
    let StsOutcome::Issued {
        access_key_id,
        assumed_role_arn,
        duration_seconds,
        ..
    } = &event.outcome
    else {
        panic!("{event:?}");
    };
    assert_eq!(assumed_role_arn, &issued.arn);
    assert_eq!(*duration_seconds, 3600);
    assert!(
        issued
            .key
            .access_key_id
            .starts_with(access_key_id.trim_end_matches('…'))
    );

    let pod = client(lab.sts.url(), &issued.key, Some(&issued.token));
    let (arn, user_id, account) = caller_identity(&pod).await.unwrap();
    assert_eq!(arn, issued.arn);
    assert_eq!(user_id, issued.role_id);
    assert_eq!(account, ACCOUNT);
    let event = live.recv().await.unwrap();
    assert_eq!(event.caller_arn.as_deref(), Some(issued.arn.as_str()));
    assert_eq!(event.signature, SignatureVerdict::Valid);
}

#[tokio::test]
async fn role_chaining_carries_transitive_tags_and_caps_the_duration() {
    let lab = lab().await;
    let eks_auth = client(lab.sts.url(), &lab.eks_auth, None);
    let first = assume(&eks_auth, POD_ROLE, "first", &EKS_TAGS, None)
        .await
        .unwrap();
    let session = client(lab.sts.url(), &first.key, Some(&first.token));

    let message = refused(
        assume(&session, TARGET_ROLE, "second", &[], Some(7200)).await,
        "ValidationError",
        400,
    );
    assert_eq!(
        message,
        "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
    );

    let second = assume(&session, TARGET_ROLE, "second", &[], Some(3600))
        .await
        .unwrap();
    assert_eq!(
        second.arn,
        "arn:aws:sts::111122223333:assumed-role/target/second"
    );
    let event = last_event(&lab);
    assert_eq!(event.caller_arn.as_deref(), Some(first.arn.as_str()));
    let expected: Vec<SessionTag> = EKS_TAGS
        .iter()
        .map(|(k, v)| SessionTag {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect();
    assert_eq!(event.inherited_tags, expected);
    assert!(event.tags.is_empty());

    // The carried tags stay transitive: a third hop inherits them too.
    let target = client(lab.sts.url(), &second.key, Some(&second.token));
    let (arn, ..) = caller_identity(&target).await.unwrap();
    assert_eq!(arn, second.arn);
    // (The target trusts only s3-reader sessions, so the hop is refused, but after tagging.)
    refused(
        assume(&target, TARGET_ROLE, "third", &[], None).await,
        "AccessDenied",
        403,
    );
    assert_eq!(last_event(&lab).inherited_tags, expected);

    // A chained session may not set an inherited tag again.
    let again = assume(
        &session,
        TARGET_ROLE,
        "again",
        &[("kubernetes-namespace", "other")],
        None,
    );
    refused(again.await, "InvalidParameterValue", 400);
}

#[tokio::test]
async fn durations_over_the_role_maximum_use_the_message_eks_auth_falls_back_on() {
    let lab = lab().await;
    let eks_auth = client(lab.sts.url(), &lab.eks_auth, None);
    let message = refused(
        assume(&eks_auth, TWO_HOUR_ROLE, "sess", &[], Some(3 * 3600)).await,
        "ValidationError",
        400,
    );
    assert_eq!(
        message,
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
    );
    let ok = assume(&eks_auth, TWO_HOUR_ROLE, "sess", &[], Some(7200))
        .await
        .unwrap();
    let lifetime = ok.expiration.duration_since(SystemTime::now()).unwrap();
    assert!(lifetime > Duration::from_secs(7100), "{lifetime:?}");
}

/// eks-auth's own STS client, ladder and chaining, against the lab's STS.
#[tokio::test]
async fn eks_auth_climbs_down_its_duration_ladder_and_chains() {
    use eks_auth::sts::{AssumeSpec, RoleAssumer, SdkAssumer, SessionTag as EksTag};
    let lab = lab().await;
    let creds = Credentials::new(
        &lab.eks_auth.access_key_id,
        lab.eks_auth.secret_access_key.expose(),
        None,
        None,
        "test",
    );
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
        .build();
    let assumer = SdkAssumer::new(&sdk, Some(lab.sts.url()), eks_auth::metrics::Metrics::new());
    let tags: Vec<EksTag> = EKS_TAGS
        .iter()
        .map(|(k, v)| EksTag {
            key: k,
            value: (*v).to_string(),
        })
        .collect();

    let got = assumer
        .assume(AssumeSpec {
            role_arn: TWO_HOUR_ROLE.into(),
            target_role_arn: None,
            session_name: "eks-lab-web-0-ladder".into(),
            tags: tags.clone(),
            policy: None,
            // A fresh 24 h token: the whole ladder.
            max_duration: Duration::from_secs(86_400),
        })
        .await
        .unwrap();
    assert_eq!(got.requested, Duration::from_secs(7200));
    assert_eq!(
        got.assumed_role_arn,
        "arn:aws:sts::111122223333:assumed-role/batch/eks-lab-web-0-ladder"
    );
    let asked: Vec<Option<String>> = lab
        .sts
        .events()
        .iter()
        .map(|e| e.duration_seconds.clone())
        .collect();
    assert_eq!(
        asked,
        [
            Some("21600".to_string()),
            Some("10800".into()),
            Some("7200".into())
        ]
    );

    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
    let chained = assumer
        .assume(AssumeSpec {
            role_arn: POD_ROLE.into(),
            target_role_arn: Some(TARGET_ROLE.into()),
            session_name: "eks-lab-web-0-chain".into(),
            tags,
            policy: Some(policy.into()),
            max_duration: Duration::from_secs(86_400),
        })
        .await
        .unwrap();
    assert_eq!(
        chained.assumed_role_arn,
        "arn:aws:sts::111122223333:assumed-role/target/eks-lab-web-0-chain"
    );
    let last = last_event(&lab);
    assert!(last.policy_present);
    assert_eq!(last.inherited_tags.len(), 6);
    assert_eq!(last.role_arn.as_deref(), Some(TARGET_ROLE));
}

#[tokio::test]
async fn forged_secrets_unknown_keys_and_wrong_tokens_are_refused() {
    let lab = lab().await;
    let url = lab.sts.url();
    let forged = AccessKey::new(
        lab.eks_auth.access_key_id.clone(),
        Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    );
    let (code, message, status) = caller_identity(&client(url, &forged, None))
        .await
        .unwrap_err();
    assert_eq!((code.as_str(), status), ("SignatureDoesNotMatch", 403));
    assert!(message.starts_with("The request signature we calculated does not match"));
    assert_eq!(last_event(&lab).signature, SignatureVerdict::Mismatch);
    assert_eq!(last_event(&lab).caller_arn, None);

    let unknown = AccessKey::generate();
    let (code, message, status) = caller_identity(&client(url, &unknown, None))
        .await
        .unwrap_err();
    assert_eq!((code.as_str(), status), ("InvalidClientTokenId", 403));
    assert_eq!(
        message,
        "The security token included in the request is invalid."
    );
    assert_eq!(
        last_event(&lab).signature,
        SignatureVerdict::UnknownAccessKey
    );

    let issued = assume(
        &client(url, &lab.eks_auth, None),
        POD_ROLE,
        "sess",
        &[],
        None,
    )
    .await
    .unwrap();
    for token in [Some(Secret::new("not-the-token")), None] {
        let (code, _, status) = caller_identity(&client(url, &issued.key, token.as_ref()))
            .await
            .unwrap_err();
        assert_eq!((code.as_str(), status), ("InvalidClientTokenId", 403));
        assert_eq!(
            last_event(&lab).signature,
            SignatureVerdict::InvalidSessionToken
        );
    }
    // A long-term key with a session token is not valid either.
    let (code, ..) = caller_identity(&client(url, &lab.eks_auth, Some(&issued.token)))
        .await
        .unwrap_err();
    assert_eq!(code, "InvalidClientTokenId");
    // The right token still works.
    assert!(
        caller_identity(&client(url, &issued.key, Some(&issued.token)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn expired_credentials_and_stale_signatures() {
    let lab = lab().await;
    let url = lab.sts.url();
    let issued = assume(
        &client(url, &lab.eks_auth, None),
        POD_ROLE,
        "sess",
        &[],
        Some(900),
    )
    .await
    .unwrap();
    let pod = client(url, &issued.key, Some(&issued.token));
    assert!(caller_identity(&pod).await.is_ok());

    lab.sts.clock().advance(Duration::from_secs(901));
    let (code, message, status) = caller_identity(&pod).await.unwrap_err();
    assert_eq!((code.as_str(), status), ("ExpiredToken", 403));
    assert_eq!(
        message,
        "The security token included in the request is expired"
    );
    assert_eq!(last_event(&lab).signature, SignatureVerdict::ExpiredToken);

    // The SDK signs with the real time, now 15 min and 1 s behind the endpoint's clock.
    let (code, message, status) = caller_identity(&client(url, &lab.eks_auth, None))
        .await
        .unwrap_err();
    assert_eq!((code.as_str(), status), ("SignatureDoesNotMatch", 403));
    assert!(message.starts_with("Signature expired: "), "{message}");
    assert!(message.ends_with(" - 15 min.)"), "{message}");
    assert_eq!(
        last_event(&lab).signature,
        SignatureVerdict::OutsideTimeWindow
    );
}

#[tokio::test]
async fn untrusted_callers_and_unknown_roles_are_access_denied() {
    let lab = lab().await;
    let mallory = client(lab.sts.url(), &lab.mallory, None);
    let message = refused(
        assume(&mallory, POD_ROLE, "sess", &[], None).await,
        "AccessDenied",
        403,
    );
    assert_eq!(
        message,
        format!(
            "User: {MALLORY} is not authorized to perform: sts:AssumeRole on resource: {POD_ROLE}"
        )
    );
    let eks_auth = client(lab.sts.url(), &lab.eks_auth, None);
    let nope = "arn:aws:iam::111122223333:role/does-not-exist";
    let message = refused(
        assume(&eks_auth, nope, "sess", &[], None).await,
        "AccessDenied",
        403,
    );
    assert!(message.starts_with(&format!("User: {EKS_AUTH} is not authorized")));
    assert!(message.ends_with(nope));
    // eks-auth may not skip the chain: the target trusts only s3-reader sessions.
    refused(
        assume(&eks_auth, TARGET_ROLE, "sess", &[], None).await,
        "AccessDenied",
        403,
    );
    let event = last_event(&lab);
    assert_eq!(event.signature, SignatureVerdict::Valid);
    assert_eq!(refused_code(&event), "AccessDenied");
}

#[tokio::test]
async fn invalid_parameters_are_validation_errors() {
    let lab = lab().await;
    let eks_auth = client(lab.sts.url(), &lab.eks_auth, None);
    let message = refused(
        assume(&eks_auth, POD_ROLE, "bad/name", &[], Some(100)).await,
        "ValidationError",
        400,
    );
    assert!(
        message.starts_with("2 validation errors detected: "),
        "{message}"
    );
    assert!(message.contains("Value 'bad/name' at 'roleSessionName' failed to satisfy constraint"));
    assert!(message.contains("at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"));

    let err = eks_auth
        .assume_role()
        .role_arn(POD_ROLE)
        .role_session_name("s1")
        .policy("{not json")
        .send()
        .await
        .unwrap_err();
    assert_eq!(sdk_error(err).0, "MalformedPolicyDocument");
    let event = last_event(&lab);
    assert!(event.policy_present);
    assert_eq!(refused_code(&event), "MalformedPolicyDocument");
}

// ---- raw HTTP ----------------------------------------------------------------------------------

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Headers that sign `body` for `key` (SigV4, region us-east-1, service sts) at the current time.
fn sign(addr: SocketAddr, body: &[u8], key: &AccessKey) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let host = addr.to_string();
    let identity = Credentials::new(
        &key.access_key_id,
        key.secret_access_key.expose(),
        None,
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("sts")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let request = SignableRequest::new(
        "POST",
        "/",
        [("content-type", FORM), ("host", host.as_str())].into_iter(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let mut headers: Vec<(String, String)> = instructions
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    headers.push(("content-type".into(), FORM.into()));
    headers
}

/// POST `body` with `headers`; (status, the error `Code`, the body). Asserts the AWS error shape
/// on every non-200 answer.
async fn post(url: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().post(url).body(body);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let request_id = res
        .headers()
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let content_type = res.headers().get("content-type").cloned();
    let text = res.text().await.unwrap();
    assert_eq!(content_type.unwrap(), "text/xml");
    let code = between(&text, "<Code>", "</Code>").unwrap_or_default();
    if status != 200 {
        assert!(
            text.starts_with(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>"
            ),
            "{text}"
        );
        assert!(between(&text, "<Message>", "</Message>").is_some_and(|m| !m.is_empty()));
        assert_eq!(
            between(&text, "<RequestId>", "</RequestId>"),
            Some(request_id)
        );
    }
    (status, code, text)
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_string())
}

#[tokio::test]
async fn raw_requests_get_aws_errors_and_never_break_the_server() {
    let lab = lab().await;
    let (url, addr) = (lab.sts.url(), lab.sts.local_addr());
    let good = b"Action=GetCallerIdentity&Version=2011-06-15".to_vec();

    // The signing helper itself is right.
    let (status, _, text) = post(url, &sign(addr, &good, &lab.eks_auth), good.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("<Arn>{EKS_AUTH}</Arn>")));

    // Body changed after signing.
    let headers = sign(addr, &good, &lab.eks_auth);
    let tampered = b"Action=GetCallerIdentity&Version=2011-06-15&X=1".to_vec();
    let (status, code, _) = post(url, &headers, tampered).await;
    assert_eq!((status, code.as_str()), (403, "SignatureDoesNotMatch"));

    // A signed header changed after signing.
    let mut headers = sign(addr, &good, &lab.eks_auth);
    headers.retain(|(n, _)| n != "content-type");
    headers.push((
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let (status, code, _) = post(url, &headers, good.clone()).await;
    assert_eq!((status, code.as_str()), (403, "SignatureDoesNotMatch"));

    // No Authorization.
    let form = vec![("content-type".to_string(), FORM.to_string())];
    let (status, code, text) = post(url, &form, good.clone()).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "MissingAuthenticationToken"),
        "{text}"
    );
    assert_eq!(last_event(&lab).signature, SignatureVerdict::Missing);

    // A malformed Authorization.
    let mut bad_auth = form.clone();
    bad_auth.push((
        "authorization".into(),
        "AWS4-HMAC-SHA256 Credential=oops".into(),
    ));
    let (status, code, _) = post(url, &bad_auth, good.clone()).await;
    assert_eq!((status, code.as_str()), (400, "IncompleteSignature"));
    assert_eq!(last_event(&lab).signature, SignatureVerdict::Malformed);

    // Garbage and invalid UTF-8 (refused before the signature is looked at).
    for body in [&b"%%%garbage=%zz"[..], b"Action=\xff\xfe", b"Action=%C3%28"] {
        let headers = sign(addr, body, &lab.eks_auth);
        let (status, code, _) = post(url, &headers, body.to_vec()).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "MalformedQueryString"),
            "{body:?}"
        );
        assert_eq!(last_event(&lab).signature, SignatureVerdict::NotChecked);
    }

    // Unknown action, no version, no action: signed, so the action is what is refused.
    for (body, want) in [
        (
            "Action=DescribeNothing&Version=2011-06-15",
            "Could not find operation DescribeNothing for version 2011-06-15",
        ),
        (
            "Action=GetCallerIdentity",
            "Could not find operation GetCallerIdentity for version NO_VERSION_SPECIFIED",
        ),
    ] {
        let headers = sign(addr, body.as_bytes(), &lab.eks_auth);
        let (status, code, text) = post(url, &headers, body.as_bytes().to_vec()).await;
        assert_eq!((status, code.as_str()), (400, "InvalidAction"));
        assert_eq!(between(&text, "<Message>", "</Message>").unwrap(), want);
    }
    let body = b"Version=2011-06-15";
    let (status, code, _) = post(url, &sign(addr, body, &lab.eks_auth), body.to_vec()).await;
    assert_eq!((status, code.as_str()), (400, "MissingAction"));

    // 1 MiB.
    let big = vec![b'a'; 1024 * 1024];
    let (status, code, _) = post(url, &sign(addr, &big, &lab.eks_auth), big).await;
    assert_eq!((status, code.as_str()), (413, "RequestEntityTooLarge"));
    // Just over the limit, unsigned.
    let (status, code, _) = post(url, &form, vec![b'x'; 64 * 1024 + 1]).await;
    assert_eq!((status, code.as_str()), (413, "RequestEntityTooLarge"));

    // Still serving.
    let (status, _, _) = post(url, &sign(addr, &good, &lab.eks_auth), good).await;
    assert_eq!(status, 200);
    let events = lab.sts.events();
    assert_eq!(events.len(), 14);
    assert!(
        events[1..13]
            .iter()
            .all(|e| matches!(e.outcome, StsOutcome::Refused { .. }))
    );
}

/// HTTP/1.0 with no `Host` header at all, though the signature claims to cover one.
#[tokio::test]
async fn a_request_without_a_host_header_is_refused_not_a_panic() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lab = lab().await;
    let now = jiff::Timestamp::now();
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let request = format!(
        "POST / HTTP/1.0\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={}/{}/us-east-1/sts/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={}\r\n\
         X-Amz-Date: {}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        lab.eks_auth.access_key_id,
        now.strftime("%Y%m%d"),
        "0".repeat(64),
        now.strftime("%Y%m%dT%H%M%SZ"),
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(lab.sts.local_addr())
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
    assert!(
        answer.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{answer}"
    );
    assert_eq!(last_event(&lab).signature, SignatureVerdict::Mismatch);
    // The server lives on.
    let (arn, ..) = caller_identity(&client(lab.sts.url(), &lab.eks_auth, None))
        .await
        .unwrap();
    assert_eq!(arn, EKS_AUTH);
}

#[tokio::test]
async fn no_secret_or_session_token_reaches_events_or_debug_output() {
    let lab = lab().await;
    let url = lab.sts.url();
    let eks_auth = client(url, &lab.eks_auth, None);
    let first = assume(&eks_auth, POD_ROLE, "first", &EKS_TAGS, None)
        .await
        .unwrap();
    let session = client(url, &first.key, Some(&first.token));
    let second = assume(&session, TARGET_ROLE, "second", &[], None)
        .await
        .unwrap();
    caller_identity(&client(url, &second.key, Some(&second.token)))
        .await
        .unwrap();
    // Failures too: a wrong token and a forged secret.
    let _ = caller_identity(&client(url, &first.key, Some(&second.token))).await;
    let forged = AccessKey::new(
        first.key.access_key_id.clone(),
        second.key.secret_access_key.clone(),
    );
    let _ = caller_identity(&client(url, &forged, Some(&first.token))).await;

    let events = lab.sts.events();
    assert_eq!(events.len(), 5);
    let debug = format!("{events:?} {:?}", lab.sts);
    let json = serde_json::to_string(&events).unwrap();
    let secrets = [
        lab.eks_auth.secret_access_key.expose(),
        lab.mallory.secret_access_key.expose(),
        first.key.secret_access_key.expose(),
        first.token.expose(),
        second.key.secret_access_key.expose(),
        second.token.expose(),
    ];
    for secret in secrets {
        assert!(!debug.contains(secret), "a secret in Debug output");
        assert!(!json.contains(secret), "a secret in the JSON events");
    }
    // Full access key ids are not in events either, only their short form.
    for id in [&first.key.access_key_id, &second.key.access_key_id] {
        assert!(!debug.contains(id.as_str()));
    }
    assert!(debug.contains(&first.arn) && debug.contains(&second.arn));
}

#[tokio::test]
async fn invalid_configs_fail_before_listening_and_shutdown_stops_serving() {
    for config in [
        StsConfig::new().role(Role::new("arn:aws:iam::111122223333:user/not-a-role")),
        StsConfig::new().role(Role::new(POD_ROLE).max_session_duration(Duration::from_secs(60))),
        StsConfig::new().static_key(AccessKey::generate(), "not-an-arn"),
        StsConfig::new()
            .role(Role::new(POD_ROLE))
            .role(Role::new(POD_ROLE)),
    ] {
        assert!(matches!(LabSts::new(config), Err(LabStsError::Config(_))));
    }

    let lab = lab().await;
    let url = lab.sts.url().to_string();
    assert!(
        caller_identity(&client(&url, &lab.eks_auth, None))
            .await
            .is_ok()
    );
    lab.sts.shutdown().await.unwrap();
    let refused = reqwest::Client::new().post(&url).send().await;
    assert!(refused.is_err(), "still listening after shutdown");
}
