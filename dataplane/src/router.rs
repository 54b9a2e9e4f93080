//! Route lookup on a [`RouteTable`], and the request normalisation done once before it.

use crate::snapshot::{RouteTable, RouteTarget, VirtualHost};

/// The route a request matched, with the virtual host it matched in (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub virtual_host: &'a str,
    pub target: &'a RouteTarget,
}

impl RouteTable {
    /// Finds the route for a normalised host (lower case, no port) and a normalised path.
    ///
    /// Hosts fall through from exact to wildcard to host-less rules when the more specific
    /// host has no matching path, as the Ingress spec says host-less rules apply to all
    /// traffic. The default backend takes whatever is left.
    pub fn lookup<'a>(&'a self, host: &str, path: &str) -> Option<RouteMatch<'a>> {
        let exact = self.exact_hosts.get(host);
        let wildcard = host
            .split_once('.')
            .and_then(|(_, suffix)| self.wildcard_hosts.get(suffix));
        for virtual_host in [exact, wildcard, Some(&self.any_host)]
            .into_iter()
            .flatten()
        {
            if let Some(target) = virtual_host.lookup_path(path) {
                return Some(RouteMatch {
                    virtual_host: &virtual_host.name,
                    target,
                });
            }
        }
        self.default_backend.as_ref().map(|target| RouteMatch {
            virtual_host: "",
            target,
        })
    }
}

impl VirtualHost {
    /// Exact paths first (they are always the longest match), then prefixes from the
    /// longest candidate down, cutting the path at each `/` so matching is by element.
    pub fn lookup_path(&self, path: &str) -> Option<&RouteTarget> {
        if let Some(target) = self.exact_paths.get(path) {
            return Some(target);
        }
        if self.prefix_paths.is_empty() {
            return None;
        }
        let mut candidate = path.trim_end_matches('/');
        loop {
            if candidate.is_empty() {
                return self.prefix_paths.get("/");
            }
            if let Some(target) = self.prefix_paths.get(candidate) {
                return Some(target);
            }
            match candidate.rfind('/') {
                Some(cut) => candidate = &candidate[..cut],
                None => return self.prefix_paths.get("/"),
            }
        }
    }
}

/// Why a request target was refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with /")]
    NotAbsolute,
    #[error("the request path has a dot segment")]
    DotSegment,
    #[error("the request path has a malformed percent-encoding")]
    BadPercentEncoding,
}

/// Normalises a request path once, so that the router and the upstream see the same path.
///
/// Percent-encoded unreserved characters are decoded (`%61` is `a`), repeated slashes are
/// merged, and dot segments (also encoded, `%2e`) are refused rather than resolved: a
/// client that sends them is either broken or probing. Everything else, including `%2F`,
/// is passed unchanged. Returns the input itself when nothing changes, without allocating.
pub fn normalize_path(path: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    use std::borrow::Cow;
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let needs_work = path.contains("//") || path.contains('%');
    let normalized: Cow<'_, str> = if needs_work {
        Cow::Owned(rewrite_path(path)?)
    } else {
        Cow::Borrowed(path)
    };
    if normalized
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(PathError::DotSegment);
    }
    Ok(normalized)
}

fn rewrite_path(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
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
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                // Keep reserved characters encoded; upper-case hex so equal paths compare equal.
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(high)]));
                out.push(char::from(HEX_UPPER[usize::from(low)]));
            }
            index += 3;
            continue;
        }
        if byte == b'/' && out.ends_with('/') {
            index += 1;
            continue;
        }
        // Push the whole UTF-8 character (the path is already valid `str`).
        let width = utf8_width(byte);
        out.push_str(&path[index..index + width]);
        index += width;
    }
    Ok(out)
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

fn utf8_width(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Lower-cases a Host header value and strips its port and a trailing dot.
/// Returns `None` for a value that cannot be a host name. Borrows when already lower case.
pub fn normalize_host(authority: &str) -> Option<std::borrow::Cow<'_, str>> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets off; routes never name IP literals anyway.
        rest.split_once(']').map(|(inside, _)| inside)?
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    host
                } else {
                    authority
                }
            })
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
    {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{BackendKey, BalancePolicy, ObjectRef};
    use proptest::prelude::*;

    fn target(name: &str) -> RouteTarget {
        RouteTarget {
            owner: ObjectRef::new("default", name),
            backend: BackendKey {
                namespace: "default".into(),
                service: name.into(),
                port: 80,
            },
            balance: BalancePolicy::RoundRobin,
            policies: None,
            https: std::sync::Arc::default(),
            upstream: None,
            slot: RouteTarget::UNNUMBERED,
        }
    }

    fn vhost(name: &str, exact: &[&str], prefix: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            exact_paths: exact
                .iter()
                .map(|p| (p.to_string(), target(&format!("exact{p}"))))
                .collect(),
            prefix_paths: prefix
                .iter()
                .map(|p| (p.to_string(), target(&format!("prefix{p}"))))
                .collect(),
        }
    }

    fn routed(table: &RouteTable, host: &str, path: &str) -> Option<String> {
        table
            .lookup(host, path)
            .map(|m| m.target.owner.name.clone())
    }

    #[test]
    fn every_target_gets_its_own_slot_in_a_fixed_order() {
        let mut table = RouteTable::default();
        table
            .exact_hosts
            .insert("b.com".into(), vhost("b.com", &["/x"], &["/", "/y"]));
        table
            .exact_hosts
            .insert("a.com".into(), vhost("a.com", &[], &["/"]));
        table
            .wildcard_hosts
            .insert("c.com".into(), vhost("*.c.com", &[], &["/"]));
        table.any_host = vhost("", &["/any"], &[]);
        table.default_backend = Some(target("default"));
        let mut again = table.clone();
        table.number_targets();
        again.number_targets();
        assert_eq!(table, again, "numbering is deterministic");
        assert_eq!(table.slots, 7);
        let slot = |host: &str, path: &str| table.lookup(host, path).unwrap().target.slot;
        let slots = [
            slot("a.com", "/"),
            slot("b.com", "/x"),
            slot("b.com", "/"),
            slot("b.com", "/y"),
            slot("q.c.com", "/"),
            slot("other", "/any"),
            slot("other", "/nothing"),
        ];
        assert_eq!(slots, [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn exact_matches_only_the_whole_path_case_sensitively() {
        let host = vhost("", &["/foo"], &[]);
        assert!(host.lookup_path("/foo").is_some());
        assert!(host.lookup_path("/foo/").is_none());
        assert!(host.lookup_path("/FOO").is_none());
        assert!(host.lookup_path("/foobar").is_none());
    }

    #[test]
    fn prefix_matches_by_element() {
        let host = vhost("", &[], &["/aaa", "/aaa/bbb"]);
        let name = |path: &str| host.lookup_path(path).map(|t| t.owner.name.clone());
        assert_eq!(name("/aaa").as_deref(), Some("prefix/aaa"));
        assert_eq!(name("/aaa/").as_deref(), Some("prefix/aaa"));
        assert_eq!(name("/aaa/ccc").as_deref(), Some("prefix/aaa"));
        assert_eq!(name("/aaa/bbb").as_deref(), Some("prefix/aaa/bbb"));
        assert_eq!(name("/aaa/bbb/").as_deref(), Some("prefix/aaa/bbb"));
        assert_eq!(name("/aaa/bbbxyz").as_deref(), Some("prefix/aaa"));
        assert_eq!(name("/aaaccc"), None);
        assert_eq!(name("/"), None);
    }

    #[test]
    fn root_prefix_matches_everything() {
        let host = vhost("", &[], &["/"]);
        for path in ["/", "/a", "/a/b/", "/aaaccc"] {
            assert!(host.lookup_path(path).is_some(), "{path}");
        }
    }

    #[test]
    fn exact_beats_prefix_for_the_same_path() {
        let host = vhost("", &["/foo"], &["/foo"]);
        assert_eq!(host.lookup_path("/foo").unwrap().owner.name, "exact/foo");
        assert_eq!(host.lookup_path("/foo/x").unwrap().owner.name, "prefix/foo");
    }

    #[test]
    fn hosts_fall_through_exact_wildcard_any_then_default() {
        let mut table = RouteTable::default();
        table.exact_hosts.insert(
            "a.foo.com".into(),
            vhost("a.foo.com", &[], &["/exact-host"]),
        );
        table
            .wildcard_hosts
            .insert("foo.com".into(), vhost("*.foo.com", &[], &["/wild"]));
        table.any_host = vhost("", &[], &["/any"]);
        assert_eq!(
            routed(&table, "a.foo.com", "/exact-host").as_deref(),
            Some("prefix/exact-host")
        );
        assert_eq!(
            routed(&table, "a.foo.com", "/wild").as_deref(),
            Some("prefix/wild")
        );
        assert_eq!(
            routed(&table, "b.foo.com", "/wild").as_deref(),
            Some("prefix/wild")
        );
        assert_eq!(
            routed(&table, "a.foo.com", "/any").as_deref(),
            Some("prefix/any")
        );
        // A wildcard covers exactly one extra label.
        assert_eq!(routed(&table, "foo.com", "/wild"), None);
        assert_eq!(routed(&table, "x.b.foo.com", "/wild"), None);
        assert_eq!(routed(&table, "a.foo.com", "/nothing"), None);
        table.default_backend = Some(target("fallback"));
        assert_eq!(
            routed(&table, "a.foo.com", "/nothing").as_deref(),
            Some("fallback")
        );
        assert_eq!(
            table.lookup("a.foo.com", "/nothing").unwrap().virtual_host,
            ""
        );
        assert_eq!(
            table.lookup("b.foo.com", "/wild").unwrap().virtual_host,
            "*.foo.com"
        );
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("Foo.COM:8080").as_deref(), Some("foo.com"));
        assert_eq!(normalize_host("foo.com.").as_deref(), Some("foo.com"));
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(normalize_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(normalize_host(""), None);
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host("a/b"), None);
    }

    #[test]
    fn path_normalisation() {
        let norm = |p: &str| normalize_path(p).map(|c| c.into_owned());
        assert_eq!(norm("/a/b").unwrap(), "/a/b");
        assert!(matches!(
            normalize_path("/a/b").unwrap(),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(norm("//a///b/").unwrap(), "/a/b/");
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(norm("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        assert_eq!(norm("/ü/x").unwrap(), "/ü/x");
        assert_eq!(norm("/a/../b"), Err(PathError::DotSegment));
        assert_eq!(norm("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(norm("/a/%2e%2E/b"), Err(PathError::DotSegment));
        assert_eq!(norm("/.."), Err(PathError::DotSegment));
        assert_eq!(norm("/a/..b").unwrap(), "/a/..b");
        assert_eq!(norm("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(norm("/a%4"), Err(PathError::BadPercentEncoding));
        assert_eq!(norm("a"), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
    }

    /// The reference matcher: the Ingress spec's rules written as plainly as possible.
    fn reference_match(exact: &[String], prefix: &[String], path: &str) -> Option<String> {
        if exact.iter().any(|e| e == path) {
            return Some(format!("exact{path}"));
        }
        let path_elements: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        prefix
            .iter()
            .filter(|p| {
                let rule: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
                rule.len() <= path_elements.len() && rule[..] == path_elements[..rule.len()]
            })
            .max_by_key(|p| p.split('/').filter(|s| !s.is_empty()).count())
            .map(|p| format!("prefix{p}"))
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "aa", "ab", "A"]), 0..4)
            .prop_flat_map(|segments| {
                let joined = format!("/{}", segments.join("/"));
                prop::bool::ANY.prop_map(move |slash| {
                    if slash && joined != "/" {
                        format!("{joined}/")
                    } else {
                        joined.clone()
                    }
                })
            })
    }

    fn rule_strategy() -> impl Strategy<Value = String> {
        // Rules are stored as the compiler stores them: no trailing slash except the root.
        path_strategy().prop_map(|p| {
            let trimmed = p.trim_end_matches('/');
            if trimmed.is_empty() {
                "/".to_string()
            } else {
                trimmed.to_string()
            }
        })
    }

    proptest! {
        #[test]
        fn router_agrees_with_the_reference_matcher(
            exact in prop::collection::btree_set(path_strategy(), 0..4),
            prefix in prop::collection::btree_set(rule_strategy(), 0..5),
            request in path_strategy(),
        ) {
            let exact: Vec<String> = exact.into_iter().collect();
            let prefix: Vec<String> = prefix.into_iter().collect();
            let exact_refs: Vec<&str> = exact.iter().map(String::as_str).collect();
            let prefix_refs: Vec<&str> = prefix.iter().map(String::as_str).collect();
            let host = vhost("", &exact_refs, &prefix_refs);
            let got = host.lookup_path(&request).map(|t| t.owner.name.clone());
            prop_assert_eq!(got, reference_match(&exact, &prefix, &request));
        }

        #[test]
        fn normalised_paths_are_stable(path in "/[a-z%/.0-9A-F]{0,12}") {
            if let Ok(once) = normalize_path(&path) {
                let twice = normalize_path(&once).map(|c| c.into_owned());
                prop_assert_eq!(twice, Ok(once.into_owned()));
            }
        }
    }
}
