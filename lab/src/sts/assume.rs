//! `AssumeRole`, decided without IO: what was asked ([`AssumeAsk`]), whether it is allowed and
//! what the new session holds ([`decide`] → [`Grant`]), and its credentials ([`Grant::issue`]).
//!
//! The checks run in AWS's order: the request's field constraints (all violations in one
//! `ValidationError`, worded as AWS words them), the role's trust (`AccessDenied`), the duration
//! (role chaining caps it at one hour, then the role's `MaxSessionDuration`; both messages
//! mention `DurationSeconds`, which is what eks-auth's fallback looks for), the session policy,
//! then the session tags. Codes and messages AWS documents are reproduced; the wording of the
//! tag-conflict messages and of `PackedPolicySize` (an estimate: bytes of policy and tags
//! against 2048) is the lab's own.

use std::time::{Duration, SystemTime};

use super::error::ApiError;
use super::event::SessionTag;
use super::identity::{Caller, RoleEntry, Session, random_key_pair, random_session_token};
use super::query::Params;

/// `DurationSeconds` when the request has none, and the role-chaining cap.
pub(crate) const ONE_HOUR: Duration = Duration::from_secs(3600);
/// The message eks-auth's duration fallback recognises (AWS's exact text).
pub(crate) const EXCEEDS_MAX_SESSION: &str =
    "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.";
/// AWS's text when a role session asks for more than an hour.
pub(crate) const EXCEEDS_CHAINING_LIMIT: &str = "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.";
const MAX_TAGS: usize = 50;
const PACKED_BYTES: usize = 2048;
const SESSION_NAME_PATTERN: &str = r"[\w+=,.@-]*";
const TAG_KEY_PATTERN: &str = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+";
const TAG_VALUE_PATTERN: &str = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*";
const POLICY_PATTERN: &str = r"[\u0009\u000A\u000D\u0020-\u00FF]+";

/// An `AssumeRole` request's parameters as sent (nothing validated yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AssumeAsk {
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub duration_seconds: Option<String>,
    pub policy: Option<String>,
    /// `Tags.member.N.Key` / `.Value`, in order; either may be missing.
    pub tags: Vec<(Option<String>, Option<String>)>,
    pub transitive_tag_keys: Vec<String>,
}

impl AssumeAsk {
    pub fn from_params(p: &Params) -> Self {
        let owned = |name: &str| p.get(name).map(str::to_string);
        let tags = (1..)
            .map(|i| {
                (
                    owned(&format!("Tags.member.{i}.Key")),
                    owned(&format!("Tags.member.{i}.Value")),
                )
            })
            .take_while(|(k, v)| k.is_some() || v.is_some())
            .collect();
        Self {
            role_arn: owned("RoleArn"),
            role_session_name: owned("RoleSessionName"),
            duration_seconds: owned("DurationSeconds"),
            policy: owned("Policy"),
            tags,
            transitive_tag_keys: p
                .members("TransitiveTagKeys")
                .into_iter()
                .map(str::to_string)
                .collect(),
        }
    }

    /// The tags whose key and value were both sent.
    pub fn complete_tags(&self) -> Vec<SessionTag> {
        self.tags
            .iter()
            .filter_map(|(k, v)| {
                Some(SessionTag {
                    key: k.clone()?,
                    value: v.clone()?,
                })
            })
            .collect()
    }
}

/// An allowed `AssumeRole`: the session to create.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub role: RoleEntry,
    pub session_name: String,
    pub duration: Duration,
    /// Inherited transitive tags first, then the requested ones.
    pub tags: Vec<SessionTag>,
    pub transitive_tag_keys: Vec<String>,
    /// Present when the request carried a policy or the session has tags.
    pub packed_policy_size: Option<usize>,
}

impl Grant {
    /// Fresh `ASIA…` credentials for the granted session.
    pub fn issue(self, now: SystemTime) -> Session {
        let (access_key_id, secret_access_key) = random_key_pair("ASIA");
        let role = self.role;
        Session {
            access_key_id,
            secret_access_key,
            session_token: random_session_token(),
            expiration: now + self.duration,
            assumed_role_arn: format!(
                "arn:{}:sts::{}:assumed-role/{}/{}",
                role.partition, role.account, role.name, self.session_name
            ),
            assumed_role_id: format!("{}:{}", role.role_id, self.session_name),
            account: role.account.clone(),
            role_arn: role.arn,
            tags: self.tags,
            transitive_tag_keys: self.transitive_tag_keys,
        }
    }
}

/// Whether `caller` may have what `ask` asks of `role` (`None`: no such role).
pub(crate) fn decide(
    ask: &AssumeAsk,
    caller: &Caller,
    role: Option<&RoleEntry>,
) -> Result<Grant, ApiError> {
    validation_error(constraint_violations(ask))?;
    // Present and within bounds: checked above.
    let (Some(role_arn), Some(session_name)) = (&ask.role_arn, &ask.role_session_name) else {
        return Err(ApiError::validation(
            "RoleArn and RoleSessionName are required",
        ));
    };
    let role = role
        .filter(|r| r.trusts(caller))
        .ok_or_else(|| ApiError::access_denied(caller.arn(), role_arn))?;

    let duration = requested_duration(ask.duration_seconds.as_deref());
    let inherited = caller.session().map(Session::transitive_tags);
    if inherited.is_some() && duration > ONE_HOUR {
        return Err(ApiError::validation(EXCEEDS_CHAINING_LIMIT));
    }
    check_duration_and_policy(duration, role, ask.policy.as_deref())?;

    let inherited = inherited.unwrap_or_default();
    let requested = ask.complete_tags();
    let (tags, transitive_tag_keys) = merge_tags(&inherited, &requested, ask, caller)?;
    let packed = packed_percent(ask.policy.as_deref(), &tags);
    if packed > 100 {
        return Err(ApiError::packed_policy_too_large(packed));
    }
    Ok(Grant {
        role: role.clone(),
        session_name: session_name.clone(),
        duration,
        packed_policy_size: (ask.policy.is_some() || !tags.is_empty()).then_some(packed),
        tags,
        transitive_tag_keys,
    })
}

/// `DurationSeconds` as asked (already validated), or the one-hour default.
pub(crate) fn requested_duration(asked: Option<&str>) -> Duration {
    asked.map_or(ONE_HOUR, |s| {
        Duration::from_secs(s.parse::<u64>().unwrap_or(u64::MAX))
    })
}

/// What both ways of assuming a role check last: the role's `MaxSessionDuration`, then that the
/// session policy is a JSON object.
pub(crate) fn check_duration_and_policy(
    duration: Duration,
    role: &RoleEntry,
    policy: Option<&str>,
) -> Result<(), ApiError> {
    if duration > role.max_session_duration {
        return Err(ApiError::validation(EXCEEDS_MAX_SESSION));
    }
    if let Some(policy) = policy
        && !serde_json::from_str::<serde_json::Value>(policy).is_ok_and(|v| v.is_object())
    {
        return Err(ApiError::malformed_policy_document(
            "Syntax errors in policy.",
        ));
    }
    Ok(())
}

/// The new session's tags and transitive keys: the calling session's transitive tags, which
/// the request may not set again, then the requested tags.
fn merge_tags(
    inherited: &[SessionTag],
    requested: &[SessionTag],
    ask: &AssumeAsk,
    caller: &Caller,
) -> Result<(Vec<SessionTag>, Vec<String>), ApiError> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    for (i, t) in requested.iter().enumerate() {
        if requested[..i].iter().any(|u| same(&u.key, &t.key)) {
            return Err(ApiError::invalid_parameter_value(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive.",
            ));
        }
        if inherited.iter().any(|u| same(&u.key, &t.key)) {
            return Err(ApiError::invalid_parameter_value(format!(
                "The session tag '{}' is already set as a transitive tag by the calling session {}.",
                t.key,
                caller.arn()
            )));
        }
    }
    if let Some(k) = ask
        .transitive_tag_keys
        .iter()
        .find(|k| !requested.iter().any(|t| same(&t.key, k)))
    {
        return Err(ApiError::invalid_parameter_value(format!(
            "The transitive tag key '{k}' must be one of the requested session tags."
        )));
    }
    let tags: Vec<SessionTag> = inherited.iter().chain(requested).cloned().collect();
    if tags.len() > MAX_TAGS {
        return Err(ApiError::validation(format!(
            "The session would have {} tags, including those inherited from the calling session; \
             at most {MAX_TAGS} are allowed.",
            tags.len()
        )));
    }
    let transitive = inherited
        .iter()
        .map(|t| t.key.clone())
        .chain(ask.transitive_tag_keys.iter().cloned())
        .collect();
    Ok((tags, transitive))
}

/// How full the packed policy and tags are, in percent of [`PACKED_BYTES`] (an estimate).
pub(crate) fn packed_percent(policy: Option<&str>, tags: &[SessionTag]) -> usize {
    let bytes = policy.map_or(0, str::len)
        + tags
            .iter()
            .map(|t| t.key.len() + t.value.len())
            .sum::<usize>();
    (bytes * 100).div_ceil(PACKED_BYTES)
}

/// AWS's field constraints, each broken one worded as AWS words it.
fn constraint_violations(ask: &AssumeAsk) -> Vec<String> {
    let mut errors = role_violations(ask.role_arn.as_deref(), ask.role_session_name.as_deref());
    let mut field = |path: &str, value: Option<&str>, rules: &[Rule]| {
        if let Some(e) = violation(path, value, rules) {
            errors.push(e);
        }
    };
    field(
        "durationSeconds",
        ask.duration_seconds.as_deref(),
        &[Rule::Range(900, 43200)],
    );
    errors.extend(policy_violations(ask.policy.as_deref()));
    if ask.tags.len() > MAX_TAGS {
        errors.push(format!(
            "Value at 'tags' failed to satisfy constraint: Member must have length less than or \
             equal to {MAX_TAGS}"
        ));
    }
    for (i, (key, value)) in ask.tags.iter().enumerate() {
        let n = i + 1;
        let key_rules = [
            Rule::Required,
            Rule::Len(1, 128),
            Rule::Pattern(TAG_KEY_PATTERN, tag_char),
        ];
        let value_rules = [
            Rule::Required,
            Rule::Len(0, 256),
            Rule::Pattern(TAG_VALUE_PATTERN, tag_char),
        ];
        for (path, v, rules) in [
            (format!("tags.{n}.member.key"), key, &key_rules),
            (format!("tags.{n}.member.value"), value, &value_rules),
        ] {
            if let Some(e) = violation(&path, v.as_deref(), rules) {
                errors.push(e);
            }
        }
    }
    if ask.transitive_tag_keys.len() > MAX_TAGS {
        errors.push(format!(
            "Value at 'transitiveTagKeys' failed to satisfy constraint: Member must have length \
             less than or equal to {MAX_TAGS}"
        ));
    }
    for (i, key) in ask.transitive_tag_keys.iter().enumerate() {
        let rules = [Rule::Len(1, 128), Rule::Pattern(TAG_KEY_PATTERN, tag_char)];
        if let Some(e) = violation(
            &format!("transitiveTagKeys.{}.member", i + 1),
            Some(key),
            &rules,
        ) {
            errors.push(e);
        }
    }
    errors
}

/// `RoleArn` and `RoleSessionName`'s constraints (shared by both ways of assuming a role).
pub(crate) fn role_violations(role_arn: Option<&str>, session_name: Option<&str>) -> Vec<String> {
    [
        violation("roleArn", role_arn, &[Rule::Required, Rule::Len(20, 2048)]),
        violation(
            "roleSessionName",
            session_name,
            &[
                Rule::Required,
                Rule::Len(2, 64),
                Rule::Pattern(SESSION_NAME_PATTERN, session_name_char),
            ],
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// One `ValidationError` listing every violation, as AWS words it; `Ok` when there is none.
pub(crate) fn validation_error(errors: Vec<String>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let s = if errors.len() == 1 { "" } else { "s" };
    Err(ApiError::validation(format!(
        "{} validation error{s} detected: {}",
        errors.len(),
        errors.join("; ")
    )))
}

/// The session policy's constraints (shared by both ways of assuming a role).
pub(crate) fn policy_violations(policy: Option<&str>) -> Option<String> {
    violation(
        "policy",
        policy,
        &[
            Rule::Len(1, 2048),
            Rule::Pattern(POLICY_PATTERN, policy_char),
        ],
    )
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    Required,
    /// Length in characters, inclusive.
    Len(usize, usize),
    /// An integer, inclusive.
    Range(u64, u64),
    /// Every character must pass the test; the pattern is what AWS's message shows.
    Pattern(&'static str, fn(char) -> bool),
}

/// The first rule `value` breaks, as AWS's `Value '…' at '…' failed to satisfy constraint: …`.
pub(crate) fn violation(path: &str, value: Option<&str>, rules: &[Rule]) -> Option<String> {
    let Some(v) = value else {
        return rules.iter().any(|r| matches!(r, Rule::Required)).then(|| {
            format!("Value null at '{path}' failed to satisfy constraint: Member must not be null")
        });
    };
    let broken = rules.iter().find_map(|rule| match *rule {
        Rule::Required => None,
        Rule::Len(min, _) if v.chars().count() < min => Some(format!(
            "Member must have length greater than or equal to {min}"
        )),
        Rule::Len(_, max) if v.chars().count() > max => Some(format!(
            "Member must have length less than or equal to {max}"
        )),
        Rule::Len(..) => None,
        Rule::Range(min, max) => match v.parse::<u64>() {
            Err(_) => Some("Member must be an integer".to_string()),
            Ok(n) if n < min => Some(format!(
                "Member must have value greater than or equal to {min}"
            )),
            Ok(n) if n > max => Some(format!(
                "Member must have value less than or equal to {max}"
            )),
            Ok(_) => None,
        },
        Rule::Pattern(pattern, ok) => (!v.chars().all(ok))
            .then(|| format!("Member must satisfy regular expression pattern: {pattern}")),
    })?;
    Some(format!(
        "Value '{v}' at '{path}' failed to satisfy constraint: {broken}"
    ))
}

fn session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

fn policy_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FF}')
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pod_identity_contracts::Secret;

    use super::*;
    use crate::sts::identity::{Registry, StaticKey};
    use crate::sts::{AccessKey, Role};

    const ROLE: &str = "arn:aws:iam::111122223333:role/pods/s3-reader";
    const USER: &str = "arn:aws:iam::111122223333:user/eks-auth";

    fn registry() -> (Registry, Caller) {
        let key = AccessKey::generate();
        let id = key.access_key_id.clone();
        let registry = Registry::new(
            vec![(key, USER.into())],
            vec![
                Role::new(ROLE)
                    .trust(USER)
                    .max_session_duration(Duration::from_secs(7200)),
                Role::new("arn:aws:iam::111122223333:role/target").trust(ROLE),
            ],
            Vec::new(),
        )
        .unwrap();
        let caller = registry.lookup(&id).unwrap();
        (registry, caller)
    }

    fn ask(pairs: &[(&str, &str)]) -> AssumeAsk {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        AssumeAsk::from_params(&Params::parse(None, body.join("&").as_bytes()).unwrap())
    }

    fn basic(extra: &[(&'static str, &'static str)]) -> AssumeAsk {
        let mut pairs = vec![("RoleArn", ROLE), ("RoleSessionName", "web-0")];
        pairs.extend_from_slice(extra);
        ask(&pairs)
    }

    #[test]
    fn grants_a_trusted_caller_with_tags() {
        let (reg, caller) = registry();
        let a = basic(&[
            ("DurationSeconds", "7200"),
            ("Tags.member.1.Key", "kubernetes-namespace"),
            ("Tags.member.1.Value", "default"),
            ("Tags.member.2.Key", "team"),
            ("Tags.member.2.Value", "a b"),
            ("TransitiveTagKeys.member.1", "kubernetes-namespace"),
        ]);
        let g = decide(&a, &caller, reg.role(ROLE)).unwrap();
        assert_eq!(g.duration, Duration::from_secs(7200));
        assert_eq!(g.tags.len(), 2);
        assert_eq!(g.transitive_tag_keys, ["kubernetes-namespace"]);
        assert_eq!(g.packed_policy_size, Some(2));
        let s = g.issue(SystemTime::UNIX_EPOCH);
        assert_eq!(
            s.assumed_role_arn,
            "arn:aws:sts::111122223333:assumed-role/s3-reader/web-0"
        );
        assert!(s.assumed_role_id.starts_with("AROA") && s.assumed_role_id.ends_with(":web-0"));
        assert!(s.access_key_id.starts_with("ASIA"));
        assert_eq!(
            s.expiration,
            SystemTime::UNIX_EPOCH + Duration::from_secs(7200)
        );
    }

    #[test]
    fn aggregates_constraint_violations_as_aws_does() {
        let (reg, caller) = registry();
        let e = decide(
            &ask(&[("RoleSessionName", "a"), ("DurationSeconds", "100")]),
            &caller,
            reg.role(ROLE),
        )
        .unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert_eq!(
            e.message,
            "3 validation errors detected: \
             Value null at 'roleArn' failed to satisfy constraint: Member must not be null; \
             Value 'a' at 'roleSessionName' failed to satisfy constraint: Member must have length greater than or equal to 2; \
             Value '100' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"
        );
        let e = decide(
            &basic(&[("Tags.member.1.Key", "k%21")]),
            &caller,
            reg.role(ROLE),
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("2 validation errors detected"),
            "{}",
            e.message
        );
        assert!(e.message.contains("'tags.1.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern"));
        assert!(e.message.contains("Value null at 'tags.1.member.value'"));
        let e = decide(
            &ask(&[("RoleArn", ROLE), ("RoleSessionName", "a/b")]),
            &caller,
            reg.role(ROLE),
        )
        .unwrap_err();
        assert!(
            e.message
                .ends_with(r"Member must satisfy regular expression pattern: [\w+=,.@-]*")
        );
    }

    #[test]
    fn durations_over_the_role_maximum_say_duration_seconds() {
        let (reg, caller) = registry();
        let e = decide(
            &basic(&[("DurationSeconds", "7201")]),
            &caller,
            reg.role(ROLE),
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("ValidationError", EXCEEDS_MAX_SESSION)
        );
        let e = decide(
            &basic(&[("DurationSeconds", "43201")]),
            &caller,
            reg.role(ROLE),
        )
        .unwrap_err();
        assert!(e.message.contains("'durationSeconds'"));
    }

    #[test]
    fn untrusted_or_unknown_roles_are_access_denied() {
        let (reg, caller) = registry();
        let target = "arn:aws:iam::111122223333:role/target";
        for role in [target, "arn:aws:iam::111122223333:role/nope"] {
            let a = ask(&[("RoleArn", role), ("RoleSessionName", "s1")]);
            let e = decide(&a, &caller, reg.role(role)).unwrap_err();
            assert_eq!(e.code, "AccessDenied");
            assert_eq!(
                e.message,
                format!(
                    "User: {USER} is not authorized to perform: sts:AssumeRole on resource: {role}"
                )
            );
        }
    }

    #[test]
    fn chained_sessions_inherit_transitive_tags_and_cap_at_one_hour() {
        let (reg, caller) = registry();
        let first = decide(
            &basic(&[
                ("Tags.member.1.Key", "ns"),
                ("Tags.member.1.Value", "default"),
                ("Tags.member.2.Key", "local"),
                ("Tags.member.2.Value", "x"),
                ("TransitiveTagKeys.member.1", "ns"),
            ]),
            &caller,
            reg.role(ROLE),
        )
        .unwrap()
        .issue(SystemTime::UNIX_EPOCH);
        let session = Caller::Session(Arc::new(first));
        let target = "arn:aws:iam::111122223333:role/target";
        let chained = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("RoleArn", target), ("RoleSessionName", "hop")];
            pairs.extend_from_slice(extra);
            decide(&ask(&pairs), &session, reg.role(target))
        };
        let g = chained(&[("Tags.member.1.Key", "extra"), ("Tags.member.1.Value", "1")]).unwrap();
        let keys: Vec<&str> = g.tags.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["ns", "extra"]);
        assert_eq!(g.transitive_tag_keys, ["ns"]);
        let e = chained(&[("DurationSeconds", "3601")]).unwrap_err();
        assert_eq!(e.message, EXCEEDS_CHAINING_LIMIT);
        let e = chained(&[
            ("Tags.member.1.Key", "NS"),
            ("Tags.member.1.Value", "other"),
        ])
        .unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
    }

    #[test]
    fn policies_and_tags_are_checked() {
        let (reg, caller) = registry();
        let role = reg.role(ROLE);
        let e = decide(&basic(&[("Policy", "not%20json")]), &caller, role).unwrap_err();
        assert_eq!(e.code, "MalformedPolicyDocument");
        let long = format!("%7B%22a%22%3A%22{}%22%7D", "x".repeat(2100));
        let e = decide(
            &ask(&[
                ("RoleArn", ROLE),
                ("RoleSessionName", "ss"),
                ("Policy", &long),
            ]),
            &caller,
            role,
        )
        .unwrap_err();
        assert!(e.message.contains("'policy' failed to satisfy constraint: Member must have length less than or equal to 2048"));
        let g = decide(&basic(&[("Policy", "%7B%7D")]), &caller, role).unwrap();
        assert_eq!(g.packed_policy_size, Some(1));
        let e = decide(
            &basic(&[
                ("Tags.member.1.Key", "a"),
                ("Tags.member.1.Value", "1"),
                ("Tags.member.2.Key", "A"),
                ("Tags.member.2.Value", "2"),
            ]),
            &caller,
            role,
        )
        .unwrap_err();
        assert!(e.message.starts_with("Duplicate tag keys found"));
        let e = decide(
            &basic(&[("TransitiveTagKeys.member.1", "absent")]),
            &caller,
            role,
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
        assert!(
            decide(&basic(&[]), &caller, role)
                .unwrap()
                .packed_policy_size
                .is_none()
        );
    }

    #[test]
    fn debug_of_a_session_hides_its_secrets() {
        let (reg, caller) = registry();
        let s = decide(&basic(&[]), &caller, reg.role(ROLE))
            .unwrap()
            .issue(SystemTime::now());
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(s.secret_access_key.expose()));
        assert!(!dbg.contains(s.session_token.expose()));
        let key = StaticKey {
            key: AccessKey::new("AKIA1", Secret::new("very-secret")),
            arn: USER.into(),
            account: "111122223333".into(),
            user_id: "AIDA".into(),
        };
        assert!(!format!("{key:?}").contains("very-secret"));
    }
}
