//! Snapshot delivery: the data plane's current state, swapped atomically per generation.
//!
//! Requests load one `Arc<LiveState>` from an [`ArcSwap`] (no lock shared with the
//! controller) and keep it for their whole life, so a swap never disturbs requests in
//! flight, and keep-alive connections simply see the new routes on their next request.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::auth::AuthContext;
use crate::auth::jwks::{RemoteJwks, RemoteKeySets};
use crate::balance::{BackendBalancer, BalancerClock, HealthConfig};
use crate::cache::policy_cache::PolicyCache;
use crate::cache::store::PurgeTarget;
use crate::metrics::{
    AuthCounters, BackendLabels, Metrics, RouteLabels, RouteSeries, TlsCertificateLabels,
};
use crate::ratelimit::PolicyLimiter;
use crate::ratelimit::redis::SharedRedis;
use crate::router::RouteMatch;
use crate::snapshot::{BackendKey, ObjectRef, RouteTable, Snapshot, TlsTable};
use crate::upstream::UpstreamTable;

/// Keys each rate-limit policy keeps unless told otherwise.
pub const DEFAULT_RATE_LIMIT_KEYS: u64 = 100_000;

/// One snapshot together with the balancers of its backends and the metric series of its
/// routes.
#[derive(Debug)]
pub struct LiveState {
    pub snapshot: Arc<Snapshot>,
    balancers: HashMap<BackendKey, Arc<BackendBalancer>>,
    /// One cell per route slot, filled on the route's first request; shared by every
    /// generation with the same route table.
    route_series: Arc<[OnceLock<Arc<RouteSeries>>]>,
    /// The counters of every rate-limit policy some route uses.
    limiters: HashMap<ObjectRef, Arc<PolicyLimiter>>,
    auth_counters: HashMap<ObjectRef, Arc<AuthCounters>>,
    /// The stores of every Cache policy some route uses.
    caches: HashMap<ObjectRef, Arc<PolicyCache>>,
    /// The key sets fetched for the routes' `jwksUri`s, each refreshed in the background.
    remote_keys: Arc<RemoteKeySets>,
    redis: Option<SharedRedis>,
    /// The upstream TLS configurations the routes need, built off the request path.
    pub upstreams: Arc<UpstreamTable>,
}

/// What building a [`LiveState`] needs besides the snapshot.
#[derive(Debug, Clone)]
struct LiveSettings {
    clock: BalancerClock,
    health: HealthConfig,
    rate_limit_keys: u64,
    metrics: Arc<Metrics>,
    redis: Option<SharedRedis>,
    /// The cache's own connection and breaker: a large entry or a purge never holds up a
    /// rate-limit check, and cache failures never open the rate limiter's breaker.
    cache_redis: Option<SharedRedis>,
    /// Numbers prepared upstreams, so traffic threads can key their pools by them.
    upstream_ids: Arc<AtomicU64>,
}

impl LiveState {
    fn build(
        snapshot: Arc<Snapshot>,
        previous: Option<&LiveState>,
        settings: &LiveSettings,
    ) -> Self {
        let LiveSettings { clock, health, .. } = *settings;
        let balancers = snapshot
            .backends
            .backends
            .iter()
            .map(|(key, backend)| {
                let old = previous.and_then(|p| p.balancers.get(key));
                let balancer = match old {
                    // Unchanged endpoints: keep the very same balancer and its counters.
                    Some(old) if old.spec == *backend => Arc::clone(old),
                    _ => Arc::new(BackendBalancer::new(
                        key.clone(),
                        backend.clone(),
                        old.map(Arc::as_ref),
                        clock,
                        health,
                    )),
                };
                (key.clone(), balancer)
            })
            .collect();
        let route_series = match previous {
            Some(previous) if Arc::ptr_eq(&previous.snapshot.routes, &snapshot.routes) => {
                Arc::clone(&previous.route_series)
            }
            _ => (0..snapshot.routes.slots)
                .map(|_| OnceLock::new())
                .collect(),
        };
        let limiters = match previous {
            Some(previous) if Arc::ptr_eq(&previous.snapshot.routes, &snapshot.routes) => {
                previous.limiters.clone()
            }
            _ => build_limiters(&snapshot.routes, previous, settings),
        };
        let auth_counters = match previous {
            Some(previous) if Arc::ptr_eq(&previous.snapshot.routes, &snapshot.routes) => {
                previous.auth_counters.clone()
            }
            _ => build_auth_counters(&snapshot.routes, settings),
        };
        let caches = match previous {
            Some(previous) if Arc::ptr_eq(&previous.snapshot.routes, &snapshot.routes) => {
                previous.caches.clone()
            }
            _ => build_caches(&snapshot.routes, previous, settings),
        };
        let remote_keys = match previous {
            Some(previous) if Arc::ptr_eq(&previous.snapshot.routes, &snapshot.routes) => {
                Arc::clone(&previous.remote_keys)
            }
            _ => Arc::new(build_remote_keys(&snapshot.routes, previous, settings)),
        };
        let upstreams = match previous {
            Some(previous) if Arc::ptr_eq(&previous.snapshot.routes, &snapshot.routes) => {
                Arc::clone(&previous.upstreams)
            }
            _ => Arc::new(UpstreamTable::build(
                &snapshot.routes,
                previous.map(|previous| previous.upstreams.as_ref()),
                &settings.upstream_ids,
            )),
        };
        LiveState {
            snapshot,
            balancers,
            route_series,
            limiters,
            auth_counters,
            caches,
            remote_keys,
            redis: settings.redis.clone(),
            upstreams,
        }
    }

    /// The counters of a rate-limit policy in this state.
    pub fn limiter(&self, policy: &ObjectRef) -> Option<&Arc<PolicyLimiter>> {
        self.limiters.get(policy)
    }

    pub fn auth_counters(&self, policy: &ObjectRef) -> Option<&Arc<AuthCounters>> {
        self.auth_counters.get(policy)
    }

    /// The store of a Cache policy in this state.
    pub fn cache(&self, policy: &ObjectRef) -> Option<&Arc<PolicyCache>> {
        self.caches.get(policy)
    }

    /// What Auth checks need besides the request.
    pub fn auth_context(&self) -> AuthContext<'_> {
        AuthContext {
            remote_keys: Some(&self.remote_keys),
            redis: self.redis.as_deref(),
        }
    }

    pub fn balancer(&self, key: &BackendKey) -> Option<&Arc<BackendBalancer>> {
        self.balancers.get(key)
    }

    /// The metric series of a matched route, made on its first request.
    pub fn route_series(&self, matched: &RouteMatch<'_>, metrics: &Metrics) -> Arc<RouteSeries> {
        let make = || {
            Arc::new(metrics.route_series(RouteLabels {
                namespace: matched.target.owner.namespace.as_str().into(),
                ingress: matched.target.owner.name.as_str().into(),
                host: matched.virtual_host.into(),
            }))
        };
        let slot = usize::try_from(matched.target.slot).unwrap_or(usize::MAX);
        match self.route_series.get(slot) {
            Some(cell) => Arc::clone(cell.get_or_init(make)),
            // A table nobody numbered: still correct, only slower.
            None => make(),
        }
    }
}

/// One limiter per policy the routes use; a policy whose spec did not change keeps its
/// counters, so a snapshot change never resets anyone's limit.
fn build_limiters(
    routes: &RouteTable,
    previous: Option<&LiveState>,
    settings: &LiveSettings,
) -> HashMap<ObjectRef, Arc<PolicyLimiter>> {
    let mut limiters: HashMap<ObjectRef, Arc<PolicyLimiter>> = HashMap::new();
    for policy in routes
        .targets()
        .filter_map(|target| target.policies.as_deref())
        .flat_map(|policies| &policies.rate_limits)
    {
        if limiters.contains_key(&policy.name) {
            continue;
        }
        let kept = previous
            .and_then(|previous| previous.limiters.get(&policy.name))
            .filter(|old| old.policy == *policy);
        let limiter = match kept {
            Some(old) => Arc::clone(old),
            None => Arc::new(PolicyLimiter::new(
                Arc::clone(policy),
                settings.rate_limit_keys,
                settings.redis.clone(),
                settings.metrics.rate_limit_counters(&policy.name),
            )),
        };
        limiters.insert(policy.name.clone(), limiter);
    }
    limiters
}

/// One store per Cache policy the routes use; a policy seen before keeps its entries (see
/// [`PolicyCache::under`]).
fn build_caches(
    routes: &RouteTable,
    previous: Option<&LiveState>,
    settings: &LiveSettings,
) -> HashMap<ObjectRef, Arc<PolicyCache>> {
    let mut caches: HashMap<ObjectRef, Arc<PolicyCache>> = HashMap::new();
    for policy in routes
        .targets()
        .filter_map(|target| target.policies.as_deref()?.cache.as_ref())
    {
        if caches.contains_key(&policy.name) {
            continue;
        }
        let old = previous.and_then(|previous| previous.caches.get(&policy.name));
        let cache = match old {
            Some(old) if old.policy == *policy => Arc::clone(old),
            Some(old) => Arc::new(PolicyCache::under(
                old,
                Arc::clone(policy),
                settings.cache_redis.clone(),
            )),
            None => Arc::new(PolicyCache::new(
                Arc::clone(policy),
                settings.metrics.cache_counters(&policy.name),
                settings.cache_redis.clone(),
            )),
        };
        caches.insert(policy.name.clone(), cache);
    }
    caches
}

/// The decision counters of every Auth policy the routes use.
fn build_auth_counters(
    routes: &RouteTable,
    settings: &LiveSettings,
) -> HashMap<ObjectRef, Arc<AuthCounters>> {
    routes
        .targets()
        .filter_map(|target| target.policies.as_deref()?.auth.as_ref())
        .map(|policy| {
            let counters = settings.metrics.auth_counters(&policy.name);
            (policy.name.clone(), Arc::new(counters))
        })
        .collect()
}

/// A fetcher for every `jwksUri` the routes name: the previous state's when it had one for
/// the same endpoint (its keys and schedule carry over), else a new one.
fn build_remote_keys(
    routes: &RouteTable,
    previous: Option<&LiveState>,
    settings: &LiveSettings,
) -> RemoteKeySets {
    let mut remote = RemoteKeySets::new();
    let endpoints = routes
        .targets()
        .filter_map(|target| target.policies.as_deref()?.auth.as_ref()?.jwt.as_ref())
        .filter_map(|rules| rules.remote.as_ref());
    for endpoint in endpoints {
        if remote.contains_key(endpoint) {
            continue;
        }
        let kept = previous.and_then(|previous| previous.remote_keys.get(endpoint));
        let fetcher = match kept {
            Some(old) => Arc::clone(old),
            None if tokio::runtime::Handle::try_current().is_ok() => RemoteJwks::start(
                endpoint.clone(),
                settings.metrics.jwks_counters(endpoint.label()),
            ),
            // No runtime to fetch in (a state built outside one): tokens for it fail.
            None => continue,
        };
        remote.insert(endpoint.clone(), fetcher);
    }
    remote
}

/// What a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Keys dropped from this replica's memory.
    pub memory_keys: usize,
    /// Keys deleted in Redis.
    pub redis_keys: u64,
    /// Whether the other replicas were told (only when a policy uses Redis).
    pub announced: bool,
    pub errors: Vec<String>,
}

/// Problems found by the controller, one line each (`Ingress shop/web: …`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigReport {
    pub problems: Vec<String>,
}

/// The data plane's handle on routing state: the controller side applies snapshots, the
/// request side loads them.
#[derive(Debug)]
pub struct DataPlane {
    live: ArcSwap<LiveState>,
    ready: AtomicBool,
    draining: AtomicBool,
    report: ArcSwap<ConfigReport>,
    settings: LiveSettings,
}

impl DataPlane {
    pub fn new(health: HealthConfig, metrics: Arc<Metrics>) -> Self {
        let settings = LiveSettings {
            clock: BalancerClock::new(),
            health,
            rate_limit_keys: DEFAULT_RATE_LIMIT_KEYS,
            metrics,
            redis: None,
            cache_redis: None,
            upstream_ids: Arc::new(AtomicU64::new(0)),
        };
        let empty = LiveState::build(Arc::new(Snapshot::empty(0)), None, &settings);
        DataPlane {
            live: ArcSwap::from_pointee(empty),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            report: ArcSwap::from_pointee(ConfigReport::default()),
            settings,
        }
    }

    /// Gives policies with `backend: redis` their shared Redis.
    pub fn with_redis(mut self, redis: SharedRedis) -> Self {
        self.settings.redis = Some(redis);
        self
    }

    /// Gives Cache policies with `redis.enabled` their Redis (a connection of their own).
    pub fn with_cache_redis(mut self, redis: SharedRedis) -> Self {
        self.settings.cache_redis = Some(redis);
        self
    }

    /// Bounds the keys each rate-limit policy keeps (see [`LocalLimiter`](crate::ratelimit::LocalLimiter)).
    pub fn with_rate_limit_keys(mut self, keys: u64) -> Self {
        self.settings.rate_limit_keys = keys.max(1);
        self
    }

    /// Removes what `target` names from every Cache policy: from this replica's memory,
    /// from Redis, and (through Redis pub/sub) from every other replica's memory.
    pub async fn purge_cache(&self, target: &PurgeTarget) -> PurgeReport {
        let live = self.load();
        let mut report = PurgeReport::default();
        let mut shared = false;
        for cache in live.caches.values() {
            report.memory_keys += cache.purge_memory(target);
            if cache.uses_redis() {
                shared = true;
                match cache.purge_shared(target).await {
                    Ok(keys) => report.redis_keys += keys,
                    Err(error) => report
                        .errors
                        .push(format!("{}: {error}", cache.policy.name)),
                }
            }
        }
        if let (true, Some(redis)) = (shared, &self.settings.cache_redis) {
            match crate::cache::shared::announce_purge(redis, target).await {
                Ok(()) => report.announced = true,
                Err(error) => report.errors.push(format!("announcing the purge: {error}")),
            }
        }
        report
    }

    /// Follows purges announced by other replicas, for as long as the process runs; does
    /// nothing without Redis. Call once, inside the runtime.
    pub fn follow_cache_purges(self: &Arc<Self>) {
        let Some(redis) = self.settings.cache_redis.clone() else {
            return;
        };
        let data_plane = Arc::downgrade(self);
        tokio::spawn(crate::cache::shared::follow_purges(redis, move |target| {
            let Some(data_plane) = data_plane.upgrade() else {
                return;
            };
            let live = data_plane.load();
            let purged: usize = live
                .caches
                .values()
                .map(|cache| cache.purge_memory(&target))
                .sum();
            tracing::debug!(
                ?target,
                purged,
                "cache purge announced by a replica applied"
            );
        }));
    }

    /// The state for one request.
    pub fn load(&self) -> Arc<LiveState> {
        self.live.load_full()
    }

    /// True once the first snapshot from the controller has been applied, until shutdown
    /// begins.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Shutdown has begun: report not ready so traffic moves elsewhere while requests drain.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The configuration problems of the last compile, as shown on `/readyz?verbose`.
    pub fn config_report(&self) -> Arc<ConfigReport> {
        self.report.load_full()
    }

    pub fn set_config_report(&self, report: ConfigReport) {
        self.settings
            .metrics
            .config_errors
            .set(i64::try_from(report.problems.len()).unwrap_or(i64::MAX));
        self.report.store(Arc::new(report));
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.settings.metrics
    }

    /// Installs a snapshot. Called from one task only (see [`follow_snapshots`]).
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let started = Instant::now();
        let previous = self.live.load_full();
        let next = LiveState::build(Arc::clone(&snapshot), Some(&previous), &self.settings);
        self.live.store(Arc::new(next));
        self.ready.store(true, Ordering::Release);
        self.record(&previous.snapshot, &snapshot);
        self.settings
            .metrics
            .snapshot_apply_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            generation = snapshot.generation,
            routes_reused = Arc::ptr_eq(&previous.snapshot.routes, &snapshot.routes),
            "snapshot applied"
        );
    }

    fn record(&self, previous: &Snapshot, snapshot: &Snapshot) {
        let metrics = &self.settings.metrics;
        metrics
            .snapshot_generation
            .set(i64::try_from(snapshot.generation).unwrap_or(i64::MAX));
        if !Arc::ptr_eq(&previous.routes, &snapshot.routes) {
            metrics
                .snapshot_routes
                .set(i64::try_from(route_count(&snapshot.routes)).unwrap_or(i64::MAX));
        }
        let current: BTreeSet<&BackendKey> = snapshot.backends.backends.keys().collect();
        for key in previous
            .backends
            .backends
            .keys()
            .filter(|k| !current.contains(k))
        {
            metrics.endpoints.remove(&backend_labels(key));
        }
        if !Arc::ptr_eq(&previous.tls, &snapshot.tls) {
            record_certificates(metrics, &previous.tls, &snapshot.tls);
        }
        for (key, backend) in &snapshot.backends.backends {
            metrics
                .endpoints
                .get_or_create(&backend_labels(key))
                .set(i64::try_from(backend.endpoints.len()).unwrap_or(i64::MAX));
        }
    }
}

/// Keeps one expiry series per served certificate: the old table's series go, the new
/// one's are set.
fn record_certificates(metrics: &Metrics, previous: &TlsTable, current: &TlsTable) {
    for labels in certificate_labels(previous) {
        metrics.tls_certificate_expiry.remove(&labels.0);
    }
    for (labels, not_after) in certificate_labels(current) {
        metrics
            .tls_certificate_expiry
            .get_or_create(&labels)
            .set(not_after);
    }
}

fn certificate_labels(table: &TlsTable) -> Vec<(TlsCertificateLabels, i64)> {
    let default = table
        .default
        .as_ref()
        .map(|certificate| ("*default*".to_owned(), certificate));
    table
        .sites()
        .map(|(host, site)| (host, &site.certificate))
        .chain(default)
        .map(|(host, certificate)| {
            (
                TlsCertificateLabels {
                    host: host.into(),
                    secret: certificate.source.to_string().into(),
                },
                certificate.not_after,
            )
        })
        .collect()
}

pub fn backend_labels(key: &BackendKey) -> BackendLabels {
    BackendLabels {
        backend: key.to_string().into(),
    }
}

fn route_count(routes: &RouteTable) -> usize {
    routes
        .exact_hosts
        .values()
        .chain(routes.wildcard_hosts.values())
        .chain(std::iter::once(&routes.any_host))
        .map(|host| host.exact_paths.len() + host.prefix_paths.len())
        .sum::<usize>()
        + usize::from(routes.default_backend.is_some())
}

/// What the controller publishes: a snapshot and the problems found while compiling it.
#[derive(Debug, Clone)]
pub struct Publication {
    pub snapshot: Arc<Snapshot>,
    pub report: Arc<ConfigReport>,
}

/// Applies every publication on `updates` until the sender goes away. `None` means
/// "nothing compiled yet": the data plane stays not ready.
pub async fn follow_snapshots(
    data_plane: Arc<DataPlane>,
    mut updates: watch::Receiver<Option<Publication>>,
) {
    loop {
        let latest = updates.borrow_and_update().clone();
        if let Some(publication) = latest {
            if !Arc::ptr_eq(&data_plane.load().snapshot, &publication.snapshot) {
                data_plane.apply(publication.snapshot);
            }
            if *data_plane.config_report() != *publication.report {
                data_plane.set_config_report(ConfigReport::clone(&publication.report));
            }
        }
        if updates.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Backend, BackendTable, Endpoint};

    fn key() -> BackendKey {
        BackendKey {
            namespace: "default".into(),
            service: "web".into(),
            port: 80,
        }
    }

    fn snapshot_with(generation: u64, addrs: &[&str]) -> Snapshot {
        let endpoints = addrs
            .iter()
            .map(|a| Endpoint::new(a.parse().unwrap()))
            .collect();
        let mut backends = BackendTable::default();
        backends
            .backends
            .insert(key(), Backend::new(endpoints, false));
        Snapshot {
            generation,
            routes: Arc::new(RouteTable::default()),
            backends: Arc::new(backends),
            tls: Arc::default(),
        }
    }

    fn target(ingress: &str, slot: u32) -> crate::snapshot::RouteTarget {
        crate::snapshot::RouteTarget {
            owner: crate::snapshot::ObjectRef::new("shop", ingress),
            backend: key(),
            balance: crate::snapshot::BalancePolicy::RoundRobin,
            policies: None,
            https: std::sync::Arc::default(),
            upstream: None,
            strict_paths: false,
            slot,
        }
    }

    #[test]
    fn route_series_are_made_once_per_slot_and_kept_while_the_routes_stay() {
        let metrics = Arc::new(Metrics::new());
        let plane = DataPlane::new(HealthConfig::default(), Arc::clone(&metrics));
        let mut routes = RouteTable::default();
        routes
            .any_host
            .prefix_paths
            .insert("/a".into(), target("a", 0));
        routes
            .any_host
            .prefix_paths
            .insert("/b".into(), target("b", 0));
        routes.number_targets();
        let first = Arc::new(Snapshot {
            generation: 1,
            routes: Arc::new(routes),
            backends: Arc::new(BackendTable::default()),
            tls: Arc::default(),
        });
        plane.apply(Arc::clone(&first));
        let live = plane.load();
        let series_of = |live: &LiveState, path: &str| {
            let matched = live.snapshot.routes.lookup("x", path).unwrap();
            live.route_series(&matched, &metrics)
        };
        let a = series_of(&live, "/a");
        assert!(Arc::ptr_eq(&a, &series_of(&live, "/a")));
        assert!(!Arc::ptr_eq(&a, &series_of(&live, "/b")));
        assert_eq!(&*series_of(&live, "/b").labels.ingress, "b");

        // An endpoint-only generation keeps the route table and so the series.
        plane.apply(Arc::new(
            first.with_backends(2, Arc::clone(&first.backends)),
        ));
        assert!(Arc::ptr_eq(&a, &series_of(&plane.load(), "/a")));

        metrics.count_request(
            &a,
            crate::metrics::MethodLabel::GET,
            crate::metrics::StatusClass::Success,
        );
        metrics.count_request(
            &a,
            crate::metrics::MethodLabel::GET,
            crate::metrics::StatusClass::Success,
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"sluice_http_requests_total{namespace="shop",ingress="a",host="",method="GET",status="2xx"} 2"#),
            "{text}"
        );
        assert!(!text.contains(r#"ingress="b",host="",method"#), "{text}");
    }

    #[test]
    fn an_unnumbered_target_still_gets_its_own_labels() {
        let metrics = Metrics::new();
        let mut routes = RouteTable::default();
        routes.any_host.prefix_paths.insert(
            "/a".into(),
            target("a", crate::snapshot::RouteTarget::UNNUMBERED),
        );
        let live = LiveState::build(
            Arc::new(Snapshot {
                generation: 1,
                routes: Arc::new(routes),
                backends: Arc::new(BackendTable::default()),
                tls: Arc::default(),
            }),
            None,
            &LiveSettings {
                clock: BalancerClock::new(),
                health: HealthConfig::default(),
                rate_limit_keys: 10,
                metrics: Arc::new(Metrics::new()),
                redis: None,
                cache_redis: None,
                upstream_ids: Arc::new(AtomicU64::new(0)),
            },
        );
        let matched = live.snapshot.routes.lookup("x", "/a").unwrap();
        assert_eq!(&*live.route_series(&matched, &metrics).labels.ingress, "a");
    }

    #[tokio::test]
    async fn becomes_ready_on_the_first_snapshot_and_keeps_unchanged_balancers() {
        let plane = Arc::new(DataPlane::new(
            HealthConfig::default(),
            Arc::new(Metrics::new()),
        ));
        let (publish, updates) = watch::channel(None);
        let follower = tokio::spawn(follow_snapshots(Arc::clone(&plane), updates));
        assert!(!plane.is_ready());

        let first = Arc::new(snapshot_with(1, &["127.0.0.1:80"]));
        publish.send_replace(Some(Publication {
            snapshot: Arc::clone(&first),
            report: Arc::new(ConfigReport {
                problems: vec!["Ingress a/b: broken".into()],
            }),
        }));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !plane.is_ready() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let before = Arc::clone(plane.load().balancer(&key()).unwrap());
        assert_eq!(
            plane.config_report().problems,
            vec!["Ingress a/b: broken".to_string()]
        );

        // Same endpoints, new generation: the balancer object is reused.
        plane.apply(Arc::new(
            first.with_backends(2, Arc::clone(&first.backends)),
        ));
        assert!(Arc::ptr_eq(&before, plane.load().balancer(&key()).unwrap()));
        assert_eq!(plane.load().snapshot.generation, 2);

        // Endpoint change: a new balancer, and the route table is still the same Arc.
        let changed = snapshot_with(3, &["127.0.0.1:80", "127.0.0.2:80"]);
        plane.apply(Arc::new(
            first.with_backends(3, Arc::clone(&changed.backends)),
        ));
        let live = plane.load();
        assert!(!Arc::ptr_eq(&before, live.balancer(&key()).unwrap()));
        assert!(Arc::ptr_eq(&first.routes, &live.snapshot.routes));
        assert!(
            plane
                .metrics()
                .encode()
                .contains(r#"sluice_backend_endpoints{backend="default/web:80"} 2"#)
        );

        drop(publish);
        follower.await.unwrap();
    }
}
