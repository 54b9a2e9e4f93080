//! Load balancing across the endpoints of a backend.
//!
//! The snapshot says which endpoints exist; this module keeps what is learned about them at
//! run time (requests in flight, latency, failures) in atomics that survive snapshot swaps,
//! so a config change never resets ejections or balancing state.

mod ring;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub use ring::{HashRing, stable_hash};

use crate::snapshot::{Backend, BackendKey, BalancePolicy};

/// Passive health checking: eject an endpoint after consecutive failures, for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    pub failures_to_eject: u32,
    pub eject_for: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            failures_to_eject: 5,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// What happened to one request sent to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success {
        latency: Duration,
    },
    /// Connection refused or reset, timeout, or a 502/503/504 from the endpoint.
    Failure,
}

/// Run-time state of one endpoint, shared across snapshots while the endpoint stays.
#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once rather than per request.
    pub authority: Option<http::uri::Authority>,
    in_flight: AtomicU32,
    /// Moving average of latency in microseconds; 0 until the first sample.
    ewma_micros: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the balancer clock's origin; 0 when not ejected.
    ejected_until_ms: AtomicU64,
}

impl EndpointState {
    fn new(addr: SocketAddr) -> Self {
        EndpointState {
            addr,
            authority: http::uri::Authority::from_maybe_shared(bytes::Bytes::from(
                addr.to_string(),
            ))
            .ok(),
            in_flight: AtomicU32::new(0),
            ewma_micros: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The origin of the millisecond timestamps kept in atomics.
#[derive(Debug, Clone, Copy)]
pub struct BalancerClock {
    origin: Instant,
}

impl BalancerClock {
    pub fn new() -> Self {
        BalancerClock {
            origin: Instant::now(),
        }
    }

    /// Milliseconds since the origin, at least 1 so that 0 can mean "never".
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

impl Default for BalancerClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The balancing state of one backend for one snapshot generation.
#[derive(Debug)]
pub struct BackendBalancer {
    pub key: BackendKey,
    /// The snapshot's backend this was built from; reused as is when unchanged.
    pub spec: Backend,
    endpoints: Vec<Arc<EndpointState>>,
    /// Smooth weighted round-robin order of endpoint indexes; one pass covers every weight.
    schedule: Vec<u32>,
    next: AtomicUsize,
    clock: BalancerClock,
    health: HealthConfig,
}

/// The longest round-robin schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

impl BackendBalancer {
    /// Builds the balancer for `spec`, reusing the run-time state of endpoints that
    /// `previous` already knew.
    pub fn new(
        key: BackendKey,
        spec: Backend,
        previous: Option<&BackendBalancer>,
        clock: BalancerClock,
        health: HealthConfig,
    ) -> Self {
        let known: HashMap<SocketAddr, &Arc<EndpointState>> = previous
            .map(|p| p.endpoints.iter().map(|e| (e.addr, e)).collect())
            .unwrap_or_default();
        let endpoints = spec
            .endpoints
            .iter()
            .map(|endpoint| {
                known.get(&endpoint.addr).map_or_else(
                    || Arc::new(EndpointState::new(endpoint.addr)),
                    |state| Arc::clone(state),
                )
            })
            .collect();
        let weights: Vec<u64> = spec
            .endpoints
            .iter()
            .map(|e| u64::from(e.weight.max(1)))
            .collect();
        let schedule = smooth_weighted_schedule(&weights);
        let next = previous.map_or(0, |p| p.next.load(Ordering::Relaxed));
        BackendBalancer {
            key,
            spec,
            endpoints,
            schedule,
            next: AtomicUsize::new(next),
            clock,
            health,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn endpoint(&self, index: usize) -> Option<&Arc<EndpointState>> {
        self.endpoints.get(index)
    }

    /// Picks an endpoint index, skipping `exclude` (endpoints already tried) and ejected
    /// endpoints. When every endpoint is ejected it ignores ejection rather than failing:
    /// a guess beats a certain 503.
    pub fn pick(
        &self,
        policy: &BalancePolicy,
        hash: Option<u64>,
        exclude: &[usize],
    ) -> Option<usize> {
        if self.endpoints.is_empty() {
            return None;
        }
        let now = self.clock.now_ms();
        let healthy = |index: usize| !exclude.contains(&index) && !self.is_ejected(index, now);
        let any = |index: usize| !exclude.contains(&index);
        self.pick_with(policy, hash, &healthy)
            .or_else(|| self.pick_with(policy, hash, &any))
    }

    fn pick_with(
        &self,
        policy: &BalancePolicy,
        hash: Option<u64>,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        match policy {
            BalancePolicy::RoundRobin => self.pick_round_robin(usable),
            BalancePolicy::LeastRequest => self.pick_two(usable, |state, weight| {
                u64::from(state.in_flight()) * 1_000_000 / weight
            }),
            BalancePolicy::Ewma => self.pick_two(usable, |state, weight| {
                // Cost grows with latency and with queued work, so a slow endpoint that
                // is also busy is avoided first.
                let latency = state.ewma_micros.load(Ordering::Relaxed);
                latency.saturating_mul(u64::from(state.in_flight()) + 1) / weight
            }),
            BalancePolicy::Hash(_) => match (hash, &self.spec.ring) {
                (Some(hash), Some(ring)) => ring.walk(hash).find(|index| usable(*index)),
                // No key in the request, or no ring: spread like round robin.
                _ => self.pick_round_robin(usable),
            },
        }
    }

    fn pick_round_robin(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let length = self.schedule.len();
        if length == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..length)
            .map(|step| self.schedule[(start + step) % length] as usize)
            .find(|index| usable(*index))
    }

    /// Power of two random choices: sample two usable endpoints, keep the cheaper.
    fn pick_two(
        &self,
        usable: &dyn Fn(usize) -> bool,
        cost: impl Fn(&EndpointState, u64) -> u64,
    ) -> Option<usize> {
        let length = self.endpoints.len();
        let start = fastrand::usize(..length);
        let mut candidates = (0..length)
            .map(|offset| (start + offset) % length)
            .filter(|index| usable(*index));
        let first = candidates.next()?;
        let Some(next_usable) = candidates.next() else {
            return Some(first);
        };
        // The first usable one after a random start, and a random other one, so the
        // choice is not always between neighbours.
        let pick = fastrand::usize(..length);
        let second = if pick != first && usable(pick) {
            pick
        } else {
            next_usable
        };
        let weight = |index: usize| u64::from(self.spec.endpoints[index].weight.max(1));
        let cost_first = cost(&self.endpoints[first], weight(first));
        let cost_second = cost(&self.endpoints[second], weight(second));
        Some(if cost_second < cost_first {
            second
        } else {
            first
        })
    }

    fn is_ejected(&self, index: usize, now_ms: u64) -> bool {
        let until = self.endpoints[index]
            .ejected_until_ms
            .load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// Marks a request as started on an endpoint; the guard ends it.
    pub fn start(&self, index: usize) -> Option<InFlight> {
        let state = self.endpoints.get(index)?;
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(Arc::clone(state)))
    }

    /// Records a request's outcome for passive health and latency.
    /// Returns true when this failure ejected the endpoint.
    pub fn report(&self, index: usize, outcome: Outcome) -> bool {
        let Some(state) = self.endpoints.get(index) else {
            return false;
        };
        match outcome {
            Outcome::Success { latency } => {
                state.consecutive_failures.store(0, Ordering::Relaxed);
                let sample = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let old = state.ewma_micros.load(Ordering::Relaxed);
                // Weight 1/4 for the new sample: reacts within a few requests.
                let new = if old == 0 {
                    sample
                } else {
                    old - old / 4 + sample / 4
                };
                state.ewma_micros.store(new, Ordering::Relaxed);
                false
            }
            Outcome::Failure => {
                let failures = state.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= self.health.failures_to_eject {
                    let eject_ms =
                        u64::try_from(self.health.eject_for.as_millis()).unwrap_or(u64::MAX);
                    state.ejected_until_ms.store(
                        self.clock.now_ms().saturating_add(eject_ms),
                        Ordering::Relaxed,
                    );
                    state.consecutive_failures.store(0, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// How many endpoints are ejected right now (for metrics).
    pub fn ejected_count(&self) -> usize {
        let now = self.clock.now_ms();
        (0..self.endpoints.len())
            .filter(|i| self.is_ejected(*i, now))
            .count()
    }
}

/// The smooth weighted round-robin sequence (as popularised by nginx's upstream module):
/// each step adds every weight to its running score and takes the highest, which then
/// pays back the total. Equal weights give plain rotation.
fn smooth_weighted_schedule(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    // Keep the schedule short for huge weight sums, without dropping any endpoint.
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = weights
        .iter()
        .map(|w| i64::try_from((w / scale).max(1)).unwrap_or(i64::MAX))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut scores = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (index, weight) in weights.iter().enumerate() {
            scores[index] += weight;
            if scores[index] > scores[best] {
                best = index;
            }
        }
        scores[best] -= total;
        schedule.push(u32::try_from(best).unwrap_or(0));
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Endpoint, HashOn};

    fn key() -> BackendKey {
        BackendKey {
            namespace: "default".into(),
            service: "web".into(),
            port: 80,
        }
    }

    fn balancer(weights: &[u32], ring: bool) -> BackendBalancer {
        let endpoints = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint {
                addr: SocketAddr::from(([127, 0, 0, u8::try_from(i + 1).unwrap()], 80)),
                weight: *w,
            })
            .collect();
        BackendBalancer::new(
            key(),
            Backend::new(endpoints, ring),
            None,
            BalancerClock::new(),
            HealthConfig::default(),
        )
    }

    fn counts(balancer: &BackendBalancer, policy: &BalancePolicy, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; balancer.endpoints.len()];
        for n in 0..picks {
            let index = balancer.pick(policy, Some(stable_hash(n)), &[]).unwrap();
            counts[index] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_even_and_follows_weights() {
        assert_eq!(
            counts(
                &balancer(&[1, 1, 1], false),
                &BalancePolicy::RoundRobin,
                300
            ),
            vec![100, 100, 100]
        );
        assert_eq!(
            counts(&balancer(&[3, 1], false), &BalancePolicy::RoundRobin, 400),
            vec![300, 100]
        );
        // Smooth: the heavy endpoint's turns are spread, not bunched.
        assert_eq!(
            smooth_weighted_schedule(&[5, 1, 1]),
            vec![0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn huge_weights_keep_every_endpoint_in_the_schedule() {
        let schedule = smooth_weighted_schedule(&[1_000_000, 1]);
        assert!(schedule.len() as u64 <= MAX_SCHEDULE + 1);
        assert!(schedule.contains(&1));
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let balancer = balancer(&[1, 1, 1, 1], false);
        let _busy: Vec<InFlight> = (0..10).map(|_| balancer.start(0).unwrap()).collect();
        let counts = counts(&balancer, &BalancePolicy::LeastRequest, 1000);
        // Endpoint 0 only wins when both samples land on it, which p2c never does.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1..].iter().all(|c| *c > 150), "{counts:?}");
        drop(_busy);
        assert_eq!(balancer.endpoints[0].in_flight(), 0);
    }

    #[test]
    fn ewma_avoids_the_slow_endpoint() {
        let balancer = balancer(&[1, 1, 1], false);
        for _ in 0..10 {
            balancer.report(
                0,
                Outcome::Success {
                    latency: Duration::from_millis(200),
                },
            );
            balancer.report(
                1,
                Outcome::Success {
                    latency: Duration::from_millis(2),
                },
            );
            balancer.report(
                2,
                Outcome::Success {
                    latency: Duration::from_millis(2),
                },
            );
        }
        let counts = counts(&balancer, &BalancePolicy::Ewma, 1000);
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 300 && counts[2] > 300, "{counts:?}");
    }

    #[test]
    fn hash_sends_a_key_to_one_endpoint() {
        let balancer = balancer(&[1, 1, 1], true);
        let policy = BalancePolicy::Hash(HashOn::ClientIp);
        for key in 0..100u64 {
            let first = balancer.pick(&policy, Some(stable_hash(key)), &[]);
            for _ in 0..5 {
                assert_eq!(balancer.pick(&policy, Some(stable_hash(key)), &[]), first);
            }
        }
        assert!(counts(&balancer, &policy, 3000).iter().all(|c| *c > 600));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_eject_then_the_endpoint_returns() {
        let balancer = balancer(&[1, 1], false);
        for _ in 0..4 {
            assert!(!balancer.report(0, Outcome::Failure));
        }
        assert!(balancer.report(0, Outcome::Failure), "fifth failure ejects");
        assert_eq!(balancer.ejected_count(), 1);
        assert_eq!(
            counts(&balancer, &BalancePolicy::RoundRobin, 50),
            vec![0, 50]
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(balancer.ejected_count(), 0);
        assert_eq!(
            counts(&balancer, &BalancePolicy::RoundRobin, 50),
            vec![25, 25]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_failure_count() {
        let balancer = balancer(&[1], false);
        for _ in 0..4 {
            balancer.report(0, Outcome::Failure);
        }
        balancer.report(
            0,
            Outcome::Success {
                latency: Duration::from_millis(1),
            },
        );
        assert!(!balancer.report(0, Outcome::Failure));
        assert_eq!(balancer.ejected_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn all_ejected_still_picks_and_exclusion_forces_another() {
        let balancer = balancer(&[1, 1], false);
        for index in 0..2 {
            for _ in 0..5 {
                balancer.report(index, Outcome::Failure);
            }
        }
        assert!(
            balancer
                .pick(&BalancePolicy::RoundRobin, None, &[])
                .is_some()
        );
        assert_eq!(
            balancer.pick(&BalancePolicy::RoundRobin, None, &[0]),
            Some(1)
        );
        assert_eq!(
            balancer.pick(&BalancePolicy::LeastRequest, None, &[1]),
            Some(0)
        );
        assert_eq!(
            balancer.pick(&BalancePolicy::RoundRobin, None, &[0, 1]),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn state_survives_a_rebuild_for_endpoints_that_stay() {
        let old = balancer(&[1, 1], false);
        for _ in 0..5 {
            old.report(0, Outcome::Failure);
        }
        let _guard = old.start(1).unwrap();
        let mut endpoints = old.spec.endpoints.clone();
        endpoints.push(Endpoint::new("127.0.0.9:80".parse().unwrap()));
        let new = BackendBalancer::new(
            key(),
            Backend::new(endpoints, false),
            Some(&old),
            BalancerClock::new(),
            HealthConfig::default(),
        );
        assert_eq!(new.ejected_count(), 1);
        assert_eq!(new.endpoints[1].in_flight(), 1);
        assert_eq!(new.endpoints[2].in_flight(), 0);
    }
}
