//! Rate limiting: GCRA per key, counted in this process (a bounded concurrent map) or in
//! Redis across replicas ([`redis`]).
//!
//! GCRA stores one number per key, the theoretical arrival time (TAT): a request at time
//! `t` moves it to `max(TAT, t) + interval`, and is refused when that lands more than
//! `burst * interval` after `t`. It behaves like a token bucket that refills one token per
//! `interval` and holds `burst` tokens, without a timer or a second field.
//!
//! Keys are hashed with a per-process random key (SipHash), so a client cannot aim
//! collisions, and only the 64-bit hash is stored. The map holds at most `max_keys`
//! entries and drops keys idle for longer than it takes a bucket to refill; under a flood
//! of new keys, moka's admission policy keeps the frequently seen keys and lets one-off
//! keys go, so memory stays bounded. A key that is not kept starts from a full bucket the
//! next time: a flood of distinct keys is not itself limited by a per-key limit.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{COOKIE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Method};

pub mod redis;

use crate::metrics::LimitCounters;
use crate::snapshot::{
    LimitBackend, LimitFailure, LimitHeaders, LimitKeyPart, LimitRule, RateLimitPolicy,
};
use redis::SharedRedis;

/// What a request looks like to a limit key.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub client_ip: IpAddr,
    pub host: &'a str,
    pub path: &'a str,
    /// The raw query string, for API keys sent as a parameter.
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The client reached Sluice over HTTPS: its own TLS, or a trusted proxy's
    /// `X-Forwarded-Proto: https`.
    pub https: bool,
}

/// The state of the limit that decided, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// Which rule of the policy this is.
    pub rule: usize,
    pub requests: u64,
    pub period: Duration,
    /// Requests still allowed right now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// What a policy decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the state of the tightest rule, when one was counted.
    Allow(Option<LimitState>),
    Limit {
        state: LimitState,
        retry_after: Duration,
    },
    /// Redis could not be asked and the policy says to refuse (`onBackendFailure: deny`).
    Unavailable,
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow(state) => Decision::Allow(Some(state)),
            Verdict::Limit { state, retry_after } => Decision::Limit { state, retry_after },
        }
    }
}

/// One policy in this process: its local counters, or its Redis backend with the local
/// fallback its `onBackendFailure` asks for.
#[derive(Debug)]
pub struct PolicyLimiter {
    pub policy: Arc<RateLimitPolicy>,
    /// The counters for `backend: local`, or the `requests / localShare` fallback.
    local: Option<LocalLimiter>,
    redis: Option<SharedRedis>,
    counters: LimitCounters,
}

impl PolicyLimiter {
    pub fn new(
        policy: Arc<RateLimitPolicy>,
        max_keys: u64,
        redis: Option<SharedRedis>,
        counters: LimitCounters,
    ) -> Self {
        let local = match policy.backend {
            LimitBackend::Local => Some(LocalLimiter::new(Arc::clone(&policy), max_keys)),
            LimitBackend::Redis {
                on_failure: LimitFailure::Local { share },
            } => Some(LocalLimiter::new(
                Arc::new(local_share(&policy, share)),
                max_keys,
            )),
            LimitBackend::Redis { .. } => None,
        };
        PolicyLimiter {
            policy,
            local,
            redis,
            counters,
        }
    }

    /// Checks one request and counts the outcome.
    pub async fn check(&self, request: &RequestView<'_>, now: Instant) -> Decision {
        let decision = self.decide(request, now).await;
        match decision {
            Decision::Allow(_) => self.counters.allowed.inc(),
            Decision::Limit { .. } => self.counters.limited.inc(),
            Decision::Unavailable => 0,
        };
        decision
    }

    async fn decide(&self, request: &RequestView<'_>, now: Instant) -> Decision {
        let LimitBackend::Redis { on_failure } = self.policy.backend else {
            return match &self.local {
                Some(local) => local.check(request, now).into(),
                None => Decision::Unavailable,
            };
        };
        let error = match &self.redis {
            Some(redis) => match redis.check(&self.policy, request).await {
                Ok(verdict) => return verdict.into(),
                Err(error) => error,
            },
            None => redis::RedisCheckError::Failed("no Redis is configured".into()),
        };
        self.counters.backend_errors.inc();
        tracing::debug!(policy = %self.policy.name, %error, "rate limit check fell back");
        match (on_failure, &self.local) {
            (LimitFailure::Allow, _) => Decision::Allow(None),
            (LimitFailure::Local { .. }, Some(local)) => local.check(request, now).into(),
            (LimitFailure::Deny | LimitFailure::Local { .. }, _) => Decision::Unavailable,
        }
    }
}

/// The policy with each limit divided by `share`, for one replica of `share` while Redis is
/// away; never below one request per period.
fn local_share(policy: &RateLimitPolicy, share: u32) -> RateLimitPolicy {
    let share = u64::from(share.max(1));
    let mut shared = policy.clone();
    for limit in &mut shared.limits {
        limit.requests = (limit.requests / share).max(1);
        limit.burst = (limit.burst / share).max(1);
    }
    shared
}

/// A policy's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; the state of the tightest rule.
    Allow(LimitState),
    /// Refused; the refusing rule, and when a request would pass again.
    Limit {
        state: LimitState,
        retry_after: Duration,
    },
}

/// What a response says about a limit: the policy, its state, and for a refusal when to
/// come back.
#[derive(Debug, Clone)]
pub struct LimitReport {
    pub policy: Arc<RateLimitPolicy>,
    pub state: LimitState,
    pub retry_after: Option<Duration>,
}

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

impl LimitReport {
    /// Adds `Retry-After` (refusals) and the policy's chosen limit headers.
    pub fn write(&self, headers: &mut HeaderMap) {
        if let Some(retry_after) = self.retry_after {
            headers.insert(
                RETRY_AFTER,
                HeaderValue::from(whole_seconds(retry_after).max(1)),
            );
        }
        let state = &self.state;
        let reset = whole_seconds(state.reset);
        match self.policy.headers {
            LimitHeaders::None => {}
            LimitHeaders::Legacy => {
                headers.insert(&X_RATELIMIT_LIMIT, HeaderValue::from(state.requests));
                headers.insert(&X_RATELIMIT_REMAINING, HeaderValue::from(state.remaining));
                headers.insert(&X_RATELIMIT_RESET, HeaderValue::from(reset));
            }
            LimitHeaders::Ietf => {
                // Structured fields: the item is the policy (and rule) name as an sf-string;
                // Kubernetes names need no escaping.
                let name = if self.policy.limits.len() > 1 {
                    format!("{}/{}", self.policy.name.name, state.rule)
                } else {
                    self.policy.name.name.clone()
                };
                let policy = format!(
                    "\"{name}\";q={};w={}",
                    state.requests,
                    state.period.as_secs().max(1)
                );
                let current = format!("\"{name}\";r={};t={reset}", state.remaining);
                if let Ok(value) = HeaderValue::from_str(&policy) {
                    headers.insert(&RATELIMIT_POLICY, value);
                }
                if let Ok(value) = HeaderValue::from_str(&current) {
                    headers.insert(&RATELIMIT, value);
                }
            }
        }
    }
}

/// Seconds, rounded up: a client told to wait 0 s while 0.4 s remain would come back early.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The counters of one `RateLimit` policy in this process.
#[derive(Debug)]
pub struct LocalLimiter {
    pub policy: Arc<RateLimitPolicy>,
    rules: Vec<RuleClock>,
    buckets: moka::sync::Cache<u64, Arc<AtomicU64>>,
    hasher: RandomState,
    epoch: Instant,
}

/// A rule in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct RuleClock {
    interval: u64,
    tolerance: u64,
}

impl RuleClock {
    fn new(rule: &LimitRule) -> Self {
        let period = u64::try_from(rule.period.as_nanos()).unwrap_or(u64::MAX);
        let interval = (period / rule.requests.max(1)).max(1);
        RuleClock {
            interval,
            tolerance: interval.saturating_mul(rule.burst.max(1)),
        }
    }
}

/// Outcome of one rule before anything is stored.
#[derive(Debug, Clone, Copy)]
struct Step {
    seen: u64,
    next: u64,
    allowed: bool,
}

impl LocalLimiter {
    /// `max_keys` bounds the keys kept for this policy (over all its rules).
    pub fn new(policy: Arc<RateLimitPolicy>, max_keys: u64) -> Self {
        let rules: Vec<RuleClock> = policy.limits.iter().map(RuleClock::new).collect();
        // A bucket idle for its whole tolerance is full again: forgetting it changes nothing.
        let idle = rules
            .iter()
            .map(|rule| Duration::from_nanos(rule.tolerance))
            .max()
            .unwrap_or(Duration::from_secs(1))
            // Periods go up to a week; a burst above the rate stretches that further.
            .clamp(Duration::from_secs(1), Duration::from_secs(30 * 24 * 3600));
        LocalLimiter {
            policy,
            rules,
            buckets: moka::sync::Cache::builder()
                .max_capacity(max_keys.max(1))
                .time_to_idle(idle)
                .build(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Counts the request against every rule, or against none when one refuses it.
    pub fn check(&self, request: &RequestView<'_>, now: Instant) -> Verdict {
        let t = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let cells: Vec<Arc<AtomicU64>> = (0..self.rules.len())
            .map(|index| {
                let key = self.key_hash(index, request);
                self.buckets.get_with(key, || Arc::new(AtomicU64::new(0)))
            })
            .collect();
        // Check every rule first, then store: a refused request consumes nothing. A
        // concurrent change between the two is caught by the compare-and-swap, and the
        // whole check runs again.
        for _ in 0..16 {
            let steps: Vec<Step> = self
                .rules
                .iter()
                .zip(&cells)
                .map(|(rule, cell)| step(rule, cell.load(Ordering::Acquire), t))
                .collect();
            if let Some(index) = steps.iter().position(|step| !step.allowed) {
                let rule = self.rules[index];
                let ahead = steps[index].next - t;
                return Verdict::Limit {
                    state: self.state(index, steps[index].seen.max(t) - t, 0),
                    retry_after: Duration::from_nanos(ahead - rule.tolerance),
                };
            }
            let stored = store_all(&cells, &steps);
            if stored {
                let tightest = steps
                    .iter()
                    .enumerate()
                    .map(|(index, step)| {
                        let rule = self.rules[index];
                        let ahead = step.next - t;
                        let remaining = (rule.tolerance - ahead) / rule.interval;
                        (index, ahead, remaining)
                    })
                    .min_by_key(|(_, _, remaining)| *remaining);
                let (index, ahead, remaining) = tightest.unwrap_or((0, 0, 0));
                return Verdict::Allow(self.state(index, ahead, remaining));
            }
        }
        // Sixteen lost races in a row: the key is hammered from every thread; refuse.
        Verdict::Limit {
            state: self.state(0, 0, 0),
            retry_after: Duration::from_secs(1),
        }
    }

    fn state(&self, rule: usize, reset_nanos: u64, remaining: u64) -> LimitState {
        let limit = &self.policy.limits[rule.min(self.policy.limits.len().saturating_sub(1))];
        LimitState {
            rule,
            requests: limit.requests,
            period: limit.period,
            remaining,
            reset: Duration::from_nanos(reset_nanos),
        }
    }

    /// Keys currently kept (after pending evictions run).
    pub fn key_count(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }

    fn key_hash(&self, rule: usize, request: &RequestView<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        rule.hash(&mut hasher);
        if let Some(limit) = self.policy.limits.get(rule) {
            // `[u8]`'s Hash writes the length first, so ("ab", "c") and ("a", "bc") differ.
            key_parts(&limit.key, request, |bytes| bytes.hash(&mut hasher));
        }
        hasher.finish()
    }
}

/// Feeds each part of a limit's key, as bytes, to `feed`; absent values feed nothing
/// but their (empty) place, so "no header" is one key of its own.
pub(crate) fn key_parts(
    parts: &[LimitKeyPart],
    request: &RequestView<'_>,
    mut feed: impl FnMut(&[u8]),
) {
    for part in parts {
        match part {
            LimitKeyPart::ClientIp => match request.client_ip {
                IpAddr::V4(ip) => feed(&ip.octets()),
                IpAddr::V6(ip) => feed(&ip.octets()),
            },
            LimitKeyPart::Host => feed(request.host.as_bytes()),
            LimitKeyPart::Path => feed(request.path.as_bytes()),
            LimitKeyPart::Method => feed(request.method.as_str().as_bytes()),
            LimitKeyPart::Header(name) => {
                // The count first: "no header", one empty value and two values that join
                // to the same text are all different keys.
                let values = request.headers.get_all(name.as_str());
                let count = u32::try_from(values.iter().count()).unwrap_or(u32::MAX);
                feed(&count.to_be_bytes());
                for value in values {
                    feed(value.as_bytes());
                }
            }
            LimitKeyPart::Cookie(name) => match cookie_value(request.headers, name) {
                Some(value) => {
                    feed(b"\x01");
                    feed(value);
                }
                None => feed(b"\x00"),
            },
        }
    }
}

/// Stores every rule's new value, or none: when one swap loses a race, the ones already
/// made are put back before the caller tries again, so no rule is charged twice.
fn store_all(cells: &[Arc<AtomicU64>], steps: &[Step]) -> bool {
    for (index, (cell, step)) in cells.iter().zip(steps).enumerate() {
        let swapped = cell
            .compare_exchange(step.seen, step.next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !swapped {
            for (cell, step) in cells.iter().zip(steps).take(index) {
                // Only undo what is still ours; a later writer's value stands.
                let _ = cell.compare_exchange(
                    step.next,
                    step.seen,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            return false;
        }
    }
    true
}

fn step(rule: &RuleClock, seen: u64, t: u64) -> Step {
    let next = seen.max(t).saturating_add(rule.interval);
    Step {
        seen,
        next,
        allowed: next - t <= rule.tolerance,
    }
}

/// The first value of cookie `name`, if the request has it.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let split = pair.iter().position(|byte| *byte == b'=')?;
            Some((&pair[..split], &pair[split + 1..]))
        })
        .find(|(key, _)| *key == name.as_bytes())
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{LimitBackend, ObjectRef};

    fn policy(limits: Vec<LimitRule>) -> Arc<RateLimitPolicy> {
        Arc::new(RateLimitPolicy {
            name: ObjectRef::new("shop", "api"),
            limits,
            headers: LimitHeaders::Ietf,
            backend: LimitBackend::Local,
        })
    }

    fn rule(requests: u64, period_secs: u64, key: Vec<LimitKeyPart>) -> LimitRule {
        LimitRule {
            requests,
            period: Duration::from_secs(period_secs),
            burst: requests,
            key,
        }
    }

    fn limiter(limits: Vec<LimitRule>, max_keys: u64) -> LocalLimiter {
        LocalLimiter::new(policy(limits), max_keys)
    }

    fn view<'a>(ip: &str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            client_ip: ip.parse().unwrap(),
            host: "shop.example",
            path: "/",
            query: None,
            method: &Method::GET,
            headers,
            https: false,
        }
    }

    fn allowed(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Allow(_))
    }

    #[test]
    fn ten_per_minute_lets_exactly_ten_through_then_says_when_to_return() {
        let limiter = limiter(vec![rule(10, 60, vec![LimitKeyPart::ClientIp])], 100);
        let headers = HeaderMap::new();
        let request = view("10.0.0.1", &headers);
        let now = Instant::now();
        let verdicts: Vec<Verdict> = (0..15).map(|_| limiter.check(&request, now)).collect();
        assert_eq!(verdicts.iter().filter(|v| allowed(**v)).count(), 10);
        assert!(verdicts[..10].iter().all(|v| allowed(*v)));
        match verdicts[0] {
            Verdict::Allow(state) => assert_eq!((state.requests, state.remaining), (10, 9)),
            other => panic!("{other:?}"),
        }
        match verdicts[14] {
            Verdict::Limit { state, retry_after } => {
                assert_eq!(state.remaining, 0);
                assert_eq!(retry_after, Duration::from_secs(6));
                assert_eq!(state.reset, Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
        // One interval later exactly one more request fits.
        let later = now + Duration::from_secs(6);
        assert!(allowed(limiter.check(&request, later)));
        assert!(!allowed(limiter.check(&request, later)));
    }

    #[test]
    fn every_rule_applies_and_a_refusal_consumes_nothing() {
        let limiter = limiter(
            vec![
                rule(2, 1, vec![LimitKeyPart::ClientIp]),
                rule(3, 60, vec![LimitKeyPart::ClientIp]),
            ],
            100,
        );
        let headers = HeaderMap::new();
        let request = view("10.0.0.1", &headers);
        let start = Instant::now();
        // Second 0: the per-second rule allows two.
        assert!(allowed(limiter.check(&request, start)));
        assert!(allowed(limiter.check(&request, start)));
        assert!(!allowed(limiter.check(&request, start)));
        // Second 1: one more fits the per-minute rule; the next is refused by it.
        let next = start + Duration::from_secs(1);
        assert!(allowed(limiter.check(&request, next)));
        match limiter.check(&request, next) {
            Verdict::Limit { state, .. } => assert_eq!(state.rule, 1),
            other => panic!("{other:?}"),
        }
        // The refusals above did not use up the per-second rule.
        let minute = start + Duration::from_secs(61);
        assert!(allowed(limiter.check(&request, minute)));
    }

    #[test]
    fn composite_keys_count_separately() {
        let limiter = limiter(
            vec![rule(
                1,
                60,
                vec![
                    LimitKeyPart::ClientIp,
                    LimitKeyPart::Header("x-api-key".into()),
                ],
            )],
            100,
        );
        let now = Instant::now();
        let mut alice = HeaderMap::new();
        alice.insert("x-api-key", HeaderValue::from_static("alice"));
        let mut bob = HeaderMap::new();
        bob.insert("x-api-key", HeaderValue::from_static("bob"));
        assert!(allowed(limiter.check(&view("10.0.0.1", &alice), now)));
        assert!(allowed(limiter.check(&view("10.0.0.1", &bob), now)));
        assert!(allowed(limiter.check(&view("10.0.0.2", &alice), now)));
        assert!(!allowed(limiter.check(&view("10.0.0.1", &alice), now)));
        assert!(!allowed(limiter.check(&view("10.0.0.1", &bob), now)));
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let bound = 1_000;
        let limiter = limiter(vec![rule(5, 60, vec![LimitKeyPart::Path])], bound);
        let headers = HeaderMap::new();
        let now = Instant::now();
        let keys: u32 = std::env::var("SLUICE_FLOOD_KEYS")
            .ok()
            .and_then(|keys| keys.parse().ok())
            .unwrap_or(200_000);
        for flood in 0..keys {
            let path = format!("/k{flood}");
            let request = RequestView {
                path: &path,
                ..view("10.0.0.1", &headers)
            };
            limiter.check(&request, now);
        }
        let kept = limiter.key_count();
        assert!(kept <= bound, "{kept} keys kept, bound {bound}");
    }

    #[test]
    fn headers_follow_the_chosen_style() {
        let state = LimitState {
            rule: 0,
            requests: 100,
            period: Duration::from_secs(60),
            remaining: 7,
            reset: Duration::from_millis(2_500),
        };
        let report = |headers| LimitReport {
            policy: Arc::new(RateLimitPolicy {
                name: ObjectRef::new("shop", "api"),
                limits: vec![rule(100, 60, vec![LimitKeyPart::ClientIp])],
                headers,
                backend: LimitBackend::Local,
            }),
            state,
            retry_after: Some(Duration::from_millis(400)),
        };
        let mut map = HeaderMap::new();
        report(LimitHeaders::Ietf).write(&mut map);
        assert_eq!(map["retry-after"], "1");
        assert_eq!(map["ratelimit-policy"], r#""api";q=100;w=60"#);
        assert_eq!(map["ratelimit"], r#""api";r=7;t=3"#);
        let mut map = HeaderMap::new();
        report(LimitHeaders::Legacy).write(&mut map);
        assert_eq!(map["x-ratelimit-limit"], "100");
        assert_eq!(map["x-ratelimit-remaining"], "7");
        assert_eq!(map["x-ratelimit-reset"], "3");
        let mut map = HeaderMap::new();
        report(LimitHeaders::None).write(&mut map);
        assert_eq!(map.len(), 1, "only Retry-After: {map:?}");
    }

    #[test]
    fn a_lost_race_puts_back_the_rules_already_stored() {
        let cells = vec![Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(42))];
        let steps = [
            Step {
                seen: 0,
                next: 5,
                allowed: true,
            },
            // Another request moved this rule on since it was read.
            Step {
                seen: 7,
                next: 9,
                allowed: true,
            },
        ];
        assert!(!store_all(&cells, &steps));
        assert_eq!(
            cells[0].load(Ordering::Acquire),
            0,
            "the first rule is not charged"
        );
        assert_eq!(cells[1].load(Ordering::Acquire), 42);
        let fresh = [
            Step {
                seen: 0,
                next: 5,
                allowed: true,
            },
            Step {
                seen: 42,
                next: 50,
                allowed: true,
            },
        ];
        assert!(store_all(&cells, &fresh));
        assert_eq!(cells[0].load(Ordering::Acquire), 5);
    }

    #[test]
    fn absent_empty_and_split_header_values_are_different_keys() {
        let limiter = limiter(
            vec![rule(1, 60, vec![LimitKeyPart::Header("x-k".into())])],
            10,
        );
        let keys: Vec<u64> = [vec![], vec![""], vec!["ab"], vec!["a", "b"]]
            .iter()
            .map(|values| {
                let mut headers = HeaderMap::new();
                for value in values {
                    headers.append("x-k", HeaderValue::from_static(value));
                }
                limiter.key_hash(0, &view("10.0.0.1", &headers))
            })
            .collect();
        let distinct: std::collections::BTreeSet<u64> = keys.iter().copied().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; sid=xyz; sidx=2"));
        assert_eq!(cookie_value(&headers, "sid"), Some(b"xyz".as_slice()));
        assert_eq!(cookie_value(&headers, "si"), None);
    }
}
