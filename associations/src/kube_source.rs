//! `PodIdentityAssociation` custom resources, watched through the Kubernetes API.
//!
//! Objects are decoded one by one ([`DeserializeGuard`]), so an object that does not even parse
//! is skipped like one that fails [`Association::validate`], instead of failing the whole list.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use pod_identity_contracts::{Association, AssociationSet};

use crate::crd::PodIdentityAssociation;
use crate::{AssociationStore, SourceKind};

type Guarded = DeserializeGuard<PodIdentityAssociation>;

/// One object as the watcher last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Object {
    /// Older objects win conflicts; an object without a timestamp sorts last.
    created: (bool, Option<Time>),
    resource_version: Option<String>,
    association: Result<Association, String>,
}

/// Objects by name (the resource is cluster-scoped, so the name is unique).
type Objects = BTreeMap<String, Object>;

pub(crate) async fn watch(client: Client, store: AssociationStore) {
    let api: Api<Guarded> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut objects = Objects::new();
    // Filled during a (re-)list; swapped in whole at InitDone so the view never shows half a list.
    let mut listing: Option<Objects> = None;
    let mut duplicates = Duplicates::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing = Some(Objects::new()),
            Ok(Event::InitApply(obj)) => {
                let listing = listing.get_or_insert_with(Objects::new);
                insert(listing, Some(&objects), obj);
            }
            Ok(Event::InitDone) => {
                objects = listing.take().unwrap_or_default();
                tracing::info!(objects = objects.len(), "PodIdentityAssociations listed");
                publish(&store, &objects, &mut duplicates);
            }
            Ok(Event::Apply(obj)) => {
                insert(&mut objects, None, obj);
                publish(&store, &objects, &mut duplicates);
            }
            Ok(Event::Delete(obj)) => {
                objects.remove(&obj.name_any());
                publish(&store, &objects, &mut duplicates);
            }
            Err(error) => {
                let error = explain_watch(&error);
                tracing::warn!(
                    %error,
                    "watching PodIdentityAssociations failed; keeping the last good view and retrying"
                );
                store.record_error(SourceKind::Kube, error);
            }
        }
    }
}

/// Why the PodIdentityAssociations cannot be read, in words an operator acts on.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(String),
    #[error(
        "the Kubernetes API refused the client's credentials (401 Unauthorized): the kubeconfig's token or certificate is wrong or expired"
    )]
    Unauthorized,
    #[error(
        "the Kubernetes API forbids listing podidentityassociations.podidentity.dev (403 Forbidden): grant get, list and watch on them (deploy/ has the RBAC): {0}"
    )]
    Forbidden(String),
    #[error(
        "the PodIdentityAssociation CRD is not installed (podidentityassociations.podidentity.dev answered 404): kubectl apply -k deploy/crds"
    )]
    NoCrd,
    #[error("listing PodIdentityAssociations failed: {0}")]
    Other(String),
}

impl From<&kube::Error> for AccessError {
    fn from(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(s) if s.code == 401 => AccessError::Unauthorized,
            kube::Error::Api(s) if s.code == 403 => AccessError::Forbidden(s.message.clone()),
            kube::Error::Api(s) if s.code == 404 => AccessError::NoCrd,
            kube::Error::Api(s) => AccessError::Other(format!("{} ({})", s.message, s.code)),
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                AccessError::Unreachable(error_chain(error))
            }
            other => AccessError::Other(error_chain(other)),
        }
    }
}

/// An error and its sources on one line ("client error (Connect): tcp connect error: …").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// The watcher's error as [`AccessError`] says it, where it has a Kubernetes error inside.
fn explain_watch(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => AccessError::from(e).to_string(),
        other => other.to_string(),
    }
}

/// One list call (at most one object): whether the resources can be read at all, for a command
/// that should fail at once with a plain message rather than wait on a watcher's retries.
pub async fn check_access(client: &Client) -> Result<(), AccessError> {
    let api: Api<PodIdentityAssociation> = Api::all(client.clone());
    api.list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|e| AccessError::from(&e))
}

/// Decode and validate one object into `into`; log a rejection unless `known` already holds
/// this exact version of it (a re-list must not repeat every warning).
fn insert(into: &mut Objects, known: Option<&Objects>, obj: Guarded) {
    let name = obj.name_any();
    let meta = obj.meta();
    let created = (
        meta.creation_timestamp.is_none(),
        meta.creation_timestamp.clone(),
    );
    let resource_version = meta.resource_version.clone();
    let association = match obj.0 {
        Ok(pia) => {
            let association = pia.association().clone();
            association.validate().map(|()| association)
        }
        Err(invalid) => Err(invalid.error),
    };
    let object = Object {
        created,
        resource_version,
        association,
    };
    let previous = known.unwrap_or(into).get(&name);
    if let Err(reason) = &object.association
        && previous != Some(&object)
    {
        tracing::warn!(
            object = %name,
            error = %reason,
            "PodIdentityAssociation skipped: invalid"
        );
    }
    into.insert(name, object);
}

/// Service accounts claimed by several objects → the objects' names, winner first.
type Duplicates = BTreeMap<(String, String), Vec<String>>;

/// Pick one object per (namespace, service account), build the set, hand it to the store.
/// `duplicates` remembers the conflicts already logged, so each is logged once per change.
fn publish(store: &AssociationStore, objects: &Objects, duplicates: &mut Duplicates) {
    let mut by_key: HashMap<(String, String), Vec<(&String, &Object)>> = HashMap::new();
    let mut rejected = Vec::new();
    for (name, object) in objects {
        match &object.association {
            Ok(a) => by_key
                .entry((a.namespace.clone(), a.service_account.clone()))
                .or_default()
                .push((name, object)),
            Err(reason) => rejected.push(format!("{name}: {reason}")),
        }
    }
    let mut winners = Vec::with_capacity(by_key.len());
    let mut now_duplicated = Duplicates::new();
    for (key, mut candidates) in by_key {
        candidates
            .sort_by(|(a_name, a), (b_name, b)| (&a.created, a_name).cmp(&(&b.created, b_name)));
        let Some(Ok(association)) = candidates.first().map(|(_, o)| &o.association) else {
            continue; // only valid objects were grouped
        };
        if candidates.len() > 1 {
            let names: Vec<String> = candidates.iter().map(|(name, _)| (*name).clone()).collect();
            if duplicates.get(&key) != Some(&names) {
                tracing::warn!(
                    k8s.namespace = %key.0,
                    k8s.service_account = %key.1,
                    association_id = %association.id(),
                    role_arn = %association.role_arn,
                    object = %names[0],
                    ignored = %names[1..].join(","),
                    "several PodIdentityAssociations for one service account; the oldest wins"
                );
            }
            now_duplicated.insert(key, names);
        }
        winners.push(association.clone());
    }
    *duplicates = now_duplicated;
    match AssociationSet::from_associations(winners) {
        Ok(set) => store.apply(SourceKind::Kube, set, rejected),
        // Unreachable: every entry was validated and keys are unique.
        Err(error) => store.record_error(SourceKind::Kube, error.to_string()),
    }
}
