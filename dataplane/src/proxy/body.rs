//! Body types on both sides of the proxy. Bodies stream frame by frame; nothing is
//! buffered beyond what hyper holds.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty, Full, Limited};
use hyper::body::Incoming;
use prometheus_client::metrics::histogram::Histogram;

use crate::balance::InFlight;
use crate::cache::capture::Capture;

/// What a response body kept for the cache does with the copy once it is complete.
pub type StoreBody = Box<dyn FnOnce(Bytes) + Send>;

/// What goes to the upstream: the client's body under the size limit, or nothing (for a
/// body-less request, which can then be retried on another endpoint).
pub type UpstreamBody = Either<Limited<super::upload::ClientBody>, Empty<Bytes>>;

/// Work to finish when the response body is done or dropped: the request's duration and
/// its in-flight mark on the endpoint.
#[derive(Debug)]
pub struct RequestFinish {
    pub started: Instant,
    pub duration: Option<Histogram>,
    pub in_flight: Option<InFlight>,
}

impl Drop for RequestFinish {
    fn drop(&mut self) {
        if let Some(histogram) = &self.duration {
            histogram.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The body Sluice answers with: the upstream's body (kept for the cache as it passes, or
/// not), or one held in memory (its own answers, cached responses).
pub struct ResponseBody {
    inner: Either<Either<Incoming, Capture<Incoming, StoreBody>>, Full<Bytes>>,
    finish: Option<RequestFinish>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("finish", &self.finish)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub fn upstream(body: Incoming, finish: RequestFinish) -> Self {
        ResponseBody {
            inner: Either::Left(Either::Left(body)),
            finish: Some(finish),
        }
    }

    /// The upstream's body, of which a copy of at most `limit` bytes goes to `store` once
    /// it has all passed.
    pub fn stored(body: Incoming, limit: usize, store: StoreBody, finish: RequestFinish) -> Self {
        ResponseBody {
            inner: Either::Left(Either::Right(Capture::new(body, limit, store))),
            finish: Some(finish),
        }
    }

    pub fn local(text: impl Into<Bytes>) -> Self {
        ResponseBody {
            inner: Either::Right(Full::new(text.into())),
            finish: None,
        }
    }

    /// A body held in memory, such as a cached response's.
    pub fn full(bytes: Bytes, finish: RequestFinish) -> Self {
        ResponseBody {
            inner: Either::Right(Full::new(bytes)),
            finish: Some(finish),
        }
    }

    /// The same response finish with no body at all (a trailers-only gRPC answer).
    pub fn emptied(self) -> Self {
        ResponseBody {
            inner: Either::Right(Full::new(Bytes::new())),
            finish: self.finish,
        }
    }

    pub fn with_finish(mut self, finish: RequestFinish) -> Self {
        self.finish = Some(finish);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Finish as soon as the body ends, not when hyper gets round to dropping it.
            self.finish = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
