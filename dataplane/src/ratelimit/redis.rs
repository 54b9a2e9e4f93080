//! Global rate limiting: the same GCRA as the local limiter, run atomically in Redis by
//! one server-side script per request, so every replica draws from one budget.
//!
//! A request waits at most `timeout` for Redis. Failures open a circuit breaker: while it is
//! open no request waits on Redis at all and the policy's `onBackendFailure` answers at
//! once; after `cool_down` one request probes Redis, and a success closes the breaker.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use super::{LimitState, RequestView, Verdict, key_parts};
use crate::balance::BalancerClock;
use crate::snapshot::RateLimitPolicy;

/// GCRA over every rule's key at once, on the server's clock (microseconds), so replicas
/// with skewed clocks still agree. Either every rule is charged or none is.
/// KEYS: one per rule. ARGV: interval and tolerance per rule, in microseconds.
/// Returns {1, rule, remaining, reset_us} when allowed (the tightest rule), and
/// {0, rule, retry_after_us, reset_us} when refused.
const GCRA_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local nexts = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local next_tat = tat + interval
  if next_tat - now > tolerance then
    return {0, i - 1, next_tat - now - tolerance, tat - now}
  end
  nexts[i] = next_tat
end
local best_rule, best_remaining, best_reset = 0, -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local ahead = nexts[i] - now
  redis.call('SET', KEYS[i], nexts[i], 'PX', math.floor(ahead / 1000) + 1)
  local remaining = math.floor((tolerance - ahead) / interval)
  if best_remaining < 0 or remaining < best_remaining then
    best_rule, best_remaining, best_reset = i - 1, remaining, ahead
  end
end
return {1, best_rule, best_remaining, best_reset}
";

/// How Sluice talks to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS), with credentials if needed.
    pub url: String,
    /// Longest wait for one check before `onBackendFailure` applies.
    pub timeout: Duration,
    /// Consecutive failures that open the breaker.
    pub failures_to_open: u32,
    /// How long the breaker stays open before one request probes Redis again.
    pub cool_down: Duration,
    /// What this connection serves, and what happens without it, for the breaker's logs.
    pub role: RedisRole,
}

/// What a [`RedisBackend`] is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisRole {
    /// Global rate limits, token revocation and API keys.
    Policies,
    /// The shared layer of Cache policies.
    Cache,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            timeout: Duration::from_millis(50),
            failures_to_open: 3,
            cool_down: Duration::from_secs(1),
            role: RedisRole::Policies,
        }
    }
}

/// What the breaker lets a request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Closed,
    Probe,
    Refused,
}

/// Clears the probing flag when the probe ends, however it ends.
struct ProbeGuard<'a>(&'a AtomicBool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Why a Redis check gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisCheckError {
    #[error("the circuit breaker is open")]
    BreakerOpen,
    #[error("Redis did not answer within the timeout")]
    Timeout,
    #[error("Redis failed: {0}")]
    Failed(String),
}

/// One shared Redis connection (multiplexed, reconnecting) and its breaker.
pub struct RedisBackend {
    /// Kept for the cache's purge subscription, which needs a connection of its own.
    client: redis::Client,
    connection: ConnectionManager,
    script: redis::Script,
    settings: RedisSettings,
    consecutive_failures: AtomicU32,
    /// Milliseconds on `clock` until which the breaker is open; 0 when closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
    clock: BalancerClock,
    latency: prometheus_client::metrics::histogram::Histogram,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("timeout", &self.settings.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Prepares the connection; it is opened on first use and reopened after failures, so
    /// Sluice starts and serves even while Redis is away. Must run inside a tokio runtime.
    pub fn connect(
        settings: RedisSettings,
        latency: prometheus_client::metrics::histogram::Histogram,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(RedisBackend {
            client,
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
            settings,
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            clock: BalancerClock::new(),
            latency,
        })
    }

    /// Whether this request may talk to Redis: always while the breaker is closed, and
    /// for exactly one request at a time once its cool-down has passed (the probe).
    fn admit(&self) -> Admission {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return Admission::Closed;
        }
        if self.clock.now_ms() < open_until {
            return Admission::Refused;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Refused,
        }
    }

    fn succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        if self.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            match self.settings.role {
                RedisRole::Policies => tracing::info!(
                    "Redis answers again; global rate limits and token revocation checks resume"
                ),
                RedisRole::Cache => {
                    tracing::info!("Redis answers again; caches share entries again")
                }
            }
        }
        self.probing.store(false, Ordering::Release);
    }

    fn failed(&self, error: &RedisCheckError) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probing = self.probing.swap(false, Ordering::AcqRel);
        if failures >= self.settings.failures_to_open || was_probing {
            let cool_down = u64::try_from(self.settings.cool_down.as_millis()).unwrap_or(u64::MAX);
            let previous = self.open_until_ms.swap(
                self.clock.now_ms().saturating_add(cool_down),
                Ordering::AcqRel,
            );
            if previous == 0 {
                match self.settings.role {
                    RedisRole::Policies => {
                        tracing::warn!(%error, "Redis unavailable; rate limits fall back to each policy's onBackendFailure, token revocation checks answer 503")
                    }
                    RedisRole::Cache => {
                        tracing::warn!(%error, "Redis unavailable; caches work from each replica's memory")
                    }
                }
            }
        }
    }

    /// Runs the policy's rules in Redis for this request.
    pub async fn check(
        &self,
        policy: &RateLimitPolicy,
        request: &RequestView<'_>,
    ) -> Result<Verdict, RedisCheckError> {
        let mut invocation = self.script.prepare_invoke();
        for (index, rule) in policy.limits.iter().enumerate() {
            invocation.key(redis_key(policy, index, request));
            let period = u64::try_from(rule.period.as_micros()).unwrap_or(u64::MAX);
            let interval = (period / rule.requests.max(1)).max(1);
            invocation.arg(interval);
            invocation.arg(interval.saturating_mul(rule.burst.max(1)));
        }
        let mut connection = self.connection.clone();
        let started = Instant::now();
        let outcome = self
            .guarded(async move {
                let reply = invocation
                    .invoke_async::<Vec<i64>>(&mut connection)
                    .await
                    .map_err(|error| RedisCheckError::Failed(error.to_string()))?;
                verdict(policy, &reply)
                    .ok_or_else(|| RedisCheckError::Failed(format!("unexpected reply {reply:?}")))
            })
            .await;
        self.latency.observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Whether `member` is in the set at `key` (revoked token ids), under the same timeout
    /// and breaker as rate limits.
    pub async fn is_member(&self, key: &str, member: &str) -> Result<bool, RedisCheckError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SISMEMBER");
        command.arg(key).arg(member);
        self.guarded(async move {
            command
                .query_async::<bool>(&mut connection)
                .await
                .map_err(|error| RedisCheckError::Failed(error.to_string()))
        })
        .await
    }

    /// A handle on the shared multiplexed connection.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// The client, for connections that cannot be shared (subscriptions).
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs one Redis exchange through the breaker and the timeout, and records how it went.
    pub(crate) async fn guarded<T>(
        &self,
        exchange: impl Future<Output = Result<T, RedisCheckError>>,
    ) -> Result<T, RedisCheckError> {
        let _probe = match self.admit() {
            Admission::Refused => return Err(RedisCheckError::BreakerOpen),
            Admission::Closed => None,
            // A probe whose request is dropped half-way (the client went away) must not leave
            // the flag set, or no probe would ever run again.
            Admission::Probe => Some(ProbeGuard(&self.probing)),
        };
        let outcome = match tokio::time::timeout(self.settings.timeout, exchange).await {
            Err(_) => Err(RedisCheckError::Timeout),
            Ok(outcome) => outcome,
        };
        match &outcome {
            Ok(_) => self.succeeded(),
            Err(error) => self.failed(error),
        }
        outcome
    }
}

fn verdict(policy: &RateLimitPolicy, reply: &[i64]) -> Option<Verdict> {
    let [allowed, rule, value, reset] = *reply else {
        return None;
    };
    let rule = usize::try_from(rule).ok()?;
    let limit = policy.limits.get(rule)?;
    let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
    let state = |remaining: u64| LimitState {
        rule,
        requests: limit.requests,
        period: limit.period,
        remaining,
        reset: micros(reset),
    };
    Some(if allowed == 1 {
        Verdict::Allow(state(u64::try_from(value).unwrap_or(0)))
    } else {
        Verdict::Limit {
            state: state(0),
            retry_after: micros(value),
        }
    })
}

/// `sluice:rl:{namespace/name}:{rule}:{digest}`. The digest is SHA-256 of the key parts,
/// the same on every replica and every Sluice version, and not open to aimed collisions;
/// the braces make one policy's keys share a Redis Cluster hash slot.
fn redis_key(policy: &RateLimitPolicy, rule: usize, request: &RequestView<'_>) -> String {
    let mut digest = Sha256::new();
    if let Some(limit) = policy.limits.get(rule) {
        key_parts(&limit.key, request, |bytes| {
            digest.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
            digest.update(bytes);
        });
    }
    let mut key = format!(
        "sluice:rl:{{{}/{}}}:{rule}:",
        policy.name.namespace, policy.name.name
    );
    for byte in &digest.finalize()[..16] {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// A policy's shared backend, kept by every limiter that counts in Redis.
pub type SharedRedis = Arc<RedisBackend>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{
        LimitBackend, LimitFailure, LimitHeaders, LimitKeyPart, LimitRule, ObjectRef,
    };

    #[tokio::test]
    async fn a_probe_dropped_half_way_does_not_keep_the_breaker_shut() {
        // A "Redis" that accepts connections (the kernel's backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut settings = RedisSettings::new(format!("redis://{}", silent.local_addr().unwrap()));
        settings.timeout = Duration::from_millis(30);
        settings.failures_to_open = 1;
        settings.cool_down = Duration::from_millis(10);
        let latency = crate::metrics::Metrics::new()
            .rate_limit_redis_seconds
            .clone();
        let backend = RedisBackend::connect(settings, latency).unwrap();
        let policy = RateLimitPolicy {
            name: ObjectRef::new("shop", "api"),
            limits: vec![LimitRule {
                requests: 1,
                period: Duration::from_secs(60),
                burst: 1,
                key: vec![LimitKeyPart::ClientIp],
            }],
            headers: LimitHeaders::None,
            backend: LimitBackend::Redis {
                on_failure: LimitFailure::Allow,
            },
        };
        let headers = http::HeaderMap::new();
        let request = RequestView {
            client_ip: "10.0.0.1".parse().unwrap(),
            host: "a",
            path: "/",
            query: None,
            method: &http::Method::GET,
            headers: &headers,
            https: false,
        };
        assert_eq!(
            backend.check(&policy, &request).await,
            Err(RedisCheckError::Timeout)
        );
        assert_eq!(
            backend.admit(),
            Admission::Refused,
            "one failure opened the breaker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The probe's request goes away before Redis answers.
        let dropped =
            tokio::time::timeout(Duration::from_millis(5), backend.check(&policy, &request)).await;
        assert!(dropped.is_err(), "the probe was still waiting");
        assert_eq!(backend.admit(), Admission::Probe, "a new probe may run");
    }
}
