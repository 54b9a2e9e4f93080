//! The pure compiler from Kubernetes objects to a routing snapshot.
//!
//! [`compile`] reads a [`ClusterObjects`] and returns the route and backend tables, plus
//! what went wrong per object. It does no I/O and reads no clock, so the same objects in
//! any order give an equal [`Compiled`]. [`compile_backends`] is the endpoint fast lane: it
//! recomputes only the backend table for routes that are already compiled.

mod annotations;
mod auth;
mod backend;
mod cache;
mod class;
mod endpoints;
mod host;
mod ingress;
mod path;
mod policy;
mod tls;
mod upstream;

#[cfg(test)]
pub(crate) mod fixtures;

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use sluice_crds::{Auth, Cache, RateLimit};
use sluice_dataplane::snapshot::{
    BackendTable, ObjectRef, RouteTable, ServerCertificate, TlsTable, VirtualHost,
};

use crate::error::{CompileError, ConflictingPath};
use crate::object_key::{ObjectKey, ObjectKind, namespace_of, object_ref};
use backend::ServiceIndex;
use class::ClassFilter;
use host::HostRule;
use ingress::{CandidateRoute, DEFAULT_BACKEND_FIELD, Indexes, IngressRoutes, compile_ingress};
use policy::PolicyIndex;
use tls::{SecretIndex, TlsTableBuilder};

pub use annotations::{
    BACKEND_CA, BACKEND_PROTOCOL, BACKEND_SNI, BACKEND_TLS_VERIFY, CLIENT_CA, ENDPOINT_WEIGHTS,
    HASH_KEY, HSTS, LOAD_BALANCE, MAX_ENDPOINT_WEIGHT, SSL_REDIRECT, STRICT_PATHS,
    WEBSOCKET_IDLE_TIMEOUT,
};
pub use class::{DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
pub use endpoints::{SERVICE_NAME_LABEL, compile_backends, route_targets};
pub use path::PathMatch;

/// Every object the compiler reads, as typed by k8s-openapi.
///
/// Order does not matter. Each object's kind, namespace and name are expected to be
/// unique, as they are in any index a source keeps.
#[derive(Debug, Clone, Default)]
///
/// Objects are shared (`Arc`) with the source's stores and with `last_good`, so a compile
/// copies no object and memory holds each object once.
pub struct ClusterObjects {
    pub ingresses: Vec<Arc<Ingress>>,
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// TLS certificates and CA bundles named by Ingresses and `--default-ssl-certificate`.
    /// Read for the CA bundles of `sluice.dev/backend-ca`.
    pub secrets: Vec<Arc<Secret>>,
    pub rate_limits: Vec<Arc<RateLimit>>,
    pub auths: Vec<Arc<Auth>>,
    pub caches: Vec<Arc<Cache>>,
}

/// Which Ingresses are ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// The class name that is ours with or without an IngressClass object.
    pub ingress_class: String,
    /// The `spec.controller` of the IngressClasses that are ours.
    pub controller_name: String,
    /// Whether `--redis-url` was given (policies with `backend: redis` need it).
    pub redis_configured: bool,
    /// `--default-ssl-certificate`: the Secret served to hosts without their own.
    pub default_certificate: Option<ObjectRef>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            ingress_class: "sluice".to_owned(),
            controller_name: "sluice.dev/ingress-controller".to_owned(),
            redis_configured: false,
            default_certificate: None,
        }
    }
}

/// What [`compile`] produces.
///
/// The caller assembles the snapshot:
/// `Snapshot { generation, routes: Arc::new(compiled.snapshot_routes), backends: Arc::new(compiled.backends) }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Compiled {
    pub snapshot_routes: RouteTable,
    pub backends: BackendTable,
    /// Every object that got an error, and every Ingress of our class (with an empty Vec
    /// when clean): the status writer uses this. Errors are in a stable order.
    pub statuses: BTreeMap<ObjectKey, Vec<CompileError>>,
    /// The Ingresses of our class whose routes are in the table, from this version or
    /// their last good one: these get `status.loadBalancer`. An Ingress served at its last
    /// good form stays reachable, so its address must not be taken away.
    pub accepted_ingresses: BTreeSet<ObjectRef>,
    /// What to fall back on next time; pass it back as `last_good` to the next [`compile`].
    pub last_good: LastGood,
    /// Server certificates by host.
    pub tls: TlsTable,
    /// The policies some route in the table enforces.
    pub programmed_policies: BTreeSet<ObjectKey>,
}

/// What the last compile served, for objects that have since gone bad.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LastGood {
    /// The version of each of our Ingresses: this version when it had no object-level
    /// rejection, else the last good one that is being served.
    pub ingresses: BTreeMap<ObjectRef, Arc<Ingress>>,
    /// The certificate of each TLS Secret in use, from its last version that parsed.
    pub certificates: BTreeMap<ObjectRef, Arc<ServerCertificate>>,
    /// Each enforced Auth policy, with the spec it was compiled from.
    pub auths: auth::LastGoodAuths,
}

/// Compiles the objects into route and backend tables.
///
/// Ingresses are applied oldest first (creation time, then namespace and name), so on a
/// conflict the oldest keeps the path. An Ingress rejected as a whole is replaced by its
/// entry in `last_good`, when there is one.
pub fn compile(
    objects: &ClusterObjects,
    last_good: &LastGood,
    options: &CompileOptions,
) -> Compiled {
    let classes = ClassFilter::new(objects.ingress_classes.iter().map(Arc::as_ref), options);
    let mut ours: Vec<&Arc<Ingress>> = objects
        .ingresses
        .iter()
        .filter(|ingress| classes.is_ours(ingress))
        .collect();
    ours.sort_by(|a, b| oldest_first(a, b));

    let mut compiled = Compiled::default();
    let secrets = SecretIndex::new(objects.secrets.iter().map(Arc::as_ref));
    let policies = PolicyIndex::new(
        &objects.rate_limits,
        &objects.auths,
        &objects.caches,
        &secrets,
        &last_good.auths,
        options.redis_configured,
        &mut |kind, name, errors| {
            compiled
                .statuses
                .insert(ObjectKey::new(kind, name.namespace, name.name), errors);
        },
    );
    compiled.last_good.auths = policies.last_good_auths(&objects.auths);
    let indexes = Indexes {
        services: ServiceIndex::new(objects.services.iter().map(Arc::as_ref)),
        policies,
        secrets,
    };
    let mut tls = TlsTableBuilder::new(&indexes.secrets, &last_good.certificates);
    if let Some(secret) = &options.default_certificate {
        let errors = tls.set_default(secret);
        if !errors.is_empty() {
            let key = ObjectKey::new(ObjectKind::Secret, &secret.namespace, &secret.name);
            compiled.statuses.insert(key, errors);
        }
    }
    let mut table = RouteTableBuilder::default();
    for ingress in ours {
        let owner = object_ref(&ingress.metadata);
        let mut errors = Vec::new();
        let served = match compile_ingress(ingress, &owner, &indexes) {
            Ok(routes) => {
                compiled
                    .last_good
                    .ingresses
                    .insert(owner.clone(), Arc::clone(ingress));
                Some(routes)
            }
            Err(rejections) => {
                errors.extend(rejections);
                serve_last_good(&owner, last_good, &indexes, &mut errors, &mut compiled)
            }
        };
        if let Some(mut routes) = served {
            compiled.accepted_ingresses.insert(owner.clone());
            let ingress_tls = std::mem::take(&mut routes.tls);
            table.add(routes, &mut errors);
            tls.add(&owner, &ingress_tls, &mut errors);
        }
        compiled.statuses.insert(ObjectKey::ingress(&owner), errors);
    }

    compiled.snapshot_routes = table.finish();
    (compiled.tls, compiled.last_good.certificates) = tls.finish();
    compiled.programmed_policies = compiled
        .snapshot_routes
        .targets()
        .filter_map(|target| target.policies.as_deref())
        .flat_map(|policies| {
            let limits = policies
                .rate_limits
                .iter()
                .map(|policy| (ObjectKind::RateLimit, &policy.name));
            let auth = policies
                .auth
                .iter()
                .map(|policy| (ObjectKind::Auth, &policy.name));
            let cache = policies
                .cache
                .iter()
                .map(|policy| (ObjectKind::Cache, &policy.name));
            limits.chain(auth).chain(cache)
        })
        .map(|(kind, name)| ObjectKey::new(kind, name.namespace.as_str(), name.name.as_str()))
        .collect();
    let (backends, endpoint_errors) = compile_backends(objects, &compiled.snapshot_routes);
    compiled.backends = backends;
    for (key, errors) in endpoint_errors {
        compiled.statuses.entry(key).or_default().extend(errors);
    }
    compiled
}

/// Compiles the last good version of a rejected Ingress, noting that it is served. A
/// stored version that no longer compiles (say, after an upgrade made an annotation
/// stricter) is dropped, and nothing of the Ingress is served.
fn serve_last_good(
    owner: &ObjectRef,
    last_good: &LastGood,
    indexes: &Indexes<'_>,
    errors: &mut Vec<CompileError>,
    compiled: &mut Compiled,
) -> Option<IngressRoutes> {
    let previous = last_good.ingresses.get(owner)?;
    let routes = compile_ingress(previous, owner, indexes).ok()?;
    errors.push(CompileError::ServingLastGood {
        resource_version: previous.metadata.resource_version.clone(),
    });
    compiled
        .last_good
        .ingresses
        .insert(owner.clone(), Arc::clone(previous));
    Some(routes)
}

/// Creation time ascending with a missing time last, then namespace and name.
fn oldest_first(a: &Ingress, b: &Ingress) -> Ordering {
    let by_time = match (
        a.metadata.creation_timestamp.as_ref(),
        b.metadata.creation_timestamp.as_ref(),
    ) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    by_time
        .then_with(|| namespace_of(&a.metadata).cmp(namespace_of(&b.metadata)))
        .then_with(|| ingress_name(a).cmp(ingress_name(b)))
}

fn ingress_name(ingress: &Ingress) -> &str {
    ingress.metadata.name.as_deref().unwrap_or_default()
}

/// Merges Ingresses' routes into one table, first come first served.
#[derive(Debug, Default)]
struct RouteTableBuilder {
    table: RouteTable,
    /// The path item each stored route came from, to name it in conflict errors.
    fields: BTreeMap<(HostRule, PathMatch, String), String>,
}

impl RouteTableBuilder {
    /// Adds one Ingress's routes; the routes that lose a conflict are reported in `errors`.
    fn add(&mut self, routes: IngressRoutes, errors: &mut Vec<CompileError>) {
        errors.extend(routes.errors);
        for route in routes.routes {
            if let Err(error) = self.add_route(route) {
                errors.push(error);
            }
        }
        if let Some(target) = routes.default_backend {
            match &self.table.default_backend {
                Some(winner) => errors.push(CompileError::DefaultBackendConflict {
                    field: DEFAULT_BACKEND_FIELD.to_owned(),
                    winner: winner.owner.clone(),
                }),
                None => self.table.default_backend = Some(target),
            }
        }
    }

    fn add_route(&mut self, route: CandidateRoute) -> Result<(), CompileError> {
        let host = match &route.host {
            HostRule::Any => &mut self.table.any_host,
            HostRule::Exact(name) => virtual_host(&mut self.table.exact_hosts, name, &route.host),
            HostRule::Wildcard(suffix) => {
                virtual_host(&mut self.table.wildcard_hosts, suffix, &route.host)
            }
        };
        let paths = match route.path_match {
            PathMatch::Exact => &mut host.exact_paths,
            PathMatch::Prefix => &mut host.prefix_paths,
        };
        match paths.entry(route.path.clone()) {
            Entry::Vacant(entry) => {
                entry.insert(route.target);
                self.fields
                    .insert((route.host, route.path_match, route.path), route.field);
                Ok(())
            }
            // The same path and backend twice in one Ingress says the same thing twice.
            Entry::Occupied(entry) if *entry.get() == route.target => Ok(()),
            Entry::Occupied(entry) => {
                let winner = entry.get().owner.clone();
                let winner_field = self
                    .fields
                    .get(&(route.host.clone(), route.path_match, route.path.clone()))
                    .cloned()
                    .unwrap_or_default();
                Err(CompileError::PathConflict(Box::new(ConflictingPath {
                    field: route.field,
                    host: route.host.name(),
                    path_match: route.path_match,
                    path: route.path,
                    winner,
                    winner_field,
                })))
            }
        }
    }

    fn finish(self) -> RouteTable {
        let mut table = self.table;
        table.number_targets();
        table
    }
}

/// The virtual host under `key`, created with the host's name on first use so that the
/// table never holds a host without paths.
fn virtual_host<'a>(
    hosts: &'a mut BTreeMap<String, VirtualHost>,
    key: &str,
    host: &HostRule,
) -> &'a mut VirtualHost {
    hosts.entry(key.to_owned()).or_insert_with(|| VirtualHost {
        name: host.name(),
        ..VirtualHost::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingresses_only(ingresses: &BTreeMap<ObjectRef, Arc<Ingress>>) -> LastGood {
        LastGood {
            ingresses: ingresses.clone(),
            ..LastGood::default()
        }
    }
    use crate::object_key::ObjectKind;
    use fixtures::{backend, endpoint_slice, ingress, ingress_class, path, rule, service};
    use serde_json::{Value, json};
    use sluice_dataplane::snapshot::{BackendKey, BalancePolicy, HashOn, RoutePolicies};

    /// An Ingress of class `sluice` in namespace `shop`.
    fn ours(name: &str, created: Option<&str>, mut spec: Value) -> Ingress {
        spec["ingressClassName"] = json!("sluice");
        let metadata = match created {
            Some(time) => json!({ "creationTimestamp": time }),
            None => json!({}),
        };
        ingress("shop", name, metadata, spec)
    }

    fn with_metadata(mut ingress: Ingress, metadata: Value) -> Ingress {
        let mut value = serde_json::to_value(&ingress).unwrap();
        if let (Some(meta), Value::Object(extra)) = (value["metadata"].as_object_mut(), metadata) {
            meta.extend(extra);
        }
        ingress = serde_json::from_value(value).unwrap();
        ingress
    }

    fn routes(rules: Vec<Value>) -> Value {
        json!({ "rules": rules })
    }

    /// `/` on every host to `<service>:80`.
    fn root_to(service: &str) -> Value {
        routes(vec![rule(
            None,
            vec![path("/", "Prefix", backend(service, 80))],
        )])
    }

    fn cluster(ingresses: Vec<Ingress>) -> ClusterObjects {
        ClusterObjects {
            ingresses: ingresses.into_iter().map(Arc::new).collect(),
            services: vec![
                Arc::new(service("shop", "web", &[(Some("http"), 80)])),
                Arc::new(service("shop", "api", &[(Some("http"), 80)])),
            ],
            endpoint_slices: vec![Arc::new(endpoint_slice(
                "shop",
                "web-1",
                "web",
                "IPv4",
                &[(Some("http"), 8080)],
                vec![json!({ "addresses": ["10.0.0.1"] })],
            ))],
            ..ClusterObjects::default()
        }
    }

    fn run(objects: &ClusterObjects) -> Compiled {
        compile(objects, &LastGood::default(), &CompileOptions::default())
    }

    fn key(service: &str) -> BackendKey {
        BackendKey {
            namespace: "shop".into(),
            service: service.into(),
            port: 80,
        }
    }

    fn shop(name: &str) -> ObjectRef {
        ObjectRef::new("shop", name)
    }

    fn status<'a>(compiled: &'a Compiled, name: &str) -> &'a [CompileError] {
        &compiled.statuses[&ObjectKey::ingress(&shop(name))]
    }

    fn reasons(compiled: &Compiled, name: &str) -> Vec<&'static str> {
        status(compiled, name)
            .iter()
            .map(CompileError::reason)
            .collect()
    }

    fn prefix_owner(host: &VirtualHost, path: &str) -> String {
        host.prefix_paths[path].owner.name.clone()
    }

    #[test]
    fn hosts_go_to_exact_wildcard_and_any_host_tables() {
        let web = ours(
            "web",
            None,
            routes(vec![
                rule(
                    Some("Foo.com"),
                    vec![path("/", "Prefix", backend("web", 80))],
                ),
                rule(
                    Some("*.Bar.com"),
                    vec![path("/", "Prefix", backend("web", 80))],
                ),
                rule(None, vec![path("/", "Prefix", backend("web", 80))]),
            ]),
        );
        let compiled = run(&cluster(vec![web]));
        let table = &compiled.snapshot_routes;
        assert_eq!(table.exact_hosts.keys().collect::<Vec<_>>(), ["foo.com"]);
        assert_eq!(table.exact_hosts["foo.com"].name, "foo.com");
        assert_eq!(table.wildcard_hosts.keys().collect::<Vec<_>>(), ["bar.com"]);
        assert_eq!(table.wildcard_hosts["bar.com"].name, "*.bar.com");
        assert_eq!(table.any_host.name, "");
        assert_eq!(
            table.any_host.prefix_paths.keys().collect::<Vec<_>>(),
            ["/"]
        );
        assert!(status(&compiled, "web").is_empty());
    }

    #[test]
    fn invalid_host_rule_is_dropped_and_leaves_no_virtual_host() {
        let web = ours(
            "web",
            None,
            routes(vec![rule(
                Some("foo.com:80"),
                vec![path("/", "Prefix", backend("web", 80))],
            )]),
        );
        let compiled = run(&cluster(vec![web]));
        assert!(compiled.snapshot_routes.exact_hosts.is_empty());
        assert_eq!(reasons(&compiled, "web"), ["InvalidHost"]);
        assert_eq!(
            status(&compiled, "web")[0].field(),
            Some("spec.rules[0].host")
        );
    }

    #[test]
    fn paths_are_stored_by_match_kind_under_their_keys() {
        let web = ours(
            "web",
            None,
            routes(vec![rule(
                Some("foo.com"),
                vec![
                    path("/exact/", "Exact", backend("web", 80)),
                    path("/prefix/", "Prefix", backend("web", 80)),
                    path("/impl/", "ImplementationSpecific", backend("web", 80)),
                    json!({ "path": "/untyped/", "backend": backend("web", 80) }),
                ],
            )]),
        );
        let compiled = run(&cluster(vec![web]));
        let host = &compiled.snapshot_routes.exact_hosts["foo.com"];
        assert_eq!(host.exact_paths.keys().collect::<Vec<_>>(), ["/exact/"]);
        assert_eq!(
            host.prefix_paths.keys().collect::<Vec<_>>(),
            ["/impl", "/prefix", "/untyped"]
        );
    }

    #[test]
    fn rules_for_one_host_from_many_ingresses_merge() {
        let a = ours(
            "a",
            None,
            routes(vec![rule(
                Some("foo.com"),
                vec![path("/a", "Prefix", backend("web", 80))],
            )]),
        );
        let b = ours(
            "b",
            None,
            routes(vec![rule(
                Some("FOO.com"),
                vec![path("/b", "Prefix", backend("api", 80))],
            )]),
        );
        let compiled = run(&cluster(vec![a, b]));
        let host = &compiled.snapshot_routes.exact_hosts["foo.com"];
        assert_eq!(prefix_owner(host, "/a"), "a");
        assert_eq!(prefix_owner(host, "/b"), "b");
        assert_eq!(host.prefix_paths["/b"].backend, key("api"));
        assert_eq!(compiled.snapshot_routes.exact_hosts.len(), 1);
    }

    #[test]
    fn path_conflict_oldest_ingress_wins_and_loser_names_it() {
        let newer = ours("newer", Some("2024-02-01T00:00:00Z"), root_to("api"));
        let older = ours("older", Some("2024-01-01T00:00:00Z"), root_to("web"));
        let compiled = run(&cluster(vec![newer, older]));
        assert_eq!(
            prefix_owner(&compiled.snapshot_routes.any_host, "/"),
            "older"
        );
        assert!(status(&compiled, "older").is_empty());
        assert_eq!(
            status(&compiled, "newer"),
            [CompileError::PathConflict(Box::new(ConflictingPath {
                field: "spec.rules[0].http.paths[0]".into(),
                host: String::new(),
                path_match: PathMatch::Prefix,
                path: "/".into(),
                winner: shop("older"),
                winner_field: "spec.rules[0].http.paths[0]".into(),
            }))]
        );
        // Losing a path is partial: the Ingress stays accepted.
        assert!(compiled.accepted_ingresses.contains(&shop("newer")));
    }

    #[test]
    fn missing_creation_timestamp_sorts_last() {
        let untimed = ours("a-untimed", None, root_to("api"));
        let timed = ours("z-timed", Some("2030-01-01T00:00:00Z"), root_to("web"));
        let compiled = run(&cluster(vec![untimed, timed]));
        assert_eq!(
            prefix_owner(&compiled.snapshot_routes.any_host, "/"),
            "z-timed"
        );
        assert_eq!(reasons(&compiled, "a-untimed"), ["PathConflict"]);
    }

    #[test]
    fn equal_age_breaks_ties_by_namespace_then_name() {
        let time = Some("2024-01-01T00:00:00Z");
        let b = ours("b", time, root_to("api"));
        let a = ours("a", time, root_to("web"));
        let mut other_namespace = ours("0", time, root_to("web"));
        other_namespace.metadata.namespace = Some("zzz".into());
        let compiled = run(&cluster(vec![other_namespace, b, a]));
        assert_eq!(prefix_owner(&compiled.snapshot_routes.any_host, "/"), "a");
        assert_eq!(reasons(&compiled, "b"), ["PathConflict"]);
        let zzz = ObjectKey::new(ObjectKind::Ingress, "zzz", "0");
        let zzz_reasons: Vec<&str> = compiled.statuses[&zzz]
            .iter()
            .map(CompileError::reason)
            .collect();
        assert_eq!(zzz_reasons, ["ServiceNotFound", "PathConflict"]);
    }

    #[test]
    fn exact_and_prefix_on_the_same_path_do_not_conflict() {
        let a = ours(
            "a",
            None,
            routes(vec![rule(
                None,
                vec![path("/x", "Exact", backend("web", 80))],
            )]),
        );
        let b = ours(
            "b",
            None,
            routes(vec![rule(
                None,
                vec![path("/x", "Prefix", backend("api", 80))],
            )]),
        );
        let compiled = run(&cluster(vec![a, b]));
        let host = &compiled.snapshot_routes.any_host;
        assert_eq!(host.exact_paths["/x"].owner, shop("a"));
        assert_eq!(host.prefix_paths["/x"].owner, shop("b"));
        assert!(status(&compiled, "b").is_empty());
    }

    #[test]
    fn same_path_on_different_hosts_does_not_conflict() {
        let a = ours(
            "a",
            None,
            routes(vec![rule(
                Some("a.com"),
                vec![path("/", "Prefix", backend("web", 80))],
            )]),
        );
        let b = ours(
            "b",
            None,
            routes(vec![rule(
                Some("*.a.com"),
                vec![path("/", "Prefix", backend("api", 80))],
            )]),
        );
        let c = ours("c", None, root_to("api"));
        let compiled = run(&cluster(vec![a, b, c]));
        for name in ["a", "b", "c"] {
            assert!(status(&compiled, name).is_empty(), "{name}");
        }
    }

    #[test]
    fn prefix_with_and_without_trailing_slash_is_one_path_and_conflicts() {
        let a = ours(
            "a",
            None,
            routes(vec![rule(
                None,
                vec![path("/api/", "Prefix", backend("web", 80))],
            )]),
        );
        let b = ours(
            "b",
            None,
            routes(vec![rule(
                None,
                vec![path("/api", "Prefix", backend("api", 80))],
            )]),
        );
        let compiled = run(&cluster(vec![b, a]));
        assert_eq!(
            prefix_owner(&compiled.snapshot_routes.any_host, "/api"),
            "a"
        );
        match status(&compiled, "b") {
            [CompileError::PathConflict(conflict)] => {
                assert_eq!(conflict.path, "/api");
                assert_eq!(conflict.winner, shop("a"));
            }
            other => panic!("expected a PathConflict, got {other:?}"),
        }
    }

    #[test]
    fn same_path_twice_in_one_ingress_with_different_backends_first_wins() {
        let web = ours(
            "web",
            None,
            routes(vec![
                rule(
                    Some("foo.com"),
                    vec![path("/", "Prefix", backend("web", 80))],
                ),
                rule(
                    Some("foo.com"),
                    vec![path("/", "Prefix", backend("api", 80))],
                ),
            ]),
        );
        let compiled = run(&cluster(vec![web]));
        assert_eq!(
            compiled.snapshot_routes.exact_hosts["foo.com"].prefix_paths["/"].backend,
            key("web")
        );
        match status(&compiled, "web") {
            [CompileError::PathConflict(conflict)] => {
                assert_eq!(conflict.field, "spec.rules[1].http.paths[0]");
                assert_eq!(conflict.host, "foo.com");
                assert_eq!(conflict.winner, shop("web"));
                assert_eq!(conflict.winner_field, "spec.rules[0].http.paths[0]");
            }
            other => panic!("expected a PathConflict, got {other:?}"),
        }
    }

    #[test]
    fn identical_duplicate_paths_in_one_ingress_are_fine() {
        let web = ours(
            "web",
            None,
            routes(vec![
                rule(
                    None,
                    vec![
                        path("/a", "Prefix", backend("web", 80)),
                        path("/a/", "Prefix", backend("web", "http")),
                    ],
                ),
                rule(None, vec![path("/a", "Prefix", backend("web", 80))]),
            ]),
        );
        let compiled = run(&cluster(vec![web]));
        assert!(status(&compiled, "web").is_empty());
        assert_eq!(compiled.snapshot_routes.any_host.prefix_paths.len(), 1);
    }

    #[test]
    fn a_dropped_path_does_not_claim_its_route() {
        let older = ours(
            "older",
            Some("2024-01-01T00:00:00Z"),
            routes(vec![rule(
                None,
                vec![path("/", "Prefix", backend("web", "nope"))],
            )]),
        );
        let newer = ours("newer", Some("2024-02-01T00:00:00Z"), root_to("api"));
        let compiled = run(&cluster(vec![older, newer]));
        assert_eq!(
            prefix_owner(&compiled.snapshot_routes.any_host, "/"),
            "newer"
        );
        assert_eq!(reasons(&compiled, "older"), ["BackendPortNotFound"]);
        assert!(status(&compiled, "newer").is_empty());
    }

    #[test]
    fn default_backend_oldest_wins_and_others_conflict() {
        let newer = ours(
            "newer",
            Some("2024-02-01T00:00:00Z"),
            json!({ "defaultBackend": backend("api", 80) }),
        );
        let older = ours(
            "older",
            Some("2024-01-01T00:00:00Z"),
            json!({ "defaultBackend": backend("web", 80) }),
        );
        let compiled = run(&cluster(vec![newer, older]));
        let default = compiled.snapshot_routes.default_backend.as_ref().unwrap();
        assert_eq!(default.owner, shop("older"));
        assert_eq!(default.backend, key("web"));
        assert_eq!(
            status(&compiled, "newer"),
            [CompileError::DefaultBackendConflict {
                field: "spec.defaultBackend".into(),
                winner: shop("older"),
            }]
        );
    }

    #[test]
    fn rule_without_http_is_ignored() {
        let web = ours("web", None, routes(vec![json!({ "host": "foo.com" })]));
        let compiled = run(&cluster(vec![web]));
        assert_eq!(compiled.snapshot_routes, RouteTable::default());
        assert!(status(&compiled, "web").is_empty());
        assert!(compiled.accepted_ingresses.contains(&shop("web")));
    }

    #[test]
    fn ingresses_of_other_classes_are_ignored_entirely() {
        let mut theirs = ours("theirs", None, root_to("web"));
        theirs.spec.as_mut().unwrap().ingress_class_name = Some("nginx".into());
        let mut objects = cluster(vec![theirs]);
        objects.ingress_classes = vec![Arc::new(ingress_class(
            "nginx",
            "k8s.io/ingress-nginx",
            true,
        ))];
        let compiled = run(&objects);
        assert_eq!(compiled.snapshot_routes, RouteTable::default());
        assert!(compiled.statuses.is_empty());
        assert!(compiled.accepted_ingresses.is_empty());
        assert!(compiled.last_good.ingresses.is_empty());
    }

    #[test]
    fn ingress_without_class_is_ours_through_our_default_class() {
        let mut unclassed = ours("web", None, root_to("web"));
        unclassed.spec.as_mut().unwrap().ingress_class_name = None;
        let mut objects = cluster(vec![unclassed]);
        assert!(run(&objects).statuses.is_empty());
        objects.ingress_classes = vec![Arc::new(ingress_class(
            "edge",
            "sluice.dev/ingress-controller",
            true,
        ))];
        let compiled = run(&objects);
        assert_eq!(prefix_owner(&compiled.snapshot_routes.any_host, "/"), "web");
    }

    #[test]
    fn clean_ingress_gets_an_empty_status_and_is_accepted_and_last_good() {
        let web = ours("web", None, root_to("web"));
        let compiled = run(&cluster(vec![web.clone()]));
        assert_eq!(compiled.statuses.len(), 1);
        assert!(status(&compiled, "web").is_empty());
        assert_eq!(compiled.accepted_ingresses, BTreeSet::from([shop("web")]));
        assert_eq!(
            compiled.last_good.ingresses,
            BTreeMap::from([(shop("web"), Arc::new(web))])
        );
    }

    #[test]
    fn route_owner_and_balance_come_from_the_ingress() {
        let web = with_metadata(
            ours("web", None, root_to("web")),
            json!({ "annotations": { "sluice.dev/load-balance": "hash", "sluice.dev/hash-key": "cookie:sid" } }),
        );
        let api = ours(
            "api",
            None,
            routes(vec![rule(
                Some("api.com"),
                vec![path("/", "Prefix", backend("api", 80))],
            )]),
        );
        let compiled = run(&cluster(vec![web, api]));
        let hashed = &compiled.snapshot_routes.any_host.prefix_paths["/"];
        assert_eq!(hashed.owner, shop("web"));
        assert_eq!(
            hashed.balance,
            BalancePolicy::Hash(HashOn::Cookie("sid".into()))
        );
        let plain = &compiled.snapshot_routes.exact_hosts["api.com"].prefix_paths["/"];
        assert_eq!(plain.owner, shop("api"));
        assert_eq!(plain.balance, BalancePolicy::RoundRobin);
        // The hashed backend gets a ring, the other not.
        assert!(compiled.backends.backends[&key("web")].ring.is_some());
        assert!(compiled.backends.backends[&key("api")].ring.is_none());
    }

    #[test]
    fn invalid_annotation_rejects_the_whole_ingress() {
        let bad = with_metadata(
            ours("bad", None, root_to("web")),
            json!({ "annotations": { "sluice.dev/load-balance": "hash" } }),
        );
        let compiled = run(&cluster(vec![bad]));
        assert_eq!(compiled.snapshot_routes, RouteTable::default());
        assert_eq!(reasons(&compiled, "bad"), ["InvalidAnnotation"]);
        assert!(status(&compiled, "bad")[0].is_rejection());
        assert!(compiled.accepted_ingresses.is_empty());
        assert!(compiled.last_good.ingresses.is_empty());
        assert!(compiled.backends.backends.is_empty());
    }

    #[test]
    fn rejected_ingress_without_last_good_leaves_its_paths_to_others() {
        let older = with_metadata(
            ours("older", Some("2024-01-01T00:00:00Z"), root_to("web")),
            json!({ "annotations": { "sluice.dev/load-balance": "nope" } }),
        );
        let newer = ours("newer", Some("2024-02-01T00:00:00Z"), root_to("api"));
        let compiled = run(&cluster(vec![older, newer]));
        assert_eq!(
            prefix_owner(&compiled.snapshot_routes.any_host, "/"),
            "newer"
        );
    }

    #[test]
    fn rejected_ingress_serves_its_last_good_version() {
        let good = with_metadata(
            ours("web", None, root_to("web")),
            json!({ "resourceVersion": "7" }),
        );
        let bad = with_metadata(
            ours("web", None, root_to("api")),
            json!({ "resourceVersion": "8", "annotations": { "sluice.dev/load-balance": "nope" } }),
        );
        let last_good = BTreeMap::from([(shop("web"), Arc::new(good.clone()))]);
        let compiled = compile(
            &cluster(vec![bad]),
            &ingresses_only(&last_good),
            &CompileOptions::default(),
        );
        let served = &compiled.snapshot_routes.any_host.prefix_paths["/"];
        assert_eq!(served.backend, key("web"));
        assert_eq!(served.owner, shop("web"));
        assert_eq!(
            reasons(&compiled, "web"),
            ["InvalidAnnotation", "ServingLastGood"]
        );
        assert_eq!(
            status(&compiled, "web")[1],
            CompileError::ServingLastGood {
                resource_version: Some("7".into())
            }
        );
        assert!(compiled.accepted_ingresses.contains(&shop("web")));
        assert_eq!(compiled.last_good.ingresses, last_good);
        assert!(!compiled.backends.backends[&key("web")].endpoints.is_empty());
    }

    #[test]
    fn last_good_version_keeps_its_place_in_conflicts() {
        let good = ours("older", Some("2024-01-01T00:00:00Z"), root_to("web"));
        let bad = with_metadata(
            good.clone(),
            json!({ "annotations": { "sluice.dev/load-balance": "nope" } }),
        );
        let newer = ours("newer", Some("2024-02-01T00:00:00Z"), root_to("api"));
        let last_good = BTreeMap::from([(shop("older"), Arc::new(good))]);
        let compiled = compile(
            &cluster(vec![newer, bad]),
            &ingresses_only(&last_good),
            &CompileOptions::default(),
        );
        assert_eq!(
            prefix_owner(&compiled.snapshot_routes.any_host, "/"),
            "older"
        );
        assert_eq!(reasons(&compiled, "newer"), ["PathConflict"]);
    }

    #[test]
    fn current_version_replaces_last_good_when_it_compiles() {
        let previous = ours("web", None, root_to("api"));
        let current = ours("web", None, root_to("web"));
        let last_good = BTreeMap::from([(shop("web"), Arc::new(previous))]);
        let compiled = compile(
            &cluster(vec![current.clone()]),
            &ingresses_only(&last_good),
            &CompileOptions::default(),
        );
        assert_eq!(
            compiled.snapshot_routes.any_host.prefix_paths["/"].backend,
            key("web")
        );
        assert!(status(&compiled, "web").is_empty());
        assert_eq!(
            compiled.last_good.ingresses,
            BTreeMap::from([(shop("web"), Arc::new(current))])
        );
    }

    #[test]
    fn last_good_keeps_ingresses_with_partial_errors_and_drops_deleted_ones() {
        let partial = ours(
            "partial",
            None,
            routes(vec![rule(
                None,
                vec![path("bad", "Prefix", backend("web", 80))],
            )]),
        );
        let last_good = BTreeMap::from([
            (
                shop("deleted"),
                Arc::new(ours("deleted", None, root_to("web"))),
            ),
            (
                shop("partial"),
                Arc::new(ours("partial", None, root_to("web"))),
            ),
        ]);
        let compiled = compile(
            &cluster(vec![partial.clone()]),
            &ingresses_only(&last_good),
            &CompileOptions::default(),
        );
        assert_eq!(
            compiled.last_good.ingresses,
            BTreeMap::from([(shop("partial"), Arc::new(partial))])
        );
        assert_eq!(reasons(&compiled, "partial"), ["InvalidPath"]);
        assert!(
            !compiled
                .statuses
                .contains_key(&ObjectKey::ingress(&shop("deleted")))
        );
        assert_eq!(compiled.snapshot_routes, RouteTable::default());
    }

    #[test]
    fn ingress_that_left_our_class_drops_its_last_good() {
        let mut moved = ours("web", None, root_to("web"));
        moved.spec.as_mut().unwrap().ingress_class_name = Some("nginx".into());
        let last_good =
            BTreeMap::from([(shop("web"), Arc::new(ours("web", None, root_to("web"))))]);
        let compiled = compile(
            &cluster(vec![moved]),
            &ingresses_only(&last_good),
            &CompileOptions::default(),
        );
        assert!(compiled.last_good.ingresses.is_empty());
        assert_eq!(compiled.snapshot_routes, RouteTable::default());
    }

    #[test]
    fn backends_cover_every_route_and_the_default_backend() {
        let web = ours(
            "web",
            None,
            json!({
                "defaultBackend": backend("api", 80),
                "rules": [rule(None, vec![
                    path("/", "Prefix", backend("web", "http")),
                    path("/gone", "Prefix", backend("gone", 9000)),
                ])],
            }),
        );
        let compiled = run(&cluster(vec![web]));
        let backends = &compiled.backends.backends;
        let gone = BackendKey {
            namespace: "shop".into(),
            service: "gone".into(),
            port: 9000,
        };
        assert_eq!(
            backends.keys().collect::<Vec<_>>(),
            [&key("api"), &gone, &key("web")]
        );
        assert_eq!(
            backends[&key("web")].endpoints[0].addr.to_string(),
            "10.0.0.1:8080"
        );
        assert!(backends[&key("api")].endpoints.is_empty());
        assert!(backends[&gone].endpoints.is_empty());
        assert_eq!(reasons(&compiled, "web"), ["ServiceNotFound"]);
    }

    #[test]
    fn endpoint_slice_errors_are_in_statuses() {
        let mut objects = cluster(vec![ours("web", None, root_to("web"))]);
        Arc::make_mut(&mut objects.endpoint_slices[0])
            .metadata
            .annotations = Some([(ENDPOINT_WEIGHTS.to_owned(), "10.0.0.1=0".to_owned())].into());
        let compiled = run(&objects);
        let slice = ObjectKey::new(ObjectKind::EndpointSlice, "shop", "web-1");
        assert_eq!(compiled.statuses[&slice][0].reason(), "InvalidAnnotation");
        assert!(status(&compiled, "web").is_empty());
    }

    #[test]
    fn compile_backends_alone_matches_what_compile_built() {
        let objects = cluster(vec![ours("web", None, root_to("web"))]);
        let compiled = run(&objects);
        let (backends, errors) = compile_backends(&objects, &compiled.snapshot_routes);
        assert_eq!(backends, compiled.backends);
        assert!(errors.is_empty());
    }

    #[test]
    fn compile_is_the_same_whatever_the_input_order() {
        let ingresses = vec![
            ours("a", Some("2024-01-01T00:00:00Z"), root_to("web")),
            ours("b", Some("2024-01-01T00:00:00Z"), root_to("api")),
            ours(
                "c",
                None,
                json!({
                    "defaultBackend": backend("api", 80),
                    "rules": [rule(Some("foo.com"), vec![path("/x", "Exact", backend("web", 80))])],
                }),
            ),
            ours(
                "d",
                None,
                json!({
                    "defaultBackend": backend("web", 80),
                    "rules": [
                        rule(Some("foo.com"), vec![path("/x", "Exact", backend("api", 80))]),
                        rule(Some("*.foo.com"), vec![path("/y", "Prefix", backend("web", "nope"))]),
                    ],
                }),
            ),
            with_metadata(
                ours("e", None, root_to("web")),
                json!({ "annotations": { "sluice.dev/load-balance": "x" } }),
            ),
        ];
        let mut objects = cluster(ingresses);
        objects
            .services
            .push(Arc::new(service("shop", "web2", &[(None, 80)])));
        objects.endpoint_slices.push(Arc::new(endpoint_slice(
            "shop",
            "web-2",
            "web",
            "IPv4",
            &[(Some("http"), 8080)],
            vec![json!({ "addresses": ["10.0.0.2", "bad"] })],
        )));
        objects.ingress_classes = vec![
            Arc::new(ingress_class("edge", "sluice.dev/ingress-controller", true)),
            Arc::new(ingress_class("other", "example.com/other", false)),
        ];
        let last_good = BTreeMap::from([(shop("e"), Arc::new(ours("e", None, root_to("api"))))]);
        let expected = compile(
            &objects,
            &ingresses_only(&last_good),
            &CompileOptions::default(),
        );
        assert!(!expected.statuses.is_empty());

        for turn in 1..5 {
            let mut shuffled = objects.clone();
            shuffled.ingresses.rotate_left(turn);
            shuffled.ingresses.reverse();
            shuffled.services.reverse();
            shuffled.endpoint_slices.reverse();
            shuffled.ingress_classes.reverse();
            assert_eq!(
                compile(
                    &shuffled,
                    &ingresses_only(&last_good),
                    &CompileOptions::default()
                ),
                expected,
                "rotation {turn}"
            );
        }
    }

    fn rate_limit(name: &str, spec: Value) -> Arc<RateLimit> {
        Arc::new(fixtures::policy("RateLimit", name, spec))
    }

    #[test]
    fn a_malformed_auth_annotation_closes_the_routes_instead_of_falling_back() {
        let guarded = with_metadata(
            ours(
                "guarded",
                Some("2024-01-01T00:00:00Z"),
                routes(vec![rule(
                    Some("a.example"),
                    vec![path("/", "Prefix", backend("web", 80))],
                )]),
            ),
            json!({"annotations": {"sluice.dev/auth": "Members"}}),
        );
        let compiled = run(&cluster(vec![guarded]));
        // Served (not rejected, so no unprotected last good version), but closed: 503.
        let host = &compiled.snapshot_routes.exact_hosts["a.example"];
        let policies = host.prefix_paths["/"].policies.clone().unwrap();
        assert!(policies.unavailable);
        assert!(policies.auth.is_none());
        assert_eq!(reasons(&compiled, "guarded"), ["InvalidAnnotation"]);
        assert!(
            compiled
                .accepted_ingresses
                .contains(&ObjectRef::new("shop", "guarded"))
        );
    }

    #[test]
    fn ingresses_get_their_policies_and_missing_ones_make_routes_answer_503() {
        let guarded = with_metadata(
            ours(
                "guarded",
                Some("2024-01-01T00:00:00Z"),
                routes(vec![rule(
                    Some("a.example"),
                    vec![
                        path("/", "Prefix", backend("web", 80)),
                        path("/x", "Prefix", backend("web", 80)),
                    ],
                )]),
            ),
            json!({"annotations": {"sluice.dev/rate-limit": "api, api"}}),
        );
        let broken = with_metadata(
            ours(
                "broken",
                Some("2024-01-02T00:00:00Z"),
                routes(vec![rule(
                    Some("b.example"),
                    vec![path("/", "Prefix", backend("web", 80))],
                )]),
            ),
            json!({"annotations": {"sluice.dev/rate-limit": "api,nowhere,bad"}}),
        );
        let mut objects = cluster(vec![guarded, broken]);
        objects.rate_limits = vec![
            rate_limit("api", json!({"limits": [{"requests": 5, "period": "1s"}]})),
            rate_limit("bad", json!({"limits": []})),
        ];
        let compiled = run(&objects);

        let host = &compiled.snapshot_routes.exact_hosts["a.example"];
        let first = host.prefix_paths["/"].policies.clone().unwrap();
        assert!(!first.unavailable);
        assert_eq!(first.rate_limits.len(), 1, "a repeated name counts once");
        assert_eq!(first.rate_limits[0].name, ObjectRef::new("shop", "api"));
        assert!(
            Arc::ptr_eq(&first, host.prefix_paths["/x"].policies.as_ref().unwrap()),
            "one Ingress's routes share their policies"
        );
        assert!(status(&compiled, "guarded").is_empty());

        let broken_host = &compiled.snapshot_routes.exact_hosts["b.example"];
        assert!(
            broken_host.prefix_paths["/"]
                .policies
                .as_ref()
                .unwrap()
                .unavailable
        );
        assert_eq!(
            reasons(&compiled, "broken"),
            ["PolicyNotFound", "PolicyNotAccepted"]
        );
        let policy_status =
            |name: &str| &compiled.statuses[&ObjectKey::new(ObjectKind::RateLimit, "shop", name)];
        assert!(policy_status("api").is_empty());
        assert_eq!(policy_status("bad")[0].reason(), "InvalidSpec");
    }

    fn cache(name: &str, spec: Value) -> Arc<Cache> {
        Arc::new(fixtures::policy("Cache", name, spec))
    }

    /// An Ingress `name` on host `host` (`/` to Service web) with `annotations`.
    fn annotated(name: &str, host: &str, annotations: Value) -> Ingress {
        with_metadata(
            ours(
                name,
                None,
                routes(vec![rule(
                    Some(host),
                    vec![path("/", "Prefix", backend("web", 80))],
                )]),
            ),
            json!({ "annotations": annotations }),
        )
    }

    fn route_policies(compiled: &Compiled, host: &str) -> Option<Arc<RoutePolicies>> {
        compiled.snapshot_routes.exact_hosts[host].prefix_paths["/"]
            .policies
            .clone()
    }

    #[test]
    fn ingresses_get_their_cache_and_a_missing_or_invalid_one_serves_uncached() {
        let mut objects = cluster(vec![
            annotated("cached", "a.example", json!({"sluice.dev/cache": "pages"})),
            annotated(
                "missing",
                "b.example",
                json!({"sluice.dev/cache": "nowhere"}),
            ),
            annotated("refused", "c.example", json!({"sluice.dev/cache": "bad"})),
            annotated("unused", "d.example", json!({})),
        ]);
        objects.caches = vec![
            cache("pages", json!({"ttl": "5m"})),
            cache("bad", json!({"ttl": "0s"})),
            cache("idle", json!({})),
        ];
        let compiled = run(&objects);

        let found = route_policies(&compiled, "a.example").unwrap();
        let policy = found.cache.as_ref().unwrap();
        assert_eq!(policy.name, shop("pages"));
        assert_eq!(
            policy.rules.default_ttl,
            std::time::Duration::from_secs(300)
        );
        assert!(!found.unavailable);
        assert!(found.rate_limits.is_empty() && found.auth.is_none());
        assert!(status(&compiled, "cached").is_empty());

        // Missing or not accepted: reported on the Ingress, and the routes keep serving,
        // uncached. Nothing else is named, so the routes carry no policies at all.
        for (ingress, host, reason) in [
            ("missing", "b.example", "PolicyNotFound"),
            ("refused", "c.example", "PolicyNotAccepted"),
        ] {
            assert_eq!(reasons(&compiled, ingress), [reason]);
            let error = &status(&compiled, ingress)[0];
            assert_eq!(
                error.field(),
                Some("metadata.annotations[sluice.dev/cache]")
            );
            assert!(error.to_string().contains("served without it"), "{error}");
            assert!(!error.is_rejection());
            assert_eq!(route_policies(&compiled, host), None, "{ingress}");
            assert!(compiled.accepted_ingresses.contains(&shop(ingress)));
        }
        assert_eq!(route_policies(&compiled, "d.example"), None);

        // The Caches themselves: Accepted, or not with the field; Programmed when used.
        let cache_key = |name: &str| ObjectKey::new(ObjectKind::Cache, "shop", name);
        assert!(compiled.statuses[&cache_key("pages")].is_empty());
        assert!(compiled.statuses[&cache_key("idle")].is_empty());
        let refused = &compiled.statuses[&cache_key("bad")];
        assert_eq!(refused[0].reason(), "InvalidSpec");
        assert_eq!(refused[0].field(), Some("spec.ttl"));
        assert_eq!(
            compiled.programmed_policies,
            BTreeSet::from([cache_key("pages")])
        );
    }

    #[test]
    fn a_missing_cache_leaves_the_other_policies_as_they_are() {
        let mut objects = cluster(vec![
            annotated(
                "guarded",
                "a.example",
                json!({"sluice.dev/rate-limit": "api", "sluice.dev/cache": "nowhere"}),
            ),
            annotated(
                "closed",
                "b.example",
                json!({"sluice.dev/rate-limit": "gone", "sluice.dev/cache": "pages"}),
            ),
        ]);
        objects.rate_limits = vec![rate_limit(
            "api",
            json!({"limits": [{"requests": 5, "period": "1s"}]}),
        )];
        objects.caches = vec![cache("pages", json!({}))];
        let compiled = run(&objects);

        let guarded = route_policies(&compiled, "a.example").unwrap();
        assert!(
            !guarded.unavailable,
            "a missing Cache does not close the route"
        );
        assert_eq!(guarded.rate_limits.len(), 1);
        assert!(guarded.cache.is_none());
        assert_eq!(reasons(&compiled, "guarded"), ["PolicyNotFound"]);

        // A missing RateLimit still closes the route, whatever the Cache.
        let closed = route_policies(&compiled, "b.example").unwrap();
        assert!(closed.unavailable);
        assert_eq!(closed.cache.as_ref().unwrap().name, shop("pages"));
        assert_eq!(reasons(&compiled, "closed"), ["PolicyNotFound"]);
        assert!(
            status(&compiled, "closed")[0]
                .to_string()
                .contains("answer 503")
        );
        let programmed: Vec<String> = compiled
            .programmed_policies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(programmed, ["RateLimit shop/api", "Cache shop/pages"]);
    }

    #[test]
    fn a_malformed_cache_annotation_is_reported_and_the_routes_serve_uncached() {
        let mut objects = cluster(vec![
            annotated(
                "odd",
                "a.example",
                json!({"sluice.dev/cache": "Pages,More"}),
            ),
            annotated(
                "guarded",
                "b.example",
                json!({"sluice.dev/rate-limit": "api", "sluice.dev/cache": "a/b"}),
            ),
        ]);
        objects.rate_limits = vec![rate_limit(
            "api",
            json!({"limits": [{"requests": 5, "period": "1s"}]}),
        )];
        objects.caches = vec![cache("pages", json!({}))];
        let compiled = run(&objects);
        // Not a rejection: the Ingress is served as it is now, without a cache.
        assert_eq!(reasons(&compiled, "odd"), ["InvalidAnnotation"]);
        let error = &status(&compiled, "odd")[0];
        assert!(!error.is_rejection());
        assert_eq!(
            error.field(),
            Some("metadata.annotations[sluice.dev/cache]")
        );
        assert!(compiled.accepted_ingresses.contains(&shop("odd")));
        assert_eq!(route_policies(&compiled, "a.example"), None);
        let guarded = route_policies(&compiled, "b.example").unwrap();
        assert!(!guarded.unavailable);
        assert!(guarded.cache.is_none());
        assert_eq!(guarded.rate_limits.len(), 1);
        assert_eq!(reasons(&compiled, "guarded"), ["InvalidAnnotation"]);
    }

    #[test]
    fn a_cache_with_redis_needs_redis_url() {
        let mut objects = cluster(vec![annotated(
            "cached",
            "a.example",
            json!({"sluice.dev/cache": "shared"}),
        )]);
        objects.caches = vec![cache("shared", json!({"redis": {"enabled": true}}))];
        let without = run(&objects);
        let key = ObjectKey::new(ObjectKind::Cache, "shop", "shared");
        assert_eq!(
            without.statuses[&key][0].field(),
            Some("spec.redis.enabled")
        );
        assert_eq!(reasons(&without, "cached"), ["PolicyNotAccepted"]);
        assert_eq!(route_policies(&without, "a.example"), None);

        let with = compile(
            &objects,
            &LastGood::default(),
            &CompileOptions {
                redis_configured: true,
                ..CompileOptions::default()
            },
        );
        assert!(with.statuses[&key].is_empty());
        let policies = route_policies(&with, "a.example").unwrap();
        assert!(policies.cache.as_ref().unwrap().redis.is_some());
        assert!(with.programmed_policies.contains(&key));
    }

    #[test]
    fn a_missing_ca_secret_keeps_the_routes_and_makes_them_answer_503() {
        let secure = with_metadata(
            ours("secure", None, root_to("web")),
            json!({"annotations": {
                "sluice.dev/backend-protocol": "GRPCS",
                "sluice.dev/backend-ca": "backend-ca",
            }}),
        );
        let compiled = run(&cluster(vec![secure]));
        assert_eq!(reasons(&compiled, "secure"), ["BackendCANotFound"]);
        let target = &compiled.snapshot_routes.any_host.prefix_paths["/"];
        let upstream = target.upstream.as_ref().unwrap();
        assert!(upstream.unavailable);
        assert_eq!(
            upstream.protocol,
            sluice_dataplane::snapshot::BackendProtocol::Grpcs
        );
        assert!(compiled.accepted_ingresses.contains(&shop("secure")));
    }

    #[test]
    fn a_cross_namespace_ca_secret_rejects_the_ingress() {
        let web = with_metadata(
            ours("web", None, root_to("web")),
            json!({"annotations": {
                "sluice.dev/backend-protocol": "HTTPS",
                "sluice.dev/backend-ca": "security/ca",
            }}),
        );
        let compiled = run(&cluster(vec![web]));
        assert_eq!(reasons(&compiled, "web"), ["InvalidAnnotation"]);
        assert!(compiled.snapshot_routes.any_host.prefix_paths.is_empty());
    }

    /// The defect: `/café` was stored raw, requests arrive as `/caf%C3%A9`, and so they
    /// were served by the unguarded `/` of another Ingress.
    #[test]
    fn a_non_ascii_guarded_path_is_what_its_requests_route_to() {
        let guarded = with_metadata(
            ours(
                "guarded",
                Some("2024-01-01T00:00:00Z"),
                routes(vec![rule(
                    Some("a.example"),
                    vec![path("/café", "Prefix", backend("web", 80))],
                )]),
            ),
            json!({"annotations": {"sluice.dev/auth": "members"}}),
        );
        let open = ours(
            "open",
            Some("2024-01-02T00:00:00Z"),
            routes(vec![rule(
                Some("a.example"),
                vec![path("/", "Prefix", backend("web", 80))],
            )]),
        );
        let compiled = run(&cluster(vec![guarded, open]));
        for request in ["/caf%C3%A9", "/caf%C3%A9/menu"] {
            let found = compiled
                .snapshot_routes
                .lookup("a.example", request)
                .unwrap();
            assert_eq!(found.target.owner, shop("guarded"), "{request}");
            assert!(found.target.strict_paths);
        }
        let rest = compiled
            .snapshot_routes
            .lookup("a.example", "/cafe")
            .unwrap();
        assert_eq!(rest.target.owner, shop("open"));
        assert!(!rest.target.strict_paths);
        assert_eq!(reasons(&compiled, "guarded"), ["PolicyNotFound"]);
    }

    #[test]
    fn a_bad_policy_annotation_rejects_the_ingress() {
        let web = with_metadata(
            ours("web", None, root_to("web")),
            json!({"annotations": {"sluice.dev/rate-limit": "Not_A_Name"}}),
        );
        let compiled = run(&cluster(vec![web]));
        assert_eq!(reasons(&compiled, "web"), ["InvalidAnnotation"]);
        assert_eq!(compiled.snapshot_routes.any_host.prefix_paths.len(), 0);
    }
}
