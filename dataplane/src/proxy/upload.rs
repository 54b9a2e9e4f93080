//! The client's request body on its way upstream, and whose fault it is when it stops.
//!
//! A body that breaks off, is badly framed, or goes silent is the client's doing: it is
//! answered 400 or 408 and never counted against the endpoint (six bad uploads must not
//! eject a healthy one). The upstream's response-header timeout counts only time spent
//! waiting on the upstream: from the end of the upload, or from the last body frame while
//! the upstream is not reading.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How an upload is going, shared by the body (which hyper polls on the upstream
/// connection's task) and the request waiting for the response.
#[derive(Debug)]
pub struct Upload {
    started: Instant,
    state: AtomicU8,
    /// Milliseconds after `started` of the last body frame (or the start).
    last_progress_ms: AtomicU64,
    /// Set while the upstream side asked for more body and the client has not sent it.
    waiting_on_client: AtomicBool,
    /// Set once the upstream's response headers arrived: from then on the body is a stream
    /// both sides keep open on purpose (gRPC client streaming), and may go quiet.
    answered: AtomicBool,
    changed: Notify,
}

const SENDING: u8 = 0;
const COMPLETE: u8 = 1;
const CLIENT_FAILED: u8 = 2;
const CLIENT_TIMED_OUT: u8 = 3;

/// An upload that failed on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// Malformed framing, or the client went away mid-body.
    Broken,
    /// No body bytes for longer than the body timeout.
    TimedOut,
}

impl Upload {
    fn new() -> Self {
        Upload {
            started: Instant::now(),
            state: AtomicU8::new(SENDING),
            last_progress_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Why the upload failed, when the client is to blame.
    pub fn client_failure(&self) -> Option<ClientFailure> {
        match self.state.load(Ordering::Acquire) {
            CLIENT_FAILED => Some(ClientFailure::Broken),
            CLIENT_TIMED_OUT => Some(ClientFailure::TimedOut),
            _ => None,
        }
    }

    /// Whether the upstream is waiting on the client right now: an upstream that gives up
    /// on a slow body (its own read timeout) is then not to blame.
    pub fn client_is_slow(&self) -> bool {
        self.state.load(Ordering::Acquire) == SENDING
            && self.waiting_on_client.load(Ordering::Acquire)
    }

    /// The upstream answered: the body's idle timeout no longer applies.
    pub fn answered(&self) {
        self.answered.store(true, Ordering::Release);
    }

    fn end(&self, state: u8) {
        // Only the first ending counts: an error after completion is not the client's.
        if self
            .state
            .compare_exchange(SENDING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.progress();
        }
    }

    fn progress(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress_ms.store(elapsed, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn last_progress(&self) -> Instant {
        later(
            self.started,
            Duration::from_millis(self.last_progress_ms.load(Ordering::Acquire)),
        )
    }

    /// Completes when the upstream has had `timeout` to answer: `Ok` when that time is up,
    /// `Err` at once when the upload failed on the client's side. Time the client spends
    /// sending, and time it keeps the upstream waiting for body bytes, does not count.
    pub async fn response_deadline(&self, timeout: Duration) -> Result<(), ClientFailure> {
        loop {
            // Registered before the state is read, so no change between the two is missed.
            let changed = self.changed.notified();
            if let Some(failure) = self.client_failure() {
                return Err(failure);
            }
            let deadline = later(self.last_progress(), timeout);
            let client_is_slow = self.client_is_slow();
            if Instant::now() >= deadline && !client_is_slow {
                return Ok(());
            }
            if client_is_slow {
                // The body's own timer ends a silent upload.
                changed.await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = changed => {}
                }
            }
        }
    }
}

/// `instant + duration`, or a point a century away when that overflows (a timeout
/// configured as `1000000y` means "never").
fn later(instant: Instant, duration: Duration) -> Instant {
    instant
        .checked_add(duration)
        .or_else(|| instant.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(instant)
}

/// The error a silent upload ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
pub struct BodyTimeout(Duration);

/// The client's body, watched: a client that keeps Sluice waiting for body bytes longer
/// than the idle timeout, a framing error, or a client gone away ends the body and marks
/// the upload.
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    upload: Arc<Upload>,
}

impl ClientBody {
    pub fn new(inner: Incoming, idle_timeout: Duration) -> (Self, Arc<Upload>) {
        let upload = Arc::new(Upload::new());
        let body = ClientBody {
            inner,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep_until(later(
                Instant::now(),
                idle_timeout,
            ))),
            upload: Arc::clone(&upload),
        };
        (body, upload)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.upload
                    .waiting_on_client
                    .store(false, Ordering::Release);
                if this.inner.is_end_stream() {
                    this.upload.end(COMPLETE);
                } else {
                    this.upload.progress();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.upload.end(COMPLETE);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.upload.end(CLIENT_FAILED);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Pending => {
                // The clock starts when Sluice begins waiting on the client, not at the
                // last frame: a pause while the upstream was not reading is not the
                // client's.
                if !this.upload.waiting_on_client.swap(true, Ordering::AcqRel) {
                    let until = later(Instant::now(), this.idle_timeout);
                    this.idle.as_mut().reset(until);
                    this.upload.changed.notify_waiters();
                }
                if !this.upload.answered.load(Ordering::Acquire)
                    && this.idle.as_mut().poll(cx).is_ready()
                {
                    this.upload.end(CLIENT_TIMED_OUT);
                    return Poll::Ready(Some(Err(BodyTimeout(this.idle_timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_end_of_the_upload() {
        let upload = Upload::new();
        tokio::time::advance(Duration::from_secs(50)).await;
        upload.end(COMPLETE);
        let started = Instant::now();
        assert_eq!(
            upload.response_deadline(Duration::from_secs(10)).await,
            Ok(())
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_client_is_not_the_upstreams_timeout() {
        let upload = Arc::new(Upload::new());
        upload.waiting_on_client.store(true, Ordering::Release);
        let waiting = Arc::clone(&upload);
        let deadline =
            tokio::spawn(async move { waiting.response_deadline(Duration::from_secs(1)).await });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            !deadline.is_finished(),
            "timed out while the client was sending"
        );
        upload.end(CLIENT_TIMED_OUT);
        assert_eq!(deadline.await.unwrap(), Err(ClientFailure::TimedOut));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_that_stops_reading_times_out_after_the_last_progress() {
        let upload = Upload::new();
        tokio::time::advance(Duration::from_secs(5)).await;
        upload.progress();
        let started = Instant::now();
        assert_eq!(
            upload.response_deadline(Duration::from_secs(2)).await,
            Ok(())
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn overflowing_timeouts_mean_never() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
    }

    #[test]
    fn only_the_first_ending_counts() {
        let upload = Upload::new();
        upload.end(COMPLETE);
        upload.end(CLIENT_FAILED);
        assert_eq!(upload.client_failure(), None);
    }
}
