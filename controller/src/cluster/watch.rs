//! One watch per kind: a kube-runtime watcher with backoff, feeding a reflector store, and
//! telling the compile loop what happened and the metrics whether it is connected.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use sluice_crds::{Auth, Cache, RateLimit};
use sluice_dataplane::metrics::{Metrics, WatchLabels};
use tokio::sync::mpsc;

use super::status::FIELD_MANAGER;
use crate::object_key::ObjectKind;
use crate::redact::without_quoted_values;

/// What a watch tells the compile loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchSignal {
    /// The kind was listed in full (first start, or a relist after a gap).
    Synced(ObjectKind),
    /// An object of the kind was added, changed or deleted.
    Changed(ObjectKind),
}

/// While a watch waits to retry, how often it checks whether the API server answers. A
/// watch that reconnects quietly sends no event, so this is also how the metric learns the
/// watch is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Retry delays after watch errors: doubling from the first to the last, reset by any
/// event. A wait is cut short once the API server, having been unreachable, answers
/// again, so a long outage does not leave the watch asleep for the last delay after the
/// API server is back; an error the server keeps returning (say, a missing permission)
/// still backs off to the full delay.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Starting,
    Connected,
    Disconnected,
}

/// A kind the controller watches.
pub(crate) trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    const KIND: ObjectKind;

    /// Changes only when something the compiler reads changes. An update that leaves it
    /// equal (Sluice's own status write, say) triggers no compile.
    fn fingerprint(&self) -> u64 {
        hash_of(&self.meta().resource_version)
    }
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Watched for Ingress {
    const KIND: ObjectKind = ObjectKind::Ingress;

    /// Spec, annotations and labels: not status, so the leader's status writes do not make
    /// every replica recompile.
    fn fingerprint(&self) -> u64 {
        let spec = serde_json::to_string(&self.spec).unwrap_or_default();
        hash_of(&(spec, &self.metadata.annotations, &self.metadata.labels))
    }
}

impl Watched for IngressClass {
    const KIND: ObjectKind = ObjectKind::IngressClass;
}

impl Watched for Service {
    // Status counts here: `--publish-service` reads the load-balancer address.
    const KIND: ObjectKind = ObjectKind::Service;
}

impl Watched for EndpointSlice {
    const KIND: ObjectKind = ObjectKind::EndpointSlice;
}

impl Watched for Secret {
    const KIND: ObjectKind = ObjectKind::Secret;
}

impl Watched for RateLimit {
    const KIND: ObjectKind = ObjectKind::RateLimit;

    /// The spec only: the leader's own status writes must not trigger compiles.
    fn fingerprint(&self) -> u64 {
        hash_of(&serde_json::to_string(&self.spec).unwrap_or_default())
    }
}

impl Watched for Auth {
    const KIND: ObjectKind = ObjectKind::Auth;

    /// The spec only, as for RateLimit.
    fn fingerprint(&self) -> u64 {
        hash_of(&serde_json::to_string(&self.spec).unwrap_or_default())
    }
}

impl Watched for Cache {
    const KIND: ObjectKind = ObjectKind::Cache;

    /// The spec only, as for RateLimit.
    fn fingerprint(&self) -> u64 {
        hash_of(&serde_json::to_string(&self.spec).unwrap_or_default())
    }
}

/// The fingerprints of the objects last seen, to drop updates that change nothing read.
#[derive(Debug, Default)]
struct Fingerprints {
    current: HashMap<(String, String), u64>,
    /// Filled during a relist, then swapped in when it is done.
    relisting: HashMap<(String, String), u64>,
}

fn identity_of(object: &impl Resource) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Fingerprints {
    /// Whether this event is worth a compile, remembering what it shows.
    fn take<K: Watched>(&mut self, event: &watcher::Event<K>) -> Option<WatchSignal> {
        match event {
            watcher::Event::Init => {
                self.relisting.clear();
                None
            }
            watcher::Event::InitApply(object) => {
                self.relisting
                    .insert(identity_of(object), object.fingerprint());
                None
            }
            watcher::Event::InitDone => {
                self.current = std::mem::take(&mut self.relisting);
                Some(WatchSignal::Synced(K::KIND))
            }
            watcher::Event::Apply(object) => {
                let fingerprint = object.fingerprint();
                let before = self.current.insert(identity_of(object), fingerprint);
                (before != Some(fingerprint)).then_some(WatchSignal::Changed(K::KIND))
            }
            watcher::Event::Delete(object) => {
                self.current.remove(&identity_of(object));
                Some(WatchSignal::Changed(K::KIND))
            }
        }
    }
}

/// Starts watching `api` and returns the store it fills.
pub(crate) fn watch_kind<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    signals: mpsc::UnboundedSender<WatchSignal>,
    metrics: Arc<Metrics>,
) -> Store<K> {
    let kind = K::KIND;
    let (store, writer) = reflector::store();
    // No backoff wrapper: the loop below paces retries itself (see `FIRST_RETRY`).
    let stream = watcher(api.clone(), config)
        .modify(trim::<K>)
        .reflect(writer);
    let labels = WatchLabels {
        kind: kind.as_str(),
    };
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut connection = Connection::Starting;
        let mut retry = FIRST_RETRY;
        let connected = metrics
            .controller
            .watch_connected
            .get_or_create(&labels)
            .clone();
        let errors = metrics
            .controller
            .watch_errors
            .get_or_create(&labels)
            .clone();
        connected.set(0);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fingerprints = Fingerprints::default();
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                // A watch that came back quietly sends nothing; ask the API server.
                _ = probe.tick(), if connection == Connection::Disconnected => {
                    if probe_answers(&api).await {
                        mark_connected(&mut connection, kind, &connected);
                    }
                    continue;
                }
            };
            let Some(event) = event else { return };
            let signal = match event {
                Ok(event) => {
                    retry = FIRST_RETRY;
                    mark_connected(&mut connection, kind, &connected);
                    match fingerprints.take(&event) {
                        Some(signal) => signal,
                        None => continue,
                    }
                }
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    // The resource version expired (a long gap, or an API server restart):
                    // the watcher relists on the next poll. Routine, not an outage.
                    tracing::debug!(kind = %kind, "watch expired; relisting");
                    continue;
                }
                Err(error) => {
                    errors.inc();
                    if connection != Connection::Disconnected {
                        // Watch errors carry the request and the API server's reason;
                        // only a body that does not decode quotes object data, so for
                        // Secrets the quoted parts are left out.
                        let mut error = error.to_string();
                        if kind == ObjectKind::Secret {
                            error = without_quoted_values(&error);
                        }
                        tracing::warn!(
                            kind = %kind,
                            %error,
                            "watch disconnected from the Kubernetes API; serving the last snapshot and retrying"
                        );
                        connection = Connection::Disconnected;
                        connected.set(0);
                    }
                    if wait_to_retry(&api, jittered(retry)).await {
                        // The API server is back: retry now, and from the first delay.
                        mark_connected(&mut connection, kind, &connected);
                        retry = FIRST_RETRY;
                    } else {
                        retry = (retry * 2).min(LAST_RETRY);
                    }
                    continue;
                }
            };
            if signals.send(signal).is_err() {
                return;
            }
        }
    });
    store
}

/// Spreads retries over ±20 %, so the replicas and watches of a cluster do not all hit an
/// API server that just came back at the same instant.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// True when a small list of the kind succeeds within a probe interval.
async fn probe_answers<K>(api: &Api<K>) -> bool
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let params = ListParams::default().limit(1);
    matches!(
        tokio::time::timeout(PROBE_INTERVAL, api.list_metadata(&params)).await,
        Ok(Ok(_))
    )
}

/// Waits up to `delay`, probing the API server; returns true as soon as it answers after
/// having failed to, false when the delay ran out.
async fn wait_to_retry<K>(api: &Api<K>, delay: Duration) -> bool
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + delay;
    let mut was_down = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        tokio::time::sleep(left.min(PROBE_INTERVAL)).await;
        if !probe_answers(api).await {
            was_down = true;
        } else if was_down {
            return true;
        }
    }
}

fn mark_connected(
    connection: &mut Connection,
    kind: ObjectKind,
    gauge: &prometheus_client::metrics::gauge::Gauge,
) {
    if *connection == Connection::Disconnected {
        tracing::info!(kind = %kind, "watch reconnected to the Kubernetes API");
    }
    *connection = Connection::Connected;
    gauge.set(1);
}

/// Drops what the controller never reads before it is stored: managed fields (often the
/// largest part of an object) but Sluice's own, which say which status fields are ours;
/// and, for Secrets, the `last-applied-configuration` copy that `kubectl apply` leaves
/// with the data in it.
fn trim<K: Resource<DynamicType = ()>>(object: &mut K) {
    object
        .managed_fields_mut()
        .retain(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER));
    if K::kind(&()) == "Secret" {
        object
            .annotations_mut()
            .remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

// Keep the Secret trimming honest: the annotation name above is what kubectl writes.
#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
    use serde_json::json;

    fn ingress(path: &str, status_ip: Option<&str>, version: &str) -> Ingress {
        let mut value = json!({
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": version},
            "spec": {"rules": [{"host": "a.example", "http": {"paths": [
                {"path": path, "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
            ]}}]},
        });
        if let Some(ip) = status_ip {
            value["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        }
        serde_json::from_value(value).expect("Ingress")
    }

    #[test]
    fn status_only_ingress_updates_trigger_no_compile() {
        let mut fingerprints = Fingerprints::default();
        assert_eq!(fingerprints.take(&watcher::Event::<Ingress>::Init), None);
        assert_eq!(
            fingerprints.take(&watcher::Event::InitApply(ingress("/", None, "1"))),
            None
        );
        assert_eq!(
            fingerprints.take(&watcher::Event::<Ingress>::InitDone),
            Some(WatchSignal::Synced(ObjectKind::Ingress))
        );
        // The leader wrote status: same spec, new resourceVersion.
        let written = ingress("/", Some("192.0.2.1"), "2");
        assert_eq!(fingerprints.take(&watcher::Event::Apply(written)), None);
        // A spec change counts.
        let changed = ingress("/api", Some("192.0.2.1"), "3");
        assert_eq!(
            fingerprints.take(&watcher::Event::Apply(changed.clone())),
            Some(WatchSignal::Changed(ObjectKind::Ingress))
        );
        assert_eq!(
            fingerprints.take(&watcher::Event::Delete(changed)),
            Some(WatchSignal::Changed(ObjectKind::Ingress))
        );
    }

    #[test]
    fn other_kinds_count_every_update() {
        let mut fingerprints = Fingerprints::default();
        let service = |version: &str| -> Service {
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "shop", "resourceVersion": version}}))
                .expect("Service")
        };
        assert_eq!(
            fingerprints.take(&watcher::Event::Apply(service("1"))),
            Some(WatchSignal::Changed(ObjectKind::Service))
        );
        assert_eq!(
            fingerprints.take(&watcher::Event::Apply(service("1"))),
            None
        );
        assert_eq!(
            fingerprints.take(&watcher::Event::Apply(service("2"))),
            Some(WatchSignal::Changed(ObjectKind::Service))
        );
    }
    use std::collections::BTreeMap;

    #[test]
    fn trimming_drops_managed_fields_and_the_secret_copy_kubectl_leaves() {
        let meta = ObjectMeta {
            name: Some("tls".into()),
            annotations: Some(BTreeMap::from([
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "{\"data\":{\"tls.key\":\"c2VjcmV0\"}}".to_owned(),
                ),
                ("team".to_owned(), "shop".to_owned()),
            ])),
            managed_fields: Some(vec![
                ManagedFieldsEntry {
                    manager: Some("kubectl".into()),
                    ..ManagedFieldsEntry::default()
                },
                ManagedFieldsEntry {
                    manager: Some(FIELD_MANAGER.into()),
                    subresource: Some("status".into()),
                    ..ManagedFieldsEntry::default()
                },
            ]),
            ..ObjectMeta::default()
        };
        let mut secret = Secret {
            metadata: meta.clone(),
            ..Secret::default()
        };
        trim(&mut secret);
        let kept = secret.metadata.managed_fields.unwrap_or_default();
        assert_eq!(kept.len(), 1, "only Sluice's own entry is kept");
        assert_eq!(kept[0].manager.as_deref(), Some(FIELD_MANAGER));
        let annotations = secret.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);

        // Other kinds keep their annotations: Ingress annotations are configuration.
        let mut service = k8s_openapi::api::core::v1::Service {
            metadata: meta,
            ..Default::default()
        };
        trim(&mut service);
        assert_eq!(service.annotations().len(), 2);
        assert_eq!(service.metadata.managed_fields.unwrap_or_default().len(), 1);
    }
}
