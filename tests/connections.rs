//! The connection budget (issue 29) through the real `sluice` binary on loopback: the cap
//! (`--max-connections`) that makes room by closing the connection idle longest and
//! refuses a new one only when none is idle, the memory watermarks (`--memory-limit`)
//! that end keep-alive while requests still finish, and parking, which idle connections
//! go through without their clients noticing.
//!
//! Every test starts its own Sluice in front of its own backend, which can hold its
//! answers to keep requests in flight. A connection counts as closed by Sluice when a
//! read on it ends (end of stream or an error).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use support::held::HeldBackend;
use support::raw::h2::{self, Connection, Event};
use support::raw::{self, Exchange};
use support::tls::{ClientOptions, HttpsConnection};
use support::websocket::{round_trip, start_echo_server};
use support::{INGRESS_CLASS, ManifestDir, Sluice, service_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The cap the cap tests run at, and how many connections they open to reach it.
const CAP: usize = 1000;

/// Well past `PARK_AFTER` (100 ms): an HTTP/1.1 keep-alive connection idle this long has
/// been handed back by hyper and waits holding only its socket.
const PARKED: Duration = Duration::from_secs(2);

/// The host every request names; any host reaches the backend.
const HOST: &str = "budget.test";

/// Sluice in front of a [`HeldBackend`] (every path) and a WebSocket echo server (`/ws`).
struct Site {
    sluice: Sluice,
    backend: HeldBackend,
    _dir: ManifestDir,
}

impl Site {
    async fn start(name: &str, args: &[&str]) -> Site {
        let backend = HeldBackend::start().await;
        let websocket = start_echo_server().await;
        let dir = ManifestDir::new(&format!("connections-{name}"));
        dir.write("class.yaml", INGRESS_CLASS);
        let mut yaml = service_yaml("default", "held", 80, &[backend.addr], &[]);
        yaml += "---\n";
        yaml += &service_yaml("default", "ws", 80, &[websocket], &[]);
        yaml += "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: site, namespace: default}\nspec:\n  ingressClassName: sluice\n  rules:\n  - http:\n      paths:\n";
        for (path, service) in [("/", "held"), ("/ws", "ws")] {
            yaml += &format!(
                "      - {{path: \"{path}\", pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
            );
        }
        dir.write("site.yaml", &yaml);
        let sluice = Sluice::start(&dir.0, args).await;
        Site {
            sluice,
            backend,
            _dir: dir,
        }
    }

    fn http(&self) -> SocketAddr {
        self.sluice.http
    }

    async fn metric(&self, series: &str) -> f64 {
        self.sluice.metric(series).await.unwrap_or(0.0)
    }

    async fn shed(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "sluice_connections_shed_total{{reason=\"{reason}\"}}"
        ))
        .await
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

/// Writes `request` on `stream` and reads `count` responses (or what came within 5 s).
async fn request_on(stream: &mut TcpStream, request: &[u8], count: usize) -> Exchange {
    tokio::time::timeout(Duration::from_secs(5), stream.write_all(request))
        .await
        .expect("write within 5 s")
        .expect("write");
    raw::read_responses(stream, count, Duration::from_secs(5)).await
}

/// Panics unless `exchange` is one 200 per path, in order, each with its path as the body
/// (the backend's answer), and nothing else.
fn assert_served(exchange: &Exchange, paths: &[&str], what: &str) {
    let bodies: Vec<String> = exchange
        .responses
        .iter()
        .map(|response| String::from_utf8_lossy(&response.body).into_owned())
        .collect();
    assert!(
        exchange.statuses().iter().all(|status| *status == 200)
            && bodies == paths
            && exchange.trailing.is_empty(),
        "{what}: expected 200s for {paths:?}: {}",
        exchange.describe()
    );
}

/// Which of `streams` the server has closed: each is read for up to `within`, all at once.
/// The end of the stream or an error is a close; silence is open.
async fn closed_connections(streams: &mut [TcpStream], within: Duration) -> Vec<usize> {
    let reads = streams
        .iter_mut()
        .enumerate()
        .map(|(index, stream)| async move {
            let mut buffer = [0u8; 512];
            match tokio::time::timeout(within, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => Some(index),
                Ok(Ok(read)) => panic!(
                    "idle connection {index} received {}",
                    raw::escape(&buffer[..read])
                ),
                Err(_) => None,
            }
        });
    join_all(reads).await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_new_client_is_served_in_place_of_the_connection_idle_longest() {
    let site = Site::start("cap-idle", &["--max-connections", "1000"]).await;
    let began = Instant::now();
    let mut idle = Vec::with_capacity(CAP);
    for index in 0..CAP {
        let mut stream = raw::connect(site.http()).await;
        let path = format!("/idle-{index}");
        let exchange = request_on(&mut stream, &get(&path), 1).await;
        assert_served(&exchange, &[&path], &format!("idle connection {index}"));
        idle.push(stream);
        // The first connections get ages 10 ms apart, so that "oldest first" shows.
        if index < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let opened = began.elapsed();
    let open = "sluice_open_connections{listener=\"http\",protocol=\"http1\"}";
    support::eventually(Duration::from_secs(5), "1,000 open", async || {
        site.metric(open).await == CAP as f64
    })
    .await;

    let fresh = raw::exchange(site.http(), &get("/fresh")).await;
    assert_served(&fresh, &["/fresh"], "a new client at the cap");
    let closed = closed_connections(&mut idle, Duration::from_secs(1)).await;
    println!(
        "1,000 idle connections opened in {opened:?}; after a new client at the cap, closed: {closed:?}"
    );
    assert!(
        (1..=5).contains(&closed.len()),
        "room is made by closing one idle connection or a few, not {closed:?}"
    );
    assert!(
        closed.iter().all(|index| *index < 10),
        "the connections idle longest (the first opened) make room, not {closed:?}"
    );
    let shed = site.shed("idle").await;
    assert!(
        shed >= 1.0,
        "sluice_connections_shed_total{{reason=\"idle\"}} is {shed}"
    );
}

/// Connections that never sent a byte are idle too, idle longest of all: at the cap they
/// are the first to make room, and must then close as an idle keep-alive one does, not
/// at their first-request deadline (30 s here), or the cap no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_silent_connection_makes_room_and_is_closed_at_once() {
    const SMALL_CAP: usize = 4;
    let site = Site::start("cap-silent", &["--max-connections", "4"]).await;
    let mut silent = Vec::with_capacity(SMALL_CAP);
    for _ in 0..SMALL_CAP {
        silent.push(raw::connect(site.http()).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open = "sluice_open_connections{listener=\"http\",protocol=\"unknown\"}";
    support::eventually(Duration::from_secs(5), "4 open", async || {
        site.metric(open).await == SMALL_CAP as f64
    })
    .await;
    let fresh = raw::exchange(site.http(), &get("/fresh")).await;
    assert_served(&fresh, &["/fresh"], "a new client at the cap");
    let shed = site.shed("idle").await;
    let closed = closed_connections(&mut silent, Duration::from_secs(1)).await;
    println!("silent connections at the cap: {shed} shed, closed: {closed:?}");
    assert_eq!(
        shed, 1.0,
        "sluice_connections_shed_total{{reason=\"idle\"}}"
    );
    assert_eq!(
        closed,
        [0],
        "the silent connection opened first makes room, and is closed within a second"
    );
}

/// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the Sluice process. A stop is waited for:
/// every thread shows as stopped in /proc.
fn freeze(sluice: &Sluice, frozen: bool) {
    let pid = sluice.pid();
    let signal = if frozen { "-STOP" } else { "-CONT" };
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
    let all_stopped = || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
        tasks.flatten().all(|task| {
            // The state follows the command name in parentheses: `PID (NAME) STATE ...`.
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit(") ")
                    .next()
                    .is_some_and(|rest| rest.starts_with('T'))
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while frozen && !all_stopped() {
        assert!(Instant::now() < deadline, "sluice did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A connection whose request has arrived but not yet been read is not idle: when its
/// traffic thread is busy accepting a burst of connections, the burst must not close it
/// to make room. Sluice is stopped while the client connects and sends its request, then
/// twenty silent connections arrive, all waiting in the listen queue; once Sluice
/// resumes it accepts them in order, in one go, and the request is read only after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_connection_whose_request_waits_unread_is_not_closed_to_make_room() {
    let site = Site::start(
        "cap-unread",
        &["--max-connections", "10", "--worker-threads", "1"],
    )
    .await;
    freeze(&site.sluice, true);
    let mut waiting = raw::connect(site.http()).await;
    waiting.write_all(&get("/waiting")).await.expect("write");
    let mut burst = Vec::new();
    for _ in 0..20 {
        burst.push(raw::connect(site.http()).await);
    }
    freeze(&site.sluice, false);
    let exchange = raw::read_responses(&mut waiting, 1, Duration::from_secs(5)).await;
    let shed = site.shed("idle").await;
    println!(
        "a request waiting unread behind a burst at the cap: {}; {shed} shed",
        exchange.describe()
    );
    assert_served(
        &exchange,
        &["/waiting"],
        "the request waiting behind the burst",
    );
    // Served, but asked to close: it was the one chosen to make room, and won the race
    // between its request and the close.
    assert_eq!(
        exchange.responses[0].header("connection"),
        None,
        "the request waiting behind the burst: {}",
        exchange.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_closed_and_none_of_them_fails() {
    let site = Site::start("cap-full", &["--max-connections", "1000"]).await;
    site.backend.hold();
    let mut busy = Vec::with_capacity(CAP);
    for index in 0..CAP {
        let mut stream = raw::connect(site.http()).await;
        tokio::time::timeout(
            Duration::from_secs(5),
            stream.write_all(&get(&format!("/busy-{index}"))),
        )
        .await
        .expect("write within 5 s")
        .expect("write");
        busy.push(stream);
    }
    site.backend
        .wait_for_arrivals(CAP, Duration::from_secs(30))
        .await;

    // Nothing is idle: the new connection is closed without an answer, at once.
    let opened = Instant::now();
    let mut refused = raw::connect(site.http()).await;
    // The write may already fail: the connection can be closed before it.
    let _ = tokio::time::timeout(Duration::from_secs(1), refused.write_all(&get("/refused"))).await;
    let ending = raw::read_until_closed(&mut refused, Duration::from_secs(3)).await;
    let lived = ending.closed_after.map(|_| opened.elapsed());
    assert!(
        lived.is_some_and(|lived| lived < Duration::from_secs(1)) && ending.received.is_empty(),
        "the connection beyond the cap: closed after {lived:?} (None: still open), received {}",
        raw::escape(&ending.received)
    );
    let full = site.shed("full").await;
    assert!(
        full >= 1.0,
        "sluice_connections_shed_total{{reason=\"full\"}} is {full}"
    );
    assert_eq!(
        site.backend.arrived(),
        CAP,
        "the refused request reached the backend"
    );

    site.backend.release();
    let answers = join_all(
        busy.iter_mut()
            .map(|stream| raw::read_responses(stream, 1, Duration::from_secs(20))),
    )
    .await;
    let failed: Vec<String> = answers
        .iter()
        .enumerate()
        .filter(|(index, exchange)| {
            exchange.statuses() != [200]
                || exchange.responses[0].body != format!("/busy-{index}").as_bytes()
        })
        .map(|(index, exchange)| format!("connection {index}: {}", exchange.describe()))
        .collect();
    println!(
        "1,000 busy connections: the one beyond the cap closed after {lived:?}; {} of them failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of the 1,000 requests in flight failed, the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The pseudo-header fields of `GET path`.
fn h2_get(path: &str) -> [(&str, &str); 4] {
    [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", HOST),
        (":path", path),
    ]
}

/// The status and body of `stream`'s response, read up to its END_STREAM.
async fn h2_response(
    connection: &mut Connection,
    stream: u32,
    within: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + within;
    let status = match connection.outcome(stream, within).await {
        h2::Outcome::Response { status, .. } => status,
        other => return Err(format!("no response on stream {stream}: {other:?}")),
    };
    let mut body = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connection.next_frame(left).await {
            Event::Frame(frame) if frame.stream == stream && frame.kind == h2::DATA => {
                body.extend_from_slice(&frame.payload);
                if frame.flags & h2::END_STREAM != 0 {
                    return Ok((status, body));
                }
            }
            Event::Frame(frame) if frame.stream == stream && frame.kind == h2::RST_STREAM => {
                return Err(format!("stream {stream} reset after its headers"));
            }
            Event::Frame(_) => {}
            Event::Closed => {
                return Err(format!(
                    "closed before END_STREAM, {} body bytes in",
                    body.len()
                ));
            }
            Event::Silent => return Err(format!("no END_STREAM within {within:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_shed_at_the_cap_gets_a_goaway_and_closes() {
    let site = Site::start("cap-h2", &["--max-connections", "1"]).await;
    let mut idle = Connection::open(site.http()).await;
    idle.settings_exchanged().await;
    idle.send(&h2::headers(1, &h2_get("/h2"), true))
        .await
        .expect("send");
    let answer = h2_response(&mut idle, 1, Duration::from_secs(5)).await;
    assert_eq!(answer, Ok((200, b"/h2".to_vec())));

    let fresh = raw::exchange(site.http(), &get("/fresh")).await;
    assert_served(&fresh, &["/fresh"], "a new client at the cap");
    let (goaway, closed, frames) = idle.drain(Duration::from_secs(5)).await;
    assert_eq!(
        goaway,
        Some((1, h2::NO_ERROR)),
        "the idle h2 connection: {frames:?}"
    );
    assert!(
        closed,
        "the idle h2 connection stayed open after its GOAWAY"
    );
    let shed = site.shed("idle").await;
    assert!(
        shed >= 1.0,
        "sluice_connections_shed_total{{reason=\"idle\"}} is {shed}"
    );
}

/// Under critical memory pressure the budget's watch closes idle connections four times
/// a second, and a connection counts as idle from its accept until its first request
/// begins: a sweep in that window (well under a millisecond here) closes it with its
/// request unread, as the burst does in
/// `at_the_cap_a_connection_whose_request_waits_unread_is_not_closed_to_make_room`. So
/// that this test is about what follows, a client that sees a close without an answer
/// tries again, at most three times in all, and says so.
const TRIES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_memory_pressure_requests_finish_and_their_connections_close() {
    // Far below the process's resident memory: critical from the first look.
    let site = Site::start("memory", &["--memory-limit", "8Mi"]).await;
    support::eventually(
        Duration::from_secs(5),
        "memory pressure critical",
        async || site.metric("sluice_memory_pressure").await == 2.0,
    )
    .await;

    // HTTP/1.1: a fresh client is served, told the connection closes, and it does.
    let mut fresh = Exchange::default();
    for _ in 0..TRIES {
        fresh = raw::exchange(site.http(), &get("/fresh")).await;
        if !fresh.responses.is_empty() || !fresh.closed {
            break;
        }
        println!("a fresh HTTP/1.1 client closed without an answer; again");
    }
    assert_served(
        &fresh,
        &["/fresh"],
        "a fresh HTTP/1.1 client under pressure",
    );
    assert_eq!(
        fresh.responses[0].header("connection"),
        Some("close"),
        "{}",
        fresh.describe()
    );
    assert!(
        fresh.closed,
        "no close after the answer: {}",
        fresh.describe()
    );

    // HTTP/2: a request in flight when the connection is asked to close (GOAWAY) is
    // answered whole, then the connection closes.
    site.backend.hold();
    let mut connection = None;
    for _ in 0..TRIES {
        let before = site.backend.arrived();
        let mut h2c = Connection::open(site.http()).await;
        h2c.send(&h2::headers(1, &h2_get("/in-flight"), true))
            .await
            .expect("send");
        let began = support::holds_within(Duration::from_secs(3), async || {
            site.backend.arrived() > before
        })
        .await;
        if began.is_some() {
            connection = Some(h2c);
            break;
        }
        let (goaway, closed, frames) = h2c.drain(Duration::from_secs(3)).await;
        println!(
            "an h2 connection closed before its request began: {goaway:?} {closed} {frames:?}"
        );
    }
    let mut h2c = connection.expect("an h2 request in flight");
    let mut before_answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while h2c.goaway.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match h2c.next_frame(left).await {
            Event::Frame(frame) => before_answer.push(frame),
            other => {
                panic!("no GOAWAY while the request was in flight: {other:?}, {before_answer:?}")
            }
        }
    }
    assert!(
        !before_answer
            .iter()
            .any(|frame| frame.kind == h2::HEADERS || frame.kind == h2::RST_STREAM),
        "the held stream was answered or reset: {before_answer:?}"
    );
    site.backend.release();
    let answer = h2_response(&mut h2c, 1, Duration::from_secs(5)).await;
    assert_eq!(answer, Ok((200, b"/in-flight".to_vec())));
    let (goaway, closed, frames) = h2c.drain(Duration::from_secs(5)).await;
    assert!(
        goaway.is_some_and(|(last_stream, code)| last_stream >= 1 && code == h2::NO_ERROR),
        "GOAWAY {goaway:?}"
    );
    assert!(
        closed,
        "the h2 connection stayed open after its last stream: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_keep_alive_connection_serves_its_next_requests() {
    let site = Site::start("park-keep-alive", &[]).await;
    let mut stream = raw::connect(site.http()).await;
    assert_served(
        &request_on(&mut stream, &get("/first"), 1).await,
        &["/first"],
        "first",
    );
    tokio::time::sleep(PARKED).await;
    assert_served(
        &request_on(&mut stream, &get("/second"), 1).await,
        &["/second"],
        "second",
    );
    assert_served(
        &request_on(&mut stream, &get("/third"), 1).await,
        &["/third"],
        "third",
    );
}

/// Parked connections wait in the listener's parking lot, with no task of their own: a
/// client that goes away must still be noticed there, and its connection let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_whose_clients_leave_are_let_go() {
    const CLIENTS: usize = 20;
    let site = Site::start("park-leave", &[]).await;
    let open = "sluice_open_connections{listener=\"http\",protocol=\"http1\"}";
    let mut streams = Vec::new();
    for at in 0..CLIENTS {
        let mut stream = raw::connect(site.http()).await;
        let path = format!("/leave{at}");
        assert_served(
            &request_on(&mut stream, &get(&path), 1).await,
            &[&path],
            "before parking",
        );
        streams.push(stream);
    }
    tokio::time::sleep(PARKED).await;
    let parked = site.metric("sluice_parked_connections").await;
    assert_eq!(parked, CLIENTS as f64, "parked before the clients leave");
    assert_eq!(site.metric(open).await, CLIENTS as f64);
    // Half of them close; the other half half-close (no more requests, still reading).
    let mut half_closed = Vec::new();
    for (at, mut stream) in streams.into_iter().enumerate() {
        if at % 2 == 1 {
            stream.shutdown().await.expect("half-close");
            half_closed.push(stream);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (parked, still_open) = (
            site.metric("sluice_parked_connections").await,
            site.metric(open).await,
        );
        if parked == 0.0 && still_open == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "5 s after the clients left: {parked} parked, {still_open} open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(half_closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_pair_after_parking_is_answered_in_order() {
    let site = Site::start("park-pipelined", &[]).await;
    let mut stream = raw::connect(site.http()).await;
    assert_served(
        &request_on(&mut stream, &get("/first"), 1).await,
        &["/first"],
        "first",
    );
    tokio::time::sleep(PARKED).await;
    let pair = [get("/one"), get("/two")].concat();
    let exchange = request_on(&mut stream, &pair, 2).await;
    assert_served(
        &exchange,
        &["/one", "/two"],
        "a pipelined pair in one write",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_split_by_a_pause_after_parking_is_answered() {
    let site = Site::start("park-split", &[]).await;
    let mut stream = raw::connect(site.http()).await;
    assert_served(
        &request_on(&mut stream, &get("/first"), 1).await,
        &["/first"],
        "first",
    );
    tokio::time::sleep(PARKED).await;
    let request = get("/split");
    let (head, tail) = request.split_at(12);
    stream.write_all(head).await.expect("write");
    // Shorter than the header-read timeout (30 s), longer than parking takes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let exchange = request_on(&mut stream, tail, 1).await;
    assert_served(
        &exchange,
        &["/split"],
        "a request in two writes 1.5 s apart",
    );
}

/// A connection whose last request had a body stays with hyper (the proxy read the body,
/// so hyper may not be between messages); it parks only after a later request without
/// one. Both pauses must be invisible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_with_bodies_and_pauses_are_served_on_one_connection() {
    let site = Site::start("park-post", &[]).await;
    let mut stream = raw::connect(site.http()).await;
    let post = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 11\r\n\r\nhello world")
            .into_bytes()
    };
    for (request, path, pause) in [
        (post("/upload"), "/upload", PARKED),
        (get("/after-post"), "/after-post", PARKED),
        (post("/after-parking"), "/after-parking", Duration::ZERO),
        (get("/last"), "/last", Duration::ZERO),
    ] {
        let exchange = request_on(&mut stream, &request, 1).await;
        assert_served(&exchange, &[path], path);
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_on_a_parked_connection_works() {
    let site = Site::start("park-websocket", &[]).await;
    let mut stream = raw::connect(site.http()).await;
    assert_served(
        &request_on(&mut stream, &get("/first"), 1).await,
        &["/first"],
        "first",
    );
    tokio::time::sleep(PARKED).await;
    let (mut socket, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(format!("ws://{HOST}/ws"), stream),
    )
    .await
    .expect("handshake in time")
    .expect("WebSocket handshake on the parked connection");
    assert_eq!(response.status(), 101);
    for message in 0..10 {
        round_trip(&mut socket, &format!("after parking {message}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_https_keep_alive_connection_serves_its_next_request() {
    let site = Site::start("park-https", &["--https-addr", "127.0.0.1:0"]).await;
    let https = site.sluice.https.expect("the HTTPS address");
    let options = ClientOptions {
        trust: None,
        alpn: &[],
        identity: None,
        tls12_only: false,
    };
    let stream = support::tls::connect(https, Some(HOST), &options)
        .await
        .expect("TLS handshake");
    let mut connection = HttpsConnection::new(stream).await.expect("HTTP/1.1");
    assert!(!connection.is_h2());
    for (path, pause) in [
        ("/first", PARKED),
        ("/second", PARKED),
        ("/third", Duration::ZERO),
    ] {
        let reply = connection.get(HOST, path, &[]).await;
        assert!(
            reply
                .as_ref()
                .is_ok_and(|reply| reply.status == 200 && reply.body == path),
            "{path} over the kept-alive TLS connection: {reply:?}"
        );
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_are_closed_at_the_keep_alive_and_first_request_deadlines() {
    let site = Site::start("park-deadlines", &["--header-read-timeout", "3s"]).await;
    let keep_alive = async {
        let mut stream = raw::connect(site.http()).await;
        assert_served(
            &request_on(&mut stream, &get("/once"), 1).await,
            &["/once"],
            "once",
        );
        raw::read_until_closed(&mut stream, Duration::from_secs(8)).await
    };
    let silent = async {
        let mut stream = raw::connect(site.http()).await;
        raw::read_until_closed(&mut stream, Duration::from_secs(8)).await
    };
    let (keep_alive, silent) = tokio::join!(keep_alive, silent);
    println!(
        "closed after: idle keep-alive {:?}, silent {:?}",
        keep_alive.closed_after, silent.closed_after
    );
    // The 3 s deadline, looked at every 250 ms by the budget's watch.
    let in_time = |lived: Option<Duration>| {
        lived.is_some_and(|lived| {
            lived >= Duration::from_millis(2500) && lived <= Duration::from_secs(5)
        })
    };
    for (what, ending) in [("idle keep-alive", &keep_alive), ("silent", &silent)] {
        assert!(
            in_time(ending.closed_after) && ending.received.is_empty(),
            "{what} connection: closed after {:?} (None: still open), received {}",
            ending.closed_after,
            raw::escape(&ending.received)
        );
    }
}

/// A drain closes idle connections at once: parked ones are told to close, so a silent
/// connection (it would park before its first bytes) must not hold up the exit until the
/// drain timeout, as a parked keep-alive connection does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_hold_up_the_drain() {
    let args = ["--drain-timeout", "5s", "--header-read-timeout", "20s"];
    for silent in [false, true] {
        let what = if silent {
            "a silent"
        } else {
            "an idle keep-alive"
        };
        let name = if silent {
            "drain-silent"
        } else {
            "drain-keep-alive"
        };
        let mut site = Site::start(name, &args).await;
        let mut stream = raw::connect(site.http()).await;
        if !silent {
            assert_served(
                &request_on(&mut stream, &get("/once"), 1).await,
                &["/once"],
                what,
            );
        }
        tokio::time::sleep(PARKED).await;
        let stopping = Instant::now();
        let exit = site.sluice.terminate(Duration::from_secs(8));
        let took = stopping.elapsed();
        println!("with {what} connection open, exit {exit:?} after {took:?}");
        assert!(
            exit.is_some() && took < Duration::from_secs(2),
            "with {what} connection open, SIGTERM: exit {exit:?} after {took:?}, not within 2 s"
        );
    }
}
