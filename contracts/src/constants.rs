//! Well-known names and numbers of EKS Pod Identity, as AWS defines them.

/// Audience the projected service-account token must carry.
pub const AUDIENCE: &str = "pods.eks.amazonaws.com";

/// IPv4 link-local address the agent serves on.
pub const AGENT_IPV4: &str = "169.254.170.23";
/// IPv6 unique-local address the agent serves on (bracketed host form in `AGENT_IPV6_HOST`).
pub const AGENT_IPV6: &str = "fd00:ec2::23";
/// The IPv6 address as it appears in a URL or Host header.
pub const AGENT_IPV6_HOST: &str = "[fd00:ec2::23]";
/// Port of the credentials endpoint.
pub const AGENT_PORT: u16 = 80;
/// Port of `/healthz` and `/readyz` on localhost.
pub const AGENT_PROBE_PORT: u16 = 2703;
/// Port of `/metrics` (and the probes again) on the metrics address.
pub const AGENT_METRICS_PORT: u16 = 2705;
/// Path of the credentials endpoint.
pub const CREDENTIALS_PATH: &str = "/v1/credentials";

/// Full URI the webhook injects on IPv4 clusters.
pub const FULL_URI_IPV4: &str = "http://169.254.170.23/v1/credentials";
/// Full URI the webhook injects on IPv6 clusters.
pub const FULL_URI_IPV6: &str = "http://[fd00:ec2::23]/v1/credentials";

/// Env var naming the agent's URL.
pub const ENV_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// Env var naming the token file the SDK sends as `Authorization`.
pub const ENV_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
/// Env var the webhook sets so that STS calls stay regional.
pub const ENV_STS_REGIONAL_ENDPOINTS: &str = "AWS_STS_REGIONAL_ENDPOINTS";

/// Directory of the projected token inside a container.
pub const TOKEN_MOUNT_DIR: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
/// File name of the projected token inside `TOKEN_MOUNT_DIR`.
pub const TOKEN_FILE_NAME: &str = "eks-pod-identity-token";
/// Full path of the token file, the value of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
pub const TOKEN_FILE_PATH: &str =
    "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";
/// Name of the projected volume the webhook adds.
pub const TOKEN_VOLUME_NAME: &str = "eks-pod-identity-token";
/// Default lifetime of the projected token the webhook asks for.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 86_400;

/// Largest token the agent and eks-auth accept. Real tokens are 1–2 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// SigV4 signing name of the EKS Auth API.
pub const EKS_AUTH_SIGNING_NAME: &str = "eks-auth";

/// Prefix of a service-account subject: `system:serviceaccount:<ns>:<sa>`.
pub const SUBJECT_PREFIX: &str = "system:serviceaccount:";
