//! The parking lot: where idle plain-HTTP client connections wait for their next bytes
//! with no task and no tokio registration of their own.
//!
//! Parked in its own task, an idle connection still costs that task (384 bytes, a cache
//! line multiple) and tokio's registration of its socket (256), most of what it holds.
//! Here it is a slab entry: the socket, in an epoll set the lot owns, and what the
//! connection resumes with, boxed. One task per listener and worker watches the set (its
//! descriptor is itself pollable, so tokio watches it as one more socket); once a parked
//! socket has bytes or has ended, the lot takes it out and hands it back to a new task.
//! Closing a parked connection (budget, deadlines, drain) is dropping its entry.

use std::io;
use std::mem::MaybeUninit;
use std::net::TcpStream as StdTcpStream;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use rustix::event::{Timespec, epoll};
use slab::Slab;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::budget::{Activity, ConnectionBudget, Counted};

/// What a parked connection resumes with, on the lot's runtime, once its client sent
/// something: the socket and the connection's activity.
pub(super) type Resume = Box<dyn FnOnce(StdTcpStream, Arc<Activity>) + Send>;

/// How many readiness events one look at the epoll set takes.
const EVENTS_PER_LOOK: usize = 256;

struct Parked {
    socket: StdTcpStream,
    activity: Arc<Activity>,
    resume: Resume,
    _counted: Counted,
}

/// One listener's parked connections on one worker thread.
pub(super) struct ParkingLot {
    epoll: AsyncFd<OwnedFd>,
    parked: Mutex<Slab<Parked>>,
    budget: Arc<ConnectionBudget>,
    /// Set while the lot's task runs; a lot whose task ended takes no more connections.
    open: AtomicBool,
    /// Woken by [`Activity::close_soon`] on any parked connection.
    close_asked: Arc<CloseAsked>,
    close_waker: Waker,
}

/// Shared by every parked connection's activity as its closing waker, so that parking
/// adds no waker of its own: records that some connection was asked to close and wakes
/// the lot's task, which then looks for which.
#[derive(Default)]
struct CloseAsked {
    asked: AtomicBool,
    lot_task: AtomicWaker,
}

impl Wake for CloseAsked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.asked.store(true, Ordering::Release);
        self.lot_task.wake();
    }
}

impl CloseAsked {
    fn poll_asked(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.lot_task.register(cx.waker());
        if self.asked.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl ParkingLot {
    /// A lot on the current tokio runtime; its task is [`ParkingLot::run`].
    pub(super) fn new(budget: Arc<ConnectionBudget>) -> io::Result<Arc<Self>> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: an `OwnedFd` is one open descriptor for as long as it lives, and the
        // `AsyncFd` owns it.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let close_asked = Arc::new(CloseAsked::default());
        Ok(Arc::new(ParkingLot {
            epoll,
            parked: Mutex::new(Slab::new()),
            budget,
            open: AtomicBool::new(true),
            close_waker: Waker::from(Arc::clone(&close_asked)),
            close_asked,
        }))
    }

    /// Whether the lot takes connections.
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Parks a connection whose client has nothing more to say for now. A connection
    /// already asked to close, or that cannot be watched, is closed instead.
    pub(super) fn park(&self, socket: StdTcpStream, activity: Arc<Activity>, resume: Resume) {
        if !self.is_open() || self.budget.draining() {
            return;
        }
        activity.set_parked(true);
        let entry = Parked {
            socket,
            activity: Arc::clone(&activity),
            resume,
            _counted: self.budget.parked(),
        };
        // Inserted before the closing waker is set, under the lock the closing look takes:
        // a close asked in between is seen by that look.
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        let key = parked.insert(entry);
        let watched = epoll::add(
            self.epoll.get_ref(),
            &parked[key].socket,
            epoll::EventData::new_u64(key as u64),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        );
        let closing = activity.poll_closing(&mut Context::from_waker(&self.close_waker));
        if watched.is_err() || closing.is_ready() {
            if let Err(error) = watched {
                tracing::debug!(%error, "cannot watch an idle connection; closed");
            }
            let entry = parked.remove(key);
            drop(parked);
            self.close_parked(entry);
        }
    }

    /// Takes the entry's socket out of the epoll set: it goes back to tokio or closes.
    fn unwatch(&self, entry: &Parked) {
        // Fails only if it was never added.
        let _ = epoll::delete(self.epoll.get_ref(), &entry.socket);
        entry.activity.set_parked(false);
    }

    /// Closes a parked connection: its socket, and with what it would have resumed with,
    /// the connection's hold on the budget.
    fn close_parked(&self, entry: Parked) {
        self.unwatch(&entry);
        drop(entry);
    }

    /// Watches the parked connections until the lot is closed: resumes those whose client
    /// sent something (or hung up: the new task finds that out), closes those asked to.
    pub(super) async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                ready = self.epoll.readable() => {
                    let mut ready = match ready {
                        Ok(ready) => ready,
                        Err(error) => {
                            tracing::error!(%error, "parking lot stopped; idle connections closed");
                            break;
                        }
                    };
                    // On the stack, within this branch: the events are not `Send`.
                    let mut events = [MaybeUninit::<epoll::Event>::uninit(); EVENTS_PER_LOOK];
                    let none = Timespec { tv_sec: 0, tv_nsec: 0 };
                    let events = match epoll::wait(self.epoll.get_ref(), &mut events, Some(&none)) {
                        Ok((events, _)) => events,
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(error) => {
                            tracing::error!(%error, "parking lot stopped; idle connections closed");
                            break;
                        }
                    };
                    // Fewer than asked for: the set has nothing more ready for now.
                    if events.len() < EVENTS_PER_LOOK {
                        ready.clear_ready();
                    }
                    for event in events.iter() {
                        self.resume(event.data.u64());
                    }
                }
                () = std::future::poll_fn(|cx| self.close_asked.poll_asked(cx)) => {
                    self.close_asked_ones();
                }
            }
        }
        self.close();
    }

    fn resume(&self, key: u64) {
        // The lock is let go before the connection resumes.
        let taken = usize::try_from(key).ok().and_then(|key| {
            let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
            parked.try_remove(key)
        });
        let Some(entry) = taken else {
            return;
        };
        self.unwatch(&entry);
        (entry.resume)(entry.socket, entry.activity);
    }

    /// Closes every parked connection that was asked to close.
    fn close_asked_ones(&self) {
        let asked: Vec<Parked> = {
            let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<usize> = parked
                .iter()
                .filter(|(_, entry)| entry.activity.is_closing())
                .map(|(key, _)| key)
                .collect();
            keys.into_iter().map(|key| parked.remove(key)).collect()
        };
        // Dropped outside the lock: dropping a connection takes the budget's.
        for entry in asked {
            self.close_parked(entry);
        }
    }

    /// Takes no more connections and closes the parked ones. Their entries hold the
    /// listener's state, which holds the lot: this also ends that cycle.
    pub(super) fn close(&self) {
        self.open.store(false, Ordering::Release);
        let all: Vec<Parked> = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for entry in all {
            self.close_parked(entry);
        }
    }
}
