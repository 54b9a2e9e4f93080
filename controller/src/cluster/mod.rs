//! The Kubernetes API as an object source.
//!
//! One kube-runtime watcher per kind feeds a reflector store. Changes are gathered for a
//! short debounce, then compiled by the same pure compiler as standalone mode. A change
//! that only touched EndpointSlices takes the endpoint fast lane and leaves the route table
//! alone. Nothing is published before every watch has listed its kind once, so a replica
//! never serves a half-read cluster.
//!
//! When the API server goes away the watchers retry with backoff while the data plane keeps
//! serving the last snapshot; a relist on reconnect brings the stores up to date.

mod remap;
mod status;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use sluice_dataplane::metrics::Metrics;
use sluice_dataplane::snapshot::ObjectRef;
use tokio::sync::{mpsc, watch as channel};

use crate::compile::ClusterObjects;
use crate::error::{CompileError, ControllerError};
use crate::object_key::{ObjectKey, ObjectKind};
use crate::publish::Publisher;
pub use remap::{EndpointRemap, RemapSyntax};
pub use status::PublishTarget;
use watch::{WatchSignal, watch_kind};

/// Secret types that never carry anything an Ingress or a policy can refer to. Leaving them
/// out of the watch keeps Helm release blobs and service-account tokens out of memory.
const IGNORED_SECRET_TYPES: &[&str] = &[
    "helm.sh/release.v1",
    "kubernetes.io/service-account-token",
    "bootstrap.kubernetes.io/token",
    "kubernetes.io/dockercfg",
    "kubernetes.io/dockerconfigjson",
];

/// How the cluster source behaves.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How long to gather changes before compiling.
    pub debounce: Duration,
    /// The address written to `status.loadBalancer` of the Ingresses served.
    pub publish: PublishTarget,
    /// This replica's name in Events (the pod name).
    pub identity: String,
    /// Development only: rewrite EndpointSlice addresses (see [`EndpointRemap`]).
    pub endpoint_remap: Option<EndpointRemap>,
}

/// The reflector stores of every watched kind.
#[derive(Clone)]
pub(crate) struct Stores {
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub secrets: Store<Secret>,
    pub endpoint_remap: Option<EndpointRemap>,
}

impl Stores {
    fn objects(&self) -> ClusterObjects {
        ClusterObjects {
            ingresses: owned(&self.ingresses),
            ingress_classes: owned(&self.ingress_classes),
            services: owned(&self.services),
            endpoint_slices: self.slices(),
            secrets: owned(&self.secrets),
        }
    }

    /// What the endpoint fast lane reads: Services for port names, and EndpointSlices.
    fn endpoint_objects(&self) -> ClusterObjects {
        ClusterObjects {
            services: owned(&self.services),
            endpoint_slices: self.slices(),
            ..ClusterObjects::default()
        }
    }

    fn slices(&self) -> Vec<EndpointSlice> {
        let mut slices = owned(&self.endpoint_slices);
        if let Some(remap) = &self.endpoint_remap {
            remap.apply(&mut slices);
        }
        slices
    }
}

fn owned<K: kube::Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> Vec<K> {
    store
        .state()
        .iter()
        .map(|object| K::clone(object))
        .collect()
}

/// What the last full compile said, for the status writer.
#[derive(Debug, Default)]
pub(crate) struct CompileOutcome {
    pub accepted: BTreeSet<ObjectRef>,
    /// Every Ingress of our class, served or not.
    pub of_our_class: BTreeSet<ObjectRef>,
    pub problems: BTreeMap<ObjectKey, Vec<CompileError>>,
}

/// Which kinds changed since the last compile.
#[derive(Debug, Default)]
struct PendingChanges {
    routes: bool,
    endpoints: bool,
}

impl PendingChanges {
    fn note(&mut self, kind: ObjectKind) {
        if kind == ObjectKind::EndpointSlice {
            self.endpoints = true;
        } else {
            self.routes = true;
        }
    }
}

const WATCHED_KINDS: usize = 5;

/// Follows the cluster and publishes snapshots until the process ends. `leading` says
/// whether this replica may write status and Events.
pub async fn run_cluster(
    client: Client,
    mut publisher: Publisher,
    config: ClusterConfig,
    leading: channel::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<(), ControllerError> {
    if let Some(remap) = &config.endpoint_remap {
        tracing::warn!(%remap, "development mode: EndpointSlice addresses are rewritten");
    }
    let (signals_tx, mut signals) = mpsc::unbounded_channel();
    let plain = watcher::Config::default().any_semantic();
    let secret_filter = IGNORED_SECRET_TYPES
        .iter()
        .map(|kind| format!("type!={kind}"))
        .collect::<Vec<_>>()
        .join(",");
    let stores = Stores {
        ingresses: watch_kind(
            Api::all(client.clone()),
            plain.clone(),
            ObjectKind::Ingress,
            signals_tx.clone(),
            Arc::clone(&metrics),
        ),
        ingress_classes: watch_kind(
            Api::all(client.clone()),
            plain.clone(),
            ObjectKind::IngressClass,
            signals_tx.clone(),
            Arc::clone(&metrics),
        ),
        services: watch_kind(
            Api::all(client.clone()),
            plain.clone(),
            ObjectKind::Service,
            signals_tx.clone(),
            Arc::clone(&metrics),
        ),
        endpoint_slices: watch_kind(
            Api::all(client.clone()),
            plain.clone(),
            ObjectKind::EndpointSlice,
            signals_tx.clone(),
            Arc::clone(&metrics),
        ),
        secrets: watch_kind(
            Api::all(client.clone()),
            plain.fields(&secret_filter),
            ObjectKind::Secret,
            signals_tx,
            Arc::clone(&metrics),
        ),
        endpoint_remap: config.endpoint_remap,
    };

    let (outcome_tx, outcome_rx) = channel::channel(None::<Arc<CompileOutcome>>);
    tokio::spawn(status::write_statuses(
        client,
        stores.clone(),
        config.publish.clone(),
        config.identity.clone(),
        outcome_rx,
        leading,
        Arc::clone(&metrics),
    ));

    let mut synced: BTreeSet<ObjectKind> = BTreeSet::new();
    let mut pending = PendingChanges::default();
    loop {
        let Some(signal) = signals.recv().await else {
            return Err(ControllerError::WatchesEnded);
        };
        absorb(signal, &mut synced, &mut pending);
        // A rollout touches many objects at once; take them as one change.
        tokio::time::sleep(config.debounce).await;
        while let Ok(signal) = signals.try_recv() {
            absorb(signal, &mut synced, &mut pending);
        }
        if synced.len() < WATCHED_KINDS {
            continue;
        }
        let changes = std::mem::take(&mut pending);
        if changes.routes {
            let started = Instant::now();
            let objects = stores.objects();
            let (compiled, summary) = publisher.publish_all(&objects, Vec::new());
            metrics
                .controller
                .compile_seconds
                .observe(started.elapsed().as_secs_f64());
            if summary.published {
                tracing::info!(
                    generation = summary.generation,
                    routes_changed = summary.routes_changed,
                    problems = summary.problems,
                    ingresses = compiled.accepted_ingresses.len(),
                    "published snapshot"
                );
            }
            let of_our_class = compiled
                .statuses
                .keys()
                .filter(|key| key.kind == ObjectKind::Ingress)
                .map(ObjectKey::object_ref)
                .collect();
            outcome_tx.send_replace(Some(Arc::new(CompileOutcome {
                accepted: compiled.accepted_ingresses,
                of_our_class,
                problems: compiled.statuses,
            })));
        } else if changes.endpoints
            && let Some(summary) = publisher.publish_endpoints(&stores.endpoint_objects())
            && summary.published
        {
            tracing::debug!(generation = summary.generation, "published endpoints");
        }
    }
}

fn absorb(signal: WatchSignal, synced: &mut BTreeSet<ObjectKind>, pending: &mut PendingChanges) {
    match signal {
        WatchSignal::Synced(kind) => {
            if synced.insert(kind) {
                tracing::info!(kind = %kind, "watch synced");
            }
            // A relist may have changed anything of its kind.
            pending.note(kind);
        }
        WatchSignal::Changed(kind) => pending.note(kind),
    }
}
