//! Traffic listeners: accept connections, serve HTTP/1.1 and h2c, drain on shutdown.
//!
//! Traffic runs on one single-threaded runtime per worker thread, each with its own
//! listening socket on the shared address (`SO_REUSEPORT`, so the kernel spreads
//! connections) and its own upstream connection pool. A request, its client connection and
//! its upstream connection then stay on one thread: no work stealing, no cross-thread
//! wake-ups, no contended pool lock. This is the nginx worker model; the controller and the
//! admin listener run elsewhere and share only the atomically swapped snapshot.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::live::DataPlane;
use crate::proxy::{ClientConnection, Proxy, ProxyConfig, TunnelOpen};
use crate::tls::{HandshakeFailure, TlsAcceptor};

/// Connection-level limits of a listener: the traffic listeners and the admin listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Time a client gets to send a request's headers (slow clients are cut off), and to
    /// begin its first request on a new connection: a connection that sends nothing, or
    /// only part of the HTTP/2 preface, is closed after it. It also bounds how long a
    /// connection closed for being idle gets to finish closing.
    pub header_read_timeout: Duration,
    /// Largest header block, in bytes, before the request is refused with 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request before it is refused with 431.
    pub max_headers: usize,
    /// How long in-flight requests get to finish after shutdown begins; connections still
    /// open after it are dropped.
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

/// One accepted traffic connection: counted in the `active_connections` gauge, and
/// holding up the drain, until dropped.
struct OpenConnection {
    gauge: Gauge,
    _alive: mpsc::Sender<()>,
}

impl OpenConnection {
    fn new(gauge: Gauge, alive: mpsc::Sender<()>) -> Self {
        gauge.inc();
        OpenConnection {
            gauge,
            _alive: alive,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
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
    let (drain, draining) = watch::channel(false);
    let server = ConnectionServer::new(&config, draining);
    // Every connection holds a sender; the drain is over when the last one is gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    // Clamped: a semaphore panics beyond MAX_PERMITS.
    let handshakes = Arc::new(Semaphore::new(
        config.max_handshakes.clamp(1, Semaphore::MAX_PERMITS),
    ));
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
        let open = OpenConnection::new(gauge, alive.clone());
        let Some(tls) = tls.as_ref() else {
            let connection = ClientConnection::new(peer, local_addr, "http");
            let client = serve_client(server.clone(), stream, connection, &proxy, open);
            tokio::spawn(client);
            continue;
        };
        let Ok(handshake_slot) = Arc::clone(&handshakes).try_acquire_owned() else {
            tls.count_failure(HandshakeFailure::Overloaded);
            continue;
        };
        let tls = Arc::clone(tls);
        let server = server.clone();
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let accepted = tls.accept(stream).await;
            drop(handshake_slot);
            match accepted {
                Ok((stream, info)) => {
                    let connection =
                        ClientConnection::new(peer, local_addr, "https").with_tls(info);
                    serve_client(server, stream, connection, &proxy, open).await;
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
    drop(alive);
    tokio::select! {
        _ = all_closed.recv() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(config.drain_timeout) => tracing::warn!("drain deadline passed; closing the rest"),
    }
}

/// Serves one traffic connection (decrypted, for HTTPS) through `proxy` until it closes.
fn serve_client<IO>(
    server: ConnectionServer,
    io: IO,
    connection: ClientConnection,
    proxy: &Arc<Proxy>,
    open: OpenConnection,
) -> impl Future<Output = ()> + Send + 'static
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = connection.peer;
    let connection = Arc::new(connection);
    let proxy = Arc::clone(proxy);
    async move {
        let handle = move |request| {
            let proxy = Arc::clone(&proxy);
            let connection = Arc::clone(&connection);
            async move { proxy.handle(request, &connection).await }
        };
        server.serve(io, peer, handle).await;
        drop(open);
    }
}

/// How a listener serves each connection it accepts: HTTP/1.1 and HTTP/2 (h2c, or h2 over
/// TLS) with the listener's limits, and the deadlines that end a connection whatever its
/// client does. The traffic and admin listeners each make one, so both meet hostile
/// clients with the same rules.
#[derive(Clone)]
pub(crate) struct ConnectionServer {
    builder: Arc<auto::Builder<TokioExecutor>>,
    deadlines: Deadlines,
    /// Turns true when the listener drains; a dropped sender counts as a drain too.
    draining: watch::Receiver<bool>,
}

/// When a connection is closed, whatever its client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadlines {
    /// No request has begun this long after the connection opened: closed gracefully.
    /// Covers connections that send nothing or part of the HTTP/2 preface, which hyper's
    /// header-read timeout does not see (it starts once HTTP/1.1 is known).
    first_request: Duration,
    /// No request in flight this long after the last one ended: closed gracefully.
    idle: Duration,
    /// After an idle close begins, the time the client gets to let go before the
    /// connection is dropped: hyper's HTTP/2 GOAWAY waits for a PING answer that a hostile
    /// client never sends.
    idle_close: Duration,
    /// After a drain begins, the time in-flight requests get before the connection is
    /// dropped.
    drain: Duration,
}

impl Deadlines {
    fn new(config: &ListenerConfig) -> Self {
        Deadlines {
            // An idle timeout shorter than the header timeout applies before the first
            // request too: a connection without a request is idle.
            first_request: config.header_read_timeout.min(config.idle_timeout),
            idle: config.idle_timeout,
            idle_close: config.header_read_timeout,
            drain: config.drain_timeout,
        }
    }
}

/// A graceful shutdown under way on one connection.
#[derive(Debug, Clone, Copy)]
struct Closing {
    began: Instant,
    /// When the connection is dropped if it is still open.
    deadline: Instant,
    /// An idle close may be extended once, to the drain timeout, for a request that began
    /// while the shutdown started (an HTTP/2 stream the client opened before it saw the
    /// GOAWAY, an HTTP/1.1 request whose headers were arriving).
    extendable: bool,
}

impl ConnectionServer {
    pub(crate) fn new(config: &ListenerConfig, draining: watch::Receiver<bool>) -> Self {
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
            // RFC 8441: WebSocket over HTTP/2, for browsers that prefer it. Harmless on the
            // admin listener, which answers an extended CONNECT with 405.
            .enable_connect_protocol()
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        ConnectionServer {
            builder: Arc::new(builder),
            deadlines: Deadlines::new(config),
            draining,
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 on one accepted (and, for HTTPS, decrypted) connection,
    /// answering each request with `handle`, until the client closes it or a deadline
    /// ends it: no first request in time or idle too long (closed gracefully: in-flight
    /// requests finish, HTTP/2 gets a GOAWAY), or the listener drains (likewise). Once a
    /// graceful close has begun the connection is dropped at a hard deadline, whether or
    /// not the client cooperates.
    pub(crate) async fn serve<IO, H, F, B>(&self, io: IO, peer: SocketAddr, handle: H)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> F + Send + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let activity = Arc::new(Activity::new());
        let activity_for_service = Arc::clone(&activity);
        let service = service_fn(move |request| {
            let guard = activity_for_service.begin();
            let activity = Arc::clone(&activity_for_service);
            let response = handle(request);
            async move {
                let mut response = response.await;
                // A tunnel keeps its connection busy after its response is done with
                // (an HTTP/2 WebSocket's body ends with its headers): never idle-closed.
                let guard = match response.extensions_mut().remove::<TunnelOpen>() {
                    Some(TunnelOpen(mut open)) => {
                        tokio::spawn(async move {
                            let _busy = guard;
                            // Never sent on: ends when the tunnel drops its sender.
                            while open.changed().await.is_ok() {}
                        });
                        activity.begin()
                    }
                    None => guard,
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _guard: guard,
                }))
            }
        });
        let deadlines = self.deadlines;
        let mut draining = self.draining.clone();
        // With upgrades: a WebSocket handshake hands the connection to the tunnel.
        let serving = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut serving = std::pin::pin!(serving);
        let mut closing: Option<Closing> = None;
        loop {
            // Only polled while closing; the fallback instant is never waited for.
            let hard_stop = closing.map_or_else(Instant::now, |closing| closing.deadline);
            tokio::select! {
                result = serving.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, client = %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = draining.wait_for(|drain| *drain), if closing.is_none() => {
                    serving.as_mut().graceful_shutdown();
                    let now = Instant::now();
                    closing = Some(Closing {
                        began: now,
                        deadline: now + deadlines.drain,
                        extendable: false,
                    });
                }
                () = activity.idle(deadlines.first_request, deadlines.idle), if closing.is_none() => {
                    serving.as_mut().graceful_shutdown();
                    let now = Instant::now();
                    closing = Some(Closing {
                        began: now,
                        deadline: now + deadlines.idle_close,
                        extendable: true,
                    });
                }
                () = tokio::time::sleep_until(hard_stop), if closing.is_some() => {
                    if let Some(closing) = closing.as_mut()
                        && closing.extendable
                        && activity.in_flight()
                    {
                        closing.extendable = false;
                        closing.deadline = closing.began + deadlines.drain.max(deadlines.idle_close);
                        continue;
                    }
                    tracing::debug!(client = %peer, "connection still open after its graceful close; dropped");
                    return;
                }
            }
        }
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    started: Instant,
    /// Whether any request has begun on this connection.
    begun: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when a request last ended.
    last_ended_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            begun: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ended_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.begun.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(Arc::clone(self))
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// When the connection counts as idle: `first_request` after it opened if no request
    /// has begun, else `idle` after the last request ended; `None` while one is in flight.
    fn idle_deadline(&self, first_request: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight() {
            return None;
        }
        if !self.begun.load(Ordering::Relaxed) {
            return Some(self.started + first_request);
        }
        let last_ended = Duration::from_millis(self.last_ended_ms.load(Ordering::Relaxed));
        Some(self.started + last_ended + idle)
    }

    /// Completes once the connection is idle (see [`Activity::idle_deadline`]).
    async fn idle(&self, first_request: Duration, idle: Duration) {
        loop {
            match self.idle_deadline(first_request, idle) {
                Some(deadline) if Instant::now() >= deadline => return,
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // A request is in flight; look again once it could have been idle long enough.
                None => tokio::time::sleep(idle).await,
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
struct TrackedBody<B> {
    body: B,
    _guard: ActiveRequest,
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
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
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const SECOND: Duration = Duration::from_secs(1);

    fn config(header_read: u64, idle: u64, drain: u64) -> ListenerConfig {
        ListenerConfig {
            header_read_timeout: Duration::from_secs(header_read),
            idle_timeout: Duration::from_secs(idle),
            drain_timeout: Duration::from_secs(drain),
            ..ListenerConfig::default()
        }
    }

    /// Answers `/slow` after five seconds and anything else at once.
    async fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(5 * SECOND).await;
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    /// Serves one in-memory connection; the client's end, and the task that ends when the
    /// server lets the connection go.
    fn connect(server: &ConnectionServer) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        let server = server.clone();
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let serving = tokio::spawn(async move { server.serve(server_end, peer, answer).await });
        (client, serving)
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const HEADERS: u8 = 0x1;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut out = vec![length[1], length[2], length[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The next frame's type and stream, or `None` once the server has closed.
    async fn next_frame(client: &mut DuplexStream) -> Option<(u8, u32)> {
        let mut head = [0u8; 9];
        client.read_exact(&mut head).await.ok()?;
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; length];
        client.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((head[3], stream))
    }

    /// The client half of the HTTP/2 connection preface: the magic, an empty SETTINGS, and
    /// the acknowledgement of the server's SETTINGS. After it the client answers nothing.
    async fn h2_handshake(client: &mut DuplexStream) {
        client.write_all(PREFACE).await.unwrap();
        client.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        while let Some((kind, _)) = next_frame(client).await {
            if kind == SETTINGS {
                client
                    .write_all(&frame(SETTINGS, 0x1, 0, &[]))
                    .await
                    .unwrap();
                return;
            }
        }
        panic!("the server closed before its SETTINGS");
    }

    /// `GET /path` on stream 1, HPACK-encoded by hand: :method GET, :scheme http and
    /// :authority a from the static table, :path as a literal.
    fn get(path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x41, 0x01, b'a', 0x04];
        block.push(u8::try_from(path.len()).unwrap());
        block.extend_from_slice(path.as_bytes());
        // END_STREAM | END_HEADERS
        frame(HEADERS, 0x5, 1, &block)
    }

    /// Reads until the server closes; how many bytes it sent. Bounded like
    /// [`frames_until_closed`].
    async fn read_until_closed(client: &mut DuplexStream) -> usize {
        let mut buffer = Vec::new();
        let closed = tokio::time::timeout(60 * SECOND, client.read_to_end(&mut buffer)).await;
        assert!(closed.is_ok(), "the connection was never closed");
        buffer.len()
    }

    /// Reads frames until the server closes; the types of the frames it sent. Gives up
    /// (in paused time, at once) after a minute: without a deadline the server never would.
    async fn frames_until_closed(client: &mut DuplexStream) -> Vec<u8> {
        let mut kinds = Vec::new();
        let reading = async {
            while let Some((kind, _)) = next_frame(client).await {
                kinds.push(kind);
            }
        };
        let closed = tokio::time::timeout(60 * SECOND, reading).await;
        assert!(closed.is_ok(), "the connection was never closed");
        kinds
    }

    #[test]
    fn the_first_request_gets_the_shorter_of_the_header_and_idle_timeouts() {
        let deadlines = Deadlines::new(&config(30, 75, 20));
        assert_eq!(deadlines.first_request, 30 * SECOND);
        assert_eq!(deadlines.idle, 75 * SECOND);
        assert_eq!(deadlines.idle_close, 30 * SECOND);
        assert_eq!(deadlines.drain, 20 * SECOND);
        assert_eq!(Deadlines::new(&config(30, 5, 20)).first_request, 5 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_is_counted_from_the_start_until_a_request_then_from_its_end() {
        let activity = Arc::new(Activity::new());
        let started = activity.started;
        let (first, idle) = (SECOND, 10 * SECOND);
        assert_eq!(activity.idle_deadline(first, idle), Some(started + first));
        tokio::time::sleep(SECOND / 2).await;
        let request = activity.begin();
        assert_eq!(activity.idle_deadline(first, idle), None);
        tokio::time::sleep(3 * SECOND).await;
        drop(request);
        let ended = started + SECOND / 2 + 3 * SECOND;
        assert_eq!(activity.idle_deadline(first, idle), Some(ended + idle));
        activity.idle(first, idle).await;
        assert_eq!(Instant::now(), ended + idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_at_the_header_timeout() {
        let (_drain, draining) = watch::channel(false);
        let server = ConnectionServer::new(&config(2, 75, 30), draining);
        let (mut client, serving) = connect(&server);
        let opened = Instant::now();
        assert_eq!(read_until_closed(&mut client).await, 0);
        serving.await.unwrap();
        assert_eq!(opened.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_http2_preface_is_closed_at_the_header_timeout() {
        let (_drain, draining) = watch::channel(false);
        let server = ConnectionServer::new(&config(2, 75, 30), draining);
        let (mut client, serving) = connect(&server);
        let opened = Instant::now();
        client.write_all(&PREFACE[..10]).await.unwrap();
        assert_eq!(read_until_closed(&mut client).await, 0);
        serving.await.unwrap();
        assert_eq!(opened.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_client_that_never_answers_the_goaway_ping_is_dropped() {
        let (_drain, draining) = watch::channel(false);
        let server = ConnectionServer::new(&config(2, 75, 30), draining);
        let (mut client, serving) = connect(&server);
        let opened = Instant::now();
        h2_handshake(&mut client).await;
        let sent = frames_until_closed(&mut client).await;
        serving.await.unwrap();
        assert!(sent.contains(&GOAWAY) && sent.contains(&PING), "{sent:?}");
        // Two seconds to begin a request, two more to let go after the GOAWAY.
        assert_eq!(opened.elapsed().as_secs(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_drops_a_connection_whose_request_outlives_the_drain_timeout() {
        let (drain, draining) = watch::channel(false);
        let server = ConnectionServer::new(&config(30, 75, 3), draining);
        let (mut client, serving) = connect(&server);
        h2_handshake(&mut client).await;
        client.write_all(&get("/slow")).await.unwrap();
        // Let the request begin, then drain.
        tokio::time::sleep(SECOND).await;
        let drained = Instant::now();
        drain.send(true).unwrap();
        let sent = frames_until_closed(&mut client).await;
        serving.await.unwrap();
        assert!(sent.contains(&GOAWAY), "{sent:?}");
        assert!(!sent.contains(&HEADERS), "the slow answer came: {sent:?}");
        assert_eq!(drained.elapsed().as_secs(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_races_an_idle_close_gets_the_drain_timeout() {
        let (_drain, draining) = watch::channel(false);
        let server = ConnectionServer::new(&config(2, 75, 10), draining);
        let (mut client, serving) = connect(&server);
        let opened = Instant::now();
        h2_handshake(&mut client).await;
        // The idle close begins at two seconds (no request yet): GOAWAY and PING.
        let mut sent = Vec::new();
        while !sent.contains(&PING) {
            sent.push(next_frame(&mut client).await.expect("GOAWAY and PING").0);
        }
        assert_eq!(opened.elapsed().as_secs(), 2);
        // A request sent before the client saw the GOAWAY takes five seconds; it is answered
        // although that is longer than the two the idle close gives a silent client.
        client.write_all(&get("/slow")).await.unwrap();
        let mut answered = false;
        let reading = async {
            while let Some((kind, stream)) = next_frame(&mut client).await {
                answered |= kind == HEADERS && stream == 1;
            }
        };
        let closed = tokio::time::timeout(60 * SECOND, reading).await;
        assert!(closed.is_ok(), "the connection was never closed");
        serving.await.unwrap();
        assert!(answered, "the request was cut off");
        // Dropped at the drain timeout after the close began, the PING still unanswered.
        assert_eq!(opened.elapsed().as_secs(), 12);
    }

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
