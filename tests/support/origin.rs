//! An origin server on 127.0.0.1 for cache tests, told by each request's query how to
//! answer, and counting what reaches it:
//! - `cc=…` sets `Cache-Control`, `vary=…` sets `Vary`, `cookie=1` sets a cookie,
//!   `etag=…` sets an `ETag` (and answers a matching `If-None-Match` with 304, carrying
//!   the other headers asked for),
//!   `public=1` adds `Last-Modified`, `delay=MS` waits before answering;
//! - the body is `PATH+QUERY #N` plus the request's `Accept-Encoding` and `X-User`, where N
//!   counts the requests for that path and query.
//!
//! `fail(true)` makes every answer a 503 until `fail(false)`; `stop()` closes the listener
//! and every connection, so requests find nothing listening.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

#[derive(Default)]
struct OriginState {
    counts: Mutex<HashMap<String, u64>>,
    failing: AtomicBool,
    /// Every request's `If-None-Match`, in order, for revalidation checks.
    conditions: Mutex<Vec<Option<String>>>,
}

pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Origin {
    pub async fn start() -> Origin {
        Origin::start_at("127.0.0.1:0").await
    }

    pub async fn start_at(addr: &str) -> Origin {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let state = Arc::new(OriginState::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server_state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut stopping = stopped.clone();
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                    _ = stopping.changed() => return,
                };
                let state = Arc::clone(&server_state);
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(answer(&state, &request).await) }
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
        Origin { addr, state, stop }
    }

    /// Requests that reached the origin for this path and query.
    pub fn count(&self, path_and_query: &str) -> u64 {
        self.state
            .counts
            .lock()
            .expect("counts")
            .get(path_and_query)
            .copied()
            .unwrap_or(0)
    }

    pub fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// The `If-None-Match` of every request so far.
    pub fn conditions(&self) -> Vec<Option<String>> {
        self.state.conditions.lock().expect("conditions").clone()
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(state: &OriginState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let count = {
        let mut counts = state.counts.lock().expect("counts");
        let count = counts.entry(path_and_query.clone()).or_insert(0);
        *count += 1;
        *count
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    state
        .conditions
        .lock()
        .expect("conditions")
        .push(header("if-none-match"));
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| {
            (
                name.to_owned(),
                value.replace("%20", " ").replace("%2C", ","),
            )
        })
        .collect();
    if let Some(delay) = query.get("delay").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response = Response::builder();
    if state.failing.load(Ordering::SeqCst) {
        return response
            .status(503)
            .body(Full::new(Bytes::from_static(b"origin failing\n")))
            .expect("response");
    }
    if let Some(cc) = query.get("cc") {
        response = response.header("cache-control", cc);
    }
    if let Some(vary) = query.get("vary") {
        response = response.header("vary", vary);
    }
    if query.contains_key("cookie") {
        response = response.header("set-cookie", format!("session=user{count}; Path=/"));
    }
    if query.contains_key("public") {
        response = response.header("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT");
    }
    if let Some(etag) = query.get("etag") {
        let tag = format!("\"{etag}\"");
        if header("if-none-match").as_deref() == Some(tag.as_str()) {
            return response
                .status(304)
                .header("etag", tag)
                .body(Full::new(Bytes::new()))
                .expect("response");
        }
        response = response.header("etag", tag);
    }
    let body = format!(
        "{path_and_query} #{count} enc={} user={}",
        header("accept-encoding").unwrap_or_default(),
        header("x-user").unwrap_or_default()
    );
    response
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}
