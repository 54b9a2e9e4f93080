//! Property tests of the compiler: the annotation parsers over arbitrary annotation maps,
//! and `compile` over random object sets. Each property lives in `properties/` and is
//! shared with the cargo-fuzz target of the same name in `fuzz/` (see docs/security.md);
//! here each runs on inputs that `arbitrary` builds from random bytes, few enough that
//! `cargo test` stays fast.

#[path = "properties/annotations.rs"]
mod annotations;
#[path = "properties/compile.rs"]
mod compile;
#[path = "properties/objects.rs"]
mod objects;

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;

/// Random bytes, as the fuzzer would hand them to a target.
fn fuzz_bytes(most: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..most)
}

/// The input `arbitrary` builds from `bytes`, when it can build one.
fn input<T: for<'a> Arbitrary<'a>>(bytes: &[u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn annotation_errors_name_the_annotation(bytes in fuzz_bytes(512)) {
        if let Some(annotations) = input(&bytes) {
            annotations::check(&annotations);
        }
    }

    #[test]
    fn compile_is_deterministic_and_its_routes_reachable(bytes in fuzz_bytes(4096)) {
        if let Some(objects) = input(&bytes) {
            compile::check(&objects);
        }
    }
}

/// One Ingress of ours routing `path` (Prefix) on shop.example to a Service that exists.
fn ingress_with_path(path: &str) -> sluice_controller::compile::ClusterObjects {
    use serde_json::json;
    use std::sync::Arc;
    sluice_controller::compile::ClusterObjects {
        ingresses: vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "shop", "name": "web"},
                "spec": {
                    "ingressClassName": "sluice",
                    "rules": [{"host": "shop.example", "http": {"paths": [{
                        "path": path,
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}},
                    }]}}],
                },
            }))
            .unwrap(),
        )],
        services: vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "shop", "name": "web"},
                "spec": {"ports": [{"port": 80}]},
            }))
            .unwrap(),
        )],
        ..Default::default()
    }
}

fn check_path(path: &str) {
    compile::check_generation(
        &ingress_with_path(path),
        &Default::default(),
        &Default::default(),
        0,
    );
}

#[test]
fn canonical_ingress_paths_are_reachable() {
    check_path("/");
    check_path("/api/");
    check_path("/a-b/c_d~e");
}

// Found by the compile fuzz target (docs/security.md, finding 3): the compiler stores
// Ingress paths as written, but requests are routed by their canonical path, so a route
// whose path is not canonical is never matched (or, for an encoded control character, can
// never be). Each fails until the compiler stores paths through `canonical_path` or
// refuses those it cannot.

#[test]
fn ingress_path_with_encoded_nul_is_not_a_dead_route() {
    check_path("/%00");
}

#[test]
fn ingress_path_with_encoded_unreserved_is_stored_decoded() {
    check_path("/%61pi");
}

#[test]
fn ingress_path_with_non_ascii_is_stored_encoded() {
    check_path("/café");
}

#[test]
fn ingress_path_with_lower_case_hex_is_stored_upper_case() {
    check_path("/a%2fb");
}
