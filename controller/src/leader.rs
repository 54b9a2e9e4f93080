//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica serves traffic; only the leader writes status and Events. The rules are
//! those of client-go's leader election, so Sluice behaves like the controllers operators
//! already know:
//! - A lease held by someone else counts as expired only when this replica has seen its
//!   record unchanged for a whole lease duration, timed by the local monotonic clock. The
//!   holder's `renewTime` is never compared with our wall clock, so clock skew between
//!   nodes cannot make two leaders.
//! - Writes use the object's resourceVersion, so of two replicas racing for a free lease
//!   exactly one wins.
//! - A leader that cannot renew for `renew_deadline` (shorter than the lease duration)
//!   stops acting as leader before anyone else may take over.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error as KubeError};
use sluice_dataplane::metrics::Metrics;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where the lease lives and how it is timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `holderIdentity`; unique per replica (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal before others may take it.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it gives leadership up.
    pub renew_deadline: Duration,
    /// Time between attempts, for leaders and followers alike.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The client-go defaults scaled to `lease_duration` (15 s : 10 s : 2 s).
    pub fn with_duration(
        namespace: String,
        name: String,
        identity: String,
        lease_duration: Duration,
    ) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(2));
        LeaseConfig {
            namespace,
            name,
            identity,
            renew_deadline: lease_duration.mul_f64(2.0 / 3.0),
            retry_period: (lease_duration / 7).max(Duration::from_millis(200)),
            lease_duration,
        }
    }
}

/// The holder and renew time last read from the lease, and when that record last changed
/// as seen by this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObservedRecord {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    /// The holder's own lease duration, when the record has one: a holder started with a
    /// longer `--lease-duration` (mid-rollout) must not be cut short by ours.
    duration: Option<Duration>,
    changed_at: Instant,
}

/// What to do with the lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Someone else holds an unexpired lease.
    Follow,
    /// Ours: write a new renew time.
    Renew,
    /// Free or expired: take it, counting a transition.
    Take,
}

fn decide(observed: &ObservedRecord, identity: &str, now: Instant, duration: Duration) -> Step {
    let duration = observed.duration.unwrap_or(duration);
    match observed.holder.as_deref() {
        Some(holder) if holder == identity => Step::Renew,
        Some(holder) if !holder.is_empty() && now < observed.changed_at + duration => Step::Follow,
        _ => Step::Take,
    }
}

/// Runs the election until the process ends, publishing whether this replica leads on
/// `leading`. Returns after `stop` resolves, releasing the lease if held so the next leader
/// need not wait for it to expire.
pub async fn run_election(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut elector = Elector {
        api,
        config,
        observed: None,
        last_renewed: None,
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let leads = elector.attempt().await;
        let was_leading = *leading.borrow();
        if leads != was_leading {
            if leads {
                tracing::info!(lease = %elector.lease_name(), identity = %elector.config.identity, "became leader");
            } else {
                tracing::warn!(lease = %elector.lease_name(), identity = %elector.config.identity, "stopped leading");
            }
            leading.send_replace(leads);
            metrics.controller.leader.set(i64::from(leads));
        }
        tokio::select! {
            () = tokio::time::sleep(elector.config.retry_period) => {}
            () = &mut stop => break,
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        metrics.controller.leader.set(0);
        elector.release().await;
    }
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<ObservedRecord>,
    last_renewed: Option<Instant>,
}

impl Elector {
    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// One round; true when this replica leads after it.
    async fn attempt(&mut self) -> bool {
        // The renewal counts from before the request: the others time the lease from when
        // they see the write, which is later, so the leader's view always ends first.
        let started = Instant::now();
        // A request to an unreachable API server can hang; a leader must give up in time
        // whatever the network does, so each round is bounded by what is left of the
        // renew deadline.
        let budget = match self.last_renewed {
            Some(renewed) => self
                .config
                .renew_deadline
                .saturating_sub(renewed.elapsed())
                .max(Duration::from_millis(100)),
            None => self.config.renew_deadline,
        };
        let outcome = tokio::time::timeout(budget, self.try_acquire_or_renew()).await;
        match outcome {
            Ok(Ok(true)) => {
                self.last_renewed = Some(started);
                true
            }
            Ok(Ok(false)) => {
                self.last_renewed = None;
                false
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.lease_name(), %error, "cannot read or write the leader lease");
                self.still_within_deadline()
            }
            Err(_) => {
                tracing::warn!(lease = %self.lease_name(), "the leader lease request timed out");
                self.still_within_deadline()
            }
        }
    }

    /// Keeps leading through short API blips, but stops before the lease could have
    /// expired for the others.
    fn still_within_deadline(&mut self) -> bool {
        let within = self
            .last_renewed
            .is_some_and(|at| at.elapsed() < self.config.renew_deadline);
        if !within {
            self.last_renewed = None;
        }
        within
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, KubeError> {
        let lease = self.api.get_opt(&self.config.name).await?;
        // Seen now, after the read returned: the later the clock starts, the safer.
        let now = Instant::now();
        let Some(lease) = lease else {
            let created = self
                .api
                .create(&PostParams::default(), &self.new_lease(None))
                .await;
            return match created {
                Ok(lease) => {
                    self.observe(&lease, now);
                    Ok(true)
                }
                Err(KubeError::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        self.observe(&lease, now);
        let Some(observed) = self.observed.as_ref() else {
            return Ok(false);
        };
        match decide(
            observed,
            &self.config.identity,
            now,
            self.config.lease_duration,
        ) {
            Step::Follow => Ok(false),
            step @ (Step::Renew | Step::Take) => {
                let mut updated = self.new_lease(Some(&lease));
                if step == Step::Renew {
                    // Keep the acquire time and transition count of this term.
                    if let (Some(spec), Some(old)) = (updated.spec.as_mut(), lease.spec.as_ref()) {
                        spec.acquire_time.clone_from(&old.acquire_time);
                        spec.lease_transitions = old.lease_transitions;
                    }
                }
                match self
                    .api
                    .replace(&self.config.name, &PostParams::default(), &updated)
                    .await
                {
                    Ok(lease) => {
                        self.observe(&lease, Instant::now());
                        Ok(true)
                    }
                    // Someone else wrote first; their record is read on the next round.
                    Err(KubeError::Api(status)) if status.code == 409 => Ok(false),
                    Err(error) => Err(error),
                }
            }
        }
    }

    fn observe(&mut self, lease: &Lease, now: Instant) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity;
        let renew_time = spec.renew_time;
        let duration = spec
            .lease_duration_seconds
            .and_then(|seconds| u64::try_from(seconds).ok())
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs);
        let unchanged = self
            .observed
            .as_ref()
            .is_some_and(|seen| seen.holder == holder && seen.renew_time == renew_time);
        if !unchanged {
            self.observed = Some(ObservedRecord {
                holder,
                renew_time,
                duration,
                changed_at: now,
            });
        }
    }

    /// A lease held by us from now, based on `current` (for its resourceVersion and count).
    fn new_lease(&self, current: Option<&Lease>) -> Lease {
        let now = MicroTime(Timestamp::now());
        let transitions = current
            .and_then(|lease| lease.spec.as_ref())
            .map_or(0, |spec| {
                let held_by_other = spec
                    .holder_identity
                    .as_deref()
                    .is_some_and(|holder| !holder.is_empty() && holder != self.config.identity);
                spec.lease_transitions.unwrap_or(0) + i32::from(held_by_other)
            });
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                resource_version: current.and_then(|lease| lease.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Gives the lease up, as client-go's ReleaseOnCancel does: an empty holder lets the next
    /// replica take over at its next attempt instead of after a whole lease duration.
    async fn release(&mut self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.as_deref())
            == Some(self.config.identity.as_str());
        if !ours {
            return;
        }
        let mut released = lease.clone();
        if let Some(spec) = released.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.lease_name(), "released the leader lease"),
            Err(error) => {
                tracing::warn!(lease = %self.lease_name(), %error, "cannot release the leader lease")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>, changed_at: Instant) -> ObservedRecord {
        ObservedRecord {
            holder: holder.map(str::to_owned),
            renew_time: None,
            duration: None,
            changed_at,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_holders_own_duration_decides_when_its_lease_expires() {
        let ours = Duration::from_secs(5);
        let seen = Instant::now();
        let longer = ObservedRecord {
            duration: Some(Duration::from_secs(30)),
            ..record(Some("b"), seen)
        };
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(decide(&longer, "a", Instant::now(), ours), Step::Follow);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(decide(&longer, "a", Instant::now(), ours), Step::Take);
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_lease_of_another_replica_is_followed_until_it_stops_changing() {
        let duration = Duration::from_secs(15);
        let seen = Instant::now();
        let other = record(Some("b"), seen);
        assert_eq!(decide(&other, "a", seen, duration), Step::Follow);
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(decide(&other, "a", Instant::now(), duration), Step::Follow);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(decide(&other, "a", Instant::now(), duration), Step::Take);
    }

    #[tokio::test(start_paused = true)]
    async fn own_free_and_released_leases() {
        let duration = Duration::from_secs(15);
        let now = Instant::now();
        assert_eq!(
            decide(&record(Some("a"), now), "a", now, duration),
            Step::Renew
        );
        assert_eq!(decide(&record(None, now), "a", now, duration), Step::Take);
        assert_eq!(
            decide(&record(Some(""), now), "a", now, duration),
            Step::Take
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_seen_restarts_the_expiry_clock() {
        let lease = |holder: &str, renewed_at: i64| Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                renew_time: Some(MicroTime(
                    Timestamp::from_second(renewed_at).expect("valid time"),
                )),
                ..LeaseSpec::default()
            }),
        };
        let config = LeaseConfig::with_duration(
            "default".into(),
            "sluice".into(),
            "a".into(),
            Duration::from_secs(15),
        );
        // The elector's API handle is never used here: only `observe` and `decide` run.
        let client = Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("valid URL"),
        ))
        .expect("client");
        let mut elector = Elector {
            api: Api::namespaced(client, "default"),
            config: config.clone(),
            observed: None,
            last_renewed: None,
        };
        elector.observe(&lease("b", 100), Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        // The same record again does not move the clock...
        elector.observe(&lease("b", 100), Instant::now());
        tokio::time::advance(Duration::from_secs(6)).await;
        let observed = elector.observed.clone().expect("observed");
        assert_eq!(
            decide(&observed, "a", Instant::now(), config.lease_duration),
            Step::Take
        );
        // ...a renewal does.
        elector.observe(&lease("b", 116), Instant::now());
        let observed = elector.observed.clone().expect("observed");
        assert_eq!(
            decide(&observed, "a", Instant::now(), config.lease_duration),
            Step::Follow
        );
    }

    #[test]
    fn timings_scale_with_the_lease_duration() {
        let config = LeaseConfig::with_duration(
            "ns".into(),
            "lease".into(),
            "me".into(),
            Duration::from_secs(15),
        );
        assert_eq!(config.renew_deadline, Duration::from_secs(10));
        assert!(config.retry_period >= Duration::from_secs(2));
        assert!(config.renew_deadline < config.lease_duration);
    }
}
