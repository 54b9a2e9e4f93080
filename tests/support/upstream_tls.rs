//! A real TLS upstream (tokio-rustls, HTTP/1.1 and h2 by ALPN) with certificates from a
//! test CA ([`TestCa`]). It records the SNI each client sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::grpc;
use super::tls::TestCa;

/// A running TLS upstream.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    /// The SNI of each accepted handshake, in order (empty when none was sent).
    pub server_names: Arc<Mutex<Vec<String>>>,
}

impl TlsUpstream {
    pub fn server_names(&self) -> Vec<String> {
        self.server_names.lock().expect("names").clone()
    }
}

/// Serves HTTPS on 127.0.0.1 with a certificate for `names` from `ca`, offering ALPN `h2`
/// and `http/1.1`. `/test.Echo/*` is the gRPC echo service; anything else answers
/// `tls ok <protocol>`.
pub async fn start_tls_upstream(ca: &TestCa, names: &[&str]) -> TlsUpstream {
    serve_https(ca, names, |protocol, request| async move {
        if request.uri().path().starts_with("/test.Echo/") {
            return grpc::handle(request).await;
        }
        let text = format!("tls ok {protocol}");
        hyper::Response::new(tonic::body::Body::new(Full::new(Bytes::from(text))))
    })
    .await
}

/// Serves HTTPS on 127.0.0.1 with a certificate for `names` (DNS names or IP addresses)
/// from `ca`, offering ALPN `h2` and `http/1.1`; `answer` gets the negotiated protocol and
/// the request.
pub async fn serve_https<F, Fut>(ca: &TestCa, names: &[&str], answer: F) -> TlsUpstream
where
    F: Fn(&'static str, hyper::Request<hyper::body::Incoming>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = hyper::Response<tonic::body::Body>> + Send + 'static,
{
    let issued = ca.server(names);
    let chain = vec![issued.der.clone()];
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_names = Arc::new(Mutex::new(Vec::new()));
    let names_seen = Arc::clone(&server_names);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let names_seen = Arc::clone(&names_seen);
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                names_seen
                    .lock()
                    .expect("names")
                    .push(session.server_name().unwrap_or_default().to_owned());
                let protocol = match session.alpn_protocol() {
                    Some(b"h2") => "h2",
                    _ => "http/1.1",
                };
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(protocol, request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsUpstream { addr, server_names }
}
