//! The response cache of `Cache` policies: the HTTP caching rules ([`semantics`]), the
//! in-memory store and coalescing ([`store`]), the body copy kept while a response streams
//! to its client ([`capture`]), and the policy as the snapshot carries it.

pub mod capture;
pub mod policy_cache;
pub mod semantics;
pub mod shared;
pub mod store;

use std::time::Duration;

use http::{HeaderName, Method};

use crate::snapshot::ObjectRef;
pub use semantics::CacheRules;
pub use store::CacheKeyPart;

/// A validated `Cache` policy, as the data plane enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    /// The policy object; a metrics label and part of every key it stores.
    pub name: ObjectRef,
    pub rules: CacheRules,
    /// What tells two requests apart (`spec.key`), in order.
    pub key: Vec<CacheKeyPart>,
    /// The methods served from the cache: GET, HEAD or both (HEAD shares GET's entries).
    pub methods: Vec<Method>,
    /// Responses with larger bodies are passed on, not stored.
    pub max_object_size: u64,
    /// The size of this policy's in-memory store in each replica.
    pub memory_max_size: u64,
    /// The shared second layer in Redis, when enabled (needs `--redis-url`).
    pub redis: Option<RedisLayer>,
    /// Requests carrying any of these headers go upstream untouched (lower-case names).
    pub bypass_headers: Vec<HeaderName>,
    /// Requests carrying any of these cookies go upstream untouched.
    pub bypass_cookies: Vec<String>,
}

/// How a policy uses Redis as its second layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisLayer {
    /// Each entry's Redis expiry is lengthened by up to this percentage, at random, so keys
    /// stored together do not all expire together.
    pub ttl_jitter_percent: u8,
}

impl CachePolicy {
    /// How long an entry is kept at most once stored: its whole servable life.
    pub fn longest_life(lifetime: &semantics::Lifetime) -> Duration {
        lifetime
            .fresh_for
            .saturating_add(lifetime.stale_while_revalidate.max(lifetime.stale_if_error))
    }
}
