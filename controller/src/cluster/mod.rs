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
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use sluice_crds::{Auth, Cache, RateLimit};
use sluice_dataplane::metrics::Metrics;
use sluice_dataplane::snapshot::ObjectRef;
use tokio::sync::{mpsc, watch as channel};

use crate::compile::ClusterObjects;
use crate::error::{CompileError, ControllerError};
use crate::object_key::{ObjectKey, ObjectKind};
use crate::publish::{EndpointProblems, Publisher};
pub use remap::{EndpointRemap, RemapSyntax};
pub use status::PublishTarget;
use watch::{WatchSignal, Watched, watch_kind};

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
    /// `None` when the RateLimit CRD was not installed at start-up.
    pub rate_limits: Option<Store<RateLimit>>,
    /// `None` when the Auth CRD was not installed at start-up.
    pub auths: Option<Store<Auth>>,
    /// `None` when the Cache CRD was not installed at start-up.
    pub caches: Option<Store<Cache>>,
    pub endpoint_remap: Option<EndpointRemap>,
}

impl Stores {
    fn objects(&self) -> ClusterObjects {
        ClusterObjects {
            ingresses: self.ingresses.state(),
            ingress_classes: self.ingress_classes.state(),
            services: self.services.state(),
            endpoint_slices: self.slices(),
            secrets: self.secrets.state(),
            rate_limits: self
                .rate_limits
                .as_ref()
                .map(Store::state)
                .unwrap_or_default(),
            auths: self.auths.as_ref().map(Store::state).unwrap_or_default(),
            caches: self.caches.as_ref().map(Store::state).unwrap_or_default(),
        }
    }

    /// What the endpoint fast lane reads: Services for port names, and EndpointSlices.
    fn endpoint_objects(&self) -> ClusterObjects {
        ClusterObjects {
            services: self.services.state(),
            endpoint_slices: self.slices(),
            ..ClusterObjects::default()
        }
    }

    /// The stored EndpointSlices; copies only when the development remap rewrites them.
    fn slices(&self) -> Vec<Arc<EndpointSlice>> {
        let slices = self.endpoint_slices.state();
        match &self.endpoint_remap {
            Some(remap) => slices
                .into_iter()
                .map(|slice| {
                    let mut slice = EndpointSlice::clone(&slice);
                    remap.apply(std::slice::from_mut(&mut slice));
                    Arc::new(slice)
                })
                .collect(),
            None => slices,
        }
    }
}

/// What every watch is started with.
struct Watches<'a> {
    client: &'a Client,
    signals: &'a mpsc::UnboundedSender<WatchSignal>,
    metrics: &'a Arc<Metrics>,
}

impl Watches<'_> {
    fn start<K: Watched>(&self, config: watcher::Config) -> Store<K> {
        watch_kind(
            Api::all(self.client.clone()),
            config,
            self.signals.clone(),
            Arc::clone(self.metrics),
        )
    }
}

/// What the last full compile said, for the status writer.
#[derive(Debug, Default)]
pub(crate) struct CompileOutcome {
    pub accepted: BTreeSet<ObjectRef>,
    pub problems: BTreeMap<ObjectKey, Vec<CompileError>>,
    /// Policies some served route enforces.
    pub programmed: BTreeSet<ObjectKey>,
}

impl CompileOutcome {
    /// This outcome with its EndpointSlice problems replaced by a fast-lane result.
    fn with_endpoint_problems(&self, endpoint_problems: EndpointProblems) -> CompileOutcome {
        let mut problems: BTreeMap<ObjectKey, Vec<CompileError>> = self
            .problems
            .iter()
            .filter(|(key, _)| key.kind != ObjectKind::EndpointSlice)
            .map(|(key, errors)| (key.clone(), errors.clone()))
            .collect();
        problems.extend(
            endpoint_problems
                .into_iter()
                .filter(|(_, errors)| !errors.is_empty()),
        );
        CompileOutcome {
            accepted: self.accepted.clone(),
            problems,
            programmed: self.programmed.clone(),
        }
    }
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

/// Whether this replica can read an optional custom resource kind: its CRD is installed
/// and RBAC lets it list. Only a successful list counts; "not found" and "forbidden" mean no,
/// and other errors (the API server still starting) are retried a few times before giving
/// up, because a watch that never syncs would hold back every snapshot.
async fn can_watch<K: Watched>(client: &Client) -> bool {
    let api: Api<K> = Api::all(client.clone());
    let kind = K::KIND;
    // What the routes of an Ingress naming a policy of this kind do meanwhile.
    let routes = if kind == ObjectKind::Cache {
        "are served uncached"
    } else {
        "answer 503"
    };
    for attempt in 1..=5u32 {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::warn!(%kind, "the CRD is not installed (see manifests/crds); Ingresses that name one {routes} until it is installed and Sluice restarted");
                return false;
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                tracing::warn!(%kind, "not allowed to list this kind (RBAC); Ingresses that name one {routes}");
                return false;
            }
            Err(error) => {
                tracing::warn!(%kind, %error, attempt, "cannot tell whether the kind is served; retrying");
                tokio::time::sleep(Duration::from_millis(500) * attempt).await;
            }
        }
    }
    false
}

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
    let watches = Watches {
        client: &client,
        signals: &signals_tx,
        metrics: &metrics,
    };
    let stores = Stores {
        ingresses: watches.start(plain.clone()),
        ingress_classes: watches.start(plain.clone()),
        services: watches.start(plain.clone()),
        endpoint_slices: watches.start(plain.clone()),
        secrets: watches.start(plain.clone().fields(&secret_filter)),
        rate_limits: None,
        auths: None,
        caches: None,
        endpoint_remap: config.endpoint_remap,
    };
    let mut stores = stores;
    if can_watch::<RateLimit>(&client).await {
        stores.rate_limits = Some(watches.start(plain.clone()));
    }
    if can_watch::<Auth>(&client).await {
        stores.auths = Some(watches.start(plain.clone()));
    }
    if can_watch::<Cache>(&client).await {
        stores.caches = Some(watches.start(plain));
    }
    let watched_kinds = 5
        + usize::from(stores.rate_limits.is_some())
        + usize::from(stores.auths.is_some())
        + usize::from(stores.caches.is_some());

    drop(signals_tx);
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
        if synced.len() < watched_kinds {
            continue;
        }
        let changes = std::mem::take(&mut pending);
        if changes.routes {
            let objects = stores.objects();
            let (compiled, summary) = publisher.publish_all(&objects, Vec::new());
            if summary.published {
                tracing::info!(
                    generation = summary.generation,
                    routes_changed = summary.routes_changed,
                    problems = summary.problems,
                    ingresses = compiled.accepted_ingresses.len(),
                    "published snapshot"
                );
            }
            outcome_tx.send_replace(Some(Arc::new(CompileOutcome {
                accepted: compiled.accepted_ingresses,
                problems: compiled.statuses,
                programmed: compiled.programmed_policies,
            })));
        } else if changes.endpoints
            && let Some((endpoint_problems, summary)) =
                publisher.publish_endpoints(&stores.endpoint_objects())
        {
            if summary.published {
                tracing::debug!(generation = summary.generation, "published endpoints");
            }
            // The status writer must hear of EndpointSlice problems that came or went.
            let previous = outcome_tx.borrow().clone();
            if let Some(previous) = previous {
                let outcome = previous.with_endpoint_problems(endpoint_problems);
                if outcome.problems != previous.problems {
                    outcome_tx.send_replace(Some(Arc::new(outcome)));
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(field: &str) -> CompileError {
        CompileError::InvalidBackend {
            field: field.to_owned(),
            why: "test".to_owned(),
        }
    }

    #[test]
    fn a_fast_lane_result_replaces_only_endpoint_slice_problems() {
        let ingress = ObjectKey::new(ObjectKind::Ingress, "shop", "web");
        let old_slice = ObjectKey::new(ObjectKind::EndpointSlice, "shop", "web-1");
        let new_slice = ObjectKey::new(ObjectKind::EndpointSlice, "shop", "web-2");
        let outcome = CompileOutcome {
            accepted: BTreeSet::from([ObjectRef::new("shop", "web")]),
            problems: BTreeMap::from([
                (ingress.clone(), vec![problem("spec")]),
                (old_slice.clone(), vec![problem("endpoints[0]")]),
            ]),
            programmed: BTreeSet::new(),
        };
        let updated = outcome.with_endpoint_problems(BTreeMap::from([
            (new_slice.clone(), vec![problem("endpoints[1]")]),
            (old_slice.clone(), Vec::new()),
        ]));
        assert_eq!(updated.accepted, outcome.accepted);
        assert_eq!(
            updated.problems.keys().collect::<Vec<_>>(),
            [&ingress, &new_slice],
            "the fixed slice is gone, the new one is in, the Ingress is untouched"
        );
    }

    #[test]
    fn endpoint_slice_changes_take_the_fast_lane_and_others_do_not() {
        let mut synced = BTreeSet::new();
        let mut pending = PendingChanges::default();
        absorb(
            WatchSignal::Changed(ObjectKind::EndpointSlice),
            &mut synced,
            &mut pending,
        );
        assert!(pending.endpoints && !pending.routes);
        absorb(
            WatchSignal::Synced(ObjectKind::Service),
            &mut synced,
            &mut pending,
        );
        assert!(pending.routes);
        assert_eq!(synced, BTreeSet::from([ObjectKind::Service]));
    }
}
