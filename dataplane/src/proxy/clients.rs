//! The upstream clients of one traffic thread: one per kind of connection, each with its
//! own keep-alive pool.
//!
//! Clear-text HTTP/1.1 and h2c clients exist from the start. TLS clients are made on first
//! use for each prepared upstream (see [`crate::upstream`]) and keyed by its id, which
//! equal settings keep across snapshots; so a snapshot change leaves pools alone, and
//! clients whose settings no route uses any more are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::uri::Scheme;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::UpstreamBody;
use super::{LocalAnswer, ProxyConfig};
use crate::live::LiveState;
use crate::snapshot::{BackendProtocol, UpstreamSettings};
use crate::upstream::PreparedTls;

type PlainClient = Client<HttpConnector, UpstreamBody>;
type TlsClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// A client chosen for one request.
pub(super) enum UpstreamClient<'a> {
    Plain(&'a PlainClient),
    Tls(Arc<TlsClient>),
}

impl UpstreamClient<'_> {
    pub fn request(&self, request: http::Request<UpstreamBody>) -> ResponseFuture {
        match self {
            UpstreamClient::Plain(client) => client.request(request),
            UpstreamClient::Tls(client) => client.request(request),
        }
    }

    /// The scheme of upstream URIs; the TLS connector refuses anything but `https`.
    pub fn scheme(&self) -> Scheme {
        match self {
            UpstreamClient::Plain(_) => Scheme::HTTP,
            UpstreamClient::Tls(_) => Scheme::HTTPS,
        }
    }
}

/// The clients of one traffic thread.
pub(super) struct UpstreamClients {
    http1: PlainClient,
    h2c: PlainClient,
    tls: Mutex<TlsClients>,
    config: ProxyConfig,
}

impl std::fmt::Debug for UpstreamClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClients").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct TlsClients {
    /// The newest snapshot generation seen; unused clients are dropped when it moves.
    generation: u64,
    by_id: HashMap<u64, TlsPair>,
}

/// The clients of one TLS upstream: the protocol's own, and an HTTP/1.1-only one for
/// upgrade requests, which HTTP/2 cannot carry.
#[derive(Clone)]
struct TlsPair {
    main: Arc<TlsClient>,
    http1: Arc<TlsClient>,
}

impl UpstreamClients {
    pub fn new(config: &ProxyConfig) -> Self {
        let http1 = client_builder(config).build(http_connector(config, true));
        let h2c = client_builder(config)
            .http2_only(true)
            .build(http_connector(config, true));
        UpstreamClients {
            http1,
            h2c,
            tls: Mutex::new(TlsClients::default()),
            config: config.clone(),
        }
    }

    /// The client for a route's settings. Upgrade requests always go over HTTP/1.1.
    pub fn select(
        &self,
        live: &LiveState,
        settings: Option<&Arc<UpstreamSettings>>,
        upgrade: bool,
    ) -> Result<UpstreamClient<'_>, LocalAnswer> {
        let Some(settings) = settings else {
            return Ok(UpstreamClient::Plain(&self.http1));
        };
        if settings.unavailable {
            return Err(LocalAnswer::UpstreamUnavailable);
        }
        match settings.protocol {
            BackendProtocol::Http => return Ok(UpstreamClient::Plain(&self.http1)),
            BackendProtocol::H2c | BackendProtocol::Grpc if upgrade => {
                return Ok(UpstreamClient::Plain(&self.http1));
            }
            BackendProtocol::H2c | BackendProtocol::Grpc => {
                return Ok(UpstreamClient::Plain(&self.h2c));
            }
            BackendProtocol::Https | BackendProtocol::Grpcs => {}
        }
        let prepared = live
            .upstreams
            .get(settings)
            .ok_or(LocalAnswer::UpstreamUnavailable)?;
        let tls = match &prepared.tls {
            Ok(Some(tls)) => tls,
            Ok(None) | Err(_) => return Err(LocalAnswer::UpstreamUnavailable),
        };
        // Only this thread takes the lock, so it is never contended.
        let mut clients = self
            .tls
            .lock()
            .map_err(|_| LocalAnswer::UpstreamUnavailable)?;
        let generation = live.snapshot.generation;
        if generation > clients.generation {
            clients.generation = generation;
            clients
                .by_id
                .retain(|id, _| live.upstreams.contains_id(*id));
        }
        let pair = clients
            .by_id
            .entry(prepared.id)
            .or_insert_with(|| self.tls_pair(tls, settings.protocol));
        Ok(UpstreamClient::Tls(Arc::clone(if upgrade {
            &pair.http1
        } else {
            &pair.main
        })))
    }

    fn tls_pair(&self, tls: &PreparedTls, protocol: BackendProtocol) -> TlsPair {
        let connector = |alpn_h2: bool, alpn_http1: bool| {
            let builder = HttpsConnectorBuilder::new()
                .with_tls_config(tls.config.clone())
                .https_only()
                .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name.clone()));
            let http = http_connector(&self.config, false);
            match (alpn_h2, alpn_http1) {
                (true, true) => builder.enable_all_versions().wrap_connector(http),
                (true, false) => builder.enable_http2().wrap_connector(http),
                // No ALPN at all: a server then speaks HTTP/1.1.
                _ => builder.enable_http1().wrap_connector(http),
            }
        };
        let main = match protocol {
            BackendProtocol::Grpcs => client_builder(&self.config)
                .http2_only(true)
                .build(connector(true, false)),
            _ => client_builder(&self.config).build(connector(true, true)),
        };
        TlsPair {
            main: Arc::new(main),
            http1: Arc::new(client_builder(&self.config).build(connector(false, true))),
        }
    }
}

fn http_connector(config: &ProxyConfig, enforce_http: bool) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(enforce_http);
    connector
}

fn client_builder(config: &ProxyConfig) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(config.upstream_idle_timeout)
        .pool_max_idle_per_host(config.max_idle_per_endpoint)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::HealthConfig;
    use crate::live::DataPlane;
    use crate::metrics::Metrics;
    use crate::snapshot::{BackendTable, RouteTable, Snapshot, UpstreamTls, UpstreamVerify};
    use crate::upstream::tests::web_target;

    fn https(server_name: &str) -> Arc<UpstreamSettings> {
        Arc::new(UpstreamSettings {
            protocol: BackendProtocol::Https,
            tls: Some(UpstreamTls {
                server_name: server_name.into(),
                verify: UpstreamVerify::PublicRoots,
            }),
            websocket_idle_timeout: None,
            unavailable: false,
        })
    }

    fn snapshot(generation: u64, upstream: Option<Arc<UpstreamSettings>>) -> Arc<Snapshot> {
        let mut routes = RouteTable::default();
        routes
            .any_host
            .prefix_paths
            .insert("/".into(), web_target(upstream));
        Arc::new(Snapshot {
            generation,
            routes: Arc::new(routes),
            backends: Arc::new(BackendTable::default()),
            tls: Arc::default(),
        })
    }

    fn tls_client(clients: &UpstreamClients, plane: &DataPlane) -> Arc<TlsClient> {
        let live = plane.load();
        let settings = live.snapshot.routes.any_host.prefix_paths["/"]
            .upstream
            .clone();
        match clients.select(&live, settings.as_ref(), false) {
            Ok(UpstreamClient::Tls(client)) => client,
            _ => panic!("expected a TLS client"),
        }
    }

    #[tokio::test]
    async fn tls_clients_outlive_snapshots_with_equal_settings_and_go_with_them() {
        let plane = DataPlane::new(HealthConfig::default(), Arc::new(Metrics::new()));
        let clients = UpstreamClients::new(&ProxyConfig::default());
        plane.apply(snapshot(1, Some(https("web.shop.svc"))));
        let first = tls_client(&clients, &plane);

        // A recompiled, equal snapshot: new Arcs, the same client and pool.
        plane.apply(snapshot(2, Some(https("web.shop.svc"))));
        assert!(Arc::ptr_eq(&first, &tls_client(&clients, &plane)));

        // Other settings: another client; the unused one is dropped.
        plane.apply(snapshot(3, Some(https("api.shop.svc"))));
        assert!(!Arc::ptr_eq(&first, &tls_client(&clients, &plane)));
        assert_eq!(clients.tls.lock().unwrap().by_id.len(), 1);

        // Plain routes need no TLS client; the next TLS request prunes the rest.
        plane.apply(snapshot(4, None));
        let live = plane.load();
        assert!(matches!(
            clients.select(&live, None, false),
            Ok(UpstreamClient::Plain(_))
        ));
        let unusable = Arc::new(UpstreamSettings {
            unavailable: true,
            ..UpstreamSettings::clone(&https("x"))
        });
        assert!(matches!(
            clients.select(&live, Some(&unusable), false),
            Err(LocalAnswer::UpstreamUnavailable)
        ));
    }
}
