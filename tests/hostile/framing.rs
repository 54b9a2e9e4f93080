//! Request smuggling: message framing with two readings (Content-Length against
//! Transfer-Encoding, obfuscated codings, bad chunks, pipelined requests hidden in bodies).
//! Sluice must either refuse it or read it one way and re-frame it, so the backend can
//! never find a second request where Sluice saw a body, or the other way round.

use crate::cases::{Case, body, header, method, not_on_wire, run, target};
use crate::{SMUGGLED, Site};

/// `POST /upload` to the open host with extra header lines and a body, as written.
fn post(headers: &str, body: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: public.test\r\n{headers}\r\n{body}")
}

/// `SMUGGLED` as one chunk, then the last chunk.
fn smuggled_chunked() -> String {
    format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len())
}

const HELLO_CHUNKED: &str = "5\r\nhello\r\n0\r\n\r\n";

fn cases() -> Vec<Case> {
    let reframed = || vec![target("/upload"), body("hello")];
    vec![
        Case::new(
            "cl-then-te",
            "CL.TE: Content-Length beside Transfer-Encoding; chunked wins and one framing reaches the backend",
            post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", HELLO_CHUNKED),
        )
        .answers(&[200])
        .reaches(reframed()),
        Case::new(
            "te-then-cl",
            "TE.CL: the same with the fields the other way round",
            post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", HELLO_CHUNKED),
        )
        .answers(&[200])
        .reaches(reframed()),
        Case::new(
            "te-cl-request-in-chunk",
            "TE.CL: a backend reading Content-Length: 3 would find a request for the protected host in the chunk",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                &smuggled_chunked(),
            ),
        )
        .answers(&[200])
        .reaches(vec![target("/upload"), body(SMUGGLED)]),
        Case::new(
            "cl-te-request-after-chunks",
            "CL.TE: after a message with both fields the connection is closed (what follows is never read), or what follows is the client's next request, checked on its own",
            post(
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    5 + SMUGGLED.len()
                ),
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
        )
        .answers(&[200])
        .closes()
        .reaches(vec![target("/upload"), body("")])
        .or()
        .answers(&[200, 401])
        .reaches(vec![target("/upload"), body("")]),
        Case::new(
            "cl-request-after-body",
            "a pipelined request right after a Content-Length body is the client's next request, not the backend's",
            post("Content-Length: 5\r\n", &format!("hello{SMUGGLED}")),
        )
        .answers(&[200, 401])
        .reaches(reframed()),
        Case::new(
            "get-with-body",
            "CL.0: a GET with a body; if the body were dropped but not its bytes, they would be a second request",
            format!(
                "GET /page HTTP/1.1\r\nHost: public.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        )
        .answers(&[200])
        .reaches(vec![method("GET"), target("/page"), body(SMUGGLED)]),
        Case::new(
            "cl-duplicate-equal",
            "two equal Content-Length fields: read once, and the backend gets one",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        )
        .answers(&[200])
        .reaches(vec![header("content-length", "5"), body("hello")])
        .or(),
        Case::new(
            "cl-duplicate-differing",
            "two differing Content-Length fields have no single reading",
            post(
                &format!("Content-Length: 5\r\nContent-Length: {}\r\n", 5 + SMUGGLED.len()),
                &format!("hello{SMUGGLED}"),
            ),
        )
        .closes(),
        Case::new(
            "cl-plus-sign",
            "Content-Length: +5 (a sign some parsers accept)",
            post("Content-Length: +5\r\n", "hello"),
        )
        .closes(),
        Case::new(
            "cl-list",
            "Content-Length:  5 ,5 (a list of one length): refused, or passed on as one plain 5",
            post("Content-Length:  5 ,5\r\n", "hello"),
        )
        .closes()
        .or()
        .answers(&[200])
        .reaches(vec![header("content-length", "5"), body("hello")]),
        Case::new(
            "cl-list-differing",
            "Content-Length: 5, 50 (a list of two lengths)",
            post("Content-Length: 5, 50\r\n", &format!("hello{SMUGGLED}")),
        )
        .closes(),
        Case::new(
            "cl-negative",
            "Content-Length: -1",
            post("Content-Length: -1\r\n", "hello"),
        )
        .closes(),
        Case::new(
            "cl-hex",
            "Content-Length: 0x5",
            post("Content-Length: 0x5\r\n", "hello"),
        )
        .closes(),
        Case::new(
            "cl-overflow",
            "a Content-Length beyond 64 bits",
            post("Content-Length: 184467440737095516160\r\n", "hello"),
        )
        .closes(),
        Case::new(
            "cl-empty",
            "an empty Content-Length",
            post("Content-Length: \r\n", "hello"),
        )
        .closes(),
        Case::new(
            "cl-space-inside",
            "Content-Length: 1 0 (read as 1, 10 or 0 by different parsers)",
            post("Content-Length: 1 0\r\n", "helloworld"),
        )
        .closes(),
        Case::new(
            "te-trailing-space",
            "Transfer-Encoding: `chunked ` (trailing space): read as chunked and re-framed, or refused",
            post("Transfer-Encoding: chunked \r\nContent-Length: 3\r\n", HELLO_CHUNKED),
        )
        .answers(&[200])
        .reaches(reframed())
        .or()
        .closes(),
        Case::new(
            "te-xchunked",
            "Transfer-Encoding: xchunked beside Content-Length (one parser's chunked is another's unknown coding)",
            post("Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n", HELLO_CHUNKED),
        )
        .answers_one_of(&[400, 501]),
        Case::new(
            "te-tab",
            "Transfer-Encoding:<TAB>chunked: read as chunked and re-framed, or refused",
            post("Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n", HELLO_CHUNKED),
        )
        .answers(&[200])
        .reaches(reframed())
        .or()
        .closes(),
        Case::new(
            "te-obs-fold",
            "Transfer-Encoding split by obs-fold: one parser sees chunked, another an empty coding",
            post(
                "Content-Length: 3\r\nTransfer-Encoding:\r\n chunked\r\n",
                HELLO_CHUNKED,
            ),
        )
        .closes(),
        Case::new(
            "te-second-field-identity",
            "Transfer-Encoding: chunked then Transfer-Encoding: identity",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n",
                HELLO_CHUNKED,
            ),
        )
        .answers_one_of(&[400, 501]),
        Case::new(
            "te-gzip-chunked-hides-request",
            "a coding Sluice does not decode: 501, and the body (a request for the protected host) is never read as a request",
            post("Transfer-Encoding: gzip, chunked\r\n", &smuggled_chunked()),
        )
        .answers(&[501]),
        Case::new(
            "te-chunked-twice",
            "Transfer-Encoding: chunked, chunked",
            post("Transfer-Encoding: chunked, chunked\r\n", HELLO_CHUNKED),
        ),
        Case::new(
            "te-http10",
            "Transfer-Encoding in HTTP/1.0, which has no chunked coding",
            format!(
                "POST /upload HTTP/1.0\r\nHost: public.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{HELLO_CHUNKED}"
            ),
        )
        .closes(),
        Case::new(
            "te-space-before-colon",
            "`Transfer-Encoding : chunked`: a field some parsers take and others drop",
            post(
                "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n",
                HELLO_CHUNKED,
            ),
        )
        .closes(),
        Case::new(
            "te-vertical-tab",
            "Transfer-Encoding:<VT>chunked",
            post(
                "Transfer-Encoding:\x0bchunked\r\nContent-Length: 3\r\n",
                HELLO_CHUNKED,
            ),
        )
        .closes(),
        Case::new(
            "te-quoted",
            "Transfer-Encoding: \"chunked\"",
            post(
                "Transfer-Encoding: \"chunked\"\r\nContent-Length: 3\r\n",
                HELLO_CHUNKED,
            ),
        )
        .answers_one_of(&[400, 501]),
        Case::new(
            "te-upper-case",
            "Transfer-Encoding: CHUNKED is chunked (codings are case-insensitive), re-framed",
            post("Transfer-Encoding: CHUNKED\r\n", HELLO_CHUNKED),
        )
        .answers(&[200])
        .reaches(reframed()),
        Case::new(
            "chunk-size-negative",
            "a negative chunk size",
            post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"),
        )
        .reaches_no_complete_request()
        .or()
        .answers_nothing()
        .reaches_no_complete_request(),
        Case::new(
            "chunk-size-overflow",
            "a chunk size beyond 64 bits",
            post(
                "Transfer-Encoding: chunked\r\n",
                "10000000000000005\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .reaches_no_complete_request()
        .or()
        .answers_nothing()
        .reaches_no_complete_request(),
        Case::new(
            "chunk-size-hex-prefix",
            "a chunk size written 0x5",
            post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"),
        )
        .reaches_no_complete_request()
        .or()
        .answers_nothing()
        .reaches_no_complete_request(),
        Case::new(
            "chunk-missing-crlf",
            "chunk data not followed by CRLF: the next chunk's size is read from inside the data",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5\r\nhelloXX{}", smuggled_chunked()),
            ),
        )
        .reaches_no_complete_request()
        .or()
        .answers_nothing()
        .reaches_no_complete_request(),
        Case::new(
            "chunk-extension-bare-lf",
            "a chunk extension ended by a bare LF",
            post("Transfer-Encoding: chunked\r\n", "5;a=b\nhello\r\n0\r\n\r\n"),
        )
        .reaches_no_complete_request()
        .or()
        .answers_nothing()
        .reaches_no_complete_request(),
        Case::new(
            "chunk-extension-flood",
            "20 000 bytes of chunk extension on one chunk",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(20_000)),
            ),
        )
        .reaches_no_complete_request()
        .or()
        .answers_nothing()
        .reaches_no_complete_request(),
        Case::new(
            "chunk-extension-dropped",
            "a well-formed chunk extension is not passed on (the body is re-framed)",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5;name=value\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .answers(&[200])
        .reaches(vec![body("hello"), not_on_wire("name=value")]),
        Case::new(
            "chunk-trailer-framing-fields",
            "trailer fields that name framing (Content-Length) never become framing at the backend",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nContent-Length: 50\r\nX-Trailer: 1\r\n\r\n",
            ),
        )
        .answers(&[200])
        .reaches(vec![body("hello"), not_on_wire("content-length: 50")]),
        Case::new(
            "expect-continue-on-protected-host",
            "Expect: 100-continue to the protected host without credentials: refused before any body is asked for",
            "POST /upload HTTP/1.1\r\nHost: members.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .answers(&[401]),
        Case::new(
            "asterisk-form",
            "OPTIONS * has no path to route or protect",
            "OPTIONS * HTTP/1.1\r\nHost: public.test\r\n\r\n",
        ),
        Case::new(
            "absolute-form",
            "an absolute-form request target reaches the backend in origin form",
            "GET http://public.test/page?q=1 HTTP/1.1\r\nHost: public.test\r\n\r\n",
        )
        .answers(&[200])
        .reaches(vec![target("/page?q=1"), header("host", "public.test")]),
        Case::new(
            "request-line-double-space",
            "GET  /page (two spaces): the target is read differently by different parsers",
            "GET  /page HTTP/1.1\r\nHost: public.test\r\n\r\n",
        )
        .closes(),
        Case::new(
            "http-0.9",
            "an HTTP/0.9 request line (no version, no headers)",
            "GET /page\r\n\r\n",
        )
        .closes()
        .or()
        .answers_nothing(),
        Case::new(
            "http-1.2",
            "an HTTP version Sluice does not speak",
            "GET /page HTTP/1.2\r\nHost: public.test\r\n\r\n",
        )
        .answers_one_of(&[400, 505])
        .closes(),
        Case::new(
            "version-lower-case",
            "http/1.1 in lower case",
            "GET /page http/1.1\r\nHost: public.test\r\n\r\n",
        )
        .closes(),
        Case::new(
            "connection-close-then-request",
            "after `Connection: close` nothing more is read from the connection",
            format!("GET /page HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n{SMUGGLED}"),
        )
        .answers(&[200])
        .closes()
        .reaches(vec![target("/page")]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_with_two_readings_never_reaches_the_backend_as_two() {
    let site = Site::start("framing", &[]).await;
    run(&site, "framing", &cases()).await;
    site.assert_still_serves("framing").await;
}
