//! The HTTP caching rules over client and upstream headers (`cache/semantics.rs`), shared
//! by the `cache_control` fuzz target and the in-tree property test.
//!
//! Properties: nothing panics; every duration read from a header is at most 2^31 seconds
//! (RFC 9111 §1.2.2); a list field means the same as one field per member (RFC 9110
//! §5.3), quoted commas and escaped quotes included; what `storable` lets through is never
//! `no-store` or `private`, nor an answer to an `Authorization` request that did not say it
//! may be shared; `Vary` names come back sorted and unique.

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, DATE, ETAG, EXPIRES, HeaderName, HeaderValue,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, PRAGMA, SET_COOKIE, VARY,
};
use http::{HeaderMap, Method, StatusCode};
use sluice_dataplane::cache::CacheRules;
use sluice_dataplane::cache::semantics::{
    CacheControl, HEURISTIC_STATUSES, MAX_DELTA_SECONDS, Seconds, initial_age,
    may_answer_authenticated, not_modified, request_may_use_cache, request_requires_revalidation,
    storable, vary_names, vary_values,
};

use super::text::Text;

const WORDS: &[&str] = &[
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "only-if-cached",
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
    "MAX-AGE",
    "=",
    ",",
    ", ",
    ";",
    "\"",
    "\\",
    "\\\"",
    " ",
    "\t",
    "0",
    "1",
    "60",
    "2147483647",
    "2147483648",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "-1",
    "+5",
    "*",
    "Accept-Encoding",
    "accept-encoding",
    "Cookie",
    "W/",
    "\"v1\"",
    "W/\"v1\"",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Tue, 19 Jan 2038 03:14:08 GMT",
    "Wed, 01 Jan 2020 00:00:00 GMT",
    "Bearer x",
    "a=1",
];

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum FieldChoice {
    CacheControl,
    Pragma,
    Age,
    Date,
    Expires,
    Vary,
    ETag,
    LastModified,
    IfNoneMatch,
    IfModifiedSince,
    Authorization,
    SetCookie,
    AcceptEncoding,
}

impl FieldChoice {
    fn name(self) -> HeaderName {
        match self {
            FieldChoice::CacheControl => CACHE_CONTROL,
            FieldChoice::Pragma => PRAGMA,
            FieldChoice::Age => AGE,
            FieldChoice::Date => DATE,
            FieldChoice::Expires => EXPIRES,
            FieldChoice::Vary => VARY,
            FieldChoice::ETag => ETAG,
            FieldChoice::LastModified => LAST_MODIFIED,
            FieldChoice::IfNoneMatch => IF_NONE_MATCH,
            FieldChoice::IfModifiedSince => IF_MODIFIED_SINCE,
            FieldChoice::Authorization => AUTHORIZATION,
            FieldChoice::SetCookie => SET_COOKIE,
            FieldChoice::AcceptEncoding => http::header::ACCEPT_ENCODING,
        }
    }
}

/// A request, the response to it, and the cache's settings.
#[derive(Debug, Clone, Arbitrary)]
pub struct CacheInput {
    pub request: Vec<(FieldChoice, Text)>,
    pub response: Vec<(FieldChoice, Text)>,
    pub status: u16,
    pub authenticated: bool,
    pub head: bool,
    /// When the response arrived, in seconds since the epoch.
    pub arrived: u64,
    /// How long it has been stored.
    pub stored_for: u64,
    pub default_ttl: u32,
    pub respect_cache_control: bool,
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    pub store_set_cookie: bool,
}

fn headers(fields: &[(FieldChoice, Text)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        if let Ok(value) = HeaderValue::from_bytes(&value.bytes(WORDS)) {
            map.append(name.name(), value);
        }
    }
    map
}

/// The fuzz and property entry point.
pub fn check(input: &CacheInput) {
    let request = headers(&input.request);
    let response = headers(&input.response);
    check_cache_control(&request);
    check_cache_control(&response);

    let arrived = UNIX_EPOCH
        .checked_add(Duration::from_secs(input.arrived))
        .unwrap_or(UNIX_EPOCH);
    let age = initial_age(&response, arrived);
    assert!(
        age <= Duration::from_secs(MAX_DELTA_SECONDS),
        "initial age {age:?} over 2^31 s: {response:?}"
    );

    if let Some(names) = vary_names(&response) {
        assert!(
            names
                .windows(2)
                .all(|pair| pair[0].as_str() < pair[1].as_str()),
            "Vary names not sorted and unique: {names:?}"
        );
        assert_eq!(vary_values(&request, &names).len(), names.len());
    }

    let method = if input.head {
        Method::HEAD
    } else {
        Method::GET
    };
    let _ = request_may_use_cache(&method, &request);
    let _ = request_requires_revalidation(&request);
    let _ = not_modified(&request, &response);
    let shareable = may_answer_authenticated(&response);

    let rules = CacheRules {
        default_ttl: Duration::from_secs(input.default_ttl.into()),
        respect_cache_control: input.respect_cache_control,
        stale_while_revalidate: Duration::from_secs(input.stale_while_revalidate.into()),
        stale_if_error: Duration::from_secs(input.stale_if_error.into()),
        store_set_cookie: input.store_set_cookie,
        ttl_statuses: HEURISTIC_STATUSES.to_vec(),
    };
    let Ok(status) = StatusCode::from_u16(input.status) else {
        return;
    };
    if let Ok(lifetime) = storable(&rules, &request, input.authenticated, status, &response) {
        let control = CacheControl::parse(&response);
        assert!(
            !control.no_store && !control.private,
            "stored although no-store or private: {response:?}"
        );
        assert!(
            !CacheControl::parse(&request).no_store,
            "stored although the request said no-store: {request:?}"
        );
        if input.authenticated || request.contains_key(AUTHORIZATION) {
            assert!(
                shareable,
                "an authenticated answer stored without leave to share it: {response:?}"
            );
        }
        let cap = Duration::from_secs(MAX_DELTA_SECONDS);
        assert!(
            lifetime.fresh_for <= cap.max(rules.default_ttl),
            "fresh for {:?}",
            lifetime.fresh_for
        );
        for window in [lifetime.stale_while_revalidate, lifetime.stale_if_error] {
            assert!(
                window <= cap.max(rules.stale_while_revalidate.max(rules.stale_if_error)),
                "a stale window of {window:?}"
            );
        }
        let _ = lifetime.standing(age.saturating_add(Duration::from_secs(input.stored_for)));
    }
}

/// Delta-seconds are capped, and a list field reads the same as one field per member.
pub fn check_cache_control(headers: &HeaderMap) {
    let parsed = CacheControl::parse(headers);
    for seconds in [
        parsed.max_age,
        parsed.s_maxage,
        parsed.stale_while_revalidate,
        parsed.stale_if_error,
    ]
    .into_iter()
    .flatten()
    {
        if let Seconds::Valid(seconds) = seconds {
            assert!(seconds <= MAX_DELTA_SECONDS, "{seconds} s from {headers:?}");
        }
        assert!(seconds.duration() <= Duration::from_secs(MAX_DELTA_SECONDS));
    }
    let mut split = HeaderMap::new();
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else {
            // Not text: read as no-store whichever way it is split.
            split.append(CACHE_CONTROL, value.clone());
            continue;
        };
        for member in list_members(text) {
            let value = HeaderValue::from_str(member).expect("a part of a header value is one");
            split.append(CACHE_CONTROL, value);
        }
    }
    assert_eq!(
        CacheControl::parse(&split),
        parsed,
        "one field per member reads otherwise: {headers:?} vs {split:?}"
    );
}

/// The members of a list field (RFC 9110 §5.6.1), split at commas outside quoted strings
/// (RFC 9110 §5.6.4: a backslash escapes the next character inside one).
fn list_members(text: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                members.push(text[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
    }
    members.push(text[start..].trim());
    members.retain(|member| !member.is_empty());
    members
}
