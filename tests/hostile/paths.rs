//! Paths that climb out of the open `/public` of the protected host into its `/admin`, in
//! every disguise a backend might resolve: each is refused before routing, and the backend
//! gets nothing. Encodings that are not dot segments are passed on exactly as routed.

use crate::Site;
use crate::cases::{Case, header, run, target};

/// `GET <path>` on the protected host.
fn members(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: members.test\r\n\r\n")
}

/// `GET <path>` on the protected host, with good credentials.
fn members_signed_in(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: members.test\r\nAuthorization: {}\r\n\r\n",
        crate::credentials()
    )
}

/// `GET <path>` on the open host.
fn public(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: public.test\r\n\r\n")
}

/// Paths that reach `/admin` from `/public` once a backend resolves them.
const CLIMBS: &[(&str, &str)] = &[
    ("dot-dot", "/public/../admin"),
    ("encoded-dot-dot", "/public/%2e%2e/admin"),
    ("encoded-dot-dot-upper", "/public/%2E%2E/admin"),
    ("half-encoded-dot-dot", "/public/.%2e/admin"),
    ("half-encoded-dot-dot-2", "/public/%2e./admin"),
    ("dot-dot-semicolon", "/public/..;/admin"),
    ("dot-dot-path-parameter", "/public/..;jsessionid=x/admin"),
    ("dot-dot-encoded-slash", "/public/..%2Fadmin"),
    ("dot-dot-encoded-slash-lower", "/public/..%2fadmin"),
    ("encoded-slashes-around", "/public%2F..%2Fadmin"),
    ("all-encoded", "/public/%2e%2e%2fadmin"),
    ("backslashes", "/public\\..\\admin"),
    ("dot-dot-backslash", "/public/..\\admin"),
    ("encoded-backslashes", "/public/%5C..%5Cadmin"),
    ("dot-dot-encoded-backslash", "/public/..%5cadmin"),
    ("dot-then-dot-dot", "/public/./../admin"),
    ("double-slash-dot-dot", "/public//../admin"),
    ("semicolon-then-dot-dot", "/public;/../admin"),
    ("single-dot", "/public/./admin"),
    ("encoded-single-dot", "/public/%2e/admin"),
    ("trailing-dot-dot", "/public/.."),
    ("trailing-encoded-dot-dot", "/public/%2e%2e"),
    ("upper-case-prefix", "/PUBLIC/../admin"),
    ("encoded-nul", "/public/%00/../admin"),
    ("encoded-crlf", "/public/%0d%0aX-Injected:%201"),
    ("bad-percent", "/public/%zz/admin"),
    ("truncated-percent", "/public/%2"),
    ("iis-unicode-dots", "/public/%u002e%u002e/admin"),
];

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = CLIMBS
        .iter()
        .map(|(name, path)| {
            Case::new(
                name,
                "a path from the open /public into the protected /admin",
                members(path),
            )
        })
        .collect();
    cases.extend([
        Case::new(
            "baseline-open-path",
            "the open path is served (so the refusals above are about the climb)",
            members("/public/x"),
        )
        .answers(&[200])
        .reaches(vec![target("/public/x"), header("host", "members.test")]),
        Case::new(
            "baseline-protected-path",
            "the protected path needs credentials",
            members("/admin"),
        )
        .answers(&[401]),
        Case::new(
            "double-encoded-dots",
            "%252e%252e is not decoded twice: routed to /public and passed on as sent",
            members("/public/%252e%252e/admin"),
        )
        .answers(&[200])
        .reaches(vec![target("/public/%252e%252e/admin")]),
        Case::new(
            "overlong-utf8-dots",
            "overlong UTF-8 dots (%c0%ae) are never decoded into dots: passed on as sent",
            members("/public/%c0%ae%c0%ae/admin"),
        )
        .answers(&[200])
        .reaches(vec![target("/public/%C0%AE%C0%AE/admin")]),
        Case::new(
            "merged-slashes",
            "repeated slashes are merged before routing, and the backend gets the merged path",
            members("//public//x"),
        )
        .answers(&[200])
        .reaches(vec![target("/public/x")]),
        Case::new(
            "encoded-protected-path",
            "/%61dmin is /admin: the Auth applies",
            members("/%61dmin"),
        )
        .answers(&[401]),
        Case::new(
            "dots-in-query",
            "dot segments in the query are not a path: passed on untouched",
            members("/public/x?next=/../admin"),
        )
        .answers(&[200])
        .reaches(vec![target("/public/x?next=/../admin")]),
        Case::new(
            "raw-nul-in-path",
            "a raw NUL in the request target",
            members("/public/a\0b"),
        )
        .closes(),
        Case::new(
            "raw-space-in-path",
            "a raw space in the request target makes four request-line parts",
            members("/public/a b/../../admin"),
        )
        .closes(),
        Case::new(
            "64k-path",
            "a 64 KiB path: refused whole, without crashing",
            members(&format!("/public/{}", "a".repeat(64 * 1024))),
        )
        .answers_one_of(&[400, 414, 431])
        .closes(),
        // Strict paths: on by default for a route with an Auth policy.
        Case::new(
            "strict-encoded-slash",
            "an encoded slash on a route with an Auth policy: a backend that decodes it before routing would see another path (strict paths)",
            members_signed_in("/admin%2F..%252Fpublic"),
        ),
        Case::new(
            "strict-encoded-slash-alone",
            "%2F on a strict route, even without dots",
            members_signed_in("/admin/a%2Fb"),
        ),
        Case::new(
            "strict-path-parameter",
            "a ;parameter on a strict route (Tomcat and Spring cut segments there)",
            members_signed_in("/admin;jsessionid=1/x"),
        ),
        Case::new(
            "strict-backslash",
            "a backslash on a strict route (IIS and some frameworks read it as /)",
            members_signed_in("/admin\\x"),
        ),
        Case::new(
            "strict-signed-in-baseline",
            "the strict route serves canonical paths to a signed-in client",
            members_signed_in("/admin/x"),
        )
        .answers(&[200])
        .reaches(vec![target("/admin/x")]),
        Case::new(
            "not-strict-encoded-slash",
            "without an Auth policy paths are not strict: %2F passes as routed",
            public("/a%2fb"),
        )
        .answers(&[200])
        .reaches(vec![target("/a%2Fb")]),
        Case::new(
            "raw-utf8-path-encoded",
            "a raw UTF-8 path reaches the backend percent-encoded, as the route matched it (issue 19, defect 3)",
            public("/caf\u{e9}"),
        )
        .answers(&[200])
        .reaches(vec![target("/caf%C3%A9")]),
    ]);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_climbing_out_of_an_open_prefix_are_refused() {
    let site = Site::start("paths", &[]).await;
    run(&site, "paths", &cases()).await;
    site.assert_still_serves("paths").await;
}

/// Separators a lenient backend cuts a path at and the router does not (found by the
/// request_target fuzz target): `public.test` serves `/` openly and guards `/admin`, and
/// each of these reads as `/admin…` to a backend that decodes `%2F` or `%5C`, takes `\`
/// for `/`, or drops `;` parameters, while the router would have matched the open `/`.
fn separator_cases() -> Vec<Case> {
    [
        ("raw-backslash", "/\\admin"),
        ("encoded-backslash", "/%5cadmin"),
        ("encoded-slash-inside", "/admin%2Fusers"),
        ("path-parameter", "/admin;x"),
        ("path-parameter-then-path", "/admin;x/users"),
        ("encoded-semicolon", "/admin%3B"),
    ]
    .into_iter()
    .map(|(name, path)| {
        Case::new(
            name,
            "a separator only the backend cuts at would take the open / to the guarded /admin",
            public(path),
        )
    })
    .chain([
        Case::new(
            "guarded-prefix-baseline",
            "the guarded prefix itself needs credentials",
            public("/admin/users"),
        )
        .answers(&[401]),
        Case::new(
            "open-ambiguous-path-baseline",
            "an ambiguous path whose lenient reading stays on the open route is served",
            public("/files%2Freport;v=1"),
        )
        .answers(&[200])
        .reaches(vec![target("/files%2Freport;v=1")]),
    ])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separators_a_backend_cuts_at_cannot_route_around_a_guarded_prefix() {
    let guarded = crate::ingress(
        "public-admin",
        Some("public.test"),
        &["/admin"],
        &[("sluice.dev/auth", "members")],
    );
    let site = Site::start_with("separators", &guarded, &[]).await;
    run(&site, "separators", &separator_cases()).await;
    site.assert_still_serves("separators").await;
}
