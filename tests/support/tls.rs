//! TLS test parts: a CA that issues server and client certificates (rcgen), Secrets in
//! YAML, and a real rustls client that reports what the server presented.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use sluice_dataplane::upstream::NoCertificateCheck;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Reply;

/// A certificate with its key, in PEM, and the certificate's DER.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// A throw-away certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names, wildcards allowed).
    pub fn server(&self, names: &[&str]) -> Issued {
        let params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("server params");
        self.issue(params)
    }

    /// A client certificate whose subject is `CN=<common_name>,O=Sluice tests`.
    pub fn client(&self, common_name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Sluice tests");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        Issued {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            der: certificate.der().clone(),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(certificate.expect("CA PEM")).expect("CA root");
        }
        roots
    }
}

fn indented(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}\n"))
        .collect::<String>()
}

/// A `kubernetes.io/tls` Secret with `stringData`.
pub fn tls_secret_yaml(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indented(cert_pem),
        indented(key_pem)
    )
}

/// A Secret holding a CA bundle under `ca.crt`.
pub fn ca_secret_yaml(namespace: &str, name: &str, bundle_pem: &str) -> String {
    opaque_secret_yaml(namespace, name, "ca.crt", bundle_pem)
}

/// An Opaque Secret holding `text` under `key`.
pub fn opaque_secret_yaml(namespace: &str, name: &str, key: &str, text: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: Opaque\nstringData:\n  {key}: |\n{}",
        indented(text)
    )
}

/// How a test client connects.
#[derive(Default)]
pub struct ClientOptions<'a> {
    /// Verify against this CA; `None` accepts whatever the server sends.
    pub trust: Option<&'a TestCa>,
    /// ALPN protocols to offer.
    pub alpn: &'a [&'a [u8]],
    /// A client certificate to present.
    pub identity: Option<&'a Issued>,
    /// Only offer TLS 1.2.
    pub tls12_only: bool,
}

/// Connects to `addr` and completes a handshake with `sni` (an IP address or `None`
/// sends no SNI).
pub async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    options: &ClientOptions<'_>,
) -> Result<TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if options.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match options.trust {
        Some(ca) => builder.with_root_certificates(ca.roots()),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck::new(provider))),
    };
    let mut config = match options.identity {
        Some(identity) => {
            let chain = vec![identity.der.clone()];
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                .map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = options.alpn.iter().map(|p| p.to_vec()).collect();
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(config));
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// The leaf certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server sent a certificate")
        .clone()
        .into_owned()
}

/// Sends GET requests on one HTTP/1.1 (or, when ALPN chose it, HTTP/2) connection.
pub struct HttpsConnection {
    h1: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    h2: Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>>,
}

impl HttpsConnection {
    pub async fn new(stream: TlsStream<TcpStream>) -> Result<HttpsConnection, String> {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(HttpsConnection {
                h1: None,
                h2: Some(sender),
            })
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(HttpsConnection {
                h1: Some(sender),
                h2: None,
            })
        }
    }

    pub fn is_h2(&self) -> bool {
        self.h2.is_some()
    }

    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let uri = if self.h2.is_some() {
            format!("https://{host}{path}")
        } else {
            path.to_owned()
        };
        let mut request = Request::builder().uri(uri);
        if self.h1.is_some() {
            request = request.header("host", host);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let sent = async {
            match (&mut self.h1, &mut self.h2) {
                (Some(h1), _) => {
                    h1.ready().await.map_err(|e| e.to_string())?;
                    h1.send_request(request).await.map_err(|e| e.to_string())
                }
                (_, Some(h2)) => {
                    h2.ready().await.map_err(|e| e.to_string())?;
                    h2.send_request(request).await.map_err(|e| e.to_string())
                }
                _ => Err("no connection".to_owned()),
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .map_err(|_| "timed out".to_owned())??;
        Reply::read(response).await
    }
}

/// One GET over a fresh TLS connection.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    path: &str,
    options: &ClientOptions<'_>,
) -> Result<Reply, String> {
    let stream = connect(addr, Some(sni), options).await?;
    let mut connection = HttpsConnection::new(stream).await?;
    connection.get(sni, path, &[]).await
}
