//! The connection budget: how many client connections the traffic listeners hold at once,
//! which ones give way when a new one arrives at the cap or memory runs short, and each
//! connection's activity (requests in flight, when the last one ended, whether it is
//! parked).
//!
//! The budget is one per process, shared by every traffic thread. Its lock is taken when
//! a connection opens or closes and when connections are shed, never per request: a
//! request only touches its own connection's atomics.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use slab::Slab;
use tokio::time::Instant;

use crate::metrics::{Metrics, ShedReason};

/// Requests in flight on one connection, when the last one ended, and the signal that
/// asks it to close.
pub(crate) struct Activity {
    pub(super) started: Instant,
    /// Whether any request has begun on this connection.
    begun: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when a request last ended.
    last_ended_ms: AtomicU64,
    /// Set by the stream when its last write had to wait: hyper still holds bytes for
    /// the client, so the connection is not taken back from it.
    pub(super) write_waiting: AtomicBool,
    /// Whether the connection waits for its client holding nothing but the socket.
    parked: AtomicBool,
    /// Whether the last request left hyper between messages with nothing more to read
    /// (see [`Activity::begin`]); cleared when the connection parks.
    parkable: AtomicBool,
    /// Whether it has been asked to close (by the budget or the memory watch); set once.
    shed: AtomicBool,
    /// The connection's task, while it waits for `shed`: one task per connection, so one
    /// waker (lighter than a `Notify`, whose waiter would sit in every parked task).
    closing_waker: AtomicWaker,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            started: Instant::now(),
            begun: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
            write_waiting: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            parkable: AtomicBool::new(false),
            shed: AtomicBool::new(false),
            closing_waker: AtomicWaker::new(),
        }
    }

    /// Counts a request in flight until the guard drops. `parkable`: once it is done,
    /// hyper is between messages with nothing of it left to read (it had no body and
    /// upgrades nothing), so the connection may park if nothing follows.
    pub(super) fn begin(self: &Arc<Self>, parkable: bool) -> ActiveRequest {
        self.begun.store(true, Ordering::Relaxed);
        self.parkable.store(false, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ActiveRequest {
            activity: Arc::clone(self),
            parkable,
        }
    }

    /// Whether the last request left the connection free to park (see [`Activity::begin`]).
    pub(super) fn exchange_parkable(&self) -> bool {
        self.parkable.load(Ordering::Relaxed)
    }

    /// The connection parks: a later request must end before it may park again.
    pub(super) fn parking(&self) {
        self.parkable.store(false, Ordering::Relaxed);
    }

    pub(super) fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// When the connection became idle: when it opened if no request has begun, else when
    /// the last request ended; `None` while one is in flight.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        if self.in_flight() {
            return None;
        }
        if !self.begun.load(Ordering::Relaxed) {
            return Some(self.started);
        }
        let last_ended = Duration::from_millis(self.last_ended_ms.load(Ordering::Relaxed));
        Some(self.started + last_ended)
    }

    /// When the connection counts as idle: `first_request` after it opened if no request
    /// has begun, else `idle` after the last request ended; `None` while one is in flight.
    pub(super) fn idle_deadline(&self, first_request: Duration, idle: Duration) -> Option<Instant> {
        let since = self.idle_since()?;
        Some(if self.begun.load(Ordering::Relaxed) {
            since + idle
        } else {
            since + first_request
        })
    }

    /// Completes once the connection is idle (see [`Activity::idle_deadline`]).
    pub(super) async fn idle(&self, first_request: Duration, idle: Duration) {
        loop {
            match self.idle_deadline(first_request, idle) {
                Some(deadline) if Instant::now() >= deadline => return,
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // A request is in flight; look again once it could have been idle long enough.
                None => tokio::time::sleep(idle).await,
            }
        }
    }

    /// Asks the connection to close: at once if it is idle, after its requests otherwise
    /// (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`). False if it was asked before.
    pub(super) fn close_soon(&self) -> bool {
        if self.shed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.closing_waker.wake();
        true
    }

    /// Whether [`Activity::close_soon`] has been called.
    pub(super) fn is_closing(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Completes once [`Activity::close_soon`] has been called (also if that was before).
    pub(super) async fn closing(&self) {
        std::future::poll_fn(|cx| self.poll_closing(cx)).await;
    }

    /// Ready once [`Activity::close_soon`] has been called. Polled by the connection's own
    /// task only.
    pub(super) fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.closing_waker.register(cx.waker());
        // Asked between the look and the registration: the wake found no waker.
        if self.shed.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub(super) fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::SeqCst);
    }
}

/// Counts a request as in flight until its response body is done with.
pub(crate) struct ActiveRequest {
    activity: Arc<Activity>,
    parkable: bool,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.parkable.store(self.parkable, Ordering::Relaxed);
        let ended = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ended_ms.fetch_max(ended, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How short memory is; see [`crate::server::memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Pressure {
    Normal = 0,
    /// Above the high watermark: no more keep-alive, shorter idle timeouts.
    High = 1,
    /// Above the critical watermark: idle connections are closed, oldest first, and a new
    /// connection is only taken in place of an idle one.
    Critical = 2,
}

impl Pressure {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Pressure::Normal,
            1 => Pressure::High,
            _ => Pressure::Critical,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Pressure::Normal => "normal",
            Pressure::High => "high",
            Pressure::Critical => "critical",
        }
    }
}

/// The time limits the budget enforces on parked connections, which have no timers of
/// their own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParkedLimits {
    /// A connection that has sent nothing yet.
    pub first_request: Duration,
    /// A keep-alive connection between requests.
    pub keep_alive: Duration,
}

/// The traffic listeners' client connections, and the most they may hold at once.
pub struct ConnectionBudget {
    max: usize,
    open: AtomicUsize,
    connections: Mutex<Slab<Arc<Activity>>>,
    pressure: AtomicU8,
    draining: AtomicBool,
    limits: ParkedLimits,
    shed_idle: Counter,
    shed_full: Counter,
    shed_memory: Counter,
    parked: Gauge,
}

impl std::fmt::Debug for ConnectionBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionBudget")
            .field("max", &self.max)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// A connection the budget admitted; it leaves the budget when dropped.
pub(crate) struct Admitted {
    budget: Arc<ConnectionBudget>,
    key: usize,
    pub activity: Arc<Activity>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.budget
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_remove(self.key);
        self.budget.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionBudget {
    pub(crate) fn new(max: usize, limits: ParkedLimits, metrics: &Metrics) -> Self {
        ConnectionBudget {
            max: max.max(1),
            open: AtomicUsize::new(0),
            connections: Mutex::new(Slab::new()),
            pressure: AtomicU8::new(Pressure::Normal as u8),
            draining: AtomicBool::new(false),
            limits,
            shed_idle: metrics.connections_shed(ShedReason::idle),
            shed_full: metrics.connections_shed(ShedReason::full),
            shed_memory: metrics.connections_shed(ShedReason::memory),
            parked: metrics.parked_connections.clone(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn pressure(&self) -> Pressure {
        Pressure::from_u8(self.pressure.load(Ordering::Relaxed))
    }

    pub(crate) fn set_pressure(&self, pressure: Pressure) {
        self.pressure.store(pressure as u8, Ordering::Relaxed);
    }

    /// Takes a new connection. At the cap it first makes room by closing the connection
    /// that has been idle longest; with none idle the new one is refused (`None`), to be
    /// closed at once. With memory critical, a new connection likewise closes the one idle
    /// longest, but is taken even when none is (a fresh client is served; busy ones are
    /// bounded by the cap).
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let at_cap = self.open.load(Ordering::Relaxed) >= self.max;
        let critical = self.pressure() == Pressure::Critical;
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if at_cap || critical {
            if shed_oldest_idle(&connections, 1) == 1 {
                if at_cap {
                    self.shed_idle.inc();
                } else {
                    self.shed_memory.inc();
                }
            } else if at_cap {
                drop(connections);
                self.shed_full.inc();
                return None;
            }
        }
        let activity = Arc::new(Activity::new());
        let key = connections.insert(Arc::clone(&activity));
        drop(connections);
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            budget: Arc::clone(self),
            key,
            activity,
        })
    }

    /// Closes up to `count` idle connections, oldest first, for memory; how many.
    pub(crate) fn shed_for_memory(&self, count: usize) -> usize {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let shed = shed_oldest_idle(&connections, count);
        drop(connections);
        self.shed_memory.inc_by(shed as u64);
        shed
    }

    /// Closes every connection idle for longer than `age`; how many. With memory high,
    /// idle connections get a shorter timeout.
    pub(crate) fn shed_idle_longer_than(&self, age: Duration) -> usize {
        let now = Instant::now();
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut shed = 0;
        for (_, activity) in connections.iter() {
            if activity
                .idle_since()
                .is_some_and(|since| now.saturating_duration_since(since) > age)
                && activity.close_soon()
            {
                shed += 1;
            }
        }
        drop(connections);
        self.shed_memory.inc_by(shed as u64);
        shed
    }

    /// Closes parked connections whose time is up: parked connections have no timers of
    /// their own. Run every fraction of a second by the budget's watch.
    pub(crate) fn expire_parked(&self) {
        let now = Instant::now();
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, activity) in connections.iter() {
            if !activity.parked.load(Ordering::Relaxed) {
                continue;
            }
            let deadline =
                activity.idle_deadline(self.limits.first_request, self.limits.keep_alive);
            if deadline.is_some_and(|deadline| now >= deadline) {
                activity.close_soon();
            }
        }
    }

    /// Counts a connection as parked while the guard lives.
    pub(crate) fn parked(&self) -> Counted {
        Counted::new(self.parked.clone())
    }

    /// The listeners are draining: parked connections close now, and connections that
    /// park later close instead.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, activity) in connections.iter() {
            if activity.parked.load(Ordering::SeqCst) {
                activity.close_soon();
            }
        }
    }

    /// Whether a connection about to park must close instead. Read after the connection
    /// marked itself parked, so that it or [`ConnectionBudget::drain`] sees the other.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Asks the `count` connections idle longest to close; how many were asked.
fn shed_oldest_idle(connections: &Slab<Arc<Activity>>, count: usize) -> usize {
    if count == 0 {
        return 0;
    }
    // Idle means waiting for the client: parked, or between requests. A connection that
    // has sent bytes not yet made into a request (a busy thread has not got to them) is
    // not idle, however long ago it opened.
    let mut idle: Vec<(Instant, &Arc<Activity>)> = connections
        .iter()
        .filter(|(_, activity)| !activity.shed.load(Ordering::Relaxed))
        .filter(|(_, activity)| {
            activity.parked.load(Ordering::Relaxed) || activity.begun.load(Ordering::Relaxed)
        })
        .filter_map(|(_, activity)| Some((activity.idle_since()?, activity)))
        .collect();
    let count = count.min(idle.len());
    if count == 0 {
        return 0;
    }
    if count < idle.len() {
        idle.select_nth_unstable_by_key(count - 1, |(since, _)| *since);
    }
    idle[..count]
        .iter()
        .filter(|(_, activity)| activity.close_soon())
        .count()
}

/// Counts connections by listener and protocol in `sluice_open_connections` while alive.
pub(crate) struct Counted(Gauge);

impl Counted {
    pub(crate) fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn budget(max: usize) -> Arc<ConnectionBudget> {
        let limits = ParkedLimits {
            first_request: 2 * SECOND,
            keep_alive: 5 * SECOND,
        };
        Arc::new(ConnectionBudget::new(max, limits, &Metrics::new()))
    }

    /// Admits a connection that then waits for its client (parked).
    fn waiting(budget: &Arc<ConnectionBudget>) -> Option<Admitted> {
        let admitted = budget.admit()?;
        admitted.activity.set_parked(true);
        Some(admitted)
    }

    fn shed(activity: &Activity) -> bool {
        activity.shed.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let budget = budget(3);
        let first = waiting(&budget).unwrap();
        tokio::time::sleep(SECOND).await;
        let second = waiting(&budget).unwrap();
        let third = waiting(&budget).unwrap();
        // The first is busy: the second has been idle longest.
        let busy = first.activity.begin(false);
        let fourth = waiting(&budget).expect("room made");
        assert!(!shed(&first.activity) && shed(&second.activity) && !shed(&third.activity));
        assert_eq!(budget.open(), 4, "until the shed one closes");
        drop(second);
        // Third and fourth idle, first busy: the third goes next.
        let _fifth = waiting(&budget).expect("room made");
        assert!(shed(&third.activity) && !shed(&fourth.activity));
        drop(busy);
        drop(third);
        assert_eq!(budget.open(), 3);
        let metrics = budget.shed_idle.get();
        assert_eq!(metrics, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_connection_busy_a_new_one_is_refused() {
        let budget = budget(2);
        let a = waiting(&budget).unwrap();
        let b = waiting(&budget).unwrap();
        let _busy = (a.activity.begin(false), b.activity.begin(false));
        assert!(waiting(&budget).is_none());
        assert_eq!(budget.shed_full.get(), 1);
        assert!(!shed(&a.activity) && !shed(&b.activity));
        assert_eq!(budget.open(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_shed_once() {
        let budget = budget(1);
        let a = waiting(&budget).unwrap();
        let _b = waiting(&budget).expect("a made room");
        // `a` is still closing: it is not counted as room a second time.
        let _b_busy = _b.activity.begin(false);
        assert!(waiting(&budget).is_none());
        drop(a);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_pressure_sheds_idle_connections_oldest_first() {
        let budget = budget(100);
        let old = waiting(&budget).unwrap();
        tokio::time::sleep(3 * SECOND).await;
        let newer = waiting(&budget).unwrap();
        tokio::time::sleep(SECOND).await;
        let busy = waiting(&budget).unwrap();
        let _request = busy.activity.begin(false);
        assert_eq!(budget.shed_idle_longer_than(2 * SECOND), 1);
        assert!(shed(&old.activity) && !shed(&newer.activity));
        assert_eq!(budget.shed_for_memory(5), 1, "only idle ones");
        assert!(shed(&newer.activity) && !shed(&busy.activity));
        assert_eq!(budget.shed_memory.get(), 2);
        budget.set_pressure(Pressure::Critical);
        let fresh = waiting(&budget).expect("a fresh client is served with none idle");
        let _in_its_place = waiting(&budget).expect("served");
        assert!(
            shed(&fresh.activity),
            "critical: a new one closes the one idle longest"
        );
        assert_eq!(budget.shed_memory.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn parked_connections_expire_at_their_deadlines() {
        let budget = budget(10);
        let silent = waiting(&budget).unwrap();
        let keep_alive = budget.admit().unwrap();
        drop(keep_alive.activity.begin(false));
        keep_alive.activity.set_parked(true);
        let unparked = budget.admit().unwrap();
        tokio::time::sleep(2 * SECOND).await;
        budget.expire_parked();
        assert!(shed(&silent.activity), "first request deadline");
        assert!(!shed(&keep_alive.activity) && !shed(&unparked.activity));
        tokio::time::sleep(3 * SECOND).await;
        budget.expire_parked();
        assert!(shed(&keep_alive.activity), "keep-alive deadline");
        assert!(!shed(&unparked.activity), "has timers of its own");
        // Closing for time is not shedding.
        assert_eq!(budget.shed_memory.get() + budget.shed_idle.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_bytes_wait_unread_is_not_idle() {
        let budget = budget(1);
        // Accepted, sent its request, not yet made into one by a busy thread.
        let unread = budget.admit().unwrap();
        assert!(
            budget.admit().is_none(),
            "nothing idle to close in its place"
        );
        assert!(!shed(&unread.activity));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_closes_parked_connections_only() {
        let budget = budget(10);
        let parked = waiting(&budget).unwrap();
        let serving = budget.admit().unwrap();
        budget.drain();
        assert!(budget.draining());
        assert!(shed(&parked.activity) && !shed(&serving.activity));
        // The signal waits for a connection that parks after it.
        tokio::time::timeout(SECOND, parked.activity.closing())
            .await
            .expect("notified");
    }
}
