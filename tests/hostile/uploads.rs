//! Request bodies that fail on the client's side: badly framed, abandoned, cut off, or
//! sent slowly. Each is the client's doing, answered 400 or 408, and never held against
//! the endpoint (before issue 19 six bad chunked POSTs ejected a healthy endpoint for
//! 10 s, and a slow upload ran into the upstream's response timeout as a 504).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Site;
use crate::support::raw::{self, connect};

/// `POST /upload` on the open host with these framing headers, and no body yet.
fn upload_head(framing: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: public.test\r\n{framing}\r\n")
}

/// The first status line's code on `stream`, read within `within`.
async fn status_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<u16> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(read)) => buffer.extend_from_slice(&chunk[..read]),
        }
        if let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") {
            let line = String::from_utf8_lossy(&buffer[..end]).into_owned();
            return line.split(' ').nth(1).and_then(|code| code.parse().ok());
        }
    }
}

/// Fails if the endpoint was ever ejected or Sluice counted a 5xx.
async fn assert_nothing_blamed_on_the_endpoint(site: &Site, what: &str) {
    let metrics = site
        .sluice
        .admin_get("/metrics")
        .await
        .expect("metrics")
        .body;
    let blamed: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            (line.starts_with("sluice_endpoint_ejections_total") && !line.ends_with(" 0"))
                || (line.starts_with("sluice_http_requests_total")
                    && line.contains("status=\"5xx\""))
        })
        .collect();
    assert!(blamed.is_empty(), "{what}: {blamed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_abandoned_uploads_are_the_clients_fault() {
    // Ejection after 2 failures, so any failure counted against the endpoint shows.
    let site = Site::start(
        "uploads",
        &["--eject-after", "2", "--client-body-timeout", "1s"],
    )
    .await;
    for (name, body) in [
        ("negative chunk size", "-5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk without CRLF", "5\r\nhelloXX0\r\n\r\n"),
    ] {
        for _ in 0..3 {
            let request = format!("{}{body}", upload_head("Transfer-Encoding: chunked\r\n"));
            let exchange = raw::exchange(site.http(), request.as_bytes()).await;
            assert_eq!(
                exchange.statuses(),
                [400],
                "{name}: {}",
                exchange.describe()
            );
        }
    }
    // Abandoned: a tenth of the promised body, then silence until the body timeout.
    for _ in 0..3 {
        let mut stream = connect(site.http()).await;
        let head = upload_head("Content-Length: 100\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(&[b'x'; 10]).await.expect("write");
        let started = Instant::now();
        let status = status_within(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(status, Some(408), "an abandoned upload");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "answered at the body timeout (1 s), not the request timeout: {:?}",
            started.elapsed()
        );
    }
    // Cut off: the client goes away mid-body.
    for _ in 0..3 {
        let mut stream = connect(site.http()).await;
        let head = upload_head("Content-Length: 100\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(&[b'x'; 10]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_nothing_blamed_on_the_endpoint(&site, "after 18 failed uploads").await;
    site.assert_still_serves("uploads").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_timeout_does_not_count_the_clients_upload() {
    // The upstream gets 1 s to answer; the client takes about 2 s to send its body, in
    // pieces closer together than the 1 s body timeout. The raw backend answers only once
    // the whole body has arrived.
    let site = Site::start(
        "slow-upload",
        &["--request-timeout", "1s", "--client-body-timeout", "1s"],
    )
    .await;
    let mut stream = connect(site.http()).await;
    let head = upload_head("Content-Length: 50\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(&[b'y'; 10]).await.expect("write");
    }
    let status = status_within(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status, Some(200), "a slow but steady upload");
    let view = site.backend.wait_for_requests(1, Duration::from_secs(2));
    let upload = view
        .requests
        .iter()
        .find(|request| request.target() == "/upload")
        .unwrap_or_else(|| panic!("the upload reached the backend: {}", view.describe()));
    assert_eq!(upload.body, vec![b'y'; 50], "{}", view.describe());
    assert_nothing_blamed_on_the_endpoint(&site, "after a slow upload").await;
}
