//! The shared second layer of the cache, in Redis: entries written by one replica are hits
//! in every other, and purges reach every replica's memory through one pub/sub channel.
//!
//! Every exchange goes through the rate limiter's breaker and timeout
//! ([`RedisBackend::guarded`]): while Redis is away, lookups cost nothing and the cache
//! works from memory alone.
//!
//! Keys: `sluice:cache:{NS/NAME}:KEY` holds the variants of one cache key (hex SHA-256);
//! `sluice:cache:{NS/NAME}:index:HOST` is a sorted set of `KEY PATH` members scored by
//! their expiry, trimmed of expired members on every write, so a purge by path prefix
//! walks the live entries of one host and never the keyspace. The braces keep one
//! policy's keys in one Redis Cluster slot, which the store script needs.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::semantics::Lifetime;
use super::store::{CacheKey, Origin, PurgeTarget, StoredResponse};
use crate::ratelimit::redis::{RedisBackend, RedisCheckError};
use crate::snapshot::ObjectRef;

/// The channel purges are announced on.
pub const PURGE_CHANNEL: &str = "sluice:cache:purge";

/// Stores one entry and indexes it, on the server's clock. KEYS: the entry, the host's
/// index. ARGV: the value, its expiry in ms, the index member. Plain commands only (no
/// `PEXPIRE GT`), so any Redis from 2.6 on runs it.
const STORE_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expiry = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', expiry)
redis.call('ZADD', KEYS[2], now + expiry, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < expiry then
  redis.call('PEXPIRE', KEYS[2], expiry)
end
return 1
";

/// Index members a purge reads per round trip.
const PURGE_BATCH: usize = 512;

fn hex(key: &CacheKey) -> String {
    let mut text = String::with_capacity(64);
    for byte in key {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn key_prefix(policy: &ObjectRef) -> String {
    format!("sluice:cache:{{{}/{}}}:", policy.namespace, policy.name)
}

/// The Redis key of one cache key's variants.
pub fn entry_key(policy: &ObjectRef, key: &CacheKey) -> String {
    format!("{}{}", key_prefix(policy), hex(key))
}

fn index_key(policy: &ObjectRef, host: &str) -> String {
    format!("{}index:{host}", key_prefix(policy))
}

/// Looks `key` up in Redis: its variants, with their ages carried over, or nothing (also
/// when Redis cannot answer, or holds something this version cannot read).
pub async fn fetch(
    redis: &RedisBackend,
    policy: &ObjectRef,
    key: &CacheKey,
) -> Result<Vec<Arc<StoredResponse>>, RedisCheckError> {
    let mut connection = redis.connection();
    let mut command = redis::cmd("GET");
    command.arg(entry_key(policy, key));
    let value: Option<Vec<u8>> = redis
        .guarded(async move {
            command
                .query_async(&mut connection)
                .await
                .map_err(|error| RedisCheckError::Failed(error.to_string()))
        })
        .await?;
    Ok(value
        .and_then(|bytes| decode(&bytes, SystemTime::now(), Instant::now()))
        .unwrap_or_default())
}

/// Writes the variants of `key` to Redis, to expire when the longest-lived of them can no
/// longer be served, lengthened by up to `jitter_percent`.
pub async fn store(
    redis: &RedisBackend,
    policy: &ObjectRef,
    key: &CacheKey,
    variants: &[Arc<StoredResponse>],
    jitter_percent: u8,
) -> Result<(), RedisCheckError> {
    let now = Instant::now();
    let remaining = variants
        .iter()
        .map(|variant| {
            super::CachePolicy::longest_life(&variant.lifetime).saturating_sub(variant.age(now))
        })
        .max()
        .unwrap_or(Duration::ZERO);
    if remaining.is_zero() {
        return Ok(());
    }
    let Some(first) = variants.first() else {
        return Ok(());
    };
    let jitter = remaining.mul_f64(f64::from(jitter_percent.min(100)) / 100.0 * fastrand::f64());
    let expiry_ms = u64::try_from(remaining.saturating_add(jitter).as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let encoded = encode(variants, SystemTime::now(), now);
    let script = redis::Script::new(STORE_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation
        .key(entry_key(policy, key))
        .key(index_key(policy, &first.origin.host))
        .arg(encoded)
        .arg(expiry_ms)
        .arg(format!("{} {}", hex(key), first.origin.path_and_query));
    let mut connection = redis.connection();
    redis
        .guarded(async move {
            invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map(|_| ())
                .map_err(|error| RedisCheckError::Failed(error.to_string()))
        })
        .await
}

/// Removes what `target` names from one policy's entries in Redis; how many keys went.
/// Walks the host's index in batches (one short exchange each), so a large index never
/// holds Redis up the way one long script would.
pub async fn purge(
    redis: &RedisBackend,
    policy: &ObjectRef,
    target: &PurgeTarget,
) -> Result<u64, RedisCheckError> {
    let host = match target {
        PurgeTarget::Exact { host, .. } | PurgeTarget::Prefix { host, .. } => host,
    };
    let index = index_key(policy, host);
    let prefix = key_prefix(policy);
    let mut cursor = 0u64;
    let mut removed = 0u64;
    loop {
        let mut connection = redis.connection();
        let mut scan = redis::cmd("ZSCAN");
        scan.arg(&index).arg(cursor).arg("COUNT").arg(PURGE_BATCH);
        let (next, fields): (u64, Vec<String>) = redis
            .guarded(async move {
                scan.query_async(&mut connection)
                    .await
                    .map_err(|error| RedisCheckError::Failed(error.to_string()))
            })
            .await?;
        // Members and scores alternate.
        let doomed: Vec<&String> = fields
            .iter()
            .step_by(2)
            .filter(|member| {
                member.split_once(' ').is_some_and(|(_, path)| {
                    target.matches(&Origin {
                        host: host.clone(),
                        path_and_query: path.to_owned(),
                    })
                })
            })
            .collect();
        if !doomed.is_empty() {
            let mut pipeline = redis::pipe();
            for member in &doomed {
                let key = member
                    .split_once(' ')
                    .map_or(member.as_str(), |(key, _)| key);
                pipeline.cmd("DEL").arg(format!("{prefix}{key}"));
            }
            pipeline.cmd("ZREM").arg(&index).arg(&doomed).ignore();
            let mut connection = redis.connection();
            let deleted: Vec<u64> = redis
                .guarded(async move {
                    pipeline
                        .query_async(&mut connection)
                        .await
                        .map_err(|error| RedisCheckError::Failed(error.to_string()))
                })
                .await?;
            removed += deleted.iter().sum::<u64>();
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Tells every replica (this one too) to drop what `target` names from memory.
pub async fn announce_purge(
    redis: &RedisBackend,
    target: &PurgeTarget,
) -> Result<(), RedisCheckError> {
    let mut connection = redis.connection();
    let mut command = redis::cmd("PUBLISH");
    command.arg(PURGE_CHANNEL).arg(purge_message(target));
    redis
        .guarded(async move {
            command
                .query_async::<i64>(&mut connection)
                .await
                .map(|_| ())
                .map_err(|error| RedisCheckError::Failed(error.to_string()))
        })
        .await
}

/// `exact HOST PATH` or `prefix HOST PATH`, one space apart: neither a host nor a
/// normalised path holds a space.
pub fn purge_message(target: &PurgeTarget) -> String {
    match target {
        PurgeTarget::Exact {
            host,
            path_and_query,
        } => format!("exact {host} {path_and_query}"),
        PurgeTarget::Prefix { host, path_prefix } => format!("prefix {host} {path_prefix}"),
    }
}

pub fn parse_purge_message(message: &str) -> Option<PurgeTarget> {
    let mut fields = message.splitn(3, ' ');
    let (mode, host, path) = (fields.next()?, fields.next()?, fields.next()?);
    let (host, path) = (host.to_owned(), path.to_owned());
    match mode {
        "exact" => Some(PurgeTarget::Exact {
            host,
            path_and_query: path,
        }),
        "prefix" => Some(PurgeTarget::Prefix {
            host,
            path_prefix: path,
        }),
        _ => None,
    }
}

/// Listens on the purge channel for as long as the process runs, reconnecting after
/// failures, and hands every purge to `apply`.
pub async fn follow_purges(redis: Arc<RedisBackend>, apply: impl Fn(PurgeTarget) + Send) {
    use futures_util::StreamExt as _;
    let mut delay = Duration::from_millis(500);
    loop {
        match redis.client().get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(PURGE_CHANNEL).await {
                Ok(()) => {
                    delay = Duration::from_millis(500);
                    tracing::debug!("following cache purges on {PURGE_CHANNEL}");
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let payload: String = match message.get_payload() {
                            Ok(payload) => payload,
                            Err(_) => continue,
                        };
                        match parse_purge_message(&payload) {
                            Some(target) => apply(target),
                            None => tracing::warn!(%payload, "unreadable cache purge message"),
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "cache purge subscription failed"),
            },
            Err(error) => tracing::debug!(%error, "cache purge subscription cannot connect"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

const MAGIC: &[u8; 4] = b"SLC1";

/// More header fields (or Vary names) than any response Sluice stores has: such an entry is
/// not one Sluice wrote.
const MAX_DECODED_FIELDS: usize = 1024;

/// The variants in a compact binary form. Times travel as wall-clock milliseconds, so a
/// replica reading the entry knows its age.
pub fn encode(variants: &[Arc<StoredResponse>], wall_now: SystemTime, now: Instant) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        variants
            .iter()
            .map(|variant| variant.body.len() + 512)
            .sum(),
    );
    out.extend_from_slice(MAGIC);
    let written = wall_now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    put_u64(&mut out, millis(written));
    out.push(u8::try_from(variants.len()).unwrap_or(u8::MAX));
    for variant in variants.iter().take(usize::from(u8::MAX)) {
        put_u64(&mut out, u64::from(variant.status.as_u16()));
        put_u64(&mut out, millis(variant.age(now)));
        let lifetime = &variant.lifetime;
        put_u64(&mut out, millis(lifetime.fresh_for));
        put_u64(&mut out, millis(lifetime.stale_while_revalidate));
        put_u64(&mut out, millis(lifetime.stale_if_error));
        out.push(
            u8::from(lifetime.revalidate_always) | u8::from(variant.shared_with_authenticated) << 1,
        );
        put_bytes(&mut out, variant.origin.host.as_bytes());
        put_bytes(&mut out, variant.origin.path_and_query.as_bytes());
        put_u64(&mut out, variant.vary.len() as u64);
        for (name, value) in variant.vary.iter().zip(&variant.vary_values) {
            put_bytes(&mut out, name.as_str().as_bytes());
            match value {
                Some(value) => {
                    out.push(1);
                    put_bytes(&mut out, value);
                }
                None => out.push(0),
            }
        }
        put_u64(&mut out, variant.headers.len() as u64);
        for (name, value) in &variant.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &variant.body);
    }
    out
}

/// Reads what [`encode`] wrote; `None` for anything malformed or truncated.
pub fn decode(
    bytes: &[u8],
    wall_now: SystemTime,
    now: Instant,
) -> Option<Vec<Arc<StoredResponse>>> {
    let mut reader = Reader(bytes);
    if reader.take(4)? != MAGIC {
        return None;
    }
    let written = UNIX_EPOCH + Duration::from_millis(reader.u64()?);
    // Time spent in Redis; a clock behind the writer's counts as none.
    let in_redis = wall_now.duration_since(written).unwrap_or(Duration::ZERO);
    let count = reader.take(1)?[0];
    let mut variants = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let status = StatusCode::from_u16(u16::try_from(reader.u64()?).ok()?).ok()?;
        let age = Duration::from_millis(reader.u64()?).saturating_add(in_redis);
        let lifetime = Lifetime {
            fresh_for: Duration::from_millis(reader.u64()?),
            stale_while_revalidate: Duration::from_millis(reader.u64()?),
            stale_if_error: Duration::from_millis(reader.u64()?),
            revalidate_always: false,
        };
        let flags = reader.take(1)?[0];
        let lifetime = Lifetime {
            revalidate_always: flags & 1 != 0,
            ..lifetime
        };
        let origin = Origin {
            host: reader.text()?,
            path_and_query: reader.text()?,
        };
        let vary_count = reader.count()?;
        if vary_count > MAX_DECODED_FIELDS {
            return None;
        }
        let mut vary = Vec::with_capacity(vary_count);
        let mut vary_values = Vec::with_capacity(vary_count);
        for _ in 0..vary_count {
            vary.push(HeaderName::from_bytes(reader.bytes()?).ok()?);
            vary_values.push(match reader.take(1)?[0] {
                0 => None,
                _ => Some(reader.bytes()?.to_vec()),
            });
        }
        let header_count = reader.count()?;
        if header_count > MAX_DECODED_FIELDS {
            return None;
        }
        let mut headers = HeaderMap::new();
        for _ in 0..header_count {
            let name = HeaderName::from_bytes(reader.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(reader.bytes()?).ok()?;
            headers.append(name, value);
        }
        let body = Bytes::copy_from_slice(reader.bytes()?);
        variants.push(Arc::new(StoredResponse {
            status,
            headers,
            body,
            stored_at: now,
            initial_age: age,
            lifetime,
            vary,
            vary_values,
            shared_with_authenticated: flags & 2 != 0,
            origin,
        }));
    }
    reader.0.is_empty().then_some(variants)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        if self.0.len() < length {
            return None;
        }
        let (head, rest) = self.0.split_at(length);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A count of items that follow; never more than the bytes left could hold.
    fn count(&mut self) -> Option<usize> {
        let count = usize::try_from(self.u64()?).ok()?;
        (count <= self.0.len()).then_some(count)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.u64()?).ok()?;
        self.take(length)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::header_map;

    fn variant(body: &str) -> Arc<StoredResponse> {
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            headers: header_map(&[
                ("content-type", "text/plain"),
                ("vary", "accept-encoding"),
                ("x-many", "1"),
                ("x-many", "2"),
            ]),
            body: Bytes::from(body.to_owned()),
            stored_at: Instant::now(),
            initial_age: Duration::from_secs(3),
            lifetime: Lifetime {
                fresh_for: Duration::from_secs(60),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(300),
                revalidate_always: true,
            },
            vary: vec![HeaderName::from_static("accept-encoding")],
            vary_values: vec![Some(b"gzip".to_vec())],
            shared_with_authenticated: true,
            origin: Origin {
                host: "shop.test".into(),
                path_and_query: "/items?page=2".into(),
            },
        })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_read_back_as_written_and_older_by_their_time_in_redis() {
        let written = SystemTime::now();
        let variants = vec![variant("gzip body"), variant("")];
        let bytes = encode(&variants, written, Instant::now());
        let read = decode(&bytes, written + Duration::from_secs(10), Instant::now()).unwrap();
        assert_eq!(read.len(), 2);
        let (before, after) = (&variants[0], &read[0]);
        assert_eq!(after.status, before.status);
        assert_eq!(after.headers, before.headers);
        assert_eq!(after.body, before.body);
        assert_eq!(after.lifetime, before.lifetime);
        assert_eq!(after.vary, before.vary);
        assert_eq!(after.vary_values, before.vary_values);
        assert_eq!(after.origin, before.origin);
        assert!(after.shared_with_authenticated);
        // Times travel in whole milliseconds.
        assert_eq!(after.age(Instant::now()).as_millis(), 13_000);
        assert_eq!(read[1].body, "");
    }

    #[test]
    fn damaged_entries_are_not_read() {
        let bytes = encode(&[variant("body")], SystemTime::now(), Instant::now());
        for cut in [0, 3, 4, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode(&bytes[..cut], SystemTime::now(), Instant::now()).is_none(),
                "{cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, SystemTime::now(), Instant::now()).is_none());
        let mut other = bytes;
        other[0] = b'X';
        assert!(decode(&other, SystemTime::now(), Instant::now()).is_none());
    }

    #[test]
    fn purge_messages_read_back() {
        for target in [
            PurgeTarget::Exact {
                host: "shop.test".into(),
                path_and_query: "/a?b=c d".into(),
            },
            PurgeTarget::Prefix {
                host: "shop.test".into(),
                path_prefix: "/".into(),
            },
        ] {
            assert_eq!(parse_purge_message(&purge_message(&target)), Some(target));
        }
        assert_eq!(parse_purge_message("drop shop.test /"), None);
        assert_eq!(parse_purge_message("exact shop.test"), None);
    }

    #[test]
    fn keys_keep_one_policy_in_one_cluster_slot() {
        let policy = ObjectRef::new("shop", "pages");
        assert_eq!(
            entry_key(&policy, &[0xab; 32]),
            format!("sluice:cache:{{shop/pages}}:{}", "ab".repeat(32))
        );
        assert_eq!(
            index_key(&policy, "shop.test"),
            "sluice:cache:{shop/pages}:index:shop.test"
        );
    }
}
