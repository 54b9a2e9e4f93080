//! `compile` over random object sets, shared by the `compile` fuzz target and the in-tree
//! property test.
//!
//! Properties: `compile` does not panic; it is deterministic (the same objects twice, and
//! in another order, give equal results, also when the last good state of an earlier set
//! is passed in); and what it hands the data plane can be reached: every route's host is
//! a canonical host, every path a canonical path, and every route's backend is in the
//! backend table.

use std::sync::Arc;

use arbitrary::Arbitrary;
use sluice_controller::compile::{ClusterObjects, CompileOptions, Compiled, LastGood, compile};
use sluice_controller::object_key::ObjectKey;
use sluice_dataplane::canonical::{canonical_authority, canonical_path};
use sluice_dataplane::snapshot::ObjectRef;

use super::objects::ObjectsInput;

/// Two generations of objects: the second compiled with the first's last good state.
#[derive(Debug, Clone, Arbitrary)]
pub struct CompileInput {
    pub before: ObjectsInput,
    pub after: ObjectsInput,
    pub shuffle: u16,
    pub redis_configured: bool,
    pub default_certificate: Option<u8>,
}

/// The fuzz and property entry point.
pub fn check(input: &CompileInput) {
    let options = CompileOptions {
        redis_configured: input.redis_configured,
        default_certificate: input
            .default_certificate
            .map(|n| ObjectRef::new("shop", ["tls", "tls-wild", "missing"][usize::from(n) % 3])),
        ..CompileOptions::default()
    };
    let before = input.before.build();
    let after = input.after.build();
    let first = check_generation(&before, &LastGood::default(), &options, input.shuffle);
    check_generation(&after, &first.last_good, &options, input.shuffle);
}

/// Compiles `objects` three ways (twice, and shuffled) and checks the result.
pub fn check_generation(
    objects: &ClusterObjects,
    last_good: &LastGood,
    options: &CompileOptions,
    shuffle: u16,
) -> Compiled {
    let compiled = compile(objects, last_good, options);
    let again = compile(objects, last_good, options);
    assert_eq!(compiled, again, "the same objects compiled differently");
    let shuffled = compile(&shuffled(objects, shuffle), last_good, options);
    assert_eq!(
        compiled, shuffled,
        "the same objects in another order compiled differently"
    );
    check_reachable(&compiled);
    compiled
}

/// Every route can be reached by a request in canonical form, and has its backend.
fn check_reachable(compiled: &Compiled) {
    let routes = &compiled.snapshot_routes;
    for host in routes
        .exact_hosts
        .keys()
        .chain(routes.wildcard_hosts.keys())
    {
        let canonical = canonical_authority(host).map(|a| a.host.into_owned());
        assert_eq!(
            canonical.as_deref(),
            Ok(host.as_str()),
            "route host {host:?} is not what a request's host becomes"
        );
    }
    let hosts = routes
        .exact_hosts
        .values()
        .chain(routes.wildcard_hosts.values())
        .chain(std::iter::once(&routes.any_host));
    for host in hosts {
        for path in host.exact_paths.keys().chain(host.prefix_paths.keys()) {
            assert_eq!(
                canonical_path(path).as_deref(),
                Ok(path.as_str()),
                "route path {path:?} of {:?} is not what a request's path becomes",
                host.name
            );
        }
        for path in host.prefix_paths.keys() {
            assert!(
                path == "/" || !path.ends_with('/'),
                "prefix {path:?} is stored with a trailing slash and never matches"
            );
        }
    }
    for target in routes.targets() {
        assert!(
            compiled.backends.backends.contains_key(&target.backend),
            "route backend {} is not in the backend table",
            target.backend
        );
    }
    for ingress in &compiled.accepted_ingresses {
        assert!(
            compiled.statuses.contains_key(&ObjectKey::ingress(ingress)),
            "accepted Ingress {ingress} has no status"
        );
    }
}

/// The same objects in another order: each list rotated and reversed.
fn shuffled(objects: &ClusterObjects, seed: u16) -> ClusterObjects {
    fn mix<T>(list: &[Arc<T>], seed: u16) -> Vec<Arc<T>> {
        let mut list = list.to_vec();
        if !list.is_empty() {
            let len = list.len();
            list.rotate_left(usize::from(seed) % len);
        }
        if seed & 1 == 0 {
            list.reverse();
        }
        list
    }
    ClusterObjects {
        ingresses: mix(&objects.ingresses, seed),
        ingress_classes: mix(&objects.ingress_classes, seed),
        services: mix(&objects.services, seed),
        endpoint_slices: mix(&objects.endpoint_slices, seed),
        secrets: mix(&objects.secrets, seed),
        rate_limits: mix(&objects.rate_limits, seed),
        auths: mix(&objects.auths, seed),
        caches: mix(&objects.caches, seed),
    }
}
