//! Server certificates and client CAs from Secrets, and the per-host TLS table.
//!
//! An Ingress's `spec.tls` names a Secret (same namespace) for some hosts. The oldest
//! Ingress to claim a host gives it its certificate. A Secret that stops parsing keeps its
//! last good certificate serving (the caller passes it back in); a deleted Secret does not,
//! since deleting one is how a certificate is withdrawn.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use sluice_dataplane::snapshot::{ClientCa, ObjectRef, ServerCertificate, TlsSite, TlsTable};
use sluice_dataplane::tls::{CertificateError, certificate_fingerprint};

use super::host::{HostRule, compile_host};
use crate::error::CompileError;
use crate::object_key::namespace_of;

/// The Secret keys of a `kubernetes.io/tls` Secret, and of a CA bundle.
const CERT_KEY: &str = "tls.crt";
const PRIVATE_KEY_KEY: &str = "tls.key";
pub(crate) const CA_KEY: &str = "ca.crt";

/// Secrets by namespace and name.
#[derive(Debug, Default)]
pub(crate) struct SecretIndex<'a> {
    by_name: HashMap<(&'a str, &'a str), &'a Secret>,
}

impl<'a> SecretIndex<'a> {
    pub fn new(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let by_name = secrets
            .into_iter()
            .filter_map(|secret| {
                let name = secret.metadata.name.as_deref()?;
                Some(((namespace_of(&secret.metadata), name), secret))
            })
            .collect();
        SecretIndex { by_name }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.by_name.get(&(namespace, name)).copied()
    }

    /// A CA bundle for client certificates, from `ca.crt` of a Secret in `namespace`.
    pub fn client_ca(&self, namespace: &str, name: &str) -> Result<Arc<ClientCa>, String> {
        let secret = self
            .get(namespace, name)
            .ok_or_else(|| "it does not exist in this namespace".to_owned())?;
        let bundle = secret_bytes(secret, CA_KEY).ok_or_else(|| format!("it has no {CA_KEY}"))?;
        ClientCa::from_pem(ObjectRef::new(namespace, name), bundle)
            .map(Arc::new)
            .map_err(|error| error.to_string())
    }
}

/// One key of a Secret: `data` as the API server keeps it, or `stringData` as a file may
/// give it.
pub(crate) fn secret_bytes<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    if let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key)) {
        return Some(bytes.0.as_slice());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(String::as_bytes)
}

/// What one Ingress asks of the TLS table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct IngressTls {
    pub entries: Vec<TlsEntry>,
    /// From `sluice.dev/client-ca`, when it resolved.
    pub client_ca: Option<Arc<ClientCa>>,
}

/// One `spec.tls[i]` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsEntry {
    pub hosts: Vec<HostRule>,
    /// `None`: the hosts are HTTPS hosts with the default certificate.
    pub secret: Option<String>,
    pub field: String,
}

/// Reads `spec.tls`. Hosts that are not valid names are reported and left out; an item
/// without hosts covers the hosts of the Ingress's rules.
pub(crate) fn ingress_tls_entries(
    ingress: &Ingress,
    errors: &mut Vec<CompileError>,
) -> Vec<TlsEntry> {
    let Some(spec) = ingress.spec.as_ref() else {
        return Vec::new();
    };
    let rule_hosts = || -> Vec<HostRule> {
        let mut hosts: Vec<HostRule> = spec
            .rules
            .iter()
            .flatten()
            .filter_map(|rule| compile_host(rule.host.as_deref(), "").ok())
            .filter(|host| *host != HostRule::Any)
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    };
    let mut entries = Vec::new();
    for (index, item) in spec.tls.iter().flatten().enumerate() {
        let field = format!("spec.tls[{index}]");
        let hosts = match item.hosts.as_ref().filter(|hosts| !hosts.is_empty()) {
            None => rule_hosts(),
            Some(written) => written
                .iter()
                .enumerate()
                .filter_map(|(host_index, host)| {
                    match compile_host(Some(host), &format!("{field}.hosts[{host_index}]")) {
                        Ok(HostRule::Any) => None,
                        Ok(rule) => Some(rule),
                        Err(error) => {
                            errors.push(error);
                            None
                        }
                    }
                })
                .collect(),
        };
        let secret = item
            .secret_name
            .as_ref()
            .filter(|name| !name.is_empty())
            .cloned();
        entries.push(TlsEntry {
            hosts,
            secret,
            field,
        });
    }
    entries
}

/// Builds the TLS table, Ingress by Ingress (oldest first).
#[derive(Debug)]
pub(crate) struct TlsTableBuilder<'a> {
    secrets: &'a SecretIndex<'a>,
    last_good: &'a BTreeMap<ObjectRef, Arc<ServerCertificate>>,
    table: TlsTable,
    /// Which Ingress gave each host its site.
    owners: BTreeMap<HostRule, ObjectRef>,
    /// Certificates loaded in this compile, by Secret.
    loaded: BTreeMap<ObjectRef, Result<Arc<ServerCertificate>, LoadFailure>>,
}

#[derive(Debug, Clone)]
enum LoadFailure {
    Missing,
    Invalid {
        why: String,
        last_good: Option<Arc<ServerCertificate>>,
    },
}

impl<'a> TlsTableBuilder<'a> {
    pub fn new(
        secrets: &'a SecretIndex<'a>,
        last_good: &'a BTreeMap<ObjectRef, Arc<ServerCertificate>>,
    ) -> Self {
        TlsTableBuilder {
            secrets,
            last_good,
            table: TlsTable::default(),
            owners: BTreeMap::new(),
            loaded: BTreeMap::new(),
        }
    }

    /// Sets `--default-ssl-certificate`; problems are returned for the Secret's status.
    pub fn set_default(&mut self, secret: &ObjectRef) -> Vec<CompileError> {
        let field = "tls.crt".to_owned();
        match self.certificate(secret) {
            Ok(certificate) => {
                self.table.default = Some(certificate);
                Vec::new()
            }
            Err(failure) => {
                let (error, serving) = failure_error(failure, &field, &secret.name);
                self.table.default = serving;
                vec![error]
            }
        }
    }

    /// Adds one Ingress's hosts; problems go to `errors` (they never reject the Ingress).
    pub fn add(&mut self, owner: &ObjectRef, tls: &IngressTls, errors: &mut Vec<CompileError>) {
        for entry in &tls.entries {
            let Some(secret_name) = &entry.secret else {
                continue;
            };
            let secret = ObjectRef::new(owner.namespace.as_str(), secret_name.as_str());
            let certificate = match self.certificate(&secret) {
                Ok(certificate) => certificate,
                Err(failure) => {
                    let (error, serving) = failure_error(failure, &entry.field, secret_name);
                    errors.push(error);
                    match serving {
                        Some(certificate) => certificate,
                        None => continue,
                    }
                }
            };
            for host in &entry.hosts {
                let site = TlsSite {
                    certificate: Arc::clone(&certificate),
                    client_ca: tls.client_ca.clone(),
                };
                self.claim(owner, host, site, &entry.field, errors);
            }
        }
    }

    fn claim(
        &mut self,
        owner: &ObjectRef,
        host: &HostRule,
        site: TlsSite,
        field: &str,
        errors: &mut Vec<CompileError>,
    ) {
        let (map, key) = match host {
            HostRule::Exact(name) => (&mut self.table.exact, name),
            HostRule::Wildcard(suffix) => (&mut self.table.wildcard, suffix),
            HostRule::Any => return,
        };
        if let Some(existing) = map.get(key) {
            let winner = self.owners.get(host);
            let same = *existing == site;
            if !same && let Some(winner) = winner.filter(|winner| *winner != owner) {
                errors.push(CompileError::TlsHostConflict {
                    field: field.to_owned(),
                    host: host.name(),
                    winner: winner.clone(),
                });
            }
            return;
        }
        let name = host.name();
        if !site.certificate.covers(&name) {
            errors.push(CompileError::CertificateHostMismatch {
                field: field.to_owned(),
                host: name,
                secret: site.certificate.source.name.clone(),
            });
        }
        map.insert(key.clone(), site);
        self.owners.insert(host.clone(), owner.clone());
    }

    /// The certificate of a Secret: reused from the last compile when its bytes did not
    /// change, parsed otherwise.
    fn certificate(&mut self, secret: &ObjectRef) -> Result<Arc<ServerCertificate>, LoadFailure> {
        if let Some(loaded) = self.loaded.get(secret) {
            return loaded.clone();
        }
        let loaded = self.load(secret);
        self.loaded.insert(secret.clone(), loaded.clone());
        loaded
    }

    fn load(&self, secret_ref: &ObjectRef) -> Result<Arc<ServerCertificate>, LoadFailure> {
        let secret = self
            .secrets
            .get(&secret_ref.namespace, &secret_ref.name)
            .ok_or(LoadFailure::Missing)?;
        let previous = self.last_good.get(secret_ref);
        let invalid = |why: String| LoadFailure::Invalid {
            why,
            last_good: previous.cloned(),
        };
        let (Some(cert), Some(key)) = (
            secret_bytes(secret, CERT_KEY),
            secret_bytes(secret, PRIVATE_KEY_KEY),
        ) else {
            return Err(invalid(format!(
                "it needs both {CERT_KEY} and {PRIVATE_KEY_KEY}"
            )));
        };
        if let Some(previous) = previous
            && previous.fingerprint == certificate_fingerprint(cert, key)
        {
            return Ok(Arc::clone(previous));
        }
        ServerCertificate::from_pem(secret_ref.clone(), cert, key)
            .map(Arc::new)
            .map_err(|error| match error {
                // The PEM reader's detail can quote the private key (a bad base64 symbol).
                CertificateError::BadKey(_) => {
                    invalid(format!("{PRIVATE_KEY_KEY} holds no usable PEM private key"))
                }
                other => invalid(other.to_string()),
            })
    }

    /// The table, and the certificates to pass back as the next compile's last good.
    pub fn finish(mut self) -> (TlsTable, BTreeMap<ObjectRef, Arc<ServerCertificate>>) {
        let any_client_ca = self.table.sites().any(|(_, site)| site.client_ca.is_some());
        self.table.any_client_ca = any_client_ca;
        let mut last_good = BTreeMap::new();
        for (secret, loaded) in self.loaded {
            let kept = match loaded {
                Ok(certificate) => Some(certificate),
                Err(LoadFailure::Invalid { last_good, .. }) => last_good,
                Err(LoadFailure::Missing) => None,
            };
            if let Some(certificate) = kept {
                last_good.insert(secret, certificate);
            }
        }
        (self.table, last_good)
    }
}

/// The error for a Secret that could not be loaded, and the certificate to serve anyway.
fn failure_error(
    failure: LoadFailure,
    field: &str,
    secret: &str,
) -> (CompileError, Option<Arc<ServerCertificate>>) {
    match failure {
        LoadFailure::Missing => (
            CompileError::TlsSecretNotFound {
                field: field.to_owned(),
                secret: secret.to_owned(),
            },
            None,
        ),
        LoadFailure::Invalid { why, last_good } => (
            CompileError::InvalidTlsSecret {
                field: field.to_owned(),
                secret: secret.to_owned(),
                why,
                serving_last_good: last_good.is_some(),
            },
            last_good,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{backend, ingress, path, rule, service};
    use super::super::{ClusterObjects, CompileOptions, Compiled, LastGood, compile};
    use super::*;
    use crate::object_key::{ObjectKey, ObjectKind};
    use serde_json::{Value, json};
    use sluice_dataplane::snapshot::{ClientCaRequirement, RouteTarget};

    struct Pair {
        cert: String,
        key: String,
    }

    fn issue(names: &[&str]) -> Pair {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        Pair {
            cert: generated.cert.pem(),
            key: generated.signing_key.serialize_pem(),
        }
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Arc<Secret> {
        let string_data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "shop"},
                "type": "kubernetes.io/tls",
                "stringData": string_data,
            }))
            .unwrap(),
        )
    }

    fn tls_secret(name: &str, pair: &Pair) -> Arc<Secret> {
        secret(name, &[("tls.crt", &pair.cert), ("tls.key", &pair.key)])
    }

    /// An Ingress of ours routing `hosts` to `web`, with `tls` items and annotations.
    fn tls_ingress(
        name: &str,
        created: &str,
        hosts: &[&str],
        tls: Value,
        annotations: Value,
    ) -> Arc<Ingress> {
        let rules: Vec<Value> = hosts
            .iter()
            .map(|host| {
                rule(
                    Some(host),
                    vec![path(&format!("/{name}"), "Prefix", backend("web", 80))],
                )
            })
            .collect();
        Arc::new(ingress(
            "shop",
            name,
            json!({"creationTimestamp": created, "annotations": annotations}),
            json!({"ingressClassName": "sluice", "rules": rules, "tls": tls}),
        ))
    }

    fn objects(ingresses: Vec<Arc<Ingress>>, secrets: Vec<Arc<Secret>>) -> ClusterObjects {
        ClusterObjects {
            ingresses,
            secrets,
            services: vec![Arc::new(service("shop", "web", &[(Some("http"), 80)]))],
            ..ClusterObjects::default()
        }
    }

    fn run(objects: &ClusterObjects, last_good: &LastGood) -> Compiled {
        compile(objects, last_good, &CompileOptions::default())
    }

    fn reasons(compiled: &Compiled, name: &str) -> Vec<&'static str> {
        compiled.statuses[&ObjectKey::ingress(&ObjectRef::new("shop", name))]
            .iter()
            .map(CompileError::reason)
            .collect()
    }

    fn served_secret(compiled: &Compiled, host: &str) -> Option<String> {
        compiled
            .tls
            .site(host)
            .map(|site| site.certificate.source.name.clone())
    }

    /// The route of Ingress `name` (each routes `/<name>`).
    fn target_of(compiled: &Compiled, host: &str, name: &str) -> RouteTarget {
        compiled.snapshot_routes.exact_hosts[host].prefix_paths[&format!("/{name}")].clone()
    }

    #[test]
    fn hosts_get_the_oldest_ingresses_certificate_and_conflicts_are_reported() {
        let a = issue(&["a.example", "*.wild.example"]);
        let b = issue(&["a.example"]);
        let objects = objects(
            vec![
                tls_ingress(
                    "newer",
                    "2024-02-01T00:00:00Z",
                    &["a.example"],
                    json!([{"secretName": "b", "hosts": ["a.example"]}]),
                    json!({}),
                ),
                tls_ingress(
                    "older",
                    "2024-01-01T00:00:00Z",
                    &["a.example", "x.wild.example"],
                    // No hosts: the rule hosts; plus an explicit wildcard.
                    json!([{"secretName": "a"}, {"secretName": "a", "hosts": ["*.Wild.example"]}]),
                    json!({}),
                ),
                tls_ingress(
                    "same",
                    "2024-03-01T00:00:00Z",
                    &["a.example"],
                    json!([{"secretName": "a"}]),
                    json!({}),
                ),
            ],
            vec![tls_secret("a", &a), tls_secret("b", &b)],
        );
        let compiled = run(&objects, &LastGood::default());
        assert_eq!(served_secret(&compiled, "a.example").as_deref(), Some("a"));
        assert_eq!(
            served_secret(&compiled, "y.wild.example").as_deref(),
            Some("a")
        );
        assert_eq!(
            served_secret(&compiled, "x.wild.example").as_deref(),
            Some("a")
        );
        assert_eq!(served_secret(&compiled, "b.example"), None);
        assert!(
            reasons(&compiled, "older").is_empty(),
            "{:?}",
            reasons(&compiled, "older")
        );
        assert_eq!(reasons(&compiled, "newer"), vec!["TlsHostConflict"]);
        // Naming the same Secret for the same host is agreement, not a conflict.
        assert!(reasons(&compiled, "same").is_empty());
        assert_eq!(compiled.last_good.certificates.len(), 2);
        // Equal inputs, equal tables: the snapshot can be reused.
        assert_eq!(run(&objects, &compiled.last_good).tls, compiled.tls);
    }

    #[test]
    fn a_bad_secret_keeps_its_last_good_certificate_and_a_deleted_one_does_not() {
        let good = issue(&["r.example"]);
        let other = issue(&["r.example"]);
        let ingresses = vec![tls_ingress(
            "r",
            "2024-01-01T00:00:00Z",
            &["r.example"],
            json!([{"secretName": "r"}]),
            json!({}),
        )];
        let first = run(
            &objects(ingresses.clone(), vec![tls_secret("r", &good)]),
            &LastGood::default(),
        );
        let served = Arc::clone(&first.tls.site("r.example").unwrap().certificate);

        // Unchanged bytes: the very same parsed certificate, not a new parse.
        let again = run(
            &objects(ingresses.clone(), vec![tls_secret("r", &good)]),
            &first.last_good,
        );
        assert!(Arc::ptr_eq(
            &again.tls.site("r.example").unwrap().certificate,
            &served
        ));

        for (bad, why) in [
            (
                secret("r", &[("tls.crt", &good.cert), ("tls.key", &other.key)]),
                "does not belong",
            ),
            (
                secret("r", &[("tls.crt", "junk"), ("tls.key", &good.key)]),
                "holds no PEM",
            ),
            (secret("r", &[("tls.crt", &good.cert)]), "needs both"),
        ] {
            let compiled = run(&objects(ingresses.clone(), vec![bad]), &first.last_good);
            let errors = &compiled.statuses[&ObjectKey::ingress(&ObjectRef::new("shop", "r"))];
            assert_eq!(errors.len(), 1, "{errors:?}");
            let message = errors[0].to_string();
            assert!(message.contains(why), "{message}");
            assert!(
                message.contains("last good certificate keeps serving"),
                "{message}"
            );
            assert!(Arc::ptr_eq(
                &compiled.tls.site("r.example").unwrap().certificate,
                &served
            ));
            // And it stays the last good one for the compile after.
            assert!(Arc::ptr_eq(
                &compiled.last_good.certificates[&ObjectRef::new("shop", "r")],
                &served
            ));
            // Routes are never taken out by a certificate problem.
            assert!(
                compiled
                    .snapshot_routes
                    .exact_hosts
                    .contains_key("r.example")
            );
        }

        let deleted = run(&objects(ingresses.clone(), vec![]), &first.last_good);
        assert_eq!(reasons(&deleted, "r"), vec!["SecretNotFound"]);
        assert!(deleted.tls.site("r.example").is_none());
        assert!(deleted.last_good.certificates.is_empty());

        // Bad from the start: nothing to fall back on.
        let never_good = run(
            &objects(
                ingresses,
                vec![secret("r", &[("tls.crt", "junk"), ("tls.key", "junk")])],
            ),
            &LastGood::default(),
        );
        let message =
            never_good.statuses[&ObjectKey::ingress(&ObjectRef::new("shop", "r"))][0].to_string();
        assert!(
            message.contains("its hosts get the default certificate"),
            "{message}"
        );
        assert!(never_good.tls.site("r.example").is_none());
    }

    /// The PEM reader's message named the offending byte of the private key.
    #[test]
    fn a_bad_private_key_is_reported_without_its_contents() {
        let good = issue(&["k.example"]);
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE!!!!hunter2\n-----END PRIVATE KEY-----\n";
        let compiled = run(
            &objects(
                vec![tls_ingress(
                    "k",
                    "2024-01-01T00:00:00Z",
                    &["k.example"],
                    json!([{"secretName": "k"}]),
                    json!({}),
                )],
                vec![secret("k", &[("tls.crt", &good.cert), ("tls.key", key)])],
            ),
            &LastGood::default(),
        );
        let message =
            compiled.statuses[&ObjectKey::ingress(&ObjectRef::new("shop", "k"))][0].to_string();
        assert!(
            message.contains("tls.key holds no usable PEM private key; its hosts get"),
            "{message}"
        );
        for leaked in ["symbol", "offset", "hunter2", "33"] {
            assert!(!message.contains(leaked), "{leaked} in {message}");
        }
    }

    #[test]
    fn a_certificate_for_other_names_is_served_with_a_warning() {
        let pair = issue(&["other.example"]);
        let compiled = run(
            &objects(
                vec![tls_ingress(
                    "m",
                    "2024-01-01T00:00:00Z",
                    &["m.example"],
                    json!([{"secretName": "m"}]),
                    json!({}),
                )],
                vec![tls_secret("m", &pair)],
            ),
            &LastGood::default(),
        );
        assert_eq!(reasons(&compiled, "m"), vec!["CertificateHostMismatch"]);
        assert_eq!(served_secret(&compiled, "m.example").as_deref(), Some("m"));
    }

    #[test]
    fn the_default_certificate_reports_on_its_secret() {
        let pair = issue(&["default.example"]);
        let options = |name: &str| CompileOptions {
            default_certificate: Some(ObjectRef::new("shop", name)),
            ..CompileOptions::default()
        };
        let objects = objects(vec![], vec![tls_secret("fallback", &pair)]);
        let good = compile(&objects, &LastGood::default(), &options("fallback"));
        assert_eq!(good.tls.default.as_ref().unwrap().source.name, "fallback");
        let missing = compile(&objects, &LastGood::default(), &options("nope"));
        assert!(missing.tls.default.is_none());
        let key = ObjectKey::new(ObjectKind::Secret, "shop", "nope");
        assert_eq!(missing.statuses[&key][0].reason(), "SecretNotFound");
    }

    #[test]
    fn a_client_ca_goes_to_the_handshake_and_to_the_routes_and_a_missing_one_shuts_them() {
        let server = issue(&["m.example", "n.example"]);
        let ca = issue(&["clients.example"]);
        let annotations = |secret: &str| json!({"sluice.dev/client-ca": secret});
        let compiled = run(
            &objects(
                vec![
                    tls_ingress(
                        "m",
                        "2024-01-01T00:00:00Z",
                        &["m.example"],
                        json!([{"secretName": "srv"}]),
                        annotations("clients"),
                    ),
                    tls_ingress(
                        "n",
                        "2024-01-02T00:00:00Z",
                        &["n.example"],
                        json!([{"secretName": "srv"}]),
                        annotations("missing"),
                    ),
                ],
                vec![
                    tls_secret("srv", &server),
                    secret("clients", &[("ca.crt", &ca.cert)]),
                ],
            ),
            &LastGood::default(),
        );
        let site = compiled.tls.site("m.example").unwrap();
        let client_ca = site
            .client_ca
            .as_ref()
            .expect("the handshake asks for a certificate");
        assert_eq!(
            target_of(&compiled, "m.example", "m").https.client_ca,
            Some(ClientCaRequirement::Verified(client_ca.fingerprint))
        );
        assert_eq!(reasons(&compiled, "n"), vec!["ClientCaUnavailable"]);
        assert_eq!(
            target_of(&compiled, "n.example", "n").https.client_ca,
            Some(ClientCaRequirement::Unavailable)
        );
        assert!(compiled.tls.site("n.example").unwrap().client_ca.is_none());
    }
}
