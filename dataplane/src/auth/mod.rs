//! `Auth` policies on the request path: client networks, Basic credentials, API keys, an
//! external authorization service.
//!
//! The controller builds these from validated specs (parsing every hash and key once, at
//! compile time); a request only looks things up and verifies. Secrets never appear in
//! errors, logs or metrics.

pub(crate) mod api_key;
mod basic;
mod forward;
pub mod jwks;
pub mod jwt;
pub mod jwt_ring;

use std::sync::Arc;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use ipnet::IpNet;

use api_key::KeyLookup;
pub use api_key::{ApiKeys, KeyLocation, api_key_set};
use basic::BasicVerdict;
pub use basic::{BasicCredentials, MAX_PASSWORD_BYTES, PasswordHash};
pub use forward::{AuthRedirect, ForwardAuth};

use jwks::RemoteKeySets;
use jwt::{JwtRules, TokenVerdict};

pub use crate::metrics::{AuthMethodLabel, AuthResult};
use crate::ratelimit::RequestView;
use crate::ratelimit::redis::RedisBackend;
use crate::snapshot::ObjectRef;

/// A problem with credential material, found when a policy is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("line {line}: not `user:hash`")]
    NotUserColonHash { line: usize },
    #[error("line {line} (user {user}): {reason}")]
    UnsupportedHash {
        line: usize,
        user: String,
        reason: &'static str,
    },
    #[error("line {line}: user {user} appears twice")]
    DuplicateUser { line: usize, user: String },
    #[error("no credentials")]
    Empty,
}

/// The header's value when it appears exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// A validated `Auth` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// The policy object; a metrics label.
    pub name: ObjectRef,
    pub ip_deny: Vec<IpNet>,
    pub ip_allow: Vec<IpNet>,
    pub basic: Option<Arc<BasicCredentials>>,
    pub api_key: Option<Arc<ApiKeys>>,
    pub jwt: Option<Arc<JwtRules>>,
    pub forward: Option<Arc<ForwardAuth>>,
    /// Every credential method must succeed (else one is enough).
    pub require_all: bool,
    pub strip_credentials: bool,
}

/// A header for the upstream request, set by a method that let the request through (a JWT
/// claim, an authorization service's answer).
pub type UpstreamHeader = (HeaderName, HeaderValue);

/// The outcome of [`AuthPolicy::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Through; `method` is what let it (`none`: the policy has no credential method).
    /// `headers` replace any the client sent under those names.
    Allow {
        method: AuthMethodLabel,
        headers: Vec<UpstreamHeader>,
    },
    /// 403, refused by `method`: the client's network, or an authorization service.
    Forbidden { method: AuthMethodLabel },
    /// 401 with these `WWW-Authenticate` challenges; `method` is the one whose credentials
    /// the request carried and that failed (`none`: it carried none).
    Unauthorized {
        challenges: Vec<HeaderValue>,
        method: AuthMethodLabel,
    },
    /// 503: no password verification slot was free.
    Busy,
    /// 503: something `method` needs to decide did not answer; never open access.
    Unavailable { method: AuthMethodLabel },
    /// An authorization service sends the client elsewhere (to sign in).
    Redirect {
        method: AuthMethodLabel,
        redirect: AuthRedirect,
    },
}

impl AuthDecision {
    /// The method and result it is counted under.
    pub fn outcome(&self) -> (AuthMethodLabel, AuthResult) {
        match self {
            AuthDecision::Allow { method, .. } => (*method, AuthResult::allowed),
            AuthDecision::Forbidden { method } => (*method, AuthResult::forbidden),
            AuthDecision::Unauthorized { method, .. } => (*method, AuthResult::unauthorized),
            AuthDecision::Busy => (AuthMethodLabel::basic, AuthResult::busy),
            AuthDecision::Unavailable { method } => (*method, AuthResult::error),
            AuthDecision::Redirect { method, .. } => (*method, AuthResult::redirected),
        }
    }
}

/// What a check may need besides the request and the policy: the key sets fetched from
/// `jwksUri`s, and Redis (revoked token ids).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthContext<'a> {
    pub remote_keys: Option<&'a RemoteKeySets>,
    pub redis: Option<&'a RedisBackend>,
}

/// What one credential method says of a request.
enum MethodVerdict {
    Passed(Vec<UpstreamHeader>),
    /// Missing or wrong credentials. `carried`: the request had some for this method.
    /// `challenge`: a method-specific `WWW-Authenticate` in place of the static one.
    Failed {
        carried: bool,
        challenge: Option<HeaderValue>,
    },
    /// The method answers the request itself (503, a service's 403 or redirect).
    Decided(AuthDecision),
}

impl AuthPolicy {
    /// The credential methods in the order they are tried: cheap lookups first, password
    /// hashing after them, a round trip to an authorization service last.
    fn methods(&self) -> impl Iterator<Item = AuthMethodLabel> {
        [
            (self.api_key.is_some(), AuthMethodLabel::api_key),
            (self.jwt.is_some(), AuthMethodLabel::jwt),
            (self.basic.is_some(), AuthMethodLabel::basic),
            (self.forward.is_some(), AuthMethodLabel::forward),
        ]
        .into_iter()
        .filter_map(|(present, method)| present.then_some(method))
    }

    async fn check(
        &self,
        method: AuthMethodLabel,
        request: &RequestView<'_>,
        context: &AuthContext<'_>,
    ) -> MethodVerdict {
        let failed = |carried| MethodVerdict::Failed {
            carried,
            challenge: None,
        };
        match method {
            AuthMethodLabel::api_key => {
                let Some(keys) = &self.api_key else {
                    return failed(false);
                };
                let Some(key) = keys.presented(request.headers, request.query) else {
                    return failed(keys.carried(request.headers, request.query));
                };
                match keys.lookup(&key) {
                    KeyLookup::Valid => MethodVerdict::Passed(Vec::new()),
                    KeyLookup::Invalid => failed(true),
                    KeyLookup::AskRedis(digest) => {
                        let unavailable = MethodVerdict::Decided(AuthDecision::Unavailable {
                            method: AuthMethodLabel::api_key,
                        });
                        let Some(redis) = context.redis else {
                            return unavailable;
                        };
                        match redis.is_member(&api_key_set(&self.name), &digest).await {
                            Ok(true) => MethodVerdict::Passed(Vec::new()),
                            Ok(false) => failed(true),
                            Err(_) => unavailable,
                        }
                    }
                }
            }
            AuthMethodLabel::basic => {
                let Some(basic) = &self.basic else {
                    return failed(false);
                };
                match basic.check(request.headers).await {
                    BasicVerdict::Passed => MethodVerdict::Passed(Vec::new()),
                    BasicVerdict::Busy => MethodVerdict::Decided(AuthDecision::Busy),
                    BasicVerdict::Failed => failed(request.headers.contains_key(AUTHORIZATION)),
                }
            }
            AuthMethodLabel::jwt => match &self.jwt {
                Some(rules) => self.check_jwt(rules, request, context).await,
                None => failed(false),
            },
            AuthMethodLabel::forward => {
                let Some(forward) = &self.forward else {
                    return failed(false);
                };
                forward
                    .check(request, self.query_for_service(request.query).as_deref())
                    .await
            }
            AuthMethodLabel::ip | AuthMethodLabel::none => failed(false),
        }
    }

    async fn check_jwt(
        &self,
        rules: &JwtRules,
        request: &RequestView<'_>,
        context: &AuthContext<'_>,
    ) -> MethodVerdict {
        let invalid = || MethodVerdict::Failed {
            carried: true,
            challenge: rules.challenge(true),
        };
        let token = match jwt::bearer_token(request.headers) {
            Ok(Some(token)) => token,
            Ok(None) => {
                return MethodVerdict::Failed {
                    carried: false,
                    challenge: None,
                };
            }
            Err(()) => return invalid(),
        };
        let remote = rules
            .remote
            .as_ref()
            .and_then(|endpoint| context.remote_keys?.get(endpoint));
        let fetched = remote.and_then(|remote| remote.keys());
        if rules.keys.is_none() && fetched.is_none() {
            // No key to check with yet (the jwksUri has not answered): the token may well be
            // good, so this is Sluice's problem, not the client's.
            return MethodVerdict::Decided(AuthDecision::Unavailable {
                method: AuthMethodLabel::jwt,
            });
        }
        match rules.verify(token, &rules.key_sets(fetched.as_deref())) {
            TokenVerdict::Invalid { unknown_key } => {
                if unknown_key && let Some(remote) = remote {
                    remote.refresh_soon();
                }
                invalid()
            }
            TokenVerdict::Valid { claims, jti } => {
                if rules.revocation {
                    // A token that cannot be revoked is not accepted where revocation is
                    // asked for.
                    let Some(jti) = jti else {
                        return invalid();
                    };
                    let unavailable = MethodVerdict::Decided(AuthDecision::Unavailable {
                        method: AuthMethodLabel::jwt,
                    });
                    let Some(redis) = context.redis else {
                        return unavailable;
                    };
                    match redis
                        .is_member(&jwt::revocation_key(&self.name), &jti)
                        .await
                    {
                        Ok(false) => {}
                        Ok(true) => return invalid(),
                        Err(_) => return unavailable,
                    }
                }
                MethodVerdict::Passed(rules.claim_headers(&claims))
            }
        }
    }

    /// Decides one request; `request.client_ip` is the client address as
    /// `--trusted-proxies` resolved it.
    pub async fn authorize(
        &self,
        request: &RequestView<'_>,
        context: &AuthContext<'_>,
    ) -> AuthDecision {
        let client = request.client_ip;
        if self.ip_deny.iter().any(|network| network.contains(&client))
            || (!self.ip_allow.is_empty()
                && !self
                    .ip_allow
                    .iter()
                    .any(|network| network.contains(&client)))
        {
            return AuthDecision::Forbidden {
                method: AuthMethodLabel::ip,
            };
        }
        let mut passed_by = None;
        let mut headers = Vec::new();
        // The first method whose credentials the request carried and failed: what a 401 is
        // counted under.
        let mut failed = AuthMethodLabel::none;
        let mut challenges = Vec::new();
        for method in self.methods() {
            match self.check(method, request, context).await {
                MethodVerdict::Passed(set) => {
                    headers.extend(set);
                    passed_by.get_or_insert(method);
                    if !self.require_all {
                        break;
                    }
                }
                MethodVerdict::Failed { carried, challenge } => {
                    if carried && failed == AuthMethodLabel::none {
                        failed = method;
                    }
                    challenges.extend(challenge.map(|challenge| (method, challenge)));
                    // With `all`, one failure decides: no password hashing for nothing.
                    if self.require_all {
                        return self.unauthorized(failed, &challenges);
                    }
                }
                MethodVerdict::Decided(decision) => return decision,
            }
        }
        match passed_by {
            Some(method) => AuthDecision::Allow { method, headers },
            None if self.methods().next().is_none() => AuthDecision::Allow {
                method: if self.ip_allow.is_empty() && self.ip_deny.is_empty() {
                    AuthMethodLabel::none
                } else {
                    AuthMethodLabel::ip
                },
                headers,
            },
            None => self.unauthorized(failed, &challenges),
        }
    }

    /// A 401 with one challenge per credential method, Basic first (browsers then offer
    /// their login dialog); `specific` replaces a method's static challenge (a bearer error
    /// code, say).
    fn unauthorized(
        &self,
        method: AuthMethodLabel,
        specific: &[(AuthMethodLabel, HeaderValue)],
    ) -> AuthDecision {
        let mut methods: Vec<AuthMethodLabel> = self.methods().collect();
        methods.sort_by_key(|method| *method != AuthMethodLabel::basic);
        let challenges = methods
            .into_iter()
            .filter_map(|each| {
                if let Some((_, challenge)) = specific.iter().find(|(which, _)| *which == each) {
                    return Some(challenge.clone());
                }
                let text = match each {
                    AuthMethodLabel::basic => self.basic.as_ref()?.challenge(),
                    AuthMethodLabel::jwt => return self.jwt.as_ref()?.challenge(false),
                    AuthMethodLabel::api_key => match &self.api_key.as_ref()?.location {
                        KeyLocation::Header(name) => format!("ApiKey header=\"{name}\""),
                        KeyLocation::Query(parameter) => format!("ApiKey query=\"{parameter}\""),
                    },
                    _ => return None,
                };
                HeaderValue::from_str(&text).ok()
            })
            .collect();
        AuthDecision::Unauthorized { challenges, method }
    }

    /// The query an authorization service is told of: without the API key parameter, a
    /// credential of another method that nothing may have checked.
    fn query_for_service<'a>(&self, query: Option<&'a str>) -> Option<std::borrow::Cow<'a, str>> {
        let query = query?;
        let kept = self
            .api_key
            .as_ref()
            .and_then(|keys| keys.query_without_key(query));
        match kept {
            Some(kept) if kept.is_empty() => None,
            Some(kept) => Some(std::borrow::Cow::Owned(kept)),
            None => Some(std::borrow::Cow::Borrowed(query)),
        }
    }

    /// The headers only Sluice sets for this policy's routes: claim headers and the
    /// authorization service's answer headers.
    pub fn identity_headers(&self) -> impl Iterator<Item = &HeaderName> {
        let claims = self.jwt.iter().flat_map(|rules| &rules.claims_to_headers);
        let answers = self
            .forward
            .iter()
            .flat_map(|forward| &forward.response_headers);
        claims.map(|(_, name)| name).chain(answers)
    }

    /// The path and query without the API key parameter, when the key is sent in the query
    /// and must not reach the upstream (nor its access log); `None` when nothing changes.
    pub fn strip_query(
        &self,
        path_and_query: &http::uri::PathAndQuery,
        passed: AuthMethodLabel,
    ) -> Option<http::uri::PathAndQuery> {
        let keys = self.api_key.as_ref()?;
        if !self.strip_credentials && passed == AuthMethodLabel::api_key {
            return None;
        }
        let kept = keys.query_without_key(path_and_query.query()?)?;
        let rebuilt = if kept.is_empty() {
            path_and_query.path().to_owned()
        } else {
            format!("{}?{kept}", path_and_query.path())
        };
        rebuilt.parse().ok()
    }

    /// Removes the credentials this policy reads, so they do not reach the upstream.
    /// With `stripCredentials: false` the credentials of the method that let the request
    /// through (`passed`) go upstream; those of other methods never do, since nothing
    /// checked them. Client copies of the headers an authorization service sets are always
    /// removed, whichever method passed: only the service's values may reach the upstream.
    pub fn strip(&self, headers: &mut HeaderMap, passed: AuthMethodLabel) {
        let keep = |method| !self.strip_credentials && passed == method;
        // Basic and bearer credentials share the header; only one value is ever accepted.
        if (self.basic.is_some() || self.jwt.is_some())
            && !keep(AuthMethodLabel::basic)
            && !keep(AuthMethodLabel::jwt)
        {
            headers.remove(AUTHORIZATION);
        }
        // Identity headers are Sluice's to set: a client's copies never pass, whichever
        // method let the request through.
        let mut protected = self.identity_headers().peekable();
        if protected.peek().is_some() {
            for name in self.identity_headers() {
                headers.remove(name);
            }
            // Upstreams behind CGI-style gateways (PHP, WSGI, Rack) read `X_User` as
            // `X-User`: such look-alikes of an identity header go too.
            crate::proxy::headers::remove_look_alikes(headers, self.identity_headers());
        }
        if let Some(keys) = &self.api_key
            && let KeyLocation::Header(name) = &keys.location
            && !keep(AuthMethodLabel::api_key)
        {
            headers.remove(name);
        }
    }
}

/// Sets `headers` (what the Auth methods that passed gave) again, as the only values of
/// their names: the hop-by-hop cleanup removes whatever the client's `Connection` header
/// names, and that must not include what Sluice vouches for.
pub fn restore_identity_headers(target: &mut HeaderMap, headers: &[UpstreamHeader]) {
    for (name, _) in headers {
        target.remove(name);
    }
    for (name, value) in headers {
        target.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn identity_headers_are_set_again_after_a_connection_header_named_them() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("client"));
        let set = [(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("ada"),
        )];
        restore_identity_headers(&mut headers, &set);
        assert_eq!(headers.get_all("x-user").iter().count(), 1);
        assert_eq!(headers["x-user"], "ada");
    }
    use std::net::IpAddr;

    fn basic_header(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    fn open_policy() -> AuthPolicy {
        AuthPolicy {
            name: ObjectRef::new("shop", "members"),
            ip_deny: Vec::new(),
            ip_allow: Vec::new(),
            basic: None,
            api_key: None,
            jwt: None,
            forward: None,
            require_all: false,
            strip_credentials: true,
        }
    }

    impl AuthPolicy {
        async fn decide(
            &self,
            client: IpAddr,
            headers: &HeaderMap,
            query: Option<&str>,
        ) -> AuthDecision {
            let request = RequestView {
                client_ip: client,
                host: "shop.test",
                path: "/",
                query,
                method: &http::Method::GET,
                headers,
                https: false,
            };
            self.authorize(&request, &AuthContext::default()).await
        }
    }

    fn api_keys(location: KeyLocation, keys: &[&[u8]]) -> Arc<ApiKeys> {
        Arc::new(ApiKeys::new(location, keys.iter().copied(), false).unwrap())
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[tokio::test]
    async fn basic_credentials_pass_only_with_the_right_password() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let policy = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("shop", &format!("ada:{hash}")).unwrap(),
            )),
            ..open_policy()
        };
        assert_eq!(
            policy
                .decide(CLIENT, &basic_header("ada", "s3cret"), None)
                .await,
            AuthDecision::Allow {
                method: AuthMethodLabel::basic,
                headers: Vec::new(),
            }
        );
        // Again, from the login cache.
        assert!(matches!(
            policy
                .decide(CLIENT, &basic_header("ada", "s3cret"), None)
                .await,
            AuthDecision::Allow { .. }
        ));
        for headers in [
            basic_header("ada", "wrong"),
            basic_header("bob", "s3cret"),
            HeaderMap::new(),
        ] {
            match policy.decide(CLIENT, &headers, None).await {
                AuthDecision::Unauthorized { challenges, .. } => assert_eq!(
                    challenges,
                    [HeaderValue::from_static(
                        "Basic realm=\"shop\", charset=\"UTF-8\""
                    )]
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn api_keys_in_a_header_or_the_query() {
        let keys = ApiKeys::new(
            KeyLocation::Header(HeaderName::from_static("x-api-key")),
            [b"k-123".as_slice(), b"k-456".as_slice()],
            false,
        )
        .unwrap();
        let policy = AuthPolicy {
            api_key: Some(Arc::new(keys)),
            ..open_policy()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("k-456"));
        assert!(matches!(
            policy.decide(CLIENT, &headers, None).await,
            AuthDecision::Allow {
                method: AuthMethodLabel::api_key,
                ..
            }
        ));
        headers.insert("x-api-key", HeaderValue::from_static("k-789"));
        assert!(matches!(
            policy.decide(CLIENT, &headers, None).await,
            AuthDecision::Unauthorized { .. }
        ));
        let mut stripped = headers.clone();
        policy.strip(&mut stripped, AuthMethodLabel::api_key);
        assert!(stripped.get("x-api-key").is_none());
        // Two keys: the upstream might read the other one.
        let mut two = HeaderMap::new();
        two.append("x-api-key", HeaderValue::from_static("k-456"));
        two.append("x-api-key", HeaderValue::from_static("k-789"));
        assert!(matches!(
            policy.decide(CLIENT, &two, None).await,
            AuthDecision::Unauthorized {
                method: AuthMethodLabel::api_key,
                ..
            }
        ));

        let by_query = AuthPolicy {
            api_key: Some(api_keys(
                KeyLocation::Query("api_key".into()),
                &[b"a b/c".as_slice()],
            )),
            ..open_policy()
        };
        let empty = HeaderMap::new();
        assert!(matches!(
            by_query
                .decide(CLIENT, &empty, Some("x=1&api_key=a+b%2Fc"))
                .await,
            AuthDecision::Allow { .. }
        ));
        assert!(matches!(
            by_query.decide(CLIENT, &empty, Some("api_key=a+b")).await,
            AuthDecision::Unauthorized { .. }
        ));
        assert!(matches!(
            by_query
                .decide(CLIENT, &empty, Some("api_key=a+b%2Fc&api_key=x"))
                .await,
            AuthDecision::Unauthorized { .. }
        ));
        // A second copy under an encoded name: the upstream might read that one.
        assert!(matches!(
            by_query
                .decide(CLIENT, &empty, Some("api_key=a+b%2Fc&api%5Fkey=x"))
                .await,
            AuthDecision::Unauthorized { .. }
        ));
        assert!(ApiKeys::new(KeyLocation::Query("k".into()), [b"".as_slice()], false).is_err());
    }

    #[tokio::test]
    async fn overlong_passwords_and_repeated_headers_are_refused_unverified() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let policy = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("r", &format!("ada:{hash}")).unwrap(),
            )),
            ..open_policy()
        };
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            policy
                .decide(CLIENT, &basic_header("ada", &long), None)
                .await,
            AuthDecision::Unauthorized { .. }
        ));
        let mut twice = basic_header("ada", "pw");
        let second = twice.get(AUTHORIZATION).unwrap().clone();
        twice.append(AUTHORIZATION, second);
        assert!(matches!(
            policy.decide(CLIENT, &twice, None).await,
            AuthDecision::Unauthorized {
                method: AuthMethodLabel::basic,
                ..
            }
        ));
        // An unknown user is verified against a real user's hash, and fails.
        assert!(matches!(
            policy
                .decide(CLIENT, &basic_header("eve", "pw"), None)
                .await,
            AuthDecision::Unauthorized { .. }
        ));
    }

    #[test]
    fn a_key_in_the_query_is_removed_from_the_upstream_uri() {
        let policy = AuthPolicy {
            api_key: Some(api_keys(
                KeyLocation::Query("api_key".into()),
                &[b"k".as_slice()],
            )),
            ..open_policy()
        };
        let strip = |uri: &str| {
            policy
                .strip_query(&uri.parse().unwrap(), AuthMethodLabel::api_key)
                .map(|stripped| stripped.to_string())
        };
        assert_eq!(strip("/a?x=1&api_key=k&y=2").as_deref(), Some("/a?x=1&y=2"));
        assert_eq!(strip("/a?api_key=k").as_deref(), Some("/a"));
        assert_eq!(strip("/a?x=1"), None);
        // A name that decodes to the parameter's is the parameter.
        assert_eq!(
            strip("/a?api_key=k&api%5Fkey=other&x=1").as_deref(),
            Some("/a?x=1")
        );
        assert_eq!(strip("/a"), None);
        let kept = AuthPolicy {
            strip_credentials: false,
            ..policy.clone()
        };
        assert_eq!(
            kept.strip_query(&"/a?api_key=k".parse().unwrap(), AuthMethodLabel::api_key),
            None
        );
    }

    #[test]
    fn credentials_go_upstream_only_when_asked_and_only_those_that_passed() {
        let keys = ApiKeys::new(
            KeyLocation::Header(HeaderName::from_static("x-api-key")),
            [b"key".as_slice()],
            false,
        )
        .unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let keep = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("r", &format!("ada:{hash}")).unwrap(),
            )),
            api_key: Some(Arc::new(keys)),
            strip_credentials: false,
            ..open_policy()
        };
        let mut headers = basic_header("admin", "unchecked");
        headers.insert("x-api-key", HeaderValue::from_static("key"));
        keep.strip(&mut headers, AuthMethodLabel::api_key);
        assert!(
            headers.get("x-api-key").is_some(),
            "the key that passed stays"
        );
        assert!(
            headers.get(AUTHORIZATION).is_none(),
            "unchecked Basic never goes upstream"
        );
        let strip = AuthPolicy {
            strip_credentials: true,
            ..keep
        };
        strip.strip(&mut headers, AuthMethodLabel::api_key);
        assert!(headers.get("x-api-key").is_none());
    }

    #[tokio::test]
    async fn networks_are_checked_before_credentials() {
        let network = |text: &str| text.parse::<IpNet>().unwrap();
        let policy = AuthPolicy {
            ip_allow: vec![network("10.0.0.0/8")],
            ip_deny: vec![network("10.9.0.0/16")],
            ..open_policy()
        };
        let none = HeaderMap::new();
        assert_eq!(
            policy.decide(CLIENT, &none, None).await,
            AuthDecision::Allow {
                method: AuthMethodLabel::ip,
                headers: Vec::new(),
            }
        );
        for client in ["10.9.1.1", "192.0.2.1"] {
            assert_eq!(
                policy.decide(client.parse().unwrap(), &none, None).await,
                AuthDecision::Forbidden {
                    method: AuthMethodLabel::ip
                },
                "{client}"
            );
        }
    }

    #[tokio::test]
    async fn require_all_needs_every_method_and_any_needs_one() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let any = AuthPolicy {
            basic: Some(Arc::new(
                BasicCredentials::from_htpasswd("r", &format!("ada:{hash}")).unwrap(),
            )),
            api_key: Some(api_keys(
                KeyLocation::Header(HeaderName::from_static("x-api-key")),
                &[b"key".as_slice()],
            )),
            ..open_policy()
        };
        let all = AuthPolicy {
            require_all: true,
            ..any.clone()
        };
        let mut both = basic_header("ada", "pw");
        both.insert("x-api-key", HeaderValue::from_static("key"));
        let only_basic = basic_header("ada", "pw");
        let mut only_key = HeaderMap::new();
        only_key.insert("x-api-key", HeaderValue::from_static("key"));
        let allowed = |decision: AuthDecision| matches!(decision, AuthDecision::Allow { .. });
        assert!(allowed(any.decide(CLIENT, &only_basic, None).await));
        assert!(allowed(any.decide(CLIENT, &only_key, None).await));
        assert!(allowed(all.decide(CLIENT, &both, None).await));
        assert!(!allowed(all.decide(CLIENT, &only_basic, None).await));
        match all.decide(CLIENT, &only_key, None).await {
            AuthDecision::Unauthorized { challenges, .. } => assert_eq!(challenges.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn claim_headers_are_sluices_to_set_whichever_method_passes() {
        use jwt::testing::{JWKS, good_claims, sign};
        let rules = JwtRules {
            issuer: jwt::testing::ISSUER.into(),
            audiences: vec!["shop".into()],
            algorithms: vec![jwt::Algorithm::RS256],
            claims_to_headers: vec![("sub".into(), HeaderName::from_static("x-user"))],
            revocation: false,
            keys: Some(Arc::new(jwt::KeySet::parse(JWKS).unwrap())),
            remote: None,
            realm: "shop".into(),
        };
        let policy = AuthPolicy {
            jwt: Some(Arc::new(rules)),
            api_key: Some(api_keys(
                KeyLocation::Header(HeaderName::from_static("x-api-key")),
                &[b"key".as_slice()],
            )),
            ..open_policy()
        };
        let token = sign(jwt::Algorithm::RS256, "rsa-1", &good_claims());
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers.insert("x-user", HeaderValue::from_static("mallory"));
        match policy.decide(CLIENT, &headers, None).await {
            AuthDecision::Allow { method, headers } => {
                assert_eq!(method, AuthMethodLabel::jwt);
                assert_eq!(
                    headers,
                    [(
                        HeaderName::from_static("x-user"),
                        HeaderValue::from_static("ada")
                    )]
                );
            }
            other => panic!("{other:?}"),
        }
        // Through by API key: the client's X-User must not pass either.
        let mut by_key = HeaderMap::new();
        by_key.insert("x-api-key", HeaderValue::from_static("key"));
        by_key.insert("x-user", HeaderValue::from_static("mallory"));
        let decision = policy.decide(CLIENT, &by_key, None).await;
        assert!(matches!(
            decision,
            AuthDecision::Allow {
                method: AuthMethodLabel::api_key,
                ..
            }
        ));
        by_key.insert("x_user", HeaderValue::from_static("mallory"));
        by_key.insert("x_api", HeaderValue::from_static("kept"));
        policy.strip(&mut by_key, AuthMethodLabel::api_key);
        assert!(by_key.get("x-user").is_none());
        assert!(by_key.get("x_user").is_none(), "a CGI look-alike goes too");
        assert!(
            by_key.get("x_api").is_some(),
            "other underscored headers stay"
        );
        // A bad token: the bearer challenge carries the error code, the key's stays plain.
        let mut bad = HeaderMap::new();
        bad.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
        match policy.decide(CLIENT, &bad, None).await {
            AuthDecision::Unauthorized { challenges, method } => {
                assert_eq!(method, AuthMethodLabel::jwt);
                assert_eq!(
                    challenges,
                    [
                        HeaderValue::from_static(r#"ApiKey header="x-api-key""#),
                        HeaderValue::from_static(r#"Bearer realm="shop", error="invalid_token""#),
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
