//! The in-memory layer of the response cache: stored responses by key and variant, bounded
//! by their size in bytes, and the coalescing of concurrent misses for one key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AGE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use super::semantics::{Lifetime, Standing, vary_values};
use crate::ratelimit::RequestView;
use crate::snapshot::ObjectRef;

/// What a cache key is made of (`spec.key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKeyPart {
    /// GET and HEAD count as one: a stored GET answers a HEAD.
    Method,
    Host,
    Path,
    /// The raw query string, as the client sent it.
    Query,
    /// Lower-case header name.
    Header(String),
    Cookie(String),
}

/// A stored response's key: SHA-256 over the policy, the scheme and each key part, so keys are short,
/// the same on every replica, and not open to aimed collisions.
pub type CacheKey = [u8; 32];

/// The key of `request` under a policy's key parts. `fingerprint` stands for the policy's
/// rules, so entries stored under other rules are never found. `authority` is the `Host`
/// as it goes upstream (port and case as sent): the `host` part uses it, since the
/// upstream may build links and redirects from it.
pub fn cache_key(
    policy: &ObjectRef,
    fingerprint: &[u8],
    parts: &[CacheKeyPart],
    request: &RequestView<'_>,
    authority: &[u8],
) -> CacheKey {
    let mut digest = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        digest.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        digest.update(bytes);
    };
    feed(policy.namespace.as_bytes());
    feed(policy.name.as_bytes());
    feed(fingerprint);
    // Always part of the key: an upstream that redirects plain HTTP to HTTPS must not have
    // that redirect served to HTTPS clients.
    feed(if request.https { b"https" } else { b"http" });
    for part in parts {
        match part {
            CacheKeyPart::Method => {
                let method = if *request.method == Method::HEAD {
                    &Method::GET
                } else {
                    request.method
                };
                feed(method.as_str().as_bytes());
            }
            CacheKeyPart::Host => feed(authority),
            CacheKeyPart::Path => feed(request.path.as_bytes()),
            CacheKeyPart::Query => match request.query {
                Some(query) => {
                    feed(b"\x01");
                    feed(query.as_bytes());
                }
                None => feed(b"\x00"),
            },
            CacheKeyPart::Header(name) => {
                let values = request.headers.get_all(name.as_str());
                feed(
                    &u32::try_from(values.iter().count())
                        .unwrap_or(u32::MAX)
                        .to_be_bytes(),
                );
                for value in values {
                    feed(value.as_bytes());
                }
            }
            CacheKeyPart::Cookie(name) => {
                match crate::ratelimit::cookie_value(request.headers, name) {
                    Some(value) => {
                        feed(b"\x01");
                        feed(value);
                    }
                    None => feed(b"\x00"),
                }
            }
        }
    }
    digest.finalize().into()
}

/// A response as stored: its head without hop-by-hop fields, its whole body, and what
/// decides when it may be served.
#[derive(Debug)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub stored_at: Instant,
    /// How old it already was when stored.
    pub initial_age: Duration,
    pub lifetime: Lifetime,
    /// The request headers it varies on, and their values in the request it answered.
    pub vary: Vec<HeaderName>,
    pub vary_values: Vec<Option<Vec<u8>>>,
    /// Whether it may answer a request from an authenticated client (RFC 9111 §3.5).
    pub shared_with_authenticated: bool,
    /// The host and path (with query) of the request it answered, for purges.
    pub origin: Origin,
}

/// Where a stored response came from, as purges name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub host: String,
    pub path_and_query: String,
}

/// Which stored responses a purge removes: one URL exactly, or every path under a prefix
/// of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    Exact {
        host: String,
        path_and_query: String,
    },
    Prefix {
        host: String,
        path_prefix: String,
    },
}

impl PurgeTarget {
    pub fn matches(&self, origin: &Origin) -> bool {
        match self {
            PurgeTarget::Exact {
                host,
                path_and_query,
            } => origin.host == *host && origin.path_and_query == *path_and_query,
            PurgeTarget::Prefix { host, path_prefix } => {
                origin.host == *host && origin.path_and_query.starts_with(path_prefix.as_str())
            }
        }
    }
}

impl StoredResponse {
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age
            .saturating_add(now.saturating_duration_since(self.stored_at))
    }

    pub fn standing(&self, now: Instant) -> Standing {
        self.lifetime.standing(self.age(now))
    }

    /// Whether it answers a request with these headers (its `Vary`).
    pub fn matches(&self, request: &HeaderMap) -> bool {
        vary_values(request, &self.vary) == self.vary_values
    }

    /// Its headers as served now: `Age` in whole seconds.
    pub fn headers_at(&self, now: Instant) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.insert(AGE, HeaderValue::from(self.age(now).as_secs()));
        headers
    }

    /// Bytes it costs the store (body, header names and values, a fixed overhead).
    fn weight(&self) -> u32 {
        let head: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        u32::try_from(self.body.len() + head + 256).unwrap_or(u32::MAX)
    }
}

/// At most this many variants are kept per key (one per `Accept-Encoding`, say); the
/// oldest goes first.
const MAX_VARIANTS: usize = 8;

/// The variants of one key, newest first.
#[derive(Debug, Clone, Default)]
struct Variants(Vec<Arc<StoredResponse>>);

impl Variants {
    fn weight(&self) -> u32 {
        self.0
            .iter()
            .map(|variant| variant.weight())
            .fold(0u32, u32::saturating_add)
    }
}

/// Stored responses by key, bounded by their total size. Clones share one store.
#[derive(Clone)]
pub struct MemoryStore {
    entries: moka::sync::Cache<CacheKey, Arc<Variants>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store of at most `max_bytes`; `evictions` counts responses dropped for room.
    pub fn new(max_bytes: u64, evictions: Counter) -> MemoryStore {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key, variants: &Arc<Variants>| variants.weight())
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        MemoryStore { entries }
    }

    /// The stored variant of `key` that answers a request with these headers.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Option<Arc<StoredResponse>> {
        let variants = self.entries.get(key)?;
        variants
            .0
            .iter()
            .find(|variant| variant.matches(request))
            .cloned()
    }

    /// Stores `response` under `key`, in place of the variant it replaces. Atomic per key
    /// (moka's key lock): concurrent inserts of two variants keep both.
    pub fn insert(&self, key: CacheKey, response: Arc<StoredResponse>) {
        self.entries.entry(key).and_compute_with(|existing| {
            let mut variants: Vec<Arc<StoredResponse>> = existing
                .map(|entry| entry.into_value().0.clone())
                .unwrap_or_default();
            variants.retain(|variant| {
                !(variant.vary == response.vary && variant.vary_values == response.vary_values)
            });
            variants.insert(0, response);
            variants.truncate(MAX_VARIANTS);
            moka::ops::compute::Op::Put(Arc::new(Variants(variants)))
        });
    }

    /// Drops every variant of `key`.
    pub fn remove(&self, key: &CacheKey) {
        self.entries.invalidate(key);
    }

    /// Every variant stored under `key`, newest first.
    pub fn variants(&self, key: &CacheKey) -> Vec<Arc<StoredResponse>> {
        self.entries
            .get(key)
            .map(|variants| variants.0.clone())
            .unwrap_or_default()
    }

    /// Drops every key with a variant `target` names; how many keys went. A walk over the
    /// whole store: purges are rare, lookups are not, so lookups get no index to keep.
    pub fn purge(&self, target: &PurgeTarget) -> usize {
        let doomed: Vec<CacheKey> = self
            .entries
            .iter()
            .filter(|(_, variants)| {
                variants
                    .0
                    .iter()
                    .any(|variant| target.matches(&variant.origin))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in &doomed {
            self.entries.invalidate(key);
        }
        doomed.len()
    }

    /// Bytes stored, as last counted (no waiting on moka's pending work).
    pub fn approximate_bytes(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Bytes stored (moka's weighted size, after its pending work).
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// Concurrent misses for one key: the first request (the leader) goes upstream, the others
/// wait for it, then look the key up again.
pub struct Flights {
    flights: moka::sync::Cache<CacheKey, Arc<watch::Sender<bool>>>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

/// A request's place in a flight.
pub enum Flight {
    /// Go upstream; waiters are released when this is dropped, however the request ends.
    Leader(LeaderGuard),
    /// Another request is upstream for this key: wait for it.
    Follower(watch::Receiver<bool>),
}

/// Owns its place (an `Arc` of the flights), so it can move into a background refresh or
/// into the body copy whose end completes the flight.
pub struct LeaderGuard {
    flights: Arc<Flights>,
    key: CacheKey,
    done: Arc<watch::Sender<bool>>,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.flights.flights.invalidate(&self.key);
        self.done.send_replace(true);
    }
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            // A bound for safety only: flights end within a request's time.
            flights: moka::sync::Cache::builder().max_capacity(100_000).build(),
        }
    }
}

impl Flights {
    /// Joins the flight for `key`, leading it when there is none.
    pub fn join(self: &Arc<Self>, key: CacheKey) -> Flight {
        let entry = self
            .flights
            .entry(key)
            .or_insert_with(|| Arc::new(watch::channel(false).0));
        if entry.is_fresh() {
            Flight::Leader(LeaderGuard {
                flights: Arc::clone(self),
                key,
                done: entry.into_value(),
            })
        } else {
            Flight::Follower(entry.into_value().subscribe())
        }
    }
}

/// Waits until the leader is done, at most `bound`; whether it finished in time.
pub async fn wait_for_leader(mut done: watch::Receiver<bool>, bound: Duration) -> bool {
    tokio::time::timeout(bound, done.wait_for(|finished| *finished))
        .await
        .is_ok_and(|waited| waited.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::semantics::vary_names;

    fn request<'a>(
        headers: &'a HeaderMap,
        method: &'a Method,
        query: Option<&'a str>,
    ) -> RequestView<'a> {
        RequestView {
            client_ip: "10.0.0.1".parse().unwrap(),
            host: "shop.test",
            path: "/items",
            query,
            method,
            headers,
            https: false,
        }
    }

    fn stored(vary: &[(&str, &str)], request: &HeaderMap, body: &str) -> Arc<StoredResponse> {
        let headers = crate::proxy::headers::header_map(vary);
        let names = vary_names(&headers).unwrap();
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            vary_values: vary_values(request, &names),
            vary: names,
            headers,
            body: Bytes::from(body.to_owned()),
            stored_at: Instant::now(),
            initial_age: Duration::from_secs(2),
            lifetime: Lifetime {
                fresh_for: Duration::from_secs(60),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                revalidate_always: false,
            },
            shared_with_authenticated: false,
            origin: Origin {
                host: "shop.test".into(),
                path_and_query: format!("/{body}"),
            },
        })
    }

    #[test]
    fn keys_differ_by_each_part_and_head_shares_get() {
        let policy = ObjectRef::new("shop", "pages");
        let parts = [
            CacheKeyPart::Method,
            CacheKeyPart::Host,
            CacheKeyPart::Path,
            CacheKeyPart::Query,
            CacheKeyPart::Cookie("lang".into()),
        ];
        let none = HeaderMap::new();
        let key = |headers: &HeaderMap, method: &Method, query| {
            cache_key(
                &policy,
                b"f",
                &parts,
                &request(headers, method, query),
                b"shop.test",
            )
        };
        let base = key(&none, &Method::GET, Some("a=1"));
        assert_eq!(base, key(&none, &Method::HEAD, Some("a=1")));
        assert_ne!(base, key(&none, &Method::GET, Some("a=2")));
        assert_ne!(base, key(&none, &Method::GET, None));
        assert_ne!(
            key(&none, &Method::GET, Some("")),
            key(&none, &Method::GET, None)
        );
        let mut french = HeaderMap::new();
        french.insert("cookie", HeaderValue::from_static("lang=fr; id=7"));
        let mut other_id = HeaderMap::new();
        other_id.insert("cookie", HeaderValue::from_static("id=8; lang=fr"));
        assert_ne!(base, key(&french, &Method::GET, Some("a=1")));
        assert_eq!(
            key(&french, &Method::GET, Some("a=1")),
            key(&other_id, &Method::GET, Some("a=1")),
            "only the named cookie counts"
        );
        let plain = request(&none, &Method::GET, Some("a=1"));
        let other_policy = cache_key(
            &ObjectRef::new("shop", "other"),
            b"f",
            &parts,
            &plain,
            b"shop.test",
        );
        assert_ne!(base, other_policy);
        let other_rules = cache_key(&policy, b"g", &parts, &plain, b"shop.test");
        assert_ne!(base, other_rules, "other rules, other entries");
        let with_port = cache_key(&policy, b"f", &parts, &plain, b"shop.test:6666");
        assert_ne!(base, with_port, "the Host as sent upstream counts");
        let mut secure = request(&none, &Method::GET, Some("a=1"));
        secure.https = true;
        assert_ne!(
            base,
            cache_key(&policy, b"f", &parts, &secure, b"shop.test"),
            "the scheme counts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn variants_are_kept_apart_and_replaced_in_place() {
        let store = MemoryStore::new(1 << 20, Counter::default());
        let key = [7u8; 32];
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let mut brotli = HeaderMap::new();
        brotli.insert("accept-encoding", HeaderValue::from_static("br"));
        let vary = [("vary", "Accept-Encoding")];
        store.insert(key, stored(&vary, &gzip, "gzip body"));
        store.insert(key, stored(&vary, &brotli, "br body"));
        assert_eq!(store.lookup(&key, &gzip).unwrap().body, "gzip body");
        assert_eq!(store.lookup(&key, &brotli).unwrap().body, "br body");
        assert!(
            store.lookup(&key, &HeaderMap::new()).is_none(),
            "no Accept-Encoding: another variant"
        );
        store.insert(key, stored(&vary, &gzip, "gzip again"));
        assert_eq!(store.lookup(&key, &gzip).unwrap().body, "gzip again");
        assert_eq!(store.lookup(&key, &brotli).unwrap().body, "br body");
        store.remove(&key);
        assert!(store.lookup(&key, &gzip).is_none());
    }

    #[test]
    fn purges_remove_one_url_or_everything_under_a_prefix() {
        let store = MemoryStore::new(1 << 20, Counter::default());
        let none = HeaderMap::new();
        for (index, body) in ["items/1", "items/2", "itemsx", "about"].iter().enumerate() {
            store.insert([u8::try_from(index).unwrap(); 32], stored(&[], &none, body));
        }
        let exact = PurgeTarget::Exact {
            host: "shop.test".into(),
            path_and_query: "/items/1".into(),
        };
        assert_eq!(store.purge(&exact), 1);
        assert!(store.lookup(&[0; 32], &none).is_none());
        let other_host = PurgeTarget::Prefix {
            host: "other.test".into(),
            path_prefix: "/".into(),
        };
        assert_eq!(store.purge(&other_host), 0);
        let prefix = PurgeTarget::Prefix {
            host: "shop.test".into(),
            path_prefix: "/items/".into(),
        };
        assert_eq!(store.purge(&prefix), 1, "/itemsx is not under /items/");
        assert!(store.lookup(&[1; 32], &none).is_none());
        assert!(store.lookup(&[2; 32], &none).is_some());
        assert!(store.lookup(&[3; 32], &none).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn age_grows_while_stored() {
        let response = stored(&[], &HeaderMap::new(), "x");
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert_eq!(response.age(now), Duration::from_secs(12));
        assert_eq!(response.headers_at(now)[AGE], "12");
        assert!(matches!(response.standing(now), Standing::Fresh { .. }));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(response.standing(Instant::now()), Standing::Expired);
    }

    #[test]
    fn the_store_stays_within_its_size() {
        let evictions = Counter::default();
        let store = MemoryStore::new(64 * 1024, evictions.clone());
        let body = "x".repeat(4096);
        for index in 0..100u8 {
            store.insert([index; 32], stored(&[], &HeaderMap::new(), &body));
        }
        assert!(store.bytes() <= 64 * 1024, "{}", store.bytes());
        assert!(evictions.get() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_have_one_leader_and_followers_are_released_when_it_ends() {
        let flights = Arc::new(Flights::default());
        let key = [1u8; 32];
        let leader = match flights.join(key) {
            Flight::Leader(guard) => guard,
            Flight::Follower(_) => panic!("the first request leads"),
        };
        let followers: Vec<_> = (0..99)
            .map(|_| match flights.join(key) {
                Flight::Follower(done) => done,
                Flight::Leader(_) => panic!("only one leader"),
            })
            .collect();
        let waiting = tokio::spawn(async move {
            let mut released = 0;
            for done in followers {
                released += usize::from(wait_for_leader(done, Duration::from_secs(5)).await);
            }
            released
        });
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(leader);
        assert_eq!(waiting.await.unwrap(), 99);
        // The flight is over: the next miss leads again.
        assert!(matches!(flights.join(key), Flight::Leader(_)));
        // A leader that never finishes releases nobody early; the wait is bounded.
        let _stuck = flights.join([2u8; 32]);
        let Flight::Follower(done) = flights.join([2u8; 32]) else {
            panic!("a follower");
        };
        assert!(!wait_for_leader(done, Duration::from_secs(1)).await);
    }
}
