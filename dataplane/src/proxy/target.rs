//! The first phase of every request: decide, once, what the client asked for.
//!
//! The host, the path and the message framing are checked and put in canonical form here,
//! and the request's headers are rewritten to say exactly that, so the router, the
//! policies, the cache and the upstream all read one answer. What has two readings is
//! refused: a second Host, a port that is not a number, an absolute-form URI naming another
//! host than the Host header, a transfer coding Sluice would drop.

use bytes::Bytes;
use http::header::{COOKIE, HOST, HeaderValue, TRANSFER_ENCODING};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Uri, Version};

use crate::canonical::{CanonicalAuthority, canonical_authority, canonical_path};

/// What the client asked for, in canonical form.
#[derive(Debug, Clone)]
pub struct RequestTarget {
    /// Lower case, no port, no trailing dot; empty when the client named no host at all
    /// (HTTP/1.0 without Host). Routes are looked up by this.
    pub host: String,
    /// `host[:port]` in canonical form, which the upstream gets as `Host`; `None` with an
    /// empty `host`.
    pub authority: Option<HeaderValue>,
    pub path_and_query: PathAndQuery,
}

/// Why a request was refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRefusal {
    /// 400: the host, path or framing has no single reading.
    BadRequest,
    /// 501: a transfer coding other than `chunked`, which Sluice would silently drop.
    UnsupportedTransferCoding,
}

/// Checks the request's target and framing and rewrites its headers into canonical form:
/// one `Host` with the canonical authority, one `Cookie` field.
pub fn canonical_target(parts: &mut Parts) -> Result<RequestTarget, TargetRefusal> {
    check_transfer_coding(&parts.headers)?;
    let authority = requested_authority(parts)?;
    let path_and_query = canonical_path_and_query(&parts.uri).ok_or(TargetRefusal::BadRequest)?;
    let (host, authority) = match authority {
        Some(authority) => {
            let value = HeaderValue::from_str(&authority.to_header_text())
                .map_err(|_| TargetRefusal::BadRequest)?;
            parts.headers.insert(HOST, value.clone());
            (authority.host.into_owned(), Some(value))
        }
        None => (String::new(), None),
    };
    join_cookies(&mut parts.headers);
    Ok(RequestTarget {
        host,
        authority,
        path_and_query,
    })
}

/// The authority the request names, checked: the URI's (HTTP/2 `:authority`, or an
/// absolute-form request target), else the single `Host` header. When both are present
/// they must name the same host (RFC 9112 §3.2.2 lets the URI win, but a backend that
/// reads the header instead would serve another site than Sluice routed and protected).
fn requested_authority(
    parts: &Parts,
) -> Result<Option<CanonicalAuthority<'static>>, TargetRefusal> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        // RFC 9112 §3.2: more than one Host is a 400.
        return Err(TargetRefusal::BadRequest);
    }
    let from_header = header
        .map(|value| {
            let text = value.to_str().map_err(|_| TargetRefusal::BadRequest)?;
            canonical_authority(text)
                .map(CanonicalAuthority::into_owned)
                .map_err(|_| TargetRefusal::BadRequest)
        })
        .transpose()?;
    let from_uri = parts
        .uri
        .authority()
        .map(|authority| {
            canonical_authority(authority.as_str())
                .map(CanonicalAuthority::into_owned)
                .map_err(|_| TargetRefusal::BadRequest)
        })
        .transpose()?;
    match (from_uri, from_header) {
        (Some(uri), Some(header)) if uri.host != header.host => Err(TargetRefusal::BadRequest),
        (Some(uri), _) => Ok(Some(uri)),
        (None, Some(header)) => Ok(Some(header)),
        // HTTP/1.0 may name no host; HTTP/1.1 and later must (RFC 9112 §3.2).
        (None, None) if parts.version <= Version::HTTP_10 => Ok(None),
        (None, None) => Err(TargetRefusal::BadRequest),
    }
}

/// Only `chunked` is a transfer coding Sluice decodes; a body that also carries `gzip`
/// would reach the upstream still compressed and unlabelled (RFC 9112 §6.1: 501).
fn check_transfer_coding(headers: &http::HeaderMap) -> Result<(), TargetRefusal> {
    if !headers.contains_key(TRANSFER_ENCODING) {
        return Ok(());
    }
    let mut chunked = 0;
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| TargetRefusal::BadRequest)?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                return Err(TargetRefusal::UnsupportedTransferCoding);
            }
        }
    }
    if chunked > 1 {
        return Err(TargetRefusal::BadRequest);
    }
    Ok(())
}

/// HTTP/2 clients may split `cookie` into one field per cookie (RFC 9113 §8.2.3); an
/// HTTP/1.1 upstream, and everything in Sluice that reads cookies, expects one field.
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = Vec::with_capacity(first.len() * 2);
    for value in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(COOKIE, value);
    }
}

/// The request's path in canonical form, and its query as sent; `None` when the path must
/// be refused.
pub fn canonical_path_and_query(uri: &Uri) -> Option<PathAndQuery> {
    match canonical_path(uri.path()).ok()? {
        // An absolute-form URI with an empty path (`http://a.test?x=1`) keeps its query
        // as `?x=1`; it is the same request as `/?x=1`, and keyed as one.
        std::borrow::Cow::Borrowed(_) => match uri.path_and_query() {
            Some(path_and_query) if path_and_query.as_str().starts_with('/') => {
                Some(path_and_query.clone())
            }
            Some(path_and_query) => PathAndQuery::from_maybe_shared(Bytes::from(format!(
                "/{}",
                path_and_query.as_str()
            )))
            .ok(),
            None => Some(PathAndQuery::from_static("/")),
        },
        std::borrow::Cow::Owned(canonical) => {
            let joined = match uri.query() {
                Some(query) => format!("{canonical}?{query}"),
                None => canonical,
            };
            PathAndQuery::from_maybe_shared(Bytes::from(joined)).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().version(version).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn target(
        version: Version,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Result<(String, Option<String>, String), TargetRefusal> {
        let mut parts = parts(version, uri, headers);
        let target = canonical_target(&mut parts)?;
        let host_header = parts
            .headers
            .get(HOST)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            host_header.as_deref(),
            target.authority.as_ref().map(|v| v.to_str().unwrap())
        );
        Ok((target.host, host_header, target.path_and_query.to_string()))
    }

    const H11: Version = Version::HTTP_11;

    #[test]
    fn host_header_and_uri_authority_give_one_canonical_host() {
        assert_eq!(
            target(H11, "/a?b", &[("host", "Members.Test.:8080")]).unwrap(),
            (
                "members.test".into(),
                Some("members.test:8080".into()),
                "/a?b".into()
            )
        );
        // Absolute form: the URI wins, and the Host it agrees with is rewritten to it.
        assert_eq!(
            target(H11, "http://members.test:81/x", &[("host", "MEMBERS.test")]).unwrap(),
            (
                "members.test".into(),
                Some("members.test:81".into()),
                "/x".into()
            )
        );
        // HTTP/2 carries :authority in the URI, often with no Host at all.
        assert_eq!(
            target(Version::HTTP_2, "https://members.test/x", &[])
                .unwrap()
                .1,
            Some("members.test".into())
        );
        // HTTP/1.0 may leave the host out.
        assert_eq!(
            target(Version::HTTP_10, "/", &[]).unwrap(),
            (String::new(), None, "/".into())
        );
    }

    #[test]
    fn hosts_with_two_readings_are_refused() {
        for (uri, headers) in [
            ("/", vec![("host", "members.test:abc")]),
            ("/", vec![("host", "members.test:80:80")]),
            ("/", vec![("host", "members.test"), ("host", "public.test")]),
            (
                "/",
                vec![("host", "members.test"), ("host", "members.test")],
            ),
            ("/", vec![]),
            ("http://members.test:abc/", vec![("host", "members.test")]),
            ("http://public.test/", vec![("host", "members.test")]),
            ("http://user@members.test/", vec![]),
        ] {
            assert_eq!(
                target(H11, uri, &headers),
                Err(TargetRefusal::BadRequest),
                "{uri} {headers:?}"
            );
        }
        assert_eq!(
            target(Version::HTTP_2, "https://members.test:abc/", &[]),
            Err(TargetRefusal::BadRequest)
        );
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_not_implemented() {
        let host = ("host", "a.test");
        assert!(target(H11, "/", &[host, ("transfer-encoding", "chunked")]).is_ok());
        assert_eq!(
            target(H11, "/", &[host, ("transfer-encoding", "gzip, chunked")]),
            Err(TargetRefusal::UnsupportedTransferCoding)
        );
        assert_eq!(
            target(H11, "/", &[host, ("transfer-encoding", "chunked, chunked")]),
            Err(TargetRefusal::BadRequest)
        );
    }

    #[test]
    fn split_cookie_fields_are_joined_once() {
        let mut parts = parts(
            Version::HTTP_2,
            "https://a.test/",
            &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
        );
        canonical_target(&mut parts).unwrap();
        let cookies: Vec<_> = parts.headers.get_all(COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
    }

    #[test]
    fn paths_are_canonical_and_queries_untouched() {
        let path =
            |uri: &str| canonical_path_and_query(&uri.parse().unwrap()).map(|p| p.to_string());
        assert_eq!(path("/a/b?x=1&y=%2F").as_deref(), Some("/a/b?x=1&y=%2F"));
        assert_eq!(path("//a//%62?q").as_deref(), Some("/a/b?q"));
        assert_eq!(path("/a/../etc?q"), None);
        assert_eq!(path("http://example.com").as_deref(), Some("/"));
        assert_eq!(path("http://example.com?x=1").as_deref(), Some("/?x=1"));
        assert_eq!(path("/caf%c3%a9").as_deref(), Some("/caf%C3%A9"));
    }
}
