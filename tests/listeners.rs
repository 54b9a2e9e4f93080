//! The real `sluice` binary's traffic and admin listeners against hostile clients on
//! loopback: connections that say nothing, half an HTTP/2 preface, headers one byte at a
//! time, a flood of admin connections, and an HTTP/2 client that ignores the GOAWAY.
//! Timeouts are set short by flag (`--header-read-timeout 1s`) so every test is over in
//! seconds.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::sockets::{
    ACK, Ending, GOAWAY, H2_PREFACE, HEADERS, PING, h2_get, h2_handshake,
    read_h2_frames_until_closed, read_until_closed, trickle,
};
use support::{INGRESS_CLASS, ManifestDir, Sluice};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Sluice with no routes and a one-second header-read timeout. The idle timeout is 30 s
/// unless given: long enough that only the header timeout can explain a close.
async fn start(name: &str, idle: Option<&str>, extra: &[&str]) -> (Sluice, ManifestDir) {
    let dir = ManifestDir::new(name);
    dir.write("class.yaml", INGRESS_CLASS);
    let idle = idle.unwrap_or("30s");
    let mut args = vec!["--header-read-timeout", "1s", "--client-idle-timeout", idle];
    args.extend_from_slice(extra);
    let sluice = Sluice::start(&dir.0, &args).await;
    (sluice, dir)
}

/// Asserts that the server closed a connection within a little over the header timeout
/// of when it opened, and not long before it.
fn closed_at_header_timeout(what: &str, opened: Instant, ending: &Ending) {
    assert!(
        ending.closed_after.is_some(),
        "{what}: still open {:?} after it opened",
        opened.elapsed()
    );
    let lived = opened.elapsed();
    assert!(
        lived >= HEADER_TIMEOUT.mul_f32(0.8) && lived < HEADER_TIMEOUT * 3,
        "{what}: closed after {lived:?}, not at the header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_partial_http2_prefaces_are_closed_at_the_header_timeout() {
    let (sluice, _dir) = start("silent", None, &[]).await;
    let listeners = [("traffic", sluice.http), ("admin", sluice.admin)];
    let mut clients = Vec::new();
    let opened = Instant::now();
    for (listener, addr) in listeners {
        let silent = TcpStream::connect(addr).await.unwrap();
        clients.push((format!("silent {listener} connection"), silent));
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(&H2_PREFACE[..10]).await.unwrap();
        clients.push((format!("partial preface on {listener}"), partial));
    }
    for (what, stream) in &mut clients {
        let ending = read_until_closed(stream, Duration::from_secs(4)).await;
        closed_at_header_timeout(what, opened, &ending);
        assert!(ending.received.is_empty(), "{what}: {:?}", ending.received);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trickled_a_byte_at_a_time_are_cut_at_the_header_timeout() {
    let (sluice, _dir) = start("slowloris", None, &[]).await;
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: admin\r\nX-Slow: {}",
        "a".repeat(40)
    );
    let slowloris = |addr: SocketAddr| {
        let request = request.clone();
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let opened = Instant::now();
            // 70 bytes, 200 ms apart: 14 s if nothing stopped it.
            let ending = trickle(
                &mut stream,
                request.as_bytes(),
                Duration::from_millis(200),
                Duration::from_secs(5),
            )
            .await;
            (opened, ending)
        }
    };
    let (admin, traffic) = tokio::join!(slowloris(sluice.admin), slowloris(sluice.http));
    for (what, (opened, ending)) in [("admin", admin), ("traffic", traffic)] {
        closed_at_header_timeout(&format!("slowloris on {what}"), opened, &ending);
        let answer = String::from_utf8_lossy(&ending.received);
        assert!(!answer.contains(" 200 "), "{what} answered: {answer}");
    }
    // Well-behaved clients were never affected.
    assert_eq!(sluice.admin_get("/readyz").await.unwrap().status, 200);
}

/// The cap's semantics: beyond `--admin-max-connections` open connections, a new one is
/// closed as soon as it is accepted, before anything is read, and counted. Nothing is
/// queued. A held slot frees when its connection ends; one that sends nothing ends at the
/// header-read timeout, so a probe gets through within that timeout of the flood, and
/// traffic is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_beyond_the_cap_are_refused_and_probes_answer_after_the_flood() {
    let (sluice, _dir) = start("admin-flood", None, &["--admin-max-connections", "8"]).await;
    let flood_began = Instant::now();
    let mut endings = Vec::new();
    for _ in 0..58 {
        let mut stream = TcpStream::connect(sluice.admin).await.unwrap();
        endings.push(tokio::spawn(async move {
            read_until_closed(&mut stream, Duration::from_secs(3)).await
        }));
    }
    // Traffic shares nothing with the admin listener's slots.
    let reply = support::send(sluice.http, "GET", "nothing.test", "/", &[], Bytes::new())
        .await
        .expect("traffic served during the flood");
    assert_eq!(reply.status, 404);

    support::eventually(
        Duration::from_secs(4),
        "/readyz after the flood",
        async || {
            sluice
                .admin_get("/readyz")
                .await
                .is_ok_and(|reply| reply.status == 200)
        },
    )
    .await;
    let probe_answered = flood_began.elapsed();
    assert!(
        probe_answered < HEADER_TIMEOUT * 2,
        "/readyz answered only {probe_answered:?} after the flood began"
    );

    // Each connection was either refused at once or held until the header timeout.
    let (mut refused, mut held) = (0, 0);
    for ending in endings {
        let ending = ending.await.unwrap();
        let closed_after = ending
            .closed_after
            .expect("every flood connection is closed");
        assert!(ending.received.is_empty(), "{:?}", ending.received);
        if closed_after < HEADER_TIMEOUT / 2 {
            refused += 1;
        } else {
            assert!(
                closed_after >= HEADER_TIMEOUT.mul_f32(0.8),
                "{closed_after:?}"
            );
            held += 1;
        }
    }
    println!(
        "flood of 58: {refused} refused at once, {held} held until the header timeout; \
         /readyz answered {probe_answered:?} after the flood began"
    );
    assert!(held <= 8, "{held} connections held with a cap of 8");
    assert!(refused >= 50, "only {refused} of 58 refused at once");
    let counted = sluice
        .metric("sluice_admin_connections_refused_total")
        .await
        .unwrap_or(0.0);
    assert!(counted >= 50.0, "refusals counted: {counted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_ignores_the_goaway_ping_is_dropped() {
    let (sluice, _dir) = start("h2-goaway", Some("2s"), &[]).await;

    // Traffic: the SETTINGS exchange and then silence. At the header timeout (1 s) the
    // server sends GOAWAY and PING; the PING is never answered, and one header timeout
    // later the connection is dropped.
    let mut traffic = TcpStream::connect(sluice.http).await.unwrap();
    h2_handshake(&mut traffic).await;
    let silent_since = Instant::now();
    // Admin: one request (its answer read), then silence: idle after 2 s, GOAWAY and PING,
    // dropped one header timeout later.
    let mut admin = TcpStream::connect(sluice.admin).await.unwrap();
    h2_handshake(&mut admin).await;
    admin.write_all(&h2_get("/healthz")).await.unwrap();

    let reading_from = silent_since.elapsed();
    let within = Duration::from_secs(6);
    let ((traffic_frames, traffic_closed), (admin_frames, admin_closed)) = tokio::join!(
        read_h2_frames_until_closed(&mut traffic, within),
        read_h2_frames_until_closed(&mut admin, within),
    );
    // Counted from when the connections fell silent.
    let traffic_lived = traffic_closed.map(|closed| reading_from + closed);
    let admin_lived = admin_closed.map(|closed| reading_from + closed);

    let goaway_and_ping = |frames: &[support::sockets::Frame]| {
        frames.iter().any(|frame| frame.kind == GOAWAY)
            && frames
                .iter()
                .any(|frame| frame.kind == PING && frame.flags & ACK == 0)
    };
    assert!(goaway_and_ping(&traffic_frames), "{traffic_frames:?}");
    println!(
        "h2 ignoring the GOAWAY PING: traffic dropped after {traffic_lived:?}, admin after {admin_lived:?}"
    );
    let Some(traffic_lived) = traffic_lived else {
        panic!("traffic: a connection that ignored the GOAWAY was kept open: {traffic_frames:?}");
    };
    assert!(
        traffic_lived >= Duration::from_millis(1700) && traffic_lived < Duration::from_secs(4),
        "traffic: dropped {traffic_lived:?} after the handshake"
    );

    assert!(
        admin_frames
            .iter()
            .any(|frame| frame.kind == HEADERS && frame.stream == 1),
        "admin: no answer to /healthz: {admin_frames:?}"
    );
    assert!(goaway_and_ping(&admin_frames), "{admin_frames:?}");
    let Some(admin_lived) = admin_lived else {
        panic!("admin: a connection that ignored the GOAWAY was kept open: {admin_frames:?}");
    };
    assert!(
        admin_lived >= Duration::from_millis(2700) && admin_lived < Duration::from_secs(5),
        "admin: dropped {admin_lived:?} after its request"
    );
}
