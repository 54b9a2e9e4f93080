//! An idle-connection flood (issue 29): a client opens connections at a fast rate, a
//! third of them silent and the rest idle after one request, up to and far past
//! `--max-connections`, and holds every one. At the cap each new connection closes the one
//! idle longest (or is refused, with none idle), so the flood only ever holds the cap's
//! worth; meanwhile a well-behaved client is served every time, and Sluice's memory stays
//! bounded. The header-read
//! timeout is 30 s here, so that only the cap can explain a flood connection closing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Site;
use crate::support::raw;

const CAP: usize = 200;
/// Six times the cap: 1,200 sockets here and as many in Sluice over the flood. Kept this
/// small because the suite's other cases run beside it on two cores, and some of them
/// time their answers.
const FLOOD: usize = 1200;
/// How much Sluice's resident memory may grow over the flood. Held connections cost
/// little once parked (a flood of 3,000 silent ones grows a debug build by about 4 MiB);
/// what grows is the burst of requests, proxied while their connections are open: hyper's
/// buffers on both sides, an upstream connection each, the request's state. The cap bounds
/// those to its size at a time; with a cap of 500 and 3,000 connections a debug build grew
/// by 15 to 60 MiB. 96 MiB leaves room for a slower scheduler.
const RSS_GROWTH_KIB: u64 = 96 * 1024;

/// The flood's request, on the open host; answered by the backend.
const FLOOD_REQUEST: &[u8] = b"GET /flood HTTP/1.1\r\nHost: public.test\r\n\r\n";
const WELL_BEHAVED: &[u8] =
    b"GET /well-behaved HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n";

/// Open client connections, all listeners and protocols together.
async fn open_connections(site: &Site) -> f64 {
    let Ok(reply) = site.sluice.admin_get("/metrics").await else {
        return f64::NAN;
    };
    reply
        .body
        .lines()
        .filter(|line| line.starts_with("sluice_open_connections{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether Sluice has closed `stream`: read (whatever answer it holds) until the end of
/// the stream or an error, within `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, reading).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_past_the_cap_is_held_to_it_while_others_are_served() {
    let _alone = crate::TIMED.write().await;
    let site = Site::start(
        "connections-flood",
        &["--max-connections", "200", "--header-read-timeout", "30s"],
    )
    .await;
    site.assert_still_serves("connections (before the flood)")
        .await;
    let start_kib = site.rss_kib();
    let addr = site.http();
    let flooding = AtomicBool::new(true);

    let flood = async {
        let began = Instant::now();
        let mut held = Vec::with_capacity(FLOOD);
        for index in 0..FLOOD {
            let mut stream = raw::connect(addr).await;
            if index % 3 != 0 {
                // A write the server closed first is as good: the flood does not care.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(FLOOD_REQUEST))
                        .await;
            }
            held.push(stream);
            // Bursts of 100, 20 ms apart: 5,000 connections a second at most, so that
            // the well-behaved client makes a few requests during the flood.
            if index % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let took = began.elapsed();
        // Let the last ones be answered and the last room be made.
        tokio::time::sleep(Duration::from_millis(500)).await;
        flooding.store(false, Ordering::SeqCst);
        (held, took)
    };
    let well_behaved = async {
        let mut failures = Vec::new();
        let mut served = 0;
        while flooding.load(Ordering::SeqCst) {
            let exchange = raw::exchange(addr, WELL_BEHAVED).await;
            if exchange.statuses() == [200] {
                served += 1;
            } else {
                failures.push(exchange.describe());
            }
        }
        (served, failures)
    };
    let watch = async {
        let (mut peak_kib, mut peak_open) = (0, 0.0f64);
        while flooding.load(Ordering::SeqCst) {
            peak_kib = peak_kib.max(site.rss_kib());
            peak_open = peak_open.max(open_connections(&site).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (peak_kib, peak_open)
    };
    let ((mut held, took), (served, failures), (peak_kib, peak_open)) =
        tokio::join!(flood, well_behaved, watch);

    let closed = join_all(
        held.iter_mut()
            .map(|stream| closed_by_server(stream, Duration::from_secs(1))),
    )
    .await;
    let still_open = closed.iter().filter(|closed| !**closed).count();
    let silent_open = closed
        .iter()
        .enumerate()
        .filter(|(index, closed)| index % 3 == 0 && !**closed)
        .count();
    let shed = async |reason: &str| {
        let series = format!("sluice_connections_shed_total{{reason=\"{reason}\"}}");
        site.sluice.metric(&series).await.unwrap_or(0.0)
    };
    let (shed_idle, shed_full) = (shed("idle").await, shed("full").await);
    let open_now = open_connections(&site).await;
    println!(
        "connections/flood: {FLOOD} connections in {took:?}; {still_open} still open \
         ({silent_open} of them silent), {open_now} open in Sluice (peak {peak_open}), \
         {shed_idle} shed idle and {shed_full} refused full; the well-behaved client \
         served {served} times, failed {}; RSS {start_kib} KiB, peak {peak_kib} KiB",
        failures.len()
    );
    let mut problems = Vec::new();
    if !failures.is_empty() || served < 5 {
        problems.push(format!(
            "the well-behaved client during the flood: {served} served, failures: {failures:?}"
        ));
    }
    if peak_kib > start_kib + RSS_GROWTH_KIB {
        problems.push(format!(
            "RSS grew from {start_kib} KiB to {peak_kib} KiB, more than {RSS_GROWTH_KIB} KiB"
        ));
    }
    if still_open > CAP {
        problems.push(format!(
            "{still_open} flood connections still open ({silent_open} of them silent), more \
             than the cap of {CAP}; Sluice counts {open_now} open"
        ));
    }
    // Every flood connection beyond the cap either made room by closing one idle longer,
    // or, with none idle (none read yet), was refused.
    if shed_idle < 1.0 || shed_idle + shed_full < (FLOOD - CAP) as f64 {
        problems.push(format!(
            "{shed_idle} shed idle and {shed_full} refused full, for {FLOOD} connections"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(held);
    site.assert_still_serves("connections").await;
}
