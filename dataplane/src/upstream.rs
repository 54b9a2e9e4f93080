//! Upstream connection settings made ready for the request path: rustls client
//! configurations built once per snapshot (off the request path) and kept across
//! snapshots while their settings stay the same, so per-thread connection pools keyed by
//! them survive a snapshot change.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper_rustls::ConfigBuilderExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::snapshot::{BackendProtocol, RouteTable, UpstreamSettings, UpstreamTls, UpstreamVerify};

/// Why a CA bundle cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaBundleError {
    #[error("the PEM text cannot be read: {0}")]
    Pem(String),
    #[error("it holds no CERTIFICATE block")]
    Empty,
    #[error("certificate {index} is not a usable CA certificate: {why}")]
    Certificate { index: usize, why: String },
}

/// Reads the `CERTIFICATE` blocks of a PEM bundle (other blocks are skipped) and checks
/// that each can be a trust anchor. Returns their DER, in order.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<Vec<u8>>, CaBundleError> {
    let mut roots = RootCertStore::empty();
    let mut certificates = Vec::new();
    for (index, certificate) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let certificate = certificate.map_err(|error| CaBundleError::Pem(error.to_string()))?;
        roots
            .add(certificate.clone())
            .map_err(|error| CaBundleError::Certificate {
                index,
                why: error.to_string(),
            })?;
        certificates.push(certificate.as_ref().to_vec());
    }
    if certificates.is_empty() {
        return Err(CaBundleError::Empty);
    }
    Ok(certificates)
}

/// What identifies an upstream connection pool: the protocol and the TLS settings. The
/// WebSocket idle timeout is left out, since it does not change how connections are made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub protocol: BackendProtocol,
    pub tls: Option<UpstreamTls>,
}

/// One distinct [`ConnectionKey`] made ready: its rustls configuration built.
#[derive(Debug)]
pub struct PreparedUpstream {
    /// Unique for the life of the process; equal settings in the next snapshot keep it,
    /// so the traffic threads keep their pools for it.
    pub id: u64,
    pub key: ConnectionKey,
    /// `Err` when the settings cannot be made to work: requests get 503.
    pub tls: Result<Option<PreparedTls>, String>,
}

/// A rustls client configuration without ALPN (the connector sets that) and the name to
/// verify and send as SNI.
#[derive(Debug, Clone)]
pub struct PreparedTls {
    pub config: ClientConfig,
    pub server_name: ServerName<'static>,
}

/// The prepared upstreams of one snapshot, found by the address of the routes'
/// [`UpstreamSettings`] (which the snapshot keeps alive), so a request finds its entry
/// without hashing certificates.
#[derive(Debug, Default, Clone)]
pub struct UpstreamTable {
    by_settings: HashMap<usize, Arc<PreparedUpstream>>,
    by_key: HashMap<ConnectionKey, Arc<PreparedUpstream>>,
}

impl UpstreamTable {
    /// Prepares every distinct upstream the routes use; entries whose settings are in
    /// `previous` are reused as they are.
    pub fn build(routes: &RouteTable, previous: Option<&UpstreamTable>, ids: &AtomicU64) -> Self {
        let mut table = UpstreamTable::default();
        for settings in routes
            .targets()
            .filter_map(|target| target.upstream.as_ref())
        {
            let address = Arc::as_ptr(settings) as usize;
            if table.by_settings.contains_key(&address) {
                continue;
            }
            let key = ConnectionKey {
                protocol: settings.protocol,
                tls: settings.tls.clone(),
            };
            let prepared = match table
                .by_key
                .get(&key)
                .or_else(|| previous.and_then(|previous| previous.by_key.get(&key)))
            {
                Some(prepared) => Arc::clone(prepared),
                None => Arc::new(PreparedUpstream {
                    id: ids.fetch_add(1, Ordering::Relaxed),
                    tls: prepare_tls(&key),
                    key: key.clone(),
                }),
            };
            table.by_key.insert(key, Arc::clone(&prepared));
            table.by_settings.insert(address, prepared);
        }
        table
    }

    /// The prepared entry of a route's settings.
    pub fn get(&self, settings: &Arc<UpstreamSettings>) -> Option<&Arc<PreparedUpstream>> {
        self.by_settings.get(&(Arc::as_ptr(settings) as usize))
    }

    /// Whether some route of this snapshot uses the prepared upstream `id`.
    pub fn contains_id(&self, id: u64) -> bool {
        self.by_key.values().any(|prepared| prepared.id == id)
    }
}

fn prepare_tls(key: &ConnectionKey) -> Result<Option<PreparedTls>, String> {
    match (&key.tls, key.protocol.is_tls()) {
        (Some(tls), true) => client_config(tls).map(Some),
        (None, false) => Ok(None),
        (None, true) => Err("TLS settings are missing".to_owned()),
        (Some(_), false) => Err("TLS settings on a protocol without TLS".to_owned()),
    }
}

pub(crate) fn client_config(tls: &UpstreamTls) -> Result<PreparedTls, String> {
    let server_name = ServerName::try_from(tls.server_name.clone())
        .map_err(|_| format!("{:?} is not a DNS name or IP address", tls.server_name))?;
    Ok(PreparedTls {
        config: verifying_config(&tls.verify)?,
        server_name,
    })
}

/// A rustls client configuration (TLS 1.3 and 1.2, no client certificate, no ALPN) that
/// checks servers as `verify` says: the one place Sluice's outgoing TLS is set up, for
/// upstreams, JWKS servers and authorization services alike.
pub(crate) fn verifying_config(verify: &UpstreamVerify) -> Result<ClientConfig, String> {
    // Always the ring provider, named explicitly: another crate enabling a second provider
    // must not make the process default ambiguous.
    let provider = crate::tls::crypto_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| error.to_string())?;
    Ok(match verify {
        UpstreamVerify::PublicRoots => builder.with_webpki_roots().with_no_client_auth(),
        UpstreamVerify::Ca(certificates) => {
            let mut roots = RootCertStore::empty();
            for der in certificates.iter() {
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|error| format!("CA certificate: {error}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        UpstreamVerify::Disabled => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck::new(provider)))
            .with_no_client_auth(),
    })
}

/// Accepts any certificate, for `sluice.dev/backend-tls-verify: "false"` only. Handshake
/// signatures are still checked, so the connection is at least encrypted to whoever holds
/// the key of the certificate shown.
///
/// Public so tests can look at certificates a server presents; nothing else should.
#[derive(Debug)]
pub struct NoCertificateCheck(Arc<CryptoProvider>);

impl NoCertificateCheck {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        NoCertificateCheck(provider)
    }
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::{BackendKey, BalancePolicy, ObjectRef, RouteTarget};

    /// A route to `shop/web:443` with these upstream settings.
    pub(crate) fn web_target(upstream: Option<Arc<UpstreamSettings>>) -> RouteTarget {
        RouteTarget {
            owner: ObjectRef::new("shop", "web"),
            backend: BackendKey {
                namespace: "shop".into(),
                service: "web".into(),
                port: 443,
            },
            balance: BalancePolicy::RoundRobin,
            policies: None,
            https: Arc::default(),
            upstream,
            strict_paths: false,
            slot: RouteTarget::UNNUMBERED,
        }
    }

    fn target(path: &str, upstream: &Arc<UpstreamSettings>) -> (String, RouteTarget) {
        (path.to_owned(), web_target(Some(Arc::clone(upstream))))
    }

    fn tls(verify: UpstreamVerify) -> Arc<UpstreamSettings> {
        Arc::new(UpstreamSettings {
            protocol: BackendProtocol::Https,
            tls: Some(UpstreamTls {
                server_name: "web.shop.svc".into(),
                verify,
            }),
            websocket_idle_timeout: None,
            unavailable: false,
        })
    }

    #[test]
    fn equal_settings_share_one_entry_and_keep_it_across_snapshots() {
        let first = tls(UpstreamVerify::PublicRoots);
        let twin = tls(UpstreamVerify::PublicRoots);
        let insecure = tls(UpstreamVerify::Disabled);
        let mut routes = RouteTable::default();
        routes.any_host.prefix_paths.extend([
            target("/a", &first),
            target("/b", &twin),
            target("/c", &insecure),
        ]);
        let ids = AtomicU64::new(1);
        let table = UpstreamTable::build(&routes, None, &ids);
        let a = table.get(&first).unwrap();
        assert!(Arc::ptr_eq(a, table.get(&twin).unwrap()));
        assert_ne!(a.id, table.get(&insecure).unwrap().id);
        assert!(matches!(a.tls, Ok(Some(_))));

        // A new compile makes new Arcs with the same content: same entry, same id.
        let again = tls(UpstreamVerify::PublicRoots);
        let mut next_routes = RouteTable::default();
        next_routes
            .any_host
            .prefix_paths
            .extend([target("/a", &again)]);
        let next = UpstreamTable::build(&next_routes, Some(&table), &ids);
        assert_eq!(next.get(&again).unwrap().id, a.id);
        assert!(next.contains_id(a.id));
        assert!(!next.contains_id(table.get(&insecure).unwrap().id));
    }

    #[test]
    fn a_bad_server_name_makes_the_entry_unusable() {
        let settings = Arc::new(UpstreamSettings {
            protocol: BackendProtocol::Grpcs,
            tls: Some(UpstreamTls {
                server_name: "not a name".into(),
                verify: UpstreamVerify::PublicRoots,
            }),
            websocket_idle_timeout: None,
            unavailable: false,
        });
        let mut routes = RouteTable::default();
        routes
            .any_host
            .prefix_paths
            .extend([target("/", &settings)]);
        let table = UpstreamTable::build(&routes, None, &AtomicU64::new(0));
        assert!(table.get(&settings).unwrap().tls.is_err());
    }

    #[test]
    fn ca_bundles_must_hold_certificates() {
        assert_eq!(parse_ca_bundle(b""), Err(CaBundleError::Empty));
        assert_eq!(
            parse_ca_bundle(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(CaBundleError::Empty)
        );
        assert!(matches!(
            parse_ca_bundle(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(CaBundleError::Certificate { index: 0, .. })
        ));
        assert!(matches!(
            parse_ca_bundle(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
            Err(CaBundleError::Pem(_))
        ));
    }
}
