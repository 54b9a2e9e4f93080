//! A loopback HTTP/1.1 backend that can hold its answers: while held, every request waits
//! until released, so a test can keep any number of requests in flight through Sluice at
//! once. It answers 200 with the request's path and query as the body, after reading the
//! request's body whole. Stopped when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::watch;

struct State {
    /// Requests whose head has arrived.
    arrived: AtomicUsize,
    /// True while answers are held.
    held: watch::Sender<bool>,
}

pub struct HeldBackend {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
}

impl HeldBackend {
    /// Listens on 127.0.0.1, answering at once until [`HeldBackend::hold`].
    pub async fn start() -> HeldBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the held backend");
        let addr = listener.local_addr().expect("held backend address");
        let state = Arc::new(State {
            arrived: AtomicUsize::new(0),
            held: watch::Sender::new(false),
        });
        let (stop, stopped) = watch::channel(false);
        let serving = Arc::clone(&state);
        tokio::spawn(async move {
            let mut stopping = stopped.clone();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ = stopping.changed() => return,
                };
                let state = Arc::clone(&serving);
                let service = hyper::service::service_fn(move |request| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
                });
                let mut stopping = stopped.clone();
                tokio::spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = stopping.changed() => {}
                    }
                });
            }
        });
        HeldBackend { addr, state, stop }
    }

    /// From now on requests wait for [`HeldBackend::release`].
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// Answers every waiting request, and later ones at once.
    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Requests whose head has arrived so far.
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` requests have arrived, polling every 10 ms; panics
    /// with how many did once `within` is over.
    pub async fn wait_for_arrivals(&self, count: usize, within: Duration) {
        let arrived = super::holds_within(within, async || self.arrived() >= count).await;
        assert!(
            arrived.is_some(),
            "{} of {count} requests reached the backend within {within:?}",
            self.arrived()
        );
    }
}

impl Drop for HeldBackend {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    state.arrived.fetch_add(1, Ordering::SeqCst);
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |target| target.as_str().to_owned());
    let _ = request.into_body().collect().await;
    let mut held = state.held.subscribe();
    let _ = held.wait_for(|held| !*held).await;
    Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(target)))
        .expect("response")
}
