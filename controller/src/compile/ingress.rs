//! One Ingress on its own: its annotations, rules, paths and backends.
//!
//! What comes out are candidate routes; whether they win over other Ingresses' routes is
//! decided when they are merged into the route table.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use sluice_dataplane::canonical::is_ambiguous_path;
use sluice_dataplane::snapshot::BackendKey;
use sluice_dataplane::snapshot::{
    ClientCa, ClientCaRequirement, HttpsPolicy, ObjectRef, RoutePolicies, RouteTarget,
};

use super::annotations::{
    AUTH, CACHE, CLIENT_CA, IngressAnnotations, RATE_LIMIT, STRICT_PATHS, annotation_field,
    parse_ingress_annotations,
};
use super::backend::{ServiceIndex, resolve_backend};
use super::host::{HostRule, compile_host};
use super::path::{PathMatch, compile_path};
use super::policy::{PolicyIndex, PolicyLookup};
use super::tls::{IngressTls, SecretIndex, ingress_tls_entries};
use super::upstream::IngressUpstream;
use crate::error::{CompileError, WithoutPolicy};

/// The field path of the default backend.
pub(crate) const DEFAULT_BACKEND_FIELD: &str = "spec.defaultBackend";

/// Everything one Ingress would like to route, with what was wrong in parts of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct IngressRoutes {
    /// In spec order, so that within an Ingress the first of two conflicting paths wins.
    pub routes: Vec<CandidateRoute>,
    pub default_backend: Option<RouteTarget>,
    /// Partial errors: each took out one rule, path or backend, or warns about it.
    pub errors: Vec<CompileError>,
    /// The hosts this Ingress wants certificates for, and its client CA.
    pub tls: IngressTls,
}

/// One path of one rule, valid and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CandidateRoute {
    pub host: HostRule,
    pub path_match: PathMatch,
    /// The normalised path the route is stored under.
    pub path: String,
    pub target: RouteTarget,
    /// The path item, `spec.rules[i].http.paths[j]`, for conflict messages.
    pub field: String,
}

/// Compiles one Ingress owned by `owner`. `Err` holds the object-level rejections: the
/// Ingress must then not be served in this form at all.
pub(crate) fn compile_ingress(
    ingress: &Ingress,
    owner: &ObjectRef,
    indexes: &Indexes<'_>,
) -> Result<IngressRoutes, Vec<CompileError>> {
    let Indexes {
        services,
        policies,
        secrets,
    } = indexes;
    let annotations = parse_ingress_annotations(ingress.metadata.annotations.as_ref())?;
    let mut compiled = IngressRoutes::default();
    let route_policies = resolve_policies(
        &annotations,
        &owner.namespace,
        policies,
        &mut compiled.errors,
    );
    let (https, client_ca) = resolve_https(
        &annotations,
        &owner.namespace,
        secrets,
        &mut compiled.errors,
    );
    let mut upstream = IngressUpstream::new(
        &annotations.upstream,
        &owner.namespace,
        secrets,
        &mut compiled.errors,
    );
    compiled.tls = IngressTls {
        entries: ingress_tls_entries(ingress, &mut compiled.errors),
        client_ca,
    };
    let mut target = |backend: BackendKey| RouteTarget {
        owner: owner.clone(),
        upstream: upstream.for_service(&backend.service),
        backend,
        balance: annotations.balance.clone(),
        policies: route_policies.clone(),
        https: Arc::clone(&https),
        strict_paths: annotations.strict_paths,
        slot: RouteTarget::UNNUMBERED,
    };
    let namespace = owner.namespace.as_str();
    let Some(spec) = ingress.spec.as_ref() else {
        return Ok(compiled);
    };

    for (rule_index, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match compile_host(
            rule.host.as_deref(),
            &format!("spec.rules[{rule_index}].host"),
        ) {
            Ok(host) => host,
            Err(error) => {
                compiled.errors.push(error);
                continue;
            }
        };
        // A rule without `http` routes nothing; it may exist only to name a TLS host.
        let Some(http) = rule.http.as_ref() else {
            continue;
        };
        for (path_index, path) in http.paths.iter().enumerate() {
            let field = format!("spec.rules[{rule_index}].http.paths[{path_index}]");
            let path_rule = match compile_path(path.path.as_deref(), &path.path_type, &field) {
                Ok(path_rule) => path_rule,
                Err(error) => {
                    compiled.errors.push(error);
                    continue;
                }
            };
            // Strict routes refuse every request such a path could match.
            if annotations.strict_paths && is_ambiguous_path(&path_rule.key) {
                compiled.errors.push(CompileError::InvalidPath {
                    field: format!("{field}.path"),
                    path: path.path.clone().unwrap_or_default(),
                    why: format!(
                        "it has ; or an encoded / or \\, which {STRICT_PATHS} refuses in \
                         requests, so it could never match"
                    ),
                });
                continue;
            }
            compiled.errors.extend(path_rule.warning);
            let backend_field = format!("{field}.backend");
            match resolve_backend(&path.backend, namespace, &backend_field, services) {
                Ok(resolved) => {
                    compiled.errors.extend(resolved.warning);
                    compiled.routes.push(CandidateRoute {
                        host: host.clone(),
                        path_match: path_rule.path_match,
                        path: path_rule.key,
                        target: target(resolved.key),
                        field,
                    });
                }
                Err(error) => compiled.errors.push(error),
            }
        }
    }

    if let Some(backend) = spec.default_backend.as_ref() {
        match resolve_backend(backend, namespace, DEFAULT_BACKEND_FIELD, services) {
            Ok(resolved) => {
                compiled.errors.extend(resolved.warning);
                compiled.default_backend = Some(target(resolved.key));
            }
            Err(error) => compiled.errors.push(error),
        }
    }
    Ok(compiled)
}

/// The indexes an Ingress is compiled against.
#[derive(Debug)]
pub(crate) struct Indexes<'a> {
    pub services: ServiceIndex<'a>,
    pub policies: PolicyIndex,
    pub secrets: SecretIndex<'a>,
}

/// The HTTPS behaviour of an Ingress's routes, and the client CA its TLS hosts use. A
/// client CA that cannot be loaded shuts the routes (403), never opens them.
fn resolve_https(
    annotations: &IngressAnnotations,
    namespace: &str,
    secrets: &SecretIndex<'_>,
    errors: &mut Vec<CompileError>,
) -> (Arc<HttpsPolicy>, Option<Arc<ClientCa>>) {
    let (client_ca, requirement) = match &annotations.client_ca {
        None => (None, None),
        Some(Err((value, why))) => {
            errors.push(CompileError::ClientCaUnavailable {
                field: annotation_field(CLIENT_CA),
                secret: value.clone(),
                why: why.clone(),
            });
            (None, Some(ClientCaRequirement::Unavailable))
        }
        Some(Ok(name)) => match secrets.client_ca(namespace, name) {
            Ok(ca) => {
                let requirement = ClientCaRequirement::Verified(ca.fingerprint);
                (Some(ca), Some(requirement))
            }
            Err(why) => {
                errors.push(CompileError::ClientCaUnavailable {
                    field: annotation_field(CLIENT_CA),
                    secret: name.clone(),
                    why,
                });
                (None, Some(ClientCaRequirement::Unavailable))
            }
        },
    };
    let policy = HttpsPolicy {
        redirect: annotations.ssl_redirect,
        hsts: annotations.hsts.clone(),
        client_ca: requirement,
    };
    (Arc::new(policy), client_ca)
}

/// The policy a lookup found. A missing or not accepted one is reported on the Ingress
/// and, unless the routes can do `without` it ([`WithoutPolicy::Served`]), makes them
/// answer 503: never unprotected.
fn take<T>(
    lookup: PolicyLookup<T>,
    annotation: &str,
    kind: &'static str,
    name: &str,
    without: WithoutPolicy,
    errors: &mut Vec<CompileError>,
    unavailable: &mut bool,
) -> Option<Arc<T>> {
    let (field, name) = (annotation_field(annotation), name.to_owned());
    match lookup {
        PolicyLookup::Found(policy) => return Some(policy),
        PolicyLookup::NotAccepted => errors.push(CompileError::PolicyNotAccepted {
            field,
            kind,
            name,
            without,
        }),
        PolicyLookup::NotFound => errors.push(CompileError::PolicyNotFound {
            field,
            kind,
            name,
            without,
        }),
    }
    if without == WithoutPolicy::Unavailable {
        *unavailable = true;
    }
    None
}

/// The policies an Ingress names, shared by all its routes. An Auth or RateLimit that is
/// missing or not accepted makes every route answer 503; a Cache that is leaves the routes
/// served uncached. Either way it is reported on the Ingress.
fn resolve_policies(
    annotations: &IngressAnnotations,
    namespace: &str,
    index: &PolicyIndex,
    errors: &mut Vec<CompileError>,
) -> Option<Arc<RoutePolicies>> {
    let mut unavailable = false;
    let mut rate_limits = Vec::new();
    for name in &annotations.rate_limits {
        let lookup = index.rate_limit(namespace, name);
        rate_limits.extend(take(
            lookup,
            RATE_LIMIT,
            "RateLimit",
            name,
            WithoutPolicy::Unavailable,
            errors,
            &mut unavailable,
        ));
    }
    let auth = match &annotations.auth {
        None => None,
        Some(Ok(name)) => take(
            index.auth(namespace, name),
            AUTH,
            "Auth",
            name,
            WithoutPolicy::Unavailable,
            errors,
            &mut unavailable,
        ),
        Some(Err(why)) => {
            errors.push(CompileError::InvalidAuthAnnotation {
                field: annotation_field(AUTH),
                why: why.clone(),
            });
            unavailable = true;
            None
        }
    };
    // A cache failing open is safe: without it a route is slower, never less protected.
    let cache = match &annotations.cache {
        None => None,
        Some(Ok(name)) => take(
            index.cache(namespace, name),
            CACHE,
            "Cache",
            name,
            WithoutPolicy::Served,
            errors,
            &mut unavailable,
        ),
        Some(Err(why)) => {
            errors.push(CompileError::InvalidCacheAnnotation {
                field: annotation_field(CACHE),
                why: why.clone(),
            });
            None
        }
    };
    if rate_limits.is_empty() && auth.is_none() && cache.is_none() && !unavailable {
        return None;
    }
    let policies = RoutePolicies {
        rate_limits,
        auth,
        cache,
        unavailable,
    };
    Some(Arc::new(policies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::{backend, ingress, path, rule, service};
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;
    use sluice_dataplane::snapshot::{BalancePolicy, HashOn};

    fn owner() -> ObjectRef {
        ObjectRef::new("shop", "web")
    }

    fn services() -> Vec<Service> {
        vec![service("shop", "web", &[(Some("http"), 80)])]
    }

    fn compile(
        metadata: serde_json::Value,
        spec: serde_json::Value,
    ) -> Result<IngressRoutes, Vec<CompileError>> {
        let services = services();
        let ingress = ingress("shop", "web", metadata, spec);
        let indexes = Indexes {
            services: ServiceIndex::new(&services),
            policies: PolicyIndex::default(),
            secrets: SecretIndex::default(),
        };
        compile_ingress(&ingress, &owner(), &indexes)
    }

    fn web_key() -> BackendKey {
        BackendKey {
            namespace: "shop".into(),
            service: "web".into(),
            port: 80,
        }
    }

    #[test]
    fn each_valid_path_becomes_a_candidate_route_in_spec_order() {
        let compiled = compile(
            json!({}),
            json!({ "rules": [
                rule(Some("Shop.Example.com"), vec![path("/a/", "Prefix", backend("web", "http")), path("/b", "Exact", backend("web", 80))]),
                rule(None, vec![path("/c", "ImplementationSpecific", backend("web", 80))]),
            ] }),
        )
        .unwrap();
        assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
        let summary: Vec<(HostRule, PathMatch, &str, &str)> = compiled
            .routes
            .iter()
            .map(|route| {
                (
                    route.host.clone(),
                    route.path_match,
                    route.path.as_str(),
                    route.field.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    HostRule::Exact("shop.example.com".into()),
                    PathMatch::Prefix,
                    "/a",
                    "spec.rules[0].http.paths[0]"
                ),
                (
                    HostRule::Exact("shop.example.com".into()),
                    PathMatch::Exact,
                    "/b",
                    "spec.rules[0].http.paths[1]"
                ),
                (
                    HostRule::Any,
                    PathMatch::Prefix,
                    "/c",
                    "spec.rules[1].http.paths[0]"
                ),
            ]
        );
        let target = &compiled.routes[0].target;
        assert_eq!(target.owner, owner());
        assert_eq!(target.backend, web_key());
        assert_eq!(target.balance, BalancePolicy::RoundRobin);
    }

    #[test]
    fn invalid_host_drops_the_whole_rule_only() {
        let compiled = compile(
            json!({}),
            json!({ "rules": [
                rule(Some("bad_host"), vec![path("/a", "Prefix", backend("web", 80))]),
                rule(Some("good.com"), vec![path("/b", "Prefix", backend("web", 80))]),
            ] }),
        )
        .unwrap();
        assert_eq!(compiled.routes.len(), 1);
        assert_eq!(compiled.routes[0].path, "/b");
        assert_eq!(compiled.errors.len(), 1);
        assert_eq!(compiled.errors[0].reason(), "InvalidHost");
        assert_eq!(compiled.errors[0].field(), Some("spec.rules[0].host"));
    }

    #[test]
    fn invalid_path_or_backend_drops_only_that_path() {
        let compiled = compile(
            json!({}),
            json!({ "rules": [rule(None, vec![
                path("no-slash", "Prefix", backend("web", 80)),
                path("/ok", "Prefix", backend("web", 80)),
                path("/port", "Prefix", backend("web", "grpc")),
            ])] }),
        )
        .unwrap();
        assert_eq!(compiled.routes.len(), 1);
        assert_eq!(compiled.routes[0].path, "/ok");
        let errors: Vec<(&str, Option<&str>)> = compiled
            .errors
            .iter()
            .map(|error| (error.reason(), error.field()))
            .collect();
        assert_eq!(
            errors,
            [
                ("InvalidPath", Some("spec.rules[0].http.paths[0].path")),
                (
                    "BackendPortNotFound",
                    Some("spec.rules[0].http.paths[2].backend.service.port.name")
                ),
            ]
        );
    }

    #[test]
    fn missing_service_by_number_keeps_the_route_with_a_warning() {
        let compiled = compile(
            json!({}),
            json!({ "rules": [rule(None, vec![path("/", "Prefix", backend("gone", 8080))])] }),
        )
        .unwrap();
        assert_eq!(compiled.routes.len(), 1);
        assert_eq!(compiled.routes[0].target.backend.service, "gone");
        assert_eq!(compiled.routes[0].target.backend.port, 8080);
        assert_eq!(compiled.errors[0].reason(), "ServiceNotFound");
        assert!(!compiled.errors[0].is_rejection());
    }

    #[test]
    fn rule_without_http_is_ignored() {
        let compiled = compile(json!({}), json!({ "rules": [{ "host": "foo.com" }] })).unwrap();
        assert_eq!(compiled, IngressRoutes::default());
    }

    #[test]
    fn default_backend_is_resolved_with_its_own_field() {
        let compiled = compile(
            json!({}),
            json!({ "defaultBackend": backend("web", "http") }),
        )
        .unwrap();
        assert_eq!(
            compiled.default_backend.map(|target| target.backend),
            Some(web_key())
        );
        let broken = compile(
            json!({}),
            json!({ "defaultBackend": backend("web", "nope") }),
        )
        .unwrap();
        assert_eq!(broken.default_backend, None);
        assert_eq!(
            broken.errors[0].field(),
            Some("spec.defaultBackend.service.port.name")
        );
    }

    #[test]
    fn annotations_set_the_balance_of_every_route() {
        let compiled = compile(
            json!({ "annotations": { "sluice.dev/load-balance": "hash", "sluice.dev/hash-key": "header:X-User" } }),
            json!({
                "defaultBackend": backend("web", 80),
                "rules": [rule(None, vec![path("/", "Prefix", backend("web", 80))])],
            }),
        )
        .unwrap();
        let expected = BalancePolicy::Hash(HashOn::Header("x-user".into()));
        assert_eq!(compiled.routes[0].target.balance, expected);
        assert_eq!(compiled.default_backend.unwrap().balance, expected);
    }

    /// `(reason, field)` of each error.
    fn problems(compiled: &IngressRoutes) -> Vec<(&str, Option<&str>)> {
        compiled
            .errors
            .iter()
            .map(|error| (error.reason(), error.field()))
            .collect()
    }

    #[test]
    fn strict_paths_follow_the_auth_and_strict_routes_drop_paths_they_would_refuse() {
        let spec = json!({ "rules": [rule(None, vec![
            path("/a", "Prefix", backend("web", 80)),
            path("/a;b", "Exact", backend("web", 80)),
            path("/%61dmin", "Prefix", backend("web", 80)),
        ])] });
        let noncanonical = ("PathNotCanonical", Some("spec.rules[0].http.paths[2].path"));

        let open = compile(json!({}), spec.clone()).unwrap();
        assert_eq!(open.routes.len(), 3);
        assert!(open.routes.iter().all(|route| !route.target.strict_paths));
        assert_eq!(open.routes[2].path, "/admin");
        assert_eq!(problems(&open), [noncanonical]);

        let guarded = compile(
            json!({ "annotations": { "sluice.dev/auth": "members" } }),
            spec.clone(),
        )
        .unwrap();
        let paths: Vec<&str> = guarded.routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/admin"]);
        assert!(guarded.routes.iter().all(|route| route.target.strict_paths));
        assert_eq!(
            problems(&guarded),
            [
                (
                    "PolicyNotFound",
                    Some("metadata.annotations[sluice.dev/auth]")
                ),
                ("InvalidPath", Some("spec.rules[0].http.paths[1].path")),
                noncanonical,
            ]
        );
        assert!(
            guarded.errors[1]
                .to_string()
                .contains("sluice.dev/strict-paths"),
            "{}",
            guarded.errors[1]
        );

        let relaxed = compile(
            json!({ "annotations": {
                "sluice.dev/auth": "members",
                "sluice.dev/strict-paths": "false",
            } }),
            spec.clone(),
        )
        .unwrap();
        assert_eq!(relaxed.routes.len(), 3);
        assert!(
            relaxed
                .routes
                .iter()
                .all(|route| !route.target.strict_paths)
        );

        let strict = compile(
            json!({ "annotations": { "sluice.dev/strict-paths": "true" } }),
            json!({ "defaultBackend": backend("web", 80) }),
        )
        .unwrap();
        assert!(strict.default_backend.unwrap().strict_paths);
        let bad = compile(
            json!({ "annotations": { "sluice.dev/strict-paths": "on" } }),
            spec,
        )
        .unwrap_err();
        assert_eq!(
            bad[0].field(),
            Some("metadata.annotations[sluice.dev/strict-paths]")
        );
        assert!(bad[0].is_rejection());
    }

    #[test]
    fn bad_annotation_rejects_the_ingress() {
        let errors = compile(
            json!({ "annotations": { "sluice.dev/load-balance": "fastest" } }),
            json!({ "rules": [rule(None, vec![path("/", "Prefix", backend("web", 80))])] }),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].is_rejection());
        assert_eq!(
            errors[0].field(),
            Some("metadata.annotations[sluice.dev/load-balance]")
        );
    }
}
