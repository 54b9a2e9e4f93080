//! Resolving an Ingress backend to a Service port.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::networking::v1::IngressBackend;
use sluice_dataplane::snapshot::BackendKey;

use crate::error::CompileError;
use crate::object_key::namespace_of;

/// Services by namespace and name.
#[derive(Debug, Default)]
pub(crate) struct ServiceIndex<'a> {
    services: BTreeMap<(&'a str, &'a str), &'a Service>,
}

impl<'a> ServiceIndex<'a> {
    /// Indexes the Services. Keys are unique in anything a source hands in; should two
    /// objects share one anyway, the first wins.
    pub fn new(services: impl IntoIterator<Item = &'a Service>) -> Self {
        let mut index = BTreeMap::new();
        for service in services {
            let name = service.metadata.name.as_deref().unwrap_or_default();
            index
                .entry((namespace_of(&service.metadata), name))
                .or_insert(service);
        }
        ServiceIndex { services: index }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(&(namespace, name)).copied()
    }
}

/// A backend that resolved to a Service port, perhaps with a warning about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedBackend {
    pub key: BackendKey,
    /// Set when the route is kept although it cannot work yet (a missing Service).
    pub warning: Option<CompileError>,
}

/// How the backend names its Service port.
enum PortRef<'a> {
    Name(&'a str),
    Number(u16),
}

/// Resolves `backend` of an Ingress in `namespace`; `field` is the backend's field path,
/// such as `spec.rules[0].http.paths[1].backend` or `spec.defaultBackend`.
pub(crate) fn resolve_backend(
    backend: &IngressBackend,
    namespace: &str,
    field: &str,
    services: &ServiceIndex<'_>,
) -> Result<ResolvedBackend, CompileError> {
    if backend.resource.is_some() {
        return Err(CompileError::UnsupportedBackend {
            field: format!("{field}.resource"),
            why: "resource backends are not supported; use backend.service".to_owned(),
        });
    }
    let Some(service_backend) = backend.service.as_ref() else {
        return Err(CompileError::InvalidBackend {
            field: field.to_owned(),
            why: "the backend names no service".to_owned(),
        });
    };
    let service_name = service_backend.name.as_str();
    if service_name.is_empty() {
        return Err(CompileError::InvalidBackend {
            field: format!("{field}.service.name"),
            why: "the service name is empty".to_owned(),
        });
    }
    let port_field = format!("{field}.service.port");
    let port = match service_backend.port.as_ref() {
        Some(port) => match (port.name.as_deref(), port.number) {
            (Some(name), None) if !name.is_empty() => PortRef::Name(name),
            (None, Some(number)) => match u16::try_from(number) {
                Ok(number) if number != 0 => PortRef::Number(number),
                _ => {
                    return Err(CompileError::InvalidBackend {
                        field: format!("{port_field}.number"),
                        why: format!("port number {number} is not between 1 and 65535"),
                    });
                }
            },
            _ => {
                return Err(CompileError::InvalidBackend {
                    field: port_field,
                    why: "the port needs exactly one of name and number".to_owned(),
                });
            }
        },
        None => {
            return Err(CompileError::InvalidBackend {
                field: port_field,
                why: "the service backend names no port".to_owned(),
            });
        }
    };

    let qualified = format!("{namespace}/{service_name}");
    let Some(service) = services.get(namespace, service_name) else {
        return match port {
            // The key does not depend on the Service, so the route can stay and start
            // working as soon as the Service and its endpoints appear.
            PortRef::Number(number) => Ok(ResolvedBackend {
                key: backend_key(namespace, service_name, number),
                warning: Some(CompileError::ServiceNotFound {
                    field: format!("{field}.service.name"),
                    service: qualified,
                    route_kept: true,
                }),
            }),
            PortRef::Name(_) => Err(CompileError::ServiceNotFound {
                field: format!("{field}.service.name"),
                service: qualified,
                route_kept: false,
            }),
        };
    };
    let spec = service.spec.as_ref();
    if spec.and_then(|spec| spec.type_.as_deref()) == Some("ExternalName") {
        return Err(CompileError::UnsupportedBackend {
            field: format!("{field}.service.name"),
            why: format!("Service {qualified} is of type ExternalName, which is not supported yet"),
        });
    }
    let ports = spec
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let (found, port_field, written) = match port {
        PortRef::Name(name) => (
            ports
                .iter()
                .find(|candidate| candidate.name.as_deref() == Some(name))
                .and_then(|candidate| u16::try_from(candidate.port).ok()),
            format!("{port_field}.name"),
            name.to_owned(),
        ),
        PortRef::Number(number) => (
            service_port_by_number(ports, number).map(|_| number),
            format!("{port_field}.number"),
            number.to_string(),
        ),
    };
    match found {
        Some(number) if number != 0 => Ok(ResolvedBackend {
            key: backend_key(namespace, service_name, number),
            warning: None,
        }),
        _ => Err(CompileError::BackendPortNotFound {
            field: port_field,
            service: qualified,
            port: written,
        }),
    }
}

/// The Service port with this number. A number can appear twice, once per protocol (DNS
/// on 53 is the usual case); an HTTP proxy wants the TCP one.
pub(crate) fn service_port_by_number(ports: &[ServicePort], number: u16) -> Option<&ServicePort> {
    let mut matching = ports
        .iter()
        .filter(|candidate| candidate.port == i32::from(number));
    let first = matching.clone().next();
    matching
        .find(|candidate| matches!(candidate.protocol.as_deref(), None | Some("TCP")))
        .or(first)
}

fn backend_key(namespace: &str, service: &str, port: u16) -> BackendKey {
    BackendKey {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::{backend, service, service_with};
    use serde_json::json;

    const FIELD: &str = "spec.rules[0].http.paths[1].backend";

    fn resolve(
        backend: serde_json::Value,
        services: &[Service],
    ) -> Result<ResolvedBackend, CompileError> {
        let backend: IngressBackend = serde_json::from_value(backend).unwrap();
        resolve_backend(&backend, "shop", FIELD, &ServiceIndex::new(services))
    }

    fn key(service: &str, port: u16) -> BackendKey {
        backend_key("shop", service, port)
    }

    fn web() -> Service {
        service("shop", "web", &[(Some("http"), 80), (Some("admin"), 9000)])
    }

    #[test]
    fn port_by_name_resolves_to_the_service_port_number() {
        let resolved = resolve(backend("web", "http"), &[web()]).unwrap();
        assert_eq!(
            resolved,
            ResolvedBackend {
                key: key("web", 80),
                warning: None
            }
        );
        let admin = resolve(backend("web", "admin"), &[web()]).unwrap();
        assert_eq!(admin.key, key("web", 9000));
    }

    #[test]
    fn port_by_number_resolves_to_the_service_port_with_that_port() {
        let resolved = resolve(backend("web", 9000), &[web()]).unwrap();
        assert_eq!(
            resolved,
            ResolvedBackend {
                key: key("web", 9000),
                warning: None
            }
        );
    }

    #[test]
    fn missing_port_name_is_backend_port_not_found() {
        let error = resolve(backend("web", "grpc"), &[web()]).unwrap_err();
        assert_eq!(
            error,
            CompileError::BackendPortNotFound {
                field: format!("{FIELD}.service.port.name"),
                service: "shop/web".into(),
                port: "grpc".into(),
            }
        );
    }

    #[test]
    fn missing_port_number_is_backend_port_not_found() {
        let error = resolve(backend("web", 8080), &[web()]).unwrap_err();
        assert_eq!(
            error,
            CompileError::BackendPortNotFound {
                field: format!("{FIELD}.service.port.number"),
                service: "shop/web".into(),
                port: "8080".into(),
            }
        );
    }

    #[test]
    fn missing_service_keeps_a_route_given_by_number() {
        let resolved = resolve(backend("gone", 8080), &[web()]).unwrap();
        assert_eq!(resolved.key, key("gone", 8080));
        assert_eq!(
            resolved.warning,
            Some(CompileError::ServiceNotFound {
                field: format!("{FIELD}.service.name"),
                service: "shop/gone".into(),
                route_kept: true,
            })
        );
    }

    #[test]
    fn missing_service_drops_a_route_given_by_name() {
        let error = resolve(backend("gone", "http"), &[web()]).unwrap_err();
        assert_eq!(
            error,
            CompileError::ServiceNotFound {
                field: format!("{FIELD}.service.name"),
                service: "shop/gone".into(),
                route_kept: false,
            }
        );
    }

    #[test]
    fn services_in_other_namespaces_do_not_count() {
        let elsewhere = service("other", "web", &[(Some("http"), 80)]);
        let error = resolve(backend("web", "http"), &[elsewhere]).unwrap_err();
        assert_eq!(error.reason(), "ServiceNotFound");
    }

    #[test]
    fn external_name_service_is_unsupported() {
        let external = service_with(
            "shop",
            "web",
            json!({ "type": "ExternalName", "externalName": "example.com", "ports": [{ "port": 80 }] }),
        );
        match resolve(backend("web", 80), &[external]).unwrap_err() {
            CompileError::UnsupportedBackend { field, why } => {
                assert_eq!(field, format!("{FIELD}.service.name"));
                assert!(why.contains("ExternalName"), "{why}");
            }
            other => panic!("expected UnsupportedBackend, got {other:?}"),
        }
    }

    #[test]
    fn resource_backend_is_unsupported() {
        let error = resolve(
            json!({ "resource": { "apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b" } }),
            &[web()],
        )
        .unwrap_err();
        assert_eq!(error.reason(), "UnsupportedBackend");
        assert_eq!(error.field(), Some(format!("{FIELD}.resource").as_str()));
    }

    #[test]
    fn malformed_ports_are_invalid_backends() {
        let cases = [
            (
                json!({ "service": { "name": "web" } }),
                format!("{FIELD}.service.port"),
            ),
            (
                json!({ "service": { "name": "web", "port": { "name": "http", "number": 80 } } }),
                format!("{FIELD}.service.port"),
            ),
            (
                json!({ "service": { "name": "web", "port": { "number": 70000 } } }),
                format!("{FIELD}.service.port.number"),
            ),
            (
                json!({ "service": { "name": "web", "port": { "number": 0 } } }),
                format!("{FIELD}.service.port.number"),
            ),
            (json!({}), FIELD.to_owned()),
        ];
        for (value, field) in cases {
            match resolve(value.clone(), &[web()]).unwrap_err() {
                CompileError::InvalidBackend { field: got, .. } => {
                    assert_eq!(got, field, "{value}")
                }
                other => panic!("{value}: expected InvalidBackend, got {other:?}"),
            }
        }
    }

    #[test]
    fn port_number_shared_by_two_protocols_prefers_tcp() {
        let dns = service_with(
            "shop",
            "dns",
            json!({ "ports": [
                { "name": "udp", "port": 53, "protocol": "UDP" },
                { "name": "tcp", "port": 53, "protocol": "TCP" },
            ] }),
        );
        let ports = dns.spec.as_ref().unwrap().ports.as_deref().unwrap();
        assert_eq!(
            service_port_by_number(ports, 53).unwrap().name.as_deref(),
            Some("tcp")
        );
        assert_eq!(
            service_port_by_number(&ports[..1], 53)
                .unwrap()
                .name
                .as_deref(),
            Some("udp")
        );
        assert!(service_port_by_number(ports, 54).is_none());
    }
}
