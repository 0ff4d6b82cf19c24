//! The cache policy, each rule on its own, with a scripted upstream and a manual clock: the
//! harness here, the rules by subject in the submodules.

mod by_bytes;
mod flights;
mod refresh;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use futures::future::{BoxFuture, join_all};
use pod_identity_contracts::eks_auth::ErrorKind;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::policy::sd;
use super::*;

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Ok(Duration),
    Recoverable,
    Irrecoverable,
}

/// A scripted EKS Auth: counts calls, answers from the script then the fallback, optionally
/// waits on a gate or a (paused-time) delay first.
struct FakeUpstream {
    clock: Arc<ManualClock>,
    calls: AtomicUsize,
    script: Mutex<VecDeque<Step>>,
    fallback: Mutex<Step>,
    gate: Mutex<Option<Arc<Notify>>>,
    delay: Mutex<Option<Duration>>,
    tokens_seen: Mutex<Vec<String>>,
}

impl FakeUpstream {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn then(&self, step: Step) {
        self.script.lock().unwrap().push_back(step);
    }
    fn always(&self, step: Step) {
        *self.fallback.lock().unwrap() = step;
    }
    fn gate(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        *self.gate.lock().unwrap() = Some(Arc::clone(&n));
        n
    }
    fn delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = Some(d);
    }
}

impl Upstream for FakeUpstream {
    fn fetch(&self, token: Arc<Secret>) -> BoxFuture<'static, Result<Fetched, UpstreamError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.tokens_seen
            .lock()
            .unwrap()
            .push(token.expose().to_string());
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(*self.fallback.lock().unwrap());
        let gate = self.gate.lock().unwrap().clone();
        let delay = *self.delay.lock().unwrap();
        let clock = Arc::clone(&self.clock);
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match step {
                Step::Ok(life) => Ok(fetched(n, add(clock.now(), life))),
                Step::Recoverable => {
                    Err(UpstreamError::api(ErrorKind::Throttling, "rate exceeded"))
                }
                Step::Irrecoverable => Err(UpstreamError::api(
                    ErrorKind::AccessDenied,
                    "no association for this service account",
                )),
            }
        })
    }
}

fn fetched(n: usize, expiration: Timestamp) -> Fetched {
    Fetched::from_parts(
        Bytes::from(format!(r#"{{"AccessKeyId":"ASIA{n}"}}"#)),
        expiration,
        format!("ASIA{n}"),
        "a-0123456789abcdef0".into(),
        "arn:aws:sts::111122223333:assumed-role/r/s".into(),
    )
}

struct Harness {
    cache: Arc<CredentialCache<FakeUpstream>>,
    up: Arc<FakeUpstream>,
    clock: Arc<ManualClock>,
}

impl Harness {
    fn new(config: CacheConfig) -> Self {
        let clock = Arc::new(ManualClock::new(t0()));
        let up = Arc::new(FakeUpstream {
            clock: Arc::clone(&clock),
            calls: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            fallback: Mutex::new(Step::Ok(HOUR)),
            gate: Mutex::new(None),
            delay: Mutex::new(None),
            tokens_seen: Mutex::new(Vec::new()),
        });
        let cache = CredentialCache::new(config, Arc::clone(&up), clock.clone());
        Self { cache, up, clock }
    }

    fn at(&self, since_t0: Duration) {
        self.clock.set(add(t0(), since_t0));
    }

    async fn get(&self, name: &str) -> Result<(Arc<Fetched>, CacheOutcome), UpstreamError> {
        self.cache.get(token(name)).await
    }

    async fn ok(&self, name: &str) -> (String, CacheOutcome) {
        let (f, outcome) = self.get(name).await.expect("credentials");
        (f.access_key_id.clone(), outcome)
    }
}

/// Exact schedules: jitter off. 1 h credentials → stale at 45 min, refresh at 35 min.
fn exact() -> CacheConfig {
    CacheConfig {
        jitter: false,
        ..CacheConfig::default()
    }
}

fn token(name: &str) -> TokenInfo {
    token_expiring(name, add(t0(), 24 * HOUR))
}

fn token_expiring(name: &str, exp: Timestamp) -> TokenInfo {
    TokenInfo::new(Arc::new(Secret::new(format!("eyJ.token-of-{name}"))), exp)
}

/// Let every runnable task run until it blocks (paused time auto-advances only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}
