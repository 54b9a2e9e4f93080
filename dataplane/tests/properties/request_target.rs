//! Request-target and Host normalisation (issue 19), shared by the `request_target` fuzz
//! target and the in-tree property test.
//!
//! A request is built from fuzzer input and put through [`canonical_target`], the phase
//! that decides what the client asked for. When it is accepted:
//!
//! - the one `Host` left in the request is the target's authority, which parses back to
//!   the routed host, and the path is canonical (a fixed point of [`canonical_path`], ASCII)
//!   with the query as sent: the backend receives exactly what was routed;
//! - a lenient backend (one that decodes every `%XX`, reads `\` as `/`, drops `;`
//!   parameters, resolves dot segments and ignores empty segments, and reads the host
//!   with any port, trailing dot or case) that would see `members.test` + `/admin` in
//!   what the client sent or in what Sluice forwards, was only sent it through the
//!   protected `/admin` route of `members.test`.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::header::{COOKIE, HOST, HeaderValue, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderName, Method, Request, Uri, Version};
use sluice_dataplane::canonical::{canonical_authority, canonical_path};
use sluice_dataplane::proxy::{TargetRefusal, canonical_target};
use sluice_dataplane::snapshot::{
    BackendKey, BalancePolicy, ObjectRef, RouteTable, RouteTarget, VirtualHost,
};

use super::text::Text;

/// Spellings that matter to hosts, paths and framing.
const WORDS: &[&str] = &[
    "members.test",
    "MEMBERS.Test",
    "public.test",
    "x.test",
    "test",
    "admin",
    "Admin",
    "login",
    "static",
    "/",
    "//",
    "\\",
    ".",
    "..",
    ";",
    ";x=1",
    ":",
    ":80",
    ":443",
    ":abc",
    ":65536",
    "@",
    "[::1]",
    "[",
    "]",
    "%",
    "%2F",
    "%2f",
    "%5C",
    "%5c",
    "%2e",
    "%2E",
    "%3B",
    "%25",
    "%00",
    "%0d%0a",
    "%61",
    "%41",
    "?",
    "#",
    "*",
    "http://",
    "https://",
    "é",
    " ",
    "\t",
    ",",
    "chunked",
    "gzip",
    "identity",
    "a=1",
];

/// How the request names its target (RFC 9112 §3.2).
#[derive(Debug, Clone, Arbitrary)]
pub enum TargetForm {
    Origin {
        path: Text,
        query: Option<Text>,
    },
    Absolute {
        https: bool,
        authority: Text,
        path: Text,
        query: Option<Text>,
    },
    Authority(Text),
    Asterisk,
    Raw(Text),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum MethodChoice {
    Get,
    Head,
    Post,
    Options,
    Connect,
    Extension,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum VersionChoice {
    Http09,
    Http10,
    Http11,
    Http2,
    Http3,
}

/// A request as a fuzzer describes it.
#[derive(Debug, Clone, Arbitrary)]
pub struct RequestInput {
    pub method: MethodChoice,
    pub version: VersionChoice,
    pub target: TargetForm,
    pub hosts: Vec<Text>,
    pub transfer_encodings: Vec<Text>,
    pub cookies: Vec<Text>,
}

impl RequestInput {
    /// The request, or `None` when no HTTP implementation would hand Sluice one like it
    /// (an unparsable URI, a header value with control characters).
    pub fn build(&self) -> Option<Parts> {
        let text = |t: &Text| t.bytes(WORDS);
        let uri = match &self.target {
            TargetForm::Origin { path, query } => {
                let mut uri = text(path);
                if let Some(query) = query {
                    uri.push(b'?');
                    uri.extend(text(query));
                }
                uri
            }
            TargetForm::Absolute {
                https,
                authority,
                path,
                query,
            } => {
                let mut uri = if *https { &b"https://"[..] } else { b"http://" }.to_vec();
                uri.extend(text(authority));
                uri.extend(text(path));
                if let Some(query) = query {
                    uri.push(b'?');
                    uri.extend(text(query));
                }
                uri
            }
            TargetForm::Authority(authority) => text(authority),
            TargetForm::Asterisk => b"*".to_vec(),
            TargetForm::Raw(raw) => text(raw),
        };
        let uri = Uri::from_maybe_shared(Bytes::from(uri)).ok()?;
        let method = match self.method {
            MethodChoice::Get => Method::GET,
            MethodChoice::Head => Method::HEAD,
            MethodChoice::Post => Method::POST,
            MethodChoice::Options => Method::OPTIONS,
            MethodChoice::Connect => Method::CONNECT,
            MethodChoice::Extension => Method::from_bytes(b"PURGE").ok()?,
        };
        let version = match self.version {
            VersionChoice::Http09 => Version::HTTP_09,
            VersionChoice::Http10 => Version::HTTP_10,
            VersionChoice::Http11 => Version::HTTP_11,
            VersionChoice::Http2 => Version::HTTP_2,
            VersionChoice::Http3 => Version::HTTP_3,
        };
        let mut headers = Vec::new();
        for (name, values) in [
            (HOST, &self.hosts),
            (TRANSFER_ENCODING, &self.transfer_encodings),
            (COOKIE, &self.cookies),
        ] {
            for value in values {
                headers.push((name.clone(), text(value)));
            }
        }
        request(method, version, uri, &headers)
    }
}

/// A request with these headers, in this order; `None` when a value cannot be a header.
pub fn request(
    method: Method,
    version: Version,
    uri: Uri,
    headers: &[(HeaderName, Vec<u8>)],
) -> Option<Parts> {
    let mut parts = Request::builder()
        .method(method)
        .version(version)
        .uri(uri)
        .body(())
        .ok()?
        .into_parts()
        .0;
    for (name, value) in headers {
        let value = HeaderValue::from_bytes(value).ok()?;
        parts.headers.append(name.clone(), value);
    }
    Some(parts)
}

/// The name of the protected route's target.
pub const PROTECTED: &str = "members-admin";

/// The table requests are routed on: `members.test` with a protected `/admin` prefix, a
/// public root, an exact `/login` and a `/static` prefix; a wildcard `*.test` (with an
/// unprotected `/admin` of its own) and host-less rules.
pub fn route_table() -> &'static RouteTable {
    static TABLE: LazyLock<RouteTable> = LazyLock::new(|| {
        let target = |name: &str| RouteTarget {
            owner: ObjectRef::new("shop", name),
            backend: BackendKey {
                namespace: "shop".into(),
                service: name.into(),
                port: 80,
            },
            balance: BalancePolicy::RoundRobin,
            policies: None,
            https: Arc::default(),
            upstream: None,
            slot: RouteTarget::UNNUMBERED,
            strict_paths: false,
        };
        let host = |name: &str, exact: &[(&str, &str)], prefix: &[(&str, &str)]| VirtualHost {
            name: name.into(),
            exact_paths: exact
                .iter()
                .map(|(path, owner)| ((*path).to_owned(), target(owner)))
                .collect(),
            prefix_paths: prefix
                .iter()
                .map(|(path, owner)| ((*path).to_owned(), target(owner)))
                .collect(),
        };
        let mut table = RouteTable::default();
        table.exact_hosts.insert(
            "members.test".into(),
            host(
                "members.test",
                &[("/login", "members-login")],
                &[
                    ("/", "members-public"),
                    ("/admin", PROTECTED),
                    ("/static", "members-static"),
                ],
            ),
        );
        table.wildcard_hosts.insert(
            "test".into(),
            host(
                "*.test",
                &[("/admin", "wildcard-admin")],
                &[("/", "wildcard")],
            ),
        );
        table.any_host = host("", &[], &[("/", "any-host")]);
        table.default_backend = Some(target("default"));
        table.number_targets();
        table
    });
    &TABLE
}

/// The fuzz and property entry point.
pub fn check(input: &RequestInput) {
    if let Some(parts) = input.build() {
        check_request(&parts);
    }
}

/// Runs the request-target phase on `original` and checks every property.
pub fn check_request(original: &Parts) {
    let mut parts = original.clone();
    let verdict = canonical_target(&mut parts);
    let described = Described(original);
    let backend_saw_protected = protected_in_view(&original.headers, &original.uri);
    let Ok(target) = verdict else {
        if let Err(TargetRefusal::UnsupportedTransferCoding) = verdict {
            assert!(
                original.headers.contains_key(TRANSFER_ENCODING),
                "501 without a Transfer-Encoding: {described}"
            );
        }
        return;
    };

    // Exactly one Host, and it is the authority routed.
    let hosts: Vec<&HeaderValue> = parts.headers.get_all(HOST).iter().collect();
    assert!(
        hosts.len() <= 1,
        "{} Host fields left: {described}",
        hosts.len()
    );
    assert_eq!(
        hosts.first().copied(),
        target.authority.as_ref(),
        "the Host left is not the target's authority: {described}"
    );
    match &target.authority {
        Some(authority) => {
            let text = authority.to_str().expect("a canonical authority is text");
            let again = canonical_authority(text)
                .unwrap_or_else(|error| panic!("{text:?} does not parse ({error}): {described}"));
            assert_eq!(
                again.host, target.host,
                "the Host sent upstream names another host than was routed: {described}"
            );
            assert_eq!(
                again.to_header_text(),
                text,
                "the authority is not canonical: {described}"
            );
        }
        None => {
            assert!(
                target.host.is_empty(),
                "a host without authority: {described}"
            );
            assert!(
                original.version <= Version::HTTP_10,
                "a request without a host passed as {:?}: {described}",
                original.version
            );
        }
    }

    // The path routed is the path sent: canonical, ASCII, and the query as the client sent.
    let path = target.path_and_query.path();
    assert!(path.is_ascii(), "a non-ASCII path {path:?}: {described}");
    assert_eq!(
        canonical_path(path),
        Ok(Cow::Borrowed(path)),
        "the routed path is not canonical: {described}"
    );
    assert_eq!(
        target.path_and_query.query(),
        original.uri.query(),
        "the query changed: {described}"
    );

    // Transfer-Encoding: `chunked` at most once, nothing else.
    let codings: Vec<String> = original
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| {
            value
                .to_str()
                .unwrap_or("?")
                .split(',')
                .map(|coding| coding.trim().to_ascii_lowercase())
                .filter(|coding| !coding.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        codings.iter().all(|coding| coding == "chunked") && codings.len() <= 1,
        "transfer codings {codings:?} accepted: {described}"
    );

    // Cookie fields joined into one, in order.
    let cookies: Vec<&[u8]> = original
        .headers
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let joined: Vec<&HeaderValue> = parts.headers.get_all(COOKIE).iter().collect();
    if cookies.is_empty() {
        assert!(joined.is_empty(), "a Cookie appeared: {described}");
    } else {
        assert_eq!(joined.len(), 1, "Cookie fields not joined: {described}");
        // The same cookies in the same order (empty fields may leave empty members).
        let pairs = |value: &[u8]| -> Vec<Vec<u8>> {
            value
                .split(|&b| b == b';')
                .map(|pair| pair.trim_ascii().to_vec())
                .filter(|pair| !pair.is_empty())
                .collect()
        };
        let sent: Vec<Vec<u8>> = cookies.iter().flat_map(|value| pairs(value)).collect();
        assert_eq!(
            pairs(joined[0].as_bytes()),
            sent,
            "Cookie fields joined wrongly: {described}"
        );
    }

    // The protected route: whatever a lenient backend reads as members.test + /admin,
    // in the client's request or in the forwarded one, went through it.
    // As hyper writes the request line: the path (`/` when empty), then any query.
    let request_line = match target.path_and_query.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let forwarded_uri: Uri = request_line
        .parse()
        .unwrap_or_else(|error| panic!("{request_line:?} is not a URI ({error}): {described}"));
    let forwarded_protected = protected_in_view(&parts.headers, &forwarded_uri);
    if backend_saw_protected || forwarded_protected {
        let matched = route_table().lookup(&target.host, path);
        // The proxy refuses an ambiguous path right after routing (`refuses_ambiguous`).
        let refused = matched.is_some_and(|matched| {
            route_table().refuses_ambiguous(&target.host, path, matched.target)
        });
        let routed = matched
            .filter(|_| !refused)
            .map(|matched| matched.target.owner.name.as_str());
        assert!(
            refused || routed == Some(PROTECTED),
            "a lenient backend reads members.test/admin (from the {}), but Sluice routed host \
             {:?} path {:?} to {routed:?}: {described}",
            if backend_saw_protected {
                "client's request"
            } else {
                "forwarded request"
            },
            target.host,
            path,
        );
    }
}

/// Whether any reading a lenient backend could make of this request's host and path is
/// `members.test` under `/admin`.
fn protected_in_view(headers: &http::HeaderMap, uri: &Uri) -> bool {
    let mut authorities: Vec<&[u8]> = headers
        .get_all(HOST)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Some(authority) = uri.authority() {
        authorities.push(authority.as_str().as_bytes());
    }
    let members = authorities.iter().any(|authority| {
        lenient_hosts(authority)
            .iter()
            .any(|h| h == b"members.test")
    });
    members && lenient_segments(uri.path().as_bytes()).first() == Some(&b"admin".to_vec())
}

/// The hosts a lenient backend may read in an authority: percent-decoded, trimmed, lower
/// case, without user information, with the port cut at the first or the last colon, with
/// or without one trailing dot.
fn lenient_hosts(authority: &[u8]) -> Vec<Vec<u8>> {
    let decoded = percent_decode(authority.trim_ascii()).to_ascii_lowercase();
    let host = match decoded.iter().rposition(|&b| b == b'@') {
        Some(at) => &decoded[at + 1..],
        None => &decoded[..],
    };
    let mut readings = vec![host.to_vec()];
    for colon in [
        host.iter().position(|&b| b == b':'),
        host.iter().rposition(|&b| b == b':'),
    ]
    .into_iter()
    .flatten()
    {
        readings.push(host[..colon].to_vec());
    }
    let without_dot: Vec<Vec<u8>> = readings
        .iter()
        .filter_map(|reading| reading.strip_suffix(b".").map(<[u8]>::to_vec))
        .collect();
    readings.extend(without_dot);
    readings
}

/// The path's segments as a lenient backend reads them: every `%XX` decoded, `\` read as
/// `/`, `;` parameters dropped, `.` and `..` resolved, empty segments ignored.
pub fn lenient_segments(path: &[u8]) -> Vec<Vec<u8>> {
    let decoded: Vec<u8> = percent_decode(path)
        .into_iter()
        .map(|b| if b == b'\\' { b'/' } else { b })
        .collect();
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        let segment = segment.split(|&b| b == b';').next().unwrap_or_default();
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            other => segments.push(other.to_vec()),
        }
    }
    segments
}

fn percent_decode(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut index = 0;
    while index < text.len() {
        if text[index] == b'%'
            && let (Some(high), Some(low)) = (
                text.get(index + 1).copied().and_then(hex),
                text.get(index + 2).copied().and_then(hex),
            )
        {
            out.push((high * 16 + low) as u8);
            index += 3;
        } else {
            out.push(text[index]);
            index += 1;
        }
    }
    out
}

/// A request as it would be written on the wire, for failure messages.
struct Described<'a>(&'a Parts);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?}", self.0.method, self.0.uri, self.0.version)?;
        for (name, value) in &self.0.headers {
            write!(f, " | {name}: {value:?}")?;
        }
        Ok(())
    }
}
