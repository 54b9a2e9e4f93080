//! HTTP/2 (h2c with prior knowledge) in raw frames: requests whose pseudo-headers and
//! fields have two readings, fields that would inject lines when downgraded to HTTP/1.1,
//! bodies that lie about their length, rapid reset and CONTINUATION floods.

use std::time::{Duration, Instant};

use crate::cases::{Upstream, body, finish, header, judge_upstream, method, target};
use crate::support::raw::h2::{self, Connection, Outcome};
use crate::support::raw::{View, escape};
use crate::{SMUGGLED, Site};

/// What the client must get on stream 1.
#[derive(Debug, Clone, Copy)]
enum H2Answer {
    Status(u16),
    /// A 4xx status, RST_STREAM, or GOAWAY: the stream is not served.
    Refused,
}

struct H2Case {
    name: &'static str,
    what: &'static str,
    /// The frames sent after the preface.
    frames: Vec<u8>,
    answer: H2Answer,
    upstream: Upstream,
}

impl H2Case {
    fn new(name: &'static str, what: &'static str, frames: Vec<u8>) -> H2Case {
        H2Case {
            name,
            what,
            frames,
            answer: H2Answer::Refused,
            upstream: Upstream::Nothing,
        }
    }

    fn answers(mut self, status: u16) -> H2Case {
        self.answer = H2Answer::Status(status);
        self
    }

    fn reaches(mut self, checks: Vec<crate::cases::Check>) -> H2Case {
        self.upstream = Upstream::Requests(vec![checks]);
        self
    }

    fn reaches_no_complete_request(mut self) -> H2Case {
        self.upstream = Upstream::NoCompleteRequest;
        self
    }
}

/// A GET on stream 1 with the usual pseudo-headers for `authority` and `path`, then
/// `extra` fields, ending the stream.
fn get(authority: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    h2::headers(1, &fields, true)
}

/// Stream 1 with exactly these fields, ending the stream.
fn fields(fields: &[(&str, &str)]) -> Vec<u8> {
    h2::headers(1, fields, true)
}

/// A POST on stream 1 to the open host with `extra` fields, then `data` ending the stream.
fn post(extra: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "public.test"),
        (":path", "/upload"),
    ];
    fields.extend_from_slice(extra);
    let mut frames = h2::headers(1, &fields, false);
    frames.extend(h2::data(1, data, true));
    frames
}

fn cases() -> Vec<H2Case> {
    let pseudo = |method: &'static str, path: &'static str| {
        vec![
            (":method", method),
            (":scheme", "http"),
            (":authority", "public.test"),
            (":path", path),
        ]
    };
    vec![
        H2Case::new(
            "open-host",
            "baseline: an h2 GET to the open host reaches the backend as HTTP/1.1 with its Host",
            get("public.test", "/page", &[]),
        )
        .answers(200)
        .reaches(vec![target("/page"), header("host", "public.test")]),
        H2Case::new(
            "split-cookies-joined",
            "cookie split into fields (RFC 9113 §8.2.3) reaches an HTTP/1.1 upstream as one field, so it cannot read only the first",
            get(
                "public.test",
                "/page",
                &[("cookie", "a=1"), ("cookie", "sid=2"), ("cookie", "c=3")],
            ),
        )
        .answers(200)
        .reaches(vec![target("/page"), header("cookie", "a=1; sid=2; c=3")]),
        H2Case::new(
            "protected-host-without-credentials",
            "the Auth applies over h2",
            get("members.test", "/page", &[]),
        )
        .answers(401),
        H2Case::new(
            "authority-and-host-disagree",
            ":authority names the open host, host the protected one",
            get("public.test", "/page", &[("host", "members.test")]),
        )
        .answers(400),
        H2Case::new(
            "host-and-authority-disagree",
            ":authority names the protected host, host the open one",
            get("members.test", "/page", &[("host", "public.test")]),
        )
        .answers(400),
        H2Case::new(
            "host-without-authority",
            "no :authority, host names the protected host: the Auth applies",
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/page"),
                ("host", "members.test"),
            ]),
        )
        .answers(401),
        H2Case::new(
            "authority-port-not-a-number",
            ":authority members.test:abc",
            get("members.test:abc", "/page", &[]),
        )
        .answers(400),
        H2Case::new(
            "authority-two-ports",
            ":authority members.test:80:80",
            get("members.test:80:80", "/page", &[]),
        ),
        H2Case::new(
            "authority-userinfo",
            ":authority with user information (forbidden in h2)",
            get("public.test@members.test", "/page", &[]),
        ),
        H2Case::new(
            "authority-trailing-dot",
            ":authority MEMBERS.test. is the protected host: the Auth applies",
            get("MEMBERS.test.", "/page", &[]),
        ),
        H2Case::new(
            "path-dot-segment",
            ":path from the open /public into the protected /admin",
            get("members.test", "/public/../admin", &[]),
        )
        .answers(400),
        H2Case::new(
            "path-encoded-dot-segment",
            ":path /public/%2e%2e/admin",
            get("members.test", "/public/%2e%2e/admin", &[]),
        )
        .answers(400),
        H2Case::new(
            "path-backslashes",
            ":path /public\\..\\admin",
            get("members.test", "/public\\..\\admin", &[]),
        ),
        H2Case::new("path-empty", "an empty :path", get("public.test", "", &[])),
        H2Case::new(
            "path-relative",
            "a :path without its leading slash",
            get("members.test", "admin", &[]),
        ),
        H2Case::new(
            "path-absolute-uri",
            "a :path that is an absolute URI naming the protected host",
            get("public.test", "http://members.test/admin", &[]),
        ),
        H2Case::new(
            "value-with-crlf",
            "a field value with CRLF: a second header line once downgraded to HTTP/1.1",
            get("public.test", "/page", &[("x-note", "a\r\nx-injected: 1")]),
        ),
        H2Case::new(
            "value-with-lf",
            "a field value with a bare LF naming a second host",
            get("public.test", "/page", &[("x-note", "a\nhost: members.test")]),
        ),
        H2Case::new(
            "value-with-nul",
            "a NUL in a field value",
            get("public.test", "/page", &[("x-note", "a\0b")]),
        ),
        H2Case::new(
            "path-with-crlf",
            "CRLF in :path: a request line and a header once downgraded",
            get(
                "public.test",
                "/page HTTP/1.1\r\nHost: members.test\r\n\r\nGET /admin",
                &[],
            ),
        ),
        H2Case::new(
            "method-with-spaces",
            "a :method holding a whole request line",
            fields(&pseudo("GET /admin HTTP/1.1\r\nHost: members.test\r\n\r\nGET", "/page")),
        ),
        H2Case::new(
            "name-upper-case",
            "an upper-case field name (malformed in h2)",
            get("public.test", "/page", &[("X-Note", "1")]),
        ),
        H2Case::new(
            "name-with-space",
            "a field name with a space",
            get("public.test", "/page", &[("x note", "1")]),
        ),
        H2Case::new(
            "name-with-colon",
            "a field name with a colon inside: `x-note: 1` as one name",
            get("public.test", "/page", &[("host: members.test\r\nx", "1")]),
        ),
        H2Case::new(
            "connection-field",
            "a connection-specific field (connection)",
            get("public.test", "/page", &[("connection", "keep-alive")]),
        ),
        H2Case::new(
            "transfer-encoding-field",
            "transfer-encoding in h2, which a downgrade would turn into framing",
            get("public.test", "/page", &[("transfer-encoding", "chunked")]),
        ),
        H2Case::new(
            "te-not-trailers",
            "te: gzip (only `trailers` is allowed in h2)",
            get("public.test", "/page", &[("te", "gzip")]),
        ),
        H2Case::new(
            "upgrade-field",
            "upgrade: h2c in h2",
            get("public.test", "/page", &[("upgrade", "h2c")]),
        ),
        H2Case::new(
            "keep-alive-field",
            "keep-alive in h2",
            get("public.test", "/page", &[("keep-alive", "timeout=5")]),
        ),
        H2Case::new(
            "proxy-connection-field",
            "proxy-connection in h2",
            get("public.test", "/page", &[("proxy-connection", "keep-alive")]),
        ),
        H2Case::new(
            "pseudo-after-regular",
            "a pseudo-header after a regular field",
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                ("x-note", "1"),
                (":authority", "members.test"),
                (":path", "/page"),
            ]),
        ),
        H2Case::new(
            "two-paths",
            "two :path fields, one per reading",
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "members.test"),
                (":path", "/public/x"),
                (":path", "/admin"),
            ]),
        ),
        H2Case::new(
            "two-authorities",
            "two :authority fields, open and protected",
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "public.test"),
                (":authority", "members.test"),
                (":path", "/page"),
            ]),
        ),
        H2Case::new(
            "unknown-pseudo",
            "an unknown pseudo-header",
            get("public.test", "/page", &[(":host", "members.test")]),
        ),
        H2Case::new(
            "status-in-request",
            "a response pseudo-header in a request",
            get("public.test", "/page", &[(":status", "200")]),
        ),
        H2Case::new(
            "missing-method",
            "no :method",
            fields(&[(":scheme", "http"), (":authority", "public.test"), (":path", "/page")]),
        ),
        H2Case::new(
            "missing-path",
            "no :path on a GET",
            fields(&[(":method", "GET"), (":scheme", "http"), (":authority", "public.test")]),
        ),
        H2Case::new(
            "content-length-below-data",
            "content-length: 5 with 45 bytes of DATA: the rest would be a second request to a backend trusting it",
            post(&[("content-length", "5")], format!("hello{SMUGGLED}").as_bytes()),
        )
        .reaches_no_complete_request(),
        H2Case::new(
            "content-length-above-data",
            "content-length: 50 with 5 bytes of DATA",
            post(&[("content-length", "50")], b"hello"),
        )
        .reaches_no_complete_request(),
        H2Case::new(
            "request-in-body",
            "H2.TE-style: a request in the DATA of a body without content-length is a body, framed as one",
            post(&[], SMUGGLED.as_bytes()),
        )
        .answers(200)
        .reaches(vec![method("POST"), target("/upload"), body(SMUGGLED)]),
        H2Case::new(
            "request-in-body-with-length",
            "the same with a true content-length",
            post(&[("content-length", &SMUGGLED.len().to_string())], SMUGGLED.as_bytes()),
        )
        .answers(200)
        .reaches(vec![target("/upload"), body(SMUGGLED)]),
        H2Case::new(
            "connect-to-protected-host",
            "a plain CONNECT to the protected host: no tunnels through an ingress",
            fields(&[(":method", "CONNECT"), (":authority", "members.test:443")]),
        ),
        H2Case::new(
            "websocket-connect-without-credentials",
            "RFC 8441 WebSocket CONNECT to the protected host without credentials",
            h2::headers(
                1,
                &[
                    (":method", "CONNECT"),
                    (":protocol", "websocket"),
                    (":scheme", "http"),
                    (":authority", "members.test"),
                    (":path", "/socket"),
                    ("sec-websocket-version", "13"),
                ],
                false,
            ),
        )
        .answers(401),
    ]
}

fn judge_answer(answer: H2Answer, outcome: &Outcome) -> Result<(), String> {
    let fits = match (answer, outcome) {
        (H2Answer::Status(wanted), Outcome::Response { status, .. }) => *status == wanted,
        (H2Answer::Refused, Outcome::Response { status, .. }) => (400..500).contains(status),
        (H2Answer::Refused, Outcome::Reset(_) | Outcome::GoAway { .. }) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("the client should get {answer:?}"))
    }
}

/// What the client got, for messages: the outcome without the response's other fields.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Response { status, .. } => format!("the client got status {status}"),
        other => format!("the client got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_with_two_readings_are_refused() {
    let site = Site::start("h2", &[]).await;
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        site.backend.reset();
        let mut connection = Connection::open(site.http()).await;
        let sent = connection.send(&case.frames).await;
        let outcome = connection.outcome(1, Duration::from_secs(5)).await;
        let view = site
            .backend
            .settle(crate::cases::BACKEND_QUIET, Duration::from_secs(2));
        let verdict = sent
            .map_err(|error| format!("the frames could not be sent: {error}"))
            .and_then(|()| judge_answer(case.answer, &outcome))
            .and_then(|()| judge_upstream(&case.upstream, &view));
        match verdict {
            Ok(()) => println!(
                "h2/{}: ok: {}; {}",
                case.name,
                describe(&outcome),
                view.describe()
            ),
            Err(reason) => {
                let failure = format!(
                    "h2/{} ({}):\n  expected: {reason}\n  sent: {}\n  {}\n  {}",
                    case.name,
                    case.what,
                    escape(&case.frames),
                    describe(&outcome),
                    view.describe()
                );
                println!("{failure}");
                failures.push(failure);
            }
        }
    }
    finish("h2", cases.len(), &failures);
    site.assert_still_serves("h2").await;
}

/// At most this many of the reset requests may reach the backend: a reset stream is
/// abandoned, so only the few that were already on their way when their reset arrived.
const RAPID_RESET_BACKEND_BOUND: usize = 50;
/// Resident memory Sluice may grow by, in KiB, while a flood is thrown at it.
const FLOOD_MEMORY_BOUND_KIB: u64 = 64 * 1024;

/// Rapid reset (CVE-2023-44487): a thousand requests, each cancelled at once. Either the
/// connection is closed with GOAWAY (ENHANCE_YOUR_CALM), or it is served and stays bounded;
/// either way the backend gets only a handful of the cancelled requests, and Sluice keeps
/// serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_bounded() {
    let site = Site::start("h2-rapid-reset", &[]).await;
    let before = site.rss_kib();
    site.backend.reset();
    let mut connection = Connection::open(site.http()).await;
    let mut burst = Vec::new();
    for n in 0..1000u32 {
        let stream = 1 + 2 * n;
        burst.extend(h2::headers(
            stream,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "public.test"),
                (":path", "/rapid-reset"),
            ],
            true,
        ));
        burst.extend(h2::rst_stream(stream, h2::CANCEL));
    }
    let sent = connection.send(&burst).await;
    let (goaway, closed, _) = connection.drain(Duration::from_secs(3)).await;
    let view = site
        .backend
        .settle(Duration::from_millis(300), Duration::from_secs(5));
    let grown = site.rss_kib().saturating_sub(before);
    println!(
        "h2-rapid-reset: sent: {sent:?}; GOAWAY: {goaway:?}; closed: {closed}; the backend got {} request(s); Sluice grew by {grown} KiB",
        view.requests.len()
    );
    if let Some((_, code)) = goaway {
        assert!(
            matches!(
                code,
                h2::ENHANCE_YOUR_CALM | h2::NO_ERROR | h2::PROTOCOL_ERROR
            ),
            "GOAWAY with code {code:#x}"
        );
    }
    assert!(
        view.requests.len() <= RAPID_RESET_BACKEND_BOUND,
        "{} of 1000 reset requests reached the backend",
        view.requests.len()
    );
    assert!(grown < FLOOD_MEMORY_BOUND_KIB, "Sluice grew by {grown} KiB");
    assert_only_targets(&view, "/rapid-reset");
    site.assert_still_serves("h2-rapid-reset").await;
}

/// CONTINUATION flood: a header block that never ends (HEADERS without END_HEADERS, then
/// CONTINUATION frames of 16 KiB for ever). Sluice must cut the connection off long before
/// the 16 MiB the client is ready to send, without buffering it, and nothing may reach the
/// backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off() {
    let site = Site::start("h2-continuation", &[]).await;
    let before = site.rss_kib();
    site.backend.reset();
    let mut connection = Connection::open(site.http()).await;
    let start = h2::encode(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "public.test"),
        (":path", "/flood"),
    ]);
    let mut first = h2::frame(h2::HEADERS, h2::END_STREAM, 1, &start);
    // One field per frame, a little under the default 16 KiB frame size.
    let filler = "a".repeat(16 * 1024 - 64);
    let block = h2::encode(&[("x-flood", &filler)]);
    let continuation = h2::continuation(1, &block, false);
    let mut sent = 0usize;
    let started = Instant::now();
    let mut ended = None;
    'flood: for _ in 0..256 {
        let mut batch = std::mem::take(&mut first);
        for _ in 0..4 {
            batch.extend_from_slice(&continuation);
        }
        if let Err(error) = connection.send(&batch).await {
            ended = Some(format!("writing failed after {sent} bytes: {error}"));
            break 'flood;
        }
        sent += batch.len();
        if let h2::Event::Frame(frame) = connection.next_frame(Duration::from_millis(1)).await
            && frame.kind == h2::GOAWAY
        {
            ended = Some(format!("GOAWAY after {sent} bytes"));
            break 'flood;
        }
        if let h2::Event::Closed = connection.next_frame(Duration::ZERO).await {
            ended = Some(format!("closed after {sent} bytes"));
            break 'flood;
        }
    }
    let (goaway, closed, _) = connection.drain(Duration::from_secs(2)).await;
    let grown = site.rss_kib().saturating_sub(before);
    println!(
        "h2-continuation: {ended:?} in {:?}; GOAWAY: {goaway:?}; closed: {closed}; Sluice grew by {grown} KiB",
        started.elapsed()
    );
    assert!(
        ended.is_some() || goaway.is_some() || closed,
        "Sluice took {sent} bytes of one header block and kept the connection"
    );
    assert!(grown < FLOOD_MEMORY_BOUND_KIB, "Sluice grew by {grown} KiB");
    site.backend
        .assert_nothing(Duration::from_millis(100), "the flooded stream");
    site.assert_still_serves("h2-continuation").await;
}

/// Panics if the backend got a request for another target than `wanted`.
fn assert_only_targets(view: &View, wanted: &str) {
    for request in &view.requests {
        assert_eq!(request.target(), wanted, "{}", view.describe());
    }
}

/// The HPACK decoder against the examples of RFC 7541 Appendix C.4 (requests with
/// Huffman strings and the dynamic table) and a real answer from Sluice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_decoder_reads_the_rfc_examples() {
    use crate::support::raw::h2::hpack::{CODE_LENGTHS, Decoder, codes, huffman_decode};
    let kraft: f64 = CODE_LENGTHS
        .iter()
        .map(|&l| 0.5f64.powi(i32::from(l)))
        .sum();
    assert!(
        (kraft - 1.0).abs() < 1e-12,
        "a complete prefix code: {kraft}"
    );
    assert_eq!(codes()[256], (0x3fff_ffff, 30), "EOS is thirty ones");
    let hex = |text: &str| -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    };
    assert_eq!(
        huffman_decode(&hex("f1e3c2e5f23a6ba0ab90f4ff")).unwrap(),
        b"www.example.com"
    );
    let mut decoder = Decoder::new();
    let text = |fields: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<(String, String)> {
        fields
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        text(
            decoder
                .decode(&hex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
                .unwrap()
        ),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ])
    );
    assert_eq!(
        text(decoder.decode(&hex("828684be5886a8eb10649cbf")).unwrap()),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ])
    );
    assert_eq!(
        text(
            decoder
                .decode(&hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
                .unwrap()
        ),
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ])
    );

    // Sluice's own answers, several on one connection so its dynamic table is used.
    let site = Site::start("h2-hpack", &[]).await;
    let mut connection = Connection::open(site.http()).await;
    for stream in [1u32, 3, 5] {
        connection
            .send(&h2::headers(
                stream,
                &[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":authority", "members.test"),
                    (":path", "/page"),
                ],
                true,
            ))
            .await
            .unwrap();
        match connection.outcome(stream, Duration::from_secs(5)).await {
            Outcome::Response { status, headers } => {
                assert_eq!(status, 401);
                let challenge = headers
                    .iter()
                    .find(|(name, _)| name == "www-authenticate")
                    .map(|(_, value)| value.as_str());
                assert_eq!(
                    challenge,
                    Some("Basic realm=\"members\", charset=\"UTF-8\""),
                    "{headers:?}"
                );
            }
            other => panic!("stream {stream}: {other:?}"),
        }
    }
    site.backend
        .assert_nothing(Duration::from_millis(50), "401s only");
}
