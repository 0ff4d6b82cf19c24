//! Who can sign: the static keys the lab registered and the sessions this endpoint issued; the
//! roles they may assume; and the ids AWS would give them (`AIDA…`, `AROA…`, `ASIA…`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pod_identity_contracts::Secret;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::error::LabStsError;
use super::event::SessionTag;
use super::{AccessKey, OidcProvider, Role, WebIdentityTrust};

/// Sessions kept before expired ones are dropped to make room.
const SESSIONS_KEPT: usize = 100_000;
/// Longest `MaxSessionDuration` AWS allows a role.
const LONGEST_MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A long-term key and the IAM principal it belongs to.
#[derive(Debug)]
pub(crate) struct StaticKey {
    pub key: AccessKey,
    pub arn: String,
    pub account: String,
    /// `AIDA…` for a user, the account id for the root.
    pub user_id: String,
}

/// Temporary credentials this endpoint issued.
#[derive(Debug)]
pub(crate) struct Session {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expiration: SystemTime,
    pub role_arn: String,
    pub assumed_role_arn: String,
    pub assumed_role_id: String,
    pub account: String,
    /// Every session tag, inherited ones first.
    pub tags: Vec<SessionTag>,
    /// Keys of `tags` that pass on to sessions assumed from this one.
    pub transitive_tag_keys: Vec<String>,
}

impl Session {
    /// The tags a session assumed from this one inherits.
    pub fn transitive_tags(&self) -> Vec<SessionTag> {
        self.tags
            .iter()
            .filter(|t| {
                self.transitive_tag_keys
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&t.key))
            })
            .cloned()
            .collect()
    }
}

/// The verified signer of a request.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Static(Arc<StaticKey>),
    Session(Arc<Session>),
}

impl Caller {
    pub fn arn(&self) -> &str {
        match self {
            Self::Static(k) => &k.arn,
            Self::Session(s) => &s.assumed_role_arn,
        }
    }

    pub fn account(&self) -> &str {
        match self {
            Self::Static(k) => &k.account,
            Self::Session(s) => &s.account,
        }
    }

    /// `UserId` as GetCallerIdentity reports it.
    pub fn user_id(&self) -> &str {
        match self {
            Self::Static(k) => &k.user_id,
            Self::Session(s) => &s.assumed_role_id,
        }
    }

    pub fn secret_access_key(&self) -> &Secret {
        match self {
            Self::Static(k) => &k.key.secret_access_key,
            Self::Session(s) => &s.secret_access_key,
        }
    }

    /// The session this caller signs with, when it is an assumed role.
    pub fn session(&self) -> Option<&Session> {
        match self {
            Self::Static(_) => None,
            Self::Session(s) => Some(s),
        }
    }
}

/// A registered role.
#[derive(Debug, Clone)]
pub(crate) struct RoleEntry {
    pub arn: String,
    pub partition: String,
    pub account: String,
    /// The last segment of the path.
    pub name: String,
    /// `AROA…`.
    pub role_id: String,
    pub max_session_duration: Duration,
    pub trusted: Vec<String>,
    pub web_identity: Vec<WebIdentityTrust>,
}

impl RoleEntry {
    /// Whether the role's trust lets `caller` assume it.
    pub fn trusts(&self, caller: &Caller) -> bool {
        self.trusted.iter().any(|p| {
            p == "*"
                || p == caller.arn()
                || p == caller.account()
                || Arn::parse(p).is_some_and(|a| {
                    a.service == "iam" && a.resource == "root" && a.account == caller.account()
                })
                || caller.session().is_some_and(|s| *p == s.role_arn)
        })
    }
}

/// A registered OIDC provider, ready to fetch its issuer's keys.
#[derive(Debug)]
pub(crate) struct ProviderEntry {
    pub arn: String,
    pub issuer: String,
    pub client_ids: Vec<String>,
    pub keys: eks_auth::keys::KeySource,
}

/// Everything the endpoint knows about identities.
pub(crate) struct Registry {
    keys: HashMap<String, Arc<StaticKey>>,
    roles: HashMap<String, RoleEntry>,
    /// By (account, issuer URL).
    providers: HashMap<(String, String), ProviderEntry>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

/// Counts and role ARNs only: a `Debug` of the endpoint should not list every access key id.
impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut roles: Vec<&str> = self.roles.keys().map(String::as_str).collect();
        roles.sort_unstable();
        f.debug_struct("Registry")
            .field("static_keys", &self.keys.len())
            .field("roles", &roles)
            .field("oidc_providers", &self.providers.len())
            .field("sessions", &self.sessions().len())
            .finish()
    }
}

impl Registry {
    pub fn new(
        static_keys: Vec<(AccessKey, String)>,
        roles: Vec<Role>,
        providers: Vec<OidcProvider>,
    ) -> Result<Self, LabStsError> {
        let mut keys = HashMap::new();
        for (key, arn) in static_keys {
            let id = key.access_key_id.clone();
            let entry = static_key(key, arn)?;
            if keys.insert(id.clone(), Arc::new(entry)).is_some() {
                return Err(LabStsError::Config(format!(
                    "access key {} is registered twice",
                    pod_identity_contracts::credentials::short_access_key_id(&id)
                )));
            }
        }
        let mut by_arn = HashMap::new();
        for role in roles {
            let entry = role_entry(role)?;
            let arn = entry.arn.clone();
            if by_arn.insert(arn.clone(), entry).is_some() {
                return Err(LabStsError::Config(format!(
                    "role {arn} is registered twice"
                )));
            }
        }
        let mut by_issuer = HashMap::new();
        for provider in providers {
            let entry = provider_entry(provider)?;
            let account = Arn::parse(&entry.arn).map(|a| a.account.to_string());
            let key = (account.unwrap_or_default(), entry.issuer.clone());
            if by_issuer.insert(key, entry).is_some() {
                return Err(LabStsError::Config(
                    "an OIDC provider is registered twice in one account".into(),
                ));
            }
        }
        Ok(Self {
            keys,
            roles: by_arn,
            providers: by_issuer,
            sessions: Mutex::default(),
        })
    }

    /// The OIDC provider for tokens from `issuer` in `account`.
    pub fn provider(&self, account: &str, issuer: &str) -> Option<&ProviderEntry> {
        self.providers
            .get(&(account.to_string(), issuer.to_string()))
    }

    /// The long-term key or issued session with this access key id.
    pub fn lookup(&self, access_key_id: &str) -> Option<Caller> {
        if let Some(k) = self.keys.get(access_key_id) {
            return Some(Caller::Static(k.clone()));
        }
        self.sessions()
            .get(access_key_id)
            .map(|s| Caller::Session(s.clone()))
    }

    pub fn role(&self, arn: &str) -> Option<&RoleEntry> {
        self.roles.get(arn)
    }

    pub fn insert_session(&self, session: Session, now: SystemTime) -> Arc<Session> {
        let session = Arc::new(session);
        let mut sessions = self.sessions();
        if sessions.len() >= SESSIONS_KEPT {
            sessions.retain(|_, s| s.expiration > now);
        }
        sessions.insert(session.access_key_id.clone(), session.clone());
        session
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn static_key(key: AccessKey, arn: String) -> Result<StaticKey, LabStsError> {
    let bad = |why: &str| LabStsError::Config(format!("static key principal {arn}: {why}"));
    if key.access_key_id.is_empty()
        || !key
            .access_key_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(bad(
            "the access key id must be upper-case letters and digits",
        ));
    }
    if key.secret_access_key.expose().is_empty() {
        return Err(bad("the secret access key is empty"));
    }
    let parsed = Arn::parse(&arn).ok_or_else(|| bad("not an ARN with a 12-digit account"))?;
    let user_id = if parsed.service != "iam" {
        return Err(bad("not an IAM ARN"));
    } else if parsed.resource == "root" {
        parsed.account.to_string()
    } else if parsed.resource.starts_with("user/") && last_segment(parsed.resource).is_some() {
        unique_id("AIDA", &arn)
    } else {
        return Err(bad(
            "only users and the account root sign with long-term keys",
        ));
    };
    let account = parsed.account.to_string();
    Ok(StaticKey {
        key,
        arn,
        account,
        user_id,
    })
}

fn role_entry(role: Role) -> Result<RoleEntry, LabStsError> {
    let bad = |why: &str| LabStsError::Config(format!("role {}: {why}", role.arn));
    let parsed = Arn::parse(&role.arn).ok_or_else(|| bad("not an ARN with a 12-digit account"))?;
    if parsed.service != "iam" || !parsed.resource.starts_with("role/") {
        return Err(bad("not arn:<partition>:iam::<account>:role/<name>"));
    }
    let name = last_segment(parsed.resource).ok_or_else(|| bad("the role has no name"))?;
    let max = role.max_session_duration;
    if max < super::DEFAULT_MAX_SESSION_DURATION
        || max > LONGEST_MAX_SESSION
        || max.subsec_nanos() != 0
    {
        return Err(bad(
            "MaxSessionDuration must be whole seconds from one to twelve hours",
        ));
    }
    Ok(RoleEntry {
        partition: parsed.partition.to_string(),
        account: parsed.account.to_string(),
        name: name.to_string(),
        role_id: unique_id("AROA", &role.arn),
        max_session_duration: max,
        trusted: role.trusted.clone(),
        web_identity: role.web_identity.clone(),
        arn: role.arn,
    })
}

fn provider_entry(provider: OidcProvider) -> Result<ProviderEntry, LabStsError> {
    let bad =
        |why: String| LabStsError::Config(format!("OIDC provider {}: {why}", provider.issuer));
    if !(provider.issuer.starts_with("https://") || provider.issuer.starts_with("http://")) {
        return Err(bad("the issuer is not an http(s) URL".into()));
    }
    if provider.account.len() != 12 || !provider.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the account is not 12 digits".into()));
    }
    if provider.client_ids.is_empty() {
        return Err(bad("no client id (audience) is accepted".into()));
    }
    let keys =
        eks_auth::keys::KeySource::discovery(&provider.issuer, provider.ca_file.as_deref(), None)
            .map_err(|e| bad(e.to_string()))?;
    Ok(ProviderEntry {
        arn: provider.arn(),
        issuer: provider.issuer.clone(),
        client_ids: provider.client_ids.clone(),
        keys,
    })
}

/// The fields of an ARN this endpoint looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// `arn:<partition>:<service>:<region>:<12-digit account>:<resource>`.
    pub fn parse(s: &'a str) -> Option<Self> {
        let mut f = s.splitn(6, ':');
        if f.next()? != "arn" {
            return None;
        }
        let partition = f.next()?;
        let service = f.next()?;
        let _region = f.next()?;
        let account = f.next()?;
        let resource = f.next()?;
        let ok = !partition.is_empty()
            && !service.is_empty()
            && !resource.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit());
        ok.then_some(Self {
            partition,
            service,
            account,
            resource,
        })
    }
}

fn last_segment(resource: &str) -> Option<&str> {
    resource.rsplit('/').next().filter(|s| !s.is_empty())
}

/// A stable AWS-style unique id: the prefix and 17 base32 characters derived from `seed`.
pub(crate) fn unique_id(prefix: &str, seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let tail: String = digest
        .iter()
        .take(17)
        .map(|b| BASE32[usize::from(*b) % BASE32.len()] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// A random access key id (`prefix` and 16 base32 characters) and a 40-character secret.
pub(crate) fn random_key_pair(prefix: &str) -> (String, Secret) {
    let id = format!("{prefix}{}", random_string(BASE32, 16));
    (id, Secret::new(random_string(SECRET_CHARS, 40)))
}

/// A random session token, as long as the ones AWS issues are at their shortest.
pub(crate) fn random_session_token() -> Secret {
    Secret::new(random_string(SECRET_CHARS, 356))
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(role_arn: &str, arn: &str) -> Caller {
        Caller::Session(Arc::new(Session {
            access_key_id: "ASIAX".into(),
            secret_access_key: Secret::new("s"),
            session_token: Secret::new("t"),
            expiration: SystemTime::UNIX_EPOCH,
            role_arn: role_arn.into(),
            assumed_role_arn: arn.into(),
            assumed_role_id: "AROAX:s".into(),
            account: "111122223333".into(),
            tags: vec![
                SessionTag {
                    key: "a".into(),
                    value: "1".into(),
                },
                SessionTag {
                    key: "B".into(),
                    value: "2".into(),
                },
            ],
            transitive_tag_keys: vec!["b".into()],
        }))
    }

    fn user(arn: &str) -> Caller {
        Caller::Static(Arc::new(
            static_key(AccessKey::generate(), arn.into()).unwrap(),
        ))
    }

    fn role(trusted: &[&str]) -> RoleEntry {
        let mut r = Role::new("arn:aws:iam::111122223333:role/path/r");
        for t in trusted {
            r = r.trust(*t);
        }
        role_entry(r).unwrap()
    }

    #[test]
    fn trust_by_arn_account_root_role_and_star() {
        let alice = user("arn:aws:iam::111122223333:user/alice");
        let mallory = user("arn:aws:iam::444455556666:user/mallory");
        let sess = session(
            "arn:aws:iam::111122223333:role/first",
            "arn:aws:sts::111122223333:assumed-role/first/s",
        );
        assert!(role(&["arn:aws:iam::111122223333:user/alice"]).trusts(&alice));
        assert!(!role(&["arn:aws:iam::111122223333:user/alice"]).trusts(&mallory));
        assert!(role(&["111122223333"]).trusts(&alice));
        assert!(!role(&["111122223333"]).trusts(&mallory));
        assert!(role(&["arn:aws:iam::444455556666:root"]).trusts(&mallory));
        assert!(role(&["arn:aws:iam::111122223333:role/first"]).trusts(&sess));
        assert!(!role(&["arn:aws:iam::111122223333:role/other"]).trusts(&sess));
        assert!(role(&["arn:aws:sts::111122223333:assumed-role/first/s"]).trusts(&sess));
        assert!(role(&["*"]).trusts(&mallory));
        assert!(!role(&[]).trusts(&alice));
    }

    #[test]
    fn role_entry_derives_name_and_id_and_checks_the_duration() {
        let r = role(&[]);
        assert_eq!(r.name, "r");
        assert_eq!(r.account, "111122223333");
        assert_eq!(r.role_id.len(), 21);
        assert!(r.role_id.starts_with("AROA"));
        assert_eq!(r.role_id, role(&[]).role_id, "stable");
        for bad in [Duration::from_secs(1800), Duration::from_secs(43201)] {
            let e =
                role_entry(Role::new("arn:aws:iam::111122223333:role/r").max_session_duration(bad));
            assert!(matches!(e, Err(LabStsError::Config(_))), "{bad:?}");
        }
        for bad in [
            "arn:aws:iam::1111:role/r",
            "arn:aws:iam::111122223333:user/u",
            "arn:aws:iam::111122223333:role/",
            "role/r",
        ] {
            assert!(role_entry(Role::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn static_principals_are_users_or_root() {
        assert!(matches!(
            user("arn:aws:iam::111122223333:root"),
            Caller::Static(k) if k.user_id == "111122223333"
        ));
        assert!(
            user("arn:aws:iam::111122223333:user/u")
                .user_id()
                .starts_with("AIDA")
        );
        assert!(
            static_key(
                AccessKey::generate(),
                "arn:aws:iam::111122223333:role/r".into()
            )
            .is_err()
        );
        let lower = AccessKey::new("akia", Secret::new("s"));
        assert!(static_key(lower, "arn:aws:iam::111122223333:root".into()).is_err());
    }

    #[test]
    fn transitive_tags_match_keys_case_insensitively() {
        let s = session("r", "a");
        assert_eq!(
            s.session().unwrap().transitive_tags(),
            [SessionTag {
                key: "B".into(),
                value: "2".into()
            }]
        );
    }

    #[test]
    fn generated_keys_look_like_aws_keys() {
        let (id, secret) = random_key_pair("ASIA");
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("ASIA"));
        assert_eq!(secret.expose().len(), 40);
        assert_ne!(random_key_pair("ASIA").0, id);
        assert!(random_session_token().expose().len() > 300);
    }
}
