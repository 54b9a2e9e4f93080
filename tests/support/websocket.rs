//! A real WebSocket echo server (tokio-tungstenite) and a client that reaches it through
//! Sluice.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
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

/// Sends `text` and waits (bounded) for the same text to come back.
pub async fn round_trip(socket: &mut Socket, text: &str) {
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
