//! A response body passed to the client frame by frame while a copy is kept for the cache,
//! so a miss costs the client no extra latency and a large body no extra memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// Wraps `inner`; when it ends complete, with no trailers and at most `limit` bytes,
/// `on_complete` gets the whole body. A body that errors, is dropped early (the client went
/// away), carries trailers or grows past `limit` is passed on all the same, and not kept.
pub struct Capture<B, F> {
    inner: B,
    copy: Option<BytesMut>,
    limit: usize,
    on_complete: Option<F>,
}

impl<B, F> Capture<B, F> {
    pub fn new(inner: B, limit: usize, on_complete: F) -> Capture<B, F> {
        Capture {
            inner,
            copy: Some(BytesMut::new()),
            limit,
            on_complete: Some(on_complete),
        }
    }
}

impl<B, F: FnOnce(Bytes)> Capture<B, F> {
    fn complete(&mut self) {
        if let (Some(copy), Some(on_complete)) = (self.copy.take(), self.on_complete.take()) {
            on_complete(copy.freeze());
        }
    }
}

impl<B, F> Body for Capture<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce(Bytes) + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    let fits = this
                        .copy
                        .as_ref()
                        .is_some_and(|copy| copy.len() + data.len() <= this.limit);
                    match (&mut this.copy, fits) {
                        (Some(copy), true) => copy.extend_from_slice(data),
                        _ => this.copy = None,
                    }
                    // A body that knows its length says it has ended with its last frame,
                    // and hyper then stops polling: this frame may be the last one seen.
                    if this.inner.is_end_stream() {
                        this.complete();
                    }
                }
                // Trailers cannot be replayed from the cache.
                None => this.copy = None,
            },
            Poll::Ready(Some(Err(_))) => this.copy = None,
            Poll::Ready(None) => this.complete(),
            Poll::Pending => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use futures_util::stream;
    use http_body_util::{BodyExt, StreamBody};

    type Kept = Arc<Mutex<Option<Bytes>>>;
    type Part = Result<Frame<Bytes>, &'static str>;
    type Frames = StreamBody<stream::Iter<std::vec::IntoIter<Part>>>;

    fn frames(parts: Vec<Part>) -> Frames {
        StreamBody::new(stream::iter(parts))
    }

    fn capture<B>(body: B, limit: usize) -> (Capture<B, impl FnOnce(Bytes) + Unpin>, Kept) {
        let kept: Kept = Arc::default();
        let into = Arc::clone(&kept);
        let body = Capture::new(body, limit, move |bytes| {
            *into.lock().unwrap() = Some(bytes);
        });
        (body, kept)
    }

    fn data(text: &'static str) -> Part {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    #[tokio::test]
    async fn a_complete_body_within_the_limit_is_kept_and_passed_on() {
        let (body, kept) = capture(frames(vec![data("hello "), data("world")]), 64);
        let passed = body.collect().await.unwrap().to_bytes();
        assert_eq!(passed, "hello world");
        assert_eq!(
            kept.lock().unwrap().as_deref(),
            Some(b"hello world".as_slice())
        );
    }

    #[tokio::test]
    async fn a_body_that_says_it_ended_is_kept_without_another_poll() {
        let (mut body, kept) = capture(http_body_util::Full::new(Bytes::from_static(b"abc")), 64);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert!(body.is_end_stream());
        assert_eq!(kept.lock().unwrap().as_deref(), Some(b"abc".as_slice()));
    }

    #[tokio::test]
    async fn too_large_errors_trailers_and_early_drops_are_passed_on_but_not_kept() {
        let (body, kept) = capture(frames(vec![data("hello "), data("world")]), 8);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello world");
        assert!(kept.lock().unwrap().is_none(), "over the limit");

        let (body, kept) = capture(frames(vec![data("part"), Err("reset")]), 64);
        assert!(body.collect().await.is_err());
        assert!(kept.lock().unwrap().is_none(), "an error");

        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let (body, kept) = capture(frames(vec![data("x"), Ok(Frame::trailers(trailers))]), 64);
        body.collect().await.unwrap();
        assert!(kept.lock().unwrap().is_none(), "trailers");

        let (mut body, kept) = capture(frames(vec![data("first"), data("second")]), 64);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        drop(body);
        assert!(kept.lock().unwrap().is_none(), "the client went away");
    }
}
