//! How a listener serves one accepted connection: HTTP/1.1 or HTTP/2, its deadlines, and
//! for the traffic listeners, parking.
//!
//! A parked connection holds nothing but its socket (and, for HTTPS, its TLS session):
//! no hyper state, no buffers, no timers. Connections park before their first bytes, and
//! an HTTP/1.1 keep-alive connection parks once it has been idle for a moment: hyper
//! hands back the socket and whatever it had read ahead, and a new hyper connection takes
//! over when the client sends again. A plain-HTTP connection parks in its listener's
//! [`ParkingLot`] and its task ends (a new one resumes it); an HTTPS one in its task.
//! Idle connections are what a client fleet (or an attacker) holds most of, so this is
//! where memory per connection is decided.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::ListenerConfig;
use super::budget::{ActiveRequest, Activity, ConnectionBudget, Pressure};
use super::io::{ClientIo, ClientStream};
use super::lot::ParkingLot;
use crate::proxy::TunnelOpen;

/// How long an HTTP/1.1 keep-alive connection stays idle before it parks. Long enough
/// that a client sending request after request does not park between them (parking costs
/// a new hyper connection and task when it sends again, some microseconds), short enough
/// that a burst of clients going idle at once does not hold their buffers for long: nginx
/// lets go of them as soon as a keep-alive connection is idle.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// The HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection's byte stream after an HTTP/1.1 upgrade (WebSocket), handed to the
/// tunnel in place of hyper's `OnUpgrade`, which a connection that can park cannot use.
pub struct UpgradedClient(pub Box<dyn UpgradedIo>);

pub trait UpgradedIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> UpgradedIo for T {}

impl std::fmt::Debug for UpgradedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradedClient")
    }
}

/// The request extension through which an HTTP/1.1 upgrade's client side arrives once
/// the 101 has been written.
#[derive(Debug, Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<oneshot::Receiver<UpgradedClient>>>>);

impl ClientUpgrade {
    /// The client side, once: `None` if it was taken before.
    pub fn take(&self) -> Option<oneshot::Receiver<UpgradedClient>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// How a listener serves each connection it accepts: HTTP/1.1 and HTTP/2 (h2c, or h2 over
/// TLS) with the listener's limits, and the deadlines that end a connection whatever its
/// client does. The traffic and admin listeners each make one, so both meet hostile
/// clients with the same rules; the traffic listeners' also park idle connections and
/// answer to the connection budget.
#[derive(Clone)]
pub(crate) struct ConnectionServer {
    http1: Arc<http1::Builder>,
    http2: Arc<http2::Builder<TokioExecutor>>,
    deadlines: Deadlines,
    /// Turns true when the listener drains; a dropped sender counts as a drain too.
    draining: watch::Receiver<bool>,
    /// The traffic listeners' budget: with it, idle connections park, and memory
    /// pressure turns keep-alive off.
    budget: Option<Arc<ConnectionBudget>>,
    /// Where idle plain-HTTP connections wait, on the traffic listeners.
    lot: Option<Arc<ParkingLot>>,
}

/// When a connection is closed, whatever its client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Deadlines {
    /// No request has begun this long after the connection opened: closed gracefully.
    /// Covers connections that send nothing or part of the HTTP/2 preface, which hyper's
    /// header-read timeout does not see (it starts once HTTP/1.1 is known).
    pub first_request: Duration,
    /// No request in flight this long after the last one ended: closed gracefully.
    pub idle: Duration,
    /// After an idle close begins, the time the client gets to let go before the
    /// connection is dropped: hyper's HTTP/2 GOAWAY waits for a PING answer that a hostile
    /// client never sends.
    pub idle_close: Duration,
    /// After a drain begins, the time in-flight requests get before the connection is
    /// dropped.
    pub drain: Duration,
}

impl Deadlines {
    pub(super) fn new(config: &ListenerConfig) -> Self {
        Deadlines {
            // An idle timeout shorter than the header timeout applies before the first
            // request too: a connection without a request is idle.
            first_request: config.header_read_timeout.min(config.idle_timeout),
            idle: config.idle_timeout,
            idle_close: config.header_read_timeout,
            drain: config.drain_timeout,
        }
    }

    /// How long an HTTP/1.1 connection may wait between requests: hyper's header-read
    /// timeout runs from the end of one request, so it bounds keep-alive too.
    pub(super) fn keep_alive(&self) -> Duration {
        self.idle.min(self.idle_close)
    }
}

/// Where [`ConnectionServer::serve_from`] begins: a new connection, one that parked before
/// its first bytes, or one that parked between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Opened,
    Woken,
    KeepAlive,
}

/// A connection on its way into the parking lot, its socket already off tokio.
struct LotPlace<IO> {
    lot: Arc<ParkingLot>,
    socket: std::io::Result<std::net::TcpStream>,
    activity: Arc<Activity>,
    stream: std::marker::PhantomData<fn() -> IO>,
}

impl<IO: ClientStream> LotPlace<IO> {
    /// Parks the connection; `resume` continues it (on the lot's runtime) once its client
    /// sends again. A socket tokio could not let go of is closed.
    fn park(self, resume: impl FnOnce(ClientIo<IO>) + Send + 'static) {
        let socket = match self.socket {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(%error, "cannot take an idle connection off tokio; closed");
                return;
            }
        };
        self.lot.park(
            socket,
            self.activity,
            Box::new(move |socket, activity| match IO::from_socket(socket) {
                Ok(stream) => resume(ClientIo::new(stream, activity)),
                Err(error) => {
                    tracing::debug!(%error, "cannot hand a woken connection back to tokio; closed");
                }
            }),
        );
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

/// How one hyper connection on a client connection ended.
enum SessionEnd {
    /// hyper is done: the client closed, keep-alive ended, an upgrade, or an error.
    Done(hyper::Result<()>),
    /// Idle long enough to park (HTTP/1.1 only).
    Park,
    /// Dropped at a hard deadline.
    Dropped,
}

/// What becomes of an HTTP/1.1 client connection whose hyper connection let go of it.
enum AfterSession {
    /// Idle: it parks until the client sends again.
    Park,
    /// Upgraded: the stream goes to the tunnel.
    Upgrade(oneshot::Sender<UpgradedClient>),
    /// Keep-alive ended or the client closed: it is shut down.
    Close,
}

/// A hyper connection the driver can poll and close gracefully.
trait Session {
    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>>;
    fn close_gracefully(&mut self);
}

/// What answers the requests of one hyper connection: a function from a request to the
/// future of its response.
pub(crate) trait Handler: Send + Sync + 'static {
    type Answer: Future<Output = Response<Self::Body>> + Send + 'static;
    type Body: http_body::Body<Data = Bytes, Error = Self::BodyError> + Unpin + Send + 'static;
    type BodyError: Into<Box<dyn std::error::Error + Send + Sync>>;

    fn answer(&self, request: Request<Incoming>) -> Self::Answer;
}

impl<H, F, B> Handler for H
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Answer = F;
    type Body = B;
    type BodyError = B::Error;

    fn answer(&self, request: Request<Incoming>) -> F {
        self(request)
    }
}

/// The service every session of one client connection shares.
type BoxedResponse<B> =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody<B>>, Infallible>> + Send>>;

impl<I, S, B> Session for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.poll_without_shutdown(cx)
    }

    fn close_gracefully(&mut self) {
        Pin::new(self).graceful_shutdown();
    }
}

impl<I, S, B> Session for Pin<Box<http2::Connection<I, S, TokioExecutor>>>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.as_mut().poll(cx)
    }

    fn close_gracefully(&mut self) {
        self.as_mut().graceful_shutdown();
    }
}

/// What the service tells the driver about one hyper connection's latest request.
#[derive(Default)]
struct Exchange {
    /// Where the client side of an HTTP/1.1 upgrade goes once the 101 is written.
    upgrade: Mutex<Option<oneshot::Sender<UpgradedClient>>>,
    /// Whether the upgrade was answered 101: the stream goes to the tunnel.
    upgraded: AtomicBool,
}

impl Exchange {
    /// Where the stream goes if the last request was upgraded.
    fn take_upgrade(&self) -> Option<oneshot::Sender<UpgradedClient>> {
        let sender = self
            .upgrade
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        sender.filter(|_| self.upgraded.load(Ordering::Relaxed))
    }
}

impl ConnectionServer {
    pub(crate) fn new(
        config: &ListenerConfig,
        draining: watch::Receiver<bool>,
        budget: Option<Arc<ConnectionBudget>>,
    ) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192))
            .max_headers(config.max_headers)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            // RFC 8441: WebSocket over HTTP/2, for browsers that prefer it. Harmless on the
            // admin listener, which answers an extended CONNECT with 405.
            .enable_connect_protocol()
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        ConnectionServer {
            http1: Arc::new(http1),
            http2: Arc::new(http2),
            deadlines: Deadlines::new(config),
            draining,
            budget,
            lot: None,
        }
    }

    /// Idle plain-HTTP connections wait in `lot` rather than in their own tasks.
    pub(super) fn with_lot(mut self, lot: Arc<ParkingLot>) -> Self {
        self.lot = Some(lot);
        self
    }

    /// Serves HTTP/1.1 and HTTP/2 on one accepted (and, for HTTPS, decrypted) connection,
    /// answering each request with a handler from `handler`, until the client closes it or
    /// a deadline ends it: no first request in time or idle too long (closed gracefully:
    /// in-flight requests finish, HTTP/2 gets a GOAWAY), asked to close by the connection
    /// budget, or the listener drains (likewise). Once a graceful close has begun the
    /// connection is dropped at a hard deadline, whether or not the client cooperates.
    /// `http2` is what TLS negotiated, if it did; otherwise the first bytes decide.
    ///
    /// `handler` is called (with the peer's address) for each hyper connection on the
    /// client connection, so that a parked connection holds no handler either; `protocol`
    /// is told what the connection speaks; `guard` is dropped when the connection ends.
    /// This future is the task's whole state while the connection is served: it owns its
    /// arguments (a caller's future around it would hold each one a second time), and
    /// everything else is boxed in the phase that needs it. An idle plain-HTTP connection
    /// leaves its task for the listener's [`ParkingLot`] and gets a new one when its
    /// client sends again; others park in their task.
    pub(crate) fn serve<IO, P, M, H, G>(
        self: Arc<Self>,
        io: ClientIo<IO>,
        peer: SocketAddr,
        http2: Option<bool>,
        protocol: P,
        handler: M,
        guard: G,
    ) -> impl Future<Output = ()> + Send + use<IO, P, M, H, G>
    where
        IO: ClientStream,
        P: FnMut(bool) + Send + 'static,
        M: FnMut(SocketAddr) -> H + Send + 'static,
        H: Handler,
        G: Send + 'static,
    {
        self.serve_from(Stage::Opened, io, peer, http2, protocol, handler, guard)
    }

    // An async block, not an async fn: an async fn's future keeps each argument twice.
    #[allow(clippy::manual_async_fn, clippy::too_many_arguments)]
    fn serve_from<IO, P, M, H, G>(
        self: Arc<Self>,
        stage: Stage,
        mut io: ClientIo<IO>,
        peer: SocketAddr,
        http2: Option<bool>,
        mut protocol: P,
        mut handler: M,
        guard: G,
    ) -> impl Future<Output = ()> + Send + use<IO, P, M, H, G>
    where
        IO: ClientStream,
        P: FnMut(bool) + Send + 'static,
        M: FnMut(SocketAddr) -> H + Send + 'static,
        H: Handler,
        G: Send + 'static,
    {
        async move {
            // Captured, so that it counts the connection until this future ends.
            let _guard = &guard;
            let parks = self.budget.is_some() && IO::PARKS;
            if stage == Stage::Opened && parks && IO::PARKS_BEFORE_FIRST_REQUEST {
                // A request sent with the connection is served at once, without a detour
                // through the lot.
                let sent = io.poll_readable(&mut Context::from_waker(Waker::noop()));
                if sent.is_pending() {
                    io = match self.lot_place(io) {
                        Ok(place) => {
                            let state = (peer, http2, protocol, handler, guard);
                            return self.rest_in_lot(place, Stage::Woken, state);
                        }
                        Err(back) => back,
                    };
                }
                if !self.park(&io).await {
                    return;
                }
            }
            if stage != Stage::KeepAlive {
                let Some(is_http2) = Box::pin(self.first_bytes(&mut io, http2, peer)).await else {
                    return;
                };
                protocol(is_http2);
                if is_http2 {
                    Box::pin(self.serve_http2(io, handler(peer), peer)).await;
                    return;
                }
            }
            loop {
                let Some(parked) = Box::pin(self.serve_http1(io, handler(peer), peer, parks)).await
                else {
                    return;
                };
                io = parked;
                if io.has_read_ahead() {
                    continue;
                }
                io = match self.lot_place(io) {
                    Ok(place) => {
                        let state = (peer, http2, protocol, handler, guard);
                        return self.rest_in_lot(place, Stage::KeepAlive, state);
                    }
                    Err(back) => back,
                };
                if !self.park(&io).await {
                    Box::pin(self.close(io)).await;
                    return;
                }
            }
        }
    }

    /// Leaves the connection in the lot, to go on at `stage` in a new task once its client
    /// sends again; `state` is what [`ConnectionServer::serve_from`] takes besides.
    fn rest_in_lot<IO, P, M, H, G>(
        self: Arc<Self>,
        place: LotPlace<IO>,
        stage: Stage,
        state: (SocketAddr, Option<bool>, P, M, G),
    ) where
        IO: ClientStream,
        P: FnMut(bool) + Send + 'static,
        M: FnMut(SocketAddr) -> H + Send + 'static,
        H: Handler,
        G: Send + 'static,
    {
        let (peer, http2, protocol, handler, guard) = state;
        place.park(move |io| {
            tokio::spawn(self.serve_from(stage, io, peer, http2, protocol, handler, guard));
        });
    }

    /// A place in the listener's parking lot for the connection, if it has one and the
    /// stream is a bare socket; else the stream back.
    fn lot_place<IO: ClientStream>(&self, io: ClientIo<IO>) -> Result<LotPlace<IO>, ClientIo<IO>> {
        let Some(lot) = self.lot.as_ref().filter(|lot| lot.is_open()) else {
            return Err(io);
        };
        let (socket, activity) = io.into_socket()?;
        Ok(LotPlace {
            lot: Arc::clone(lot),
            socket,
            activity,
            stream: std::marker::PhantomData,
        })
    }

    /// Closes the stream (for HTTPS, with a close_notify), waiting no longer than a client
    /// gets to let go of an idle connection.
    async fn close<IO: ClientStream>(&self, mut io: ClientIo<IO>) {
        let _ = tokio::time::timeout(self.deadlines.idle_close, io.shutdown()).await;
    }

    /// Whether the connection speaks HTTP/2: what TLS negotiated, else its first bytes.
    /// `None` when it ended or sent no request in time.
    async fn first_bytes<IO: ClientStream>(
        &self,
        io: &mut ClientIo<IO>,
        http2: Option<bool>,
        peer: SocketAddr,
    ) -> Option<bool> {
        let deadline = io.activity().started + self.deadlines.first_request;
        let first_bytes = async {
            match http2 {
                Some(known) => Ok(known),
                None => sniff_http2(io).await,
            }
        };
        match tokio::time::timeout_at(deadline, first_bytes).await {
            Ok(Ok(is_http2)) => Some(is_http2),
            Ok(Err(error)) => {
                tracing::debug!(%error, client = %peer, "connection ended before its first request");
                None
            }
            Err(_) => {
                tracing::debug!(client = %peer, "no request before the deadline; closed");
                None
            }
        }
    }

    /// The HTTP/2 connection, until it ends. It never parks: its state (HPACK tables,
    /// flow-control windows, settings) lives in hyper for the connection's life.
    async fn serve_http2<IO, H>(&self, io: ClientIo<IO>, handle: H, peer: SocketAddr)
    where
        IO: ClientStream,
        H: Handler,
    {
        let activity = Arc::clone(io.activity());
        let exchange = Arc::new(Exchange::default());
        let service = self.service(&activity, &exchange, handle, true);
        let mut session = Box::pin(self.http2.serve_connection(TokioIo::new(io), service));
        if let SessionEnd::Done(Err(error)) = self.drive(&mut session, &activity, false).await {
            tracing::debug!(%error, client = %peer, "connection ended with an error");
        }
    }

    /// One hyper HTTP/1.1 connection on a client connection, until it ends (`None`) or
    /// has been idle long enough to park: then the stream, with whatever hyper had read
    /// ahead put back.
    async fn serve_http1<IO, H>(
        &self,
        io: ClientIo<IO>,
        handle: H,
        peer: SocketAddr,
        parks: bool,
    ) -> Option<ClientIo<IO>>
    where
        IO: ClientStream,
        H: Handler,
    {
        let activity = Arc::clone(io.activity());
        let exchange = Arc::new(Exchange::default());
        let service = self.service(&activity, &exchange, handle, false);
        // Not boxed apart: the caller boxes this whole future, one allocation per session.
        let mut session = self.http1.serve_connection(TokioIo::new(io), service);
        let end = self.drive(&mut session, &activity, parks).await;
        let next = match end {
            SessionEnd::Dropped => return None,
            SessionEnd::Done(Err(error)) => {
                tracing::debug!(%error, client = %peer, "connection ended with an error");
                return None;
            }
            SessionEnd::Done(Ok(())) => exchange
                .take_upgrade()
                .map_or(AfterSession::Close, AfterSession::Upgrade),
            SessionEnd::Park => AfterSession::Park,
        };
        let parts = session.into_parts();
        let mut io = parts.io.into_inner();
        // Part of a pipelined request hyper had read: served at once, by a new hyper
        // connection, without parking; after an upgrade, the tunnel's first bytes.
        io.unread(parts.read_buf);
        match next {
            AfterSession::Park => Some(io),
            AfterSession::Upgrade(upgrade) => {
                let _ = upgrade.send(UpgradedClient(Box::new(io)));
                None
            }
            AfterSession::Close => {
                self.close(io).await;
                None
            }
        }
    }

    /// Waits, holding only the socket, until the client sends something: true. False when
    /// the connection is to close instead (asked by the budget, its time is up, or the
    /// listener drains). Streams that cannot park return true at once.
    async fn park<IO: ClientStream>(&self, io: &ClientIo<IO>) -> bool {
        let Some(budget) = self.budget.as_ref().filter(|_| IO::PARKS) else {
            return true;
        };
        let activity = io.activity();
        activity.set_parked(true);
        let _counted = budget.parked();
        // One poll function rather than a `select!` of two futures: this future is what
        // every parked connection's task holds.
        let woken = !budget.draining()
            && std::future::poll_fn(|cx| {
                // An error is hyper's to find and report.
                if io.poll_readable(cx).is_ready() {
                    Poll::Ready(true)
                } else if activity.poll_closing(cx).is_ready() {
                    Poll::Ready(false)
                } else {
                    Poll::Pending
                }
            })
            .await;
        activity.set_parked(false);
        woken
    }

    /// The hyper service of one connection: counts requests in flight, keeps tunnels
    /// counted as busy, and under memory pressure asks the connection to close after
    /// its requests (no more keep-alive).
    fn service<H>(
        &self,
        activity: &Arc<Activity>,
        exchange: &Arc<Exchange>,
        handle: H,
        is_http2: bool,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<TrackedBody<H::Body>>,
        Error = Infallible,
        Future = BoxedResponse<H::Body>,
    > + Unpin
    + Send
    + 'static
    where
        H: Handler,
    {
        let activity = Arc::clone(activity);
        let exchange = Arc::clone(exchange);
        let budget = self.budget.clone();
        let handle = Arc::new(handle);
        service_fn(move |mut request: Request<Incoming>| {
            // hyper has read all of a request without a body; one with a body is read by
            // the proxy, and its connection is not parked until a later request.
            let upgrade = !is_http2 && request.headers().contains_key(http::header::UPGRADE);
            let parkable = request.body().is_end_stream() && !upgrade;
            let guard = activity.begin(parkable);
            if upgrade {
                let (sender, receiver) = oneshot::channel();
                *exchange
                    .upgrade
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(sender);
                request
                    .extensions_mut()
                    .insert(ClientUpgrade(Arc::new(Mutex::new(Some(receiver)))));
            }
            if budget
                .as_ref()
                .is_some_and(|budget| budget.pressure() >= Pressure::High)
            {
                activity.close_soon();
            }
            let activity = Arc::clone(&activity);
            let exchange = Arc::clone(&exchange);
            let handle = Arc::clone(&handle);
            // The handler's future is made inside the box, on its first poll: made out
            // here, all of it (some kilobytes) would be copied into the box per request.
            Box::pin(async move {
                let mut response = handle.answer(request).await;
                if upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    exchange.upgraded.store(true, Ordering::Relaxed);
                }
                // A tunnel keeps its connection busy after its response is done with
                // (an HTTP/2 WebSocket's body ends with its headers): never idle-closed.
                let guard = match response.extensions_mut().remove::<TunnelOpen>() {
                    Some(TunnelOpen(mut open)) => {
                        tokio::spawn(async move {
                            let _busy = guard;
                            // Never sent on: ends when the tunnel drops its sender.
                            while open.changed().await.is_ok() {}
                        });
                        activity.begin(false)
                    }
                    None => guard,
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _guard: guard,
                }))
            }) as BoxedResponse<H::Body>
        })
    }

    /// Polls one hyper connection until it ends, closing it gracefully when the
    /// connection has been idle too long, the budget asks, or the listener drains, and
    /// dropping it at the hard deadline after that. With `parks`, also ends it once it
    /// has been idle long enough to park.
    async fn drive<S: Session>(
        &self,
        session: &mut S,
        activity: &Activity,
        parks: bool,
    ) -> SessionEnd {
        let deadlines = self.deadlines;
        let mut draining = self.draining.clone();
        let mut closing: Option<Closing> = None;
        let close = |session: &mut S, deadline: Duration, extendable: bool| {
            session.close_gracefully();
            let now = Instant::now();
            Some(Closing {
                began: now,
                deadline: now + deadline,
                extendable,
            })
        };
        loop {
            // Only polled while closing; the fallback instant is never waited for.
            let hard_stop = closing.map_or_else(Instant::now, |closing| closing.deadline);
            tokio::select! {
                result = std::future::poll_fn(|cx| session.poll_session(cx)) => {
                    return SessionEnd::Done(result);
                }
                _ = draining.wait_for(|drain| *drain), if closing.is_none() => {
                    closing = close(session, deadlines.drain, false);
                }
                () = activity.idle(deadlines.first_request, deadlines.idle), if closing.is_none() => {
                    closing = close(session, deadlines.idle_close, true);
                }
                () = activity.closing(), if closing.is_none() => {
                    closing = close(session, deadlines.idle_close, true);
                }
                () = activity.parkable(PARK_AFTER), if parks && closing.is_none() => {
                    activity.parking();
                    return SessionEnd::Park;
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
                    tracing::debug!("connection still open after its graceful close; dropped");
                    return SessionEnd::Dropped;
                }
            }
        }
    }
}

/// Reads the first bytes of a connection and puts them back: whether they are the
/// HTTP/2 preface (prior-knowledge h2c). Stops reading as soon as they differ from it.
async fn sniff_http2<IO: ClientStream>(io: &mut ClientIo<IO>) -> std::io::Result<bool> {
    let mut seen = [0u8; PREFACE.len()];
    let mut filled = 0;
    while filled < seen.len() {
        let read = io.read(&mut seen[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
        if seen[..filled] != PREFACE[..filled] {
            break;
        }
    }
    io.unread(Bytes::copy_from_slice(&seen[..filled]));
    Ok(seen == *PREFACE)
}

/// A response body that keeps its request counted as in flight while it streams.
pub(super) struct TrackedBody<B> {
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

impl Activity {
    /// Completes once this connection could park: its last request left hyper between
    /// messages (no body still to read, no upgrade), hyper wrote everything, and nothing
    /// has been in flight for `after`. Looks again every `after` while that is not so.
    pub(super) async fn parkable(&self, after: Duration) {
        loop {
            match self.idle_since().filter(|_| self.park_ready()) {
                Some(since) if Instant::now() >= since + after => return,
                Some(since) => tokio::time::sleep_until(since + after).await,
                None => tokio::time::sleep(after).await,
            }
        }
    }

    fn park_ready(&self) -> bool {
        self.exchange_parkable() && !self.write_waiting.load(Ordering::Relaxed)
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
        let server = Arc::new(server.clone());
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let io = ClientIo::new(server_end, Arc::new(Activity::new()));
        let serving = tokio::spawn(server.serve(io, peer, None, |_| {}, |_| answer, ()));
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

    #[tokio::test]
    async fn the_first_bytes_decide_between_http1_and_http2_and_are_kept() {
        for (sent, http2) in [
            (
                &b"GET /a-path-longer-than-the-preface HTTP/1.1\r\n"[..],
                false,
            ),
            (&PREFACE[..PREFACE.len()], true),
            (&b"PRI * HTTP/1.1\r\n"[..], false),
            (&PREFACE[..10], false),
        ] {
            let (mut client, server) = tokio::io::duplex(1024);
            let mut io = ClientIo::new(server, Arc::new(Activity::new()));
            client.write_all(sent).await.unwrap();
            client.shutdown().await.unwrap();
            assert_eq!(sniff_http2(&mut io).await.unwrap(), http2, "{sent:?}");
            let mut again = Vec::new();
            io.read_to_end(&mut again).await.unwrap();
            assert_eq!(again, sent, "every byte is read again");
        }
    }

    #[tokio::test]
    async fn an_http1_request_is_answered() {
        let (_drain, draining) = watch::channel(false);
        let server = ConnectionServer::new(&config(2, 75, 30), draining, None);
        let (mut client, serving) = connect(&server);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        serving.await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
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
        let request = activity.begin(false);
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
        let server = ConnectionServer::new(&config(2, 75, 30), draining, None);
        let (mut client, serving) = connect(&server);
        let opened = Instant::now();
        assert_eq!(read_until_closed(&mut client).await, 0);
        serving.await.unwrap();
        assert_eq!(opened.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_http2_preface_is_closed_at_the_header_timeout() {
        let (_drain, draining) = watch::channel(false);
        let server = ConnectionServer::new(&config(2, 75, 30), draining, None);
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
        let server = ConnectionServer::new(&config(2, 75, 30), draining, None);
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
        let server = ConnectionServer::new(&config(30, 75, 3), draining, None);
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
        let server = ConnectionServer::new(&config(2, 75, 10), draining, None);
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
}
