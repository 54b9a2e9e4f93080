//! Malformed header fields and hosts: injected NUL, CR and LF, folded lines, names with
//! spaces, floods, and every way of naming a second host. Each must be refused, or read
//! one way and passed on in that one form; none may reach the protected host unchecked.

use crate::cases::{Case, header, run, target};
use crate::{Site, credentials};

/// `GET /page` with these header lines (the Host among them, or not), as written.
fn get(headers: &str) -> String {
    format!("GET /page HTTP/1.1\r\n{headers}\r\n")
}

fn field_cases() -> Vec<Case> {
    vec![
        Case::new(
            "obs-fold",
            "a folded header line (obs-fold), joined by some parsers and split by others",
            get("Host: public.test\r\nX-Note: a\r\n folded\r\n"),
        )
        .closes(),
        Case::new(
            "obs-fold-hides-host",
            "a folded line that reads as a second Host to a parser that unfolds it differently",
            get("Host: public.test\r\nX-Note: a\r\n Host: members.test\r\n"),
        )
        .closes(),
        Case::new(
            "first-line-folded",
            "a first header line that starts with a space (continuation of the request line)",
            get(" Host: members.test\r\nHost: public.test\r\n"),
        )
        .closes(),
        Case::new(
            "nul-in-value",
            "a NUL in a header value, where C parsers stop reading",
            get("Host: public.test\r\nX-Note: a\0b\r\n"),
        )
        .closes(),
        Case::new(
            "cr-in-value",
            "a bare CR in a header value, a line end to some parsers",
            get("Host: public.test\r\nX-Note: a\rX-Injected: 1\r\n"),
        )
        .closes(),
        Case::new(
            "lf-in-value",
            "a bare LF in a header value: one line end for Sluice and the backend alike, or refused",
            get("Host: public.test\r\nX-Note: a\nX-Injected: 1\r\n"),
        )
        .answers(&[200])
        .reaches(vec![header("x-note", "a"), header("x-injected", "1")])
        .or()
        .closes(),
        Case::new(
            "lf-hides-second-host",
            "a bare LF that makes a second Host",
            get("Host: public.test\nHost: members.test\r\n"),
        )
        .or()
        .closes(),
        Case::new(
            "bare-cr-line-end",
            "CR alone ending the request line",
            "GET /page HTTP/1.1\rHost: public.test\r\n\r\n",
        )
        .closes(),
        Case::new(
            "nul-in-name",
            "a NUL in a header name",
            get("Host: public.test\r\nX-No\0te: 1\r\n"),
        )
        .closes(),
        Case::new(
            "space-before-colon",
            "`X-Note : 1`, a name some parsers trim and others refuse",
            get("Host: public.test\r\nX-Note : 1\r\n"),
        )
        .closes(),
        Case::new(
            "host-space-before-colon",
            "`Host : members.test` beside the real Host: a second Host to a lenient backend",
            get("Host: public.test\r\nHost : members.test\r\n"),
        )
        .closes(),
        Case::new(
            "space-in-name",
            "a space inside a header name",
            get("Host: public.test\r\nX Note: 1\r\n"),
        )
        .closes(),
        Case::new(
            "tab-in-name",
            "a tab inside a header name",
            get("Host: public.test\r\nX\tNote: 1\r\n"),
        )
        .closes(),
        Case::new(
            "empty-name",
            "a header line with no name",
            get("Host: public.test\r\n: 1\r\n"),
        )
        .closes(),
        Case::new(
            "cr-in-name",
            "a CR inside a header name",
            get("Host: public.test\r\nX-No\rte: 1\r\n"),
        )
        .closes(),
        Case::new(
            "non-ascii-name",
            "a header name with UTF-8 in it",
            get("Host: public.test\r\nX-N\u{f6}te: 1\r\n"),
        )
        .closes(),
        Case::new(
            "del-in-value",
            "a DEL (0x7f) in a header value",
            get("Host: public.test\r\nX-Note: a\x7fb\r\n"),
        )
        .closes(),
        Case::new(
            "header-count-flood",
            "200 header fields, over --max-headers",
            get(&format!(
                "Host: public.test\r\n{}",
                (0..200).map(|n| format!("X-Flood-{n}: 1\r\n")).collect::<String>()
            )),
        )
        .answers(&[431])
        .closes(),
        Case::new(
            "one-megabyte-of-headers",
            "1 MiB of header fields, far over --max-header-bytes",
            get(&format!(
                "Host: public.test\r\n{}",
                (0..16)
                    .map(|n| format!("X-Big-{n}: {}\r\n", "a".repeat(64 * 1024)))
                    .collect::<String>()
            )),
        )
        .answers(&[431])
        .closes(),
        Case::new(
            "one-huge-header",
            "one 1 MiB header value",
            get(&format!(
                "Host: public.test\r\nX-Big: {}\r\n",
                "a".repeat(1024 * 1024)
            )),
        )
        .answers(&[431])
        .closes(),
        Case::new(
            "duplicate-authorization",
            "two Authorization fields, good and bad: a backend may read the other one",
            format!(
                "GET /page HTTP/1.1\r\nHost: members.test\r\nAuthorization: {}\r\nAuthorization: Basic Z3Vlc3M6Z3Vlc3M=\r\n\r\n",
                credentials()
            ),
        )
        .answers(&[401]),
    ]
}

fn host_cases() -> Vec<Case> {
    vec![
        Case::new(
            "host-port-not-a-number",
            "Host: members.test:abc, which some backends read as members.test",
            get("Host: members.test:abc\r\n"),
        ),
        Case::new(
            "host-two-ports",
            "Host: members.test:80:80",
            get("Host: members.test:80:80\r\n"),
        ),
        Case::new(
            "host-duplicate-differing",
            "two Host fields naming different hosts",
            get("Host: public.test\r\nHost: members.test\r\n"),
        ),
        Case::new(
            "host-duplicate-equal",
            "two Host fields naming the same host",
            get("Host: public.test\r\nHost: public.test\r\n"),
        ),
        Case::new("host-missing-http11", "HTTP/1.1 without Host", get("")),
        Case::new(
            "host-list",
            "Host: public.test, members.test",
            get("Host: public.test, members.test\r\n"),
        ),
        Case::new(
            "host-space-inside",
            "Host: public.test members.test",
            get("Host: public.test members.test\r\n"),
        ),
        Case::new(
            "host-userinfo",
            "Host: public.test@members.test, whose host is the part after @ to URL parsers",
            get("Host: public.test@members.test\r\n"),
        ),
        Case::new(
            "host-percent-encoded",
            "Host: members%2etest",
            get("Host: members%2etest\r\n"),
        ),
        Case::new("host-empty", "an empty Host", get("Host: \r\n")),
        Case::new(
            "absolute-form-names-open-host",
            "an absolute-form target naming the open host, with Host naming the protected one",
            "GET http://public.test/page HTTP/1.1\r\nHost: members.test\r\n\r\n",
        ),
        Case::new(
            "absolute-form-names-protected-host",
            "an absolute-form target naming the protected host, with Host naming the open one",
            "GET http://members.test/page HTTP/1.1\r\nHost: public.test\r\n\r\n",
        ),
        Case::new(
            "absolute-form-userinfo",
            "an absolute-form target with user information",
            "GET http://public.test@members.test/page HTTP/1.1\r\nHost: members.test\r\n\r\n",
        ),
        Case::new(
            "absolute-form-bad-port",
            "an absolute-form target whose port is not a number",
            "GET http://members.test:abc/page HTTP/1.1\r\nHost: members.test\r\n\r\n",
        ),
        Case::new(
            "host-trailing-dot-upper-case",
            "MEMBERS.Test. is the protected host (case and trailing dot), so the Auth applies",
            get("Host: MEMBERS.Test.\r\n"),
        )
        .answers(&[401]),
        Case::new(
            "host-with-port",
            "members.test:8080 is the protected host, so the Auth applies",
            get("Host: members.test:8080\r\n"),
        )
        .answers(&[401]),
        Case::new(
            "http10-without-host",
            "HTTP/1.0 may name no host: it goes to the hostless route, never to a host's",
            "GET /page HTTP/1.0\r\n\r\n",
        )
        .answers(&[200])
        .reaches(vec![target("/page")]),
        Case::new(
            "host-canonical-at-backend",
            "the backend gets the host in the one canonical form Sluice routed by",
            get("Host: Public.TEST.:80\r\n"),
        )
        .answers(&[200])
        .reaches(vec![header("host", "public.test:80")]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_fields_are_refused_or_passed_on_in_one_form() {
    let site = Site::start("headers", &[]).await;
    run(&site, "headers", &field_cases()).await;
    site.assert_still_serves("headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_with_two_readings_are_refused() {
    let site = Site::start("hosts", &[]).await;
    run(&site, "hosts", &host_cases()).await;
    site.assert_still_serves("hosts").await;
}
