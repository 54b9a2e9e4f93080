//! The heap an idle client connection holds, counted by a wrapping allocator around a
//! real traffic worker on loopback: what parking leaves of a connection (issue 29).
//!
//! Heap bytes, not RSS: exact and the same on every run, so a budget can be asserted in
//! CI. `bench/run --only connections` measures RSS against nginx and HAProxy.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sluice_dataplane::balance::HealthConfig;
use sluice_dataplane::live::DataPlane;
use sluice_dataplane::metrics::Metrics;
use sluice_dataplane::proxy::ProxyConfig;
use sluice_dataplane::server::{ListenerConfig, TrafficWorkers, WorkerSockets, bind_shared};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

fn signed(size: usize) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

// SAFETY: every call is passed on to the system allocator unchanged; only a counter moves.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(signed(layout.size()), Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `layout` carry over.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(signed(layout.size()), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(signed(new_size) - signed(layout.size()), Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONNECTIONS: usize = 500;
/// Longer than the one second after which an idle HTTP/1.1 connection parks.
const SETTLE: Duration = Duration::from_millis(2500);

/// Heap bytes each parked connection may hold. A plain connection waits in its
/// listener's parking lot: no task, no tokio registration, only its lot entry, what it
/// resumes with (boxed) and its activity in the budget; 224 bytes now. Parked in its own
/// task it held 720 (task 384, tokio's registration 256, activity 80), and 1,758 at the
/// start of issue 29's second session. nginx holds about 550 bytes of RSS per idle
/// connection.
const PARKED_BUDGET: i64 = 320;
/// An idle HTTP/2 connection keeps hyper's and h2's state and buffers (HPACK tables, a
/// 16 KiB write and an 8 KiB read buffer): the ceiling only catches growth.
const HTTP2_BUDGET: i64 = 40 * 1024;

#[derive(Clone, Copy, Debug)]
enum Client {
    /// Connects and sends nothing.
    Silent,
    /// One HTTP/1.1 GET, answered, then idle.
    Http1,
    /// HTTP/2 prior knowledge, one GET on stream 1, answered, then idle.
    Http2,
}

fn start_worker() -> (TrafficWorkers, SocketAddr) {
    let mut listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let http = listeners.pop().unwrap();
    let addr = http.local_addr().unwrap();
    let data_plane = Arc::new(DataPlane::new(
        HealthConfig::default(),
        Arc::new(Metrics::new()),
    ));
    let config = ListenerConfig {
        header_read_timeout: Duration::from_secs(60),
        ..ListenerConfig::default()
    };
    let workers = TrafficWorkers::start(
        vec![WorkerSockets { http, https: None }],
        None,
        &data_plane,
        &ProxyConfig::default(),
        &config,
    )
    .unwrap();
    (workers, addr)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![length[1], length[2], length[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Opens a connection of `kind` and waits for the answer to its request, if it sends one.
/// (No route matches: the answer is Sluice's own 404, the whole request path all the same.)
fn open(addr: SocketAddr, kind: Client, buffer: &mut [u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let done: fn(&[u8]) -> bool = match kind {
        Client::Silent => return stream,
        Client::Http1 => {
            stream
                .write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
                .unwrap();
            http1_answered
        }
        Client::Http2 => {
            // :method GET, :scheme http, :authority a.test, :path /x; END_STREAM | END_HEADERS.
            let block = [&[0x82u8, 0x86, 0x41, 6][..], b"a.test", &[0x04, 2], b"/x"].concat();
            let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            out.extend(frame(0x4, 0, 0, &[]));
            out.extend(frame(0x4, 0x1, 0, &[]));
            out.extend(frame(0x1, 0x5, 1, &block));
            stream.write_all(&out).unwrap();
            http2_answered
        }
    };
    while !done(&received) {
        let read = stream.read(buffer).unwrap();
        assert!(read > 0, "{kind:?}: closed before the answer");
        received.extend_from_slice(&buffer[..read]);
    }
    stream
}

/// Whether a whole answer has come: its head, and the body its `Content-Length` gives.
fn http1_answered(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    received.len() >= end + 4 + length
}

/// Whether the frames received hold the end of stream 1.
fn http2_answered(mut received: &[u8]) -> bool {
    while received.len() >= 9 {
        let length = usize::from(received[0]) << 16
            | usize::from(received[1]) << 8
            | usize::from(received[2]);
        if received.len() < 9 + length {
            return false;
        }
        let (kind, flags) = (received[3], received[4]);
        let stream = u32::from_be_bytes([received[5], received[6], received[7], received[8]]);
        if stream == 1 && flags & 0x1 == 1 && (kind == 0x0 || kind == 0x1) {
            return true;
        }
        received = &received[9 + length..];
    }
    false
}

/// Heap bytes per connection that `CONNECTIONS` idle connections of `kind` hold. Then
/// each HTTP/1.1 one asks again: a connection woken from its parking place is served.
fn heap_per_connection(addr: SocketAddr, kind: Client) -> i64 {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let before = LIVE_BYTES.load(Ordering::SeqCst);
    for _ in 0..CONNECTIONS {
        clients.push(open(addr, kind, &mut buffer));
    }
    std::thread::sleep(SETTLE);
    let held = LIVE_BYTES.load(Ordering::SeqCst) - before;
    for client in &mut clients {
        client.set_nonblocking(true).unwrap();
        let still_open = matches!(client.read(&mut buffer), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "{kind:?}: an idle connection was closed");
    }
    if matches!(kind, Client::Silent | Client::Http1) {
        for client in &mut clients {
            client.set_nonblocking(false).unwrap();
            client
                .write_all(b"GET /again HTTP/1.1\r\nHost: a.test\r\n\r\n")
                .unwrap();
            let mut received = Vec::new();
            while !http1_answered(&received) {
                let read = client.read(&mut buffer).unwrap();
                assert!(
                    read > 0,
                    "{kind:?}: closed instead of answering after parking"
                );
                received.extend_from_slice(&buffer[..read]);
            }
            assert!(
                received.starts_with(b"HTTP/1.1 404"),
                "{kind:?}: {received:?}"
            );
        }
    }
    drop(clients);
    // Let the server let go of them before the next kind is counted.
    std::thread::sleep(Duration::from_millis(500));
    held / signed(CONNECTIONS)
}

#[test]
fn an_idle_connection_holds_a_few_hundred_bytes_of_heap_and_http2_its_buffers() {
    let (_workers, addr) = start_worker();
    // The first connections allocate what lives for the process (pools, registries).
    heap_per_connection(addr, Client::Http1);
    let silent = heap_per_connection(addr, Client::Silent);
    let http1 = heap_per_connection(addr, Client::Http1);
    let http2 = heap_per_connection(addr, Client::Http2);
    println!("heap per idle connection: silent {silent} B, HTTP/1.1 {http1} B, h2c {http2} B");
    assert!(
        silent <= PARKED_BUDGET,
        "a silent connection holds {silent} bytes"
    );
    assert!(
        http1 <= PARKED_BUDGET,
        "a parked HTTP/1.1 connection holds {http1} bytes"
    );
    assert!(
        http2 <= HTTP2_BUDGET,
        "an idle h2c connection holds {http2} bytes"
    );
}
