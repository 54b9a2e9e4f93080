//! How an Ingress's routes talk to their backends: the protocol, and for TLS the name to
//! verify and the CA to verify against, read from a Secret in the Ingress's namespace.
//!
//! A CA Secret that is missing or holds no usable certificate is reported on the Ingress,
//! and its routes answer 503: connecting without the verification the Ingress asks for
//! would be worse than not connecting.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_dataplane::snapshot::{UpstreamSettings, UpstreamTls, UpstreamVerify};
use sluice_dataplane::upstream::parse_ca_bundle;

use super::annotations::{BACKEND_CA, UpstreamAnnotations, annotation_field};
use super::tls::{CA_KEY, SecretIndex, secret_bytes};
use crate::error::CompileError;

/// The certificates (DER) of `namespace/name`'s `ca.crt`.
fn ca_bundle(
    secrets: &SecretIndex<'_>,
    namespace: &str,
    name: &str,
) -> Result<Arc<[Vec<u8>]>, CompileError> {
    let field = annotation_field(BACKEND_CA);
    let Some(secret) = secrets.get(namespace, name) else {
        return Err(CompileError::BackendCaNotFound {
            field,
            secret: name.to_owned(),
        });
    };
    let invalid = |why: String| CompileError::InvalidBackendCa {
        field: field.clone(),
        secret: name.to_owned(),
        why,
    };
    let pem =
        secret_bytes(secret, CA_KEY).ok_or_else(|| invalid(format!("it has no key {CA_KEY}")))?;
    parse_ca_bundle(pem)
        .map(Arc::from)
        .map_err(|error| invalid(format!("{CA_KEY}: {error}")))
}

/// The upstream settings of one Ingress's routes, made once per Service: routes to the
/// same Service share one `Arc`.
#[derive(Debug)]
pub(crate) struct IngressUpstream {
    /// `None` when every annotation is at its default (plain HTTP/1.1).
    template: Option<UpstreamSettings>,
    /// Without `backend-sni`, each Service is verified under its own DNS name.
    sni_per_service: bool,
    namespace: String,
    made: BTreeMap<String, Arc<UpstreamSettings>>,
}

impl IngressUpstream {
    /// Resolves the CA Secret once; its problem, if any, goes to `errors`.
    pub fn new(
        annotations: &UpstreamAnnotations,
        namespace: &str,
        secrets: &SecretIndex<'_>,
        errors: &mut Vec<CompileError>,
    ) -> Self {
        let mut upstream = IngressUpstream {
            template: None,
            sni_per_service: false,
            namespace: namespace.to_owned(),
            made: BTreeMap::new(),
        };
        if *annotations == UpstreamAnnotations::default() {
            return upstream;
        }
        let mut unavailable = false;
        let tls = annotations.protocol.is_tls().then(|| {
            let verify = if annotations.verify_disabled {
                UpstreamVerify::Disabled
            } else if let Some(name) = &annotations.ca_secret {
                match ca_bundle(secrets, namespace, name) {
                    Ok(certificates) => UpstreamVerify::Ca(certificates),
                    Err(error) => {
                        errors.push(error);
                        unavailable = true;
                        // No roots: even a data plane that ignored `unavailable` could
                        // verify nobody.
                        UpstreamVerify::Ca(Arc::from(Vec::new()))
                    }
                }
            } else {
                UpstreamVerify::PublicRoots
            };
            UpstreamTls {
                server_name: annotations.sni.clone().unwrap_or_default(),
                verify,
            }
        });
        upstream.sni_per_service = tls.is_some() && annotations.sni.is_none();
        upstream.template = Some(UpstreamSettings {
            protocol: annotations.protocol,
            tls,
            websocket_idle_timeout: annotations.websocket_idle_timeout,
            unavailable,
        });
        upstream
    }

    /// The settings for routes to `service`.
    pub fn for_service(&mut self, service: &str) -> Option<Arc<UpstreamSettings>> {
        let template = self.template.as_ref()?;
        let key = if self.sni_per_service { service } else { "" };
        if let Some(made) = self.made.get(key) {
            return Some(Arc::clone(made));
        }
        let mut settings = template.clone();
        if let Some(tls) = settings.tls.as_mut().filter(|_| self.sni_per_service) {
            tls.server_name = format!("{service}.{}.svc", self.namespace);
        }
        let settings = Arc::new(settings);
        self.made.insert(key.to_owned(), Arc::clone(&settings));
        Some(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use sluice_dataplane::snapshot::BackendProtocol;

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn secret(name: &str, key: &str, value: &[u8]) -> Secret {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
        }))
        .unwrap();
        secret.data = Some([(key.to_owned(), ByteString(value.to_vec()))].into());
        secret
    }

    fn tls_annotations(ca: Option<&str>) -> UpstreamAnnotations {
        UpstreamAnnotations {
            protocol: BackendProtocol::Https,
            ca_secret: ca.map(str::to_owned),
            ..UpstreamAnnotations::default()
        }
    }

    #[test]
    fn plain_http_needs_no_settings() {
        let mut errors = Vec::new();
        let mut upstream = IngressUpstream::new(
            &UpstreamAnnotations::default(),
            "shop",
            &SecretIndex::default(),
            &mut errors,
        );
        assert_eq!(upstream.for_service("web"), None);
        assert!(errors.is_empty());
    }

    #[test]
    fn the_sni_defaults_to_each_services_dns_name_and_routes_share_settings() {
        let mut errors = Vec::new();
        let mut upstream = IngressUpstream::new(
            &tls_annotations(None),
            "shop",
            &SecretIndex::default(),
            &mut errors,
        );
        let web = upstream.for_service("web").unwrap();
        assert!(Arc::ptr_eq(&web, &upstream.for_service("web").unwrap()));
        let api = upstream.for_service("api").unwrap();
        let tls = |settings: &UpstreamSettings| settings.tls.clone().unwrap();
        assert_eq!(tls(&web).server_name, "web.shop.svc");
        assert_eq!(tls(&api).server_name, "api.shop.svc");
        assert_eq!(tls(&web).verify, UpstreamVerify::PublicRoots);
        assert!(!web.unavailable);

        let mut named = tls_annotations(None);
        named.sni = Some("backend.internal".into());
        let mut upstream =
            IngressUpstream::new(&named, "shop", &SecretIndex::default(), &mut errors);
        let web = upstream.for_service("web").unwrap();
        assert!(Arc::ptr_eq(&web, &upstream.for_service("api").unwrap()));
        assert_eq!(tls(&web).server_name, "backend.internal");
        assert!(errors.is_empty());
    }

    #[test]
    fn a_ca_secret_is_read_from_the_ingress_namespace() {
        let good = secret("ca", CA_KEY, ca_pem().as_bytes());
        let secrets = SecretIndex::new([&good]);
        let mut errors = Vec::new();
        let mut upstream =
            IngressUpstream::new(&tls_annotations(Some("ca")), "shop", &secrets, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let settings = upstream.for_service("web").unwrap();
        assert!(matches!(
            &settings.tls.as_ref().unwrap().verify,
            UpstreamVerify::Ca(certificates) if certificates.len() == 1
        ));

        // The same name in another namespace is not found.
        let mut errors = Vec::new();
        let mut upstream =
            IngressUpstream::new(&tls_annotations(Some("ca")), "other", &secrets, &mut errors);
        assert!(upstream.for_service("web").unwrap().unavailable);
        assert_eq!(errors[0].reason(), "BackendCANotFound");
        assert_eq!(
            errors[0].field(),
            Some("metadata.annotations[sluice.dev/backend-ca]")
        );
    }

    #[test]
    fn a_bad_ca_secret_makes_the_routes_unavailable_with_the_reason() {
        let cases = [
            (
                secret("ca", "tls.crt", ca_pem().as_bytes()),
                "no key ca.crt",
            ),
            (secret("ca", CA_KEY, b"not pem"), "no CERTIFICATE block"),
            (
                secret(
                    "ca",
                    CA_KEY,
                    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                "certificate 0",
            ),
        ];
        for (bad, why) in cases {
            let secrets = SecretIndex::new([&bad]);
            let mut errors = Vec::new();
            let mut upstream =
                IngressUpstream::new(&tls_annotations(Some("ca")), "shop", &secrets, &mut errors);
            let settings = upstream.for_service("web").unwrap();
            assert!(settings.unavailable, "{why}");
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].reason(), "InvalidBackendCA");
            assert!(!errors[0].is_rejection());
            assert!(errors[0].to_string().contains(why), "{}", errors[0]);
        }
    }

    #[test]
    fn string_data_is_read_for_hand_written_secrets() {
        let mut written = secret("ca", "unused", b"");
        written.data = None;
        written.string_data = Some([(CA_KEY.to_owned(), ca_pem())].into());
        let secrets = SecretIndex::new([&written]);
        let mut errors = Vec::new();
        IngressUpstream::new(&tls_annotations(Some("ca")), "shop", &secrets, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
