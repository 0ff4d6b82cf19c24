//! The EKS Pod Identity node agent: serves pods' AWS credentials on `169.254.170.23:80` (and
//! `[fd00:ec2::23]:80`), exchanging each pod's projected service-account token with EKS Auth.
//!
//! A drop-in for the official eks-pod-identity-agent (same subcommands, flags, responses and
//! metric names) whose cache coalesces concurrent requests, refreshes ahead of expiry, never
//! hands botocore credentials it treats as stale, and stops renewing for pods that are gone.
//!
//! Modules, in the order a request meets them: [`config`] (flags), [`agent`] (bind, assemble,
//! drain), [`server`] (HTTP surfaces), [`validate`] (Host and token checks), [`cache`] (single
//! flight, refresh, eviction), [`upstream`] / [`eks_auth`] (the exchange, trusting
//! [`ca_bundle`] too), [`metrics`],
//! [`telemetry`] (logging, set up by `pod_identity_runtime`), [`privileges`] (capabilities
//! dropped after binding), [`initialize`] (the node's link-local addresses), [`run`] (the
//! subcommands), [`entry`] (the binary's `main`), [`go_runner`] (the image's `/go-runner`).

pub mod agent;
pub mod ca_bundle;
pub mod cache;
pub mod config;
pub mod eks_auth;
pub mod entry;
pub mod go_runner;
pub mod identity;
pub mod initialize;
pub mod metrics;
pub mod privileges;
pub mod run;
pub mod server;
pub mod telemetry;
pub mod upstream;
pub mod validate;
