//! The request path: normalise, route, pick an endpoint, forward, answer.

mod body;
mod cached;
mod clients;
mod grpc;
pub(crate) mod headers;
mod target;
mod tunnel;
mod upload;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, SET_COOKIE,
    STRICT_TRANSPORT_SECURITY, VIA,
};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

pub use body::{RequestFinish, ResponseBody, UpstreamBody};
pub use headers::{ConnectionHeaders, TrustedProxies};

use crate::auth::{AuthDecision, AuthMethodLabel};
use crate::balance::{BackendBalancer, HealthConfig, Outcome, stable_hash};
use crate::live::{DataPlane, LiveState, backend_labels};
use crate::metrics::{MethodLabel, RouteSeries, StatusClass};
use crate::ratelimit::{Decision, LimitReport, RequestView, cookie_value};
use crate::snapshot::{BalancePolicy, ClientCaRequirement, HashOn, RoutePolicies, RouteTarget};
use crate::tls::{TlsConnectionInfo, VerifiedClient};
use clients::{UpstreamClient, UpstreamClients};
pub use target::{RequestTarget, TargetRefusal, canonical_path_and_query, canonical_target};
use tunnel::Tunnel;
pub use tunnel::TunnelOpen;

/// Limits, timeouts and header settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Time allowed to open a TCP connection to an endpoint.
    pub connect_timeout: Duration,
    /// Time the upstream gets to send its response headers, counted from the end of the
    /// request body (time the client takes to send it does not count).
    pub request_timeout: Duration,
    /// How long the client may keep Sluice waiting for the next bytes of a request body
    /// before the request is answered 408.
    pub client_body_timeout: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub upstream_idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    /// Largest request body accepted; larger ones get 413.
    pub max_request_body: u64,
    /// Extra attempts on other endpoints after a connection failure (idempotent, body-less
    /// requests only).
    pub retries: u32,
    pub health: HealthConfig,
    pub trusted_proxies: TrustedProxies,
    /// Pseudonym for `Via`; `None` sends no `Via`.
    pub via: Option<String>,
    pub access_log: bool,
    /// The port browsers reach the HTTPS listener on, for redirects; `None` when there is
    /// no HTTPS listener (then nothing is redirected).
    pub https_redirect_port: Option<u16>,
    /// How long an upgraded tunnel (WebSocket) may stay silent both ways before it is
    /// closed, unless its route says otherwise.
    pub websocket_idle_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 256,
            max_request_body: 16 * 1024 * 1024,
            retries: 2,
            health: HealthConfig::default(),
            trusted_proxies: TrustedProxies::default(),
            via: None,
            access_log: false,
            https_redirect_port: None,
            websocket_idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Who is on the other end of a client connection.
#[derive(Debug, Clone)]
pub struct ClientConnection {
    pub peer: SocketAddr,
    pub scheme: &'static str,
    /// Forwarding header values of this connection, made once for all its requests.
    pub headers: ConnectionHeaders,
    /// Set on HTTPS connections.
    pub tls: Option<TlsConnectionInfo>,
}

impl ClientConnection {
    pub fn new(peer: SocketAddr, local_port: u16, scheme: &'static str) -> Self {
        ClientConnection {
            peer,
            scheme,
            headers: ConnectionHeaders::new(peer.ip(), local_port),
            tls: None,
        }
    }
}

/// The reverse proxy: one per traffic thread, shared by that thread's connections.
#[derive(Debug)]
pub struct Proxy {
    data_plane: Arc<DataPlane>,
    clients: UpstreamClients,
    config: ProxyConfig,
    via_request: [Option<HeaderValue>; 3],
    via_response: Option<HeaderValue>,
}

/// Why a request was answered by Sluice itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalAnswer {
    BadRequest,
    /// A transfer coding other than `chunked` (RFC 9112 §6.1).
    NotImplemented,
    /// The client's request body broke off or was malformed: the client's fault, never
    /// counted against the endpoint.
    ClientBodyFailed,
    /// The client stopped sending its request body for longer than the body timeout.
    ClientBodyTimeout,
    NoRoute,
    NoEndpoints,
    PayloadTooLarge,
    UpstreamFailed,
    UpstreamTimeout,
    PolicyUnavailable,
    TooManyRequests,
    LimitUnavailable,
    /// Plain HTTP to a host with a certificate: go to `https://` (with `Location`).
    HttpsRedirect,
    /// The route needs a client certificate this connection did not present.
    ClientCertificateRequired,
    /// The connection was made for another host (HTTP/2 coalescing, say) and cannot serve
    /// this one: the client should open a new connection for it.
    MisdirectedRequest,
    /// The route's upstream TLS settings cannot be used (say, its CA Secret is missing).
    UpstreamUnavailable,
    /// The route's Auth policy: credentials missing or wrong (with `WWW-Authenticate`).
    Unauthorized,
    /// The route's Auth policy: the client's network is not allowed.
    Forbidden,
    /// The route's Auth policy: every password verification slot is busy.
    AuthBusy,
    /// The route's Auth policy: its authorization service sends the client elsewhere (to
    /// sign in) with this redirect status, and `Location`.
    AuthRedirect(StatusCode),
}

impl LocalAnswer {
    fn status(self) -> StatusCode {
        match self {
            LocalAnswer::BadRequest => StatusCode::BAD_REQUEST,
            LocalAnswer::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            LocalAnswer::ClientBodyFailed => StatusCode::BAD_REQUEST,
            LocalAnswer::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            LocalAnswer::NoRoute => StatusCode::NOT_FOUND,
            LocalAnswer::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            LocalAnswer::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            LocalAnswer::UpstreamFailed => StatusCode::BAD_GATEWAY,
            LocalAnswer::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalAnswer::PolicyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            LocalAnswer::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            LocalAnswer::LimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            LocalAnswer::HttpsRedirect => StatusCode::PERMANENT_REDIRECT,
            LocalAnswer::ClientCertificateRequired => StatusCode::FORBIDDEN,
            LocalAnswer::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            LocalAnswer::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            LocalAnswer::Unauthorized => StatusCode::UNAUTHORIZED,
            LocalAnswer::Forbidden => StatusCode::FORBIDDEN,
            LocalAnswer::AuthBusy => StatusCode::SERVICE_UNAVAILABLE,
            LocalAnswer::AuthRedirect(status) => status,
        }
    }

    fn text(self) -> &'static str {
        match self {
            LocalAnswer::BadRequest => "400 bad request: malformed path or host\n",
            LocalAnswer::NotImplemented => {
                "501 not implemented: transfer codings other than chunked\n"
            }
            LocalAnswer::ClientBodyFailed => {
                "400 bad request: the request body was malformed or cut short\n"
            }
            LocalAnswer::ClientBodyTimeout => {
                "408 request timeout: the request body did not arrive in time\n"
            }
            LocalAnswer::NoRoute => "404 not found: no route for this host and path\n",
            LocalAnswer::NoEndpoints => {
                "503 service unavailable: the backend has no ready endpoints\n"
            }
            LocalAnswer::PayloadTooLarge => "413 payload too large\n",
            LocalAnswer::UpstreamFailed => "502 bad gateway: the upstream failed\n",
            LocalAnswer::UpstreamTimeout => {
                "504 gateway timeout: the upstream did not answer in time\n"
            }
            LocalAnswer::PolicyUnavailable => {
                "503 service unavailable: a policy this route needs is unavailable\n"
            }
            LocalAnswer::TooManyRequests => "429 too many requests\n",
            LocalAnswer::LimitUnavailable => {
                "503 service unavailable: the rate limit could not be checked\n"
            }
            LocalAnswer::HttpsRedirect => "308 permanent redirect: use https\n",
            LocalAnswer::MisdirectedRequest => {
                "421 misdirected request: open a new connection for this host\n"
            }
            LocalAnswer::ClientCertificateRequired => {
                "403 forbidden: this route needs a verified client certificate\n"
            }
            LocalAnswer::UpstreamUnavailable => {
                "503 service unavailable: the route's upstream TLS settings are not usable\n"
            }
            // Never why: which part of the credentials failed is the client's to know.
            LocalAnswer::Unauthorized => "401 unauthorized\n",
            LocalAnswer::Forbidden => "403 forbidden\n",
            LocalAnswer::AuthBusy => "503 service unavailable: too many logins at once\n",
            // Only redirect statuses get here (see `AuthRedirect`); the service's own body
            // is never passed on.
            LocalAnswer::AuthRedirect(status) => match status {
                StatusCode::MOVED_PERMANENTLY => "301 moved permanently\n",
                StatusCode::SEE_OTHER => "303 see other\n",
                StatusCode::TEMPORARY_REDIRECT => "307 temporary redirect\n",
                StatusCode::PERMANENT_REDIRECT => "308 permanent redirect\n",
                _ => "302 found\n",
            },
        }
    }

    fn response(self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::local(self.text()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(self.text().len()));
        // Marks the response as Sluice's own, so a gRPC caller can get it gRPC-shaped.
        response.extensions_mut().insert(self);
        response
    }
}

impl Proxy {
    pub fn new(data_plane: Arc<DataPlane>, config: ProxyConfig) -> Self {
        let clients = UpstreamClients::new(&config);
        let via = |version: &str| {
            config
                .via
                .as_ref()
                .and_then(|name| HeaderValue::from_str(&format!("{version} {name}")).ok())
        };
        Proxy {
            via_request: [via("1.0"), via("1.1"), via("2")],
            via_response: via("1.1"),
            data_plane,
            clients,
            config,
        }
    }

    pub fn data_plane(&self) -> &Arc<DataPlane> {
        &self.data_plane
    }

    /// Handles one request end to end. Never fails: every problem becomes a response.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request<Incoming>,
        connection: &ClientConnection,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = request.method().clone();
        let grpc_call = grpc::is_grpc(request.headers());
        let (mut response, series) = self.route_and_forward(request, connection, started).await;
        // Counted and logged with the HTTP status Sluice means, also when a gRPC caller
        // gets it as a grpc-status.
        let status = response.status();
        if grpc_call && let Some(answer) = response.extensions().get::<LocalAnswer>().copied() {
            response = grpc::reshape(response, answer);
        }
        let metrics = self.data_plane.metrics();
        let series = series.as_deref().unwrap_or(&metrics.unrouted);
        metrics.count_request(
            series,
            MethodLabel::from(&method),
            StatusClass::from(status),
        );
        if self.config.access_log {
            tracing::info!(
                target: "sluice::access",
                client = %connection.peer.ip(),
                method = %method,
                status = status.as_u16(),
                namespace = &*series.labels.namespace,
                ingress = &*series.labels.ingress,
                host = &*series.labels.host,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }
        response
    }

    async fn route_and_forward(
        self: &Arc<Self>,
        request: Request<Incoming>,
        connection: &ClientConnection,
        started: Instant,
    ) -> (Response<ResponseBody>, Option<Arc<RouteSeries>>) {
        let (mut parts, body) = request.into_parts();
        let RequestTarget {
            host,
            authority: host_value,
            mut path_and_query,
        } = match target::canonical_target(&mut parts) {
            Ok(target) => target,
            Err(TargetRefusal::BadRequest) => return (LocalAnswer::BadRequest.response(), None),
            Err(TargetRefusal::UnsupportedTransferCoding) => {
                return (LocalAnswer::NotImplemented.response(), None);
            }
        };

        let live = self.data_plane.load();
        let Some(matched) = live.snapshot.routes.lookup(&host, path_and_query.path()) else {
            return (LocalAnswer::NoRoute.response(), None);
        };
        let target = matched.target;
        let series = live.route_series(&matched, self.data_plane.metrics());
        let finish = RequestFinish {
            started,
            duration: series.duration.clone(),
            in_flight: None,
        };
        let local = |answer: LocalAnswer, finish: RequestFinish| {
            let response = answer.response();
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, body.with_finish(finish))
        };
        if live
            .snapshot
            .routes
            .refuses_ambiguous(&host, path_and_query.path(), target)
        {
            return (local(LocalAnswer::BadRequest, finish), Some(series));
        }

        let https = &*target.https;
        let has_certificate = || live.snapshot.tls.site(&host).is_some();
        // A trusted load balancer that terminated TLS says so; redirecting it would loop.
        // Only asked when the answer matters (a redirect or HSTS is possible at all).
        let secure = || {
            connection.tls.is_some()
                || (self.config.https_redirect_port.is_some()
                    && self.forwarded_https(connection, &parts.headers))
        };
        if connection.tls.is_none()
            && https.redirect
            && let Some(port) = self.config.https_redirect_port
            && !path_and_query.path().starts_with(ACME_CHALLENGE_PREFIX)
            && has_certificate()
            && !secure()
        {
            let mut response = local(LocalAnswer::HttpsRedirect, finish);
            if let Some(location) = https_location(&host, port, &path_and_query) {
                response.headers_mut().insert(LOCATION, location);
            }
            return (response, Some(series));
        }
        // The route's own requirement, or the host's when another Ingress's TLS item gave
        // the host a client CA: a host that asks for certificates asks on every path.
        let requirement = https.client_ca.or_else(|| {
            if !live.snapshot.tls.any_client_ca {
                return None;
            }
            live.snapshot
                .tls
                .site(&host)
                .and_then(|site| site.client_ca.as_ref())
                .map(|ca| ClientCaRequirement::Verified(ca.fingerprint))
        });
        let mut verified_client = None;
        if let Some(requirement) = requirement {
            let client = connection.tls.as_ref().and_then(|tls| tls.client.as_ref());
            let allowed = matches!(requirement, ClientCaRequirement::Verified(ca) if client.is_some_and(|c| c.ca == ca));
            if !allowed {
                // A TLS connection made for another name may simply be reused (HTTP/2
                // coalescing): 421 makes browsers retry on a connection for this host,
                // whose handshake asks for the certificate.
                let other_host = connection
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.server_name.as_deref() != Some(&*host));
                let answer = if other_host {
                    LocalAnswer::MisdirectedRequest
                } else {
                    LocalAnswer::ClientCertificateRequired
                };
                return (local(answer, finish), Some(series));
            }
            verified_client = client;
        }
        let hsts = https
            .hsts
            .as_ref()
            .filter(|_| !live.snapshot.tls.is_empty() && secure() && has_certificate());

        let client_ip = self
            .config
            .trusted_proxies
            .client_ip(connection.peer.ip(), &parts.headers);
        let mut limit_report = None;
        let mut identity_headers = Vec::new();
        let mut auth_method = None;
        // Upgrades (WebSocket) are never cached; decided on the client's own headers.
        let extended_connect = tunnel::is_extended_connect_websocket(&parts);
        let upgrade = if extended_connect {
            Some(HeaderValue::from_static("websocket"))
        } else {
            tunnel::requested_upgrade(&parts)
        };
        let consult = target
            .policies
            .as_deref()
            .and_then(|policies| policies.cache.as_ref())
            .and_then(|policy| live.cache(&policy.name))
            .map(|cache| {
                cached::Consult::decide(cache, &parts.method, &parts.headers, upgrade.is_some())
            });
        let https = connection.tls.is_some() || self.forwarded_https(connection, &parts.headers);
        if let Some(policies) = target.policies.as_deref() {
            let view = request_view(
                client_ip,
                &host,
                &path_and_query,
                &parts.method,
                &parts.headers,
                https,
            );
            match enforce_policies(&live, policies, &view).await {
                Ok(admitted) => {
                    limit_report = admitted.limit_report;
                    auth_method = admitted.auth_method;
                    if let (Some(auth), Some(method)) = (&policies.auth, admitted.auth_method) {
                        auth.strip(&mut parts.headers, method);
                        if let Some(stripped) = auth.strip_query(&path_and_query, method) {
                            path_and_query = stripped;
                        }
                        // `strip` removed every client copy of these names.
                        for (name, value) in &admitted.auth_headers {
                            parts.headers.append(name.clone(), value.clone());
                        }
                        identity_headers = admitted.auth_headers;
                    }
                }
                Err(refusal) => {
                    let mut response = local(refusal.answer, finish);
                    if let Some(report) = &refusal.report {
                        report.write(response.headers_mut());
                    }
                    for challenge in refusal.challenges {
                        response
                            .headers_mut()
                            .append(http::header::WWW_AUTHENTICATE, challenge);
                    }
                    for (name, value) in refusal.headers {
                        response.headers_mut().append(name, value);
                    }
                    return (response, Some(series));
                }
            }
        }

        // What every answer gets on its way out, the cache's included.
        let decorate = |headers: &mut http::HeaderMap| {
            if let Some(via) = &self.via_response {
                headers.append(VIA, via.clone());
            }
            if let Some(report) = &limit_report {
                report.write(headers);
            }
            if let Some(hsts) = hsts
                && !headers.contains_key(STRICT_TRANSPORT_SECURITY)
            {
                headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
        };

        // The Host the upstream gets: the client's, or the URI's authority put there.
        let authority = host_value.as_ref().map_or(&b""[..], HeaderValue::as_bytes);
        // What the cache asks of the client: whether it proved who it is, on what it sent.
        let authenticated = match &consult {
            Some(cached::Consult::Use { authorization, .. }) => {
                *authorization || cached::authenticates(auth_method, verified_client.is_some())
            }
            _ => false,
        };
        let head = parts.method == Method::HEAD;
        // A key made of method, host, path and query (the default) reads no header, so it
        // is the same before and after the upstream headers are prepared: a fresh hit
        // without `Vary` is answered before any of that work.
        let early_key = match &consult {
            Some(cached::Consult::Use { cache, .. }) if cache.key_reads_no_headers() => {
                let view = request_view(
                    client_ip,
                    &host,
                    &path_and_query,
                    &parts.method,
                    &parts.headers,
                    https,
                );
                Some(cache.key_of(&view, authority))
            }
            _ => None,
        };
        if let (Some(cached::Consult::Use { cache, .. }), Some(key)) = (&consult, &early_key)
            && let Some(answer) =
                cached::fresh_unvaried_hit(cache, key, &parts.headers, authenticated, head)
        {
            let mut response = cached::into_client_response(answer, finish);
            decorate(response.headers_mut());
            return (response, Some(series));
        }

        if content_length(&parts.headers)
            .is_some_and(|length| length > self.config.max_request_body)
        {
            return (local(LocalAnswer::PayloadTooLarge, finish), Some(series));
        }

        let timeout = self.response_header_timeout(target, &parts.headers);
        let client_side = upgrade
            .as_ref()
            .and_then(|_| tunnel::ClientSide::take(&mut parts.extensions));
        let hash = hash_input(&target.balance, &parts.headers, client_ip);
        self.prepare_upstream_headers(
            &mut parts,
            host_value.as_ref(),
            connection,
            client_ip,
            verified_client,
        );
        if !identity_headers.is_empty() {
            crate::auth::restore_identity_headers(&mut parts.headers, &identity_headers);
        }
        if extended_connect {
            tunnel::extended_connect_to_http11(&mut parts);
        } else if let Some(upgrade) = &upgrade {
            tunnel::restore_upgrade_headers(&mut parts.headers, upgrade.clone());
        }

        let mut fill = None;
        let mut bypass = None;
        // An unsafe request's stored GET, dropped once the request succeeds.
        let mut invalidate = None;
        match consult {
            None => {}
            Some(cached::Consult::Bypass { cache, detail }) => {
                cache.counters.bypassed.inc();
                bypass = Some(cached::bypass_status(detail));
                if cached::invalidates(&parts.method) {
                    let view = request_view(
                        client_ip,
                        &host,
                        &path_and_query,
                        &Method::GET,
                        &parts.headers,
                        https,
                    );
                    invalidate = Some((cache.key_of(&view, authority), cache));
                }
            }
            Some(cached::Consult::Use { cache, .. }) => {
                let view = request_view(
                    client_ip,
                    &host,
                    &path_and_query,
                    &parts.method,
                    &parts.headers,
                    https,
                );
                let key = early_key.unwrap_or_else(|| cache.key_of(&view, authority));
                let origin = crate::cache::store::Origin {
                    host: host.clone(),
                    path_and_query: path_and_query.as_str().to_owned(),
                };
                match cached::look_up(cache, key, &mut parts.headers, authenticated, origin, head)
                    .await
                {
                    cached::Lookup::Answer { response, refresh } => {
                        if let Some(refresh) = refresh {
                            self.refresh_in_background(
                                refresh,
                                &parts.headers,
                                &path_and_query,
                                target,
                                hash,
                            );
                        }
                        let mut response = cached::into_client_response(response, finish);
                        decorate(response.headers_mut());
                        return (response, Some(series));
                    }
                    cached::Lookup::Forward(forward) => fill = Some(forward),
                }
            }
        }

        let balancer = live.balancer(&target.backend).filter(|b| !b.is_empty());
        let client = self
            .clients
            .select(&live, target.upstream.as_ref(), upgrade.is_some());
        let (balancer, client) = match (balancer, client) {
            (Some(balancer), Ok(client)) => (balancer, client),
            (balancer, client) => {
                let answer = match (balancer, client) {
                    (None, _) => LocalAnswer::NoEndpoints,
                    (_, Err(answer)) => answer,
                    (Some(_), Ok(_)) => LocalAnswer::UpstreamFailed,
                };
                if let Some(fill) = &fill
                    && let Some(stale) = fill.stale_for_error()
                {
                    let stale = fill.serve_stale_on_error(stale, None);
                    let mut response = cached::into_client_response(stale, finish);
                    decorate(response.headers_mut());
                    return (response, Some(series));
                }
                return (local(answer, finish), Some(series));
            }
        };

        let sent = Sent {
            client: &client,
            timeout,
            balancer,
            policy: &target.balance,
            hash,
        };
        let result = self.forward(parts, Some(body), path_and_query, sent).await;
        if let Some(fill) = &fill
            && let Some(stale) = fill.stale_for_error()
        {
            let failed = match &result {
                Err(_) => Some(None),
                Ok((response, _)) if cached::is_upstream_error(response.status()) => {
                    Some(Some(response.status().as_u16()))
                }
                Ok(_) => None,
            };
            if let Some(fwd_status) = failed {
                drop(result);
                let stale = fill.serve_stale_on_error(stale, fwd_status);
                let mut response = cached::into_client_response(stale, finish);
                decorate(response.headers_mut());
                return (response, Some(series));
            }
        }
        let response = match result {
            Ok((response, in_flight)) => {
                let (mut response_parts, upstream_body) = response.into_parts();
                let switched =
                    (response_parts.status == StatusCode::SWITCHING_PROTOCOLS).then(|| {
                        upgrade.as_ref().and_then(|asked| {
                            tunnel::accepted_upgrade(&response_parts.headers, asked)
                        })
                    });
                headers::strip_hop_by_hop(&mut response_parts.headers);
                let mut finish = finish;
                if let Some(fill) = fill {
                    if fill.revalidating
                        && response_parts.status == StatusCode::NOT_MODIFIED
                        && let Some((fresh, stored, cookies)) =
                            fill.freshen(&response_parts.headers)
                    {
                        let outcome = crate::cache::semantics::CacheOutcome::Revalidated {
                            status: 304,
                            stored,
                        };
                        let answer = cached::answer(
                            &fresh,
                            &fill.request_headers,
                            fill.head,
                            tokio::time::Instant::now(),
                            outcome,
                        );
                        drop(in_flight);
                        let mut response = cached::into_client_response(answer, finish);
                        for cookie in cookies {
                            response.headers_mut().append(SET_COOKIE, cookie);
                        }
                        decorate(response.headers_mut());
                        return (response, Some(series));
                    }
                    finish.in_flight = Some(in_flight);
                    let kept = fill.admit(response_parts.status, &mut response_parts.headers);
                    let body = match kept {
                        Some(limit) => {
                            // Stored as the upstream sent it, before this request's own
                            // headers (Via, rate limits, HSTS) are added.
                            let (status, headers) =
                                (response_parts.status, response_parts.headers.clone());
                            let store: body::StoreBody =
                                Box::new(move |bytes| fill.complete(status, headers, bytes));
                            ResponseBody::stored(upstream_body, limit, store, finish)
                        }
                        None => ResponseBody::upstream(upstream_body, finish),
                    };
                    decorate(&mut response_parts.headers);
                    return (Response::from_parts(response_parts, body), Some(series));
                }
                decorate(&mut response_parts.headers);
                if let Some(bypass) = bypass {
                    response_parts.headers.insert(cached::CACHE_STATUS, bypass);
                }
                if let Some((key, cache)) = invalidate
                    && (response_parts.status.is_success()
                        || response_parts.status.is_redirection())
                {
                    cache.remove(&key);
                }
                match switched {
                    None => finish.in_flight = Some(in_flight),
                    Some(accepted) => {
                        let upstream_side = response_parts.extensions.remove::<OnUpgrade>();
                        let (Some(accepted), Some(client), Some(upstream)) =
                            (accepted, client_side, upstream_side)
                        else {
                            // A 101 nobody asked for, or one that names no protocol.
                            return (local(LocalAnswer::UpstreamFailed, finish), Some(series));
                        };
                        if extended_connect {
                            tunnel::http11_switch_to_extended_connect(&mut response_parts);
                        } else {
                            tunnel::restore_upgrade_headers(&mut response_parts.headers, accepted);
                        }
                        let (open, open_until) = tokio::sync::watch::channel(());
                        response_parts.extensions.insert(TunnelOpen(open_until));
                        Tunnel {
                            client,
                            upstream,
                            idle_timeout: target
                                .upstream
                                .as_ref()
                                .and_then(|settings| settings.websocket_idle_timeout)
                                .unwrap_or(self.config.websocket_idle_timeout),
                            open_tunnels: self.data_plane.metrics().upgraded_tunnels.clone(),
                            in_flight,
                            open,
                        }
                        .spawn();
                    }
                }
                Response::from_parts(
                    response_parts,
                    ResponseBody::upstream(upstream_body, finish),
                )
            }
            Err(answer) => local(answer, finish),
        };
        (response, Some(series))
    }

    /// Refreshes a stale response while it is being served: one GET upstream, whose answer
    /// is stored (or, for a 304 to Sluice's own conditions, freshens what is stored). The
    /// flight `refresh` leads ends with it, however it ends.
    fn refresh_in_background(
        self: &Arc<Self>,
        refresh: cached::Fill,
        headers: &http::HeaderMap,
        path_and_query: &PathAndQuery,
        target: &RouteTarget,
        hash: Option<u64>,
    ) {
        let mut headers = headers.clone();
        // The refresh asks for the whole response on Sluice's own conditions only.
        for name in [
            http::header::RANGE,
            http::header::IF_RANGE,
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
        ] {
            headers.remove(name);
        }
        for (name, value) in refresh
            .stale
            .as_ref()
            .map(|stale| crate::cache::semantics::validators(&stale.headers))
            .unwrap_or_default()
        {
            headers.insert(name, value);
        }
        let refresh = cached::Fill {
            revalidating: refresh.stale.is_some(),
            ..refresh
        };
        let proxy = Arc::clone(self);
        let path_and_query = path_and_query.clone();
        let backend = target.backend.clone();
        let balance = target.balance.clone();
        let upstream = target.upstream.clone();
        let timeout = self.config.request_timeout;
        tokio::spawn(async move {
            let live = proxy.data_plane.load();
            let Some(balancer) = live.balancer(&backend).filter(|b| !b.is_empty()) else {
                return;
            };
            let Ok(client) = proxy.clients.select(&live, upstream.as_ref(), false) else {
                return;
            };
            let (mut parts, ()) = Request::new(()).into_parts();
            parts.method = Method::GET;
            parts.headers = headers;
            let sent = Sent {
                client: &client,
                timeout,
                balancer,
                policy: &balance,
                hash,
            };
            let Ok((response, in_flight)) = proxy.forward(parts, None, path_and_query, sent).await
            else {
                return;
            };
            let (mut response_parts, body) = response.into_parts();
            headers::strip_hop_by_hop(&mut response_parts.headers);
            if refresh.revalidating && response_parts.status == StatusCode::NOT_MODIFIED {
                drop(in_flight);
                refresh.freshen(&response_parts.headers);
                return;
            }
            if cached::is_upstream_error(response_parts.status) {
                return;
            }
            let Some(limit) = refresh.admit(response_parts.status, &mut response_parts.headers)
            else {
                return;
            };
            let collected = http_body_util::BodyExt::collect(Limited::new(body, limit)).await;
            drop(in_flight);
            if let Ok(collected) = collected
                && collected.trailers().is_none()
            {
                refresh.complete(
                    response_parts.status,
                    response_parts.headers,
                    collected.to_bytes(),
                );
            }
        });
    }

    /// How long to wait for response headers. gRPC routes take the call's own deadline
    /// (`grpc-timeout`) when it has one, longer or shorter than `--request-timeout`: a
    /// long call must not be cut short, and an expired one need not be waited for.
    fn response_header_timeout(&self, target: &RouteTarget, headers: &http::HeaderMap) -> Duration {
        let grpc_route = target
            .upstream
            .as_ref()
            .is_some_and(|settings| settings.protocol.is_grpc());
        match grpc::timeout(headers).filter(|_| grpc_route) {
            Some(deadline) => deadline.min(MAX_GRPC_DEADLINE),
            None => self.config.request_timeout,
        }
    }

    /// Whether a trusted proxy in front says the client came over HTTPS.
    fn forwarded_https(&self, connection: &ClientConnection, headers: &http::HeaderMap) -> bool {
        self.config
            .trusted_proxies
            .contains(connection.headers.peer_ip)
            && headers
                .get("x-forwarded-proto")
                .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
    }

    /// `client_host` is the canonical authority the client asked for, already in `Host`,
    /// for `X-Forwarded-Host`.
    fn prepare_upstream_headers(
        &self,
        parts: &mut http::request::Parts,
        client_host: Option<&HeaderValue>,
        connection: &ClientConnection,
        client_ip: IpAddr,
        verified_client: Option<&VerifiedClient>,
    ) {
        let via_index = match parts.version {
            Version::HTTP_10 | Version::HTTP_09 => 0,
            Version::HTTP_11 => 1,
            _ => 2,
        };
        let headers = &mut parts.headers;
        headers::strip_hop_by_hop(headers);
        let peer_trusted = self
            .config
            .trusted_proxies
            .contains(connection.headers.peer_ip);
        headers::set_forwarded(
            headers,
            &headers::ForwardedFor {
                connection: &connection.headers,
                client: client_ip,
                peer_trusted,
                scheme: connection.scheme,
                host: client_host,
            },
        );
        if let Some(via) = &self.via_request[via_index] {
            headers.append(VIA, via.clone());
        }
        // Only Sluice says who the client certificate belongs to, and only to a route that
        // asked for that very CA: a certificate from another Ingress's CA proves nothing here.
        headers.remove(CLIENT_SUBJECT_HEADER);
        headers.remove(CLIENT_VERIFY_HEADER);
        headers::remove_look_alikes(
            headers,
            VOUCHED.iter().chain(&headers::UNTRUSTED_FORWARDING),
        );
        if let Some(client) = verified_client {
            headers.insert(CLIENT_SUBJECT_HEADER, client.subject.clone());
            headers.insert(CLIENT_VERIFY_HEADER, HeaderValue::from_static("SUCCESS"));
        }
    }

    /// Sends the request to an endpoint, retrying connection failures on other endpoints
    /// when the request can safely be sent again.
    async fn forward(
        &self,
        parts: http::request::Parts,
        body: Option<Incoming>,
        path_and_query: PathAndQuery,
        sent: Sent<'_>,
    ) -> Result<(Response<Incoming>, crate::balance::InFlight), LocalAnswer> {
        let Sent {
            client,
            timeout,
            balancer,
            policy,
            hash,
        } = sent;
        let replayable =
            is_idempotent(&parts.method) && body.as_ref().is_none_or(|body| body.is_end_stream());
        let mut body = body;
        // Never more attempts than endpoints: each retry goes to one not tried yet.
        let attempts = if replayable {
            let endpoints = u32::try_from(balancer.len()).unwrap_or(u32::MAX);
            self.config.retries.saturating_add(1).min(endpoints).max(1)
        } else {
            1
        };
        let mut headers = Some(parts.headers);
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = LocalAnswer::UpstreamFailed;
        for attempt in 0..attempts {
            let Some(index) = balancer.pick(policy, hash, &tried) else {
                break;
            };
            let (Some(endpoint), Some(in_flight)) =
                (balancer.endpoint(index), balancer.start(index))
            else {
                break;
            };
            let Some(uri) = upstream_uri(client.scheme(), &endpoint.authority, &path_and_query)
            else {
                return Err(LocalAnswer::UpstreamFailed);
            };
            // Only a request that may be sent again keeps a copy of its headers.
            let attempt_headers = if attempt + 1 < attempts {
                headers.clone()
            } else {
                headers.take()
            };
            let (upstream_body, upload): (UpstreamBody, _) = match (replayable, body.take()) {
                (false, Some(incoming)) => {
                    let (body, upload) =
                        upload::ClientBody::new(incoming, self.config.client_body_timeout);
                    let limited = Limited::new(body, limit_usize(self.config.max_request_body));
                    (Either::Left(limited), Some(upload))
                }
                _ => (Either::Right(Empty::new()), None),
            };
            let mut request = Request::new(upstream_body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = attempt_headers.unwrap_or_default();
            let sent_at = Instant::now();
            let deadline = async {
                match &upload {
                    Some(upload) => upload.response_deadline(timeout).await,
                    None => {
                        tokio::time::sleep(timeout).await;
                        Ok(())
                    }
                }
            };
            let result = tokio::select! {
                response = client.request(request) => Ok(response),
                ended = deadline => Err(ended),
            };
            // The client's own failure is answered as such and never held against the
            // endpoint, whichever way it surfaced.
            let client_failure = upload.as_ref().and_then(|upload| {
                match upload.client_failure() {
                    Some(upload::ClientFailure::Broken) => Some(LocalAnswer::ClientBodyFailed),
                    Some(upload::ClientFailure::TimedOut) => Some(LocalAnswer::ClientBodyTimeout),
                    // The upstream gave up while the client kept it waiting for the body
                    // (its own read timeout): the client's slowness, not the endpoint's.
                    None if upload.client_is_slow() && matches!(result, Ok(Err(_))) => {
                        Some(LocalAnswer::ClientBodyTimeout)
                    }
                    None => None,
                }
            });
            if let (Some(upload), Ok(Ok(_))) = (&upload, &result) {
                upload.answered();
            }
            let labels = || backend_labels(&balancer.key);
            match result {
                Ok(Ok(response)) => {
                    let outcome = match response.status() {
                        StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT => Outcome::Failure,
                        _ => Outcome::Success {
                            latency: sent_at.elapsed(),
                        },
                    };
                    self.report(balancer, index, outcome);
                    return Ok((response, in_flight));
                }
                Ok(Err(error)) => {
                    if body_limit_exceeded(&error) {
                        return Err(LocalAnswer::PayloadTooLarge);
                    }
                    if let Some(answer) = client_failure {
                        tracing::debug!(client_error = %error, "request body failed on the client's side");
                        return Err(answer);
                    }
                    self.report(balancer, index, Outcome::Failure);
                    if error.is_connect() {
                        self.data_plane
                            .metrics()
                            .upstream_connect_errors
                            .get_or_create(&labels())
                            .inc();
                        tracing::debug!(endpoint = %endpoint.addr, backend = %balancer.key, %error, "upstream connect failed");
                        if attempt + 1 < attempts {
                            tried.push(index);
                            self.data_plane
                                .metrics()
                                .upstream_retries
                                .get_or_create(&labels())
                                .inc();
                            continue;
                        }
                    } else {
                        tracing::debug!(endpoint = %endpoint.addr, backend = %balancer.key, %error, "upstream request failed");
                    }
                    last_error = LocalAnswer::UpstreamFailed;
                    break;
                }
                Err(Err(_)) => {
                    return Err(client_failure.unwrap_or(LocalAnswer::ClientBodyFailed));
                }
                Err(Ok(())) => {
                    self.report(balancer, index, Outcome::Failure);
                    last_error = LocalAnswer::UpstreamTimeout;
                    break;
                }
            }
        }
        Err(last_error)
    }

    fn report(&self, balancer: &BackendBalancer, index: usize, outcome: Outcome) {
        if balancer.report(index, outcome) {
            self.data_plane
                .metrics()
                .endpoint_ejections
                .get_or_create(&backend_labels(&balancer.key))
                .inc();
            if let Some(endpoint) = balancer.endpoint(index) {
                tracing::warn!(endpoint = %endpoint.addr, backend = %balancer.key, "endpoint ejected after consecutive failures");
            }
        }
    }
}

/// ACME http-01 challenges must be answered over plain HTTP (cert-manager relies on it).
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The verified client certificate's subject DN, under the name ingress-nginx used.
pub const CLIENT_SUBJECT_HEADER: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
/// `SUCCESS` when a client certificate was verified.
pub const CLIENT_VERIFY_HEADER: HeaderName = HeaderName::from_static("ssl-client-verify");

/// The fields whose values Sluice sets itself and vouches for.
static VOUCHED: [HeaderName; 7] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
    CLIENT_SUBJECT_HEADER,
    CLIENT_VERIFY_HEADER,
];

/// `https://host[:port]/path?query` for a redirect.
fn https_location(host: &str, port: u16, path_and_query: &PathAndQuery) -> Option<HeaderValue> {
    let location = if port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{port}{path_and_query}")
    };
    HeaderValue::from_str(&location).ok()
}

/// The longest gRPC deadline waited for.
const MAX_GRPC_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Where and how one request is sent upstream.
struct Sent<'a> {
    client: &'a UpstreamClient<'a>,
    /// For the response headers.
    timeout: Duration,
    balancer: &'a BackendBalancer,
    policy: &'a BalancePolicy,
    hash: Option<u64>,
}

/// Why policies refused a request, with the limit to describe in its headers.
struct Refusal {
    answer: LocalAnswer,
    report: Option<LimitReport>,
    /// `WWW-Authenticate` challenges of a 401.
    challenges: Vec<HeaderValue>,
    /// Other headers of the answer: a redirect's `Location` and cookies.
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// What a route's policies let through: the Auth method that passed the request, and the
/// tightest rate limit to report on the response.
#[derive(Default)]
struct Admitted {
    auth_method: Option<AuthMethodLabel>,
    /// Set by the Auth method(s) that let the request through.
    auth_headers: Vec<crate::auth::UpstreamHeader>,
    limit_report: Option<LimitReport>,
}

/// Runs a route's policies in order.
async fn enforce_policies(
    live: &LiveState,
    policies: &RoutePolicies,
    request: &RequestView<'_>,
) -> Result<Admitted, Refusal> {
    let refusal = |answer| Refusal {
        answer,
        report: None,
        challenges: Vec::new(),
        headers: Vec::new(),
    };
    let unavailable = refusal(LocalAnswer::PolicyUnavailable);
    if policies.unavailable {
        return Err(unavailable);
    }
    // Who first: a refused client spends no rate-limit budget of the route.
    let mut passed = None;
    let mut auth_headers = Vec::new();
    if let Some(auth) = &policies.auth {
        let decision = auth.authorize(request, &live.auth_context()).await;
        if let Some(counters) = live.auth_counters(&auth.name) {
            let (method, result) = decision.outcome();
            counters.count(method, result);
        }
        match decision {
            AuthDecision::Allow { method, headers } => {
                passed = Some(method);
                auth_headers = headers;
            }
            AuthDecision::Forbidden { .. } => return Err(refusal(LocalAnswer::Forbidden)),
            AuthDecision::Busy => return Err(refusal(LocalAnswer::AuthBusy)),
            AuthDecision::Unavailable { .. } => return Err(unavailable),
            AuthDecision::Unauthorized { challenges, .. } => {
                return Err(Refusal {
                    challenges,
                    ..refusal(LocalAnswer::Unauthorized)
                });
            }
            AuthDecision::Redirect { redirect, .. } => {
                let cookies = redirect
                    .cookies
                    .into_iter()
                    .map(|cookie| (SET_COOKIE, cookie));
                return Err(Refusal {
                    headers: std::iter::once((LOCATION, redirect.location))
                        .chain(cookies)
                        .collect(),
                    ..refusal(LocalAnswer::AuthRedirect(redirect.status))
                });
            }
        }
    }
    let now = Instant::now();
    let mut tightest: Option<LimitReport> = None;
    for policy in &policies.rate_limits {
        let Some(limiter) = live.limiter(&policy.name) else {
            return Err(unavailable);
        };
        match limiter.check(request, now).await {
            Decision::Allow(None) => {}
            Decision::Unavailable => {
                return Err(refusal(LocalAnswer::LimitUnavailable));
            }
            Decision::Allow(Some(state)) => {
                let report = LimitReport {
                    policy: Arc::clone(policy),
                    state,
                    retry_after: None,
                };
                if tightest
                    .as_ref()
                    .is_none_or(|current| state.remaining < current.state.remaining)
                {
                    tightest = Some(report);
                }
            }
            Decision::Limit { state, retry_after } => {
                return Err(Refusal {
                    report: Some(LimitReport {
                        policy: Arc::clone(policy),
                        state,
                        retry_after: Some(retry_after),
                    }),
                    ..refusal(LocalAnswer::TooManyRequests)
                });
            }
        }
    }
    Ok(Admitted {
        auth_method: passed,
        auth_headers,
        limit_report: tightest,
    })
}

/// What policies and the cache see of a request.
fn request_view<'a>(
    client_ip: IpAddr,
    host: &'a str,
    path_and_query: &'a PathAndQuery,
    method: &'a Method,
    headers: &'a http::HeaderMap,
    https: bool,
) -> RequestView<'a> {
    RequestView {
        client_ip,
        host,
        path: path_and_query.path(),
        query: path_and_query.query(),
        method,
        headers,
        https,
    }
}

fn upstream_uri(
    scheme: Scheme,
    authority: &Option<Authority>,
    path_and_query: &PathAndQuery,
) -> Option<Uri> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority.clone()?);
    parts.path_and_query = Some(path_and_query.clone());
    Uri::from_parts(parts).ok()
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn limit_usize(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

fn body_limit_exceeded(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// The value consistent hashing uses, when the route hashes and the request has one.
fn hash_input(policy: &BalancePolicy, headers: &http::HeaderMap, client_ip: IpAddr) -> Option<u64> {
    let BalancePolicy::Hash(on) = policy else {
        return None;
    };
    match on {
        HashOn::ClientIp => Some(stable_hash(client_ip)),
        HashOn::Header(name) => headers
            .get(name.as_str())
            .map(|value| stable_hash(value.as_bytes())),
        HashOn::Cookie(name) => cookie_value(headers, name).map(stable_hash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_inputs_come_from_the_named_attribute() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice"));
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; sid=xyz"),
        );
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let header = BalancePolicy::Hash(HashOn::Header("x-user".into()));
        let cookie = BalancePolicy::Hash(HashOn::Cookie("sid".into()));
        let missing = BalancePolicy::Hash(HashOn::Cookie("nope".into()));
        assert_eq!(
            hash_input(&header, &headers, ip),
            Some(stable_hash(b"alice".as_slice()))
        );
        assert_eq!(
            hash_input(&cookie, &headers, ip),
            Some(stable_hash(b"xyz".as_slice()))
        );
        assert_eq!(hash_input(&missing, &headers, ip), None);
        assert_eq!(
            hash_input(&BalancePolicy::Hash(HashOn::ClientIp), &headers, ip),
            Some(stable_hash(ip))
        );
        assert_eq!(hash_input(&BalancePolicy::RoundRobin, &headers, ip), None);
    }

    #[test]
    fn local_answers_have_a_small_typed_body() {
        for answer in [
            LocalAnswer::NoRoute,
            LocalAnswer::NoEndpoints,
            LocalAnswer::UpstreamFailed,
            LocalAnswer::UpstreamTimeout,
            LocalAnswer::PayloadTooLarge,
            LocalAnswer::AuthRedirect(StatusCode::FOUND),
            LocalAnswer::AuthRedirect(StatusCode::SEE_OTHER),
            LocalAnswer::AuthRedirect(StatusCode::PERMANENT_REDIRECT),
        ] {
            let response = answer.response();
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            assert!(response.status().as_str().starts_with(&answer.text()[..3]));
        }
    }
}
