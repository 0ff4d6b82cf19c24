//! The EKS Pod Identity admission webhook: at pod creation, injects the projected token volume,
//! its mount and the variables that point AWS SDKs at the node agent into pods whose
//! ServiceAccount has an association, exactly as EKS's managed webhook does.
//!
//! Layers by power: [`mutate`] is the pure decision and mutation (pod, association, settings →
//! a `json_patch` of k8s_openapi objects); [`review`] decodes and encodes AdmissionReviews around
//! it through kube's admission types, without IO; [`server`] and
//! [`app`] put it on HTTPS with a hot-reloaded certificate (runtime's `tls`); [`offline`] (`mutate`
//! subcommand) and [`audit`] reuse the same path offline and against a cluster; [`certs`] gives `serve` its
//! certificate where there is no cert-manager. [`store`] is
//! where associations come from, [`config`] the flags, [`run`] the subcommands.

pub mod app;
pub mod audit;
pub mod body_budget;
pub mod certs;
pub mod config;
pub mod entry;
pub mod metrics;
pub mod mutate;
pub mod offline;
pub mod review;
pub mod run;
pub mod server;
pub mod store;
pub mod telemetry;
