//! Traffic listeners: accept connections, serve HTTP/1.1 and h2c, drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::{ClientConnection, Proxy};

/// Connection-level limits of a traffic listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Time a client gets to send a request's headers (slow clients are cut off).
    pub header_read_timeout: Duration,
    /// Largest header block, in bytes, before the request is refused with 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request before it is refused with 431.
    pub max_headers: usize,
    /// How long in-flight requests get to finish after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Counts an open connection in the `active_connections` gauge until dropped.
struct ConnectionMark(prometheus_client::metrics::gauge::Gauge);

impl Drop for ConnectionMark {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting and gives open
/// requests up to `drain_timeout` to finish.
pub async fn serve_traffic(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_headers(config.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = ClientConnection {
            peer,
            local: stream.local_addr().ok().or(local).unwrap_or(peer),
            scheme: "http",
        };
        let proxy_for_connection = Arc::clone(&proxy);
        let service = service_fn(move |request| {
            let proxy = Arc::clone(&proxy_for_connection);
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(request, connection).await) }
        });
        let gauge = proxy.data_plane().metrics().active_connections.clone();
        gauge.inc();
        let mark = ConnectionMark(gauge);
        let serving = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(error) = serving.await {
                tracing::debug!(%error, client = %peer, "connection ended with an error");
            }
            drop(mark);
        });
    }
    drop(listener);
    tracing::info!(open = graceful.count(), "draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(config.drain_timeout) => tracing::warn!("drain deadline passed; closing the rest"),
    }
}
