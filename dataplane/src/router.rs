//! Route lookup on a [`RouteTable`] (hosts and paths in the forms of [`crate::canonical`]).

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

impl RouteTable {
    /// Whether a request routed to `matched` must be refused because its path is
    /// ambiguous (an encoded slash or backslash, a `;` parameter): always on a route with
    /// strict paths, and on any route when a lenient backend's reading of the path
    /// ([`crate::canonical::lenient_reading`]) would route elsewhere, so `/admin;x` cannot
    /// reach a guarded `/admin`'s backend by way of an open `/`.
    pub fn refuses_ambiguous(&self, host: &str, path: &str, matched: &RouteTarget) -> bool {
        if !crate::canonical::is_ambiguous_path(path) {
            return false;
        }
        matched.strict_paths
            || self
                .lookup(host, &crate::canonical::lenient_reading(path))
                .is_some_and(|lenient| !std::ptr::eq(lenient.target, matched))
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
            strict_paths: false,
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
    }
}
