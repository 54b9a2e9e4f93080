//! HTTP/1.1 Upgrade (WebSocket and the like): the handshake headers, and the relay of the
//! two upgraded connections once the upstream answers 101.
//!
//! A tunnel holds nothing of the snapshot, so snapshot changes never close it; it ends
//! when either side closes, on an I/O error, or after its idle timeout passes with no
//! bytes moving either way.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use http::{Version, request};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::balance::InFlight;
use crate::server::{ClientUpgrade, UpgradedClient};

/// Bytes read at a time in each direction.
const BUFFER: usize = 16 * 1024;

/// The `Upgrade` value of an HTTP/1.1 request that asks to switch to WebSocket (its
/// `Connection` names `upgrade`), or `None` for an ordinary request. Only WebSocket is
/// tunnelled: `h2c` (or anything else) would hand the client a raw connection to the
/// backend, past routing and every per-request check.
pub(super) fn requested_upgrade(parts: &request::Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let upgrade = parts.headers.get(UPGRADE)?;
    (is_websocket(upgrade) && connection_names_upgrade(&parts.headers)).then(|| upgrade.clone())
}

/// Whether a response switches protocols as asked: it names the protocol requested.
pub(super) fn accepted_upgrade(
    headers: &HeaderMap,
    requested: &HeaderValue,
) -> Option<HeaderValue> {
    let upgrade = headers.get(UPGRADE)?;
    let same = upgrade
        .as_bytes()
        .eq_ignore_ascii_case(requested.as_bytes());
    (same && connection_names_upgrade(headers)).then(|| upgrade.clone())
}

/// Whether the request is a WebSocket over HTTP/2 (RFC 8441: `CONNECT` with the
/// `:protocol` pseudo-header `websocket`).
pub(super) fn is_extended_connect_websocket(parts: &request::Parts) -> bool {
    parts.version == Version::HTTP_2
        && parts.method == http::Method::CONNECT
        && parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"))
}

/// Turns an RFC 8441 request into the HTTP/1.1 opening handshake a backend expects
/// (RFC 6455): `GET` with `Upgrade: websocket` and a fresh `Sec-WebSocket-Key`. The
/// version, subprotocol and extension headers pass through as the client sent them.
pub(super) fn extended_connect_to_http11(parts: &mut request::Parts) {
    use base64::Engine as _;
    parts.method = http::Method::GET;
    parts.version = Version::HTTP_11;
    let key = fastrand::u128(..).to_le_bytes();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    if let Ok(key) = HeaderValue::from_str(&key) {
        parts.headers.insert(http::header::SEC_WEBSOCKET_KEY, key);
    }
    restore_upgrade_headers(&mut parts.headers, HeaderValue::from_static("websocket"));
}

/// The backend's `101` as an RFC 8441 client expects it: `200`, without the HTTP/1.1
/// handshake headers (HTTP/2 forbids connection-specific ones).
pub(super) fn http11_switch_to_extended_connect(parts: &mut http::response::Parts) {
    parts.status = http::StatusCode::OK;
    parts.headers.remove(http::header::SEC_WEBSOCKET_ACCEPT);
    parts.headers.remove(CONNECTION);
    parts.headers.remove(UPGRADE);
}

fn is_websocket(upgrade: &HeaderValue) -> bool {
    upgrade.as_bytes().eq_ignore_ascii_case(b"websocket")
}

fn connection_names_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Puts back the two hop-by-hop headers an upgrade needs after hop-by-hop removal.
pub(super) fn restore_upgrade_headers(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
}

/// Marks a response that opened a tunnel, for the listener: the tunnel outlives the
/// response (an HTTP/2 extended CONNECT's body ends with its headers), and its connection
/// must not be closed as idle while it is open. Resolves (with an error) when the tunnel
/// ends.
#[derive(Debug, Clone)]
pub struct TunnelOpen(pub tokio::sync::watch::Receiver<()>);

/// The client's side of an upgrade: from hyper (HTTP/2 extended CONNECT), or from the
/// listener, which serves HTTP/1.1 connections in a way that can park them and so hands
/// over an upgraded stream itself.
pub(super) enum ClientSide {
    Hyper(OnUpgrade),
    Listener(tokio::sync::oneshot::Receiver<UpgradedClient>),
}

impl ClientSide {
    /// Takes the client side out of a request's extensions.
    pub fn take(extensions: &mut http::Extensions) -> Option<Self> {
        if let Some(receiver) = extensions
            .remove::<ClientUpgrade>()
            .and_then(|upgrade| upgrade.take())
        {
            return Some(ClientSide::Listener(receiver));
        }
        extensions.remove::<OnUpgrade>().map(ClientSide::Hyper)
    }

    async fn open(self) -> Result<Box<dyn crate::server::UpgradedIo>, String> {
        match self {
            ClientSide::Hyper(on_upgrade) => match on_upgrade.await {
                Ok(upgraded) => Ok(Box::new(TokioIo::new(upgraded))),
                Err(error) => Err(error.to_string()),
            },
            ClientSide::Listener(receiver) => receiver
                .await
                .map(|client| client.0)
                .map_err(|_| "the client connection closed before the upgrade".to_owned()),
        }
    }
}

/// Both halves of an accepted upgrade, to be relayed once hyper hands them over.
pub(super) struct Tunnel {
    pub client: ClientSide,
    pub upstream: OnUpgrade,
    pub idle_timeout: Duration,
    pub open_tunnels: Gauge,
    /// The endpoint counts the tunnel as a request in flight until it closes.
    pub in_flight: InFlight,
    /// Dropped when the tunnel ends, which ends [`TunnelOpen`].
    pub open: tokio::sync::watch::Sender<()>,
}

impl Tunnel {
    /// Relays on a task of its own; the client gets its 101 meanwhile.
    pub fn spawn(self) {
        tokio::spawn(async move {
            let Tunnel {
                client,
                upstream,
                idle_timeout,
                open_tunnels,
                in_flight,
                open,
            } = self;
            let (client, upstream) = match tokio::join!(client.open(), upstream) {
                (Ok(client), Ok(upstream)) => (client, upstream),
                (Err(error), _) => {
                    tracing::debug!(%error, "upgrade did not complete");
                    return;
                }
                (_, Err(error)) => {
                    tracing::debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            open_tunnels.inc();
            match relay(client, upstream, idle_timeout).await {
                Ok(Ended::Closed) => tracing::debug!("tunnel closed"),
                Ok(Ended::Idle) => tracing::debug!(?idle_timeout, "idle tunnel closed"),
                Err(error) => tracing::debug!(%error, "tunnel ended with an error"),
            }
            open_tunnels.dec();
            drop(in_flight);
            drop(open);
        });
    }
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    Idle,
}

async fn relay(
    client: Box<dyn crate::server::UpgradedIo>,
    upstream: Upgraded,
    idle_timeout: Duration,
) -> io::Result<Ended> {
    relay_streams(client, TokioIo::new(upstream), idle_timeout).await
}

/// Copies both ways until both sides have finished (each end of input is passed on as a
/// write shutdown), one fails, or nothing moves for `idle_timeout`.
async fn relay_streams<A, B>(a: A, b: B, idle_timeout: Duration) -> io::Result<Ended>
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let activity = Activity::new();
    let both_ways = async {
        tokio::try_join!(
            copy_until_end(&mut a_read, &mut b_write, &activity),
            copy_until_end(&mut b_read, &mut a_write, &activity),
        )
    };
    tokio::select! {
        copied = both_ways => copied.map(|_| Ended::Closed),
        () = activity.idle_for(idle_timeout) => Ok(Ended::Idle),
    }
}

async fn copy_until_end<R, W>(reader: &mut R, writer: &mut W, activity: &Activity) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            return writer.shutdown().await;
        }
        activity.touch();
        writer.write_all(&buffer[..read]).await?;
        writer.flush().await?;
        activity.touch();
    }
}

/// When bytes last moved, in milliseconds since the tunnel opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::builder().version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_http11_requests_naming_upgrade_in_connection_switch() {
        let websocket = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(
            requested_upgrade(&parts(Version::HTTP_11, &websocket)).unwrap(),
            "websocket"
        );
        assert!(requested_upgrade(&parts(Version::HTTP_10, &websocket)).is_none());
        assert!(requested_upgrade(&parts(Version::HTTP_11, &[("upgrade", "websocket")])).is_none());
        assert!(
            requested_upgrade(&parts(Version::HTTP_11, &[("connection", "upgrade")])).is_none()
        );
    }

    #[test]
    fn only_websocket_is_tunnelled_and_only_when_the_backend_agrees() {
        // h2c would give the client a raw HTTP/2 connection to the backend.
        let h2c = [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ];
        assert!(requested_upgrade(&parts(Version::HTTP_11, &h2c)).is_none());
        let tls = [("connection", "upgrade"), ("upgrade", "TLS/1.2")];
        assert!(requested_upgrade(&parts(Version::HTTP_11, &tls)).is_none());

        let asked = HeaderValue::from_static("websocket");
        let answer = |upgrade: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(UPGRADE, HeaderValue::from_static(upgrade));
            headers
        };
        assert_eq!(
            accepted_upgrade(&answer("WebSocket"), &asked).unwrap(),
            "WebSocket"
        );
        assert!(accepted_upgrade(&answer("h2c"), &asked).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_tunnel_closes_after_its_idle_timeout_and_traffic_keeps_it_open() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay_streams(client, upstream, Duration::from_secs(10)));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_peer.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            upstream_peer.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        }
        assert!(
            !relay.is_finished(),
            "traffic every 6 s keeps a 10 s tunnel open"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(relay.await.unwrap().unwrap(), Ended::Idle);
    }

    #[tokio::test]
    async fn an_end_of_input_is_passed_on_and_the_tunnel_closes_when_both_end() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay_streams(client, upstream, Duration::from_secs(60)));
        client_peer.write_all(b"bye").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        upstream_peer.write_all(b"ok").await.unwrap();
        drop(upstream_peer);
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ok");
        assert_eq!(relay.await.unwrap().unwrap(), Ended::Closed);
    }
}
