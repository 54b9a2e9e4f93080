//! HTTP caching rules (RFC 9111) for a shared cache: which responses may be stored, for
//! how long they are fresh, which variant a request may be served, and when a stored
//! response answers a conditional request with 304. Pure functions over headers and
//! times, so every rule is tested on its own; the cache itself only stores and looks up.
//!
//! Where the RFC leaves room, the choice is the one that cannot leak a response to the
//! wrong client: `private` and `no-cache` with field names count as the whole directive,
//! an unparsable `max-age` makes a response stale, `Vary: *` is never stored.

use std::time::{Duration, SystemTime};

use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, DATE, ETAG, EXPIRES, HeaderName, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, PRAGMA, SET_COOKIE, VARY,
};
use http::{HeaderMap, Method, StatusCode};

/// The largest number of seconds a cache must handle (RFC 9111 §1.2.2); every duration
/// read from a header is capped at it, so no arithmetic on them can overflow.
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The `Cache-Control` directives a shared cache acts on, from every `Cache-Control` field
/// of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<Seconds>,
    pub s_maxage: Option<Seconds>,
    pub stale_while_revalidate: Option<Seconds>,
    pub stale_if_error: Option<Seconds>,
    /// Request only: answer from the cache or with 504.
    pub only_if_cached: bool,
}

/// A delta-seconds value; [`Seconds::Invalid`] when the directive was present but its
/// value was not a number (then the response is treated as stale, RFC 9111 §1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seconds {
    Valid(u64),
    Invalid,
}

impl Seconds {
    fn parse(value: Option<&str>) -> Seconds {
        match value.map(|text| text.trim_matches('"').parse::<u64>()) {
            // RFC 9111 §1.2.2: larger values (or ones too large to parse) count as 2^31.
            Some(Ok(seconds)) => Seconds::Valid(seconds.min(MAX_DELTA_SECONDS)),
            Some(Err(error)) if *error.kind() == std::num::IntErrorKind::PosOverflow => {
                Seconds::Valid(MAX_DELTA_SECONDS)
            }
            _ => Seconds::Invalid,
        }
    }

    /// As a duration; an invalid value counts as zero.
    pub fn duration(self) -> Duration {
        match self {
            Seconds::Valid(seconds) => Duration::from_secs(seconds),
            Seconds::Invalid => Duration::ZERO,
        }
    }
}

impl CacheControl {
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut parsed = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(text) = value.to_str() else {
                // Not text: nothing in it can be trusted, so the strictest reading.
                parsed.no_store = true;
                continue;
            };
            for directive in split_list(text) {
                let (name, argument) = match directive.split_once('=') {
                    Some((name, argument)) => (name.trim(), Some(argument.trim())),
                    None => (directive, None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => parsed.no_store = true,
                    "no-cache" => parsed.no_cache = true,
                    "private" => parsed.private = true,
                    "public" => parsed.public = true,
                    "must-revalidate" => parsed.must_revalidate = true,
                    "proxy-revalidate" => parsed.proxy_revalidate = true,
                    "only-if-cached" => parsed.only_if_cached = true,
                    // The first of a repeated directive wins; RFC 9111 §4.2.1 allows
                    // treating duplicates as invalid, and the first is the usual choice.
                    "max-age" => {
                        parsed.max_age.get_or_insert(Seconds::parse(argument));
                    }
                    "s-maxage" => {
                        parsed.s_maxage.get_or_insert(Seconds::parse(argument));
                    }
                    "stale-while-revalidate" => {
                        parsed
                            .stale_while_revalidate
                            .get_or_insert(Seconds::parse(argument));
                    }
                    "stale-if-error" => {
                        parsed
                            .stale_if_error
                            .get_or_insert(Seconds::parse(argument));
                    }
                    _ => {}
                }
            }
        }
        parsed
    }
}

/// The comma-separated members of a list field, quoted commas kept inside their member.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    let mut members = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate() {
        if escaped {
            // RFC 9110 §5.6.4: inside a quoted string, `\` takes the next byte as it is.
            escaped = false;
            continue;
        }
        match byte {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                members.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    members.push(&text[start..]);
    members
        .into_iter()
        .map(str::trim)
        .filter(|member| !member.is_empty())
}

/// What a policy lets the rules assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRules {
    /// Freshness when the response gives none (or always, without `respect_cache_control`).
    pub default_ttl: Duration,
    /// Let the upstream's `s-maxage`, `max-age` and `Expires` decide freshness.
    /// `no-store`, `private`, `Vary` and `Set-Cookie` are honoured either way.
    pub respect_cache_control: bool,
    /// Serve a stale response while one background request refreshes it, for this long
    /// past its freshness (the response's own `stale-while-revalidate` wins when longer).
    pub stale_while_revalidate: Duration,
    /// Serve a stale response when the upstream fails, for this long past its freshness.
    pub stale_if_error: Duration,
    /// Store responses that set cookies (never by default: they are usually per user).
    pub store_set_cookie: bool,
    /// The statuses stored for `default_ttl` when the response itself gives no freshness
    /// (every response, without `respect_cache_control`); a subset of
    /// [`HEURISTIC_STATUSES`]. Others are stored only with explicit freshness.
    pub ttl_statuses: Vec<u16>,
}

/// The statuses RFC 9110 §15.1 lets a cache store without explicit freshness ("heuristically
/// cacheable"); what a policy's `ttl_statuses` may name.
pub const HEURISTIC_STATUSES: [u16; 12] =
    [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Why a response is not stored; the `detail` of its `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Not a cacheable status code.
    Status,
    NoStore,
    Private,
    /// The request carried `Authorization` and the response did not say it may be shared.
    Authorization,
    SetCookie,
    /// `Vary: *`: no request could be known to match.
    VaryStar,
    /// Fresh for no time at all, and not revalidatable for stale serving either.
    NoLifetime,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NoLifetime => "no-lifetime",
        }
    }
}

/// How long a stored response may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Fresh for this long from when it was generated (see [`initial_age`]).
    pub fresh_for: Duration,
    /// Then served while one request revalidates it, for this long.
    pub stale_while_revalidate: Duration,
    /// Then (or meanwhile) served when the upstream fails, for this long.
    pub stale_if_error: Duration,
    /// Every use needs revalidation: `no-cache` (stored, never served without asking).
    pub revalidate_always: bool,
}

/// Where a stored response stands at some age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Fresh {
        remaining: Duration,
    },
    /// Servable while one request refreshes it.
    StaleWhileRevalidate {
        stale_for: Duration,
    },
    /// Servable only when the upstream fails.
    StaleIfError {
        stale_for: Duration,
    },
    /// Not servable; still usable to revalidate (its validators).
    Expired,
}

impl Lifetime {
    /// Where a response of this lifetime stands at `age` (its initial age plus the time it
    /// has been stored). `no-cache` responses are stale from the start.
    pub fn standing(&self, age: Duration) -> Standing {
        let fresh_for = if self.revalidate_always {
            Duration::ZERO
        } else {
            self.fresh_for
        };
        let Some(stale_for) = age.checked_sub(fresh_for) else {
            return Standing::Fresh {
                remaining: fresh_for - age,
            };
        };
        if !self.revalidate_always && stale_for < self.stale_while_revalidate {
            Standing::StaleWhileRevalidate { stale_for }
        } else if stale_for < self.stale_if_error {
            Standing::StaleIfError { stale_for }
        } else {
            Standing::Expired
        }
    }
}

/// What the cache did with a request, as the `Cache-Status` response header says it
/// (RFC 9211), under the cache name `sluice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the cache; `ttl` is negative when the response was stale.
    Hit {
        ttl: i64,
        detail: Option<&'static str>,
    },
    /// Went to the upstream because the cache had nothing usable; `collapsed` when this
    /// request waited for another's identical one.
    Miss {
        stored: bool,
        collapsed: bool,
        detail: Option<&'static str>,
    },
    /// A stored response was revalidated with the upstream (`fwd-status` is its answer).
    Revalidated { status: u16, stored: bool },
    /// The upstream failed (`fwd_status` is its answer, `None` when there was none) and a
    /// stale response was served in its place (`ttl` is negative).
    StaleOnError { ttl: i64, fwd_status: Option<u16> },
    /// The cache was not consulted (a method it does not serve, a bypass header or cookie).
    Bypass { detail: &'static str },
}

impl CacheOutcome {
    pub fn header_value(self) -> http::HeaderValue {
        // Built by hand (no `format!`): it is made on every cache hit.
        let mut text = String::with_capacity(48);
        text.push_str("sluice");
        let detail = match self {
            CacheOutcome::Hit { ttl, detail } => {
                text.push_str("; hit; ttl=");
                text.push_str(itoa::Buffer::new().format(ttl));
                detail
            }
            CacheOutcome::Miss {
                stored,
                collapsed,
                detail,
            } => {
                text.push_str("; fwd=uri-miss");
                if collapsed {
                    text.push_str("; collapsed");
                }
                if stored {
                    text.push_str("; stored");
                }
                detail
            }
            CacheOutcome::Revalidated { status, stored } => {
                text.push_str("; fwd=stale; fwd-status=");
                text.push_str(itoa::Buffer::new().format(status));
                if stored {
                    text.push_str("; stored");
                }
                None
            }
            CacheOutcome::StaleOnError { ttl, fwd_status } => {
                // Forwarded, so not a `hit` (RFC 9211 §2.1): the stored response stood in.
                text.push_str("; fwd=stale");
                if let Some(status) = fwd_status {
                    text.push_str("; fwd-status=");
                    text.push_str(itoa::Buffer::new().format(status));
                }
                text.push_str("; ttl=");
                text.push_str(itoa::Buffer::new().format(ttl));
                Some("stale-if-error")
            }
            CacheOutcome::Bypass { detail } => {
                text.push_str("; fwd=bypass");
                Some(detail)
            }
        };
        if let Some(detail) = detail {
            text.push_str("; detail=");
            text.push_str(detail);
        }
        // Only tokens and numbers go in: always a valid header value.
        http::HeaderValue::from_str(&text).unwrap_or(http::HeaderValue::from_static("sluice"))
    }
}

/// Status codes a shared cache may store (RFC 9110 §15.1's heuristically cacheable ones;
/// others only with explicit freshness, which this cache does not bother with).
pub fn cacheable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether this response to this request may be stored, and for how long. `authenticated`
/// says the client proved who it is some other way than an `Authorization` header that is
/// still in `request` (an Auth policy stripped it, or checked an API key or a cookie): the
/// answer may be personal all the same.
pub fn storable(
    rules: &CacheRules,
    request: &HeaderMap,
    authenticated: bool,
    status: StatusCode,
    response: &HeaderMap,
) -> Result<Lifetime, NotStored> {
    if !cacheable_status(status) {
        return Err(NotStored::Status);
    }
    let request_control = CacheControl::parse(request);
    let control = CacheControl::parse(response);
    if control.no_store || request_control.no_store {
        return Err(NotStored::NoStore);
    }
    if control.private {
        return Err(NotStored::Private);
    }
    // RFC 9111 §3.5: a shared cache stores a response to an authenticated request only
    // when the response says it may be shared.
    if (authenticated || request.contains_key(AUTHORIZATION))
        && !shared_with_authenticated(&control)
    {
        return Err(NotStored::Authorization);
    }
    if response.contains_key(SET_COOKIE) && !rules.store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if vary_names(response).is_none() {
        return Err(NotStored::VaryStar);
    }
    let explicit = if rules.respect_cache_control {
        explicit_lifetime(&control, response)
    } else {
        None
    };
    // A 404 the upstream said nothing about may be a moment's state (a page not yet
    // published): kept for the policy's ttl only where the policy asks for it.
    let fresh_for = match explicit {
        Some(lifetime) => lifetime,
        None if rules.ttl_statuses.contains(&status.as_u16()) => rules.default_ttl,
        None => return Err(NotStored::Status),
    };
    let revalidate_always = control.no_cache || pragma_no_cache(response);
    // `must-revalidate`/`proxy-revalidate`, and `no-cache` (RFC 9111 §4.2.4): never served
    // stale. `s-maxage` implies `proxy-revalidate` (§5.2.2.10): only the response's own
    // stale directives (RFC 5861) widen it, not the policy's.
    let may_serve_stale =
        !(control.must_revalidate || control.proxy_revalidate || revalidate_always);
    let window = |policy: Duration, own: Option<Seconds>| {
        let own = own.map_or(Duration::ZERO, Seconds::duration);
        if !may_serve_stale {
            Duration::ZERO
        } else if control.s_maxage.is_some() {
            own
        } else {
            policy.max(own)
        }
    };
    let lifetime = Lifetime {
        fresh_for,
        stale_while_revalidate: window(
            rules.stale_while_revalidate,
            control.stale_while_revalidate,
        ),
        stale_if_error: window(rules.stale_if_error, control.stale_if_error),
        revalidate_always,
    };
    if lifetime.fresh_for.is_zero()
        && lifetime.stale_while_revalidate.is_zero()
        && lifetime.stale_if_error.is_zero()
        && !has_validator(response)
    {
        return Err(NotStored::NoLifetime);
    }
    Ok(lifetime)
}

/// Whether a response may answer authenticated requests (RFC 9111 §3.5): only when it says
/// it may be shared.
pub fn may_answer_authenticated(response: &HeaderMap) -> bool {
    shared_with_authenticated(&CacheControl::parse(response))
}

fn shared_with_authenticated(control: &CacheControl) -> bool {
    control.public || control.s_maxage.is_some() || control.must_revalidate
}

/// The stored headers updated by a 304 that revalidated them (RFC 9111 §4.3.4): each field
/// the 304 carries replaces the stored one, except those that describe the body, which the
/// 304 does not have.
pub fn freshened_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    for name in not_modified.keys() {
        if matches!(
            name.as_str(),
            "content-length" | "content-encoding" | "content-range" | "transfer-encoding"
        ) {
            continue;
        }
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// The conditional headers that ask the upstream whether a stored response is still good:
/// its `ETag` as `If-None-Match`, its `Last-Modified` as `If-Modified-Since`.
pub fn validators(stored: &HeaderMap) -> Vec<(HeaderName, http::HeaderValue)> {
    let mut conditions = Vec::new();
    if let Some(etag) = stored.get(ETAG) {
        conditions.push((IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = stored.get(LAST_MODIFIED) {
        conditions.push((IF_MODIFIED_SINCE, modified.clone()));
    }
    conditions
}

/// The freshness the response states: `s-maxage`, else `max-age`, else `Expires` minus
/// `Date` (an invalid `Expires` means already expired).
fn explicit_lifetime(control: &CacheControl, response: &HeaderMap) -> Option<Duration> {
    if let Some(seconds) = control.s_maxage.or(control.max_age) {
        return Some(seconds.duration());
    }
    let expires = response.get(EXPIRES)?;
    let Some(expires) = http_date(expires) else {
        return Some(Duration::ZERO);
    };
    // Without a Date, the response was generated as it arrived (RFC 9111 §4.2.1).
    let date = response
        .get(DATE)
        .and_then(http_date)
        .unwrap_or_else(SystemTime::now);
    Some(
        expires
            .duration_since(date)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(MAX_DELTA_SECONDS)),
    )
}

fn pragma_no_cache(headers: &HeaderMap) -> bool {
    !headers.contains_key(CACHE_CONTROL)
        && headers.get_all(PRAGMA).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|text| split_list(text).any(|d| d.eq_ignore_ascii_case("no-cache")))
        })
}

fn has_validator(response: &HeaderMap) -> bool {
    response.contains_key(ETAG) || response.contains_key(LAST_MODIFIED)
}

fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The age the response already had when it arrived: its `Age`, or more when its `Date`
/// says it was generated earlier than that (RFC 9111 §4.2.3, without the request-time
/// correction a loopback hop does not need).
pub fn initial_age(response: &HeaderMap, arrived: SystemTime) -> Duration {
    let stated = response
        .get(AGE)
        .and_then(|age| age.to_str().ok())
        .map(|age| Seconds::parse(Some(age.trim())).duration())
        .unwrap_or(Duration::ZERO);
    let apparent = response
        .get(DATE)
        .and_then(http_date)
        .and_then(|date| arrived.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    stated
        .max(apparent)
        .min(Duration::from_secs(MAX_DELTA_SECONDS))
}

/// The request header names a response varies on, lower case and sorted (so `Vary:
/// Accept-Encoding, accept-language` and `Vary: Accept-Language, Accept-Encoding` name the
/// same variants); `None` for `Vary: *`.
pub fn vary_names(response: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in response.get_all(VARY) {
        let text = value.to_str().ok()?;
        for member in split_list(text) {
            if member == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(member.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// What a request sends for the headers a response varies on: one entry per name, its
/// values joined with ", " and surrounding spaces trimmed (RFC 9111 §4.1 allows this
/// normalisation), `None` where it sends none.
pub fn vary_values(request: &HeaderMap, names: &[HeaderName]) -> Vec<Option<Vec<u8>>> {
    names
        .iter()
        .map(|name| {
            let values: Vec<&[u8]> = request
                .get_all(name)
                .iter()
                .map(|value| value.as_bytes().trim_ascii())
                .collect();
            // Compared as the bytes sent: values that are not text still tell variants apart.
            (!values.is_empty()).then(|| values.join(b", ".as_slice()))
        })
        .collect()
}

/// Whether a request may be served from the cache at all (it may still miss).
pub fn request_may_use_cache(method: &Method, request: &HeaderMap) -> bool {
    let control = CacheControl::parse(request);
    (*method == Method::GET || *method == Method::HEAD) && !control.no_store
}

/// Whether the request insists on revalidation (`no-cache`, `max-age=0`, or `Pragma:
/// no-cache` without `Cache-Control`).
pub fn request_requires_revalidation(request: &HeaderMap) -> bool {
    let control = CacheControl::parse(request);
    control.no_cache
        || matches!(control.max_age, Some(Seconds::Valid(0) | Seconds::Invalid))
        || pragma_no_cache(request)
}

/// Whether a stored response answers this conditional GET/HEAD with 304 (RFC 9110 §13.2.2):
/// `If-None-Match` when present (weak comparison; `*` matches any stored response), else
/// `If-Modified-Since` against the stored `Last-Modified` (or `Date`).
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let Some(etag) = stored.get(ETAG).and_then(|etag| etag.to_str().ok()) else {
            return request
                .get_all(IF_NONE_MATCH)
                .iter()
                .any(|value| value.to_str().is_ok_and(|text| text.trim() == "*"));
        };
        let stored_opaque = opaque_tag(etag);
        return request.get_all(IF_NONE_MATCH).iter().any(|value| {
            value.to_str().is_ok_and(|text| {
                split_list(text).any(|tag| tag == "*" || opaque_tag(tag) == stored_opaque)
            })
        });
    }
    let Some(since) = request.get(IF_MODIFIED_SINCE).and_then(http_date) else {
        return false;
    };
    let modified = stored
        .get(LAST_MODIFIED)
        .or_else(|| stored.get(DATE))
        .and_then(http_date);
    modified.is_some_and(|modified| modified <= since)
}

/// An entity tag without its weakness mark, for weak comparison.
fn opaque_tag(tag: &str) -> &str {
    let tag = tag.trim();
    tag.strip_prefix("W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::header_map as headers;

    fn rules() -> CacheRules {
        CacheRules {
            default_ttl: Duration::from_secs(60),
            respect_cache_control: true,
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
            store_set_cookie: false,
            ttl_statuses: vec![200, 203, 204, 300, 301, 308],
        }
    }

    fn store(
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
    ) -> Result<Lifetime, NotStored> {
        storable(
            &rules(),
            &headers(request),
            false,
            StatusCode::from_u16(status).unwrap(),
            &headers(response),
        )
    }

    #[test]
    fn cache_control_is_read_from_every_field_with_quotes_and_case() {
        let parsed = CacheControl::parse(&headers(&[
            (
                "cache-control",
                "Public, MAX-AGE=30, private=\"set-cookie, x-a\"",
            ),
            (
                "cache-control",
                "s-maxage=\"90\", max-age=5, stale-if-error=bogus",
            ),
        ]));
        assert!(parsed.public && parsed.private);
        assert_eq!(parsed.max_age, Some(Seconds::Valid(30)), "the first wins");
        assert_eq!(parsed.s_maxage, Some(Seconds::Valid(90)));
        assert_eq!(parsed.stale_if_error, Some(Seconds::Invalid));
        assert!(!parsed.no_store);
    }

    #[test]
    fn only_what_may_be_shared_is_stored() {
        assert_eq!(
            store(&[], 200, &[]).map(|l| l.fresh_for),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(store(&[], 500, &[]), Err(NotStored::Status));
        assert_eq!(store(&[], 206, &[]), Err(NotStored::Status));
        assert_eq!(
            store(&[], 200, &[("cache-control", "no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(&[("cache-control", "no-store")], 200, &[]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(&[], 200, &[("cache-control", "private=\"x-user\"")]),
            Err(NotStored::Private),
            "private with field names counts as private"
        );
        assert_eq!(
            store(&[], 200, &[("set-cookie", "id=1")]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            store(&[], 200, &[("vary", "Accept, *")]),
            Err(NotStored::VaryStar)
        );
        // Authenticated requests: only when the response says it may be shared.
        let authorized = [("authorization", "Bearer t")];
        assert_eq!(store(&authorized, 200, &[]), Err(NotStored::Authorization));
        for shared in ["public", "s-maxage=10", "must-revalidate"] {
            assert!(
                store(&authorized, 200, &[("cache-control", shared)]).is_ok(),
                "{shared}"
            );
        }
        // Authenticated by a policy that took the header away: the same rule.
        let stripped = storable(
            &rules(),
            &HeaderMap::new(),
            true,
            StatusCode::OK,
            &HeaderMap::new(),
        );
        assert_eq!(stripped, Err(NotStored::Authorization));
        assert!(!may_answer_authenticated(&HeaderMap::new()));
        assert!(may_answer_authenticated(&headers(&[(
            "cache-control",
            "public, max-age=9"
        )])));
        let with_cookies = CacheRules {
            store_set_cookie: true,
            ..rules()
        };
        assert!(
            storable(
                &with_cookies,
                &HeaderMap::new(),
                false,
                StatusCode::OK,
                &headers(&[("set-cookie", "a=b")]),
            )
            .is_ok()
        );
    }

    /// The defect: 404, 405, 410, 414 and 501 answers the upstream said nothing about were
    /// stored for the policy's ttl, so a page missing for a moment stayed missing for it.
    #[test]
    fn without_explicit_freshness_only_the_policys_statuses_are_stored() {
        let fresh = |status: u16, response: &[(&str, &str)]| {
            store(&[], status, response).map(|lifetime| lifetime.fresh_for)
        };
        for status in [404, 405, 410, 414, 501] {
            assert_eq!(fresh(status, &[]), Err(NotStored::Status), "{status}");
            assert_eq!(
                fresh(status, &[("cache-control", "max-age=30")]),
                Ok(Duration::from_secs(30)),
                "{status} with max-age"
            );
            assert_eq!(
                fresh(status, &[("cache-control", "s-maxage=20")]),
                Ok(Duration::from_secs(20))
            );
            assert_eq!(
                fresh(
                    status,
                    &[
                        ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
                        ("expires", "Tue, 01 Dec 2026 10:01:00 GMT"),
                    ]
                ),
                Ok(Duration::from_secs(60))
            );
        }
        for status in [200, 203, 204, 300, 301, 308] {
            assert_eq!(fresh(status, &[]), Ok(Duration::from_secs(60)), "{status}");
        }
        assert_eq!(
            fresh(500, &[("cache-control", "max-age=30")]),
            Err(NotStored::Status)
        );

        let with = |ttl_statuses: Vec<u16>, respect_cache_control: bool| CacheRules {
            ttl_statuses,
            respect_cache_control,
            ..rules()
        };
        let store_with = |rules: &CacheRules, status: u16, response: &[(&str, &str)]| {
            storable(
                rules,
                &HeaderMap::new(),
                false,
                StatusCode::from_u16(status).unwrap(),
                &headers(response),
            )
            .map(|lifetime| lifetime.fresh_for)
        };
        let errors_too = with(vec![200, 404, 410], true);
        assert_eq!(
            store_with(&errors_too, 404, &[]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(store_with(&errors_too, 301, &[]), Err(NotStored::Status));
        // Without respectCacheControl every response is stored for the ttl, so the list
        // decides for all of them.
        let ttl_only = with(vec![200], false);
        assert_eq!(
            store_with(&ttl_only, 404, &[("cache-control", "max-age=30")]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store_with(&ttl_only, 200, &[("cache-control", "max-age=30")]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            store_with(&with(vec![], true), 200, &[]),
            Err(NotStored::Status)
        );
    }

    #[test]
    fn freshness_comes_from_s_maxage_then_max_age_then_expires_then_the_policy() {
        let fresh = |response: &[(&str, &str)]| store(&[], 200, response).map(|l| l.fresh_for);
        let secs = |n| Ok(Duration::from_secs(n));
        assert_eq!(
            fresh(&[("cache-control", "max-age=10, s-maxage=20")]),
            secs(20)
        );
        assert_eq!(fresh(&[("cache-control", "max-age=10")]), secs(10));
        assert_eq!(
            fresh(&[
                ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
                ("expires", "Tue, 01 Dec 2026 10:05:00 GMT"),
            ]),
            secs(300)
        );
        assert_eq!(
            fresh(&[("date", "Tue, 01 Dec 2026 10:00:00 GMT"), ("expires", "0")]),
            secs(0),
            "an invalid Expires is already expired"
        );
        assert_eq!(fresh(&[("cache-control", "max-age=soon")]), secs(0));
        assert_eq!(fresh(&[]), secs(60), "the policy's ttl");
        let ignoring = CacheRules {
            respect_cache_control: false,
            ..rules()
        };
        let lifetime = storable(
            &ignoring,
            &HeaderMap::new(),
            false,
            StatusCode::OK,
            &headers(&[("cache-control", "max-age=5")]),
        );
        assert_eq!(lifetime.map(|l| l.fresh_for), secs(60));
    }

    #[test]
    fn stale_windows_come_from_the_policy_or_the_response_and_revalidation_forbids_them() {
        let lifetime = store(
            &[],
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=600")],
        )
        .unwrap();
        assert_eq!(lifetime.stale_while_revalidate, Duration::from_secs(600));
        assert_eq!(lifetime.stale_if_error, Duration::from_secs(300));
        let strict = store(&[], 200, &[("cache-control", "max-age=1, must-revalidate")]).unwrap();
        assert_eq!(strict.stale_while_revalidate, Duration::ZERO);
        assert_eq!(strict.stale_if_error, Duration::ZERO);
        assert!(
            store(&[], 200, &[("cache-control", "no-cache")])
                .unwrap()
                .revalidate_always
        );
        assert!(
            store(&[], 200, &[("pragma", "no-cache")])
                .unwrap()
                .revalidate_always
        );
        // no-cache: never served stale, not even on error (RFC 9111 §4.2.4).
        let no_cache = store(&[], 200, &[("cache-control", "no-cache")]).unwrap();
        assert_eq!(no_cache.stale_if_error, Duration::ZERO);
        // s-maxage implies proxy-revalidate: only the response's own windows apply.
        let shared = store(
            &[],
            200,
            &[("cache-control", "s-maxage=5, stale-if-error=9")],
        )
        .unwrap();
        assert_eq!(shared.stale_while_revalidate, Duration::ZERO);
        assert_eq!(shared.stale_if_error, Duration::from_secs(9));
        // Numbers past 2^31 seconds are 2^31 (RFC 9111 §1.2.2): no overflow downstream.
        let huge = store(
            &[],
            200,
            &[("cache-control", "max-age=99999999999999999999999")],
        );
        assert_eq!(
            huge.map(|l| l.fresh_for),
            Ok(Duration::from_secs(MAX_DELTA_SECONDS))
        );
        assert_eq!(
            initial_age(
                &headers(&[("age", "18446744073709551615")]),
                SystemTime::now()
            ),
            Duration::from_secs(MAX_DELTA_SECONDS)
        );
        // Nothing to serve it with: not worth storing.
        assert_eq!(
            store(&[], 200, &[("cache-control", "max-age=0, must-revalidate")]),
            Err(NotStored::NoLifetime)
        );
        assert!(
            store(
                &[],
                200,
                &[
                    ("cache-control", "max-age=0, must-revalidate"),
                    ("etag", "\"v1\"")
                ]
            )
            .is_ok(),
            "a validator makes a 304 possible"
        );
    }

    #[test]
    fn a_stored_response_ages_through_fresh_stale_and_expired() {
        let lifetime = Lifetime {
            fresh_for: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
            revalidate_always: false,
        };
        let at = |seconds| lifetime.standing(Duration::from_secs(seconds));
        assert_eq!(
            at(10),
            Standing::Fresh {
                remaining: Duration::from_secs(50)
            }
        );
        assert_eq!(
            at(70),
            Standing::StaleWhileRevalidate {
                stale_for: Duration::from_secs(10)
            }
        );
        assert_eq!(
            at(100),
            Standing::StaleIfError {
                stale_for: Duration::from_secs(40)
            }
        );
        assert_eq!(at(360), Standing::Expired);
        let no_cache = Lifetime {
            revalidate_always: true,
            ..lifetime
        };
        assert!(matches!(
            no_cache.standing(Duration::from_secs(1)),
            Standing::StaleIfError { .. }
        ));
    }

    #[test]
    fn cache_status_follows_rfc_9211() {
        let text = |outcome: CacheOutcome| outcome.header_value().to_str().unwrap().to_owned();
        assert_eq!(
            text(CacheOutcome::Hit {
                ttl: 42,
                detail: None
            }),
            "sluice; hit; ttl=42"
        );
        assert_eq!(
            text(CacheOutcome::Hit {
                ttl: -3,
                detail: Some("stale-while-revalidate")
            }),
            "sluice; hit; ttl=-3; detail=stale-while-revalidate"
        );
        assert_eq!(
            text(CacheOutcome::Miss {
                stored: true,
                collapsed: true,
                detail: None
            }),
            "sluice; fwd=uri-miss; collapsed; stored"
        );
        assert_eq!(
            text(CacheOutcome::Miss {
                stored: false,
                collapsed: false,
                detail: Some(NotStored::Private.as_str())
            }),
            "sluice; fwd=uri-miss; detail=private"
        );
        assert_eq!(
            text(CacheOutcome::Revalidated {
                status: 304,
                stored: true
            }),
            "sluice; fwd=stale; fwd-status=304; stored"
        );
        assert_eq!(
            text(CacheOutcome::StaleOnError {
                ttl: -7,
                fwd_status: Some(503)
            }),
            "sluice; fwd=stale; fwd-status=503; ttl=-7; detail=stale-if-error"
        );
        assert_eq!(
            text(CacheOutcome::StaleOnError {
                ttl: -7,
                fwd_status: None
            }),
            "sluice; fwd=stale; ttl=-7; detail=stale-if-error"
        );
        let freshened = freshened_headers(
            &headers(&[("etag", "\"a\""), ("content-length", "5"), ("x-old", "1")]),
            &headers(&[
                ("etag", "\"b\""),
                ("content-length", "0"),
                ("cache-control", "max-age=5"),
            ]),
        );
        assert_eq!(freshened.get("etag").unwrap(), "\"b\"");
        assert_eq!(
            freshened.get("content-length").unwrap(),
            "5",
            "the body's length stays"
        );
        assert_eq!(freshened.get("x-old").unwrap(), "1");
        assert_eq!(freshened.get("cache-control").unwrap(), "max-age=5");
        let conditions = validators(&headers(&[
            ("etag", "\"a\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]));
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].0, IF_NONE_MATCH);
        assert_eq!(
            text(CacheOutcome::Bypass {
                detail: "authorization"
            }),
            "sluice; fwd=bypass; detail=authorization"
        );
    }

    #[test]
    fn age_is_the_larger_of_age_and_what_date_implies() {
        let arrived = httpdate::parse_http_date("Tue, 01 Dec 2026 10:00:30 GMT").unwrap();
        assert_eq!(
            initial_age(&headers(&[("age", "5")]), arrived),
            Duration::from_secs(5)
        );
        assert_eq!(
            initial_age(
                &headers(&[("age", "5"), ("date", "Tue, 01 Dec 2026 10:00:00 GMT")]),
                arrived
            ),
            Duration::from_secs(30)
        );
        assert_eq!(
            initial_age(&headers(&[("age", "-3")]), arrived),
            Duration::ZERO
        );
    }

    #[test]
    fn variants_are_named_and_keyed_in_one_order() {
        let names = vary_names(&headers(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "Accept-Encoding"),
        ]))
        .unwrap();
        assert_eq!(names, ["accept-encoding", "accept-language"]);
        assert_eq!(
            vary_names(&headers(&[("vary", "accept-language, Accept-Encoding")])).unwrap(),
            names
        );
        let request = headers(&[("accept-encoding", "gzip"), ("accept-encoding", " br ")]);
        assert_eq!(
            vary_values(&request, &names),
            [Some(b"gzip, br".to_vec()), None]
        );
        // Values that are not text are compared byte for byte, never merged into one.
        let cookie = [HeaderName::from_static("cookie")];
        let value = |bytes: &[u8]| {
            let mut request = HeaderMap::new();
            request.insert("cookie", http::HeaderValue::from_bytes(bytes).unwrap());
            vary_values(&request, &cookie)
        };
        assert_ne!(value(b"name=Zo\xc3\xab"), value(b"x=\xff"));
        assert_eq!(value(b"x=\xff"), value(b"x=\xff"));
    }

    #[test]
    fn conditional_requests_are_answered_from_validators() {
        let stored = headers(&[
            ("etag", "W/\"v2\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        let asks = |request: &[(&str, &str)]| not_modified(&headers(request), &stored);
        assert!(
            asks(&[("if-none-match", "\"v1\", \"v2\"")]),
            "weak comparison"
        );
        assert!(asks(&[("if-none-match", "*")]));
        assert!(!asks(&[("if-none-match", "\"v3\"")]));
        assert!(
            !asks(&[
                ("if-none-match", "\"v3\""),
                ("if-modified-since", "Tue, 01 Dec 2026 11:00:00 GMT"),
            ]),
            "If-None-Match decides when present"
        );
        assert!(asks(&[(
            "if-modified-since",
            "Tue, 01 Dec 2026 10:00:00 GMT"
        )]));
        assert!(!asks(&[(
            "if-modified-since",
            "Tue, 01 Dec 2026 09:59:59 GMT"
        )]));
        assert!(!asks(&[("if-modified-since", "yesterday")]));
        assert!(!asks(&[]));
    }

    #[test]
    fn requests_say_whether_the_cache_may_answer_them() {
        assert!(request_may_use_cache(&Method::GET, &HeaderMap::new()));
        assert!(request_may_use_cache(&Method::HEAD, &HeaderMap::new()));
        assert!(!request_may_use_cache(&Method::POST, &HeaderMap::new()));
        assert!(!request_may_use_cache(
            &Method::GET,
            &headers(&[("cache-control", "no-store")])
        ));
        assert!(request_requires_revalidation(&headers(&[(
            "cache-control",
            "max-age=0"
        )])));
        assert!(request_requires_revalidation(&headers(&[(
            "pragma", "no-cache"
        )])));
        assert!(!request_requires_revalidation(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=60")
        ])));
    }
}
