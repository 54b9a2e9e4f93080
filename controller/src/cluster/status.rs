//! What the leader writes back: `status.loadBalancer` on the Ingresses it serves, and an
//! Event for each new problem the compiler found on an object.
//!
//! Status goes through server-side apply with field manager `sluice`, so only the fields
//! Sluice wrote are Sluice's, and releasing an Ingress (it changed class) removes exactly
//! them. Writes happen only where the stored status differs from the wanted one, so a
//! steady cluster sees no writes at all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::{Api, Client, Resource};
use serde_json::json;
use sluice_dataplane::metrics::{Metrics, WriteLabels, WriteResult};
use sluice_dataplane::snapshot::ObjectRef;
use tokio::sync::watch;

use super::{CompileOutcome, Stores};
use crate::error::{CompileError, Severity};
use crate::object_key::{ObjectKey, ObjectKind, object_ref};
use sluice_crds::{Auth, Cache, PolicyCondition, PolicyStatus, RateLimit};

/// The field manager of every write Sluice makes.
pub const FIELD_MANAGER: &str = "sluice";

/// Status writes in flight at once; enough to settle a thousand Ingresses in seconds
/// without flooding the API server.
const CONCURRENT_WRITES: usize = 16;

/// Even with no change, the leader compares stored and wanted status this often, to repair
/// a status someone else overwrote.
const RESYNC: Duration = Duration::from_secs(60);

/// Where the address in `status.loadBalancer` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PublishTarget {
    /// Write no status.
    #[default]
    Nothing,
    /// The addresses of this Service (`--publish-service`): its load-balancer ingress,
    /// else its external IPs, else its cluster IP.
    Service(ObjectRef),
    /// Fixed IPs or host names (`--publish-address`).
    Addresses(Vec<String>),
}

impl PublishTarget {
    /// The load-balancer entries to publish, or `None` when they are not known yet (the
    /// Service does not exist or has no address), in which case nothing is written.
    fn entries(&self, services: &Store<Service>) -> Option<Vec<IngressLoadBalancerIngress>> {
        let entries = match self {
            PublishTarget::Nothing => return None,
            PublishTarget::Addresses(addresses) => addresses.iter().map(|a| entry(a)).collect(),
            PublishTarget::Service(target) => {
                let service = services
                    .state()
                    .into_iter()
                    .find(|service| object_ref(&service.metadata) == *target)?;
                service_entries(&service)
            }
        };
        (!Vec::is_empty(&entries)).then_some(entries)
    }
}

fn entry(address: &str) -> IngressLoadBalancerIngress {
    if address.parse::<IpAddr>().is_ok() {
        IngressLoadBalancerIngress {
            ip: Some(address.to_owned()),
            ..IngressLoadBalancerIngress::default()
        }
    } else {
        IngressLoadBalancerIngress {
            hostname: Some(address.to_owned()),
            ..IngressLoadBalancerIngress::default()
        }
    }
}

fn service_entries(service: &Service) -> Vec<IngressLoadBalancerIngress> {
    let balancer: Vec<IngressLoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|lb| IngressLoadBalancerIngress {
            ip: lb.ip.clone(),
            hostname: lb.hostname.clone(),
            ..IngressLoadBalancerIngress::default()
        })
        .collect();
    if !balancer.is_empty() {
        return balancer;
    }
    let spec = service.spec.as_ref();
    let external: Vec<IngressLoadBalancerIngress> = spec
        .and_then(|spec| spec.external_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| entry(ip))
        .collect();
    if !external.is_empty() {
        return external;
    }
    spec.and_then(|spec| spec.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(entry)
        .into_iter()
        .collect()
}

/// How an Ingress relates to this controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    /// Of our class and in the snapshot: it gets our address.
    Served,
    /// Not served (another class now, or rejected with nothing to fall back on), but its
    /// status holds fields Sluice wrote: they are given up.
    Released,
    /// Not ours and nothing of ours in it: left alone, whatever its status says. Another
    /// controller may publish the same address.
    Foreign,
}

/// A status write to make.
#[derive(Debug, Clone, PartialEq)]
enum StatusWrite {
    Set(Vec<IngressLoadBalancerIngress>),
    /// Server-side apply of nothing: Sluice gives up every status field it owned, and the
    /// API server removes those no other manager holds.
    Release,
}

/// The write one Ingress needs, if any.
fn wanted_status(
    relation: Relation,
    current: &[IngressLoadBalancerIngress],
    ours: &[IngressLoadBalancerIngress],
) -> Option<StatusWrite> {
    match relation {
        Relation::Served => (current != ours).then(|| StatusWrite::Set(ours.to_vec())),
        Relation::Released => Some(StatusWrite::Release),
        Relation::Foreign => None,
    }
}

/// Whether Sluice's field manager owns fields of the status subresource. The watch keeps
/// only Sluice's own managed-field entries (see `watch::trim`).
fn owns_status(ingress: &Ingress) -> bool {
    ingress
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.subresource.as_deref() == Some("status")
                && entry
                    .fields_v1
                    .as_ref()
                    .is_some_and(|fields| fields.0.as_object().is_some_and(|f| !f.is_empty()))
        })
}

fn current_entries(ingress: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    ingress
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.clone())
        .unwrap_or_default()
}

/// Writes status and Events while this replica leads.
pub(crate) async fn write_statuses(
    client: Client,
    stores: Stores,
    publish: PublishTarget,
    identity: String,
    mut outcomes: watch::Receiver<Option<Arc<CompileOutcome>>>,
    mut leading: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "sluice".into(),
            instance: Some(identity),
        },
    );
    let mut reported: BTreeMap<ObjectKey, BTreeSet<String>> = BTreeMap::new();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            changed = outcomes.changed() => if changed.is_err() { return },
            changed = leading.changed() => if changed.is_err() { return },
            _ = resync.tick() => {}
        }
        if !*leading.borrow() {
            // A new term reports the problems that exist then, once.
            reported.clear();
            continue;
        }
        let Some(outcome) = outcomes.borrow().clone() else {
            continue;
        };
        if let Some(ours) = publish.entries(&stores.services) {
            write_load_balancer_status(&client, &stores, &outcome, &ours, &leading, &metrics).await;
        }
        write_policy_statuses(&client, &stores, &outcome, &leading, &metrics).await;
        post_events(
            &recorder,
            &stores,
            &outcome,
            &mut reported,
            &leading,
            &metrics,
        )
        .await;
    }
}

async fn write_load_balancer_status(
    client: &Client,
    stores: &Stores,
    outcome: &CompileOutcome,
    ours: &[IngressLoadBalancerIngress],
    leading: &watch::Receiver<bool>,
    metrics: &Metrics,
) {
    let writes: Vec<(ObjectRef, StatusWrite)> = stores
        .ingresses
        .state()
        .iter()
        .filter_map(|ingress| {
            let key = object_ref(&ingress.metadata);
            let relation = if outcome.accepted.contains(&key) {
                Relation::Served
            } else if owns_status(ingress) {
                Relation::Released
            } else {
                Relation::Foreign
            };
            wanted_status(relation, &current_entries(ingress), ours).map(|wanted| (key, wanted))
        })
        .collect();
    let patches = writes
        .into_iter()
        .map(|(key, wanted)| {
            let mut patch = json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": { "name": key.name, "namespace": key.namespace },
            });
            if let StatusWrite::Set(entries) = &wanted {
                patch["status"] = json!({ "loadBalancer": { "ingress": entries } });
            }
            (key, patch)
        })
        .collect();
    apply_statuses::<Ingress>(client, patches, leading, metrics).await;
}

/// Server-side applies each status patch (field manager `sluice`), a few at a time, while
/// this replica still leads; an object deleted meanwhile is skipped.
async fn apply_statuses<K>(
    client: &Client,
    patches: Vec<(ObjectRef, serde_json::Value)>,
    leading: &watch::Receiver<bool>,
    metrics: &Metrics,
) where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    futures_util::stream::iter(patches)
        .map(|(key, patch)| async move {
            // Leadership can end while a batch is under way.
            if !*leading.borrow() {
                return;
            }
            let api: Api<K> = Api::namespaced(client.clone(), &key.namespace);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let result = match api
                .patch_status(&key.name, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(_) => WriteResult::ok,
                Err(kube::Error::Api(status)) if status.code == 404 => return,
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), object = %key, %error, "cannot write status");
                    WriteResult::error
                }
            };
            metrics
                .controller
                .status_updates
                .get_or_create(&WriteLabels { result })
                .inc();
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect::<()>()
        .await;
}

/// The conditions a policy should show: `Accepted` (its spec is valid) and `Programmed`
/// (some served route enforces it). Transition times are kept from `current` for
/// conditions whose status did not change.
pub(crate) fn policy_conditions(
    errors: Option<&[CompileError]>,
    programmed: bool,
    current: &[PolicyCondition],
    generation: Option<i64>,
    now: &str,
) -> Vec<PolicyCondition> {
    let (accepted, accepted_reason, accepted_message) = match errors {
        Some([]) => ("True", "Accepted", "The spec is valid".to_owned()),
        Some(errors) => (
            "False",
            errors.first().map_or("InvalidSpec", CompileError::reason),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        None => ("Unknown", "Pending", "Not compiled yet".to_owned()),
    };
    let (programmed_status, programmed_reason, programmed_message) = if programmed {
        ("True", "Programmed", "Enforced on the routes that name it")
    } else if accepted == "True" {
        ("False", "NotUsed", "No served Ingress names it")
    } else {
        ("False", "Invalid", "Not enforced until its spec is valid")
    };
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let since = current
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
        PolicyCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    vec![
        condition("Accepted", accepted, accepted_reason, accepted_message),
        condition(
            "Programmed",
            programmed_status,
            programmed_reason,
            programmed_message.to_owned(),
        ),
    ]
}

/// A policy kind whose status Sluice writes: `Accepted`, `Programmed`,
/// `observedGeneration`.
trait PolicyObject:
    Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: ObjectKind;
    fn policy_status(&self) -> Option<&PolicyStatus>;
}

impl PolicyObject for RateLimit {
    const KIND: ObjectKind = ObjectKind::RateLimit;
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}

impl PolicyObject for Auth {
    const KIND: ObjectKind = ObjectKind::Auth;
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}

impl PolicyObject for Cache {
    const KIND: ObjectKind = ObjectKind::Cache;
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}

/// Writes the status of every policy of every kind whose stored status differs from what
/// the last compile says.
async fn write_policy_statuses(
    client: &Client,
    stores: &Stores,
    outcome: &CompileOutcome,
    leading: &watch::Receiver<bool>,
    metrics: &Metrics,
) {
    if let Some(store) = &stores.rate_limits {
        write_statuses_of(store, client, outcome, leading, metrics).await;
    }
    if let Some(store) = &stores.auths {
        write_statuses_of(store, client, outcome, leading, metrics).await;
    }
    if let Some(store) = &stores.caches {
        write_statuses_of(store, client, outcome, leading, metrics).await;
    }
}

async fn write_statuses_of<K: PolicyObject>(
    store: &Store<K>,
    client: &Client,
    outcome: &CompileOutcome,
    leading: &watch::Receiver<bool>,
    metrics: &Metrics,
) {
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let writes: Vec<(ObjectRef, PolicyStatus)> = store
        .state()
        .iter()
        .filter_map(|policy| {
            let name = object_ref(policy.meta());
            let key = ObjectKey::new(K::KIND, &*name.namespace, &*name.name);
            let current = policy.policy_status().cloned().unwrap_or_default();
            let generation = policy.meta().generation;
            let wanted = PolicyStatus {
                conditions: policy_conditions(
                    outcome.problems.get(&key).map(Vec::as_slice),
                    outcome.programmed.contains(&key),
                    &current.conditions,
                    generation,
                    &now,
                ),
                observed_generation: generation,
            };
            (wanted != current).then_some((name, wanted))
        })
        .collect();
    let patches = writes
        .into_iter()
        .map(|(name, wanted)| {
            let patch = json!({
                "apiVersion": "sluice.dev/v1alpha1",
                "kind": K::KIND.as_str(),
                "metadata": { "name": name.name, "namespace": name.namespace },
                "status": wanted,
            });
            (name, patch)
        })
        .collect();
    apply_statuses::<K>(client, patches, leading, metrics).await;
}

/// Posts one Event per problem that was not there at the last look, and forgets problems
/// that went away so they are reported again if they come back.
async fn post_events(
    recorder: &Recorder,
    stores: &Stores,
    outcome: &CompileOutcome,
    reported: &mut BTreeMap<ObjectKey, BTreeSet<String>>,
    leading: &watch::Receiver<bool>,
    metrics: &Metrics,
) {
    let mut now_reported: BTreeMap<ObjectKey, BTreeSet<String>> = BTreeMap::new();
    for (key, errors) in &outcome.problems {
        let Some(reference) = reference_of(stores, key) else {
            continue;
        };
        let before = reported.get(key);
        for error in errors {
            let message = error.to_string();
            let seen = now_reported.entry(key.clone()).or_default();
            if before.is_some_and(|before| before.contains(&message)) || seen.contains(&message) {
                seen.insert(message);
                continue;
            }
            if !*leading.borrow() {
                return;
            }
            let event = Event {
                type_: match error.severity() {
                    Severity::Notice => EventType::Normal,
                    Severity::Rejection | Severity::Partial => EventType::Warning,
                },
                reason: error.reason().to_owned(),
                note: Some(truncate(&message, 1000)),
                // The Recorder folds Events with the same reason and action on one object
                // into a series that keeps the first note; naming the field keeps two
                // problems of one kind (two bad ports) apart.
                action: truncate(error.field().unwrap_or("Compile"), 120),
                secondary: None,
            };
            let result = match recorder.publish(&event, &reference).await {
                Ok(()) => WriteResult::ok,
                Err(error) => {
                    tracing::warn!(object = %key, %error, "cannot post an Event");
                    WriteResult::error
                }
            };
            metrics
                .controller
                .events
                .get_or_create(&WriteLabels { result })
                .inc();
            seen.insert(message);
        }
    }
    *reported = now_reported;
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The object an Event is about, with its uid so `kubectl describe` finds it.
fn reference_of(stores: &Stores, key: &ObjectKey) -> Option<ObjectReference> {
    fn find<K: Resource<DynamicType = ()> + Clone>(
        store: &Store<K>,
        key: &ObjectKey,
    ) -> Option<ObjectReference> {
        let mut wanted = reflector::ObjectRef::new(&key.name);
        if !key.namespace.is_empty() {
            wanted = wanted.within(&key.namespace);
        }
        Some(store.get(&wanted)?.object_ref(&()))
    }
    match key.kind {
        ObjectKind::Ingress => find(&stores.ingresses, key),
        ObjectKind::IngressClass => find(&stores.ingress_classes, key),
        ObjectKind::Service => find(&stores.services, key),
        ObjectKind::EndpointSlice => find(&stores.endpoint_slices, key),
        ObjectKind::Secret => find(&stores.secrets, key),
        ObjectKind::RateLimit => stores
            .rate_limits
            .as_ref()
            .and_then(|store| find(store, key)),
        ObjectKind::Auth => stores.auths.as_ref().and_then(|store| find(store, key)),
        ObjectKind::Cache => stores.caches.as_ref().and_then(|store| find(store, key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };

    fn ip(address: &str) -> IngressLoadBalancerIngress {
        entry(address)
    }

    #[test]
    fn policy_conditions_say_accepted_and_programmed_and_keep_their_transition_times() {
        let fresh = policy_conditions(Some(&[]), true, &[], Some(3), "T1");
        assert_eq!(
            fresh
                .iter()
                .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
                .collect::<Vec<_>>(),
            [
                ("Accepted", "True", "Accepted"),
                ("Programmed", "True", "Programmed")
            ]
        );
        assert!(fresh.iter().all(|c| c.observed_generation == Some(3)));
        // Nothing changed: the same conditions, transition times included.
        assert_eq!(
            policy_conditions(Some(&[]), true, &fresh, Some(3), "T2"),
            fresh
        );
        // No longer used: Programmed flips and gets a new time; Accepted keeps its own.
        let unused = policy_conditions(Some(&[]), false, &fresh, Some(3), "T3");
        assert_eq!(unused[0].last_transition_time, "T1");
        assert_eq!(
            (
                unused[1].status.as_str(),
                unused[1].reason.as_str(),
                unused[1].last_transition_time.as_str()
            ),
            ("False", "NotUsed", "T3")
        );
        let invalid = CompileError::InvalidPolicy {
            field: "spec.limits".into(),
            why: "at least one limit is needed".into(),
        };
        let refused = policy_conditions(Some(&[invalid]), false, &unused, Some(4), "T4");
        assert_eq!(
            (refused[0].status.as_str(), refused[0].reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(
            refused[0]
                .message
                .contains("spec.limits: at least one limit is needed")
        );
        assert_eq!(refused[1].reason, "Invalid");
    }

    #[test]
    fn served_ingresses_get_our_address_and_only_when_it_differs() {
        let ours = vec![ip("192.0.2.10")];
        assert_eq!(
            wanted_status(Relation::Served, &[], &ours),
            Some(StatusWrite::Set(ours.clone()))
        );
        assert_eq!(wanted_status(Relation::Served, &ours, &ours), None);
        assert_eq!(
            wanted_status(Relation::Served, &[ip("192.0.2.99")], &ours),
            Some(StatusWrite::Set(ours.clone()))
        );
    }

    #[test]
    fn released_and_foreign_ingresses() {
        let ours = vec![ip("192.0.2.10")];
        assert_eq!(
            wanted_status(Relation::Released, &ours, &ours),
            Some(StatusWrite::Release)
        );
        // Not ours: left alone even when it shows the same address.
        assert_eq!(wanted_status(Relation::Foreign, &ours, &ours), None);
        assert_eq!(wanted_status(Relation::Foreign, &[], &ours), None);
    }

    #[test]
    fn ownership_is_read_from_sluices_status_entry() {
        let ingress =
            |manager: &str, subresource: Option<&str>, fields: serde_json::Value| -> Ingress {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "web", "namespace": "shop", "managedFields": [{
                        "manager": manager,
                        "operation": "Apply",
                        "subresource": subresource,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": fields,
                    }]},
                }))
                .expect("Ingress")
            };
        let lb = serde_json::json!({"f:status": {"f:loadBalancer": {"f:ingress": {}}}});
        assert!(owns_status(&ingress(
            FIELD_MANAGER,
            Some("status"),
            lb.clone()
        )));
        assert!(!owns_status(&ingress(
            "other-controller",
            Some("status"),
            lb.clone()
        )));
        assert!(!owns_status(&ingress(FIELD_MANAGER, None, lb)));
        // After a release the entry may stay, with nothing in it.
        assert!(!owns_status(&ingress(
            FIELD_MANAGER,
            Some("status"),
            serde_json::json!({})
        )));
    }

    #[test]
    fn addresses_become_ip_or_hostname_entries() {
        assert_eq!(entry("192.0.2.1").ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(entry("2001:db8::1").ip.as_deref(), Some("2001:db8::1"));
        let named = entry("lb.example.com");
        assert_eq!(named.hostname.as_deref(), Some("lb.example.com"));
        assert_eq!(named.ip, None);
    }

    #[test]
    fn a_published_service_prefers_balancer_then_external_then_cluster_ip() {
        let mut service = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert_eq!(service_entries(&service), vec![ip("10.96.0.10")]);
        if let Some(spec) = service.spec.as_mut() {
            spec.external_ips = Some(vec!["203.0.113.5".into()]);
        }
        assert_eq!(service_entries(&service), vec![ip("203.0.113.5")]);
        service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    hostname: Some("lb.example.com".into()),
                    ..LoadBalancerIngress::default()
                }]),
            }),
            ..ServiceStatus::default()
        });
        assert_eq!(service_entries(&service), vec![entry("lb.example.com")]);
        // A headless Service has no address to publish.
        let headless = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert!(service_entries(&headless).is_empty());
    }

    #[test]
    fn long_event_notes_are_cut_on_a_character_boundary() {
        let text = "é".repeat(600);
        let cut = truncate(&text, 1000);
        assert!(cut.len() <= 1000 + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", 1000), "short");
    }
}
