//! Endpoints of the backends that routes refer to, from EndpointSlices.
//!
//! This is the endpoint fast lane: it reads only the route table, Services and
//! EndpointSlices, so an endpoint change never recompiles routes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_dataplane::snapshot::{
    Backend, BackendKey, BackendTable, BalancePolicy, Endpoint, RouteTable, RouteTarget,
};

use super::ClusterObjects;
use super::annotations::{ENDPOINT_WEIGHTS, parse_endpoint_weights};
use super::backend::{ServiceIndex, service_port_by_number};
use crate::error::CompileError;
use crate::object_key::{ObjectKey, ObjectKind, namespace_of};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Computes the endpoints of every backend `routes` refers to, including the default
/// backend. Every referenced backend is in the table, with no endpoints when none are
/// usable. Errors are filed under the EndpointSlice they concern; slices of Services no
/// route refers to are not read at all.
pub fn compile_backends(
    objects: &ClusterObjects,
    routes: &RouteTable,
) -> (BackendTable, BTreeMap<ObjectKey, Vec<CompileError>>) {
    // Each referenced backend, and whether some route hashes onto it and so needs a ring.
    let mut wanted: BTreeMap<&BackendKey, bool> = BTreeMap::new();
    for target in route_targets(routes) {
        let hashed = matches!(target.balance, BalancePolicy::Hash(_));
        *wanted.entry(&target.backend).or_default() |= hashed;
    }
    let services = ServiceIndex::new(objects.services.iter().map(Arc::as_ref));
    let referenced: BTreeSet<(&str, &str)> = wanted
        .keys()
        .map(|key| (key.namespace.as_str(), key.service.as_str()))
        .collect();

    let mut errors: BTreeMap<ObjectKey, Vec<CompileError>> = BTreeMap::new();
    let mut slices_by_service: BTreeMap<(&str, &str), Vec<SliceView<'_>>> = BTreeMap::new();
    for slice in &objects.endpoint_slices {
        let Some(service) = service_of(slice) else {
            continue;
        };
        let service = (namespace_of(&slice.metadata), service);
        // FQDN slices name hosts, not addresses; the proxy has nothing to connect to.
        if !referenced.contains(&service) || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6")
        {
            continue;
        }
        let (view, slice_errors) = SliceView::new(slice, service);
        if !slice_errors.is_empty() {
            errors
                .entry(ObjectKey::from_meta(
                    ObjectKind::EndpointSlice,
                    &slice.metadata,
                ))
                .or_default()
                .extend(slice_errors);
        }
        slices_by_service.entry(service).or_default().push(view);
    }
    for views in slices_by_service.values_mut() {
        views.sort_by(|a, b| a.name.cmp(b.name));
    }

    let mut table = BackendTable::default();
    for (key, with_ring) in wanted {
        let views = slices_by_service
            .get(&(key.namespace.as_str(), key.service.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let endpoints = match service_port_name(&services, key) {
            Some(port_name) => endpoints_of(views, port_name),
            // Without the Service there is no port name to pick the slice port by.
            None => Vec::new(),
        };
        table
            .backends
            .insert(key.clone(), Backend::new(endpoints, with_ring));
    }
    (table, errors)
}

/// Every route target of a table: exact, wildcard and host-less paths, then the default.
pub fn route_targets(routes: &RouteTable) -> impl Iterator<Item = &RouteTarget> {
    routes
        .exact_hosts
        .values()
        .chain(routes.wildcard_hosts.values())
        .chain(std::iter::once(&routes.any_host))
        .flat_map(|host| host.exact_paths.values().chain(host.prefix_paths.values()))
        .chain(routes.default_backend.as_ref())
}

fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .map(String::as_str)
}

/// The name of the Service port a backend key stands for; unnamed is `""`, as in slices.
fn service_port_name<'a>(services: &ServiceIndex<'a>, key: &BackendKey) -> Option<&'a str> {
    let service = services.get(&key.namespace, &key.service)?;
    let ports = service.spec.as_ref()?.ports.as_deref()?;
    let port = service_port_by_number(ports, key.port)?;
    Some(port.name.as_deref().unwrap_or_default())
}

/// One EndpointSlice with its addresses parsed and weights read, done once per slice
/// however many backends use it.
struct SliceView<'a> {
    name: &'a str,
    slice: &'a EndpointSlice,
    endpoints: Vec<SliceEndpoint>,
}

struct SliceEndpoint {
    addresses: Vec<IpAddr>,
    weights: Vec<u32>,
    ready: bool,
    /// Terminating but still serving: used only when a backend has nothing ready.
    draining: bool,
}

impl<'a> SliceView<'a> {
    /// `service` is the slice's Service, `(namespace, name)`, named in its errors.
    fn new(slice: &'a EndpointSlice, service: (&str, &str)) -> (Self, Vec<CompileError>) {
        let annotation = slice
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(ENDPOINT_WEIGHTS));
        let (weights, mut errors) = match annotation {
            Some(value) => parse_endpoint_weights(value),
            None => (BTreeMap::new(), Vec::new()),
        };
        // A port that no connection can be made to is left out, as before; it is reported
        // so that a Service whose endpoints never get traffic says why.
        for (index, port) in slice.ports.iter().flatten().enumerate() {
            if usable_port(port.port).is_none() {
                errors.push(CompileError::InvalidEndpointPort {
                    field: format!("ports[{index}].port"),
                    name: port.name.clone().unwrap_or_default(),
                    port: port.port,
                    service: format!("{}/{}", service.0, service.1),
                });
            }
        }
        let mut endpoints = Vec::with_capacity(slice.endpoints.len());
        for (index, endpoint) in slice.endpoints.iter().enumerate() {
            let mut addresses = Vec::with_capacity(endpoint.addresses.len());
            for (address_index, address) in endpoint.addresses.iter().enumerate() {
                match address.parse::<IpAddr>() {
                    Ok(ip) => addresses.push(ip),
                    Err(_) => errors.push(CompileError::InvalidEndpointAddress {
                        field: format!("endpoints[{index}].addresses[{address_index}]"),
                        address: address.clone(),
                    }),
                }
            }
            let conditions = endpoint.conditions.as_ref();
            endpoints.push(SliceEndpoint {
                weights: addresses
                    .iter()
                    .map(|ip| weights.get(ip).copied().unwrap_or(1))
                    .collect(),
                addresses,
                // The API says a missing `ready` means ready.
                ready: conditions
                    .and_then(|conditions| conditions.ready)
                    .unwrap_or(true),
                draining: conditions.is_some_and(|conditions| {
                    conditions.serving == Some(true) && conditions.terminating == Some(true)
                }),
            });
        }
        let view = SliceView {
            name: slice.metadata.name.as_deref().unwrap_or_default(),
            slice,
            endpoints,
        };
        (view, errors)
    }

    /// The slice's port for the Service port named `port_name`; unnamed and `""` are equal.
    fn port(&self, port_name: &str) -> Option<u16> {
        self.slice
            .ports
            .as_deref()?
            .iter()
            .find(|port| port.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|port| usable_port(port.port))
    }
}

/// A slice port's number when it can be connected to: 1 to 65535. The API allows a
/// missing one ("all ports"), which names nothing to connect to.
fn usable_port(port: Option<i32>) -> Option<u16> {
    port.and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0)
}

/// Ready endpoints on the named port across the slices, or the draining ones when none
/// is ready, so that a backend whose pods are all shutting down still finishes requests.
fn endpoints_of(views: &[SliceView<'_>], port_name: &str) -> Vec<Endpoint> {
    let mut ready = Vec::new();
    let mut draining = Vec::new();
    for view in views {
        let Some(port) = view.port(port_name) else {
            continue;
        };
        for endpoint in &view.endpoints {
            let into = if endpoint.ready {
                &mut ready
            } else if endpoint.draining {
                &mut draining
            } else {
                continue;
            };
            for (ip, weight) in endpoint.addresses.iter().zip(&endpoint.weights) {
                into.push(Endpoint {
                    addr: SocketAddr::new(*ip, port),
                    weight: *weight,
                });
            }
        }
    }
    let mut endpoints = if ready.is_empty() { draining } else { ready };
    // An address in two slices (as during a slice split) keeps the same weight whatever
    // the slices' order, because `Backend::new` keeps the first of equal addresses.
    endpoints.sort_by_key(|endpoint| (endpoint.addr, endpoint.weight));
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::{endpoint_slice, service};
    use serde_json::{Value, json};
    use sluice_dataplane::snapshot::{HashOn, ObjectRef};

    fn target(service: &str, port: u16, balance: BalancePolicy) -> RouteTarget {
        RouteTarget {
            owner: ObjectRef::new("shop", "web"),
            backend: key(service, port),
            balance,
            policies: None,
            https: Arc::default(),
            upstream: None,
            strict_paths: false,
            slot: RouteTarget::UNNUMBERED,
        }
    }

    fn key(service: &str, port: u16) -> BackendKey {
        BackendKey {
            namespace: "shop".into(),
            service: service.into(),
            port,
        }
    }

    /// A table whose host-less rules route `/` to `shop/<service>:<port>`.
    fn routes_to(service: &str, port: u16, balance: BalancePolicy) -> RouteTable {
        let mut routes = RouteTable::default();
        routes
            .any_host
            .prefix_paths
            .insert("/".into(), target(service, port, balance));
        routes
    }

    fn web() -> Service {
        service("shop", "web", &[(Some("http"), 80), (None, 81)])
    }

    use k8s_openapi::api::core::v1::Service;

    fn objects(services: Vec<Service>, slices: Vec<EndpointSlice>) -> ClusterObjects {
        ClusterObjects {
            services: services.into_iter().map(Arc::new).collect(),
            endpoint_slices: slices.into_iter().map(Arc::new).collect(),
            ..ClusterObjects::default()
        }
    }

    fn ready(addresses: &[&str]) -> Value {
        json!({ "addresses": addresses, "conditions": { "ready": true } })
    }

    fn addrs(table: &BackendTable, key: &BackendKey) -> Vec<String> {
        table.backends[key]
            .endpoints
            .iter()
            .map(|endpoint| endpoint.addr.to_string())
            .collect()
    }

    fn compile(objects: &ClusterObjects, routes: &RouteTable) -> BackendTable {
        let (table, errors) = compile_backends(objects, routes);
        assert!(errors.is_empty(), "{errors:?}");
        table
    }

    #[test]
    fn slice_port_with_the_service_port_name_gives_the_endpoint_port() {
        let slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some("http"), 8080), (Some("other"), 9090)],
            vec![ready(&["10.0.0.2", "10.0.0.1"])],
        );
        let objects = objects(vec![web()], vec![slice]);
        let table = compile(&objects, &routes_to("web", 80, BalancePolicy::RoundRobin));
        assert_eq!(
            addrs(&table, &key("web", 80)),
            ["10.0.0.1:8080", "10.0.0.2:8080"]
        );
        assert!(table.backends[&key("web", 80)].ring.is_none());
    }

    #[test]
    fn unnamed_and_empty_port_names_are_equal() {
        let slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some(""), 8081)],
            vec![ready(&["10.0.0.1"])],
        );
        let objects = objects(vec![web()], vec![slice]);
        let table = compile(&objects, &routes_to("web", 81, BalancePolicy::RoundRobin));
        assert_eq!(addrs(&table, &key("web", 81)), ["10.0.0.1:8081"]);
    }

    #[test]
    fn missing_ready_condition_counts_as_ready_and_not_ready_is_left_out() {
        let slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![
                json!({ "addresses": ["10.0.0.1"] }),
                json!({ "addresses": ["10.0.0.2"], "conditions": {} }),
                json!({ "addresses": ["10.0.0.3"], "conditions": { "ready": false } }),
                json!({ "addresses": ["10.0.0.4", "10.0.0.5"], "conditions": { "ready": true } }),
            ],
        );
        let objects = objects(vec![web()], vec![slice]);
        let table = compile(&objects, &routes_to("web", 80, BalancePolicy::RoundRobin));
        assert_eq!(
            addrs(&table, &key("web", 80)),
            [
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.4:8080",
                "10.0.0.5:8080"
            ]
        );
    }

    #[test]
    fn with_nothing_ready_serving_terminating_endpoints_drain() {
        let slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![
                json!({ "addresses": ["10.0.0.1"], "conditions": { "ready": false, "serving": true, "terminating": true } }),
                json!({ "addresses": ["10.0.0.2"], "conditions": { "ready": false, "serving": false, "terminating": true } }),
                json!({ "addresses": ["10.0.0.3"], "conditions": { "ready": false, "serving": true } }),
            ],
        );
        let objects = objects(vec![web()], vec![slice]);
        let table = compile(&objects, &routes_to("web", 80, BalancePolicy::RoundRobin));
        assert_eq!(addrs(&table, &key("web", 80)), ["10.0.0.1:8080"]);
    }

    #[test]
    fn draining_endpoints_are_unused_while_something_is_ready() {
        let slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![
                json!({ "addresses": ["10.0.0.1"], "conditions": { "ready": false, "serving": true, "terminating": true } }),
                ready(&["10.0.0.2"]),
            ],
        );
        let objects = objects(vec![web()], vec![slice]);
        let table = compile(&objects, &routes_to("web", 80, BalancePolicy::RoundRobin));
        assert_eq!(addrs(&table, &key("web", 80)), ["10.0.0.2:8080"]);
    }

    #[test]
    fn endpoints_merge_across_slices_and_skip_fqdn_and_other_services() {
        let slices = vec![
            endpoint_slice(
                "shop",
                "web-b",
                "web",
                "IPv6",
                &[(Some("http"), 8080)],
                vec![ready(&["fd00::1"])],
            ),
            endpoint_slice(
                "shop",
                "web-a",
                "web",
                "IPv4",
                &[(Some("http"), 8080)],
                vec![ready(&["10.0.0.1"])],
            ),
            endpoint_slice(
                "shop",
                "web-c",
                "web",
                "FQDN",
                &[(Some("http"), 8080)],
                vec![ready(&["pod.example.com"])],
            ),
            endpoint_slice(
                "shop",
                "api-a",
                "api",
                "IPv4",
                &[(Some("http"), 8080)],
                vec![ready(&["10.0.0.9"])],
            ),
            endpoint_slice(
                "other",
                "web-a",
                "web",
                "IPv4",
                &[(Some("http"), 8080)],
                vec![ready(&["10.0.0.8"])],
            ),
        ];
        let objects = objects(vec![web()], slices);
        let table = compile(&objects, &routes_to("web", 80, BalancePolicy::RoundRobin));
        assert_eq!(
            addrs(&table, &key("web", 80)),
            ["10.0.0.1:8080", "[fd00::1]:8080"]
        );
        assert_eq!(table.backends.len(), 1);
    }

    #[test]
    fn backend_without_endpoints_or_service_is_still_in_the_table() {
        let objects = objects(vec![web()], vec![]);
        let mut routes = routes_to("web", 80, BalancePolicy::RoundRobin);
        routes.default_backend = Some(target("gone", 8080, BalancePolicy::RoundRobin));
        let table = compile(&objects, &routes);
        assert_eq!(table.backends.len(), 2);
        assert!(table.backends[&key("web", 80)].endpoints.is_empty());
        assert!(table.backends[&key("gone", 8080)].endpoints.is_empty());
    }

    #[test]
    fn weights_annotation_sets_weights_and_bad_entries_are_reported_on_the_slice() {
        let mut slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![ready(&["10.0.0.1", "10.0.0.2", "10.0.0.3"])],
        );
        slice.metadata.annotations = Some(
            [(
                ENDPOINT_WEIGHTS.to_owned(),
                "10.0.0.1=3,10.0.0.2=5000".to_owned(),
            )]
            .into(),
        );
        let objects = objects(vec![web()], vec![slice]);
        let (table, errors) =
            compile_backends(&objects, &routes_to("web", 80, BalancePolicy::RoundRobin));
        let weights: Vec<u32> = table.backends[&key("web", 80)]
            .endpoints
            .iter()
            .map(|endpoint| endpoint.weight)
            .collect();
        assert_eq!(weights, [3, 1, 1]);
        let slice_key = ObjectKey::new(ObjectKind::EndpointSlice, "shop", "web-1");
        assert_eq!(errors.keys().collect::<Vec<_>>(), [&slice_key]);
        match errors[&slice_key].as_slice() {
            [CompileError::InvalidEndpointWeight { entry, .. }] => {
                assert_eq!(entry, "10.0.0.2=5000")
            }
            other => panic!("expected one InvalidEndpointWeight, got {other:?}"),
        }
    }

    #[test]
    fn slice_errors_are_reported_once_however_many_backends_use_the_slice() {
        let mut slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some("http"), 8080), (None, 8081)],
            vec![ready(&["10.0.0.1", "not-an-ip"])],
        );
        slice.metadata.annotations = Some([(ENDPOINT_WEIGHTS.to_owned(), "x".to_owned())].into());
        let objects = objects(vec![web()], vec![slice]);
        let mut routes = routes_to("web", 80, BalancePolicy::RoundRobin);
        routes.default_backend = Some(target("web", 81, BalancePolicy::RoundRobin));
        let (table, errors) = compile_backends(&objects, &routes);
        assert_eq!(addrs(&table, &key("web", 81)), ["10.0.0.1:8081"]);
        let reasons: Vec<(&str, Option<&str>)> = errors
            [&ObjectKey::new(ObjectKind::EndpointSlice, "shop", "web-1")]
            .iter()
            .map(|error| (error.reason(), error.field()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "InvalidAnnotation",
                    Some("metadata.annotations[sluice.dev/endpoint-weights]")
                ),
                ("InvalidEndpointAddress", Some("endpoints[0].addresses[1]")),
            ]
        );
    }

    /// The defect: a slice port of 0, over 65535 or missing was dropped without a word,
    /// leaving a Service with endpoints that never got traffic and no reason given.
    #[test]
    fn unusable_slice_ports_are_reported_on_the_slice_and_give_no_endpoints() {
        let mut slice = endpoint_slice(
            "shop",
            "web-1",
            "web",
            "IPv4",
            &[(Some("http"), 0), (None, 70000)],
            vec![ready(&["10.0.0.1"])],
        );
        slice
            .ports
            .as_mut()
            .unwrap()
            .push(k8s_openapi::api::discovery::v1::EndpointPort {
                name: Some("admin".into()),
                ..Default::default()
            });
        let objects = objects(vec![web()], vec![slice]);
        let mut routes = routes_to("web", 80, BalancePolicy::RoundRobin);
        routes.default_backend = Some(target("web", 81, BalancePolicy::RoundRobin));
        let (table, errors) = compile_backends(&objects, &routes);
        assert!(addrs(&table, &key("web", 80)).is_empty());
        assert!(addrs(&table, &key("web", 81)).is_empty());
        let slice_errors = &errors[&ObjectKey::new(ObjectKind::EndpointSlice, "shop", "web-1")];
        let reported: Vec<(&str, Option<&str>, String)> = slice_errors
            .iter()
            .map(|error| (error.reason(), error.field(), error.to_string()))
            .collect();
        assert_eq!(reported.len(), 3, "{reported:?}");
        for ((reason, field, _), index) in reported.iter().zip(0..) {
            assert_eq!(*reason, "InvalidEndpointPort");
            assert_eq!(*field, Some(format!("ports[{index}].port").as_str()));
        }
        assert!(
            reported[0].2.contains("port 0 is not a port number"),
            "{}",
            reported[0].2
        );
        assert!(
            reported[0].2.contains("port \"http\" of Service shop/web"),
            "{}",
            reported[0].2
        );
        assert!(reported[1].2.contains("port 70000"), "{}", reported[1].2);
        assert!(
            reported[2].2.contains("a missing port"),
            "{}",
            reported[2].2
        );
        assert!(slice_errors.iter().all(|error| !error.is_rejection()));
    }

    #[test]
    fn ring_is_built_only_for_backends_that_some_route_hashes_onto() {
        let slices = vec![
            endpoint_slice(
                "shop",
                "web-1",
                "web",
                "IPv4",
                &[(Some("http"), 8080)],
                vec![ready(&["10.0.0.1"])],
            ),
            endpoint_slice(
                "shop",
                "api-1",
                "api",
                "IPv4",
                &[(Some("http"), 8080)],
                vec![ready(&["10.0.0.2"])],
            ),
        ];
        let api = service("shop", "api", &[(Some("http"), 80)]);
        let objects = objects(vec![web(), api], slices);
        let mut routes = routes_to("web", 80, BalancePolicy::RoundRobin);
        routes.any_host.exact_paths.insert(
            "/sticky".into(),
            target("web", 80, BalancePolicy::Hash(HashOn::ClientIp)),
        );
        routes.any_host.prefix_paths.insert(
            "/api".into(),
            target("api", 80, BalancePolicy::LeastRequest),
        );
        let table = compile(&objects, &routes);
        let web = &table.backends[&key("web", 80)];
        assert_eq!(web.ring.as_ref().map(|ring| ring.is_empty()), Some(false));
        assert!(table.backends[&key("api", 80)].ring.is_none());
    }

    #[test]
    fn address_in_two_slices_keeps_one_endpoint_whatever_the_order() {
        let mut weighted = endpoint_slice(
            "shop",
            "web-a",
            "web",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![ready(&["10.0.0.1"])],
        );
        weighted.metadata.annotations =
            Some([(ENDPOINT_WEIGHTS.to_owned(), "10.0.0.1=4".to_owned())].into());
        let plain = endpoint_slice(
            "shop",
            "web-b",
            "web",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![ready(&["10.0.0.1"])],
        );
        let routes = routes_to("web", 80, BalancePolicy::RoundRobin);
        let forward = compile(
            &objects(vec![web()], vec![weighted.clone(), plain.clone()]),
            &routes,
        );
        let backward = compile(&objects(vec![web()], vec![plain, weighted]), &routes);
        assert_eq!(forward, backward);
        assert_eq!(forward.backends[&key("web", 80)].endpoints.len(), 1);
    }
}
