//! The traffic and admin listeners against clients that hold connections open: connections
//! that say nothing, half an HTTP/2 preface, headers one byte at a time, a flood of admin
//! connections, and an HTTP/2 client that ignores the GOAWAY. The header-read timeout is
//! 1 s (the site's default), so every case is over in seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::Site;
use crate::support::raw::h2::{self, Connection};
use crate::support::raw::{self, Ending};
use crate::support::{self, INGRESS_CLASS, ManifestDir, Sluice};

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// An idle timeout long enough that only the header timeout can explain a close.
const LONG_IDLE: [&str; 2] = ["--client-idle-timeout", "30s"];

/// Sluice with no routes at all, so that traffic can only get Sluice's own 404, and the
/// site's header-read timeout.
async fn start_without_routes(name: &str, extra: &[&str]) -> (Sluice, ManifestDir) {
    let dir = ManifestDir::new(&format!("hostile-{name}"));
    dir.write("class.yaml", INGRESS_CLASS);
    let mut args = vec!["--header-read-timeout", "1s"];
    args.extend_from_slice(&LONG_IDLE);
    args.extend_from_slice(extra);
    let sluice = Sluice::start(&dir.0, &args).await;
    (sluice, dir)
}

/// Asserts that the server closed a connection `lived` after it opened (`None`: still
/// open at the end of the wait), a little over the header timeout and not long before it.
fn assert_closed_at_header_timeout(what: &str, lived: Option<Duration>) {
    let Some(lived) = lived else {
        panic!("{what}: still open at the end of the wait");
    };
    assert!(
        lived >= HEADER_TIMEOUT.mul_f32(0.8) && lived < HEADER_TIMEOUT * 3,
        "{what}: closed after {lived:?}, not at the header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_partial_http2_prefaces_are_closed_at_the_header_timeout() {
    let _timed = crate::TIMED.read().await;
    let site = Site::start("listeners-silent", &LONG_IDLE).await;
    let listeners = [("traffic", site.http()), ("admin", site.sluice.admin)];
    let mut clients = Vec::new();
    let opened = Instant::now();
    for (listener, addr) in listeners {
        let silent = raw::connect(addr).await;
        clients.push((format!("silent {listener} connection"), silent));
        let mut partial = raw::connect(addr).await;
        partial.write_all(&h2::PREFACE[..10]).await.unwrap();
        clients.push((format!("partial preface on {listener}"), partial));
    }
    for (what, stream) in &mut clients {
        let ending = raw::read_until_closed(stream, Duration::from_secs(4)).await;
        assert_closed_at_header_timeout(what, ending.closed_after.map(|_| opened.elapsed()));
        assert!(ending.received.is_empty(), "{what}: {:?}", ending.received);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trickled_a_byte_at_a_time_are_cut_at_the_header_timeout() {
    let _timed = crate::TIMED.read().await;
    let site = Site::start("listeners-slowloris", &LONG_IDLE).await;
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: admin\r\nX-Slow: {}",
        "a".repeat(40)
    );
    // 70 bytes, 200 ms apart: 14 s if nothing stopped it.
    let slowloris = async |addr: SocketAddr| {
        let stream = raw::connect(addr).await;
        raw::exchange_on(stream, request.as_bytes(), Some(Duration::from_millis(200))).await
    };
    let (admin, traffic) = tokio::join!(slowloris(site.sluice.admin), slowloris(site.http()));
    for (what, slow) in [("admin", admin), ("traffic", traffic)] {
        assert_closed_at_header_timeout(&format!("slowloris on {what}"), slow.closed_after);
        let answered = slow.statuses().contains(&200)
            || String::from_utf8_lossy(&slow.trailing).contains(" 200 ");
        assert!(!answered, "{what} answered: {}", slow.describe());
    }
    // Well-behaved clients were never affected.
    assert_eq!(site.sluice.admin_get("/readyz").await.unwrap().status, 200);
}

/// The cap's semantics: beyond `--admin-max-connections` open connections, a new one is
/// closed as soon as it is accepted, before anything is read, and counted. Nothing is
/// queued. A held slot frees when its connection ends; one that sends nothing ends at the
/// header-read timeout, so a probe gets through within that timeout of the flood, and
/// traffic is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_beyond_the_cap_are_refused_and_probes_answer_after_the_flood() {
    let _timed = crate::TIMED.read().await;
    let (sluice, _dir) =
        start_without_routes("listeners-admin-flood", &["--admin-max-connections", "8"]).await;
    let flood_began = Instant::now();
    let mut endings = Vec::new();
    for _ in 0..58 {
        let mut stream = raw::connect(sluice.admin).await;
        endings.push(tokio::spawn(async move {
            raw::read_until_closed(&mut stream, Duration::from_secs(3)).await
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
        let Ending {
            closed_after,
            received,
        } = ending.await.unwrap();
        let closed_after = closed_after.expect("every flood connection is closed");
        assert!(received.is_empty(), "{received:?}");
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

/// Opens an HTTP/2 connection by prior knowledge, completes the SETTINGS exchange, and
/// from then on answers nothing, PINGs included.
async fn quiet_h2(addr: SocketAddr) -> Connection {
    let mut connection = Connection::open(addr).await;
    connection.settings_exchanged().await;
    connection.answer_nothing();
    connection
}

/// The frames read (answering none) until the server closes the connection or `within`
/// passes, and when it closed if it did.
async fn frames_until_closed(
    connection: &mut Connection,
    within: Duration,
) -> (Vec<h2::Frame>, Option<Duration>) {
    let started = Instant::now();
    let (_, closed, frames) = connection.drain(within).await;
    (frames, closed.then(|| started.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_ignores_the_goaway_ping_is_dropped() {
    let _timed = crate::TIMED.read().await;
    let site = Site::start("listeners-h2-goaway", &["--client-idle-timeout", "2s"]).await;

    // Traffic: the SETTINGS exchange and then silence. At the header timeout (1 s) the
    // server sends GOAWAY and PING; the PING is never answered, and one header timeout
    // later the connection is dropped.
    let mut traffic = quiet_h2(site.http()).await;
    let silent_since = Instant::now();
    // Admin: one request (its answer read), then silence: idle after 2 s, GOAWAY and PING,
    // dropped one header timeout later.
    let mut admin = quiet_h2(site.sluice.admin).await;
    let healthz = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", "/healthz"),
    ];
    admin
        .send(&h2::headers(1, &healthz, true))
        .await
        .expect("send GET /healthz");

    let reading_from = silent_since.elapsed();
    let within = Duration::from_secs(6);
    let ((traffic_frames, traffic_closed), (admin_frames, admin_closed)) = tokio::join!(
        frames_until_closed(&mut traffic, within),
        frames_until_closed(&mut admin, within),
    );
    // Counted from when the connections fell silent.
    let traffic_lived = traffic_closed.map(|closed| reading_from + closed);
    let admin_lived = admin_closed.map(|closed| reading_from + closed);

    let goaway_and_ping = |frames: &[h2::Frame]| {
        frames.iter().any(|frame| frame.kind == h2::GOAWAY)
            && frames
                .iter()
                .any(|frame| frame.kind == h2::PING && frame.flags & h2::ACK == 0)
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
            .any(|frame| frame.kind == h2::HEADERS && frame.stream == 1),
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
