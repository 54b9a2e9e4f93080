//! A real WebSocket echo server (tokio-tungstenite) and a client that reaches it through
//! Sluice.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::Method;
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{WebSocketStream, accept_async, client_async};

/// Echoes every text and binary message on 127.0.0.1 until the test ends.
pub async fn start_echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    let reply = match message {
                        Message::Text(_) | Message::Binary(_) => message,
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if socket.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

pub type Socket = WebSocketStream<TcpStream>;

/// Opens `ws://HOST/PATH` through Sluice at `sluice`.
pub async fn connect(sluice: SocketAddr, host: &str, path: &str) -> Socket {
    let stream = TcpStream::connect(sluice).await.expect("connect to sluice");
    let (socket, response) = tokio::time::timeout(
        Duration::from_secs(10),
        client_async(format!("ws://{host}{path}"), stream),
    )
    .await
    .expect("handshake in time")
    .expect("websocket handshake through sluice");
    assert_eq!(response.status(), 101);
    socket
}

/// Opens a WebSocket to `HOST/PATH` over HTTP/2 (h2c prior knowledge, RFC 8441 extended
/// CONNECT) through Sluice at `sluice`.
pub async fn connect_h2(
    sluice: SocketAddr,
    host: &str,
    path: &str,
) -> WebSocketStream<TokioIo<Upgraded>> {
    let stream = TcpStream::connect(sluice).await.expect("connect to sluice");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrive with the first answer.
    let warm_up = Request::builder()
        .uri(format!("http://{host}/"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let _ = sender.send_request(warm_up).await.expect("a first request");
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{host}{path}"))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .expect("request");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("extended CONNECT through sluice");
    assert_eq!(response.status(), 200, "RFC 8441 success is 200");
    let upgraded = hyper::upgrade::on(response).await.expect("upgraded stream");
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

/// Sends `text` and waits (bounded) for the same text to come back.
pub async fn round_trip<S>(socket: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    socket
        .send(Message::text(text))
        .await
        .expect("send through the tunnel");
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("echo in time")
        .expect("tunnel still open")
        .expect("a message");
    assert_eq!(reply, Message::text(text));
}
