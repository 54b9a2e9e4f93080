//! The cache on the request path: whether a request may use it, what a lookup answers
//! (a hit, a 304, a stale response while one refresh runs), and what becomes of the
//! upstream's answer when the request went upstream (stored as it streams, a stored
//! response freshened by a 304, or a stale one served in place of an error).
//!
//! The lookup runs after the auth and rate-limit checks and after the upstream headers are
//! prepared: `Vary` names headers of the request the upstream gets, which is where auth
//! policies have replaced the client's identity headers with verified ones. Whether the
//! client authenticated is decided on what it sent, before any credential was stripped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, COOKIE, DATE, ETAG, EXPIRES,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RANGE, SET_COOKIE, TRANSFER_ENCODING, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use tokio::time::Instant;

use super::body::{RequestFinish, ResponseBody};
use crate::auth::AuthMethodLabel;
use crate::cache::policy_cache::PolicyCache;
use crate::cache::semantics::{
    self, CacheOutcome, Lifetime, NotStored, Standing, not_modified, request_may_use_cache,
    request_requires_revalidation,
};
use crate::cache::store::{CacheKey, Flight, LeaderGuard, Origin, StoredResponse, wait_for_leader};
use crate::ratelimit::cookie_value;

/// The longest a request waits for an identical one already upstream before it goes
/// upstream itself (nginx's `proxy_cache_lock_timeout` default).
pub(super) const COALESCE_WAIT: Duration = Duration::from_secs(5);

/// `Cache-Status` (RFC 9211).
pub(super) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Whether the cache takes part in a request, decided on what the client sent.
pub(super) enum Consult {
    /// Look the request up once its upstream headers are ready.
    Use {
        cache: Arc<PolicyCache>,
        /// The client sent `Authorization` (the policy may strip it before the lookup).
        authorization: bool,
    },
    /// Leave the request alone, and say why in `Cache-Status`.
    Bypass {
        cache: Arc<PolicyCache>,
        detail: &'static str,
    },
}

impl Consult {
    pub fn decide(
        cache: &Arc<PolicyCache>,
        method: &Method,
        headers: &HeaderMap,
        upgrade: bool,
    ) -> Consult {
        let policy = &cache.policy;
        let detail = if upgrade {
            Some("upgrade")
        } else if !policy.methods.contains(method) {
            Some("method")
        } else if !request_may_use_cache(method, headers) {
            Some("no-store")
        } else if has_body(headers) {
            // The body is not part of the key: a GET with one (a search query, say)
            // could otherwise store its answer for everyone's body-less GET.
            Some("body")
        } else if policy
            .bypass_headers
            .iter()
            .any(|name| headers.contains_key(name))
        {
            Some("header")
        } else if headers.contains_key(COOKIE)
            && policy
                .bypass_cookies
                .iter()
                .any(|name| cookie_value(headers, name).is_some())
        {
            Some("cookie")
        } else {
            None
        };
        match detail {
            Some(detail) => Consult::Bypass {
                cache: Arc::clone(cache),
                detail,
            },
            None => Consult::Use {
                cache: Arc::clone(cache),
                authorization: headers.contains_key(AUTHORIZATION),
            },
        }
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

/// Whether the method an Auth policy let the request through by proves who the client is
/// (an answer to it may be personal); client networks do not. A verified client
/// certificate does too.
pub(super) fn authenticates(method: Option<AuthMethodLabel>, client_certificate: bool) -> bool {
    client_certificate
        || matches!(
            method,
            Some(
                AuthMethodLabel::basic
                    | AuthMethodLabel::api_key
                    | AuthMethodLabel::jwt
                    | AuthMethodLabel::forward
            )
        )
}

/// A request that went to the cache and must go upstream, with what the cache needs to
/// deal with the answer.
pub(super) struct Fill {
    pub cache: Arc<PolicyCache>,
    pub key: CacheKey,
    /// What was stored but could not be served as it was: to revalidate, or to serve if
    /// the upstream fails.
    pub stale: Option<Arc<StoredResponse>>,
    /// Held while this request is upstream for its key; others wait for it. Never read:
    /// dropping it (with the `Fill`) is what ends the flight.
    #[expect(dead_code, reason = "held for its Drop")]
    pub leader: Option<LeaderGuard>,
    pub collapsed: bool,
    /// Sluice asked the upstream `If-None-Match`/`If-Modified-Since` of its own.
    pub revalidating: bool,
    /// The request headers as the upstream gets them, without Sluice's own conditions:
    /// what `Vary` is matched on and what the storing rules read.
    pub request_headers: HeaderMap,
    pub authenticated: bool,
    pub origin: Origin,
    pub head: bool,
    /// A `Range` request: served from a stored full response, but its own partial answer
    /// is not stored.
    pub partial: bool,
    /// The policy's purge count when this request went to the cache: a purge since then
    /// means what it fetched may be what was purged, and it is not stored.
    pub purges: u64,
}

/// What a lookup found.
pub(super) enum Lookup {
    /// Answer from the cache; `refresh` when the answer was stale and this request leads
    /// its background refresh.
    Answer {
        response: Response<Bytes>,
        refresh: Option<Fill>,
    },
    Forward(Fill),
}

/// Looks a request up; `headers` are the upstream request's, and gain the stored
/// response's validators when it goes upstream to revalidate it.
pub(super) async fn look_up(
    cache: Arc<PolicyCache>,
    key: CacheKey,
    headers: &mut HeaderMap,
    authenticated: bool,
    origin: Origin,
    head: bool,
) -> Lookup {
    let revalidate = request_requires_revalidation(headers);
    let partial = headers.contains_key(RANGE);
    let mut collapsed = false;
    loop {
        let stored = cache
            .lookup(&key, headers)
            .await
            .filter(|stored| !authenticated || stored.shared_with_authenticated);
        let now = Instant::now();
        let standing = stored.as_ref().map(|stored| stored.standing(now));
        let fill = |stale: Option<Arc<StoredResponse>>, leader, headers: &HeaderMap| Fill {
            cache: Arc::clone(&cache),
            key,
            stale,
            leader,
            collapsed,
            revalidating: false,
            request_headers: headers.clone(),
            authenticated,
            origin: origin.clone(),
            head,
            partial,
            purges: cache.purges(),
        };
        if let (Some(stored), Some(standing), false) = (&stored, standing, revalidate) {
            match standing {
                Standing::Fresh { remaining } => {
                    cache.counters.hits.inc();
                    let outcome = CacheOutcome::Hit {
                        ttl: seconds(remaining),
                        detail: collapsed.then_some("collapsed"),
                    };
                    return Lookup::Answer {
                        response: answer(stored, headers, head, now, outcome),
                        refresh: None,
                    };
                }
                Standing::StaleWhileRevalidate { stale_for } => {
                    cache.counters.stale.inc();
                    let outcome = CacheOutcome::Hit {
                        ttl: stale_ttl(stale_for),
                        detail: Some("stale-while-revalidate"),
                    };
                    let response = answer(stored, headers, head, now, outcome);
                    // One refresh per key: a request that finds one running just answers.
                    let refresh = match cache.flights.join(key) {
                        Flight::Leader(guard) => {
                            let mut refresh = fill(Some(Arc::clone(stored)), Some(guard), headers);
                            refresh.head = false;
                            refresh.partial = false;
                            Some(refresh)
                        }
                        Flight::Follower(_) => None,
                    };
                    return Lookup::Answer { response, refresh };
                }
                Standing::StaleIfError { .. } | Standing::Expired => {}
            }
        }
        // A HEAD or Range answer is not stored: such a request neither leads nor waits.
        let flight = (!head && !partial).then(|| cache.flights.join(key));
        let mut fill = match flight {
            Some(Flight::Leader(guard)) => fill(stored, Some(guard), headers),
            Some(Flight::Follower(done)) if !collapsed => {
                cache.counters.coalesced.inc();
                collapsed = true;
                wait_for_leader(done, COALESCE_WAIT).await;
                continue;
            }
            Some(Flight::Follower(_)) | None => fill(stored, None, headers),
        };
        if let Some(stale) = &fill.stale
            && !headers.contains_key(IF_NONE_MATCH)
            && !headers.contains_key(IF_MODIFIED_SINCE)
        {
            let conditions = semantics::validators(&stale.headers);
            fill.revalidating = !conditions.is_empty();
            for (name, value) in conditions {
                headers.insert(name, value);
            }
        }
        return Lookup::Forward(fill);
    }
}

/// A fresh stored response without `Vary` for `key`, from memory: the answer when there is
/// one. Needs nothing of the upstream request, so it runs before that is prepared.
pub(super) fn fresh_unvaried_hit(
    cache: &PolicyCache,
    key: &CacheKey,
    headers: &HeaderMap,
    authenticated: bool,
    head: bool,
) -> Option<Response<Bytes>> {
    if request_requires_revalidation(headers) {
        return None;
    }
    let stored = cache.memory_lookup(key, headers)?;
    if !stored.vary.is_empty() || (authenticated && !stored.shared_with_authenticated) {
        return None;
    }
    let now = Instant::now();
    let Standing::Fresh { remaining } = stored.standing(now) else {
        return None;
    };
    cache.counters.hits.inc();
    let outcome = CacheOutcome::Hit {
        ttl: seconds(remaining),
        detail: None,
    };
    Some(answer(&stored, headers, head, now, outcome))
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// `ttl` of a stale response: negative, so at least -1 even a moment past freshness.
fn stale_ttl(stale_for: Duration) -> i64 {
    -seconds(stale_for).saturating_add(1)
}

/// Headers a 304 carries from the response it stands for (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [HeaderName; 7] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    VARY,
    LAST_MODIFIED,
];

/// The answer a stored response gives a request: a 304 when the request's conditions say
/// the client has it, else the response, without a body for HEAD.
pub(super) fn answer(
    stored: &StoredResponse,
    request: &HeaderMap,
    head: bool,
    now: Instant,
    outcome: CacheOutcome,
) -> Response<Bytes> {
    let mut headers = stored.headers_at(now);
    headers.insert(CACHE_STATUS, outcome.header_value());
    let conditional = stored.status == StatusCode::OK && not_modified(request, &stored.headers);
    let (status, body) = if conditional {
        let mut kept = HeaderMap::new();
        for name in NOT_MODIFIED_HEADERS
            .iter()
            .chain([&http::header::AGE, &CACHE_STATUS])
        {
            for value in headers.get_all(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        headers = kept;
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if head {
        (stored.status, Bytes::new())
    } else {
        (stored.status, stored.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The cache's answer as the client gets it.
pub(super) fn into_client_response(
    response: Response<Bytes>,
    finish: RequestFinish,
) -> Response<ResponseBody> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, ResponseBody::full(body, finish))
}

impl Fill {
    /// The stored response to serve instead of an upstream failure, if its
    /// stale-if-error window (or its stale-while-revalidate one) is still open.
    pub fn stale_for_error(&self) -> Option<&Arc<StoredResponse>> {
        let stale = self.stale.as_ref()?;
        match stale.standing(Instant::now()) {
            Standing::Fresh { .. }
            | Standing::StaleWhileRevalidate { .. }
            | Standing::StaleIfError { .. } => Some(stale),
            Standing::Expired => None,
        }
    }

    /// Answers with the stale response because the upstream failed (`fwd_status` is its
    /// answer, if it gave one).
    pub fn serve_stale_on_error(
        &self,
        stale: &StoredResponse,
        fwd_status: Option<u16>,
    ) -> Response<Bytes> {
        self.cache.counters.stale.inc();
        let now = Instant::now();
        let stale_for = stale.age(now).saturating_sub(stale.lifetime.fresh_for);
        let outcome = CacheOutcome::StaleOnError {
            ttl: stale_ttl(stale_for),
            fwd_status,
        };
        answer(stale, &self.request_headers, self.head, now, outcome)
    }

    /// Whether and how long the upstream's answer may be stored.
    fn storable(&self, status: StatusCode, headers: &HeaderMap) -> Result<Lifetime, NotStored> {
        if self.head || self.partial {
            return Err(NotStored::Status);
        }
        semantics::storable(
            &self.cache.policy.rules,
            &self.request_headers,
            self.authenticated,
            status,
            headers,
        )
    }

    fn stored_response(
        &self,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        lifetime: Lifetime,
        arrived: SystemTime,
    ) -> Option<StoredResponse> {
        let vary = semantics::vary_names(&headers)?;
        let initial_age = semantics::initial_age(&headers, arrived);
        // Placeholders for what every answer sets, so setting them replaces a field in the
        // copied map instead of growing (and rehashing) it.
        let mut headers = headers;
        headers.insert(http::header::AGE, HeaderValue::from_static("0"));
        headers.insert(CACHE_STATUS, HeaderValue::from_static("sluice"));
        Some(StoredResponse {
            status,
            initial_age,
            shared_with_authenticated: semantics::may_answer_authenticated(&headers),
            vary_values: semantics::vary_values(&self.request_headers, &vary),
            vary,
            headers,
            body,
            stored_at: Instant::now(),
            lifetime,
            origin: self.origin.clone(),
        })
    }

    /// A 304 from the upstream for the stale response Sluice asked about: the stored
    /// response, freshened by it and stored again (unless the 304 forbids that), and the
    /// 304's cookies, which go to this client only and are never stored.
    pub fn freshen(
        &self,
        not_modified: &HeaderMap,
    ) -> Option<(Arc<StoredResponse>, bool, Vec<HeaderValue>)> {
        let stale = self.stale.as_ref()?;
        self.cache.counters.revalidated.inc();
        let cookies: Vec<HeaderValue> = not_modified.get_all(SET_COOKIE).iter().cloned().collect();
        let mut headers = semantics::freshened_headers(&stale.headers, not_modified);
        headers.remove(SET_COOKIE);
        let arrived = SystemTime::now();
        // What is freshened is the whole stored response, whatever this request's method
        // or range; so HEAD and Range requests never drop it.
        let storable = semantics::storable(
            &self.cache.policy.rules,
            &self.request_headers,
            self.authenticated,
            stale.status,
            &headers,
        );
        let fresh = match storable {
            Ok(lifetime) => {
                let stored = Arc::new(self.stored_response(
                    stale.status,
                    headers,
                    stale.body.clone(),
                    lifetime,
                    arrived,
                )?);
                let kept = self.may_store();
                if kept {
                    self.cache.insert(self.key, Arc::clone(&stored));
                }
                (stored, kept, cookies)
            }
            Err(_) => {
                self.cache.remove(&self.key);
                let lifetime = Lifetime {
                    fresh_for: Duration::ZERO,
                    ..stale.lifetime
                };
                let once = self.stored_response(
                    stale.status,
                    headers,
                    stale.body.clone(),
                    lifetime,
                    arrived,
                )?;
                (Arc::new(once), false, cookies)
            }
        };
        Some(fresh)
    }

    /// No purge ran since this request went to the cache.
    fn may_store(&self) -> bool {
        self.cache.purges() == self.purges
    }

    /// What the cache does with an upstream answer that is not a failure nor a 304 it
    /// asked for: `Some(limit)` when its body is to be kept (up to `limit` bytes) and
    /// stored, with `Cache-Status` set on `headers` either way. An answer that may not be
    /// stored removes what was stored under its key.
    pub fn admit(&self, status: StatusCode, headers: &mut HeaderMap) -> Option<usize> {
        let max = self.cache.policy.max_object_size;
        let too_large = headers
            .get(CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length > max);
        let decision = if too_large {
            Err("too-large")
        } else {
            self.storable(status, headers).map_err(NotStored::as_str)
        };
        let stored = decision.is_ok();
        let outcome = match (&self.stale, decision) {
            (Some(_), _) => CacheOutcome::Revalidated {
                status: status.as_u16(),
                stored,
            },
            (None, decision) => CacheOutcome::Miss {
                stored,
                collapsed: self.collapsed,
                detail: decision.err(),
            },
        };
        let counter = match &self.stale {
            Some(_) => &self.cache.counters.revalidated,
            None => &self.cache.counters.misses,
        };
        counter.inc();
        headers.insert(CACHE_STATUS, outcome.header_value());
        // A full answer that may not be stored replaces what was: the upstream no longer
        // lets it be shared. (A 304 or 206 answers the client's own conditions or range.)
        if !stored
            && !self.head
            && !self.partial
            && self.stale.is_some()
            && status == StatusCode::OK
        {
            self.cache.remove(&self.key);
        }
        stored.then(|| usize::try_from(max).unwrap_or(usize::MAX))
    }

    /// Stores the upstream's answer once its whole body is known; `self` (and with it the
    /// flight) ends here, so waiting requests find the entry.
    pub fn complete(self, status: StatusCode, mut headers: HeaderMap, body: Bytes) {
        headers.remove(CACHE_STATUS);
        // With `allowSetCookie` the response is stored, but its cookies went to the one
        // client they were meant for: never to everyone the entry answers.
        headers.remove(SET_COOKIE);
        let arrived = SystemTime::now();
        let Ok(lifetime) = self.storable(status, &headers) else {
            return;
        };
        if !self.may_store() {
            return;
        }
        if let Some(stored) = self.stored_response(status, headers, body, lifetime, arrived) {
            self.cache.insert(self.key, Arc::new(stored));
        }
    }
}

/// Whether a request with this method, answered with this status, makes what is stored
/// for its URL out of date (RFC 9111 §4.4: an unsafe method that succeeded).
pub(super) fn invalidates(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The statuses a stale response may stand in for (RFC 5861 §4: an error).
pub(super) fn is_upstream_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// A header value for `Cache-Status` when the cache was not consulted.
pub(super) fn bypass_status(detail: &'static str) -> HeaderValue {
    CacheOutcome::Bypass { detail }.header_value()
}
