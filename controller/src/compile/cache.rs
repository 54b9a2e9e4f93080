//! `Cache` policies: validation into what the data plane stores and serves.
//!
//! Every field is checked and every problem reported at once, each naming its field. The
//! CRD schema refuses most of these at the API server already; standalone mode has none.

use std::time::Duration;

use http::{HeaderName, Method};
use sluice_crds::{Cache, CacheBypass, CacheMethod, CacheRedis};
use sluice_dataplane::cache::semantics::HEURISTIC_STATUSES;
use sluice_dataplane::cache::{CacheKeyPart, CachePolicy, CacheRules, RedisLayer};
use sluice_dataplane::snapshot::ObjectRef;

use super::annotations::is_token;
use super::policy::parse_whole_duration;
use crate::error::CompileError;

/// The longest `ttl`, `staleWhileRevalidate` and `staleIfError`: a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The largest response body one entry may hold.
const MAX_OBJECT_SIZE: u64 = 64 * MIB;

/// The largest in-memory store of one policy in one replica.
const MAX_MEMORY_SIZE: u64 = 16 * GIB;

/// The largest `redis.ttlJitter`, in percent.
const MAX_TTL_JITTER: u8 = 50;

/// The most parts a key may have.
const MAX_KEY_PARTS: usize = 8;

/// The longest header or cookie name accepted, as in the CRD.
const MAX_NAME_LENGTH: usize = 128;

/// Validates a `Cache` into what the data plane enforces.
pub(crate) fn compile_cache(
    object: &Cache,
    name: &ObjectRef,
    redis_configured: bool,
) -> Result<CachePolicy, Vec<CompileError>> {
    let spec = &object.spec;
    let mut errors = Vec::new();
    let default_ttl = duration(&spec.ttl, "spec.ttl", Duration::from_secs(1), &mut errors);
    let stale_while_revalidate =
        spec.stale_while_revalidate
            .as_deref()
            .map_or(Some(Duration::ZERO), |text| {
                duration(
                    text,
                    "spec.staleWhileRevalidate",
                    Duration::ZERO,
                    &mut errors,
                )
            });
    let stale_if_error = spec
        .stale_if_error
        .as_deref()
        .map_or(Some(Duration::ZERO), |text| {
            duration(text, "spec.staleIfError", Duration::ZERO, &mut errors)
        });
    let ttl_statuses = ttl_statuses(&spec.ttl_statuses, &mut errors);
    let key = key_parts(&spec.key, &mut errors);
    let methods = methods(&spec.methods, &mut errors);
    let max_object_size = size(
        &spec.max_object_size,
        "spec.maxObjectSize",
        MAX_OBJECT_SIZE,
        "64Mi",
        &mut errors,
    );
    let memory_max_size = size(
        &spec.memory.max_size,
        "spec.memory.maxSize",
        MAX_MEMORY_SIZE,
        "16Gi",
        &mut errors,
    );
    if let (Some(object_size), Some(memory_size)) = (max_object_size, memory_max_size)
        && object_size > memory_size
    {
        errors.push(invalid(
            "spec.maxObjectSize",
            format!(
                "{:?} is larger than memory.maxSize ({:?}), so nothing that large could be stored",
                spec.max_object_size, spec.memory.max_size
            ),
        ));
    }
    let redis = spec
        .redis
        .as_ref()
        .and_then(|redis| redis_layer(redis, redis_configured, &mut errors));
    let (bypass_headers, bypass_cookies) = bypass(spec.bypass.as_ref(), &mut errors);

    match (
        default_ttl,
        stale_while_revalidate,
        stale_if_error,
        max_object_size,
        memory_max_size,
    ) {
        (
            Some(default_ttl),
            Some(stale_while_revalidate),
            Some(stale_if_error),
            Some(max_object_size),
            Some(memory_max_size),
        ) if errors.is_empty() => Ok(CachePolicy {
            name: name.clone(),
            rules: CacheRules {
                default_ttl,
                respect_cache_control: spec.respect_cache_control,
                stale_while_revalidate,
                stale_if_error,
                store_set_cookie: spec.allow_set_cookie,
                ttl_statuses,
            },
            key,
            methods,
            max_object_size,
            memory_max_size,
            redis,
            bypass_headers,
            bypass_cookies,
        }),
        _ => Err(errors),
    }
}

fn invalid(field: &str, why: String) -> CompileError {
    CompileError::InvalidPolicy {
        field: field.to_owned(),
        why,
    }
}

/// A whole number of seconds, minutes or hours, from `least` to a year.
fn duration(
    text: &str,
    field: &str,
    least: Duration,
    errors: &mut Vec<CompileError>,
) -> Option<Duration> {
    let Some(parsed) = parse_whole_duration(text) else {
        errors.push(invalid(
            field,
            format!(
                "{text:?} is not a whole number of seconds, minutes or hours, like 60s, 5m or 1h"
            ),
        ));
        return None;
    };
    if parsed < least {
        errors.push(invalid(
            field,
            format!("must be at least {}s", least.as_secs()),
        ));
        return None;
    }
    if parsed > MAX_DURATION {
        errors.push(invalid(field, "must be at most 8760h (365 days)".into()));
        return None;
    }
    Some(parsed)
}

/// `spec.ttlStatuses`: heuristically cacheable statuses (RFC 9110 §15.1), none twice.
/// Sorted, so the same set in any order is the same policy.
fn ttl_statuses(statuses: &[u16], errors: &mut Vec<CompileError>) -> Vec<u16> {
    let mut valid = Vec::with_capacity(statuses.len());
    for (index, status) in statuses.iter().enumerate() {
        let field = format!("spec.ttlStatuses[{index}]");
        if !HEURISTIC_STATUSES.contains(status) {
            errors.push(invalid(
                &field,
                format!(
                    "{status} is not a status a cache may store without being told for how \
                     long (RFC 9110 §15.1): one of 200, 203, 204, 206, 300, 301, 308, 404, \
                     405, 410, 414, 501"
                ),
            ));
        } else if let Some(earlier) = statuses[..index].iter().position(|s| s == status) {
            errors.push(invalid(
                &field,
                format!("{status} is already spec.ttlStatuses[{earlier}]"),
            ));
        } else {
            valid.push(*status);
        }
    }
    valid.sort_unstable();
    valid
}

/// `spec.key`: at least one part, at most [`MAX_KEY_PARTS`], none twice.
fn key_parts(
    parts: &[sluice_crds::CacheKeyPart],
    errors: &mut Vec<CompileError>,
) -> Vec<CacheKeyPart> {
    if parts.is_empty() {
        errors.push(invalid("spec.key", "needs at least one part".into()));
    }
    if parts.len() > MAX_KEY_PARTS {
        errors.push(invalid(
            "spec.key",
            format!(
                "has {} parts; at most {MAX_KEY_PARTS} are allowed",
                parts.len()
            ),
        ));
    }
    let mut key: Vec<CacheKeyPart> = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let field = format!("spec.key[{index}]");
        match parse_key_part(&part.0) {
            None => errors.push(invalid(
                &field,
                format!(
                    "{:?} is not one of method, host, path, query, header:NAME, cookie:NAME",
                    part.0
                ),
            )),
            Some(parsed) => match key.iter().position(|known| *known == parsed) {
                Some(earlier) => errors.push(invalid(
                    &field,
                    format!("{:?} is the same part as spec.key[{earlier}]", part.0),
                )),
                None => key.push(parsed),
            },
        }
    }
    key
}

fn parse_key_part(text: &str) -> Option<CacheKeyPart> {
    match text {
        "method" => Some(CacheKeyPart::Method),
        "host" => Some(CacheKeyPart::Host),
        "path" => Some(CacheKeyPart::Path),
        "query" => Some(CacheKeyPart::Query),
        _ => {
            if let Some(name) = text.strip_prefix("header:") {
                // Header names are case-insensitive; the data plane reads them lower-cased.
                is_name(name).then(|| CacheKeyPart::Header(name.to_ascii_lowercase()))
            } else if let Some(name) = text.strip_prefix("cookie:") {
                is_name(name).then(|| CacheKeyPart::Cookie(name.to_owned()))
            } else {
                None
            }
        }
    }
}

/// A header or cookie name: an HTTP token of bounded length.
fn is_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LENGTH && is_token(name)
}

/// `spec.methods`: GET, HEAD or both, each once.
fn methods(methods: &[CacheMethod], errors: &mut Vec<CompileError>) -> Vec<Method> {
    if methods.is_empty() {
        errors.push(invalid("spec.methods", "needs GET, HEAD or both".into()));
    }
    let mut parsed: Vec<Method> = Vec::with_capacity(methods.len());
    for (index, method) in methods.iter().enumerate() {
        let method = match method {
            CacheMethod::GET => Method::GET,
            CacheMethod::HEAD => Method::HEAD,
        };
        if parsed.contains(&method) {
            errors.push(invalid(
                &format!("spec.methods[{index}]"),
                format!("{method} is listed twice"),
            ));
        } else {
            parsed.push(method);
        }
    }
    parsed
}

/// A size in bytes, from one byte to `most` (written `most_text` in messages).
fn size(
    text: &str,
    field: &str,
    most: u64,
    most_text: &str,
    errors: &mut Vec<CompileError>,
) -> Option<u64> {
    match parse_quantity(text) {
        None => {
            errors.push(invalid(
                field,
                format!(
                    "{text:?} is not a size in bytes or with a suffix k, M, G, Ki, Mi or Gi, like 512Ki or 1Mi"
                ),
            ));
            None
        }
        Some(0) => {
            errors.push(invalid(field, "must be at least 1 byte".into()));
            None
        }
        Some(bytes) if bytes > most => {
            errors.push(invalid(field, format!("{text:?} is more than {most_text}")));
            None
        }
        Some(bytes) => Some(bytes),
    }
}

/// `1000000`, `512Ki`, `1Mi`, `2G`: bytes, or a whole number times a power of 1000 (`k`,
/// `M`, `G`) or of 1024 (`Ki`, `Mi`, `Gi`), as Kubernetes quantities write them. Fractions
/// and the other suffixes of Kubernetes quantities are not taken.
pub(crate) fn parse_quantity(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    // The digits are ASCII, so this splits on a character boundary.
    let (number, suffix) = text.split_at_checked(digits)?;
    if number.is_empty() {
        return None;
    }
    let unit: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => MIB,
        "Gi" => GIB,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(unit)
}

/// `spec.redis`: the layer to use, if enabled.
fn redis_layer(
    redis: &CacheRedis,
    redis_configured: bool,
    errors: &mut Vec<CompileError>,
) -> Option<RedisLayer> {
    let jitter = parse_percent(&redis.ttl_jitter).filter(|percent| *percent <= MAX_TTL_JITTER);
    if jitter.is_none() {
        errors.push(invalid(
            "spec.redis.ttlJitter",
            format!(
                "{:?} is not a percentage from 0% to {MAX_TTL_JITTER}%",
                redis.ttl_jitter
            ),
        ));
    }
    if !redis.enabled {
        return None;
    }
    // Without Redis the policy would silently cache per replica only; refusing it says so.
    // Its routes are served uncached meanwhile, which is safe.
    if !redis_configured {
        errors.push(invalid(
            "spec.redis.enabled",
            "redis.enabled needs Sluice to run with --redis-url".into(),
        ));
        return None;
    }
    jitter.map(|ttl_jitter_percent| RedisLayer { ttl_jitter_percent })
}

/// `10%`: a whole percentage.
fn parse_percent(text: &str) -> Option<u8> {
    let number = text.strip_suffix('%')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// `spec.bypass`: header names lower-cased, each name once.
fn bypass(
    bypass: Option<&CacheBypass>,
    errors: &mut Vec<CompileError>,
) -> (Vec<HeaderName>, Vec<String>) {
    let Some(bypass) = bypass else {
        return (Vec::new(), Vec::new());
    };
    let mut headers: Vec<HeaderName> = Vec::new();
    for (index, header) in bypass.headers.iter().enumerate() {
        let parsed = is_name(&header.0)
            .then(|| HeaderName::from_bytes(header.0.to_ascii_lowercase().as_bytes()).ok())
            .flatten();
        match parsed {
            Some(name) if !headers.contains(&name) => headers.push(name),
            Some(_) => {}
            None => errors.push(invalid(
                &format!("spec.bypass.headers[{index}]"),
                format!("{:?} is not a header name", header.0),
            )),
        }
    }
    let mut cookies: Vec<String> = Vec::new();
    for (index, cookie) in bypass.cookies.iter().enumerate() {
        if !is_name(&cookie.0) {
            errors.push(invalid(
                &format!("spec.bypass.cookies[{index}]"),
                format!("{:?} is not a cookie name", cookie.0),
            ));
        } else if !cookies.contains(&cookie.0) {
            cookies.push(cookie.0.clone());
        }
    }
    (headers, cookies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cache(spec: serde_json::Value) -> Cache {
        crate::compile::fixtures::policy("Cache", "pages", spec)
    }

    fn compiled(
        spec: serde_json::Value,
        redis_configured: bool,
    ) -> Result<CachePolicy, Vec<CompileError>> {
        compile_cache(
            &cache(spec),
            &ObjectRef::new("shop", "pages"),
            redis_configured,
        )
    }

    #[test]
    fn an_empty_spec_compiles_to_the_defaults() {
        let policy = compiled(json!({}), false).unwrap();
        assert_eq!(
            policy,
            CachePolicy {
                name: ObjectRef::new("shop", "pages"),
                rules: CacheRules {
                    default_ttl: Duration::from_secs(60),
                    respect_cache_control: true,
                    stale_while_revalidate: Duration::ZERO,
                    stale_if_error: Duration::ZERO,
                    store_set_cookie: false,
                    ttl_statuses: vec![200, 203, 204, 300, 301, 308],
                },
                key: vec![
                    CacheKeyPart::Method,
                    CacheKeyPart::Host,
                    CacheKeyPart::Path,
                    CacheKeyPart::Query,
                ],
                methods: vec![Method::GET, Method::HEAD],
                max_object_size: MIB,
                memory_max_size: 64 * MIB,
                redis: None,
                bypass_headers: Vec::new(),
                bypass_cookies: Vec::new(),
            }
        );
    }

    #[test]
    fn a_full_spec_compiles_to_what_it_says() {
        let policy = compiled(
            json!({
                "ttl": "5m",
                "respectCacheControl": false,
                "staleWhileRevalidate": "30s",
                "staleIfError": "1h",
                "key": ["host", "path", "header:Accept-Language", "cookie:Lang", "header:X-Tenant"],
                "methods": ["GET"],
                "maxObjectSize": "512Ki",
                "memory": {"maxSize": "1G"},
                "redis": {"enabled": true, "ttlJitter": "25%"},
                "bypass": {
                    "headers": ["Authorization", "X-Preview", "authorization"],
                    "cookies": ["session", "Session", "session"],
                },
                "allowSetCookie": true,
                "ttlStatuses": [404, 200, 410],
            }),
            true,
        )
        .unwrap();
        assert_eq!(
            policy,
            CachePolicy {
                name: ObjectRef::new("shop", "pages"),
                rules: CacheRules {
                    default_ttl: Duration::from_secs(300),
                    respect_cache_control: false,
                    stale_while_revalidate: Duration::from_secs(30),
                    stale_if_error: Duration::from_secs(3600),
                    store_set_cookie: true,
                    ttl_statuses: vec![200, 404, 410],
                },
                key: vec![
                    CacheKeyPart::Host,
                    CacheKeyPart::Path,
                    CacheKeyPart::Header("accept-language".into()),
                    CacheKeyPart::Cookie("Lang".into()),
                    CacheKeyPart::Header("x-tenant".into()),
                ],
                methods: vec![Method::GET],
                max_object_size: 512 * 1024,
                memory_max_size: 1_000_000_000,
                redis: Some(RedisLayer {
                    ttl_jitter_percent: 25
                }),
                bypass_headers: vec![
                    HeaderName::from_static("authorization"),
                    HeaderName::from_static("x-preview"),
                ],
                // Cookie names are case-sensitive: `Session` is another cookie.
                bypass_cookies: vec!["session".into(), "Session".into()],
            }
        );
    }

    #[test]
    fn redis_off_or_unconfigured() {
        let off = compiled(json!({"redis": {"enabled": false}}), false).unwrap();
        assert_eq!(off.redis, None);
        let default_jitter = compiled(json!({"redis": {"enabled": true}}), true).unwrap();
        assert_eq!(
            default_jitter.redis,
            Some(RedisLayer {
                ttl_jitter_percent: 10
            })
        );
        let no_jitter = compiled(json!({"redis": {"enabled": true, "ttlJitter": "0%"}}), true);
        assert_eq!(
            no_jitter.unwrap().redis,
            Some(RedisLayer {
                ttl_jitter_percent: 0
            })
        );
    }

    #[test]
    fn the_longest_durations_and_largest_sizes_are_allowed() {
        let policy = compiled(
            json!({
                "ttl": "8760h",
                "staleWhileRevalidate": "525600m",
                "staleIfError": "31536000s",
                "maxObjectSize": "64Mi",
                "memory": {"maxSize": "16Gi"},
            }),
            false,
        )
        .unwrap();
        assert_eq!(policy.rules.default_ttl, MAX_DURATION);
        assert_eq!(policy.rules.stale_while_revalidate, MAX_DURATION);
        assert_eq!(policy.rules.stale_if_error, MAX_DURATION);
        assert_eq!(policy.max_object_size, 64 * MIB);
        assert_eq!(policy.memory_max_size, 16 * GIB);
        let equal = compiled(
            json!({"maxObjectSize": "2Mi", "memory": {"maxSize": "2097152"}}),
            false,
        );
        assert_eq!(equal.unwrap().memory_max_size, 2 * MIB);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let cases = [
            (json!({"ttl": "0s"}), "spec.ttl"),
            (json!({"ttl": "1d"}), "spec.ttl"),
            (json!({"ttl": "60"}), "spec.ttl"),
            (json!({"ttl": "s"}), "spec.ttl"),
            (json!({"ttl": "+5s"}), "spec.ttl"),
            (json!({"ttl": "1é"}), "spec.ttl"),
            (json!({"ttl": "8761h"}), "spec.ttl"),
            (json!({"ttl": "99999999999999999999h"}), "spec.ttl"),
            (
                json!({"staleWhileRevalidate": "1.5s"}),
                "spec.staleWhileRevalidate",
            ),
            (
                json!({"staleWhileRevalidate": "525601m"}),
                "spec.staleWhileRevalidate",
            ),
            (json!({"staleIfError": "-1s"}), "spec.staleIfError"),
            (json!({"key": []}), "spec.key"),
            (
                json!({"key": ["method", "host", "path", "query", "header:a", "header:b", "header:c", "header:d", "header:e"]}),
                "spec.key",
            ),
            (json!({"key": ["ip"]}), "spec.key[0]"),
            (json!({"key": ["host", "Host"]}), "spec.key[1]"),
            (json!({"key": ["host", "header:"]}), "spec.key[1]"),
            (json!({"key": ["header:a b"]}), "spec.key[0]"),
            (json!({"key": ["cookie:a;b"]}), "spec.key[0]"),
            (json!({"key": ["header:X-A", "header:x-a"]}), "spec.key[1]"),
            (json!({"methods": []}), "spec.methods"),
            (
                json!({"methods": ["GET", "HEAD", "GET"]}),
                "spec.methods[2]",
            ),
            (json!({"maxObjectSize": "1.5Mi"}), "spec.maxObjectSize"),
            (json!({"maxObjectSize": "1mi"}), "spec.maxObjectSize"),
            (json!({"maxObjectSize": "1Ti"}), "spec.maxObjectSize"),
            (json!({"maxObjectSize": "0"}), "spec.maxObjectSize"),
            (json!({"maxObjectSize": "65Mi"}), "spec.maxObjectSize"),
            (json!({"maxObjectSize": ""}), "spec.maxObjectSize"),
            (
                json!({"maxObjectSize": "2Mi", "memory": {"maxSize": "1Mi"}}),
                "spec.maxObjectSize",
            ),
            (
                json!({"memory": {"maxSize": "17Gi"}}),
                "spec.memory.maxSize",
            ),
            (json!({"memory": {"maxSize": "0Ki"}}), "spec.memory.maxSize"),
            (
                json!({"memory": {"maxSize": "99999999999999999999"}}),
                "spec.memory.maxSize",
            ),
            (json!({"redis": {"enabled": true}}), "spec.redis.enabled"),
            (
                json!({"redis": {"enabled": false, "ttlJitter": "51%"}}),
                "spec.redis.ttlJitter",
            ),
            (
                json!({"redis": {"enabled": false, "ttlJitter": "10"}}),
                "spec.redis.ttlJitter",
            ),
            (
                json!({"redis": {"enabled": false, "ttlJitter": "300%"}}),
                "spec.redis.ttlJitter",
            ),
            (
                json!({"bypass": {"headers": ["Authorization", "X User"]}}),
                "spec.bypass.headers[1]",
            ),
            (
                json!({"bypass": {"headers": ["x".repeat(129)]}}),
                "spec.bypass.headers[0]",
            ),
            (
                json!({"bypass": {"cookies": ["a=b"]}}),
                "spec.bypass.cookies[0]",
            ),
            (json!({"ttlStatuses": [200, 500]}), "spec.ttlStatuses[1]"),
            (json!({"ttlStatuses": [302]}), "spec.ttlStatuses[0]"),
            (json!({"ttlStatuses": [0]}), "spec.ttlStatuses[0]"),
            (
                json!({"ttlStatuses": [404, 200, 404]}),
                "spec.ttlStatuses[2]",
            ),
        ];
        for (spec, field) in cases {
            let errors = compiled(spec.clone(), false).unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.field() == Some(field) && e.reason() == "InvalidSpec"),
                "{spec}: {errors:?}"
            );
        }
    }

    #[test]
    fn ttl_statuses_take_any_heuristically_cacheable_status_in_any_order() {
        let every = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];
        let mut reversed = every;
        reversed.reverse();
        let policy = compiled(json!({ "ttlStatuses": reversed }), false).unwrap();
        assert_eq!(policy.rules.ttl_statuses, every);
        let none = compiled(json!({ "ttlStatuses": [] }), false).unwrap();
        assert!(none.rules.ttl_statuses.is_empty());
        let error = &compiled(json!({ "ttlStatuses": [503] }), false).unwrap_err()[0];
        assert!(error.to_string().contains("503 is not a status"), "{error}");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let errors = compiled(
            json!({
                "ttl": "0s",
                "staleIfError": "x",
                "key": ["ip"],
                "maxObjectSize": "1Ti",
                "redis": {"enabled": true},
                "bypass": {"cookies": [""]},
            }),
            false,
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().filter_map(CompileError::field).collect();
        assert_eq!(
            fields,
            [
                "spec.ttl",
                "spec.staleIfError",
                "spec.key[0]",
                "spec.maxObjectSize",
                "spec.redis.enabled",
                "spec.bypass.cookies[0]",
            ]
        );
    }

    #[test]
    fn quantities_are_bytes_or_have_a_decimal_or_binary_suffix() {
        for (text, bytes) in [
            ("1000000", 1_000_000),
            ("1k", 1000),
            ("3M", 3_000_000),
            ("2G", 2_000_000_000),
            ("512Ki", 524_288),
            ("1Mi", 1_048_576),
            ("16Gi", 17_179_869_184),
            ("0", 0),
        ] {
            assert_eq!(parse_quantity(text), Some(bytes), "{text}");
        }
        for bad in [
            "",
            "Mi",
            "1.5Mi",
            "1mi",
            "1K",
            "1Ti",
            "-1",
            " 1",
            "1 Mi",
            "1Mié",
            "18446744073709551616",
            "18446744073709551615Gi",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }
}
