//! The `sluice.dev/*` annotations: their names and parsers.
//!
//! Ingress annotations apply to every route of the Ingress; a bad one rejects the whole
//! Ingress, since serving it without the behaviour it asks for would be wrong in ways
//! nobody sees. Add a new Ingress annotation as a field of [`IngressAnnotations`] and a
//! parser called from [`parse_ingress_annotations`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use http::HeaderValue;
use sluice_dataplane::snapshot::{BackendProtocol, BalancePolicy, DEFAULT_HSTS, HashOn};

use crate::error::CompileError;

/// `round-robin`, `least-request`, `ewma` or `hash`.
pub const LOAD_BALANCE: &str = "sluice.dev/load-balance";
/// `header:<name>`, `cookie:<name>` or `client-ip`; required by `load-balance: hash`.
pub const HASH_KEY: &str = "sluice.dev/hash-key";
/// `name[,name2]`: RateLimit policies in the Ingress's namespace, applied in order.
pub const RATE_LIMIT: &str = "sluice.dev/rate-limit";
/// `name`: the Auth policy in the Ingress's namespace that guards every route.
pub const AUTH: &str = "sluice.dev/auth";
/// `name`: the Cache policy in the Ingress's namespace whose responses every route stores
/// and serves again.
pub const CACHE: &str = "sluice.dev/cache";
/// `"true"` or `"false"`: the routes answer 400 to a path with `;` or an encoded `/` or
/// `\`, which a backend may read as another path than the one routed. On by default for
/// the routes of an Ingress with `sluice.dev/auth`.
pub const STRICT_PATHS: &str = "sluice.dev/strict-paths";
/// `"false"` serves plain HTTP on hosts with a certificate instead of redirecting (308).
pub const SSL_REDIRECT: &str = "sluice.dev/ssl-redirect";
/// `Strict-Transport-Security` for HTTPS answers: `max-age=N[; includeSubDomains][; preload]`,
/// or `"false"` for none.
pub const HSTS: &str = "sluice.dev/hsts";
/// A Secret in the Ingress's namespace whose `ca.crt` verifies client certificates.
pub const CLIENT_CA: &str = "sluice.dev/client-ca";
/// `HTTP`, `HTTPS`, `H2C`, `GRPC` or `GRPCS`: how Sluice talks to the backends.
pub const BACKEND_PROTOCOL: &str = "sluice.dev/backend-protocol";
/// A Secret in the Ingress's namespace whose `ca.crt` (PEM) verifies TLS backends.
pub const BACKEND_CA: &str = "sluice.dev/backend-ca";
/// The name TLS backends are verified against and sent as SNI.
pub const BACKEND_SNI: &str = "sluice.dev/backend-sni";
/// `"false"` turns off the verification of TLS backends.
pub const BACKEND_TLS_VERIFY: &str = "sluice.dev/backend-tls-verify";
/// How long a WebSocket may stay silent both ways before Sluice closes it (`3600s`, `1h`).
pub const WEBSOCKET_IDLE_TIMEOUT: &str = "sluice.dev/websocket-idle-timeout";
/// On an EndpointSlice: `address=weight` entries separated by commas, weights 1 to 1000.
pub const ENDPOINT_WEIGHTS: &str = "sluice.dev/endpoint-weights";

/// The largest weight an endpoint may have; bounds the hash ring's size.
pub const MAX_ENDPOINT_WEIGHT: u32 = 1000;

/// The shortest and longest WebSocket idle timeouts.
const MIN_WEBSOCKET_IDLE: Duration = Duration::from_secs(1);
const MAX_WEBSOCKET_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the `sluice.dev/*` annotations of an Ingress ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct IngressAnnotations {
    pub balance: BalancePolicy,
    /// Names of the RateLimit policies, in order, without duplicates.
    pub rate_limits: Vec<String>,
    /// The name of the Auth policy, or why the value is not a name. A bad value does not
    /// reject the Ingress (its last good version may be unprotected): the routes answer 503.
    pub auth: Option<Result<String, String>>,
    /// The name of the Cache policy, or why the value is not a name. A bad value does not
    /// reject the Ingress: the routes are served uncached, which loses nothing but speed.
    pub cache: Option<Result<String, String>>,
    /// Refuse ambiguous request paths (`sluice.dev/strict-paths`, default: whether
    /// `sluice.dev/auth` is set, even to a bad value).
    pub strict_paths: bool,
    pub ssl_redirect: bool,
    pub hsts: Option<HeaderValue>,
    /// The Secret holding the client CA bundle, or why the value is not a Secret name. A
    /// bad value does not reject the Ingress (its last good version may be unprotected):
    /// the routes refuse everyone instead.
    pub client_ca: Option<Result<String, (String, String)>>,
    pub upstream: UpstreamAnnotations,
}

/// What the backend annotations ask for; all default means plain HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UpstreamAnnotations {
    pub protocol: BackendProtocol,
    /// The CA Secret's name, in the Ingress's namespace.
    pub ca_secret: Option<String>,
    /// Lower case; a DNS name or an IP address.
    pub sni: Option<String>,
    /// `backend-tls-verify: "false"`.
    pub verify_disabled: bool,
    pub websocket_idle_timeout: Option<Duration>,
}

/// The field path of an annotation, for errors.
pub(crate) fn annotation_field(name: &str) -> String {
    format!("metadata.annotations[{name}]")
}

/// Parses every `sluice.dev/*` annotation of an Ingress, reporting all that are bad.
pub(crate) fn parse_ingress_annotations(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<IngressAnnotations, Vec<CompileError>> {
    let get = |name: &str| {
        annotations
            .and_then(|all| all.get(name))
            .map(String::as_str)
    };
    let mut errors = Vec::new();
    let invalid = |name: &str, value: &str, why: &str| CompileError::InvalidAnnotation {
        field: annotation_field(name),
        value: value.to_owned(),
        why: why.to_owned(),
    };

    // Parsed even when the policy is not `hash`, so a typo is caught before it matters.
    let hash_key = match get(HASH_KEY).map(|value| (value, parse_hash_key(value))) {
        None => None,
        Some((_, Ok(hash_on))) => Some(hash_on),
        Some((value, Err(why))) => {
            errors.push(invalid(HASH_KEY, value, why));
            None
        }
    };

    let balance = match get(LOAD_BALANCE).map(str::trim) {
        None | Some("round-robin") => BalancePolicy::RoundRobin,
        Some("least-request") => BalancePolicy::LeastRequest,
        Some("ewma") => BalancePolicy::Ewma,
        Some("hash") => match (hash_key, get(HASH_KEY)) {
            (Some(hash_on), _) => BalancePolicy::Hash(hash_on),
            // Already reported as a bad hash key.
            (None, Some(_)) => BalancePolicy::RoundRobin,
            (None, None) => {
                errors.push(CompileError::InvalidAnnotation {
                    field: annotation_field(HASH_KEY),
                    value: String::new(),
                    why: format!("{LOAD_BALANCE}: hash needs {HASH_KEY}"),
                });
                BalancePolicy::RoundRobin
            }
        },
        Some(other) => {
            errors.push(invalid(
                LOAD_BALANCE,
                other,
                "expected round-robin, least-request, ewma or hash",
            ));
            BalancePolicy::RoundRobin
        }
    };

    let rate_limits = match get(RATE_LIMIT).map(|value| (value, parse_policy_names(value))) {
        None => Vec::new(),
        Some((_, Ok(names))) => names,
        Some((value, Err(why))) => {
            errors.push(invalid(RATE_LIMIT, value, &why));
            Vec::new()
        }
    };

    let auth = get(AUTH).map(|value| parse_policy_name(value, "Auth"));
    let cache = get(CACHE).map(|value| parse_policy_name(value, "Cache"));

    // What a guard checks and what the backend serves must be the same path: where the
    // backend may split `/admin;x` or `/a%2Fb` differently, a guarded route refuses them.
    let strict_paths = match get(STRICT_PATHS).map(str::trim) {
        None => auth.is_some(),
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            errors.push(invalid(
                STRICT_PATHS,
                other,
                "expected \"true\" or \"false\"",
            ));
            auth.is_some()
        }
    };

    let ssl_redirect = match get(SSL_REDIRECT).map(str::trim) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            errors.push(invalid(
                SSL_REDIRECT,
                other,
                "expected \"true\" or \"false\"",
            ));
            true
        }
    };

    let hsts = match get(HSTS).map(|value| (value, parse_hsts(value))) {
        None => Some(HeaderValue::from_static(DEFAULT_HSTS)),
        Some((_, Ok(hsts))) => hsts,
        Some((value, Err(why))) => {
            errors.push(invalid(HSTS, value, &why));
            None
        }
    };

    let client_ca = get(CLIENT_CA).map(|value| match parse_policy_names(value) {
        Ok(names) if names.len() == 1 => Ok(names.into_iter().next().unwrap_or_default()),
        Ok(_) => Err((value.to_owned(), "expected one Secret name".to_owned())),
        Err(why) => Err((value.to_owned(), why)),
    });
    let upstream = parse_upstream(&get, &mut errors);

    if errors.is_empty() {
        Ok(IngressAnnotations {
            balance,
            rate_limits,
            auth,
            cache,
            strict_paths,
            ssl_redirect,
            hsts,
            client_ca,
            upstream,
        })
    } else {
        Err(errors)
    }
}

/// `"false"`, or HSTS directives: `max-age=<seconds>` with optional `includeSubDomains`
/// and `preload`, separated by `;`. Returned in a canonical spelling.
fn parse_hsts(value: &str) -> Result<Option<HeaderValue>, String> {
    if value.trim() == "false" {
        return Ok(None);
    }
    let mut max_age: Option<u64> = None;
    let mut include_subdomains = false;
    let mut preload = false;
    for directive in value.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let lower = directive.to_ascii_lowercase();
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            let seconds = seconds
                .parse::<u64>()
                .map_err(|_| format!("max-age must be a number of seconds, not {seconds:?}"))?;
            if max_age.replace(seconds).is_some() {
                return Err("max-age is given twice".to_owned());
            }
        } else if lower == "includesubdomains" {
            include_subdomains = true;
        } else if lower == "preload" {
            preload = true;
        } else {
            return Err(format!(
                "unknown directive {directive:?} (expected max-age=N, includeSubDomains, preload, or \"false\")"
            ));
        }
    }
    let Some(max_age) = max_age else {
        return Err("max-age=<seconds> is required".to_owned());
    };
    let mut canonical = format!("max-age={max_age}");
    if include_subdomains {
        canonical.push_str("; includeSubDomains");
    }
    if preload {
        canonical.push_str("; preload");
    }
    HeaderValue::from_str(&canonical)
        .map(Some)
        .map_err(|error| error.to_string())
}

/// The backend annotations. TLS settings without a TLS protocol, or a CA together with
/// verification turned off, are refused: each says the user expects something that would
/// silently not happen.
fn parse_upstream<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    errors: &mut Vec<CompileError>,
) -> UpstreamAnnotations {
    let mut invalid = |name: &str, value: &str, why: &str| {
        errors.push(CompileError::InvalidAnnotation {
            field: annotation_field(name),
            value: value.to_owned(),
            why: why.to_owned(),
        });
    };
    let mut upstream = UpstreamAnnotations::default();
    if let Some(value) = get(BACKEND_PROTOCOL) {
        match parse_backend_protocol(value) {
            Some(protocol) => upstream.protocol = protocol,
            None => invalid(
                BACKEND_PROTOCOL,
                value,
                "expected HTTP, HTTPS, H2C, GRPC or GRPCS",
            ),
        }
    }
    let tls = upstream.protocol.is_tls();
    let needs_tls = "applies only with sluice.dev/backend-protocol HTTPS or GRPCS";
    if let Some(value) = get(BACKEND_CA) {
        let name = value.trim();
        if name.contains('/') {
            invalid(
                BACKEND_CA,
                value,
                "a Secret of another namespace cannot be used; name one in the Ingress's namespace",
            );
        } else if !is_object_name(name) {
            invalid(
                BACKEND_CA,
                value,
                "not a Secret name (lower-case letters, digits, '-' and '.')",
            );
        } else if !tls {
            invalid(BACKEND_CA, value, needs_tls);
        } else {
            upstream.ca_secret = Some(name.to_owned());
        }
    }
    if let Some(value) = get(BACKEND_SNI) {
        let name = value.trim().to_ascii_lowercase();
        if !(is_dns_name(&name) || name.parse::<IpAddr>().is_ok()) {
            invalid(BACKEND_SNI, value, "not a DNS name or IP address");
        } else if !tls {
            invalid(BACKEND_SNI, value, needs_tls);
        } else {
            upstream.sni = Some(name);
        }
    }
    if let Some(value) = get(BACKEND_TLS_VERIFY) {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" => {}
            "false" if !tls => invalid(BACKEND_TLS_VERIFY, value, needs_tls),
            "false" if upstream.ca_secret.is_some() => invalid(
                BACKEND_TLS_VERIFY,
                value,
                "contradicts sluice.dev/backend-ca; remove one of them",
            ),
            "false" => upstream.verify_disabled = true,
            _ => invalid(BACKEND_TLS_VERIFY, value, "expected \"true\" or \"false\""),
        }
    }
    if let Some(value) = get(WEBSOCKET_IDLE_TIMEOUT) {
        match parse_duration(value.trim())
            .filter(|timeout| (MIN_WEBSOCKET_IDLE..=MAX_WEBSOCKET_IDLE).contains(timeout))
        {
            Some(timeout) => upstream.websocket_idle_timeout = Some(timeout),
            None => invalid(
                WEBSOCKET_IDLE_TIMEOUT,
                value,
                "expected a duration from 1s to 168h, such as 3600s, 90m or 1h30m",
            ),
        }
    }
    upstream
}

fn parse_backend_protocol(value: &str) -> Option<BackendProtocol> {
    match value.trim().to_ascii_uppercase().as_str() {
        "HTTP" => Some(BackendProtocol::Http),
        "HTTPS" => Some(BackendProtocol::Https),
        "H2C" => Some(BackendProtocol::H2c),
        "GRPC" => Some(BackendProtocol::Grpc),
        "GRPCS" => Some(BackendProtocol::Grpcs),
        _ => None,
    }
}

/// `90s`, `15m`, `1h30m`, `500ms`: whole numbers with units, largest first; a bare number
/// is seconds (as ingress-nginx's timeouts are written).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut last_unit = u128::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, tail) = rest.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let unit_length = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_length);
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60)?),
            "h" => Duration::from_secs(number.checked_mul(3600)?),
            _ => return None,
        };
        let unit_nanos = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            _ => 3_600_000_000_000,
        };
        if unit_nanos >= last_unit {
            return None;
        }
        last_unit = unit_nanos;
        total = total.checked_add(part)?;
        rest = tail;
    }
    (!text.is_empty()).then_some(total)
}

/// A Kubernetes object name (DNS subdomain).
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A lower-case DNS host name: dot-separated labels of letters, digits and inner hyphens.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// One policy name (`sluice.dev/auth`, `sluice.dev/cache`), or why the value is not one.
fn parse_policy_name(value: &str, kind: &str) -> Result<String, String> {
    let name = value.trim();
    if is_object_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not the name of one {kind} in this namespace"
        ))
    }
}

/// A comma-separated list of object names (DNS subdomains), at least one.
fn parse_policy_names(value: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if !is_object_name(name) {
            return Err(format!(
                "{name:?} is not an object name (lower-case letters, digits, '-' and '.')"
            ));
        }
        if !names.iter().any(|known| known == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn parse_hash_key(value: &str) -> Result<HashOn, &'static str> {
    let value = value.trim();
    if value == "client-ip" {
        Ok(HashOn::ClientIp)
    } else if let Some(name) = value.strip_prefix("header:") {
        if is_token(name) {
            // Header names are case-insensitive; the data plane looks them up lower-cased.
            Ok(HashOn::Header(name.to_ascii_lowercase()))
        } else {
            Err("the header name must be a non-empty HTTP token")
        }
    } else if let Some(name) = value.strip_prefix("cookie:") {
        if is_token(name) {
            Ok(HashOn::Cookie(name.to_owned()))
        } else {
            Err("the cookie name must be a non-empty HTTP token")
        }
    } else {
        Err("expected header:<name>, cookie:<name> or client-ip")
    }
}

/// An RFC 9110 token: what header names and cookie names are made of.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses an EndpointSlice's weights annotation. Bad entries are reported and skipped;
/// the good ones still apply. An address listed twice keeps its first weight.
pub(crate) fn parse_endpoint_weights(value: &str) -> (BTreeMap<IpAddr, u32>, Vec<CompileError>) {
    let mut weights = BTreeMap::new();
    let mut errors = Vec::new();
    for entry in value.split(',').map(str::trim) {
        // Tolerates a trailing comma or blank lines in a folded YAML string.
        if entry.is_empty() {
            continue;
        }
        let parsed = parse_weight_entry(entry).and_then(|(addr, weight)| {
            if weights.contains_key(&addr) {
                Err("the address is listed more than once")
            } else {
                Ok((addr, weight))
            }
        });
        match parsed {
            Ok((addr, weight)) => {
                weights.insert(addr, weight);
            }
            Err(why) => errors.push(CompileError::InvalidEndpointWeight {
                field: annotation_field(ENDPOINT_WEIGHTS),
                entry: entry.to_owned(),
                why: why.to_owned(),
            }),
        }
    }
    (weights, errors)
}

fn parse_weight_entry(entry: &str) -> Result<(IpAddr, u32), &'static str> {
    let (addr, weight) = entry.split_once('=').ok_or("expected address=weight")?;
    let addr = addr
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| "the address is not an IP address")?;
    let weight = weight
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|weight| (1..=MAX_ENDPOINT_WEIGHT).contains(weight))
        .ok_or("the weight must be a whole number from 1 to 1000")?;
    Ok((addr, weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<IngressAnnotations, Vec<CompileError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_ingress_annotations(Some(&map))
    }

    fn balance(pairs: &[(&str, &str)]) -> BalancePolicy {
        parse(pairs).unwrap().balance
    }

    fn rejected_fields(pairs: &[(&str, &str)]) -> Vec<String> {
        let errors = parse(pairs).unwrap_err();
        assert!(errors.iter().all(CompileError::is_rejection));
        errors
            .iter()
            .map(|error| match error {
                CompileError::InvalidAnnotation { field, .. } => field.clone(),
                other => panic!("expected InvalidAnnotation, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn https_annotations_default_to_redirect_and_hsts() {
        let parsed = parse(&[]).unwrap();
        assert!(parsed.ssl_redirect);
        assert_eq!(parsed.hsts.unwrap(), DEFAULT_HSTS);
        assert_eq!(parsed.client_ca, None);
    }

    #[test]
    fn https_annotations_parse_and_reject_bad_values() {
        let parsed = parse(&[
            (SSL_REDIRECT, "false"),
            (HSTS, "Max-Age=600 ;includesubdomains; preload"),
            (CLIENT_CA, "client-ca"),
        ])
        .unwrap();
        assert!(!parsed.ssl_redirect);
        assert_eq!(
            parsed.hsts.unwrap(),
            "max-age=600; includeSubDomains; preload"
        );
        assert_eq!(parsed.client_ca, Some(Ok("client-ca".to_owned())));
        assert_eq!(parse(&[(HSTS, "false")]).unwrap().hsts, None);
        for (name, value) in [
            (SSL_REDIRECT, "yes"),
            (HSTS, "includeSubDomains"),
            (HSTS, "max-age=abc"),
            (HSTS, "max-age=1; max-age=2"),
            (HSTS, "max-age=1; nosniff"),
        ] {
            assert_eq!(
                rejected_fields(&[(name, value)]),
                vec![annotation_field(name)],
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn a_bad_client_ca_does_not_reject_the_ingress() {
        for value in ["a,b", "../x", "other/ca"] {
            let parsed = parse(&[(CLIENT_CA, value)]).unwrap();
            assert!(matches!(parsed.client_ca, Some(Err(_))), "{value}");
        }
    }

    #[test]
    fn policy_names_that_are_not_names_do_not_reject_the_ingress() {
        let parsed = parse(&[(AUTH, " members "), (CACHE, "pages")]).unwrap();
        assert_eq!(parsed.auth, Some(Ok("members".to_owned())));
        assert_eq!(parsed.cache, Some(Ok("pages".to_owned())));
        assert_eq!(parse(&[]).unwrap().cache, None);
        for value in ["a,b", "Pages", "shop/pages", ""] {
            let parsed = parse(&[(AUTH, value), (CACHE, value)]).unwrap();
            assert!(matches!(parsed.auth, Some(Err(_))), "{value:?}");
            match parsed.cache {
                Some(Err(why)) => assert!(why.contains("one Cache"), "{why}"),
                other => panic!("{value:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn strict_paths_default_to_on_with_an_auth_and_take_true_or_false() {
        assert!(!parse(&[]).unwrap().strict_paths);
        assert!(parse(&[(AUTH, "members")]).unwrap().strict_paths);
        assert!(
            parse(&[(AUTH, "Not A Name")]).unwrap().strict_paths,
            "a bad Auth value still guards the routes"
        );
        assert!(
            !parse(&[(AUTH, "members"), (STRICT_PATHS, "false")])
                .unwrap()
                .strict_paths
        );
        assert!(parse(&[(STRICT_PATHS, " true ")]).unwrap().strict_paths);
        for bad in ["yes", "TRUE", "1", ""] {
            assert_eq!(
                rejected_fields(&[(AUTH, "members"), (STRICT_PATHS, bad)]),
                ["metadata.annotations[sluice.dev/strict-paths]"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn load_balance_defaults_to_round_robin() {
        assert_eq!(
            parse_ingress_annotations(None).unwrap().balance,
            BalancePolicy::RoundRobin
        );
        assert_eq!(balance(&[("other.io/x", "y")]), BalancePolicy::RoundRobin);
    }

    #[test]
    fn load_balance_values_map_to_policies() {
        assert_eq!(
            balance(&[(LOAD_BALANCE, "round-robin")]),
            BalancePolicy::RoundRobin
        );
        assert_eq!(
            balance(&[(LOAD_BALANCE, "least-request")]),
            BalancePolicy::LeastRequest
        );
        assert_eq!(balance(&[(LOAD_BALANCE, "ewma")]), BalancePolicy::Ewma);
    }

    #[test]
    fn hash_takes_its_key_from_hash_key() {
        assert_eq!(
            balance(&[(LOAD_BALANCE, "hash"), (HASH_KEY, "header:X-User")]),
            BalancePolicy::Hash(HashOn::Header("x-user".into()))
        );
        assert_eq!(
            balance(&[(LOAD_BALANCE, "hash"), (HASH_KEY, "cookie:Sid")]),
            BalancePolicy::Hash(HashOn::Cookie("Sid".into()))
        );
        assert_eq!(
            balance(&[(LOAD_BALANCE, "hash"), (HASH_KEY, "client-ip")]),
            BalancePolicy::Hash(HashOn::ClientIp)
        );
    }

    #[test]
    fn hash_without_hash_key_is_rejected() {
        assert_eq!(
            rejected_fields(&[(LOAD_BALANCE, "hash")]),
            ["metadata.annotations[sluice.dev/hash-key]"]
        );
    }

    #[test]
    fn bad_hash_keys_are_rejected() {
        for bad in [
            "header:",
            "header:X User",
            "header:a:b",
            "cookie:",
            "cookie:a;b",
            "ip",
            "Header:x",
        ] {
            assert_eq!(
                rejected_fields(&[(LOAD_BALANCE, "hash"), (HASH_KEY, bad)]),
                ["metadata.annotations[sluice.dev/hash-key]"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_hash_key_is_rejected_even_without_hash() {
        assert_eq!(
            rejected_fields(&[(HASH_KEY, "header:")]),
            ["metadata.annotations[sluice.dev/hash-key]"]
        );
        // A good key without `hash` is harmless and ignored.
        assert_eq!(
            balance(&[(HASH_KEY, "client-ip")]),
            BalancePolicy::RoundRobin
        );
    }

    #[test]
    fn unknown_load_balance_is_rejected() {
        assert_eq!(
            rejected_fields(&[(LOAD_BALANCE, "random")]),
            ["metadata.annotations[sluice.dev/load-balance]"]
        );
    }

    #[test]
    fn every_bad_annotation_is_reported() {
        assert_eq!(
            rejected_fields(&[(LOAD_BALANCE, "random"), (HASH_KEY, "nope")]),
            [
                "metadata.annotations[sluice.dev/hash-key]",
                "metadata.annotations[sluice.dev/load-balance]"
            ]
        );
    }

    fn upstream(pairs: &[(&str, &str)]) -> UpstreamAnnotations {
        parse(pairs).unwrap().upstream
    }

    #[test]
    fn backend_protocol_defaults_to_http_and_takes_every_value() {
        assert_eq!(upstream(&[]), UpstreamAnnotations::default());
        assert_eq!(upstream(&[]).protocol, BackendProtocol::Http);
        for (value, protocol) in [
            ("HTTP", BackendProtocol::Http),
            ("HTTPS", BackendProtocol::Https),
            ("h2c", BackendProtocol::H2c),
            (" GRPC ", BackendProtocol::Grpc),
            ("grpcs", BackendProtocol::Grpcs),
        ] {
            assert_eq!(
                upstream(&[(BACKEND_PROTOCOL, value)]).protocol,
                protocol,
                "{value}"
            );
        }
        for bad in ["HTTP2", "", "ws", "AJP"] {
            assert_eq!(
                rejected_fields(&[(BACKEND_PROTOCOL, bad)]),
                ["metadata.annotations[sluice.dev/backend-protocol]"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tls_annotations_are_read_with_a_tls_protocol() {
        let settings = upstream(&[
            (BACKEND_PROTOCOL, "GRPCS"),
            (BACKEND_CA, "backend-ca"),
            (BACKEND_SNI, "API.Internal.Example"),
            (BACKEND_TLS_VERIFY, "true"),
        ]);
        assert_eq!(settings.ca_secret.as_deref(), Some("backend-ca"));
        assert_eq!(settings.sni.as_deref(), Some("api.internal.example"));
        assert!(!settings.verify_disabled);
        let insecure = upstream(&[
            (BACKEND_PROTOCOL, "HTTPS"),
            (BACKEND_TLS_VERIFY, "False"),
            (BACKEND_SNI, "10.0.0.7"),
        ]);
        assert!(insecure.verify_disabled);
        assert_eq!(insecure.sni.as_deref(), Some("10.0.0.7"));
    }

    #[test]
    fn bad_or_misplaced_tls_annotations_are_rejected() {
        let field = |name: &str| format!("metadata.annotations[{name}]");
        let cases: [(&[(&str, &str)], &str); 8] = [
            (
                &[(BACKEND_PROTOCOL, "HTTPS"), (BACKEND_CA, "other/ca")],
                BACKEND_CA,
            ),
            (
                &[(BACKEND_PROTOCOL, "HTTPS"), (BACKEND_CA, "Bad_Name")],
                BACKEND_CA,
            ),
            (&[(BACKEND_CA, "ca")], BACKEND_CA),
            (
                &[(BACKEND_PROTOCOL, "GRPC"), (BACKEND_SNI, "a.example")],
                BACKEND_SNI,
            ),
            (
                &[(BACKEND_PROTOCOL, "HTTPS"), (BACKEND_SNI, "*.example")],
                BACKEND_SNI,
            ),
            (
                &[(BACKEND_PROTOCOL, "HTTPS"), (BACKEND_TLS_VERIFY, "no")],
                BACKEND_TLS_VERIFY,
            ),
            (&[(BACKEND_TLS_VERIFY, "false")], BACKEND_TLS_VERIFY),
            (
                &[
                    (BACKEND_PROTOCOL, "HTTPS"),
                    (BACKEND_CA, "ca"),
                    (BACKEND_TLS_VERIFY, "false"),
                ],
                BACKEND_TLS_VERIFY,
            ),
        ];
        for (pairs, name) in cases {
            assert_eq!(rejected_fields(pairs), [field(name)], "{pairs:?}");
        }
    }

    #[test]
    fn websocket_idle_timeouts_take_durations_within_bounds() {
        for (value, seconds) in [
            ("3600s", 3600),
            ("1h", 3600),
            ("90m", 5400),
            ("1h30m", 5400),
            ("45", 45),
            ("168h", 168 * 3600),
        ] {
            assert_eq!(
                upstream(&[(WEBSOCKET_IDLE_TIMEOUT, value)]).websocket_idle_timeout,
                Some(Duration::from_secs(seconds)),
                "{value}"
            );
        }
        for bad in [
            "0s", "500ms", "169h", "1d", "30m1h", "1h1h", "h", "", "-5s", "1.5h",
        ] {
            assert_eq!(
                rejected_fields(&[(WEBSOCKET_IDLE_TIMEOUT, bad)]),
                ["metadata.annotations[sluice.dev/websocket-idle-timeout]"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn endpoint_weights_parse_per_address() {
        let (weights, errors) = parse_endpoint_weights("10.0.0.1=3, 10.0.0.2=1,fd00::1=1000,");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(weights.len(), 3);
        assert_eq!(weights[&"10.0.0.1".parse::<IpAddr>().unwrap()], 3);
        assert_eq!(weights[&"fd00::1".parse::<IpAddr>().unwrap()], 1000);
    }

    #[test]
    fn bad_weight_entries_are_reported_and_skipped() {
        let (weights, errors) = parse_endpoint_weights(
            "10.0.0.1=0,10.0.0.2=1001,10.0.0.3,host=2,10.0.0.4=x,10.0.0.5=2,10.0.0.5=7",
        );
        assert_eq!(weights.len(), 1);
        assert_eq!(weights[&"10.0.0.5".parse::<IpAddr>().unwrap()], 2);
        let entries: Vec<&str> = errors
            .iter()
            .map(|error| match error {
                CompileError::InvalidEndpointWeight { field, entry, .. } => {
                    assert_eq!(field, "metadata.annotations[sluice.dev/endpoint-weights]");
                    entry.as_str()
                }
                other => panic!("expected InvalidEndpointWeight, got {other:?}"),
            })
            .collect();
        assert_eq!(
            entries,
            [
                "10.0.0.1=0",
                "10.0.0.2=1001",
                "10.0.0.3",
                "host=2",
                "10.0.0.4=x",
                "10.0.0.5=7"
            ]
        );
        assert!(errors.iter().all(|error| !error.is_rejection()));
    }
}
