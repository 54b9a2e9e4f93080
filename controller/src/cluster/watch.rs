//! One watch per kind: a kube-runtime watcher with backoff, feeding a reflector store, and
//! telling the compile loop what happened and the metrics whether it is connected.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use sluice_dataplane::metrics::{Metrics, WatchLabels};
use tokio::sync::mpsc;

use crate::object_key::ObjectKind;

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

/// Starts watching `api` and returns the store it fills.
pub(crate) fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: ObjectKind,
    signals: mpsc::UnboundedSender<WatchSignal>,
    metrics: Arc<Metrics>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
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
                    match event {
                        watcher::Event::InitDone => WatchSignal::Synced(kind),
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                            WatchSignal::Changed(kind)
                        }
                        watcher::Event::Init | watcher::Event::InitApply(_) => continue,
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
                        // Watch errors carry the request and the API server's reason,
                        // never object data, so this is safe for Secrets too.
                        tracing::warn!(
                            kind = %kind,
                            %error,
                            "watch disconnected from the Kubernetes API; serving the last snapshot and retrying"
                        );
                        connection = Connection::Disconnected;
                        connected.set(0);
                    }
                    if wait_to_retry(&api, retry).await {
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
/// largest part of an object) and, for Secrets, the `last-applied-configuration` copy that
/// `kubectl apply` leaves with the data in it.
fn trim<K: Resource<DynamicType = ()>>(object: &mut K) {
    object.managed_fields_mut().clear();
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
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
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
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            ..ObjectMeta::default()
        };
        let mut secret = Secret {
            metadata: meta.clone(),
            ..Secret::default()
        };
        trim(&mut secret);
        assert!(
            secret
                .metadata
                .managed_fields
                .unwrap_or_default()
                .is_empty()
        );
        let annotations = secret.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);

        // Other kinds keep their annotations: Ingress annotations are configuration.
        let mut service = k8s_openapi::api::core::v1::Service {
            metadata: meta,
            ..Default::default()
        };
        trim(&mut service);
        assert_eq!(service.annotations().len(), 2);
        assert!(
            service
                .metadata
                .managed_fields
                .unwrap_or_default()
                .is_empty()
        );
    }
}
