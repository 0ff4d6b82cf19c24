//! The wire contracts of EKS Pod Identity, written once for every binary in this workspace.
//!
//! This crate owns the shapes that cross process boundaries: the projected service-account token's
//! claims, the container-credentials JSON that SDKs read from the agent, the EKS Auth
//! `AssumeRoleForPodIdentity` request/response/error shapes, the pod identity association model and
//! its file format, the role policy that bounds which roles a namespace's associations may name,
//! the issuer's OIDC documents, the well-known constants (addresses, ports, paths, env var
//! names), the release and revision every binary reports, and the fields of the log lines other
//! crates read (`log_schema`).
//! It does no IO: parsing and formatting only, so every other crate can depend on it cheaply.

pub mod association;
pub mod claims;
pub mod constants;
pub mod credentials;
pub mod eks_auth;
pub mod ids;
pub mod log_schema;
pub mod oidc;
pub mod role_policy;
pub mod secret;
pub mod version;

pub use association::{Association, AssociationError, AssociationSet};
pub use claims::{ServiceAccountClaims, TokenError, UnverifiedToken};
pub use credentials::ContainerCredentials;
pub use role_policy::{RoleDenied, RolePolicy, RolePolicyError};
pub use secret::{Secret, fingerprint};
