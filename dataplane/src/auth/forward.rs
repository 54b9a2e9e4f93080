//! Forward (external) authorization: each request is described to an HTTP service, whose
//! answer decides. What is sent follows ingress-nginx's `auth-url` and Traefik's
//! `forwardAuth`, so services written for them (oauth2-proxy, Authelia) can be used.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONTENT_LENGTH, HOST, HeaderName, HeaderValue, LOCATION, SET_COOKIE, TE, VIA, WWW_AUTHENTICATE,
};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::{AuthDecision, MethodVerdict, UpstreamHeader};
use crate::metrics::AuthMethodLabel;
use crate::proxy::headers::{
    HOP_BY_HOP, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP,
};
use crate::ratelimit::RequestView;

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");

/// The most of an answer's body read, so its connection can be kept; a longer body is
/// dropped with its connection. Never passed on to the client.
const MAX_DRAINED_BODY: usize = 4096;

/// An authorization service and what to copy to and from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// `http` or `https`, with a host; no user info.
    pub url: Uri,
    /// For the whole exchange: connecting, the answer's headers, and reading its body.
    pub timeout: Duration,
    /// Client request headers sent to the service, all their values.
    pub request_headers: Vec<HeaderName>,
    /// Headers of a 2xx answer set on the upstream request, all their values; client copies
    /// of these names never reach the upstream.
    pub response_headers: Vec<HeaderName>,
}

/// A redirect passed on to the client: a sign-in page, typically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRedirect {
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    pub location: HeaderValue,
    /// The service's `Set-Cookie` values: a sign-in flow keeps its state in them
    /// (oauth2-proxy's CSRF cookie).
    pub cookies: Vec<HeaderValue>,
}

impl ForwardAuth {
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

    /// Why `name` cannot be copied to or from the service, if it cannot: it describes one
    /// connection only, or Sluice sets it itself on the request to the service or upstream.
    pub fn reserved_header(name: &HeaderName) -> Option<&'static str> {
        let set_by_sluice = [HOST, CONTENT_LENGTH, VIA, X_REAL_IP.clone()];
        // Prefixes as well as names: a client sending another header of these families
        // could pass it off as Sluice's (ingress-nginx's `ssl-client-cert`, say).
        let families = ["x-forwarded-", "x-original-", "ssl-client-"];
        // `TE` too, which the proxy passes on only as `TE: trailers`.
        if HOP_BY_HOP.contains(name) || name == TE {
            Some("a hop-by-hop header, which describes one connection only")
        } else if set_by_sluice.contains(name)
            || families
                .iter()
                .any(|family| name.as_str().starts_with(family))
        {
            Some("Sluice sets this header itself")
        } else {
            None
        }
    }

    /// Asks the service about `request`. `query` is the request's query as the service may
    /// see it (without an API key the policy reads). Fails closed: anything but a clear
    /// answer is [`AuthDecision::Unavailable`].
    pub(super) async fn check(
        &self,
        request: &RequestView<'_>,
        query: Option<&str>,
    ) -> MethodVerdict {
        let unavailable = MethodVerdict::Decided(AuthDecision::Unavailable {
            method: AuthMethodLabel::forward,
        });
        let deadline = Instant::now() + self.timeout;
        let Some(asked) = self.request_to_service(request, query) else {
            return unavailable;
        };
        let client = match CLIENT.with(Clone::clone) {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "no client for authorization services");
                return unavailable;
            }
        };
        // Only the authority: a URL's path or query may carry a token of the service's.
        let service = self.url.authority().map(|authority| authority.as_str());
        let response = match tokio::time::timeout_at(deadline, client.request(asked)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                tracing::debug!(service, %error, "authorization service failed");
                return unavailable;
            }
            Err(_elapsed) => {
                tracing::debug!(service, timeout = ?self.timeout, "authorization service did not answer in time");
                return unavailable;
            }
        };
        let (parts, body) = response.into_parts();
        let verdict = self.verdict(parts.status, &parts.headers);
        if matches!(
            verdict,
            MethodVerdict::Decided(AuthDecision::Unavailable { .. })
        ) {
            tracing::debug!(
                service,
                status = parts.status.as_u16(),
                "authorization service gave no usable answer"
            );
        }
        drain(body, deadline).await;
        verdict
    }

    /// `GET` to the service with the listed client headers and the description of the
    /// request; `None` when the request cannot be described in header values.
    fn request_to_service(
        &self,
        request: &RequestView<'_>,
        query: Option<&str>,
    ) -> Option<Request<Empty<Bytes>>> {
        let mut headers = HeaderMap::new();
        for name in &self.request_headers {
            for value in request.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let scheme = if request.https { "https" } else { "http" };
        let uri = match query {
            Some(query) => format!("{}?{query}", request.path),
            None => request.path.to_owned(),
        };
        // An IPv6 literal host goes in brackets in a URL.
        let original_url = if request.host.contains(':') {
            format!("{scheme}://[{}]{uri}", request.host)
        } else {
            format!("{scheme}://{}{uri}", request.host)
        };
        let client = request.client_ip.to_string();
        // Inserted after the copies, replacing whatever the client sent under these names
        // (which the controller also refuses to list).
        for (name, value) in [
            (&X_FORWARDED_METHOD, request.method.as_str()),
            (&X_FORWARDED_PROTO, scheme),
            (&X_FORWARDED_HOST, request.host),
            (&X_FORWARDED_URI, uri.as_str()),
            (&X_FORWARDED_FOR, client.as_str()),
            (&X_ORIGINAL_URL, original_url.as_str()),
        ] {
            headers.insert(name, HeaderValue::from_str(value).ok()?);
        }
        let mut asked = Request::new(Empty::new());
        *asked.uri_mut() = self.url.clone();
        *asked.headers_mut() = headers;
        Some(asked)
    }

    /// What the service's answer means for the request.
    fn verdict(&self, status: StatusCode, headers: &HeaderMap) -> MethodVerdict {
        if status.is_success() {
            let passed: Vec<UpstreamHeader> = self
                .response_headers
                .iter()
                .flat_map(|name| {
                    headers
                        .get_all(name)
                        .iter()
                        .map(move |value| (name.clone(), value.clone()))
                })
                .collect();
            return MethodVerdict::Passed(passed);
        }
        let decided = MethodVerdict::Decided;
        match status {
            StatusCode::UNAUTHORIZED => MethodVerdict::Failed {
                carried: true,
                challenge: challenge(headers),
            },
            StatusCode::FORBIDDEN => decided(AuthDecision::Forbidden {
                method: AuthMethodLabel::forward,
            }),
            StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT => match super::single(headers, &LOCATION) {
                Some(location) => decided(AuthDecision::Redirect {
                    method: AuthMethodLabel::forward,
                    redirect: AuthRedirect {
                        status,
                        location: location.clone(),
                        cookies: headers.get_all(SET_COOKIE).iter().cloned().collect(),
                    },
                }),
                None => decided(AuthDecision::Unavailable {
                    method: AuthMethodLabel::forward,
                }),
            },
            _ => decided(AuthDecision::Unavailable {
                method: AuthMethodLabel::forward,
            }),
        }
    }
}

/// The service's `WWW-Authenticate`, several values joined into one (the field is a
/// comma-separated list).
fn challenge(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(WWW_AUTHENTICATE).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Reads a short answer body to its end, so the connection goes back to the pool; a long or
/// slow one is dropped, and its connection with it.
async fn drain(body: Incoming, deadline: Instant) {
    if body.is_end_stream()
        || body
            .size_hint()
            .upper()
            .is_some_and(|length| length > MAX_DRAINED_BODY as u64)
    {
        return;
    }
    let _ = tokio::time::timeout_at(deadline, Limited::new(body, MAX_DRAINED_BODY).collect()).await;
}

type ServiceClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

thread_local! {
    /// One client per traffic thread, made on first use: like the upstream clients, each
    /// thread's connections stay on the runtime that uses them, kept alive in its pool.
    static CLIENT: Result<ServiceClient, String> = service_client();
}

fn service_client() -> Result<ServiceClient, String> {
    let tls = crate::upstream::verifying_config(&crate::snapshot::UpstreamVerify::PublicRoots)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    Ok(builder.build(connector))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use http::{Method, Response};
    use http_body::Frame;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{Full, StreamBody};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::auth::{ApiKeys, AuthContext, AuthPolicy, KeyLocation};
    use crate::snapshot::ObjectRef;

    /// A real authorization service on 127.0.0.1, answering by the path it is asked on and
    /// keeping what each request looked like. It stops with the test's runtime.
    struct AuthService {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<(Method, HeaderMap)>>>,
        connections: Arc<AtomicUsize>,
    }

    impl AuthService {
        async fn start() -> AuthService {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(AtomicUsize::new(0));
            let (seen_by_server, counted) = (Arc::clone(&seen), Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let seen = Arc::clone(&seen_by_server);
                    let service = service_fn(move |request: Request<Incoming>| {
                        seen.lock()
                            .unwrap()
                            .push((request.method().clone(), request.headers().clone()));
                        async move { Ok::<_, Infallible>(answer(request.uri().path()).await) }
                    });
                    tokio::spawn(
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                    );
                }
            });
            AuthService {
                addr,
                seen,
                connections,
            }
        }

        fn forward(&self, path: &str) -> ForwardAuth {
            ForwardAuth {
                url: format!("http://{}{path}", self.addr).parse().unwrap(),
                timeout: Duration::from_secs(2),
                request_headers: vec![HeaderName::from_static("cookie")],
                response_headers: vec![
                    HeaderName::from_static("x-user"),
                    HeaderName::from_static("x-groups"),
                ],
            }
        }

        fn last_seen(&self) -> (Method, HeaderMap) {
            self.seen
                .lock()
                .unwrap()
                .last()
                .cloned()
                .expect("a request")
        }
    }

    async fn answer(path: &str) -> Response<BoxBody<Bytes, Infallible>> {
        let builder = Response::builder();
        if path == "/allow" {
            // The body's second half comes later than the headers: only a connection whose
            // body is read to the end can be used again.
            let halves = futures_util::stream::unfold(0, |sent| async move {
                match sent {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"welcome, "))), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        Some((Ok(Frame::data(Bytes::from_static(b"ada"))), 2))
                    }
                    _ => None,
                }
            });
            return builder
                .header("x-user", "ada")
                .header("x-groups", "staff")
                .header("x-groups", "ops")
                .header("x-not-listed", "1")
                .body(BoxBody::new(StreamBody::new(halves)))
                .unwrap();
        }
        let builder = match path {
            "/login" => builder
                .status(401)
                .header("www-authenticate", "Bearer realm=\"shop\""),
            "/forbid" => builder.status(403),
            "/sign-in" => builder
                .status(302)
                .header("location", "https://sso.test/start?rd=%2Fcart")
                .header("set-cookie", "csrf=abc; HttpOnly"),
            "/redirect-nowhere" => builder.status(302),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                builder
            }
            _ => builder.status(418),
        };
        builder
            .body(BoxBody::new(Full::new(Bytes::from_static(
                b"the service's own body",
            ))))
            .unwrap()
    }

    /// Every test stops within 10 s, whatever goes wrong.
    async fn bounded<T>(test: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), test)
            .await
            .expect("the test took over 10 s")
    }

    fn view<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestView<'a> {
        RequestView {
            client_ip: "192.0.2.7".parse().unwrap(),
            host: "shop.test",
            path: "/cart",
            query,
            method: &Method::POST,
            headers,
            https: true,
        }
    }

    fn policy(forward: ForwardAuth) -> AuthPolicy {
        AuthPolicy {
            name: ObjectRef::new("shop", "sso"),
            ip_deny: Vec::new(),
            ip_allow: Vec::new(),
            basic: None,
            api_key: None,
            jwt: None,
            forward: Some(Arc::new(forward)),
            require_all: false,
            strip_credentials: true,
        }
    }

    #[tokio::test]
    async fn a_2xx_passes_with_every_value_of_the_listed_headers_on_a_kept_connection() {
        bounded(async {
            let service = AuthService::start().await;
            let forward = service.forward("/allow");
            let headers = HeaderMap::new();
            let header = |name, value| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            };
            let expected = vec![
                header("x-user", "ada"),
                header("x-groups", "staff"),
                header("x-groups", "ops"),
            ];
            for _ in 0..2 {
                match forward.check(&view(&headers, None), None).await {
                    MethodVerdict::Passed(set) => assert_eq!(set, expected.clone()),
                    _ => panic!("not passed"),
                }
            }
            // The short body was read, so the second check reused the first connection.
            assert_eq!(service.connections.load(Ordering::SeqCst), 1);
            assert_eq!(
                policy(forward)
                    .authorize(&view(&headers, None), &AuthContext::default())
                    .await,
                AuthDecision::Allow {
                    method: AuthMethodLabel::forward,
                    headers: expected,
                }
            );
        })
        .await;
    }

    #[tokio::test]
    async fn the_service_sees_sluices_description_of_the_request_never_the_clients() {
        bounded(async {
            let service = AuthService::start().await;
            let mut headers = HeaderMap::new();
            headers.append("cookie", HeaderValue::from_static("session=1"));
            headers.append("cookie", HeaderValue::from_static("theme=dark"));
            headers.insert("x-secret", HeaderValue::from_static("not for the service"));
            // Forged by the client: the service must get only Sluice's values.
            headers.insert("x-forwarded-uri", HeaderValue::from_static("/public"));
            headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
            headers.insert("x-forwarded-method", HeaderValue::from_static("GET"));
            headers.insert(
                "x-original-url",
                HeaderValue::from_static("http://evil.test/"),
            );
            let verdict = service
                .forward("/allow")
                .check(&view(&headers, Some("item=1")), Some("item=1"))
                .await;
            assert!(matches!(verdict, MethodVerdict::Passed(_)));
            let (method, seen) = service.last_seen();
            assert_eq!(method, Method::GET);
            let values = |name: &str| -> Vec<&str> {
                seen.get_all(name)
                    .iter()
                    .map(|value| value.to_str().unwrap())
                    .collect()
            };
            assert_eq!(values("x-forwarded-method"), ["POST"]);
            assert_eq!(values("x-forwarded-proto"), ["https"]);
            assert_eq!(values("x-forwarded-host"), ["shop.test"]);
            assert_eq!(values("x-forwarded-uri"), ["/cart?item=1"]);
            assert_eq!(values("x-forwarded-for"), ["192.0.2.7"]);
            assert_eq!(values("x-original-url"), ["https://shop.test/cart?item=1"]);
            assert_eq!(values("cookie"), ["session=1", "theme=dark"]);
            assert!(values("x-secret").is_empty(), "only listed headers go");
            assert_eq!(values("host"), [service.addr.to_string()]);
            assert!(values("content-length").iter().all(|length| *length == "0"));
        })
        .await;
    }

    #[tokio::test]
    async fn an_api_key_in_the_query_is_not_told_to_the_service() {
        bounded(async {
            let service = AuthService::start().await;
            let keys = ApiKeys::new(
                KeyLocation::Query("api_key".into()),
                [b"k".as_slice()],
                false,
            );
            let both = AuthPolicy {
                api_key: Some(Arc::new(keys.unwrap())),
                ..policy(service.forward("/allow"))
            };
            let headers = HeaderMap::new();
            let decision = both
                .authorize(
                    &view(&headers, Some("x=1&api_key=guess&y=2")),
                    &AuthContext::default(),
                )
                .await;
            assert!(matches!(
                decision,
                AuthDecision::Allow {
                    method: AuthMethodLabel::forward,
                    ..
                }
            ));
            let (_, seen) = service.last_seen();
            assert_eq!(seen["x-forwarded-uri"], "/cart?x=1&y=2");
            assert_eq!(seen["x-original-url"], "https://shop.test/cart?x=1&y=2");
        })
        .await;
    }

    #[tokio::test]
    async fn refusals_and_redirects_are_the_services_and_anything_else_fails_closed() {
        bounded(async {
            let service = AuthService::start().await;
            let headers = HeaderMap::new();
            let decide = |path: &str| {
                let policy = policy(service.forward(path));
                let headers = &headers;
                async move {
                    policy
                        .authorize(&view(headers, None), &AuthContext::default())
                        .await
                }
            };
            assert_eq!(
                decide("/login").await,
                AuthDecision::Unauthorized {
                    challenges: vec![HeaderValue::from_static("Bearer realm=\"shop\"")],
                    method: AuthMethodLabel::forward,
                }
            );
            assert_eq!(
                decide("/forbid").await,
                AuthDecision::Forbidden {
                    method: AuthMethodLabel::forward
                }
            );
            assert_eq!(
                decide("/sign-in").await,
                AuthDecision::Redirect {
                    method: AuthMethodLabel::forward,
                    redirect: AuthRedirect {
                        status: StatusCode::FOUND,
                        location: HeaderValue::from_static("https://sso.test/start?rd=%2Fcart"),
                        cookies: vec![HeaderValue::from_static("csrf=abc; HttpOnly")],
                    },
                }
            );
            let unavailable = AuthDecision::Unavailable {
                method: AuthMethodLabel::forward,
            };
            assert_eq!(decide("/teapot").await, unavailable);
            assert_eq!(decide("/redirect-nowhere").await, unavailable);
            assert_eq!(
                decide("/redirect-nowhere").await.outcome(),
                (AuthMethodLabel::forward, crate::metrics::AuthResult::error)
            );
            assert_eq!(
                decide("/sign-in").await.outcome(),
                (
                    AuthMethodLabel::forward,
                    crate::metrics::AuthResult::redirected
                )
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_service_slower_than_the_timeout_is_unavailable_at_the_timeout() {
        bounded(async {
            let service = AuthService::start().await;
            let slow = ForwardAuth {
                timeout: Duration::from_millis(200),
                ..service.forward("/slow")
            };
            let headers = HeaderMap::new();
            let started = std::time::Instant::now();
            let decision = policy(slow)
                .authorize(&view(&headers, None), &AuthContext::default())
                .await;
            let took = started.elapsed();
            assert_eq!(
                decision,
                AuthDecision::Unavailable {
                    method: AuthMethodLabel::forward
                }
            );
            assert!(
                took >= Duration::from_millis(200) && took < Duration::from_secs(2),
                "{took:?}"
            );
            assert_eq!(service.seen.lock().unwrap().len(), 1, "it was asked");
        })
        .await;
    }

    #[tokio::test]
    async fn a_service_that_refuses_connections_is_unavailable() {
        bounded(async {
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let forward = ForwardAuth {
                url: format!("http://{closed}/auth").parse().unwrap(),
                timeout: Duration::from_secs(2),
                request_headers: Vec::new(),
                response_headers: Vec::new(),
            };
            let headers = HeaderMap::new();
            assert_eq!(
                policy(forward)
                    .authorize(&view(&headers, None), &AuthContext::default())
                    .await,
                AuthDecision::Unavailable {
                    method: AuthMethodLabel::forward
                }
            );
        })
        .await;
    }

    #[test]
    fn client_copies_of_the_services_headers_are_stripped_whichever_method_passed() {
        let forward = ForwardAuth {
            url: Uri::from_static("http://auth.test/"),
            timeout: Duration::from_secs(1),
            request_headers: Vec::new(),
            response_headers: vec![HeaderName::from_static("x-user")],
        };
        let keys = ApiKeys::new(
            KeyLocation::Header(HeaderName::from_static("x-api-key")),
            [b"k".as_slice()],
            false,
        )
        .unwrap();
        let policy = AuthPolicy {
            api_key: Some(Arc::new(keys)),
            strip_credentials: false,
            ..policy(forward)
        };
        let mut headers = HeaderMap::new();
        headers.append("x-user", HeaderValue::from_static("admin"));
        headers.append("x-user", HeaderValue::from_static("root"));
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        policy.strip(&mut headers, AuthMethodLabel::api_key);
        assert!(headers.get("x-user").is_none());
        assert!(
            headers.get("x-api-key").is_some(),
            "the key that passed stays"
        );
    }

    #[test]
    fn hop_by_hop_and_sluices_own_headers_are_reserved() {
        for name in [
            "host",
            "content-length",
            "connection",
            "transfer-encoding",
            "upgrade",
            "x-forwarded-for",
            "x-forwarded-uri",
            "x-forwarded-prefix",
            "x-original-url",
            "x-real-ip",
            "ssl-client-verify",
        ] {
            assert!(
                ForwardAuth::reserved_header(&HeaderName::from_static(name)).is_some(),
                "{name}"
            );
        }
        for name in ["authorization", "cookie", "x-user", "x-auth-request-email"] {
            assert_eq!(
                ForwardAuth::reserved_header(&HeaderName::from_static(name)),
                None,
                "{name}"
            );
        }
    }
}
