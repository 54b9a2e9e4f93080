//! Traffic listeners: accept connections, serve HTTP/1.1 and h2c, drain on shutdown.
//!
//! Traffic runs on one single-threaded runtime per worker thread, each with its own
//! listening socket on the shared address (`SO_REUSEPORT`, so the kernel spreads
//! connections) and its own upstream connection pool. A request, its client connection and
//! its upstream connection then stay on one thread: no work stealing, no cross-thread
//! wake-ups, no contended pool lock. This is the nginx worker model; the controller and the
//! admin listener run elsewhere and share only the atomically swapped snapshot.

mod budget;
mod connection;
mod io;
#[cfg(target_os = "linux")]
mod lot;
#[cfg(not(target_os = "linux"))]
#[path = "lot_elsewhere.rs"]
mod lot;
pub mod memory;

use std::future::Future;
use std::io as stdio;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

pub(crate) use budget::{Activity, Admitted, ParkedLimits};
pub use budget::{ConnectionBudget, Pressure};
pub(crate) use connection::ConnectionServer;
pub use connection::{ClientUpgrade, UpgradedClient, UpgradedIo};

use crate::live::DataPlane;
use crate::metrics::ConnectionLabels;
use crate::proxy::{ClientConnection, Proxy, ProxyConfig};
use crate::tls::{HandshakeFailure, TlsAcceptor, TlsConnectionInfo};
use budget::Counted;
pub(crate) use io::ClientIo;
use io::ClientStream;
use lot::ParkingLot;

/// How often each traffic thread hands freed memory back to the system.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Client connections the traffic listeners hold at once, all threads together; see
    /// [`ConnectionBudget`].
    pub max_connections: usize,
    /// The memory limit the watermarks apply to; `None`: no watermarks.
    pub memory_limit: Option<u64>,
    /// Returns memory the calling thread's allocator holds free to the system; each
    /// traffic thread calls it every second. Connections that park free their buffers,
    /// and an allocator keeps freed pages of an idle thread otherwise.
    pub release_free_memory: Option<fn()>,
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
            max_connections: 10_000,
            memory_limit: None,
            release_free_memory: None,
        }
    }
}

/// One accepted traffic connection: in the budget, counted in the `active_connections`
/// gauge, and holding up the drain, until dropped.
struct OpenConnection {
    admitted: Admitted,
    _counted: Counted,
    _alive: mpsc::Sender<()>,
}

impl OpenConnection {
    fn new(admitted: Admitted, gauge: Gauge, alive: mpsc::Sender<()>) -> Self {
        OpenConnection {
            admitted,
            _counted: Counted::new(gauge),
            _alive: alive,
        }
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting and gives open
/// requests up to `drain_timeout` to finish. With `tls`, every connection first completes
/// a TLS handshake (in its own task, so a slow one holds up nobody else).
pub async fn serve_traffic(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: ListenerConfig,
    budget: Arc<ConnectionBudget>,
    tls: Option<Arc<TlsAcceptor>>,
    shutdown: impl Future<Output = ()>,
) {
    let (drain, draining) = watch::channel(false);
    let server = ConnectionServer::new(&config, draining, Some(Arc::clone(&budget)));
    // Plain HTTP only: a TLS connection's state is more than its socket.
    let lot = match tls {
        Some(_) => None,
        None => match ParkingLot::new(Arc::clone(&budget)) {
            Ok(lot) => Some(lot),
            Err(error) => {
                tracing::warn!(%error, "no parking lot; idle connections park in their tasks");
                None
            }
        },
    };
    let server = Arc::new(match &lot {
        Some(lot) => server.with_lot(Arc::clone(lot)),
        None => server,
    });
    let _lot = lot.map(|lot| LotOpen {
        task: tokio::spawn(Arc::clone(&lot).run()),
        lot,
    });
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
        // At the cap with nothing idle to close in its place, the new connection is closed
        // at once: the ones already open keep their service.
        let Some(admitted) = budget.admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local_port = stream.local_addr().ok().or(local).unwrap_or(peer).port();
        let gauge = proxy.data_plane().metrics().active_connections.clone();
        let open = OpenConnection::new(admitted, gauge, alive.clone());
        let Some(tls) = tls.as_ref() else {
            let client = ClientEnd {
                local_port,
                tls: None,
            };
            let client = serve_client(
                Arc::clone(&server),
                stream,
                None,
                peer,
                client,
                &proxy,
                open,
            );
            tokio::spawn(client);
            continue;
        };
        let Ok(handshake_slot) = Arc::clone(&handshakes).try_acquire_owned() else {
            tls.count_failure(HandshakeFailure::Overloaded);
            continue;
        };
        let tls = Arc::clone(tls);
        let server = Arc::clone(&server);
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let accepted = tls.accept(stream).await;
            drop(handshake_slot);
            match accepted {
                Ok((stream, info)) => {
                    let http2 = Some(stream.get_ref().1.alpn_protocol() == Some(b"h2"));
                    let client = ClientEnd {
                        local_port,
                        tls: Some(Box::new(info)),
                    };
                    serve_client(server, stream, http2, peer, client, &proxy, open).await;
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
    budget.drain();
    drop(alive);
    tokio::select! {
        _ = all_closed.recv() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(config.drain_timeout) => tracing::warn!("drain deadline passed; closing the rest"),
    }
}

/// A listener's parking lot while the listener serves: when serving ends, however it
/// ends, the lot's task stops and its connections close (their entries hold the
/// listener's state, which holds the lot: closing also ends that cycle).
struct LotOpen {
    lot: Arc<ParkingLot>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LotOpen {
    fn drop(&mut self) {
        self.task.abort();
        self.lot.close();
    }
}

/// Who is on the other end of a traffic connection, as the connection keeps it while
/// parked: the [`ClientConnection`] the proxy sees is made from it each time the
/// connection wakes.
struct ClientEnd {
    local_port: u16,
    /// Set on HTTPS connections; boxed, as most connections are not parked HTTPS ones.
    tls: Option<Box<TlsConnectionInfo>>,
}

impl ClientEnd {
    fn connection(&self, peer: SocketAddr) -> ClientConnection {
        let (scheme, tls) = match &self.tls {
            Some(tls) => ("https", Some(TlsConnectionInfo::clone(tls))),
            None => ("http", None),
        };
        let mut connection = ClientConnection::new(peer, self.local_port, scheme);
        connection.tls = tls;
        connection
    }
}

/// Serves one traffic connection (decrypted, for HTTPS) through `proxy` until it closes.
/// `http2`: what TLS negotiated. Not an async block around [`ConnectionServer::serve`]:
/// that future would hold each argument again, in every parked connection's task.
fn serve_client<IO: ClientStream>(
    server: Arc<ConnectionServer>,
    io: IO,
    http2: Option<bool>,
    peer: SocketAddr,
    client: ClientEnd,
    proxy: &Arc<Proxy>,
    open: OpenConnection,
) -> impl Future<Output = ()> + Send + 'static {
    let listener = if client.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let metrics = Arc::clone(proxy.data_plane().metrics());
    let counted = move |protocol| {
        Counted::new(
            metrics
                .open_connections
                .get_or_create(&ConnectionLabels { listener, protocol })
                .clone(),
        )
    };
    // Counted as "unknown" until the first bytes tell, then as what they said.
    let mut open_as = Some(counted("unknown"));
    let protocol = move |http2: bool| {
        let protocol = if http2 { "http2" } else { "http1" };
        open_as.replace(counted(protocol));
    };
    let io = ClientIo::new(io, Arc::clone(&open.admitted.activity));
    let proxy = Arc::clone(proxy);
    let handler = move |peer| {
        let proxy = Arc::clone(&proxy);
        let connection = Arc::new(client.connection(peer));
        move |request| {
            let proxy = Arc::clone(&proxy);
            let connection = Arc::clone(&connection);
            async move { proxy.handle(request, &connection).await }
        }
    };
    server.serve(io, peer, http2, protocol, handler, open)
}

/// Opens `count` listening sockets on `addr` that share it through `SO_REUSEPORT`. With
/// port 0 the first socket picks the port and the others join it.
pub fn bind_shared(addr: SocketAddr, count: usize) -> stdio::Result<Vec<std::net::TcpListener>> {
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
    ) -> stdio::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let deadlines = connection::Deadlines::new(listener_config);
        let metrics = Arc::clone(data_plane.metrics());
        let budget = Arc::new(ConnectionBudget::new(
            listener_config.max_connections,
            ParkedLimits {
                first_request: deadlines.first_request,
                keep_alive: deadlines.keep_alive(),
            },
            &metrics,
        ));
        metrics
            .max_connections
            .set(i64::try_from(budget.max()).unwrap_or(i64::MAX));
        memory::watch(
            &budget,
            listener_config.memory_limit,
            deadlines.keep_alive(),
            metrics,
        )?;
        let mut threads = Vec::with_capacity(listeners.len());
        for (index, sockets) in listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let proxy = Arc::new(Proxy::new(Arc::clone(data_plane), proxy_config.clone()));
            let config = listener_config.clone();
            let tls = tls.cloned();
            let stopped = stopped.clone();
            let budget = Arc::clone(&budget);
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
                                    serve_traffic(
                                        listener,
                                        proxy,
                                        config.clone(),
                                        Arc::clone(&budget),
                                        None,
                                        shutdown,
                                    )
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
                                    serve_traffic(
                                        listener,
                                        proxy,
                                        config,
                                        Arc::clone(&budget),
                                        Some(tls),
                                        shutdown,
                                    )
                                    .await;
                                }
                                Err(error) => {
                                    tracing::error!(%error, "cannot use the HTTPS listener");
                                }
                            }
                        };
                        let release = async {
                            let Some(release) = config.release_free_memory else {
                                return std::future::pending().await;
                            };
                            let mut every = tokio::time::interval(RELEASE_INTERVAL);
                            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            loop {
                                every.tick().await;
                                release();
                            }
                        };
                        tokio::select! {
                            ((), ()) = async { tokio::join!(http, https) } => {}
                            () = release => {}
                        }
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
