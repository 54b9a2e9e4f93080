//! Ingress rule hosts: validation and where in the route table they go.

use std::net::Ipv4Addr;

use crate::error::CompileError;

/// Which virtual host of the route table a rule's paths go into.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum HostRule {
    /// No host: the rule applies to every host.
    Any,
    /// A lower-case DNS name.
    Exact(String),
    /// `*.suffix`, stored under the lower-case suffix.
    Wildcard(String),
}

impl HostRule {
    /// The host as written, lower-cased; empty for [`HostRule::Any`].
    pub fn name(&self) -> String {
        match self {
            HostRule::Any => String::new(),
            HostRule::Exact(host) => host.clone(),
            HostRule::Wildcard(suffix) => format!("*.{suffix}"),
        }
    }
}

/// Validates a rule's host; `field` is `spec.rules[i].host`. An empty host is no host.
pub(crate) fn compile_host(host: Option<&str>, field: &str) -> Result<HostRule, CompileError> {
    let Some(written) = host.filter(|host| !host.is_empty()) else {
        return Ok(HostRule::Any);
    };
    // Hosts are case-insensitive and the data plane lower-cases the request's host.
    let host = written.to_ascii_lowercase();
    let invalid = |why: &str| CompileError::InvalidHost {
        field: field.to_owned(),
        host: written.to_owned(),
        why: why.to_owned(),
    };
    if host.contains(':') {
        return Err(invalid("a host must not include a port"));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, host.as_str()),
    };
    validate_dns_name(name).map_err(invalid)?;
    // The API server refuses IP addresses here; refusing them too keeps files and the
    // cluster in agreement.
    if !wildcard && name.parse::<Ipv4Addr>().is_ok() {
        return Err(invalid("a host must be a DNS name, not an IP address"));
    }
    Ok(if wildcard {
        HostRule::Wildcard(name.to_owned())
    } else {
        HostRule::Exact(host)
    })
}

/// An RFC 1123 subdomain in lower case: dot-separated labels of letters, digits and `-`,
/// each 1 to 63 long, starting and ending with a letter or digit, 253 in all.
fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a host must be a DNS name or *. followed by one");
    }
    if name.len() > 253 {
        return Err("a host must be at most 253 characters long");
    }
    if name.contains('*') {
        return Err("a wildcard is only allowed as the whole first label, as in *.example.com");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("a host must not have empty labels (leading, trailing or double dots)");
        }
        if label.len() > 63 {
            return Err("each label of a host must be at most 63 characters long");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("a host may only contain letters, digits, - and .");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of a host must not start or end with -");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "spec.rules[3].host";

    fn host(host: &str) -> HostRule {
        compile_host(Some(host), FIELD).unwrap()
    }

    fn assert_invalid(host: &str) {
        match compile_host(Some(host), FIELD) {
            Err(CompileError::InvalidHost {
                field, host: shown, ..
            }) => {
                assert_eq!(field, FIELD);
                assert_eq!(shown, host);
            }
            other => panic!("{host:?}: expected InvalidHost, got {other:?}"),
        }
    }

    #[test]
    fn no_host_or_empty_host_is_any_host() {
        assert_eq!(compile_host(None, FIELD).unwrap(), HostRule::Any);
        assert_eq!(host(""), HostRule::Any);
        assert_eq!(HostRule::Any.name(), "");
    }

    #[test]
    fn hosts_are_lower_cased() {
        assert_eq!(
            host("Shop.Example.COM"),
            HostRule::Exact("shop.example.com".into())
        );
        assert_eq!(host("a-1.b2"), HostRule::Exact("a-1.b2".into()));
    }

    #[test]
    fn wildcard_is_stored_under_its_suffix() {
        let rule = host("*.Foo.com");
        assert_eq!(rule, HostRule::Wildcard("foo.com".into()));
        assert_eq!(rule.name(), "*.foo.com");
    }

    #[test]
    fn hosts_with_ports_are_invalid() {
        assert_invalid("foo.com:8080");
        assert_invalid("[::1]");
    }

    #[test]
    fn only_one_leading_wildcard_label_is_allowed() {
        for bad in [
            "*",
            "*.",
            "*.*.foo.com",
            "foo.*.com",
            "*foo.com",
            "**.foo.com",
            "f*o.com",
        ] {
            assert_invalid(bad);
        }
    }

    #[test]
    fn malformed_dns_names_are_invalid() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        for bad in [
            "foo..com",
            ".foo.com",
            "foo.com.",
            "-foo.com",
            "foo-.com",
            "foo_bar.com",
            "foo bar.com",
            "föö.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert_invalid(bad);
        }
        assert_eq!(host(&"a".repeat(63)), HostRule::Exact("a".repeat(63)));
    }

    #[test]
    fn ip_addresses_are_invalid_hosts() {
        assert_invalid("10.0.0.1");
        assert_eq!(
            host("10.0.0.1.nip.io"),
            HostRule::Exact("10.0.0.1.nip.io".into())
        );
    }
}
