//! eks-auth: the EKS Auth `AssumeRoleForPodIdentity` API for clusters that are not EKS (and for
//! the lab and the end-to-end tests). It verifies a pod's projected service-account token against
//! the cluster issuer's keys, finds the pod identity association of its service account, and
//! assumes the association's role through STS with the pod's session tags. It holds the only AWS
//! credentials able to assume pod roles, so nothing reaches STS unless every check passed.
//!
//! Modules, in the order a request meets them: [`config`] (flags), [`app`] (bind, HTTPS or not,
//! assemble, drain), [`server`] (HTTP and the wire format), [`exchange`] (the decision), [`verify`] and
//! [`keys`] (the token and the issuer's keys), the associations (`pod_identity_associations`,
//! shared with the webhook), [`live`] (TokenReview:
//! is the token's pod still there), [`sts`] (AssumeRole),
//! [`metrics`], [`telemetry`], [`run`] (the server's life), [`entry`] (the binary's `main`).

pub mod app;
pub mod caller;
pub mod config;
pub mod entry;
pub mod exchange;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod run;
pub mod server;
pub mod sts;
pub mod telemetry;
pub mod verify;
