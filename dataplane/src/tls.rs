//! TLS termination: certificates by SNI from the current snapshot, bounded handshakes.
//!
//! One rustls [`ServerConfig`] serves every host: its certificate resolver reads the
//! snapshot's [`TlsTable`] on each handshake, so a new snapshot (a rotated Secret, say) is
//! used by the next handshake while open connections keep theirs. A host that asks for
//! client certificates gets a config of its own with that CA's verifier, chosen after
//! the ClientHello is read. Only TLS 1.2 and 1.3 with rustls's default (AEAD, forward
//! secret) suites are offered; ALPN offers `h2` and `http/1.1`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::live::DataPlane;
use crate::metrics::{TlsFailureLabels, TlsHandshakeLabels};
use crate::snapshot::{ClientCa, ObjectRef, ServerCertificate, TlsSite};
use crate::upstream::{CaBundleError, parse_ca_bundle};

/// What is wrong with a certificate, key or CA bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("{0} holds no PEM certificate")]
    NoCertificate(&'static str),
    #[error("{key} is not a PEM certificate list: {why}")]
    BadCertificatePem { key: &'static str, why: String },
    #[error("tls.key holds no usable PEM private key: {0}")]
    BadKey(String),
    #[error("the private key does not belong to the first certificate of tls.crt")]
    KeyMismatch,
    #[error("the certificate cannot be used: {0}")]
    Unusable(String),
    #[error("the first certificate of {key} cannot be parsed: {why}")]
    BadCertificate { key: &'static str, why: String },
}

/// The one crypto provider Sluice uses (ring, as kube's client does).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so moving bytes between parts changes the fingerprint.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// SHA-256 of a certificate and key as stored: what [`ServerCertificate::fingerprint`]
/// holds, so a caller can see a Secret is unchanged without parsing it again.
pub fn certificate_fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    fingerprint(&[cert_pem, key_pem])
}

/// SHA-256 of a CA bundle as stored, as [`ClientCa::fingerprint`] holds.
pub fn ca_fingerprint(bundle_pem: &[u8]) -> [u8; 32] {
    fingerprint(&[bundle_pem])
}

fn pem_certificates(
    pem: &[u8],
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertificateError::BadCertificatePem {
            key,
            why: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate(key));
    }
    Ok(chain)
}

impl ServerCertificate {
    /// Parses `tls.crt` (leaf first, then intermediates) and `tls.key` (PKCS#8, PKCS#1 or
    /// SEC1), and checks that the key belongs to the leaf.
    pub fn from_pem(
        source: ObjectRef,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, CertificateError> {
        let chain = pem_certificates(cert_pem, "tls.crt")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|error| CertificateError::BadKey(error.to_string()))?;
        let (not_after, dns_names) = read_leaf(&chain[0], "tls.crt")?;
        let provider = crypto_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|error| CertificateError::BadKey(error.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertificateError::KeyMismatch);
            }
            // The provider could not tell (no public key to compare): let handshakes decide.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(error) => return Err(CertificateError::Unusable(error.to_string())),
        }
        Ok(ServerCertificate {
            source,
            fingerprint: certificate_fingerprint(cert_pem, key_pem),
            not_after,
            dns_names,
            key: Arc::new(certified),
        })
    }

    /// A self-signed certificate for hosts nobody configured, made at start-up so that
    /// no private key ships with Sluice.
    pub fn self_signed_fallback() -> Result<Self, CertificateError> {
        let generated =
            rcgen::generate_simple_self_signed(vec!["sluice-default.invalid".to_owned()])
                .map_err(|error| CertificateError::Unusable(error.to_string()))?;
        Self::from_pem(
            ObjectRef::new("", "self-signed"),
            generated.cert.pem().as_bytes(),
            generated.signing_key.serialize_pem().as_bytes(),
        )
    }

    /// Whether the leaf's names cover `host` (exact, or one `*.` label).
    pub fn covers(&self, host: &str) -> bool {
        self.dns_names.iter().any(|name| {
            name == host
                || match (name.strip_prefix("*."), host.split_once('.')) {
                    (Some(suffix), Some((_, parent))) => suffix == parent,
                    _ => false,
                }
        })
    }
}

/// The leaf's `notAfter` and the DNS names it is valid for (subject alternative names,
/// lower-cased), read in one parse.
fn read_leaf(
    leaf: &CertificateDer<'_>,
    key: &'static str,
) -> Result<(i64, Vec<String>), CertificateError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|error| {
        CertificateError::BadCertificate {
            key,
            why: error.to_string(),
        }
    })?;
    let dns_names = match parsed.subject_alternative_name() {
        Ok(Some(names)) => names
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    Some(dns.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((parsed.validity().not_after.timestamp(), dns_names))
}

impl ClientCa {
    /// Parses a CA bundle (`ca.crt`) into a verifier that requires a client certificate
    /// chaining to one of its certificates.
    pub fn from_pem(source: ObjectRef, bundle_pem: &[u8]) -> Result<Self, CertificateError> {
        let certificates = parse_ca_bundle(bundle_pem).map_err(|error| match error {
            CaBundleError::Empty => CertificateError::NoCertificate("ca.crt"),
            other => CertificateError::BadCertificate {
                key: "ca.crt",
                why: other.to_string(),
            },
        })?;
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(certificates.into_iter().map(CertificateDer::from));
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .map_err(|error| CertificateError::Unusable(error.to_string()))?;
        Ok(ClientCa {
            source,
            fingerprint: ca_fingerprint(bundle_pem),
            verifier,
        })
    }
}

/// What a finished handshake tells the request path about its connection.
#[derive(Debug, Clone)]
pub struct TlsConnectionInfo {
    /// The SNI name the handshake was made for (lower-case), if the client sent one.
    pub server_name: Option<String>,
    /// Present when the host required a client certificate and it was verified.
    pub client: Option<VerifiedClient>,
}

/// A client certificate that passed verification.
#[derive(Debug, Clone)]
pub struct VerifiedClient {
    /// Fingerprint of the CA bundle that verified it.
    pub ca: [u8; 32],
    /// The subject distinguished name (RFC 4514), as sent upstream.
    pub subject: HeaderValue,
}

/// Accepts TLS connections for one listener.
pub struct TlsAcceptor {
    data_plane: Arc<DataPlane>,
    /// Serves every host without client certificates.
    shared: Arc<ServerConfig>,
    fallback: Arc<CertifiedKey>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a handshake failed, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    Timeout,
    /// Not a TLS ClientHello, or a malformed message.
    Malformed,
    /// No protocol version or cipher suite in common (TLS 1.1 and older land here).
    Incompatible,
    ClientCertificate,
    AlertReceived,
    /// The client went away mid-handshake.
    Closed,
    /// Too many handshakes in progress: the connection was closed unread.
    Overloaded,
    Other,
}

impl HandshakeFailure {
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Malformed => "malformed",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Overloaded => "overloaded",
            HandshakeFailure::Other => "other",
        }
    }

    fn of(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. },
            ) => HandshakeFailure::Malformed,
            Some(rustls::Error::PeerIncompatible(_)) => HandshakeFailure::Incompatible,
            Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
                HandshakeFailure::ClientCertificate
            }
            Some(rustls::Error::AlertReceived(_)) => HandshakeFailure::AlertReceived,
            Some(_) => HandshakeFailure::Other,
            None => match error.kind() {
                ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => HandshakeFailure::Closed,
                ErrorKind::InvalidData => HandshakeFailure::Malformed,
                _ => HandshakeFailure::Other,
            },
        }
    }
}

impl TlsAcceptor {
    /// `fallback` answers handshakes for hosts without a certificate when the snapshot
    /// has no default certificate either.
    pub fn new(
        data_plane: Arc<DataPlane>,
        fallback: &ServerCertificate,
        handshake_timeout: Duration,
    ) -> Result<Self, CertificateError> {
        let resolver = Arc::new(SnapshotCertificates {
            data_plane: Arc::clone(&data_plane),
            fallback: Arc::clone(&fallback.key),
        });
        let mut shared = base_config()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        finish_config(&mut shared);
        // Stateless session tickets: resumption without a shared cache between threads.
        shared.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|error| CertificateError::Unusable(error.to_string()))?;
        Ok(TlsAcceptor {
            data_plane,
            shared: Arc::new(shared),
            fallback: Arc::clone(&fallback.key),
            handshake_timeout,
        })
    }

    /// Reads the ClientHello, picks the host's config and completes the handshake, all
    /// within the handshake timeout. Failures are counted by reason.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(TlsStream<IO>, TlsConnectionInfo), HandshakeFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let metrics = self.data_plane.metrics();
        let result = tokio::time::timeout(self.handshake_timeout, self.handshake(io)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(HandshakeFailure::Timeout),
        };
        match &outcome {
            Ok((stream, _)) => {
                let version = match stream.get_ref().1.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "other",
                };
                metrics
                    .tls_handshakes
                    .get_or_create(&TlsHandshakeLabels { version })
                    .inc();
            }
            Err(failure) => self.count_failure(*failure),
        }
        outcome
    }

    /// Counts a failed (or refused) handshake by reason.
    pub fn count_failure(&self, failure: HandshakeFailure) {
        self.data_plane
            .metrics()
            .tls_handshake_failures
            .get_or_create(&TlsFailureLabels {
                reason: failure.label(),
            })
            .inc();
    }

    async fn handshake<IO>(
        &self,
        io: IO,
    ) -> Result<(TlsStream<IO>, TlsConnectionInfo), HandshakeFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(|error| HandshakeFailure::of(&error))?;
        let name = server_name(&start.client_hello());
        let site = name
            .as_deref()
            .and_then(|name| self.data_plane.load().snapshot.tls.site(name).cloned());
        let (config, client_ca) = match site {
            Some(TlsSite {
                certificate,
                client_ca: Some(client_ca),
            }) => (
                self.client_auth_config(&certificate, &client_ca)?,
                Some(client_ca.fingerprint),
            ),
            _ => (Arc::clone(&self.shared), None),
        };
        let stream = start
            .into_stream(config)
            .await
            .map_err(|error| HandshakeFailure::of(&error))?;
        let client = client_ca.and_then(|ca| {
            let leaf = stream.get_ref().1.peer_certificates()?.first()?;
            Some(VerifiedClient {
                ca,
                subject: subject_header(leaf)?,
            })
        });
        let info = TlsConnectionInfo {
            server_name: name,
            client,
        };
        Ok((stream, info))
    }

    /// A config that requires a client certificate from `client_ca`. Made per handshake
    /// (cheap next to the handshake itself); such sessions are not resumed, so a client
    /// certificate is always checked against the CA of the moment.
    fn client_auth_config(
        &self,
        certificate: &ServerCertificate,
        client_ca: &ClientCa,
    ) -> Result<Arc<ServerConfig>, HandshakeFailure> {
        let mut config = base_config()
            .map_err(|_| HandshakeFailure::Other)?
            .with_client_cert_verifier(Arc::clone(&client_ca.verifier))
            .with_cert_resolver(Arc::new(FixedCertificate(Arc::clone(&certificate.key))));
        finish_config(&mut config);
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    /// The certificate used when nothing else applies.
    pub fn fallback(&self) -> &Arc<CertifiedKey> {
        &self.fallback
    }
}

fn base_config()
-> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, CertificateError> {
    ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| CertificateError::Unusable(error.to_string()))
}

fn finish_config(config: &mut ServerConfig) {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our suite order (rustls's: AES-GCM and ChaCha20, forward secret) over the client's.
    config.ignore_client_order = true;
}

/// The SNI name, lower-cased, without a trailing dot.
fn server_name(hello: &ClientHello<'_>) -> Option<String> {
    let name = hello.server_name()?;
    let name = name.strip_suffix('.').unwrap_or(name);
    Some(name.to_ascii_lowercase())
}

/// Picks a certificate from the snapshot being served.
struct SnapshotCertificates {
    data_plane: Arc<DataPlane>,
    fallback: Arc<CertifiedKey>,
}

impl fmt::Debug for SnapshotCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotCertificates")
    }
}

impl ResolvesServerCert for SnapshotCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let live = self.data_plane.load();
        let table = &live.snapshot.tls;
        let configured = server_name(&hello).and_then(|name| {
            table
                .site(&name)
                .map(|site| Arc::clone(&site.certificate.key))
        });
        Some(
            configured
                .or_else(|| table.default.as_ref().map(|cert| Arc::clone(&cert.key)))
                .unwrap_or_else(|| Arc::clone(&self.fallback)),
        )
    }
}

#[derive(Debug)]
struct FixedCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The subject DN of a DER certificate as a header value (RFC 4514), or `None` when it
/// cannot be parsed or holds an attribute that is not text.
fn subject_header(leaf: &CertificateDer<'_>) -> Option<HeaderValue> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
    HeaderValue::from_str(&rfc4514(parsed.subject())?).ok()
}

/// RFC 4514: the last RDN first, `,` between RDNs, `+` within one, known attribute types
/// by short name and others as dotted OIDs, special characters escaped.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let mut attributes = Vec::new();
        for attribute in rdn.iter() {
            let oid = attribute.attr_type().to_id_string();
            let key = match oid.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.9" => "STREET",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "0.9.2342.19200300.100.1.1" => "UID",
                "0.9.2342.19200300.100.1.25" => "DC",
                other => other,
            };
            let value = attribute.as_str().ok()?;
            attributes.push(format!("{key}={}", escape_dn_value(value)));
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn escape_dn_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, character) in value.chars().enumerate() {
        match character {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                escaped.push('\\');
                escaped.push(character);
            }
            ' ' | '#' if index == 0 => {
                escaped.push('\\');
                escaped.push(character);
            }
            ' ' if index == last => escaped.push_str("\\ "),
            control if control.is_ascii_control() => {
                escaped.push_str(&format!("\\{:02X}", u32::from(control)));
            }
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(names: &[&str]) -> (String, String) {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_covers_its_names() {
        let (cert, key) = issued(&["a.example", "*.wild.example"]);
        let loaded = ServerCertificate::from_pem(
            ObjectRef::new("shop", "tls"),
            cert.as_bytes(),
            key.as_bytes(),
        )
        .unwrap();
        assert!(loaded.covers("a.example"));
        assert!(loaded.covers("x.wild.example"));
        assert!(!loaded.covers("wild.example"));
        assert!(!loaded.covers("y.x.wild.example"));
        assert!(loaded.not_after > 1_700_000_000);
        assert_eq!(
            loaded.fingerprint,
            certificate_fingerprint(cert.as_bytes(), key.as_bytes())
        );
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let (cert, key) = issued(&["a.example"]);
        let (_, other_key) = issued(&["b.example"]);
        let source = || ObjectRef::new("shop", "tls");
        assert_eq!(
            ServerCertificate::from_pem(source(), cert.as_bytes(), other_key.as_bytes()),
            Err(CertificateError::KeyMismatch)
        );
        assert_eq!(
            ServerCertificate::from_pem(source(), b"", key.as_bytes()),
            Err(CertificateError::NoCertificate("tls.crt"))
        );
        assert!(matches!(
            ServerCertificate::from_pem(source(), cert.as_bytes(), b"not a key"),
            Err(CertificateError::BadKey(_))
        ));
        assert!(matches!(
            ServerCertificate::from_pem(
                source(),
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                key.as_bytes()
            ),
            Err(CertificateError::BadCertificate { .. }
                | CertificateError::BadCertificatePem { .. })
        ));
        assert!(matches!(
            ClientCa::from_pem(source(), b"nothing here"),
            Err(CertificateError::NoCertificate("ca.crt"))
        ));
    }

    fn subject_of(attributes: &[(rcgen::DnType, &str)]) -> (HeaderValue, Vec<String>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for (kind, value) in attributes {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.der()).unwrap();
        let der_order = parsed
            .subject()
            .iter_rdn()
            .flat_map(|rdn| rdn.iter())
            .map(|attribute| attribute.attr_type().to_id_string())
            .collect();
        (subject_header(certificate.der()).unwrap(), der_order)
    }

    #[test]
    fn subjects_are_written_as_rfc_4514() {
        let (header, _) = subject_of(&[(rcgen::DnType::CommonName, "#alice+admin, \"x\" ")]);
        assert_eq!(header, r#"CN=\#alice\+admin\, \"x\"\ "#);
        assert_eq!(escape_dn_value("a\u{1}b;c<d>"), r"a\01b\;c\<d\>");
        // The last RDN of the certificate comes first.
        let (header, der_order) = subject_of(&[
            (rcgen::DnType::CountryName, "NL"),
            (rcgen::DnType::OrganizationName, "Shop"),
            (rcgen::DnType::CommonName, "alice"),
        ]);
        let short = |oid: &str| match oid {
            "2.5.4.6" => "C=NL",
            "2.5.4.10" => "O=Shop",
            _ => "CN=alice",
        };
        let expected: Vec<&str> = der_order.iter().rev().map(|oid| short(oid)).collect();
        assert_eq!(header, expected.join(",").as_str());
    }

    #[test]
    fn the_fallback_is_generated_fresh() {
        let one = ServerCertificate::self_signed_fallback().unwrap();
        let two = ServerCertificate::self_signed_fallback().unwrap();
        assert_ne!(one.fingerprint, two.fingerprint);
    }
}
