//! One Cache policy at run time: its in-memory store, its flights of coalesced misses, its
//! Redis layer and its counters. Kept across snapshots while the policy's store settings do
//! not change, so a configuration change elsewhere does not empty the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

use super::semantics::Standing;
use super::shared;
use super::store::{CacheKey, Flights, MemoryStore, PurgeTarget, StoredResponse, cache_key};
use super::{CacheKeyPart, CachePolicy};
use crate::metrics::CacheCounters;
use crate::ratelimit::RequestView;
use crate::ratelimit::redis::{RedisCheckError, SharedRedis};

pub struct PolicyCache {
    pub policy: Arc<CachePolicy>,
    /// Stands for the rules entries were stored under; part of every key.
    fingerprint: [u8; 8],
    /// Counts purges, so a response fetched before a purge is not stored after it.
    purges: Arc<AtomicU64>,
    memory: MemoryStore,
    pub flights: Arc<Flights>,
    pub counters: CacheCounters,
    /// Set when the policy asks for the Redis layer and Sluice has a Redis.
    redis: Option<SharedRedis>,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache")
            .field("policy", &self.policy.name)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl PolicyCache {
    pub fn new(
        policy: Arc<CachePolicy>,
        counters: CacheCounters,
        redis: Option<SharedRedis>,
    ) -> PolicyCache {
        let memory = MemoryStore::new(policy.memory_max_size, counters.evictions.clone());
        PolicyCache {
            redis: redis.filter(|_| policy.redis.is_some()),
            fingerprint: fingerprint(&policy),
            purges: Arc::default(),
            policy,
            memory,
            flights: Arc::default(),
            counters,
        }
    }

    /// The same cache under a changed policy. Its memory stays when its size does, but
    /// entries stored under other rules are never found again (the key holds the rules'
    /// fingerprint) and age out; in Redis too.
    pub fn under(
        old: &PolicyCache,
        policy: Arc<CachePolicy>,
        redis: Option<SharedRedis>,
    ) -> PolicyCache {
        if old.policy.memory_max_size != policy.memory_max_size {
            return PolicyCache::new(policy, old.counters.clone(), redis);
        }
        PolicyCache {
            redis: redis.filter(|_| policy.redis.is_some()),
            fingerprint: fingerprint(&policy),
            purges: Arc::clone(&old.purges),
            policy,
            memory: old.memory.clone(),
            flights: Arc::clone(&old.flights),
            counters: old.counters.clone(),
        }
    }

    /// The key a request is stored under (see [`cache_key`]).
    pub fn key_of(&self, request: &RequestView<'_>, authority: &[u8]) -> CacheKey {
        cache_key(
            &self.policy.name,
            &self.fingerprint,
            &self.policy.key,
            request,
            authority,
        )
    }

    /// Whether the key is made of method, host, path and query only (no header or cookie).
    pub fn key_reads_no_headers(&self) -> bool {
        self.policy.key.iter().all(|part| {
            matches!(
                part,
                CacheKeyPart::Method
                    | CacheKeyPart::Host
                    | CacheKeyPart::Path
                    | CacheKeyPart::Query
            )
        })
    }

    /// The stored variant for `key` in this replica's memory, Redis left alone.
    pub fn memory_lookup(
        &self,
        key: &CacheKey,
        headers: &HeaderMap,
    ) -> Option<Arc<StoredResponse>> {
        self.memory.lookup(key, headers)
    }

    /// How many purges have run; a fill that started before one does not store.
    pub fn purges(&self) -> u64 {
        self.purges.load(Ordering::Acquire)
    }

    /// The stored response for `key` that answers a request with `headers` (the headers
    /// the upstream would get): from memory, else from Redis. A stored response that is
    /// no longer fresh is checked against Redis too, where another replica may have put a
    /// newer one.
    pub async fn lookup(&self, key: &CacheKey, headers: &HeaderMap) -> Option<Arc<StoredResponse>> {
        let local = self.memory.lookup(key, headers);
        let now = tokio::time::Instant::now();
        let fresh = local
            .as_ref()
            .is_some_and(|stored| matches!(stored.standing(now), Standing::Fresh { .. }));
        let Some(redis) = self.redis.as_ref().filter(|_| !fresh) else {
            return local;
        };
        let variants = match shared::fetch(redis, &self.policy.name, key).await {
            Ok(variants) => variants,
            Err(error) => {
                self.redis_failed(&error);
                return local;
            }
        };
        let shared = variants
            .iter()
            .find(|variant| variant.matches(headers))
            .cloned();
        let newer = match (&local, shared) {
            (Some(local), Some(shared)) if shared.age(now) < local.age(now) => Some(shared),
            (None, Some(shared)) => Some(shared),
            _ => None,
        };
        let Some(newer) = newer else {
            return local;
        };
        // Oldest first, so the store keeps Redis's order (newest first).
        for variant in variants.into_iter().rev() {
            self.memory.insert(*key, variant);
        }
        self.counters
            .stored_bytes
            .set(i64::try_from(self.memory.approximate_bytes()).unwrap_or(i64::MAX));
        Some(newer)
    }

    /// Stores a response in memory, and in Redis in the background.
    pub fn insert(&self, key: CacheKey, response: Arc<StoredResponse>) {
        self.memory.insert(key, response);
        self.counters
            .stored_bytes
            .set(i64::try_from(self.memory.approximate_bytes()).unwrap_or(i64::MAX));
        let (Some(redis), Some(layer)) = (&self.redis, self.policy.redis) else {
            return;
        };
        let variants = self.memory.variants(&key);
        let redis = Arc::clone(redis);
        let name = self.policy.name.clone();
        let errors = self.counters.redis_errors.clone();
        tokio::spawn(async move {
            let written =
                shared::store(&redis, &name, &key, &variants, layer.ttl_jitter_percent).await;
            if let Err(error) = written {
                if error != RedisCheckError::BreakerOpen {
                    errors.inc();
                }
                tracing::debug!(policy = %name, %error, "cache entry not written to Redis");
            }
        });
    }

    /// Drops every variant of `key`, here and in Redis (in the background).
    pub fn remove(&self, key: &CacheKey) {
        self.memory.remove(key);
        let Some(redis) = &self.redis else {
            return;
        };
        let (redis, entry) = (Arc::clone(redis), shared::entry_key(&self.policy.name, key));
        tokio::spawn(async move {
            let mut connection = redis.connection();
            let mut command = redis::cmd("DEL");
            command.arg(entry);
            let _ = redis
                .guarded(async move {
                    command
                        .query_async::<i64>(&mut connection)
                        .await
                        .map_err(|error| RedisCheckError::Failed(error.to_string()))
                })
                .await;
        });
    }

    /// Drops what `target` names from this replica's memory; how many keys went.
    pub fn purge_memory(&self, target: &PurgeTarget) -> usize {
        self.purges.fetch_add(1, Ordering::AcqRel);
        let purged = self.memory.purge(target);
        self.counters
            .stored_bytes
            .set(i64::try_from(self.memory.approximate_bytes()).unwrap_or(i64::MAX));
        purged
    }

    /// Drops what `target` names from Redis; how many keys went (0 without Redis).
    pub async fn purge_shared(&self, target: &PurgeTarget) -> Result<u64, RedisCheckError> {
        match &self.redis {
            Some(redis) => shared::purge(redis, &self.policy.name, target).await,
            None => Ok(0),
        }
    }

    pub fn uses_redis(&self) -> bool {
        self.redis.is_some()
    }

    fn redis_failed(&self, error: &RedisCheckError) {
        // An open breaker is Redis already known to be away: no new failure.
        if *error != RedisCheckError::BreakerOpen {
            self.counters.redis_errors.inc();
        }
    }
}

/// A digest of what decides how entries are stored and whom they answer: changing any of
/// it makes earlier entries unreachable.
fn fingerprint(policy: &CachePolicy) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let described = format!(
        "{:?}|{:?}|{:?}|{:?}|{}",
        policy.rules,
        policy.key,
        policy.bypass_headers,
        policy.bypass_cookies,
        policy.max_object_size
    );
    let digest = Sha256::digest(described.as_bytes());
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&digest[..8]);
    fingerprint
}
