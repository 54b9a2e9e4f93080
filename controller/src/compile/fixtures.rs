//! Small builders of Kubernetes objects for the compiler's tests.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};

/// A `sluice.dev/v1alpha1` policy of `kind` (RateLimit, Auth, Cache) named `name` in
/// namespace shop.
pub fn policy<T: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> T {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    }))
    .expect("a policy the CRD types accept")
}

/// An Ingress; `metadata` is merged over the namespace and name.
pub fn ingress(namespace: &str, name: &str, metadata: Value, spec: Value) -> Ingress {
    let mut meta = json!({ "namespace": namespace, "name": name });
    if let (Some(meta), Value::Object(extra)) = (meta.as_object_mut(), metadata) {
        meta.extend(extra);
    }
    serde_json::from_value(json!({ "metadata": meta, "spec": spec })).unwrap()
}

/// An IngressClass for `controller`, perhaps marked as the default class.
pub fn ingress_class(name: &str, controller: &str, default: bool) -> IngressClass {
    let annotations = if default {
        json!({ "ingressclass.kubernetes.io/is-default-class": "true" })
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": { "controller": controller },
    }))
    .unwrap()
}

/// A ClusterIP Service with `(name, port)` ports.
pub fn service(namespace: &str, name: &str, ports: &[(Option<&str>, i32)]) -> Service {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port)| match name {
            Some(name) => json!({ "name": name, "port": port }),
            None => json!({ "port": port }),
        })
        .collect();
    service_with(namespace, name, json!({ "ports": ports }))
}

/// A Service with the given spec.
pub fn service_with(namespace: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": { "namespace": namespace, "name": name },
        "spec": spec,
    }))
    .unwrap()
}

/// An EndpointSlice of `service` with `(name, port)` ports and the given endpoints.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    address_type: &str,
    ports: &[(Option<&str>, i32)],
    endpoints: Vec<Value>,
) -> EndpointSlice {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port)| match name {
            Some(name) => json!({ "name": name, "port": port, "protocol": "TCP" }),
            None => json!({ "port": port, "protocol": "TCP" }),
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// An Ingress service backend; a string port is a port name, a number a port number.
pub fn backend(service: &str, port: impl Into<Value>) -> Value {
    let port = match port.into() {
        Value::String(name) => json!({ "name": name }),
        number => json!({ "number": number }),
    };
    json!({ "service": { "name": service, "port": port } })
}

/// One `HTTPIngressPath`.
pub fn path(path: &str, path_type: &str, backend: Value) -> Value {
    json!({ "path": path, "pathType": path_type, "backend": backend })
}

/// One rule with an http block.
pub fn rule(host: Option<&str>, paths: Vec<Value>) -> Value {
    match host {
        Some(host) => json!({ "host": host, "http": { "paths": paths } }),
        None => json!({ "http": { "paths": paths } }),
    }
}
