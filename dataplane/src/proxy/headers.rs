//! Header rewriting between client and upstream: hop-by-hop removal and the forwarding
//! headers (`X-Forwarded-*`, `X-Real-IP`, `Via`).

use std::net::IpAddr;

use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use ipnet::IpNet;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones that proxies have long treated the same way. Parsed names, so removing
/// them costs no parsing per request.
pub(crate) static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that frameworks and CDNs read to learn the URL or the client a request came
/// for: RFC 7239's `Forwarded`, Spring's and Symfony's URL overrides, Rails' and Rack's
/// scheme hints, and the client-address headers of CDNs. Only a trusted proxy may send
/// them: from anyone else they would let one client pose as another address, or change
/// the links and redirects in an answer the cache then stores for everyone.
pub(crate) const UNTRUSTED_FORWARDING: [HeaderName; 11] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
];

/// Fields that say what the message is and who sends it. `Connection` may not name them
/// (RFC 9110 §7.6.1): obeying `Connection: Host` would send the upstream no Host (it would
/// see the endpoint's address, and a cache key would name another host), and dropping
/// `Authorization` or `Cookie` would make Sluice and the upstream judge different requests.
static END_TO_END: [HeaderName; 9] = [
    http::header::HOST,
    http::header::CONTENT_LENGTH,
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::SET_COOKIE,
    http::header::CACHE_CONTROL,
    http::header::VARY,
];

/// `x_user` against `x-user`: equal once underscores are read as hyphens (both lower case).
fn same_but_underscores(name: &str, protected: &str) -> bool {
    name.len() == protected.len()
        && name
            .bytes()
            .zip(protected.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Removes the fields whose names read as one of `protected` once underscores are taken
/// for hyphens: CGI-style gateways (PHP-FPM, WSGI, Rack) turn `x_real_ip` and `x-real-ip`
/// into one variable, so a client's look-alike would stand in for what Sluice vouches for.
pub(crate) fn remove_look_alikes<'p>(
    headers: &mut HeaderMap,
    protected: impl IntoIterator<Item = &'p HeaderName>,
) {
    if !headers.keys().any(|name| name.as_str().contains('_')) {
        return;
    }
    let protected: Vec<&HeaderName> = protected.into_iter().collect();
    let look_alikes: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .filter(|name| {
            protected
                .iter()
                .any(|protected| same_but_underscores(name.as_str(), protected.as_str()))
        })
        .cloned()
        .collect();
    for name in look_alikes {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers and every header that `Connection` names, except the
/// end-to-end fields a client may not have removed (see [`END_TO_END`]).
/// `TE: trailers` survives, since it tells the upstream that trailers are welcome.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `TE: trailers, deflate` still says the client takes trailers; decided before
    // `Connection: TE` (which a client must send with it) removes the field.
    let keep_te = headers
        .get_all(TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| {
            let name = token.split(';').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("trailers")
        });
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .filter(|name| !END_TO_END.contains(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(TE);
    if keep_te {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address: the socket peer, or, when the peer is trusted, the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries to its left are
    /// client-supplied and never believed.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                break;
            };
            client = canonical(ip);
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// Maps IPv4-mapped IPv6 addresses to IPv4 so `::ffff:10.0.0.1` is treated as `10.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Forwarding header values that depend only on the connection, made once per connection.
#[derive(Debug, Clone)]
pub struct ConnectionHeaders {
    /// The peer's address (IPv4-mapped addresses as IPv4).
    pub peer_ip: IpAddr,
    pub peer: HeaderValue,
    pub local_port: HeaderValue,
}

impl ConnectionHeaders {
    pub fn new(peer: IpAddr, local_port: u16) -> Self {
        let peer_ip = canonical(peer);
        ConnectionHeaders {
            peer_ip,
            peer: ip_value(peer_ip),
            local_port: HeaderValue::from(local_port),
        }
    }
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    // An address's text is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What the forwarding headers describe about the client side of a request.
pub struct ForwardedFor<'a> {
    pub connection: &'a ConnectionHeaders,
    pub client: IpAddr,
    pub peer_trusted: bool,
    pub scheme: &'static str,
    pub host: Option<&'a HeaderValue>,
}

/// Sets `X-Forwarded-For/-Proto/-Host/-Port` and `X-Real-IP`. Values from an untrusted
/// peer are replaced, never extended, so clients cannot forge them; the other forwarding
/// headers it sent ([`UNTRUSTED_FORWARDING`]) are removed.
pub fn set_forwarded(headers: &mut HeaderMap, forwarded: &ForwardedFor<'_>) {
    if !forwarded.peer_trusted {
        for name in &UNTRUSTED_FORWARDING {
            headers.remove(name);
        }
    }
    let peer = &forwarded.connection.peer;
    let chain = if forwarded.peer_trusted && headers.contains_key(&X_FORWARDED_FOR) {
        let mut chain: Vec<&[u8]> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        chain.push(peer.as_bytes());
        HeaderValue::from_bytes(&chain.join(b", ".as_slice())).unwrap_or_else(|_| peer.clone())
    } else {
        peer.clone()
    };
    headers.insert(&X_FORWARDED_FOR, chain);
    let real_ip = if forwarded.client == forwarded.connection.peer_ip {
        peer.clone()
    } else {
        ip_value(forwarded.client)
    };
    headers.insert(&X_REAL_IP, real_ip);
    if !(forwarded.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(forwarded.scheme),
        );
    }
    if !(forwarded.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match forwarded.host {
            Some(host) => {
                headers.insert(&X_FORWARDED_HOST, host.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !(forwarded.peer_trusted && headers.contains_key(&X_FORWARDED_PORT)) {
        headers.insert(&X_FORWARDED_PORT, forwarded.connection.local_port.clone());
    }
}

/// A header map from `(name, value)` pairs, for tests; repeated names append.
#[cfg(test)]
pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::header_map as headers;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["te", "x-kept"]);
        let mut map = headers(&[("te", "gzip")]);
        strip_hop_by_hop(&mut map);
        assert!(map.is_empty());
        // RFC 9110 §10.1.4: a client sending TE also names it in Connection.
        let mut map = headers(&[("connection", "TE"), ("te", "trailers")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map["te"], "trailers");
    }

    #[test]
    fn underscore_look_alikes_of_protected_names_go() {
        let mut map = headers(&[
            ("x_real_ip", "10.0.0.1"),
            ("ssl_client_verify", "SUCCESS"),
            ("x_reals_ip", "kept"),
            ("x-real-ip", "kept"),
        ]);
        let protected = [
            X_REAL_IP.clone(),
            HeaderName::from_static("ssl-client-verify"),
        ];
        remove_look_alikes(&mut map, protected.iter());
        let mut names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-real-ip", "x_reals_ip"]);
        assert!(same_but_underscores("x_user", "x-user"));
        assert!(!same_but_underscores("x_users", "x-user"));
        assert!(!same_but_underscores("x-user", "x_user"));
    }

    #[test]
    fn connection_cannot_name_end_to_end_fields_away() {
        let mut map = headers(&[
            ("connection", "Host, content-length, Authorization, Cookie"),
            ("connection", "close, x-gone"),
            ("host", "members.test"),
            ("content-length", "5"),
            ("authorization", "Basic eA=="),
            ("cookie", "sid=1"),
            ("x-gone", "1"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "content-length", "cookie", "host"]);
    }

    #[test]
    fn untrusted_peers_cannot_forge_forwarding_headers() {
        let proxies = TrustedProxies::default();
        let mut map = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "host=evil.example;proto=https"),
            ("x-forwarded-prefix", "/evil"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-scheme", "https"),
            ("x-forwarded-ssl", "on"),
            ("x-host", "evil.example"),
            ("x-forwarded-server", "evil.example"),
            ("true-client-ip", "10.0.0.1"),
            ("x-client-ip", "10.0.0.1"),
            ("cf-connecting-ip", "10.0.0.1"),
        ]);
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        let client = proxies.client_ip(peer, &map);
        assert_eq!(client, peer);
        set_forwarded(
            &mut map,
            &ForwardedFor {
                connection: &ConnectionHeaders::new(peer, 8080),
                client,
                peer_trusted: false,
                scheme: "http",
                host: Some(&HeaderValue::from_static("a.example")),
            },
        );
        assert_eq!(map["x-forwarded-for"], "127.0.0.9");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-real-ip"], "127.0.0.9");
        assert_eq!(map["x-forwarded-host"], "a.example");
        assert_eq!(map["x-forwarded-port"], "8080");
        for name in &UNTRUSTED_FORWARDING {
            assert!(!map.contains_key(name), "{name}");
        }
    }

    #[test]
    fn trusted_peers_extend_the_chain_and_name_the_client() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let mut map = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let client = proxies.client_ip(peer, &map);
        assert_eq!(client, "1.2.3.4".parse::<IpAddr>().unwrap());
        set_forwarded(
            &mut map,
            &ForwardedFor {
                connection: &ConnectionHeaders::new(peer, 80),
                client,
                peer_trusted: true,
                scheme: "http",
                host: None,
            },
        );
        assert_eq!(
            map["x-forwarded-for"],
            "6.6.6.6, 1.2.3.4, 10.1.1.1, 10.0.0.2"
        );
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-real-ip"], "1.2.3.4");
    }

    #[test]
    fn garbage_in_the_chain_stops_the_walk() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let map = headers(&[("x-forwarded-for", "1.2.3.4, nonsense, 10.0.0.5")]);
        let client = proxies.client_ip("10.0.0.2".parse().unwrap(), &map);
        assert_eq!(client, "10.0.0.5".parse::<IpAddr>().unwrap());
    }
}
