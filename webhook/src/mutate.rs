//! The decision and the mutation, as one pure function: (pod, association, settings) → patch.
//!
//! No IO, no clock, no store: [`mutate`] is what `serve`, `mutate` and `audit` all call, so what a
//! security review reads offline is exactly what the admission path does. It edits a typed clone
//! of the pod and returns `json_patch::diff(before, after)`; everything it adds is only added when
//! absent, so a second pass over its own output yields an empty patch.
//!
//! The injection, as EKS does it (see the design brief, "What the webhook injects"), into every
//! container and init container (never ephemeral ones) not named in
//! `eks.amazonaws.com/skip-containers`:
//! - env `AWS_STS_REGIONAL_ENDPOINTS=regional`, `AWS_DEFAULT_REGION` + `AWS_REGION` (when a region
//!   is configured and the container sets neither), `AWS_CONTAINER_CREDENTIALS_FULL_URI`,
//!   `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`; a variable the container already sets is kept;
//! - a read-only mount of the token volume, unless the container already mounts something at
//!   that path;
//! - the projected volume `eks-pod-identity-token` (unless the pod has a volume of that name) and
//!   the label `eks.amazonaws.com/pod-identity: enabled` (unless the label is set), both only when
//!   at least one container is injected.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use pod_identity_contracts::association::Association;
use pod_identity_contracts::constants::{
    AUDIENCE, ENV_FULL_URI, ENV_STS_REGIONAL_ENDPOINTS, ENV_TOKEN_FILE, FULL_URI_IPV4,
    FULL_URI_IPV6, TOKEN_EXPIRATION_SECONDS, TOKEN_FILE_NAME, TOKEN_FILE_PATH, TOKEN_MOUNT_DIR,
    TOKEN_VOLUME_NAME,
};

/// Pod annotation: comma-separated names of containers not to inject.
pub const SKIP_CONTAINERS_ANNOTATION: &str = "eks.amazonaws.com/skip-containers";
/// Pod annotation: lifetime of the projected token in seconds (at least 600).
pub const TOKEN_EXPIRATION_ANNOTATION: &str = "eks.amazonaws.com/token-expiration";
/// Label set on injected pods.
pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
/// Value of [`POD_IDENTITY_LABEL`].
pub const POD_IDENTITY_LABEL_VALUE: &str = "enabled";
/// Pod label that keeps the webhook away (matched by the configuration's objectSelector).
pub const SKIP_WEBHOOK_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";
/// Shortest token lifetime Kubernetes accepts for a projected token.
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// Longest token lifetime Kubernetes accepts for a projected token (2^32 s).
pub const MAX_TOKEN_EXPIRATION_SECONDS: i64 = 1 << 32;

const ENV_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
const ENV_REGION: &str = "AWS_REGION";

/// What the operator configures about the injection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Region for `AWS_DEFAULT_REGION` / `AWS_REGION`; none means they are not injected.
    pub region: Option<String>,
    /// Inject the IPv6 agent URL (`http://[fd00:ec2::23]/v1/credentials`).
    pub ipv6: bool,
}

impl Settings {
    /// The `AWS_CONTAINER_CREDENTIALS_FULL_URI` value.
    pub fn full_uri(&self) -> &'static str {
        if self.ipv6 {
            FULL_URI_IPV6
        } else {
            FULL_URI_IPV4
        }
    }
}

/// Why the webhook did or did not change the pod; the `result` label of the review metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No association for (namespace, service account): the pod is left alone.
    NoAssociation,
    /// Associated, but every container is skipped (or the pod has none): left alone.
    NoTargetContainers,
    /// Associated and already carries everything: empty patch.
    AlreadyInjected,
    /// Associated and changed.
    Injected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NoAssociation => "no_association",
            Outcome::NoTargetContainers => "no_target_containers",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::Injected => "injected",
        }
    }
}

/// The result of [`mutate`].
#[derive(Debug, Clone)]
pub struct Mutation {
    pub outcome: Outcome,
    /// RFC 6902 patch from the given pod to [`Mutation::pod`]; empty when nothing changed.
    pub patch: json_patch::Patch,
    /// The pod after the patch.
    pub pod: Pod,
    /// Things the pod's author should know (unknown skip-containers names, a clamped token
    /// lifetime, a mount path taken by another volume). Returned to `kubectl` as warnings.
    pub warnings: Vec<String>,
    /// Names of the containers that were injected (changed or not).
    pub injected_containers: Vec<String>,
}

/// The ServiceAccount a pod runs as: `spec.serviceAccountName`, or `default`.
pub fn service_account_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Decide and mutate. Pure and idempotent: `mutate(mutate(p).pod)` has an empty patch.
pub fn mutate(pod: &Pod, association: Option<&Association>, settings: &Settings) -> Mutation {
    let mut warnings = Vec::new();
    let unchanged = |outcome, warnings| Mutation {
        outcome,
        patch: json_patch::Patch::default(),
        pod: pod.clone(),
        warnings,
        injected_containers: Vec::new(),
    };
    if association.is_none() {
        return unchanged(Outcome::NoAssociation, warnings);
    }
    let annotations = pod.metadata.annotations.as_ref();
    let skip: BTreeSet<&str> = annotations
        .and_then(|a| a.get(SKIP_CONTAINERS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return unchanged(Outcome::NoTargetContainers, warnings);
    };
    let known: BTreeSet<&str> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str())
        .collect();
    let unknown: Vec<&str> = skip.difference(&known).copied().collect();
    if !unknown.is_empty() {
        warnings.push(format!(
            "{SKIP_CONTAINERS_ANNOTATION} names containers this pod does not have: {}",
            unknown.join(", ")
        ));
    }
    if known.iter().all(|name| skip.contains(name)) {
        return unchanged(Outcome::NoTargetContainers, warnings);
    }

    let expiration = token_expiration(annotations, &mut warnings);
    let mut after = pod.clone();
    let mut injected_containers = Vec::new();
    {
        let spec = after.spec.as_mut().expect("checked above");
        let init = spec.init_containers.iter_mut().flatten();
        for container in spec.containers.iter_mut().chain(init) {
            if skip.contains(container.name.as_str()) {
                continue;
            }
            inject_container(container, settings, &mut warnings);
            injected_containers.push(container.name.clone());
        }
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        match volumes.iter().find(|v| v.name == TOKEN_VOLUME_NAME) {
            None => volumes.push(token_volume(expiration)),
            Some(v) if !is_token_volume(v) => warnings.push(format!(
                "the pod already has a volume named {TOKEN_VOLUME_NAME:?} that is not the Pod Identity token; it is kept, and the SDK will read that volume instead"
            )),
            Some(_) => {}
        }
    }
    let labels = after.metadata.labels.get_or_insert_with(Default::default);
    if !labels.contains_key(POD_IDENTITY_LABEL) {
        labels.insert(
            POD_IDENTITY_LABEL.to_string(),
            POD_IDENTITY_LABEL_VALUE.to_string(),
        );
    }

    let patch = diff(pod, &after);
    let outcome = if patch.0.is_empty() {
        Outcome::AlreadyInjected
    } else {
        Outcome::Injected
    };
    Mutation {
        outcome,
        pod: if patch.0.is_empty() {
            pod.clone()
        } else {
            after
        },
        patch,
        warnings,
        injected_containers,
    }
}

/// The JSON patch between two typed pods, computed over the only fields [`mutate`] touches
/// (labels, the containers' env and mounts, volumes), laid out at their paths in a pod. Any other
/// field is equal on both sides by construction, so the full-pod diff would be the same patch at
/// a fraction of the cost; and since neither side carries fields the types do not know, those
/// are never touched by the patch.
fn diff(before: &Pod, after: &Pod) -> json_patch::Patch {
    json_patch::diff(&touched(before), &touched(after))
}

fn touched(pod: &Pod) -> Value {
    fn containers(list: &[Container]) -> Value {
        Value::Array(
            list.iter()
                .map(|c| {
                    let mut m = Map::new();
                    if let Some(env) = &c.env {
                        m.insert("env".into(), to_value(env));
                    }
                    if let Some(mounts) = &c.volume_mounts {
                        m.insert("volumeMounts".into(), to_value(mounts));
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    }
    let mut metadata = Map::new();
    if let Some(labels) = &pod.metadata.labels {
        metadata.insert("labels".into(), to_value(labels));
    }
    let mut spec = Map::new();
    if let Some(s) = &pod.spec {
        spec.insert("containers".into(), containers(&s.containers));
        if let Some(init) = &s.init_containers {
            spec.insert("initContainers".into(), containers(init));
        }
        if let Some(volumes) = &s.volumes {
            spec.insert("volumes".into(), to_value(volumes));
        }
    }
    let mut root = Map::new();
    root.insert("metadata".into(), Value::Object(metadata));
    root.insert("spec".into(), Value::Object(spec));
    Value::Object(root)
}

/// Serializing these types cannot fail (string keys only); `null` would only make the patch
/// larger, never wrong, since both sides would agree.
fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn token_expiration(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    warnings: &mut Vec<String>,
) -> i64 {
    let Some(raw) = annotations.and_then(|a| a.get(TOKEN_EXPIRATION_ANNOTATION)) else {
        return TOKEN_EXPIRATION_SECONDS;
    };
    match raw.trim().parse::<i64>() {
        Ok(v) if v < MIN_TOKEN_EXPIRATION_SECONDS => {
            warnings.push(format!(
                "{TOKEN_EXPIRATION_ANNOTATION}: {v} is below the minimum; using {MIN_TOKEN_EXPIRATION_SECONDS}"
            ));
            MIN_TOKEN_EXPIRATION_SECONDS
        }
        Ok(v) if v > MAX_TOKEN_EXPIRATION_SECONDS => {
            warnings.push(format!(
                "{TOKEN_EXPIRATION_ANNOTATION}: {v} is above the maximum; using {MAX_TOKEN_EXPIRATION_SECONDS}"
            ));
            MAX_TOKEN_EXPIRATION_SECONDS
        }
        Ok(v) => v,
        Err(_) => {
            warnings.push(format!(
                "{TOKEN_EXPIRATION_ANNOTATION}: {raw:?} is not a number of seconds; using {TOKEN_EXPIRATION_SECONDS}"
            ));
            TOKEN_EXPIRATION_SECONDS
        }
    }
}

fn inject_container(container: &mut Container, settings: &Settings, warnings: &mut Vec<String>) {
    let env = container.env.get_or_insert_with(Vec::new);
    let has = |env: &[EnvVar], name: &str| env.iter().any(|e| e.name == name);
    let mut wanted: Vec<(&str, &str)> = vec![(ENV_STS_REGIONAL_ENDPOINTS, "regional")];
    if let Some(region) = settings.region.as_deref()
        && !has(env, ENV_DEFAULT_REGION)
        && !has(env, ENV_REGION)
    {
        wanted.push((ENV_DEFAULT_REGION, region));
        wanted.push((ENV_REGION, region));
    }
    wanted.push((ENV_FULL_URI, settings.full_uri()));
    wanted.push((ENV_TOKEN_FILE, TOKEN_FILE_PATH));
    for (name, value) in wanted {
        if !has(env, name) {
            env.push(EnvVar {
                name: name.to_string(),
                value: Some(value.to_string()),
                value_from: None,
            });
        }
    }

    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    match mounts.iter().find(|m| m.mount_path == TOKEN_MOUNT_DIR) {
        Some(m) if m.name == TOKEN_VOLUME_NAME => {}
        Some(m) => warnings.push(format!(
            "container {:?} already mounts volume {:?} at {TOKEN_MOUNT_DIR}; the token volume is not mounted there",
            container.name, m.name
        )),
        None => mounts.push(VolumeMount {
            name: TOKEN_VOLUME_NAME.to_string(),
            mount_path: TOKEN_MOUNT_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        }),
    }
}

fn token_volume(expiration_seconds: i64) -> Volume {
    Volume {
        name: TOKEN_VOLUME_NAME.to_string(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(AUDIENCE.to_string()),
                    expiration_seconds: Some(expiration_seconds),
                    path: TOKEN_FILE_NAME.to_string(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A projected service-account token for the Pod Identity audience.
fn is_token_volume(v: &Volume) -> bool {
    v.projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .any(|t| t.audience.as_deref() == Some(AUDIENCE) && t.path == TOKEN_FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assoc() -> Association {
        serde_yaml_ng::from_str(
            "{namespace: default, serviceAccount: s3-reader, roleArn: 'arn:aws:iam::111122223333:role/r'}",
        )
        .unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn simple() -> Pod {
        pod(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"serviceAccountName": "s3-reader", "containers": [{"name": "app", "image": "x"}]}
        }))
    }

    fn env_of(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn injects_exactly_the_contract() {
        let m = mutate(&simple(), Some(&assoc()), &Settings::default());
        assert_eq!(m.outcome, Outcome::Injected);
        let spec = m.pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(
            env_of(c),
            [
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://169.254.170.23/v1/credentials"
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"
                ),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let v = serde_json::to_value(&m.pod).unwrap();
        assert_eq!(
            v["spec"]["volumes"],
            json!([{"name": "eks-pod-identity-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "pods.eks.amazonaws.com", "expirationSeconds": 86400, "path": "eks-pod-identity-token"}}]}}])
        );
        assert_eq!(
            v["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "eks-pod-identity-token", "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount", "readOnly": true}])
        );
        assert_eq!(
            v["metadata"]["labels"],
            json!({"eks.amazonaws.com/pod-identity": "enabled"})
        );
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn idempotent_and_no_association_means_no_patch() {
        let s = Settings {
            region: Some("eu-west-1".into()),
            ipv6: true,
        };
        let once = mutate(&simple(), Some(&assoc()), &s);
        let twice = mutate(&once.pod, Some(&assoc()), &s);
        assert_eq!(twice.outcome, Outcome::AlreadyInjected);
        assert!(twice.patch.0.is_empty());
        let none = mutate(&simple(), None, &s);
        assert_eq!(none.outcome, Outcome::NoAssociation);
        assert!(none.patch.0.is_empty());
    }

    #[test]
    fn region_only_when_neither_is_set_and_ipv6_uri() {
        let s = Settings {
            region: Some("eu-west-1".into()),
            ipv6: true,
        };
        let p = pod(json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "env": [{"name": "AWS_REGION", "value": "us-east-2"}]}
        ]}}));
        let m = mutate(&p, Some(&assoc()), &s);
        let spec = m.pod.spec.unwrap();
        let a = env_of(&spec.containers[0]);
        assert!(a.contains(&("AWS_DEFAULT_REGION".into(), "eu-west-1".into())));
        assert!(a.contains(&("AWS_REGION".into(), "eu-west-1".into())));
        assert!(a.contains(&(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
            "http://[fd00:ec2::23]/v1/credentials".into()
        )));
        let b = env_of(&spec.containers[1]);
        assert!(!b.iter().any(|(n, _)| n == "AWS_DEFAULT_REGION"));
        assert!(b.contains(&("AWS_REGION".into(), "us-east-2".into())));
    }

    #[test]
    fn token_expiration_annotation_is_clamped() {
        for (raw, want, warns) in [
            ("3600", 3600, false),
            ("60", 600, true),
            ("soon", 86400, true),
            ("99999999999", 1_i64 << 32, true),
        ] {
            let mut p = simple();
            p.metadata.annotations = Some(
                [(TOKEN_EXPIRATION_ANNOTATION.to_string(), raw.to_string())]
                    .into_iter()
                    .collect(),
            );
            let m = mutate(&p, Some(&assoc()), &Settings::default());
            let v = serde_json::to_value(&m.pod).unwrap();
            assert_eq!(
                v["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
                json!(want),
                "{raw}"
            );
            assert_eq!(!m.warnings.is_empty(), warns, "{raw}: {:?}", m.warnings);
        }
    }

    #[test]
    fn service_account_defaults_to_default() {
        assert_eq!(service_account_of(&simple()), "s3-reader");
        assert_eq!(
            service_account_of(&pod(json!({"spec": {"containers": []}}))),
            "default"
        );
        assert_eq!(service_account_of(&Pod::default()), "default");
    }
}
