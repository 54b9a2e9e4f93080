//! The `sluice.dev/*` annotation parsers over arbitrary annotation maps, shared by the
//! `annotations` fuzz target and the in-tree property test.
//!
//! The parsers are reached the way the controller reaches them: an Ingress of ours (one
//! rule, one path, a Service that exists) and an EndpointSlice carry the map, next to the
//! policies and Secrets good values name, and `compile` reads them. Properties: nothing
//! panics; every error about an annotation names one the object has (or the hash key that
//! `load-balance: hash` lacks); an Ingress rejected
//! as a whole is rejected for an annotation; one without `sluice.dev/*` annotations has no
//! annotation errors at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use serde_json::{Value, json};
use sluice_controller::compile::{ClusterObjects, CompileOptions, LastGood, compile};
use sluice_controller::object_key::{ObjectKey, ObjectKind};
use sluice_dataplane::snapshot::ObjectRef;

use super::objects::{ANNOTATION_WORDS, ANNOTATIONS, Pick, Words};

#[derive(Debug, Clone, Arbitrary)]
pub struct AnnotationsInput {
    pub ingress: Vec<(Pick, Words)>,
    pub endpoint_weights: Option<Words>,
}

/// The fuzz and property entry point.
pub fn check(input: &AnnotationsInput) {
    let annotations: BTreeMap<String, String> = input
        .ingress
        .iter()
        .map(|(name, value)| {
            (
                name.from(ANNOTATIONS).to_owned(),
                value.render(ANNOTATION_WORDS),
            )
        })
        .collect();
    let weights = input
        .endpoint_weights
        .as_ref()
        .map(|words| words.render(ANNOTATION_WORDS));
    check_annotations(&annotations, weights.as_deref());
}

/// Compiles an Ingress with `annotations` (and a slice with `weights`) and checks the
/// errors reported for them.
pub fn check_annotations(annotations: &BTreeMap<String, String>, weights: Option<&str>) {
    let objects = objects(annotations, weights);
    let compiled = compile(&objects, &LastGood::default(), &CompileOptions::default());
    let ingress = ObjectKey::ingress(&ObjectRef::new("shop", "web"));
    let errors = compiled
        .statuses
        .get(&ingress)
        .expect("an Ingress of ours has a status");
    let named = |field: &str, keys: &dyn Fn(&str) -> bool| {
        if let Some(rest) = field.strip_prefix("metadata.annotations[") {
            let name = rest.split(']').next().unwrap_or_default();
            assert!(
                keys(name),
                "an error names annotation {name:?}, which the object does not have: {field}"
            );
        }
    };
    for error in errors {
        let field = error.field().unwrap_or_default();
        // `load-balance: hash` without a hash key names the annotation that is missing.
        named(field, &|name| {
            annotations.contains_key(name)
                || (name == "sluice.dev/hash-key"
                    && annotations.contains_key("sluice.dev/load-balance"))
        });
        if error.is_rejection() {
            assert!(
                field.starts_with("metadata.annotations["),
                "rejected for something else than an annotation: {error}"
            );
        }
    }
    let ours = annotations.keys().any(|key| key.starts_with("sluice.dev/"));
    if !ours {
        assert!(
            errors.iter().all(|e| !e
                .field()
                .unwrap_or_default()
                .starts_with("metadata.annotations")),
            "annotation errors without sluice.dev annotations: {errors:?}"
        );
    }
    let rejected = errors.iter().any(|error| error.is_rejection());
    assert_eq!(
        compiled
            .accepted_ingresses
            .contains(&ObjectRef::new("shop", "web")),
        !rejected,
        "accepted and rejected disagree: {errors:?}"
    );
    let slice = ObjectKey::new(ObjectKind::EndpointSlice, "shop", "web-1");
    for error in compiled.statuses.get(&slice).into_iter().flatten() {
        let field = error.field().unwrap_or_default();
        named(field, &|name| {
            name == "sluice.dev/endpoint-weights" && weights.is_some()
        });
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn objects(annotations: &BTreeMap<String, String>, weights: Option<&str>) -> ClusterObjects {
    let policy = |kind: &str, name: &str, spec: Value| {
        json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": kind,
            "metadata": {"namespace": "shop", "name": name},
            "spec": spec,
        })
    };
    let mut slice_meta = json!({
        "namespace": "shop",
        "name": "web-1",
        "labels": {"kubernetes.io/service-name": "web"},
    });
    if let Some(weights) = weights {
        slice_meta["annotations"] = json!({"sluice.dev/endpoint-weights": weights});
    }
    ClusterObjects {
        ingresses: vec![Arc::new(parse(json!({
            "metadata": {"namespace": "shop", "name": "web", "annotations": annotations},
            "spec": {
                "ingressClassName": "sluice",
                "rules": [{"host": "shop.example", "http": {"paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}},
                }]}}],
            },
        })))],
        services: vec![Arc::new(parse(json!({
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        })))],
        endpoint_slices: vec![Arc::new(parse(json!({
            "metadata": slice_meta,
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.1", "10.0.0.2"], "conditions": {"ready": true}}],
        })))],
        rate_limits: vec![Arc::new(parse(policy(
            "RateLimit",
            "limits",
            json!({"limits": [{"requests": 10, "period": "1s"}]}),
        )))],
        auths: vec![Arc::new(parse(policy(
            "Auth",
            "guard",
            json!({"ipAllow": ["10.0.0.0/8"]}),
        )))],
        caches: vec![Arc::new(parse(policy("Cache", "store", json!({}))))],
        ..ClusterObjects::default()
    }
}
