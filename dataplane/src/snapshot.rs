//! The routing snapshot: an immutable description of everything the request path needs.
//!
//! The controller builds a [`Snapshot`] from Kubernetes objects (or YAML files) and hands it
//! to the data plane as an `Arc`. Nothing in here refers to Kubernetes types, so the data
//! plane stays free of kube and k8s-openapi. Routes and endpoints live behind separate `Arc`s
//! so that an endpoint-only change can reuse the route table untouched.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::HashRing;

/// One generation of routing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Increases by one for every snapshot the controller publishes.
    pub generation: u64,
    pub routes: Arc<RouteTable>,
    pub backends: Arc<BackendTable>,
    /// Server certificates by host, for the HTTPS listener.
    pub tls: Arc<TlsTable>,
}

impl Snapshot {
    /// A snapshot that routes nothing: every request gets 404.
    pub fn empty(generation: u64) -> Self {
        Snapshot {
            generation,
            routes: Arc::new(RouteTable::default()),
            backends: Arc::new(BackendTable::default()),
            tls: Arc::new(TlsTable::default()),
        }
    }

    /// The same routes with a new endpoint table: the endpoint fast lane.
    pub fn with_backends(&self, generation: u64, backends: Arc<BackendTable>) -> Self {
        Snapshot {
            generation,
            routes: Arc::clone(&self.routes),
            backends,
            tls: Arc::clone(&self.tls),
        }
    }
}

/// The namespace and name of the object that produced a route; used for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Host and path rules, indexed for lookup.
///
/// Lookup order for a request: the exact host, then the one `*.` wildcard that can match it,
/// then the rules that name no host. Within each, an exact path beats the longest prefix.
/// When none of them has a matching path the default backend answers, otherwise 404.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    /// Lower-case host names without port.
    pub exact_hosts: BTreeMap<String, VirtualHost>,
    /// Keyed by the suffix after `*.`: `*.foo.com` is stored as `foo.com`.
    pub wildcard_hosts: BTreeMap<String, VirtualHost>,
    /// Rules with no host: they apply to every host.
    pub any_host: VirtualHost,
    pub default_backend: Option<RouteTarget>,
    /// How many targets [`RouteTable::number_targets`] numbered.
    pub slots: u32,
}

impl RouteTable {
    /// Every target in the table, in slot order.
    pub fn targets(&self) -> impl Iterator<Item = &RouteTarget> {
        self.exact_hosts
            .values()
            .chain(self.wildcard_hosts.values())
            .chain(std::iter::once(&self.any_host))
            .flat_map(|host| host.exact_paths.values().chain(host.prefix_paths.values()))
            .chain(self.default_backend.as_ref())
    }

    /// Gives every target its own `slot`, in a fixed order (exact hosts, wildcard hosts,
    /// host-less rules, default backend; paths in key order), so equal tables number alike.
    /// Call once the table is complete; the data plane keys per-route state by slot.
    pub fn number_targets(&mut self) {
        let mut next: u32 = 0;
        let hosts = self
            .exact_hosts
            .values_mut()
            .chain(self.wildcard_hosts.values_mut())
            .chain(std::iter::once(&mut self.any_host));
        let targets = hosts
            .flat_map(|host| {
                host.exact_paths
                    .values_mut()
                    .chain(host.prefix_paths.values_mut())
            })
            .chain(self.default_backend.as_mut());
        for target in targets {
            target.slot = next;
            next = next.saturating_add(1);
        }
        self.slots = next;
    }
}

/// The path rules of one host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtualHost {
    /// The host as written in the rule (`foo.com`, `*.foo.com`, or empty); a metrics label.
    pub name: String,
    /// `pathType: Exact`, matched case-sensitively against the whole path.
    pub exact_paths: BTreeMap<String, RouteTarget>,
    /// `pathType: Prefix` (and `ImplementationSpecific`), stored without a trailing slash
    /// (the root prefix is `/`), matched element by element.
    pub prefix_paths: BTreeMap<String, RouteTarget>,
}

impl VirtualHost {
    pub fn is_empty(&self) -> bool {
        self.exact_paths.is_empty() && self.prefix_paths.is_empty()
    }
}

/// Where a matched request goes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// The Ingress that owns this route.
    pub owner: ObjectRef,
    pub backend: BackendKey,
    pub balance: BalancePolicy,
    /// Policies enforced before proxying; `None` for a route without any.
    pub policies: Option<Arc<RoutePolicies>>,
    /// HTTPS behaviour of the owning Ingress: redirect, HSTS, client certificates.
    pub https: Arc<HttpsPolicy>,
    /// How to talk to the upstream, shared by the routes of one Ingress; `None` is plain
    /// HTTP/1.1 with the default WebSocket idle timeout.
    pub upstream: Option<Arc<UpstreamSettings>>,
    /// Answer 400 to a request path a backend might read differently than the router did
    /// (`crate::canonical::is_ambiguous_path`: `;`, `%2F`, `%5C`). From
    /// `sluice.dev/strict-paths`; on by default where the Ingress names an Auth.
    pub strict_paths: bool,
    /// Index of this target in its table, given by [`RouteTable::number_targets`];
    /// [`RouteTarget::UNNUMBERED`] until then (still served, only without cached state).
    pub slot: u32,
}

impl RouteTarget {
    pub const UNNUMBERED: u32 = u32::MAX;
}

/// The policies of a route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutePolicies {
    /// All apply, in order; the first that refuses answers.
    pub rate_limits: Vec<Arc<RateLimitPolicy>>,
    /// Who may use the route (`sluice.dev/auth`); checked before the rate limits.
    pub auth: Option<Arc<crate::auth::AuthPolicy>>,
    /// Responses stored and served again (`sluice.dev/cache`); consulted after the auth
    /// and rate-limit checks have let the request through. A missing or invalid Cache
    /// leaves this empty: the route is served uncached, which is safe.
    pub cache: Option<Arc<crate::cache::CachePolicy>>,
    /// A policy the route names is missing or invalid: the route answers 503 rather than
    /// being served without its protection.
    pub unavailable: bool,
}

/// A validated `RateLimit`, as the data plane enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// The policy object; a metrics label and the identity of its counters.
    pub name: ObjectRef,
    /// All must pass.
    pub limits: Vec<LimitRule>,
    pub headers: LimitHeaders,
    pub backend: LimitBackend,
}

/// Where a policy's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitBackend {
    /// In this process: each replica allows the full rate.
    #[default]
    Local,
    /// In Redis, shared by every replica.
    Redis { on_failure: LimitFailure },
}

/// What a Redis-backed policy does when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitFailure {
    Allow,
    Deny,
    /// Count locally against `requests / share` (at least one request per period).
    Local {
        share: u32,
    },
}

/// `requests` per `period` with bursts up to `burst`, counted per distinct `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    pub requests: u64,
    pub period: std::time::Duration,
    /// At least 1.
    pub burst: u64,
    /// Not empty.
    pub key: Vec<LimitKeyPart>,
}

/// One request attribute a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKeyPart {
    ClientIp,
    Host,
    Path,
    Method,
    /// Lower-case header name.
    Header(String),
    Cookie(String),
}

/// Which response headers describe a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitHeaders {
    /// `RateLimit-Policy` and `RateLimit` structured fields (IETF httpapi draft).
    #[default]
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Legacy,
    None,
}

/// How a route talks to its upstream (`sluice.dev/backend-protocol` and friends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSettings {
    pub protocol: BackendProtocol,
    /// Set for the TLS protocols (`HTTPS`, `GRPCS`).
    pub tls: Option<UpstreamTls>,
    /// How long a WebSocket (or other upgraded) tunnel may carry nothing either way before
    /// it is closed; `None` takes the data plane's default.
    pub websocket_idle_timeout: Option<std::time::Duration>,
    /// The TLS settings could not be made (say, the CA Secret is missing): the routes
    /// answer 503 rather than connect without the verification they ask for.
    pub unavailable: bool,
}

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    /// HTTP/1.1 in clear text.
    #[default]
    Http,
    /// TLS, offering ALPN `h2` and `http/1.1`; the upstream picks.
    Https,
    /// HTTP/2 in clear text with prior knowledge.
    H2c,
    /// gRPC: HTTP/2 in clear text with prior knowledge, and gRPC-shaped local errors.
    Grpc,
    /// gRPC over TLS: HTTP/2 (ALPN `h2` only), and gRPC-shaped local errors.
    Grpcs,
}

impl BackendProtocol {
    /// Whether connections are TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, BackendProtocol::Https | BackendProtocol::Grpcs)
    }

    /// Whether requests go over HTTP/2 without negotiation (or with ALPN `h2` only).
    pub fn is_http2_only(self) -> bool {
        matches!(
            self,
            BackendProtocol::H2c | BackendProtocol::Grpc | BackendProtocol::Grpcs
        )
    }

    pub fn is_grpc(self) -> bool {
        matches!(self, BackendProtocol::Grpc | BackendProtocol::Grpcs)
    }
}

/// TLS to an upstream: the name it is verified against and sent as SNI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// A DNS name (or IP address) the certificate must be valid for; also the SNI.
    pub server_name: String,
    pub verify: UpstreamVerify,
}

/// How an upstream's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamVerify {
    /// Against the public web PKI roots (webpki-roots).
    PublicRoots,
    /// Against these CA certificates (DER), and only them.
    Ca(Arc<[Vec<u8>]>),
    /// Not at all: asked for explicitly with `sluice.dev/backend-tls-verify: "false"`.
    Disabled,
}

/// A Service port, resolved to its number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub namespace: String,
    pub service: String,
    pub port: u16,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// How a route picks an endpoint of its backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum BalancePolicy {
    #[default]
    RoundRobin,
    /// Power of two random choices, the one with fewer requests in flight (per weight).
    LeastRequest,
    /// Power of two random choices, the one with the lower moving average of latency.
    Ewma,
    /// Consistent hashing on a request attribute.
    Hash(HashOn),
}

/// The request attribute that consistent hashing uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashOn {
    /// A header, by lower-case name.
    Header(String),
    Cookie(String),
    ClientIp,
}

/// Every backend that some route refers to, with its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendTable {
    pub backends: BTreeMap<BackendKey, Backend>,
}

/// The usable endpoints of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backend {
    /// Sorted by address, without duplicates.
    pub endpoints: Vec<Endpoint>,
    /// Built only when some route hashes onto this backend.
    pub ring: Option<HashRing>,
}

impl Backend {
    /// Sorts and de-duplicates the endpoints, and builds the hash ring when asked.
    pub fn new(mut endpoints: Vec<Endpoint>, with_ring: bool) -> Self {
        endpoints.sort_by_key(|endpoint| endpoint.addr);
        endpoints.dedup_by_key(|endpoint| endpoint.addr);
        let ring = with_ring.then(|| HashRing::build(&endpoints));
        Backend { endpoints, ring }
    }
}

/// One address that serves a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Relative share of traffic; at least 1.
    pub weight: u32,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint { addr, weight: 1 }
    }
}

/// What an Ingress asks of HTTPS for its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsPolicy {
    /// Answer plain-HTTP requests with a 308 to `https://` when the host has a certificate.
    pub redirect: bool,
    /// `Strict-Transport-Security` for HTTPS answers on hosts with their own certificate.
    pub hsts: Option<http::HeaderValue>,
    /// Requests must come over a connection whose client certificate this CA verified.
    pub client_ca: Option<ClientCaRequirement>,
}

impl Default for HttpsPolicy {
    fn default() -> Self {
        HttpsPolicy {
            redirect: true,
            hsts: Some(http::HeaderValue::from_static(DEFAULT_HSTS)),
            client_ca: None,
        }
    }
}

/// The HSTS value sent unless an Ingress says otherwise: about six months, as ingress-nginx
/// sent, without `includeSubDomains` (which can lock out sibling hosts nobody meant to).
pub const DEFAULT_HSTS: &str = "max-age=15724800";

/// The CA a route's clients must present a certificate from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCaRequirement {
    /// The SHA-256 of the CA bundle that verified the connection's certificate.
    Verified([u8; 32]),
    /// The CA Secret is missing or bad: nobody gets in (fail closed).
    Unavailable,
}

/// Server certificates by SNI host name.
///
/// Lookup: the exact name, then the `*.` wildcard one label up, then `default`; hosts
/// without a certificate get the listener's fallback.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsTable {
    /// Lower-case names.
    pub exact: BTreeMap<String, TlsSite>,
    /// Keyed by the suffix after `*.`.
    pub wildcard: BTreeMap<String, TlsSite>,
    /// `--default-ssl-certificate`, when given and valid.
    pub default: Option<Arc<ServerCertificate>>,
    /// Whether any site asks for client certificates (spares other requests the lookup).
    pub any_client_ca: bool,
}

impl TlsTable {
    /// The site for an SNI name (lower-case, no trailing dot), if one is configured.
    pub fn site(&self, host: &str) -> Option<&TlsSite> {
        if let Some(site) = self.exact.get(host) {
            return Some(site);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    /// Every configured site with the host name it is listed under (`*.` for wildcards).
    pub fn sites(&self) -> impl Iterator<Item = (String, &TlsSite)> {
        self.exact
            .iter()
            .map(|(host, site)| (host.clone(), site))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(suffix, site)| (format!("*.{suffix}"), site)),
            )
    }
}

/// One host's certificate and client-certificate rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSite {
    pub certificate: Arc<ServerCertificate>,
    pub client_ca: Option<Arc<ClientCa>>,
}

/// A certificate chain with its private key, ready for handshakes.
#[derive(Clone)]
pub struct ServerCertificate {
    /// The Secret it came from (or the generated fallback).
    pub source: ObjectRef,
    /// SHA-256 of the chain and key as stored: equal fingerprints, equal certificates.
    pub fingerprint: [u8; 32],
    /// The leaf's `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The DNS names the leaf is valid for, lower-cased (read once, when loaded).
    pub dns_names: Vec<String>,
    pub key: Arc<rustls::sign::CertifiedKey>,
}

impl PartialEq for ServerCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.fingerprint == other.fingerprint
    }
}

impl Eq for ServerCertificate {}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("source", &self.source)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The CA bundle that verifies client certificates for some hosts.
#[derive(Clone)]
pub struct ClientCa {
    pub source: ObjectRef,
    /// SHA-256 of the bundle as stored.
    pub fingerprint: [u8; 32],
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl PartialEq for ClientCa {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.fingerprint == other.fingerprint
    }
}

impl Eq for ClientCa {}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCa")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}
