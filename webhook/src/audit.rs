//! `audit`: find the pods `failurePolicy: Ignore` let through without Pod Identity.
//!
//! The API server admits a pod unchanged when the webhook is down, slow or erroring (by design:
//! the webhook must never block pods). Such pods, and pods created before their association
//! existed, run without credentials until someone notices. `audit` lists every pod whose
//! ServiceAccount has an association but whose spec lacks the injection, using the same
//! [`crate::mutate::mutate`] as admission to decide which containers should carry it.
//!
//! A pod is reported when an injected container lacks `AWS_CONTAINER_CREDENTIALS_FULL_URI`,
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or the token mount, or the pod lacks the token volume.
//! The region variables and the label are not required (they depend on settings at creation
//! time). Finished pods (Succeeded, Failed) are skipped unless asked for.

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::ListParams;
use pod_identity_contracts::constants::{
    ENV_FULL_URI, ENV_TOKEN_FILE, TOKEN_MOUNT_DIR, TOKEN_VOLUME_NAME,
};
use serde::Serialize;

use crate::mutate::{self, Outcome, Settings};
use crate::store::AssociationLookup;

/// Pods fetched per LIST page.
pub const PAGE_SIZE: u32 = 500;

/// One pod that should have Pod Identity and does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub namespace: String,
    pub pod: String,
    pub service_account: String,
    pub association_id: String,
    pub role_arn: String,
    /// What is missing, e.g. `container app: AWS_CONTAINER_CREDENTIALS_FULL_URI, token mount`.
    pub missing: Vec<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} serviceAccount={} association={} lacks Pod Identity: {}",
            self.namespace,
            self.pod,
            self.service_account,
            self.association_id,
            self.missing.join("; ")
        )
    }
}

/// What the audit looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Pods listed (finished ones included).
    pub pods_seen: usize,
    /// Pods whose ServiceAccount has an association.
    pub pods_associated: usize,
    pub findings: Vec<Finding>,
}

/// Check one pod. `None` when it has no association, no container to inject, or everything.
pub fn check_pod(
    pod: &Pod,
    store: &dyn AssociationLookup,
    settings: &Settings,
) -> (bool, Option<Finding>) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let service_account = mutate::service_account_of(pod).to_string();
    let association = store.get(&namespace, &service_account);
    let Some(association) = association else {
        return (false, None);
    };
    // Outside the role policy: left alone on purpose, not a pod the webhook missed.
    if store.refused(&association).is_some() {
        return (true, None);
    }
    let m = mutate::mutate(pod, Some(&association), settings);
    if matches!(
        m.outcome,
        Outcome::NoAssociation | Outcome::NoTargetContainers
    ) {
        return (true, None);
    }
    let mut missing = Vec::new();
    if let Some(spec) = &pod.spec {
        let all: Vec<&Container> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .collect();
        for name in &m.injected_containers {
            let Some(c) = all.iter().find(|c| &c.name == name) else {
                continue;
            };
            let has_env = |n: &str| c.env.iter().flatten().any(|e| e.name == n);
            let mut lacks = Vec::new();
            for var in [ENV_FULL_URI, ENV_TOKEN_FILE] {
                if !has_env(var) {
                    lacks.push(var.to_string());
                }
            }
            if !c
                .volume_mounts
                .iter()
                .flatten()
                .any(|v| v.mount_path == TOKEN_MOUNT_DIR)
            {
                lacks.push("token mount".to_string());
            }
            if !lacks.is_empty() {
                missing.push(format!("container {name}: {}", lacks.join(", ")));
            }
        }
        if !spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == TOKEN_VOLUME_NAME)
        {
            missing.push(format!("volume {TOKEN_VOLUME_NAME}"));
        }
    }
    if missing.is_empty() {
        return (true, None);
    }
    let finding = Finding {
        namespace,
        pod: pod.metadata.name.clone().unwrap_or_default(),
        service_account,
        association_id: association.id(),
        role_arn: association.role_arn.clone(),
        missing,
    };
    (true, Some(finding))
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// List pods (one namespace or all, page by page) and check each.
pub async fn audit(
    client: kube::Client,
    namespace: Option<&str>,
    store: &dyn AssociationLookup,
    settings: &Settings,
    include_finished: bool,
) -> Result<Report, kube::Error> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut report = Report::default();
    let mut params = ListParams::default().limit(PAGE_SIZE);
    loop {
        let page = api.list(&params).await?;
        for pod in &page.items {
            report.pods_seen += 1;
            if finished(pod) && !include_finished {
                continue;
            }
            let (associated, finding) = check_pod(pod, store, settings);
            report.pods_associated += usize::from(associated);
            report.findings.extend(finding);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    report
        .findings
        .sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    Ok(report)
}
