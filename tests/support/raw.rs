//! Raw wire tools for hostile-input tests: a backend that records exactly the bytes that
//! reach it, an HTTP/1.1 client that sends exact bytes and reads whatever comes back, and
//! enough HTTP/2 (frames, an HPACK encoder for arbitrary fields and a decoder for answers)
//! to send malformed requests. Every socket operation has a timeout; everything is on
//! loopback.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the backend answers to every complete request: a small keep-alive 200.
const BACKEND_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nx-raw-backend: yes\r\n\r\nok\n";

/// How a request's body was framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    None,
    Length(usize),
    Chunked,
}

/// A header field as received: the name as sent, the value without surrounding whitespace.
pub type HeaderField = (String, Vec<u8>);

/// One complete request as the backend received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The connection it came on, numbered in accept order from 0.
    pub connection: usize,
    /// The request line and header lines exactly as received, through the blank line.
    pub head: Vec<u8>,
    /// The body bytes exactly as framed on the wire (chunk sizes included).
    pub raw_body: Vec<u8>,
    /// `GET / HTTP/1.1`.
    pub request_line: String,
    /// Header fields in the order received, duplicates kept, names as sent, values
    /// without surrounding whitespace.
    pub headers: Vec<HeaderField>,
    pub framing: Framing,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Received {
    /// Every value of the header `name` (case-insensitive), in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .collect()
    }

    /// The request target of the request line.
    pub fn target(&self) -> &str {
        self.request_line.split(' ').nth(1).unwrap_or_default()
    }

    pub fn method(&self) -> &str {
        self.request_line.split(' ').next().unwrap_or_default()
    }

    /// The head and the raw body, as one buffer.
    pub fn wire(&self) -> Vec<u8> {
        [self.head.as_slice(), self.raw_body.as_slice()].concat()
    }
}

/// Bytes that never made a complete request, with why.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub connection: usize,
    pub bytes: Vec<u8>,
    pub why: String,
}

/// What the backend got since it was last reset.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub requests: Vec<Received>,
    /// A head without its body when the connection closed, or framing the backend could
    /// not read (it then stops reading that connection).
    pub fragments: Vec<Fragment>,
    /// Every byte received, by connection, in arrival order.
    pub chunks: Vec<(usize, Vec<u8>)>,
}

impl View {
    pub fn byte_count(&self) -> usize {
        self.chunks.iter().map(|(_, bytes)| bytes.len()).sum()
    }

    /// One line per request and fragment, for failure messages.
    pub fn describe(&self) -> String {
        if self.byte_count() == 0 {
            return "the backend received nothing".to_owned();
        }
        let mut text = format!(
            "the backend received {} bytes, {} complete request(s), {} fragment(s):",
            self.byte_count(),
            self.requests.len(),
            self.fragments.len()
        );
        for request in &self.requests {
            text.push_str(&format!(
                "\n    request on connection {}: {}",
                request.connection,
                escape(&request.wire())
            ));
        }
        for fragment in &self.fragments {
            text.push_str(&format!(
                "\n    fragment on connection {} ({}): {}",
                fragment.connection,
                fragment.why,
                escape(&fragment.bytes)
            ));
        }
        text
    }
}

/// Bytes as printable text: `\r`, `\n`, `\t` and `\0` spelled out, other non-printable
/// bytes as `\xNN`, long runs shortened.
pub fn escape(bytes: &[u8]) -> String {
    const LIMIT: usize = 600;
    let shown = &bytes[..bytes.len().min(LIMIT)];
    let mut text: String = shown
        .iter()
        .map(|&byte| match byte {
            b'\r' => "\\r".to_owned(),
            b'\n' => "\\n".to_owned(),
            b'\t' => "\\t".to_owned(),
            0 => "\\0".to_owned(),
            b'\\' => "\\\\".to_owned(),
            0x20..=0x7e => (byte as char).to_string(),
            _ => format!("\\x{byte:02x}"),
        })
        .collect();
    if bytes.len() > LIMIT {
        text.push_str(&format!("… ({} bytes in all)", bytes.len()));
    }
    text
}

struct BackendState {
    view: View,
    /// When the last byte arrived or the last connection was accepted.
    last_activity: Instant,
    next_connection: usize,
}

struct Shared {
    state: Mutex<BackendState>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut BackendState)) {
        let mut state = self.state.lock().expect("backend state");
        change(&mut state);
        state.last_activity = Instant::now();
        self.changed.notify_all();
    }
}

/// A loopback HTTP/1.1 server that records every byte each connection sends, splits the
/// bytes into requests (head to the blank line; body by `Content-Length` or chunked) and
/// answers each complete request with a small keep-alive 200. It reads strictly: framing
/// with two readings (both `Content-Length` and `Transfer-Encoding`, a `Content-Length`
/// that is not one number) is recorded as a fragment and the connection is no longer read
/// as requests. Stopped when dropped.
pub struct RawBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RawBackend {
    pub fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the raw backend");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("raw backend address");
        let shared = Arc::new(Shared {
            state: Mutex::new(BackendState {
                view: View::default(),
                last_activity: Instant::now(),
                next_connection: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            while !accepting.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let mut connection = 0;
                        accepting.update(|state| {
                            connection = state.next_connection;
                            state.next_connection += 1;
                        });
                        let shared = Arc::clone(&accepting);
                        std::thread::spawn(move || serve(&shared, stream, connection));
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        RawBackend { addr, shared }
    }

    /// Forgets everything received so far.
    pub fn reset(&self) {
        self.shared.update(|state| state.view = View::default());
    }

    /// Waits until nothing has arrived for `quiet` (but no longer than `within`), then
    /// returns what arrived since the last reset.
    pub fn settle(&self, quiet: Duration, within: Duration) -> View {
        let deadline = Instant::now() + within;
        let mut state = self.shared.state.lock().expect("backend state");
        loop {
            let now = Instant::now();
            let quiet_until = state.last_activity + quiet;
            if now >= quiet_until || now >= deadline {
                return state.view.clone();
            }
            let wait = quiet_until.min(deadline) - now;
            state = self
                .shared
                .changed
                .wait_timeout(state, wait)
                .expect("backend state")
                .0;
        }
    }

    /// Waits until at least `count` complete requests arrived (or `within` passed), then
    /// returns what arrived since the last reset.
    pub fn wait_for_requests(&self, count: usize, within: Duration) -> View {
        let deadline = Instant::now() + within;
        let mut state = self.shared.state.lock().expect("backend state");
        loop {
            let now = Instant::now();
            if state.view.requests.len() >= count || now >= deadline {
                return state.view.clone();
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .expect("backend state")
                .0;
        }
    }

    /// Panics unless not one byte arrives for `quiet` after the last reset's traffic.
    pub fn assert_nothing(&self, quiet: Duration, what: &str) {
        let view = self.settle(quiet, quiet * 4);
        assert_eq!(view.byte_count(), 0, "{what}: {}", view.describe());
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one connection until it closes or the backend stops, recording as it goes.
fn serve(shared: &Shared, mut stream: StdTcpStream, connection: usize) {
    // Short reads so a stopped backend lets go of its connections soon.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut pending: Vec<u8> = Vec::new();
    let mut readable = true;
    let mut buffer = vec![0u8; 64 * 1024];
    while !shared.stop.load(Ordering::Relaxed) {
        let read = match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        let bytes = buffer[..read].to_vec();
        shared.update(|state| state.view.chunks.push((connection, bytes.clone())));
        if !readable {
            continue;
        }
        pending.extend_from_slice(&bytes);
        loop {
            match parse_request(&pending, connection) {
                Parsed::Partial => break,
                Parsed::Complete { request, used } => {
                    pending.drain(..used);
                    shared.update(|state| state.view.requests.push(request));
                    if stream.write_all(BACKEND_RESPONSE).is_err() {
                        return;
                    }
                }
                Parsed::Unreadable(why) => {
                    let bytes = std::mem::take(&mut pending);
                    shared.update(|state| {
                        state.view.fragments.push(Fragment {
                            connection,
                            bytes,
                            why,
                        });
                    });
                    readable = false;
                    break;
                }
            }
        }
    }
    if readable && !pending.is_empty() {
        shared.update(|state| {
            state.view.fragments.push(Fragment {
                connection,
                bytes: pending,
                why: "the connection closed before the request was complete".to_owned(),
            });
        });
    }
}

enum Parsed {
    Partial,
    Complete { request: Received, used: usize },
    Unreadable(String),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// Header fields of a head (without its blank line): `(name, value)` per line after the
/// first, or why a line is not a field.
fn header_fields(head: &[u8]) -> Result<(String, Vec<HeaderField>), String> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec());
    let first = String::from_utf8_lossy(&lines.next().unwrap_or_default()).into_owned();
    let mut fields = Vec::new();
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("a header line without a colon: {}", escape(&line)))?;
        let name = String::from_utf8_lossy(&line[..colon]).into_owned();
        fields.push((name, trim_ows(&line[colon + 1..]).to_vec()));
    }
    Ok((first, fields))
}

fn parse_request(data: &[u8], connection: usize) -> Parsed {
    let Some(end) = find(data, b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let (request_line, headers) = match header_fields(&data[..end]) {
        Ok(parsed) => parsed,
        Err(why) => return Parsed::Unreadable(why),
    };
    let framing = match request_framing(&headers) {
        Ok(framing) => framing,
        Err(why) => return Parsed::Unreadable(why),
    };
    let body_start = end + 4;
    let rest = &data[body_start..];
    let (body, body_len) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(length) => {
            if rest.len() < length {
                return Parsed::Partial;
            }
            (rest[..length].to_vec(), length)
        }
        Framing::Chunked => match dechunk(rest) {
            Chunked::Partial => return Parsed::Partial,
            Chunked::Bad(why) => return Parsed::Unreadable(why),
            Chunked::Done { body, used } => (body, used),
        },
    };
    Parsed::Complete {
        request: Received {
            connection,
            head: data[..body_start].to_vec(),
            raw_body: rest[..body_len].to_vec(),
            request_line,
            headers,
            framing,
            body,
        },
        used: body_start + body_len,
    }
}

/// The framing of a request, read strictly (RFC 9112 §6.3): only one reading is accepted.
fn request_framing(headers: &[HeaderField]) -> Result<Framing, String> {
    let named = |wanted: &str| -> Vec<&Vec<u8>> {
        headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value)
            .collect()
    };
    let codings = named("transfer-encoding");
    let lengths = named("content-length");
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err("both Content-Length and Transfer-Encoding".to_owned());
        }
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked") {
            return Err("a Transfer-Encoding other than one `chunked`".to_owned());
        }
        return Ok(Framing::Chunked);
    }
    match lengths.as_slice() {
        [] => Ok(Framing::None),
        [one] if !one.is_empty() && one.len() < 10 && one.iter().all(u8::is_ascii_digit) => {
            let text = String::from_utf8_lossy(one);
            Ok(Framing::Length(text.parse().expect("digits")))
        }
        _ => Err(format!(
            "Content-Length is not one decimal number: {:?}",
            lengths
                .iter()
                .map(|value| String::from_utf8_lossy(value).into_owned())
                .collect::<Vec<_>>()
        )),
    }
}

enum Chunked {
    Partial,
    Bad(String),
    Done { body: Vec<u8>, used: usize },
}

/// Reads a chunked body strictly: hex sizes (extensions ignored), CRLF after each chunk,
/// trailer fields until the blank line.
fn dechunk(data: &[u8]) -> Chunked {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find(&data[at..], b"\r\n").map(|offset| at + offset) else {
            return Chunked::Partial;
        };
        let line = &data[at..line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        if size_text.is_empty()
            || size_text.len() > 8
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Chunked::Bad(format!("a bad chunk size line: {}", escape(line)));
        }
        let size = usize::from_str_radix(&String::from_utf8_lossy(size_text), 16).expect("hex");
        at = line_end + 2;
        if size == 0 {
            loop {
                let Some(trailer_end) = find(&data[at..], b"\r\n").map(|offset| at + offset) else {
                    return Chunked::Partial;
                };
                let empty = trailer_end == at;
                at = trailer_end + 2;
                if empty {
                    return Chunked::Done { body, used: at };
                }
            }
        }
        if data.len() < at + size + 2 {
            return Chunked::Partial;
        }
        body.extend_from_slice(&data[at..at + size]);
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Chunked::Bad("a chunk not followed by CRLF".to_owned());
        }
        at += size + 2;
    }
}

/// One response read by the raw client.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and header lines.
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What came back on one raw HTTP/1.1 connection.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub responses: Vec<RawResponse>,
    /// The server closed (or reset) the connection.
    pub closed: bool,
    /// When the close was seen, from the first byte written.
    pub closed_after: Option<Duration>,
    /// Bytes after the last complete response that make no complete response.
    pub trailing: Vec<u8>,
    /// Bytes of the request that could not be written (the server stopped reading).
    pub unsent: usize,
}

impl Exchange {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// A one-line summary for failure messages.
    pub fn describe(&self) -> String {
        let mut text = format!("the client got statuses {:?}", self.statuses());
        match self.closed_after {
            Some(after) => text.push_str(&format!(", then a close after {after:?}")),
            None => text.push_str(", and the connection stayed open"),
        }
        if !self.trailing.is_empty() {
            text.push_str(&format!(", trailing bytes {}", escape(&self.trailing)));
        }
        if self.unsent > 0 {
            text.push_str(&format!(", {} request bytes not sent", self.unsent));
        }
        if let Some(first) = self.responses.first() {
            text.push_str(&format!(
                "; first answer: {} {}",
                escape(first.head.as_bytes()),
                escape(&first.body)
            ));
        }
        text
    }
}

/// How long to wait for the first byte of an answer after the request is written.
pub const FIRST_ANSWER: Duration = Duration::from_secs(5);
/// How long the connection must stay silent after a complete response before the
/// exchange is over (anything a smuggled request produced arrives well within it).
pub const QUIET: Duration = Duration::from_millis(200);

/// Opens a loopback TCP connection, within 5 s.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect within 5 s")
        .expect("connect");
    let _ = stream.set_nodelay(true);
    stream
}

/// Sends `request` on a fresh connection and reads what comes back.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    exchange_on(connect(addr).await, request, None).await
}

/// Sends `request` on `stream` (all at once, or one byte every `pace`) while reading the
/// answers, until the server closes the connection, or it stays silent for [`QUIET`]
/// after a complete response, or [`FIRST_ANSWER`] passes after the last byte written
/// with no complete response.
pub async fn exchange_on<S>(stream: S, request: &[u8], pace: Option<Duration>) -> Exchange
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let started = Instant::now();
    let written_at: Mutex<Option<Instant>> = Mutex::new(None);
    let peer_closed = AtomicBool::new(false);
    let write = async {
        let mut sent = 0;
        let pieces: Vec<&[u8]> = match pace {
            Some(_) => request.chunks(1).collect(),
            None => request.chunks(64 * 1024).collect(),
        };
        for piece in pieces {
            if peer_closed.load(Ordering::Relaxed) {
                break;
            }
            let result =
                tokio::time::timeout(Duration::from_secs(5), writer.write_all(piece)).await;
            if !matches!(result, Ok(Ok(()))) {
                break;
            }
            sent += piece.len();
            if let Some(every) = pace {
                tokio::time::sleep(every).await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.flush()).await;
        *written_at.lock().expect("written") = Some(Instant::now());
        (request.len() - sent, writer)
    };
    let read = async {
        let mut data = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut closed_after = None;
        let mut last_byte = Instant::now();
        let hard_deadline = started + Duration::from_secs(30);
        loop {
            let read =
                tokio::time::timeout(Duration::from_millis(20), reader.read(&mut buffer)).await;
            let now = Instant::now();
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed_after = Some(started.elapsed());
                    peer_closed.store(true, Ordering::Relaxed);
                    break;
                }
                Ok(Ok(read)) => {
                    data.extend_from_slice(&buffer[..read]);
                    last_byte = now;
                    continue;
                }
                Err(_) => {}
            }
            if now >= hard_deadline {
                break;
            }
            let Some(written) = *written_at.lock().expect("written") else {
                continue;
            };
            let (responses, used) = parse_responses(&data, false);
            let complete = !responses.is_empty() && used == data.len();
            let since = last_byte.max(written);
            if complete && now >= since + QUIET {
                break;
            }
            if responses.is_empty() && now >= written + FIRST_ANSWER {
                break;
            }
            if !responses.is_empty() && now >= since + FIRST_ANSWER {
                break;
            }
        }
        let (responses, used) = parse_responses(&data, closed_after.is_some());
        Exchange {
            responses,
            closed: closed_after.is_some(),
            closed_after,
            trailing: data[used..].to_vec(),
            unsent: 0,
        }
    };
    let ((unsent, _writer), mut exchange) = tokio::join!(write, read);
    exchange.unsent = unsent;
    exchange
}

/// Reads from `stream` until `count` complete responses have arrived, the server closes
/// the connection, or `within` passes, without writing anything. Reads nothing beyond what
/// the server sent, so the stream can carry on (say, as a WebSocket after a keep-alive
/// request); bytes past the responses are `trailing`.
pub async fn read_responses<S: AsyncRead + Unpin>(
    stream: &mut S,
    count: usize,
    within: Duration,
) -> Exchange {
    let started = Instant::now();
    let mut data = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let mut closed_after = None;
    while parse_responses(&data, false).0.len() < count {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(read)) => data.extend_from_slice(&buffer[..read]),
            Err(_) => break,
        }
    }
    let (responses, used) = parse_responses(&data, closed_after.is_some());
    Exchange {
        responses,
        closed: closed_after.is_some(),
        closed_after,
        trailing: data[used..].to_vec(),
        unsent: 0,
    }
}

/// The complete responses at the start of `data` and how many bytes they take; a `101`
/// ends them (what follows is no longer HTTP/1.1). A body without a length runs to the
/// close (`closed`).
fn parse_responses(data: &[u8], closed: bool) -> (Vec<RawResponse>, usize) {
    let mut responses = Vec::new();
    let mut at = 0;
    loop {
        let rest = &data[at..];
        let Some(end) = find(rest, b"\r\n\r\n") else {
            return (responses, at);
        };
        let Ok((status_line, fields)) = header_fields(&rest[..end]) else {
            return (responses, at);
        };
        let Some(status) = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|line| line.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
        else {
            return (responses, at);
        };
        let headers: Vec<(String, String)> = fields
            .iter()
            .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
            .collect();
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body_start = end + 4;
        let body_rest = &rest[body_start..];
        let length = fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| String::from_utf8_lossy(value).parse::<usize>().ok());
        let chunked = fields.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().ends_with(b"chunked")
        });
        let no_body = (100..200).contains(&status) || status == 204 || status == 304;
        let (body, used) = if no_body {
            (Vec::new(), 0)
        } else if chunked {
            match dechunk(body_rest) {
                Chunked::Done { body, used } => (body, used),
                _ => return (responses, at),
            }
        } else if let Some(length) = length {
            if body_rest.len() < length {
                return (responses, at);
            }
            (body_rest[..length].to_vec(), length)
        } else if closed {
            (body_rest.to_vec(), body_rest.len())
        } else {
            return (responses, at);
        };
        responses.push(RawResponse {
            status,
            head,
            headers,
            body,
        });
        at += body_start + used;
        if status == 101 {
            return (responses, at);
        }
    }
}

/// Whether `addr` closes a connection on which `request` was sent, within `within`: the
/// time it took, or `None` if it stayed open.
pub async fn closed_within(addr: SocketAddr, request: &[u8], within: Duration) -> Option<Duration> {
    let mut stream = connect(addr).await;
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(request)).await;
    let left = within.saturating_sub(started.elapsed());
    let ending = read_until_closed(&mut stream, left).await;
    ending.closed_after.map(|_| started.elapsed())
}

/// How a connection ended, as its client saw it.
#[derive(Debug)]
pub struct Ending {
    /// Since reading began, when the server closed (or reset) the connection; `None` if it
    /// was still open at the limit.
    pub closed_after: Option<Duration>,
    /// Everything received meanwhile.
    pub received: Vec<u8>,
}

/// Reads (and answers nothing) until the server closes the connection or `within` passes.
pub async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Ending {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
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

/// Minimal HTTP/2: frames, an HPACK encoder that writes any field verbatim, and a decoder
/// for the answers.
pub mod h2 {
    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;

    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;

    pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
    pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    /// One frame: a 9-byte header and the payload.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).expect("frame length");
        assert!(length < 1 << 24, "a frame payload is at most 2^24-1 bytes");
        let mut bytes = Vec::with_capacity(9 + payload.len());
        bytes.extend_from_slice(&length.to_be_bytes()[1..]);
        bytes.push(kind);
        bytes.push(flags);
        bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = values
            .iter()
            .flat_map(|(id, value)| {
                let mut entry = id.to_be_bytes().to_vec();
                entry.extend_from_slice(&value.to_be_bytes());
                entry
            })
            .collect();
        frame(SETTINGS, 0, 0, &payload)
    }

    pub fn settings_ack() -> Vec<u8> {
        frame(SETTINGS, ACK, 0, &[])
    }

    /// A HEADERS frame carrying `fields` (in order, verbatim) in one block.
    pub fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &encode(fields))
    }

    pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
        frame(
            CONTINUATION,
            if end_headers { END_HEADERS } else { 0 },
            stream,
            block,
        )
    }

    pub fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
        frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, bytes)
    }

    pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    pub fn ping(opaque: [u8; 8]) -> Vec<u8> {
        frame(PING, 0, 0, &opaque)
    }

    pub fn goaway(last_stream: u32, code: u32) -> Vec<u8> {
        let mut payload = last_stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&code.to_be_bytes());
        frame(GOAWAY, 0, 0, &payload)
    }

    pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
    }

    /// An HPACK integer with an `prefix`-bit prefix, the first byte's high bits `flags`
    /// (RFC 7541 §5.1).
    fn put_integer(out: &mut Vec<u8>, value: usize, prefix: u8, flags: u8) {
        let limit = (1usize << prefix) - 1;
        if value < limit {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | limit as u8);
        let mut rest = value - limit;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
        put_integer(out, bytes.len(), 7, 0);
        out.extend_from_slice(bytes);
    }

    /// A header block of `fields`, each a literal without indexing with a new name and
    /// raw (non-Huffman) strings: nothing is checked, so malformed names and values pass
    /// through as given.
    pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0x00);
            put_string(&mut block, name.as_bytes());
            put_string(&mut block, value.as_bytes());
        }
        block
    }

    /// One frame as read.
    #[derive(Debug, Clone)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    /// What `next_frame` saw.
    #[derive(Debug)]
    pub enum Event {
        Frame(Frame),
        /// The server closed (or reset) the connection.
        Closed,
        /// Nothing arrived in time.
        Silent,
    }

    /// How the server answered one stream.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Outcome {
        Response {
            status: u16,
            headers: Vec<(String, String)>,
        },
        /// RST_STREAM with this error code.
        Reset(u32),
        /// GOAWAY (with the last stream it will process and the error code), before any
        /// answer on the stream.
        GoAway {
            last_stream: u32,
            code: u32,
        },
        /// The connection closed without an answer or GOAWAY.
        Closed,
        TimedOut,
    }

    /// A client connection speaking raw HTTP/2 frames.
    pub struct Connection<S = TcpStream> {
        io: S,
        buffer: Vec<u8>,
        decoder: hpack::Decoder,
        /// The last GOAWAY received: last stream id and error code.
        pub goaway: Option<(u32, u32)>,
        closed: bool,
        /// Whether SETTINGS are acknowledged and PINGs answered (see `answer_nothing`).
        answering: bool,
    }

    impl Connection<TcpStream> {
        /// Connects to `addr` (h2c with prior knowledge) and sends the preface.
        pub async fn open(addr: SocketAddr) -> Connection<TcpStream> {
            Connection::start(connect(addr).await).await
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
        /// Sends the client preface, SETTINGS (no push, large windows) and a connection
        /// WINDOW_UPDATE on `io`.
        pub async fn start(io: S) -> Connection<S> {
            let mut connection = Connection {
                io,
                buffer: Vec::new(),
                decoder: hpack::Decoder::new(),
                goaway: None,
                closed: false,
                answering: true,
            };
            let mut hello = PREFACE.to_vec();
            hello.extend(settings(&[
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24),
            ]));
            hello.extend(window_update(0, 1 << 24));
            connection.send(&hello).await.expect("send the h2 preface");
            connection
        }

        /// Writes `bytes` within 5 s.
        pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
            match tokio::time::timeout(Duration::from_secs(5), self.io.write_all(bytes)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server stopped reading",
                )),
            }
        }

        /// The next frame, within `within`. SETTINGS are acknowledged and PINGs answered
        /// on the way (and still returned), unless told to `answer_nothing`.
        pub async fn next_frame(&mut self, within: Duration) -> Event {
            let deadline = Instant::now() + within;
            loop {
                if self.buffer.len() >= 9 {
                    let length =
                        u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]])
                            as usize;
                    if self.buffer.len() >= 9 + length {
                        let frame = Frame {
                            kind: self.buffer[3],
                            flags: self.buffer[4],
                            stream: u32::from_be_bytes([
                                self.buffer[5],
                                self.buffer[6],
                                self.buffer[7],
                                self.buffer[8],
                            ]) & 0x7fff_ffff,
                            payload: self.buffer[9..9 + length].to_vec(),
                        };
                        self.buffer.drain(..9 + length);
                        self.react(&frame).await;
                        return Event::Frame(frame);
                    }
                }
                if self.closed {
                    return Event::Closed;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Event::Silent;
                }
                let mut chunk = vec![0u8; 64 * 1024];
                match tokio::time::timeout(left, self.io.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                    Ok(Ok(read)) => self.buffer.extend_from_slice(&chunk[..read]),
                    Err(_) => return Event::Silent,
                }
            }
        }

        /// Reads frames until the server's SETTINGS (acknowledged on the way), within 5 s:
        /// the connection is then established. The frames read, that SETTINGS last.
        pub async fn settings_exchanged(&mut self) -> Vec<Frame> {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut frames = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next_frame(left).await {
                    Event::Frame(frame) => {
                        let settings = frame.kind == SETTINGS && frame.flags & ACK == 0;
                        frames.push(frame);
                        if settings {
                            return frames;
                        }
                    }
                    Event::Closed => panic!("closed before the server's SETTINGS: {frames:?}"),
                    Event::Silent => panic!("no SETTINGS from the server in 5 s: {frames:?}"),
                }
            }
        }

        /// From now on the client answers nothing: SETTINGS go unacknowledged and PINGs
        /// unanswered (they are still returned), as from a client that has gone quiet.
        pub fn answer_nothing(&mut self) {
            self.answering = false;
        }

        async fn react(&mut self, received: &Frame) {
            match received.kind {
                SETTINGS | PING if !self.answering => {}
                SETTINGS if received.flags & ACK == 0 => {
                    let _ = self.send(&settings_ack()).await;
                }
                PING if received.flags & ACK == 0 => {
                    let _ = self.send(&frame(PING, ACK, 0, &received.payload)).await;
                }
                GOAWAY if received.payload.len() >= 8 => {
                    let word = |at: usize| {
                        u32::from_be_bytes([
                            received.payload[at],
                            received.payload[at + 1],
                            received.payload[at + 2],
                            received.payload[at + 3],
                        ])
                    };
                    self.goaway = Some((word(0) & 0x7fff_ffff, word(4)));
                }
                _ => {}
            }
        }

        /// Reads frames until `stream` is answered (response headers or RST_STREAM), a
        /// GOAWAY says it will not be, the connection closes, or `within` passes. Every
        /// header block is decoded on the way, to keep the HPACK state in step.
        pub async fn outcome(&mut self, stream: u32, within: Duration) -> Outcome {
            let deadline = Instant::now() + within;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let frame = match self.next_frame(left).await {
                    Event::Frame(frame) => frame,
                    Event::Closed => {
                        return match self.goaway {
                            Some((last_stream, code)) => Outcome::GoAway { last_stream, code },
                            None => Outcome::Closed,
                        };
                    }
                    Event::Silent => return Outcome::TimedOut,
                };
                match frame.kind {
                    HEADERS => {
                        let for_stream = frame.stream == stream;
                        let fields = match self.header_block(frame, deadline).await {
                            Ok(fields) => fields,
                            Err(outcome) => return outcome,
                        };
                        let status = fields
                            .iter()
                            .find(|(name, _)| name == ":status")
                            .and_then(|(_, value)| value.parse().ok());
                        if let (true, Some(status)) = (for_stream, status) {
                            return Outcome::Response {
                                status,
                                headers: fields,
                            };
                        }
                    }
                    RST_STREAM if frame.stream == stream && frame.payload.len() == 4 => {
                        let code = u32::from_be_bytes([
                            frame.payload[0],
                            frame.payload[1],
                            frame.payload[2],
                            frame.payload[3],
                        ]);
                        return Outcome::Reset(code);
                    }
                    GOAWAY => {
                        if let Some((last_stream, code)) = self.goaway
                            && last_stream < stream
                        {
                            return Outcome::GoAway { last_stream, code };
                        }
                    }
                    _ => {}
                }
            }
        }

        /// The fields of the header block that the HEADERS frame `first` starts, with its
        /// CONTINUATION frames; `Err` when the connection ends mid-block.
        async fn header_block(
            &mut self,
            first: Frame,
            deadline: Instant,
        ) -> Result<Vec<(String, String)>, Outcome> {
            let mut block = header_fragment(&first).ok_or(Outcome::Closed)?;
            let mut ended = first.flags & END_HEADERS != 0;
            while !ended {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next_frame(left).await {
                    Event::Frame(next) if next.kind == CONTINUATION => {
                        block.extend_from_slice(&next.payload);
                        ended = next.flags & END_HEADERS != 0;
                    }
                    Event::Frame(_) | Event::Closed => return Err(Outcome::Closed),
                    Event::Silent => return Err(Outcome::TimedOut),
                }
            }
            let fields = self
                .decoder
                .decode(&block)
                .unwrap_or_else(|why| panic!("the server's header block did not decode: {why}"));
            Ok(fields
                .into_iter()
                .map(|(name, value)| {
                    (
                        String::from_utf8_lossy(&name).into_owned(),
                        String::from_utf8_lossy(&value).into_owned(),
                    )
                })
                .collect())
        }

        /// Reads frames until the server closes the connection or `within` passes; the
        /// GOAWAY seen (last stream and code), whether it closed, and the frames.
        pub async fn drain(&mut self, within: Duration) -> (Option<(u32, u32)>, bool, Vec<Frame>) {
            let deadline = Instant::now() + within;
            let mut frames = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next_frame(left).await {
                    Event::Frame(frame) => {
                        if frame.kind == HEADERS {
                            // Keep HPACK in step even when not asked for the fields.
                            let _ = self.header_block(frame.clone(), deadline).await;
                        }
                        frames.push(frame);
                    }
                    Event::Closed => return (self.goaway, true, frames),
                    Event::Silent => return (self.goaway, false, frames),
                }
            }
        }
    }

    /// The header block fragment of a HEADERS frame, without padding and priority.
    fn header_fragment(frame: &Frame) -> Option<Vec<u8>> {
        let mut payload = frame.payload.as_slice();
        let mut padding = 0;
        if frame.flags & PADDED != 0 {
            padding = usize::from(*payload.first()?);
            payload = &payload[1..];
        }
        if frame.flags & PRIORITY != 0 {
            payload = payload.get(5..)?;
        }
        let end = payload.len().checked_sub(padding)?;
        Some(payload[..end].to_vec())
    }

    /// HPACK decoding (RFC 7541): the static and dynamic tables and Huffman strings.
    pub mod hpack {
        use std::collections::VecDeque;
        use std::sync::OnceLock;

        /// RFC 7541 Appendix A.
        const STATIC_TABLE: [(&str, &str); 61] = [
            (":authority", ""),
            (":method", "GET"),
            (":method", "POST"),
            (":path", "/"),
            (":path", "/index.html"),
            (":scheme", "http"),
            (":scheme", "https"),
            (":status", "200"),
            (":status", "204"),
            (":status", "206"),
            (":status", "304"),
            (":status", "400"),
            (":status", "404"),
            (":status", "500"),
            ("accept-charset", ""),
            ("accept-encoding", "gzip, deflate"),
            ("accept-language", ""),
            ("accept-ranges", ""),
            ("accept", ""),
            ("access-control-allow-origin", ""),
            ("age", ""),
            ("allow", ""),
            ("authorization", ""),
            ("cache-control", ""),
            ("content-disposition", ""),
            ("content-encoding", ""),
            ("content-language", ""),
            ("content-length", ""),
            ("content-location", ""),
            ("content-range", ""),
            ("content-type", ""),
            ("cookie", ""),
            ("date", ""),
            ("etag", ""),
            ("expect", ""),
            ("expires", ""),
            ("from", ""),
            ("host", ""),
            ("if-match", ""),
            ("if-modified-since", ""),
            ("if-none-match", ""),
            ("if-range", ""),
            ("if-unmodified-since", ""),
            ("last-modified", ""),
            ("link", ""),
            ("location", ""),
            ("max-forwards", ""),
            ("proxy-authenticate", ""),
            ("proxy-authorization", ""),
            ("range", ""),
            ("referer", ""),
            ("refresh", ""),
            ("retry-after", ""),
            ("server", ""),
            ("set-cookie", ""),
            ("strict-transport-security", ""),
            ("transfer-encoding", ""),
            ("user-agent", ""),
            ("vary", ""),
            ("via", ""),
            ("www-authenticate", ""),
        ];

        /// The bit length of each symbol's Huffman code (RFC 7541 Appendix B), 256 being
        /// EOS. The code is canonical: codes of one length are consecutive, in symbol
        /// order, and shorter codes come first, so the lengths alone define it.
        #[rustfmt::skip]
        pub const CODE_LENGTHS: [u8; 257] = [
            13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
            28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
             6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6, // ' ' .. '/'
             5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10, // '0' .. '?'
            13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, // '@' .. 'O'
             7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6, // 'P' .. '_'
            15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5, // '`' .. 'o'
             6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28, // 'p' .. 0x7f
            20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
            24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
            22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
            21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
            26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
            19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
            20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
            26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
            30,                                                             // EOS
        ];

        const EOS: u16 = 256;

        /// The canonical code as decoding tables: how many codes each length has, and
        /// the symbols sorted by (length, symbol).
        struct Canonical {
            count: [u32; 31],
            symbols: Vec<u16>,
        }

        fn canonical() -> &'static Canonical {
            static TABLES: OnceLock<Canonical> = OnceLock::new();
            TABLES.get_or_init(|| {
                let mut count = [0u32; 31];
                for &length in &CODE_LENGTHS {
                    count[usize::from(length)] += 1;
                }
                let mut symbols: Vec<u16> = (0..=EOS).collect();
                symbols.sort_by_key(|&symbol| (CODE_LENGTHS[usize::from(symbol)], symbol));
                Canonical { count, symbols }
            })
        }

        /// The code of each symbol, `(bits, length)`, derived from the lengths.
        pub fn codes() -> Vec<(u32, u8)> {
            let tables = canonical();
            let mut codes = vec![(0u32, 0u8); 257];
            let mut code = 0u32;
            let mut length = 0u8;
            for &symbol in &tables.symbols {
                let wanted = CODE_LENGTHS[usize::from(symbol)];
                code <<= wanted - length;
                length = wanted;
                codes[usize::from(symbol)] = (code, length);
                code += 1;
            }
            codes
        }

        /// Decodes a Huffman string (RFC 7541 §5.2): the padding must be under 8 bits,
        /// all ones, and EOS must not appear.
        pub fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
            let tables = canonical();
            let mut out = Vec::new();
            let (mut code, mut first, mut index, mut length) = (0u32, 0u32, 0usize, 0usize);
            let mut all_ones = true;
            for byte in bytes {
                for shift in (0..8).rev() {
                    let bit = u32::from((byte >> shift) & 1);
                    code |= bit;
                    all_ones &= bit == 1;
                    length += 1;
                    let count = tables.count[length];
                    if code - first < count {
                        let symbol = tables.symbols[index + (code - first) as usize];
                        if symbol == EOS {
                            return Err("EOS inside a Huffman string".to_owned());
                        }
                        out.push(symbol as u8);
                        (code, first, index, length) = (0, 0, 0, 0);
                        all_ones = true;
                        continue;
                    }
                    index += count as usize;
                    first = (first + count) << 1;
                    code <<= 1;
                    if length >= 30 {
                        return Err("a Huffman code longer than 30 bits".to_owned());
                    }
                }
            }
            if length >= 8 || !all_ones {
                return Err("bad Huffman padding".to_owned());
            }
            Ok(out)
        }

        type Field = (Vec<u8>, Vec<u8>);

        /// An HPACK decoder with its dynamic table.
        pub struct Decoder {
            table: VecDeque<Field>,
            size: usize,
            max_size: usize,
        }

        impl Default for Decoder {
            fn default() -> Self {
                Decoder::new()
            }
        }

        impl Decoder {
            /// With the default table size, 4096 (what the client's SETTINGS allow).
            pub fn new() -> Decoder {
                Decoder {
                    table: VecDeque::new(),
                    size: 0,
                    max_size: 4096,
                }
            }

            fn entry(&self, index: usize) -> Result<Field, String> {
                match index {
                    0 => Err("index 0".to_owned()),
                    1..=61 => {
                        let (name, value) = STATIC_TABLE[index - 1];
                        Ok((name.as_bytes().to_vec(), value.as_bytes().to_vec()))
                    }
                    _ => self
                        .table
                        .get(index - 62)
                        .cloned()
                        .ok_or_else(|| format!("index {index} beyond the dynamic table")),
                }
            }

            fn evict_to(&mut self, limit: usize) {
                while self.size > limit {
                    let (name, value) = self.table.pop_back().expect("an entry to evict");
                    self.size -= name.len() + value.len() + 32;
                }
            }

            fn insert(&mut self, field: Field) {
                let size = field.0.len() + field.1.len() + 32;
                if size > self.max_size {
                    self.table.clear();
                    self.size = 0;
                    return;
                }
                self.evict_to(self.max_size - size);
                self.size += size;
                self.table.push_front(field);
            }

            /// The fields of one complete header block, in order.
            pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, String> {
                let mut fields = Vec::new();
                let mut at = 0;
                while at < block.len() {
                    let byte = block[at];
                    if byte & 0x80 != 0 {
                        let index = integer(block, &mut at, 7)?;
                        fields.push(self.entry(index)?);
                    } else if byte & 0xc0 == 0x40 {
                        let field = self.literal(block, &mut at, 6)?;
                        self.insert(field.clone());
                        fields.push(field);
                    } else if byte & 0xe0 == 0x20 {
                        let size = integer(block, &mut at, 5)?;
                        if size > 4096 {
                            return Err(format!("table size {size} over the limit"));
                        }
                        self.max_size = size;
                        self.evict_to(size);
                    } else {
                        fields.push(self.literal(block, &mut at, 4)?);
                    }
                }
                Ok(fields)
            }

            fn literal(&self, block: &[u8], at: &mut usize, prefix: u8) -> Result<Field, String> {
                let index = integer(block, at, prefix)?;
                let name = if index == 0 {
                    string(block, at)?
                } else {
                    self.entry(index)?.0
                };
                Ok((name, string(block, at)?))
            }
        }

        /// An integer with a `prefix`-bit prefix at `*at` (RFC 7541 §5.1).
        fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, String> {
            let limit = (1usize << prefix) - 1;
            let first = *block.get(*at).ok_or("a truncated integer")?;
            *at += 1;
            let mut value = usize::from(first) & limit;
            if value < limit {
                return Ok(value);
            }
            let mut shift = 0;
            loop {
                let byte = *block.get(*at).ok_or("a truncated integer")?;
                *at += 1;
                value += usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    return Ok(value);
                }
                if shift > 28 {
                    return Err("an integer too large".to_owned());
                }
            }
        }

        /// A string literal at `*at`, Huffman-decoded when flagged.
        fn string(block: &[u8], at: &mut usize) -> Result<Vec<u8>, String> {
            let huffman = block.get(*at).ok_or("a truncated string")? & 0x80 != 0;
            let length = integer(block, at, 7)?;
            let bytes = block
                .get(*at..*at + length)
                .ok_or("a string beyond the block")?;
            *at += length;
            if huffman {
                huffman_decode(bytes)
            } else {
                Ok(bytes.to_vec())
            }
        }
    }
}
