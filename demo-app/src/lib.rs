//! demo-app: what a pod's AWS SDK does to find credentials, step by step, and why.
//!
//! It walks the Rust SDK's default credential chain with aws-config's own providers, in the
//! chain's order (environment, profile, web identity, container, IMDS), and for each step says
//! whether it is configured (what it saw), whether it yielded credentials, and why the chain went
//! on ("not loaded" → next) or stopped (any other error). For the container step, Pod Identity's,
//! it shows what a reviewer wants: the URI and whether SDKs accept its host, the token file and
//! its unverified claims, and the exchange with the agent. Then it calls STS GetCallerIdentity with
//! the winning credentials and cross-checks that aws-config's default chain chose the same
//! provider. With `--sdk python|javascript|go|java` it explains instead how that SDK's default
//! chain would decide in this environment, from a model of its chain ([`sdk`]), checked against
//! the real SDK by the shadowing table in `tests/shadowing.rs`. Secrets never appear: access key
//! ids are shortened, tokens and keys are not printed.

pub mod chain;
pub mod container;
pub mod entry;
pub mod environment;
pub mod identity;
pub mod report;
pub mod sdk;
