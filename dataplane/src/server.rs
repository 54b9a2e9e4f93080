//! Traffic listeners: accept connections, serve HTTP/1.1 and h2c, drain on shutdown.
//!
//! Traffic runs on one single-threaded runtime per worker thread, each with its own
//! listening socket on the shared address (`SO_REUSEPORT`, so the kernel spreads
//! connections) and its own upstream connection pool. A request, its client connection and
//! its upstream connection then stay on one thread: no work stealing, no cross-thread
//! wake-ups, no contended pool lock. This is the nginx worker model; the controller and the
//! admin listener run elsewhere and share only the atomically swapped snapshot.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::live::DataPlane;
use crate::proxy::{ClientConnection, Proxy, ProxyConfig, ResponseBody};
use crate::tls::{HandshakeFailure, TlsAcceptor};

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
    /// A connection with no request in flight for this long is closed gracefully
    /// (HTTP/2 GOAWAY; HTTP/1.1 keep-alive is also bounded by `header_read_timeout`).
    pub idle_timeout: Duration,
    /// TLS handshakes in progress at once per traffic thread; connections beyond it are
    /// closed at once rather than queued (each handshake holds buffers and CPU).
    pub max_handshakes: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            drain_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_handshakes: 1024,
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
/// requests up to `drain_timeout` to finish. With `tls`, every connection first completes
/// a TLS handshake (in its own task, so a slow one holds up nobody else).
pub async fn serve_traffic(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: ListenerConfig,
    tls: Option<Arc<TlsAcceptor>>,
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
        // RFC 8441: WebSocket over HTTP/2, for browsers that prefer it.
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let (drain, draining) = watch::channel(false);
    // Every connection task holds a sender; the drain is over when the last one is gone.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let scope = ConnectionScope {
        builder: Arc::new(builder),
        draining,
        alive,
        idle_timeout: config.idle_timeout,
    };
    let handshakes = Arc::new(tokio::sync::Semaphore::new(config.max_handshakes.max(1)));
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
        let local_addr = stream.local_addr().ok().or(local).unwrap_or(peer);
        let gauge = proxy.data_plane().metrics().active_connections.clone();
        gauge.inc();
        let mark = ConnectionMark(gauge);
        let Some(tls) = tls.as_ref() else {
            let connection = ClientConnection::new(peer, local_addr, "http");
            scope.serve(stream, connection, &proxy, mark);
            continue;
        };
        let Ok(handshake_slot) = Arc::clone(&handshakes).try_acquire_owned() else {
            tls.count_failure(HandshakeFailure::Overloaded);
            continue;
        };
        let tls = Arc::clone(tls);
        let scope = scope.clone();
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let accepted = tls.accept(stream).await;
            drop(handshake_slot);
            match accepted {
                Ok((stream, info)) => {
                    let connection =
                        ClientConnection::new(peer, local_addr, "https").with_tls(info);
                    scope.serve(stream, connection, &proxy, mark);
                }
                Err(failure) => {
                    tracing::debug!(client = %peer, reason = failure.label(), "TLS handshake failed");
                }
            }
        });
    }
    drop(listener);
    tracing::info!("draining connections");
    let _ = drain.send(true);
    drop(scope);
    tokio::select! {
        _ = all_closed.recv() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(config.drain_timeout) => tracing::warn!("drain deadline passed; closing the rest"),
    }
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct ConnectionScope {
    builder: Arc<auto::Builder<TokioExecutor>>,
    draining: watch::Receiver<bool>,
    alive: tokio::sync::mpsc::Sender<()>,
    idle_timeout: Duration,
}

impl ConnectionScope {
    /// Serves HTTP/1.1 and HTTP/2 on one accepted (and, for HTTPS, decrypted) connection,
    /// until the client closes it, it has been idle for `idle_timeout`, or the listener
    /// drains; the last two end it gracefully (HTTP/2 GOAWAY, in-flight requests finish).
    fn serve<IO>(
        &self,
        io: IO,
        connection: ClientConnection,
        proxy: &Arc<Proxy>,
        mark: ConnectionMark,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = connection.peer;
        let connection = Arc::new(connection);
        let proxy = Arc::clone(proxy);
        let activity = Arc::new(Activity::new());
        let activity_for_service = Arc::clone(&activity);
        let service = service_fn(move |request| {
            let proxy = Arc::clone(&proxy);
            let connection = Arc::clone(&connection);
            let guard = activity_for_service.begin();
            async move {
                let response = proxy.handle(request, &connection).await;
                Ok::<_, std::convert::Infallible>(response.map(|body| TrackedBody {
                    body,
                    _guard: guard,
                }))
            }
        });
        let scope = self.clone();
        tokio::spawn(async move {
            let ConnectionScope {
                builder,
                mut draining,
                alive,
                idle_timeout,
            } = scope;
            // With upgrades: a WebSocket handshake hands the connection to the tunnel.
            let serving = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let mut serving = std::pin::pin!(serving);
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    result = serving.as_mut() => break result,
                    _ = draining.wait_for(|drain| *drain), if !closing => {
                        serving.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = activity.idle_for(idle_timeout), if !closing => {
                        serving.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, client = %peer, "connection ended with an error");
            }
            drop(mark);
            drop(alive);
        });
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    started: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when a request last ended.
    last_ended_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(Arc::clone(self))
    }

    /// Completes once the connection has had no request in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last_ended = Duration::from_millis(self.last_ended_ms.load(Ordering::Relaxed));
            let deadline = if self.in_flight.load(Ordering::Relaxed) > 0 {
                tokio::time::Instant::now() + timeout
            } else {
                self.started + last_ended + timeout
            };
            tokio::time::sleep_until(deadline).await;
            let last_ended = Duration::from_millis(self.last_ended_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0
                && tokio::time::Instant::now() >= self.started + last_ended + timeout
            {
                return;
            }
        }
    }
}

/// Counts a request as in flight until its response body is done with.
struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let activity = &self.0;
        let ended = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ended_ms.fetch_max(ended, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight while it streams.
struct TrackedBody {
    body: ResponseBody,
    _guard: ActiveRequest,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = <ResponseBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Opens `count` listening sockets on `addr` that share it through `SO_REUSEPORT`. With
/// port 0 the first socket picks the port and the others join it.
pub fn bind_shared(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count.max(1));
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(bound),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// The listening sockets of one traffic worker.
#[derive(Debug)]
pub struct WorkerSockets {
    pub http: std::net::TcpListener,
    pub https: Option<std::net::TcpListener>,
}

/// The traffic worker threads; [`TrafficWorkers::shutdown`] stops and drains them.
#[derive(Debug)]
pub struct TrafficWorkers {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl TrafficWorkers {
    /// Starts one worker thread per entry of `listeners`, each with its own runtime and
    /// [`Proxy`]. A worker serves its HTTP socket and, with `tls`, its HTTPS socket.
    pub fn start(
        listeners: Vec<WorkerSockets>,
        tls: Option<&Arc<TlsAcceptor>>,
        data_plane: &Arc<DataPlane>,
        proxy_config: &ProxyConfig,
        listener_config: &ListenerConfig,
    ) -> io::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(listeners.len());
        for (index, sockets) in listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let proxy = Arc::new(Proxy::new(Arc::clone(data_plane), proxy_config.clone()));
            let config = listener_config.clone();
            let tls = tls.cloned();
            let stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-traffic-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let stop_signal = |mut stopped: watch::Receiver<bool>| async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        };
                        let http = async {
                            match TcpListener::from_std(sockets.http) {
                                Ok(listener) => {
                                    let shutdown = stop_signal(stopped.clone());
                                    let proxy = Arc::clone(&proxy);
                                    serve_traffic(listener, proxy, config.clone(), None, shutdown)
                                        .await;
                                }
                                Err(error) => {
                                    tracing::error!(%error, "cannot use the traffic listener");
                                }
                            }
                        };
                        let https = async {
                            let (Some(socket), Some(tls)) = (sockets.https, tls) else {
                                return;
                            };
                            match TcpListener::from_std(socket) {
                                Ok(listener) => {
                                    let shutdown = stop_signal(stopped.clone());
                                    let proxy = Arc::clone(&proxy);
                                    let config = config.clone();
                                    serve_traffic(listener, proxy, config, Some(tls), shutdown)
                                        .await;
                                }
                                Err(error) => {
                                    tracing::error!(%error, "cannot use the HTTPS listener");
                                }
                            }
                        };
                        tokio::join!(http, https);
                    });
                })?;
            threads.push(thread);
        }
        Ok(TrafficWorkers { threads, stop })
    }

    /// Stops accepting on every worker and waits for their drains to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_listeners_take_one_port_and_all_accept() {
        let listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        let addr = listeners[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), addr);
        }
        // The kernel spreads connections over the sockets; every one is usable.
        let clients: Vec<_> = (0..30)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let accepted: usize = listeners
            .iter()
            .map(|listener| std::iter::from_fn(|| listener.accept().ok()).count())
            .sum();
        assert_eq!(accepted, clients.len());
    }
}
