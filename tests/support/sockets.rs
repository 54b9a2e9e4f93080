//! Raw TCP clients that misbehave on purpose: silent, slow, or speaking just enough
//! HTTP/2 by hand to reach a state no well-behaved client library would stay in.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 frame types used here (RFC 9113 section 6).
pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
/// The ACK flag of SETTINGS and PING.
pub const ACK: u8 = 0x1;

/// One HTTP/2 frame as it goes on the wire.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len())
        .expect("frame size")
        .to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `GET path` on stream 1 with `:authority: a`, HPACK-encoded by hand (static-table
/// indices for :method GET and :scheme http, literals for the rest), ending the stream.
pub fn h2_get(path: &str) -> Vec<u8> {
    let path_length = u8::try_from(path.len()).expect("a short path");
    let mut block = vec![0x82, 0x86, 0x41, 0x01, b'a', 0x04, path_length];
    block.extend_from_slice(path.as_bytes());
    h2_frame(HEADERS, 0x4 | 0x1, 1, &block)
}

/// A frame the server sent: its type, flags and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

/// The next frame from the server, or `None` once it has closed the connection.
pub async fn read_h2_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
    })
}

/// Opens an HTTP/2 connection by prior knowledge and completes only the SETTINGS
/// exchange: the preface, an empty SETTINGS, and the acknowledgement of the server's.
/// Returns the frames read meanwhile. From then on the client answers nothing, PINGs
/// included.
pub async fn h2_handshake(stream: &mut TcpStream) -> Vec<Frame> {
    stream
        .write_all(H2_PREFACE)
        .await
        .expect("send the preface");
    stream
        .write_all(&h2_frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("send SETTINGS");
    let mut frames = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), read_h2_frame(stream))
            .await
            .expect("the server's SETTINGS in time")
            .expect("the server's SETTINGS before it closed");
        frames.push(frame);
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            stream
                .write_all(&h2_frame(SETTINGS, ACK, 0, &[]))
                .await
                .expect("acknowledge SETTINGS");
            return frames;
        }
    }
}

/// How a connection ended, as its client saw it.
#[derive(Debug)]
pub struct Ending {
    /// Since the call, when the server closed; `None` if it was still open at the limit.
    pub closed_after: Option<Duration>,
    /// Everything received meanwhile.
    pub received: Vec<u8>,
}

/// Reads (and answers nothing) until the server closes or `within` passes.
pub async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Ending {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ending {
                    closed_after: Some(started.elapsed()),
                    received,
                };
            }
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => {
                return Ending {
                    closed_after: None,
                    received,
                };
            }
        }
    }
}

/// Sends `bytes` one at a time, `pause` apart, until they are all sent or the server
/// closes; then reads until it closes or `within` (counted from the first byte) passes.
pub async fn trickle(
    stream: &mut TcpStream,
    bytes: &[u8],
    pause: Duration,
    within: Duration,
) -> Ending {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    for byte in bytes {
        if started.elapsed() >= within {
            break;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return Ending {
                closed_after: Some(started.elapsed()),
                received,
            };
        }
        // Waiting for an answer is the pause between two bytes.
        match tokio::time::timeout(pause, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ending {
                    closed_after: Some(started.elapsed()),
                    received,
                };
            }
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => {}
        }
    }
    let mut rest = read_until_closed(stream, within.saturating_sub(started.elapsed())).await;
    received.append(&mut rest.received);
    Ending {
        closed_after: rest.closed_after.map(|_| started.elapsed()),
        received,
    }
}

/// Reads frames (and answers none) until the server closes or `within` passes: the frames,
/// and when it closed if it did.
pub async fn read_h2_frames_until_closed(
    stream: &mut TcpStream,
    within: Duration,
) -> (Vec<Frame>, Option<Duration>) {
    let started = Instant::now();
    let mut frames = Vec::new();
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, read_h2_frame(stream)).await {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, Some(started.elapsed())),
            Err(_) => return (frames, None),
        }
    }
}
