//! The decision and the mutation, as one pure function: (pod, association, settings) → patch.
//!
//! No IO, no clock, no store: [`plan`] decides what to add to a pod and [`Plan::patch`] writes it
//! as typed [`json_patch`] operations whose values are k8s_openapi objects. The admission path
//! returns that patch without copying the pod; [`mutate`] (`mutate` and `audit` call it) also
//! applies it to the pod's JSON, so the pod it returns is the patch's result by construction and
//! what a security review reads offline is exactly what the admission path does. Everything it
//! adds is only added when absent, so a second pass over its own output yields an empty patch.
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

use std::collections::{BTreeMap, BTreeSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pod_identity_contracts::association::Association;
use pod_identity_contracts::constants::{
    AUDIENCE, ENV_FULL_URI, ENV_STS_REGIONAL_ENDPOINTS, ENV_TOKEN_FILE, FULL_URI_IPV4,
    FULL_URI_IPV6, TOKEN_EXPIRATION_SECONDS, TOKEN_FILE_NAME, TOKEN_FILE_PATH, TOKEN_MOUNT_DIR,
    TOKEN_VOLUME_NAME,
};

/// Pod annotation: comma-separated names of containers not to inject.
pub const SKIP_CONTAINERS_ANNOTATION: &str = "eks.amazonaws.com/skip-containers";
/// Pod annotation: lifetime of the projected token in seconds, kept within
/// `MIN_TOKEN_EXPIRATION_SECONDS` to `MAX_TOKEN_EXPIRATION_SECONDS`.
pub const TOKEN_EXPIRATION_ANNOTATION: &str = "eks.amazonaws.com/token-expiration";
/// Label set on injected pods.
pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
/// Value of [`POD_IDENTITY_LABEL`].
pub const POD_IDENTITY_LABEL_VALUE: &str = "enabled";
/// Pod label that keeps the webhook away (matched by the configuration's objectSelector).
pub const SKIP_WEBHOOK_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";
/// Shortest token lifetime injected: an hour. Kubernetes accepts 600 s, but eks-auth never
/// issues credentials that outlive the token and STS's shortest session is 15 minutes, while the
/// kubelet renews a token only at 80% of its life: a 10-minute token could never be exchanged,
/// and anything under 75 minutes would be refused near the end of each life.
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// Longest token lifetime injected: 24 h, EKS's default, and the longest eks-auth accepts
/// (`--max-token-lifetime`). Kubernetes would accept 2^32 s: a token that, copied, buys
/// credentials for a century.
pub const MAX_TOKEN_EXPIRATION_SECONDS: i64 = 86_400;

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
    let plan = plan(pod, association, settings);
    let patch = plan.patch();
    Mutation {
        outcome: plan.outcome,
        pod: patched(pod, &patch),
        patch,
        injected_containers: plan.containers.iter().map(|c| c.name.to_string()).collect(),
        warnings: plan.warnings,
    }
}

/// `pod` with `patch` applied to its JSON: how the API server applies it. A patch [`Plan::patch`]
/// wrote always applies (the tests and the fuzz target hold it to that); were one not to, the pod
/// is returned unchanged rather than half-patched.
fn patched(pod: &Pod, patch: &Patch) -> Pod {
    if patch.0.is_empty() {
        return pod.clone();
    }
    serde_json::to_value(pod)
        .ok()
        .and_then(|mut json| {
            json_patch::patch(&mut json, patch).ok()?;
            serde_json::from_value(json).ok()
        })
        .unwrap_or_else(|| pod.clone())
}

/// What [`mutate`] adds to a pod, decided from the pod alone and nothing copied yet: the
/// outcome, the warnings and each addition with where it goes. [`Plan::patch`] writes the
/// additions as the JSONPatch the webhook returns; [`mutate`] also applies it.
///
/// Only additions exist (everything is added only when absent), so the patch is a list of `add`
/// operations in document order: the label, then each injected container's env and mount
/// (`containers`, then `initContainers`), then the volume. A list or map the pod lacks is added
/// whole; otherwise each item is appended at the list's end.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub outcome: Outcome,
    /// As [`Mutation::warnings`].
    pub warnings: Vec<String>,
    /// Every injected container, changed or not.
    containers: Vec<ContainerPlan<'a>>,
    label: Option<LabelSlot>,
    volume: Option<(Slot, i64)>,
}

/// Where the label goes: into the pod's labels, into a labels map the pod lacks, or into
/// `metadata` itself when the pod has none (empty metadata decodes as absent metadata, and only a
/// hand-made review sends a pod without even a name; `/metadata/labels` cannot be added there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelSlot {
    Metadata,
    New,
    Append,
}

/// Where an addition goes: into a list (or map) the pod does not have, which is added whole, or
/// appended to one it has, of this length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    New,
    Append(usize),
}

impl Slot {
    fn of<T>(list: Option<&Vec<T>>) -> Self {
        list.map_or(Slot::New, |l| Slot::Append(l.len()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContainerList {
    Containers,
    InitContainers,
}

impl ContainerList {
    fn key(self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
        }
    }
}

#[derive(Debug, Clone)]
struct ContainerPlan<'a> {
    list: ContainerList,
    index: usize,
    name: &'a str,
    env_slot: Slot,
    /// Variables to append, in order.
    env: Vec<(&'static str, &'a str)>,
    mount: Option<Slot>,
}

/// Decide what [`mutate`] would add, without copying the pod.
pub fn plan<'a>(
    pod: &'a Pod,
    association: Option<&Association>,
    settings: &'a Settings,
) -> Plan<'a> {
    let mut plan = Plan {
        outcome: Outcome::NoAssociation,
        warnings: Vec::new(),
        containers: Vec::new(),
        label: None,
        volume: None,
    };
    if association.is_none() {
        return plan;
    }
    plan.outcome = Outcome::NoTargetContainers;
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
        return plan;
    };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let known: BTreeSet<&str> = spec
        .containers
        .iter()
        .chain(init)
        .map(|c| c.name.as_str())
        .collect();
    let unknown: Vec<&str> = skip.difference(&known).copied().collect();
    if !unknown.is_empty() {
        plan.warnings.push(format!(
            "{SKIP_CONTAINERS_ANNOTATION} names containers this pod does not have: {}",
            unknown.join(", ")
        ));
    }
    if known.iter().all(|name| skip.contains(name)) {
        return plan;
    }

    let expiration = token_expiration(annotations, &mut plan.warnings);
    for (list, containers) in [
        (ContainerList::Containers, spec.containers.as_slice()),
        (ContainerList::InitContainers, init),
    ] {
        for (index, container) in containers.iter().enumerate() {
            if skip.contains(container.name.as_str()) {
                continue;
            }
            let c = plan_container(list, index, container, settings, &mut plan.warnings);
            plan.containers.push(c);
        }
    }
    let volumes = spec.volumes.as_ref();
    match volumes.and_then(|v| v.iter().find(|v| v.name == TOKEN_VOLUME_NAME)) {
        None => plan.volume = Some((Slot::of(volumes), expiration)),
        Some(v) if !is_token_volume(v) => plan.warnings.push(format!(
            "the pod already has a volume named {TOKEN_VOLUME_NAME:?} that is not the Pod Identity token; it is kept, and the SDK will read that volume instead"
        )),
        Some(_) => {}
    }
    let labels = pod.metadata.labels.as_ref();
    if !labels.is_some_and(|l| l.contains_key(POD_IDENTITY_LABEL)) {
        plan.label = Some(match labels {
            Some(_) => LabelSlot::Append,
            None if pod.metadata == ObjectMeta::default() => LabelSlot::Metadata,
            None => LabelSlot::New,
        });
    }
    plan.outcome = if plan.op_count() == 0 {
        Outcome::AlreadyInjected
    } else {
        Outcome::Injected
    };
    plan
}

fn plan_container<'a>(
    list: ContainerList,
    index: usize,
    container: &'a Container,
    settings: &'a Settings,
    warnings: &mut Vec<String>,
) -> ContainerPlan<'a> {
    let present = container.env.as_deref().unwrap_or_default();
    let has = |name: &str| present.iter().any(|e| e.name == name);
    let mut env = Vec::with_capacity(5);
    let mut want = |name: &'static str, value: &'a str| {
        if !has(name) {
            env.push((name, value));
        }
    };
    want(ENV_STS_REGIONAL_ENDPOINTS, "regional");
    if let Some(region) = settings.region.as_deref()
        && !has(ENV_DEFAULT_REGION)
        && !has(ENV_REGION)
    {
        want(ENV_DEFAULT_REGION, region);
        want(ENV_REGION, region);
    }
    want(ENV_FULL_URI, settings.full_uri());
    want(ENV_TOKEN_FILE, TOKEN_FILE_PATH);

    let mounts = container.volume_mounts.as_ref();
    let mount = match mounts.and_then(|m| m.iter().find(|m| m.mount_path == TOKEN_MOUNT_DIR)) {
        Some(m) if m.name == TOKEN_VOLUME_NAME => None,
        Some(m) => {
            warnings.push(format!(
                "container {:?} already mounts volume {:?} at {TOKEN_MOUNT_DIR}; the token volume is not mounted there",
                container.name, m.name
            ));
            None
        }
        None => Some(Slot::of(mounts)),
    };
    ContainerPlan {
        list,
        index,
        name: &container.name,
        env_slot: Slot::of(container.env.as_ref()),
        env,
        mount,
    }
}
impl Plan<'_> {
    /// Operations in the patch; 0 when the pod is left as it is.
    pub fn op_count(&self) -> usize {
        let containers: usize = self
            .containers
            .iter()
            .map(|c| {
                let env = match c.env_slot {
                    _ if c.env.is_empty() => 0,
                    Slot::New => 1,
                    Slot::Append(_) => c.env.len(),
                };
                env + usize::from(c.mount.is_some())
            })
            .sum();
        usize::from(self.label.is_some()) + containers + usize::from(self.volume.is_some())
    }

    /// The additions as a JSONPatch: `add` operations in document order, each value the
    /// k8s_openapi object it adds (or the list or map of them the pod lacks) as it serializes.
    pub fn patch(&self) -> Patch {
        let mut ops = Vec::with_capacity(self.op_count());
        let mut add = |path: PointerBuf, value: serde_json::Value| {
            ops.push(PatchOperation::Add(AddOperation { path, value }));
        };
        if let Some(slot) = self.label {
            let labels = BTreeMap::from([(
                POD_IDENTITY_LABEL.to_string(),
                POD_IDENTITY_LABEL_VALUE.to_string(),
            )]);
            match slot {
                LabelSlot::Metadata => add(
                    PointerBuf::from_tokens(["metadata"]),
                    json(&ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                ),
                LabelSlot::New => add(
                    PointerBuf::from_tokens(["metadata", "labels"]),
                    json(&labels),
                ),
                LabelSlot::Append => add(
                    PointerBuf::from_tokens(["metadata", "labels", POD_IDENTITY_LABEL]),
                    json(POD_IDENTITY_LABEL_VALUE),
                ),
            }
        }
        for c in &self.containers {
            let index = c.index.to_string();
            let list = |field: &str| PointerBuf::from_tokens(["spec", c.list.key(), &index, field]);
            let item = |field: &str, i: usize| {
                let mut path = list(field);
                path.push_back(i.to_string());
                path
            };
            let env_var = |&(name, value): &(&str, &str)| EnvVar {
                name: name.to_string(),
                value: Some(value.to_string()),
                value_from: None,
            };
            match c.env_slot {
                _ if c.env.is_empty() => {}
                Slot::New => {
                    let env: Vec<EnvVar> = c.env.iter().map(env_var).collect();
                    add(list("env"), json(&env));
                }
                Slot::Append(len) => {
                    for (k, var) in c.env.iter().enumerate() {
                        add(item("env", len + k), json(&env_var(var)));
                    }
                }
            }
            match c.mount {
                None => {}
                Some(Slot::New) => add(list("volumeMounts"), json(&[token_mount()])),
                Some(Slot::Append(len)) => add(item("volumeMounts", len), json(&token_mount())),
            }
        }
        if let Some((slot, expiration)) = self.volume {
            let volume = token_volume(expiration);
            match slot {
                Slot::New => add(
                    PointerBuf::from_tokens(["spec", "volumes"]),
                    json(&[volume]),
                ),
                Slot::Append(len) => {
                    let mut path = PointerBuf::from_tokens(["spec", "volumes"]);
                    path.push_back(len.to_string());
                    add(path, json(&volume));
                }
            }
        }
        Patch(ops)
    }
}

/// A k8s_openapi object as JSON. They always serialize: their maps have string keys.
fn json<T: serde::Serialize + ?Sized>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or_default()
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

/// The read-only mount of the token volume.
fn token_mount() -> VolumeMount {
    VolumeMount {
        name: TOKEN_VOLUME_NAME.to_string(),
        mount_path: TOKEN_MOUNT_DIR.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
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

    /// The fields [`mutate`] touches (labels, the containers' env and mounts, volumes), laid out
    /// at their paths in a pod: a full diff of these is the patch [`Plan::patch`] must write.
    fn touched(pod: &Pod) -> serde_json::Value {
        fn containers(list: &[Container]) -> serde_json::Value {
            list.iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    if let Some(env) = &c.env {
                        m.insert("env".into(), serde_json::to_value(env).unwrap());
                    }
                    if let Some(mounts) = &c.volume_mounts {
                        m.insert("volumeMounts".into(), serde_json::to_value(mounts).unwrap());
                    }
                    serde_json::Value::Object(m)
                })
                .collect()
        }
        let mut v = json!({"metadata": {}, "spec": {}});
        if let Some(labels) = &pod.metadata.labels {
            v["metadata"]["labels"] = json!(labels);
        }
        if let Some(s) = &pod.spec {
            v["spec"]["containers"] = containers(&s.containers);
            if let Some(init) = &s.init_containers {
                v["spec"]["initContainers"] = containers(init);
            }
            if let Some(volumes) = &s.volumes {
                v["spec"]["volumes"] = json!(volumes);
            }
        }
        v
    }

    /// Every fixture's pod, under two settings, and variants with the lists absent, empty or
    /// partly filled: the patch is exactly the diff of the touched fields before and after it
    /// (nothing but additions, in document order, none redundant), and a second pass is empty.
    #[test]
    fn the_patch_is_the_diff_of_the_typed_pods() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut pods = vec![simple(), Pod::default()];
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".json") || name.ends_with(".expected.json") {
                continue;
            }
            let Ok(review) =
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap())
            else {
                continue;
            };
            let Ok(p) = serde_json::from_value::<Pod>(review["request"]["object"].clone()) else {
                continue;
            };
            let mut empties = p.clone();
            empties.metadata.labels = Some(Default::default());
            if let Some(spec) = empties.spec.as_mut() {
                spec.volumes = Some(Vec::new());
                for c in &mut spec.containers {
                    c.env = Some(Vec::new());
                    c.volume_mounts = Some(Vec::new());
                }
            }
            pods.extend([p, empties]);
        }
        let settings = [
            Settings::default(),
            Settings {
                region: Some("eu-west-1".into()),
                ipv6: true,
            },
        ];
        let mut injected = 0;
        for p in &pods {
            for s in &settings {
                let m = mutate(p, Some(&assoc()), s);
                let want = json_patch::diff(&touched(p), &touched(&m.pod));
                assert_eq!(m.patch, want, "{}", serde_json::to_string(p).unwrap());
                assert_eq!(plan(p, Some(&assoc()), s).op_count(), want.0.len());
                injected += usize::from(m.outcome == Outcome::Injected);
                let again = mutate(&m.pod, Some(&assoc()), s);
                assert!(again.patch.0.is_empty());
            }
        }
        assert!(injected >= 40, "{injected}");
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

    /// Found by fuzzing (fuzz/fuzz_targets/webhook_review.rs): a pod without `metadata` decodes
    /// with empty metadata, and the patch added `/metadata/labels`, which does not apply there.
    #[test]
    fn a_pod_without_metadata_gets_a_patch_that_applies() {
        let spec = json!({"serviceAccountName": "s3-reader", "containers": [{"name": "app"}]});
        for raw in [
            json!({"apiVersion": "v1", "kind": "Pod", "spec": spec}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": spec}),
        ] {
            let m = mutate(&pod(raw.clone()), Some(&assoc()), &Settings::default());
            assert_eq!(m.outcome, Outcome::Injected);
            let mut patched = raw.clone();
            json_patch::patch(&mut patched, &m.patch).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                patched["metadata"],
                json!({"labels": {POD_IDENTITY_LABEL: POD_IDENTITY_LABEL_VALUE}})
            );
            assert_eq!(patched, serde_json::to_value(&m.pod).unwrap());
        }
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
            ("86400", 86400, false),
            ("60", 3600, true),
            ("600", 3600, true),
            ("soon", 86400, true),
            ("86401", 86400, true),
            ("99999999999", 86400, true),
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
