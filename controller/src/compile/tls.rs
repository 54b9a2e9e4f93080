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
use sluice_dataplane::tls::certificate_fingerprint;

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
            .map_err(|error| invalid(error.to_string()))
    }

    /// The table, and the certificates to pass back as the next compile's last good.
    pub fn finish(self) -> (TlsTable, BTreeMap<ObjectRef, Arc<ServerCertificate>>) {
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
