//! Slowloris on the traffic listener: header bytes trickled in one at a time, or half a
//! head and then silence, are cut off at `--header-read-timeout` (1 s here), nothing of
//! them reaches the backend, and other clients are served meanwhile.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::Site;
use crate::support::raw;

/// One byte every 200 ms: the whole request would take about 12 s.
const PACE: Duration = Duration::from_millis(200);
/// The cut-off must come by then: the 1 s timeout plus generous slack.
const CUT_OFF_BY: Duration = Duration::from_secs(3);

const TRICKLED: &str = "GET /slow HTTP/1.1\r\nHost: public.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_at_the_header_read_timeout() {
    let _timed = crate::TIMED.read().await;
    let site = Site::start("slow", &[]).await;
    site.backend.reset();
    let addr = site.http();
    let trickle =
        async { raw::exchange_on(raw::connect(addr).await, TRICKLED.as_bytes(), Some(PACE)).await };
    // Another client, served while the slow one is still trickling.
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        raw::exchange(
            addr,
            b"GET /meanwhile HTTP/1.1\r\nHost: public.test\r\n\r\n",
        )
        .await
    };
    let (slow, other) = tokio::join!(trickle, meanwhile);
    let view = site
        .backend
        .settle(Duration::from_millis(100), Duration::from_secs(2));
    println!(
        "slow/trickled-headers: {}; the other client: {}; {}",
        slow.describe(),
        other.describe(),
        view.describe()
    );
    let cut_after = slow.closed_after.unwrap_or_else(|| {
        panic!(
            "the trickling connection was never closed: {}",
            slow.describe()
        )
    });
    assert!(
        cut_after <= CUT_OFF_BY,
        "cut off after {cut_after:?}, not by {CUT_OFF_BY:?}"
    );
    assert!(
        slow.unsent > 0,
        "the whole request got through before the cut-off: {}",
        slow.describe()
    );
    assert!(
        slow.statuses().iter().all(|status| *status == 408),
        "the slow client gets at most a 408: {}",
        slow.describe()
    );
    assert_eq!(other.statuses(), [200], "{}", other.describe());
    let targets: Vec<&str> = view.requests.iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/meanwhile"], "{}", view.describe());
    assert!(
        view.fragments.is_empty(),
        "no fragment of the slow request reaches the backend: {}",
        view.describe()
    );

    // The same for a second request trickled on a kept-alive connection after a first
    // one was served at once.
    site.backend.reset();
    let first = b"GET /first HTTP/1.1\r\nHost: public.test\r\n\r\n";
    let mut connection = raw::connect(addr).await;
    tokio::time::timeout(Duration::from_secs(5), connection.write_all(first))
        .await
        .expect("write within 5 s")
        .expect("write");
    let kept_alive = raw::exchange_on(connection, TRICKLED.as_bytes(), Some(PACE)).await;
    let view = site
        .backend
        .settle(Duration::from_millis(100), Duration::from_secs(2));
    println!(
        "slow/trickled-after-keep-alive: {}; {}",
        kept_alive.describe(),
        view.describe()
    );
    assert!(kept_alive.closed, "{}", kept_alive.describe());
    assert!(kept_alive.unsent > 0, "{}", kept_alive.describe());
    assert_eq!(
        kept_alive.statuses().first(),
        Some(&200),
        "{}",
        kept_alive.describe()
    );
    let targets: Vec<&str> = view.requests.iter().map(|r| r.target()).collect();
    assert_eq!(
        targets,
        ["/first"],
        "only the first request reaches the backend: {}",
        view.describe()
    );

    // Headers that stop coming: half a request, then silence.
    site.backend.reset();
    let stalled = raw::closed_within(
        addr,
        b"GET /stalled HTTP/1.1\r\nHost: public.test\r\n",
        Duration::from_secs(5),
    )
    .await;
    println!("slow/stalled-headers: closed after {stalled:?}");
    assert!(
        stalled.is_some_and(|after| after <= CUT_OFF_BY),
        "half a request and silence: closed after {stalled:?}, not by {CUT_OFF_BY:?}"
    );
    site.backend
        .assert_nothing(Duration::from_millis(100), "the stalled request");
    site.assert_still_serves("slow").await;
}
