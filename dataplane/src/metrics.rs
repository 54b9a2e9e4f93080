//! Prometheus metrics for the data plane and the controller's snapshot delivery.
//!
//! Label values come from the snapshot (route owner, virtual host name, backend) or from
//! small fixed sets (method, status class), never from raw request data, so the number of
//! series is bounded by the configuration, not by traffic.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request counted against a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub namespace: Arc<str>,
    pub ingress: Arc<str>,
    pub host: Arc<str>,
    pub method: MethodLabel,
    pub status: StatusClass,
}

/// Labels of a route: the owning Ingress and the virtual host it matched in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub namespace: Arc<str>,
    pub ingress: Arc<str>,
    pub host: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: Arc<str>,
}

/// A rate-limit policy's decisions, by result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub namespace: Arc<str>,
    pub policy: Arc<str>,
    pub result: LimitResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LimitResult {
    allowed,
    limited,
    backend_error,
}

/// A Cache policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CacheLabels {
    pub namespace: Arc<str>,
    pub policy: Arc<str>,
}

/// A Cache policy's answers, by what the cache did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CacheResultLabels {
    pub namespace: Arc<str>,
    pub policy: Arc<str>,
    pub result: CacheResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheResult {
    /// Served fresh from the cache (a 304 included).
    hit,
    /// Served stale: while revalidating, or because the upstream failed.
    stale,
    /// Went upstream: nothing usable was stored.
    miss,
    /// A stored response was confirmed or replaced by the upstream.
    revalidated,
    /// The cache was not consulted (method, bypass header or cookie, `no-store`).
    bypass,
}

/// The counters of one Cache policy, made once per policy.
#[derive(Debug, Clone)]
pub struct CacheCounters {
    pub hits: Counter,
    pub stale: Counter,
    pub misses: Counter,
    pub revalidated: Counter,
    pub bypassed: Counter,
    /// Requests that waited for another's identical miss.
    pub coalesced: Counter,
    pub stored_bytes: Gauge,
    pub evictions: Counter,
    pub redis_errors: Counter,
}

/// An Auth policy's decisions, by the method that decided and the result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthLabels {
    pub namespace: Arc<str>,
    pub policy: Arc<str>,
    pub method: AuthMethodLabel,
    pub result: AuthResult,
}

/// A `jwksUri`, for the fetches of its key set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct JwksLabels {
    pub uri: String,
}

/// An Auth policy's counters, one per (method, result) pair, each registered on first use
/// (most pairs never happen: `ip` is never `unauthorized`), so a request touches no label
/// map.
#[derive(Debug, Clone)]
pub struct AuthCounters {
    family: Family<AuthLabels, Counter>,
    namespace: Arc<str>,
    policy: Arc<str>,
    cells: Arc<[OnceLock<Counter>; AuthMethodLabel::COUNT * AuthResult::COUNT]>,
}

impl AuthCounters {
    /// Counts one decision under the method that made it.
    pub fn count(&self, method: AuthMethodLabel, result: AuthResult) {
        let Some(cell) = self
            .cells
            .get(method as usize * AuthResult::COUNT + result as usize)
        else {
            return;
        };
        cell.get_or_init(|| {
            self.family
                .get_or_create(&AuthLabels {
                    namespace: Arc::clone(&self.namespace),
                    policy: Arc::clone(&self.policy),
                    method,
                    result,
                })
                .clone()
        })
        .inc();
    }
}

/// What checked (or let through) a request: the `method` label of Auth decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AuthMethodLabel {
    ip,
    basic,
    api_key,
    jwt,
    forward,
    /// The policy has no credential method, or the request carried no credentials.
    none,
}

impl AuthMethodLabel {
    pub const COUNT: usize = 6;
}

/// The `result` label of Auth decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AuthResult {
    allowed,
    /// 401.
    unauthorized,
    /// 403.
    forbidden,
    /// 503: no password verification slot was free.
    busy,
    /// 503: something the check needs (the authorization service, Redis) did not answer.
    error,
    /// Another answer of an authorization service (a redirect to a login page) passed on.
    redirected,
}

impl AuthResult {
    pub const COUNT: usize = 6;
}

/// One policy's counters, resolved once per policy so a request touches no label map.
#[derive(Debug, Clone, Default)]
pub struct LimitCounters {
    pub allowed: Counter,
    pub limited: Counter,
    /// Checks Redis could not answer (the policy's `onBackendFailure` then decided).
    pub backend_errors: Counter,
}

/// A completed TLS handshake, by protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsHandshakeLabels {
    pub version: &'static str,
}

/// A failed TLS handshake, by reason (`timeout`, `malformed`, `incompatible`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsFailureLabels {
    pub reason: &'static str,
}

/// A served certificate: the host it is listed under and the Secret it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsCertificateLabels {
    pub host: Arc<str>,
    pub secret: Arc<str>,
}

/// The kind of object a controller watch follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WatchLabels {
    pub kind: &'static str,
}

/// Outcome of a write to the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WriteLabels {
    pub result: WriteResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WriteResult {
    ok,
    error,
}

/// The controller's own health: its watches, leadership and writes. Kept here with the
/// rest so one registry serves `/metrics`; nothing in it depends on Kubernetes types.
#[derive(Debug)]
pub struct ControllerMetrics {
    pub watch_connected: Family<WatchLabels, Gauge>,
    pub watch_errors: Family<WatchLabels, Counter>,
    pub leader: Gauge,
    pub status_updates: Family<WriteLabels, Counter>,
    pub events: Family<WriteLabels, Counter>,
    pub compile_seconds: Histogram,
}

impl ControllerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = ControllerMetrics {
            watch_connected: Family::default(),
            watch_errors: Family::default(),
            leader: Gauge::default(),
            status_updates: Family::default(),
            events: Family::default(),
            compile_seconds: apply_duration_histogram(),
        };
        let registry = registry.sub_registry_with_prefix("controller");
        registry.register(
            "watch_connected",
            "1 while the watch of this kind is connected to the Kubernetes API, else 0",
            metrics.watch_connected.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of the watch of this kind (each is retried with backoff)",
            metrics.watch_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and writes status",
            metrics.leader.clone(),
        );
        registry.register(
            "status_updates",
            "Ingress status writes, by result",
            metrics.status_updates.clone(),
        );
        registry.register(
            "events",
            "Kubernetes Events posted about object problems, by result",
            metrics.events.clone(),
        );
        registry.register(
            "compile_seconds",
            "Time to compile all objects into a snapshot",
            metrics.compile_seconds.clone(),
        );
        metrics
    }
}

/// The metric series of one route, resolved from the label maps once and then kept by the
/// data plane, so a request updates its counters without hashing labels or taking the
/// families' locks. Request counters are created on first use, so only the method and
/// status combinations that occur are exported.
#[derive(Debug)]
pub struct RouteSeries {
    pub labels: RouteLabels,
    /// `None` for requests that matched no route: their duration is not recorded.
    pub duration: Option<Histogram>,
    requests: [OnceLock<Counter>; MethodLabel::COUNT * StatusClass::COUNT],
}

impl RouteSeries {
    fn new(labels: RouteLabels, duration: Option<Histogram>) -> Self {
        RouteSeries {
            labels,
            duration,
            requests: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

/// HTTP methods as a closed set; anything else is `OTHER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    PATCH,
    OPTIONS,
    CONNECT,
    TRACE,
    OTHER,
}

impl MethodLabel {
    const COUNT: usize = 10;
}

impl From<&http::Method> for MethodLabel {
    fn from(method: &http::Method) -> Self {
        match *method {
            http::Method::GET => MethodLabel::GET,
            http::Method::HEAD => MethodLabel::HEAD,
            http::Method::POST => MethodLabel::POST,
            http::Method::PUT => MethodLabel::PUT,
            http::Method::DELETE => MethodLabel::DELETE,
            http::Method::PATCH => MethodLabel::PATCH,
            http::Method::OPTIONS => MethodLabel::OPTIONS,
            http::Method::CONNECT => MethodLabel::CONNECT,
            http::Method::TRACE => MethodLabel::TRACE,
            _ => MethodLabel::OTHER,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    const COUNT: usize = 5;
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let text = match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        };
        EncodeLabelValue::encode(&text, encoder)
    }
}

impl From<http::StatusCode> for StatusClass {
    fn from(status: http::StatusCode) -> Self {
        match status.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_duration_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn apply_duration_histogram() -> Histogram {
    // 10 µs to about 5 s.
    Histogram::new(exponential_buckets(0.000_01, 2.5, 15))
}

/// Why a client connection was shed by the connection budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ShedReason {
    /// An idle connection closed to make room for a new one at the cap.
    idle,
    /// A new connection closed at once: at the cap with none idle.
    full,
    /// An idle connection closed because memory ran short.
    memory,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ShedLabels {
    pub reason: ShedReason,
}

/// A traffic listener (`http`, `https`) and the protocol a connection on it speaks
/// (`http1`, `http2`, or `unknown` before its first bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub listener: &'static str,
    pub protocol: &'static str,
}

/// Every metric Sluice exports, registered once at start-up.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<RouteLabels>,
    pub upstream_connect_errors: Family<BackendLabels, Counter>,
    pub upstream_retries: Family<BackendLabels, Counter>,
    pub endpoint_ejections: Family<BackendLabels, Counter>,
    pub endpoints: Family<BackendLabels, Gauge>,
    pub rate_limit_decisions: Family<RateLimitLabels, Counter>,
    pub auth_decisions: Family<AuthLabels, Counter>,
    pub auth_jwks_refreshes: Family<JwksLabels, Counter>,
    pub auth_jwks_refresh_errors: Family<JwksLabels, Counter>,
    pub auth_jwks_keys: Family<JwksLabels, Gauge>,
    pub cache_responses: Family<CacheResultLabels, Counter>,
    pub cache_coalesced: Family<CacheLabels, Counter>,
    pub cache_stored_bytes: Family<CacheLabels, Gauge>,
    pub cache_evictions: Family<CacheLabels, Counter>,
    pub cache_redis_errors: Family<CacheLabels, Counter>,
    pub rate_limit_redis_seconds: Histogram,
    pub active_connections: Gauge,
    /// Client connections open, by listener and protocol.
    pub open_connections: Family<ConnectionLabels, Gauge>,
    pub connections_shed: Family<ShedLabels, Counter>,
    /// Client connections parked: idle, holding only their sockets.
    pub parked_connections: Gauge,
    /// `--max-connections`, as applied.
    pub max_connections: Gauge,
    /// 0 normal, 1 above the high watermark, 2 above the critical one.
    pub memory_pressure: Gauge,
    /// The memory limit the watermarks are fractions of; 0 without one.
    pub memory_limit_bytes: Gauge,
    pub resident_memory_bytes: Gauge,
    /// Admin connections closed at once because `--admin-max-connections` were open.
    pub admin_connections_refused: Counter,
    pub tls_handshakes: Family<TlsHandshakeLabels, Counter>,
    pub tls_handshake_failures: Family<TlsFailureLabels, Counter>,
    pub tls_certificate_expiry: Family<TlsCertificateLabels, Gauge>,
    /// WebSocket (and other upgraded) tunnels open.
    pub upgraded_tunnels: Gauge,
    pub snapshot_generation: Gauge,
    pub snapshot_apply_seconds: Histogram,
    pub snapshot_routes: Gauge,
    pub config_errors: Gauge,
    pub controller: ControllerMetrics,
    /// Requests that matched no route (400, 404) count here, with empty route labels.
    pub unrouted: RouteSeries,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests handled, by route owner, virtual host, method and status class",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(request_duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request received to response finished, by route",
            request_duration.clone(),
        );
        let upstream_connect_errors = Family::<BackendLabels, Counter>::default();
        registry.register(
            "upstream_connect_errors",
            "Connections to upstream endpoints that failed, by backend",
            upstream_connect_errors.clone(),
        );
        let upstream_retries = Family::<BackendLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Requests retried on another endpoint after a connection failure, by backend",
            upstream_retries.clone(),
        );
        let endpoint_ejections = Family::<BackendLabels, Counter>::default();
        registry.register(
            "endpoint_ejections",
            "Endpoints ejected by passive health checking, by backend",
            endpoint_ejections.clone(),
        );
        let endpoints = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_endpoints",
            "Usable endpoints per backend in the current snapshot",
            endpoints.clone(),
        );
        let rate_limit_decisions = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limit_decisions",
            "Requests checked by a RateLimit policy, by policy and result",
            rate_limit_decisions.clone(),
        );
        let auth_decisions = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_decisions",
            "Requests checked by an Auth policy, by policy, deciding method and result",
            auth_decisions.clone(),
        );
        let auth_jwks_refreshes = Family::<JwksLabels, Counter>::default();
        registry.register(
            "auth_jwks_refreshes",
            "Successful fetches of a jwksUri",
            auth_jwks_refreshes.clone(),
        );
        let auth_jwks_refresh_errors = Family::<JwksLabels, Counter>::default();
        registry.register(
            "auth_jwks_refresh_errors",
            "Failed fetches of a jwksUri (the last good key set stays in use)",
            auth_jwks_refresh_errors.clone(),
        );
        let auth_jwks_keys = Family::<JwksLabels, Gauge>::default();
        registry.register(
            "auth_jwks_keys",
            "Keys in the key set in use for a jwksUri (0 before the first good fetch)",
            auth_jwks_keys.clone(),
        );
        let cache_responses = Family::<CacheResultLabels, Counter>::default();
        registry.register(
            "cache_responses",
            "Requests on routes with a Cache policy, by policy and what the cache did (hit, stale, miss, revalidated, bypass)",
            cache_responses.clone(),
        );
        let cache_coalesced = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_coalesced_waits",
            "Cache misses that waited for an identical request already upstream, by policy",
            cache_coalesced.clone(),
        );
        let cache_stored_bytes = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_stored_bytes",
            "Bytes held by a Cache policy's in-memory store in this replica",
            cache_stored_bytes.clone(),
        );
        let cache_evictions = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_evictions",
            "Cached responses dropped from memory to make room, by policy",
            cache_evictions.clone(),
        );
        let cache_redis_errors = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_redis_errors",
            "Failed lookups and writes of a Cache policy's Redis layer (the cache then works from memory)",
            cache_redis_errors.clone(),
        );
        let rate_limit_redis_seconds = apply_duration_histogram();
        registry.register(
            "rate_limit_redis_seconds",
            "Time of one rate-limit check in Redis, timeouts included",
            rate_limit_redis_seconds.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Client connections open on the traffic listeners",
            active_connections.clone(),
        );
        let open_connections = Family::<ConnectionLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Client connections open on the traffic listeners, by listener and protocol",
            open_connections.clone(),
        );
        let connections_shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "connections_shed",
            "Client connections closed by the connection budget: idle ones to make room at the cap, new ones refused with none idle, idle ones for memory",
            connections_shed.clone(),
        );
        let parked_connections = Gauge::default();
        registry.register(
            "parked_connections",
            "Idle client connections holding nothing but their sockets until the client sends again",
            parked_connections.clone(),
        );
        let max_connections = Gauge::default();
        registry.register(
            "max_connections",
            "The most client connections the traffic listeners hold at once",
            max_connections.clone(),
        );
        let memory_pressure = Gauge::default();
        registry.register(
            "memory_pressure",
            "0 below the high memory watermark, 1 above it (no keep-alive, short idle timeouts), 2 above the critical one (idle connections closed)",
            memory_pressure.clone(),
        );
        let memory_limit_bytes = Gauge::default();
        registry.register(
            "memory_limit_bytes",
            "The memory limit the watermarks apply to (the cgroup's, or --memory-limit); 0 without one",
            memory_limit_bytes.clone(),
        );
        let resident_memory_bytes = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "Resident memory of the process, as the memory watch last read it",
            resident_memory_bytes.clone(),
        );
        let admin_connections_refused = Counter::default();
        registry.register(
            "admin_connections_refused",
            "Connections to the admin listener closed at once because the most allowed were open",
            admin_connections_refused.clone(),
        );
        let upgraded_tunnels = Gauge::default();
        registry.register(
            "upgraded_tunnels",
            "WebSocket and other upgraded connections being relayed",
            upgraded_tunnels.clone(),
        );
        let snapshot_generation = Gauge::default();
        registry.register(
            "snapshot_generation",
            "Generation of the routing snapshot being served",
            snapshot_generation.clone(),
        );
        let snapshot_apply_seconds = apply_duration_histogram();
        registry.register(
            "snapshot_apply_seconds",
            "Time to install a new snapshot in the data plane",
            snapshot_apply_seconds.clone(),
        );
        let snapshot_routes = Gauge::default();
        registry.register(
            "snapshot_routes",
            "Host and path routes in the current snapshot",
            snapshot_routes.clone(),
        );
        let config_errors = Gauge::default();
        registry.register(
            "config_errors",
            "Objects with configuration errors in the last compile",
            config_errors.clone(),
        );
        let tls_handshakes = Family::<TlsHandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed on the HTTPS listener, by protocol version",
            tls_handshakes.clone(),
        );
        let tls_handshake_failures = Family::<TlsFailureLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            tls_handshake_failures.clone(),
        );
        let tls_certificate_expiry = Family::<TlsCertificateLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each served certificate expires (its notAfter, Unix seconds), by host",
            tls_certificate_expiry.clone(),
        );
        let controller = ControllerMetrics::register(&mut registry);
        let unrouted = RouteSeries::new(
            RouteLabels {
                namespace: "".into(),
                ingress: "".into(),
                host: "".into(),
            },
            None,
        );
        Metrics {
            controller,
            unrouted,
            registry,
            requests,
            request_duration,
            upstream_connect_errors,
            upstream_retries,
            endpoint_ejections,
            endpoints,
            rate_limit_decisions,
            auth_decisions,
            auth_jwks_refreshes,
            auth_jwks_refresh_errors,
            auth_jwks_keys,
            cache_responses,
            cache_coalesced,
            cache_stored_bytes,
            cache_evictions,
            cache_redis_errors,
            rate_limit_redis_seconds,
            active_connections,
            open_connections,
            connections_shed,
            parked_connections,
            max_connections,
            memory_pressure,
            memory_limit_bytes,
            resident_memory_bytes,
            admin_connections_refused,
            tls_handshakes,
            tls_handshake_failures,
            tls_certificate_expiry,
            upgraded_tunnels,
            snapshot_generation,
            snapshot_apply_seconds,
            snapshot_routes,
            config_errors,
        }
    }

    /// The counter of connections shed for `reason`.
    pub fn connections_shed(&self, reason: ShedReason) -> Counter {
        self.connections_shed
            .get_or_create(&ShedLabels { reason })
            .clone()
    }

    /// The series of a route; keep it rather than calling this per request.
    pub fn route_series(&self, labels: RouteLabels) -> RouteSeries {
        let duration = self.request_duration.get_or_create(&labels).clone();
        RouteSeries::new(labels, Some(duration))
    }

    /// The decision counters of a rate-limit policy.
    pub fn rate_limit_counters(&self, policy: &crate::snapshot::ObjectRef) -> LimitCounters {
        let counter = |result| {
            self.rate_limit_decisions
                .get_or_create(&RateLimitLabels {
                    namespace: policy.namespace.as_str().into(),
                    policy: policy.name.as_str().into(),
                    result,
                })
                .clone()
        };
        LimitCounters {
            allowed: counter(LimitResult::allowed),
            limited: counter(LimitResult::limited),
            backend_errors: counter(LimitResult::backend_error),
        }
    }

    /// The counters of a Cache policy.
    pub fn cache_counters(&self, policy: &crate::snapshot::ObjectRef) -> CacheCounters {
        let labels = CacheLabels {
            namespace: policy.namespace.as_str().into(),
            policy: policy.name.as_str().into(),
        };
        let result = |result| {
            self.cache_responses
                .get_or_create(&CacheResultLabels {
                    namespace: labels.namespace.clone(),
                    policy: labels.policy.clone(),
                    result,
                })
                .clone()
        };
        CacheCounters {
            hits: result(CacheResult::hit),
            stale: result(CacheResult::stale),
            misses: result(CacheResult::miss),
            revalidated: result(CacheResult::revalidated),
            bypassed: result(CacheResult::bypass),
            coalesced: self.cache_coalesced.get_or_create(&labels).clone(),
            stored_bytes: self.cache_stored_bytes.get_or_create(&labels).clone(),
            evictions: self.cache_evictions.get_or_create(&labels).clone(),
            redis_errors: self.cache_redis_errors.get_or_create(&labels).clone(),
        }
    }

    /// The decision counters of an Auth policy.
    pub fn auth_counters(&self, policy: &crate::snapshot::ObjectRef) -> AuthCounters {
        AuthCounters {
            family: self.auth_decisions.clone(),
            namespace: policy.namespace.as_str().into(),
            policy: policy.name.as_str().into(),
            cells: Arc::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// The fetch counters of a `jwksUri`.
    pub fn jwks_counters(&self, uri: &str) -> crate::auth::jwks::JwksCounters {
        let labels = JwksLabels {
            uri: uri.to_owned(),
        };
        crate::auth::jwks::JwksCounters {
            refreshes: self.auth_jwks_refreshes.get_or_create(&labels).clone(),
            errors: self.auth_jwks_refresh_errors.get_or_create(&labels).clone(),
            keys: self.auth_jwks_keys.get_or_create(&labels).clone(),
        }
    }

    /// Counts one finished request against its route.
    pub fn count_request(&self, series: &RouteSeries, method: MethodLabel, status: StatusClass) {
        let cell = method as usize * StatusClass::COUNT + status as usize;
        let Some(counter) = series.requests.get(cell) else {
            return;
        };
        counter
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        namespace: Arc::clone(&series.labels.namespace),
                        ingress: Arc::clone(&series.labels.ingress),
                        host: Arc::clone(&series.labels.host),
                        method,
                        status,
                    })
                    .clone()
            })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_series_are_labelled_by_route_not_path() {
        let metrics = Metrics::new();
        let labels = RequestLabels {
            namespace: "shop".into(),
            ingress: "web".into(),
            host: "shop.example".into(),
            method: MethodLabel::from(&http::Method::from_bytes(b"PROPFIND").unwrap()),
            status: StatusClass::from(http::StatusCode::BAD_GATEWAY),
        };
        metrics.requests.get_or_create(&labels).inc();
        let text = metrics.encode();
        assert!(
            text.contains(r#"sluice_http_requests_total{namespace="shop",ingress="web",host="shop.example",method="OTHER",status="5xx"} 1"#),
            "{text}"
        );
    }
}
