//! The canonical forms of what a client names: the authority (`host[:port]`) and the path.
//!
//! Everything that reads a host or a path (the router, policies, the cache key, the
//! upstream request) reads the form made here, once, so no two of them can disagree about
//! what a request asked for. What has no single reading is refused instead of guessed at.
//! The controller stores Ingress paths through the same function, so a route and the
//! requests meant for it meet in one spelling.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Why an authority (the Host header, `:authority`, or an absolute-form URI's) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the host is empty")]
    Empty,
    #[error("the authority has user information (@)")]
    UserInfo,
    #[error("the port is not a decimal number from 0 to 65535")]
    BadPort,
    #[error("the host has a character a host name cannot have")]
    BadCharacter,
    #[error("the host has an empty label")]
    EmptyLabel,
    #[error("the host name is longer than 253 characters")]
    TooLong,
    #[error("the bracketed IPv6 literal is not an IPv6 address")]
    BadIpv6,
}

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with /")]
    NotAbsolute,
    #[error("the request path has a dot segment")]
    DotSegment,
    #[error("the request path has a malformed percent-encoding")]
    BadPercentEncoding,
    #[error("the request path has an encoded NUL, CR or LF")]
    EncodedControl,
}

/// A checked authority in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalAuthority<'a> {
    /// Lower case, no trailing dot; an IPv6 literal without its brackets. Routes are keyed
    /// by this.
    pub host: Cow<'a, str>,
    pub port: Option<u16>,
    ipv6: bool,
}

impl CanonicalAuthority<'_> {
    /// `host[:port]` as sent upstream (an IPv6 literal in brackets).
    pub fn to_header_text(&self) -> String {
        let host: &str = &self.host;
        match (self.ipv6, self.port) {
            (false, None) => host.to_owned(),
            (false, Some(port)) => format!("{host}:{port}"),
            (true, None) => format!("[{host}]"),
            (true, Some(port)) => format!("[{host}]:{port}"),
        }
    }

    pub fn into_owned(self) -> CanonicalAuthority<'static> {
        CanonicalAuthority {
            host: Cow::Owned(self.host.into_owned()),
            port: self.port,
            ipv6: self.ipv6,
        }
    }
}

/// Checks an authority and puts it in canonical form: a DNS-style name (letters, digits,
/// `-` and `_` in non-empty dot-separated labels; one trailing dot allowed and dropped), an
/// IPv4 address, or a bracketed IPv6 address, with an optional decimal port. Anything else
/// is refused: a second colon, an empty or non-numeric port, user information, percent
/// signs, non-ASCII. A backend that reads `members.test:abc` as `members.test` must never
/// get a request that Sluice routed as some other host.
pub fn canonical_authority(authority: &str) -> Result<CanonicalAuthority<'_>, HostError> {
    if authority.is_empty() {
        return Err(HostError::Empty);
    }
    if authority.contains('@') {
        return Err(HostError::UserInfo);
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(HostError::BadIpv6)?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(
                after.strip_prefix(':').ok_or(HostError::BadPort)?,
            )?),
        };
        let address: Ipv6Addr = inside.parse().map_err(|_| HostError::BadIpv6)?;
        return Ok(CanonicalAuthority {
            host: Cow::Owned(address.to_string()),
            port,
            ipv6: true,
        });
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (authority, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > 253 {
        return Err(HostError::TooLong);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(HostError::BadCharacter);
    }
    if host.split('.').any(str::is_empty) {
        return Err(HostError::EmptyLabel);
    }
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Ok(CanonicalAuthority {
        host,
        port,
        ipv6: false,
    })
}

/// A port is one to five decimal digits with a value that fits 16 bits.
fn parse_port(port: &str) -> Result<u16, HostError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    port.parse().map_err(|_| HostError::BadPort)
}

/// Puts a path in the one spelling the router, the policies, the cache and the upstream
/// all see (RFC 3986 §6.2.2 normalisation, plus merged slashes):
///
/// - percent-encodings of unreserved characters are decoded (`%61` is `a`), all others
///   kept with upper-case hex (`%2f` is `%2F`);
/// - every byte that may not stand raw in a path segment (non-ASCII, `\`, `"`, `{`, `|`,
///   `^` …) is percent-encoded, so `/café` and `/caf%C3%A9` are one path;
/// - repeated slashes are merged.
///
/// Refused: a path not starting with `/`, malformed percent-encodings, encoded NUL, CR or
/// LF, and dot segments in any disguise a backend might resolve: `..`, `%2e%2e`, and `..`
/// between encoded slashes or backslashes (`%2F..%2F`, `%5C..`) or before a `;` parameter
/// (`..;`). Borrows the input when it is already canonical.
pub fn canonical_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let needs_work = bytes.windows(2).any(|pair| pair == b"//")
        || bytes.iter().any(|&b| b == b'%' || !is_raw_path_byte(b));
    let canonical = if needs_work {
        Cow::Owned(rewrite_path(bytes)?)
    } else {
        Cow::Borrowed(path)
    };
    if has_dot_segment(&canonical) {
        return Err(PathError::DotSegment);
    }
    Ok(canonical)
}

/// Whether a canonical path has something a backend may read as another path than Sluice
/// routed: an encoded slash or backslash (`\` is always encoded), or a `;` path parameter,
/// also encoded. Routes with strict paths refuse these (`sluice.dev/strict-paths`).
pub fn is_ambiguous_path(canonical: &str) -> bool {
    canonical.contains(';')
        || canonical.contains("%2F")
        || canonical.contains("%5C")
        || canonical.contains("%3B")
}

/// How a lenient backend reads an ambiguous canonical path: encoded slashes and
/// backslashes as `/`, an encoded `;` as `;`, each segment cut at its `;` parameters, and
/// repeated slashes merged (Tomcat, Spring, IIS and many frameworks do one or more of
/// these). A request whose lenient reading routes elsewhere than its canonical path is
/// refused, so no backend can be led past the route Sluice matched and guarded.
pub fn lenient_reading(canonical: &str) -> String {
    let decoded = canonical
        .replace("%2F", "/")
        .replace("%5C", "/")
        .replace("%3B", ";");
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    out
}

/// Bytes that stand raw in a canonical path: RFC 3986's `pchar` (unreserved, sub-delims,
/// `:` and `@`) and `/`. `%` is handled on its own.
fn is_raw_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn rewrite_path(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|b| hex_value(*b));
            let low = bytes.get(index + 2).and_then(|b| hex_value(*b));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathError::BadPercentEncoding);
            };
            let decoded = high * 16 + low;
            if matches!(decoded, 0 | b'\r' | b'\n') {
                return Err(PathError::EncodedControl);
            }
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                push_encoded(&mut out, decoded);
            }
            index += 3;
            continue;
        }
        if byte == b'/' && out.ends_with('/') {
            index += 1;
            continue;
        }
        if is_raw_path_byte(byte) {
            out.push(char::from(byte));
        } else {
            push_encoded(&mut out, byte);
        }
        index += 1;
    }
    Ok(out)
}

fn push_encoded(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(byte & 0x0F)]));
}

/// A segment is cut at `/`, at encoded `/` and `\`, and at a `;` parameter: wherever some
/// backend ends a segment, a `.` or `..` there is a dot segment.
fn has_dot_segment(canonical: &str) -> bool {
    canonical.split('/').any(|segment| {
        segment
            .split("%2F")
            .flat_map(|part| part.split("%5C"))
            .map(|part| part.split(';').next().unwrap_or(part))
            .any(|part| part == "." || part == "..")
    })
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(authority: &str) -> Result<String, HostError> {
        canonical_authority(authority).map(|a| a.host.into_owned())
    }

    fn header(authority: &str) -> Result<String, HostError> {
        canonical_authority(authority).map(|a| a.to_header_text())
    }

    #[test]
    fn authorities_in_canonical_form() {
        assert_eq!(host("Foo.COM:8080").unwrap(), "foo.com");
        assert_eq!(header("Foo.COM:08080").unwrap(), "foo.com:8080");
        assert_eq!(host("foo.com.").unwrap(), "foo.com");
        assert_eq!(header("foo.com.:80").unwrap(), "foo.com:80");
        assert_eq!(host("[::1]:80").unwrap(), "::1");
        assert_eq!(header("[0:0::1]:80").unwrap(), "[::1]:80");
        assert_eq!(header("[::1]").unwrap(), "[::1]");
        assert_eq!(host("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(host("under_score.example").unwrap(), "under_score.example");
        assert!(matches!(
            canonical_authority("plain").unwrap().host,
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn authorities_with_more_than_one_reading_are_refused() {
        for (authority, error) in [
            ("", HostError::Empty),
            (":80", HostError::Empty),
            (".", HostError::Empty),
            ("members.test:abc", HostError::BadPort),
            ("members.test:80:80", HostError::BadPort),
            ("members.test:", HostError::BadPort),
            ("members.test:65536", HostError::BadPort),
            ("members.test:+80", HostError::BadPort),
            ("members.test:123456", HostError::BadPort),
            ("user@members.test", HostError::UserInfo),
            ("members.test%2eevil", HostError::BadCharacter),
            ("a b", HostError::BadCharacter),
            ("a/b", HostError::BadCharacter),
            ("café.test", HostError::BadCharacter),
            ("a..b", HostError::EmptyLabel),
            (".a", HostError::EmptyLabel),
            ("a..", HostError::EmptyLabel),
            ("[::1", HostError::BadIpv6),
            ("[::1]80", HostError::BadPort),
            ("[::1]:x", HostError::BadPort),
            ("[members.test]", HostError::BadIpv6),
            ("[fe80::1%25eth0]", HostError::BadIpv6),
            ("::1", HostError::BadPort),
        ] {
            assert_eq!(canonical_authority(authority), Err(error), "{authority:?}");
        }
        assert_eq!(
            canonical_authority(&"a".repeat(254)),
            Err(HostError::TooLong)
        );
    }

    #[test]
    fn paths_in_canonical_form() {
        let norm = |p: &str| canonical_path(p).map(|c| c.into_owned());
        assert_eq!(norm("/a/b").unwrap(), "/a/b");
        assert!(matches!(canonical_path("/a/b").unwrap(), Cow::Borrowed(_)));
        assert_eq!(norm("//a///b/").unwrap(), "/a/b/");
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(norm("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(norm("/café").unwrap(), "/caf%C3%A9");
        assert_eq!(norm("/ü/x").unwrap(), "/%C3%BC/x");
        assert_eq!(norm("/a\\b").unwrap(), "/a%5Cb");
        assert_eq!(norm("/{\"x\"}|^").unwrap(), "/%7B%22x%22%7D%7C%5E");
        assert_eq!(norm("/a;b=c:@!$&'()*+,").unwrap(), "/a;b=c:@!$&'()*+,");
        assert_eq!(norm("/a/..b").unwrap(), "/a/..b");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
    }

    #[test]
    fn dot_segments_in_every_disguise_are_refused() {
        for path in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2E/b",
            "/..",
            "/.",
            "/a/..;/b",
            "/a/..;x=1/b",
            "/a%2F..%2Fb",
            "/a%2f..",
            "/a\\..\\b",
            "/a%5C..%5Cadmin",
            "/a/.%2e/b",
        ] {
            assert_eq!(canonical_path(path), Err(PathError::DotSegment), "{path}");
        }
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert_eq!(canonical_path("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(canonical_path("/a%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(canonical_path("a"), Err(PathError::NotAbsolute));
        assert_eq!(canonical_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(canonical_path("/a%00"), Err(PathError::EncodedControl));
        assert_eq!(canonical_path("/a%0d%0a"), Err(PathError::EncodedControl));
    }

    #[test]
    fn lenient_readings_cut_where_lenient_backends_cut() {
        assert_eq!(lenient_reading("/%5Cadmin"), "/admin");
        assert_eq!(lenient_reading("/admin%2Fusers"), "/admin/users");
        assert_eq!(lenient_reading("/admin;x"), "/admin");
        assert_eq!(lenient_reading("/admin%3Bx/y"), "/admin/y");
        assert_eq!(lenient_reading("/a;b/c;d/"), "/a/c/");
        assert_eq!(lenient_reading("/;x"), "/");
    }

    #[test]
    fn ambiguous_paths_are_recognised() {
        for path in ["/a%2Fb", "/a;b", "/a%5Cb", "/a%3Bb"] {
            assert!(is_ambiguous_path(path), "{path}");
        }
        assert!(!is_ambiguous_path("/a/b%20c"));
        let canonical = canonical_path("/a\\b").unwrap();
        assert!(is_ambiguous_path(&canonical));
    }

    proptest! {
        #[test]
        fn canonical_paths_are_fixed_points(path in "/[a-zé%/.;\\\\0-9A-F]{0,16}") {
            if let Ok(once) = canonical_path(&path) {
                let twice = canonical_path(&once).map(Cow::into_owned);
                prop_assert_eq!(twice, Ok(once.clone().into_owned()));
                prop_assert!(once.is_ascii());
            }
        }

        #[test]
        fn canonical_authorities_are_fixed_points(authority in "[a-zA-Z0-9.:\\[\\]_-]{0,20}") {
            if let Ok(once) = canonical_authority(&authority) {
                let text = once.to_header_text();
                let twice = canonical_authority(&text).expect("canonical text parses");
                prop_assert_eq!(twice.to_header_text(), text.clone());
                prop_assert_eq!(twice.host, once.host);
            }
        }
    }
}
