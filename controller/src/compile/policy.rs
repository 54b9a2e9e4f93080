//! Policies (`sluice.dev` custom resources): validation into snapshot types, and the index
//! Ingresses resolve their policy annotations against.
//!
//! The CRD schema and its CEL rules already refuse most bad specs at the API server; this
//! validation repeats what matters, because standalone mode has no API server and because
//! an object stored under an older schema must not reach the data plane unchecked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_crds::{
    KeyPart, Limit, OnBackendFailure, RateLimit, RateLimitBackend, RateLimitHeaders,
};
use sluice_dataplane::snapshot::{
    LimitBackend, LimitFailure, LimitHeaders, LimitKeyPart, LimitRule, ObjectRef, RateLimitPolicy,
};

use super::annotations::is_token;
use super::auth::{LastGoodAuths, compile_auth_or_last_good};
use super::cache::compile_cache;
use super::tls::SecretIndex;
use crate::error::CompileError;
use crate::object_key::ObjectKind;
use crate::object_key::object_ref;
use sluice_crds::{Auth, Cache};
use sluice_dataplane::auth::AuthPolicy;
use sluice_dataplane::cache::CachePolicy;

/// The longest period a limit may have.
const MAX_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// Every policy by namespace and name: valid ones compiled, invalid ones remembered so an
/// Ingress that names them is told why it answers 503 (or, for a Cache, is served
/// uncached).
#[derive(Debug, Default)]
pub(crate) struct PolicyIndex {
    rate_limits: BTreeMap<ObjectRef, Option<Arc<RateLimitPolicy>>>,
    auths: BTreeMap<ObjectRef, Option<Arc<AuthPolicy>>>,
    caches: BTreeMap<ObjectRef, Option<Arc<CachePolicy>>>,
}

/// What an Ingress gets when it names a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyLookup<T> {
    Found(Arc<T>),
    NotAccepted,
    NotFound,
}

/// Compiles each object once (the first of a name wins): the policy to enforce, if any,
/// and the problems, which go to `errors_of`.
fn compile_each<O, T>(
    objects: &[Arc<O>],
    kind: ObjectKind,
    mut compile: impl FnMut(&O, &ObjectRef) -> (Option<T>, Vec<CompileError>),
    errors_of: &mut impl FnMut(ObjectKind, ObjectRef, Vec<CompileError>),
) -> BTreeMap<ObjectRef, Option<Arc<T>>>
where
    O: kube::Resource,
{
    let mut compiled = BTreeMap::new();
    for object in objects {
        let name = object_ref(object.meta());
        if compiled.contains_key(&name) {
            continue;
        }
        let (policy, errors) = compile(object, &name);
        errors_of(kind, name.clone(), errors);
        compiled.insert(name, policy.map(Arc::new));
    }
    compiled
}

/// A compile that either succeeds or fails as a whole.
fn all_or_nothing<T>(result: Result<T, Vec<CompileError>>) -> (Option<T>, Vec<CompileError>) {
    match result {
        Ok(policy) => (Some(policy), Vec::new()),
        Err(errors) => (None, errors),
    }
}

fn lookup<T>(
    policies: &BTreeMap<ObjectRef, Option<Arc<T>>>,
    namespace: &str,
    name: &str,
) -> PolicyLookup<T> {
    match policies.get(&ObjectRef::new(namespace, name)) {
        Some(Some(policy)) => PolicyLookup::Found(Arc::clone(policy)),
        Some(None) => PolicyLookup::NotAccepted,
        None => PolicyLookup::NotFound,
    }
}

impl PolicyIndex {
    /// Validates every policy; the errors of each go to `statuses` under its own key.
    pub fn new(
        rate_limits: &[Arc<RateLimit>],
        auths: &[Arc<Auth>],
        caches: &[Arc<Cache>],
        secrets: &SecretIndex<'_>,
        last_good_auths: &LastGoodAuths,
        redis_configured: bool,
        errors_of: &mut impl FnMut(ObjectKind, ObjectRef, Vec<CompileError>),
    ) -> Self {
        PolicyIndex {
            rate_limits: compile_each(
                rate_limits,
                ObjectKind::RateLimit,
                |object, name| all_or_nothing(compile_rate_limit(object, name, redis_configured)),
                errors_of,
            ),
            auths: compile_each(
                auths,
                ObjectKind::Auth,
                |object, name| {
                    compile_auth_or_last_good(
                        object,
                        name,
                        secrets,
                        last_good_auths,
                        redis_configured,
                    )
                },
                errors_of,
            ),
            caches: compile_each(
                caches,
                ObjectKind::Cache,
                |object, name| all_or_nothing(compile_cache(object, name, redis_configured)),
                errors_of,
            ),
        }
    }

    pub fn rate_limit(&self, namespace: &str, name: &str) -> PolicyLookup<RateLimitPolicy> {
        lookup(&self.rate_limits, namespace, name)
    }

    pub fn auth(&self, namespace: &str, name: &str) -> PolicyLookup<AuthPolicy> {
        lookup(&self.auths, namespace, name)
    }

    pub fn cache(&self, namespace: &str, name: &str) -> PolicyLookup<CachePolicy> {
        lookup(&self.caches, namespace, name)
    }

    /// What the next compile falls back on: each enforced Auth with the spec it came from.
    pub fn last_good_auths(&self, auths: &[Arc<Auth>]) -> LastGoodAuths {
        auths
            .iter()
            .filter_map(|object| {
                let name = object_ref(&object.metadata);
                let policy = self.auths.get(&name)?.as_ref()?;
                Some((name, (object.spec.clone(), Arc::clone(policy))))
            })
            .collect()
    }
}

/// Validates a `RateLimit` into what the data plane enforces.
pub(crate) fn compile_rate_limit(
    object: &RateLimit,
    name: &ObjectRef,
    redis_configured: bool,
) -> Result<RateLimitPolicy, Vec<CompileError>> {
    let spec = &object.spec;
    let mut errors = Vec::new();
    let invalid = |field: String, why: String| CompileError::InvalidPolicy { field, why };
    if spec.limits.is_empty() {
        errors.push(invalid(
            "spec.limits".into(),
            "at least one limit is needed".into(),
        ));
    }
    let mut limits = Vec::with_capacity(spec.limits.len());
    for (index, limit) in spec.limits.iter().enumerate() {
        match compile_limit(limit, &format!("spec.limits[{index}]")) {
            Ok(rule) => limits.push(rule),
            Err(error) => errors.push(error),
        }
    }
    match spec.backend {
        RateLimitBackend::Local => {
            if spec.local_share.is_some() {
                errors.push(invalid(
                    "spec.localShare".into(),
                    "localShare only applies to backend: redis".into(),
                ));
            }
            if spec.on_backend_failure == OnBackendFailure::Local {
                errors.push(invalid(
                    "spec.onBackendFailure".into(),
                    "onBackendFailure: local needs backend: redis and localShare".into(),
                ));
            }
        }
        RateLimitBackend::Redis => {
            // Without Redis the policy would silently count per replica; refusing it keeps
            // its routes answering 503 until Sluice is given a Redis.
            if !redis_configured {
                errors.push(invalid(
                    "spec.backend".into(),
                    "backend: redis needs Sluice to run with --redis-url".into(),
                ));
            }
            if spec.on_backend_failure == OnBackendFailure::Local && spec.local_share.is_none() {
                errors.push(invalid(
                    "spec.localShare".into(),
                    "onBackendFailure: local needs localShare".into(),
                ));
            }
        }
    }
    let backend = match (spec.backend, spec.on_backend_failure) {
        (RateLimitBackend::Local, _) => LimitBackend::Local,
        (RateLimitBackend::Redis, OnBackendFailure::Allow) => LimitBackend::Redis {
            on_failure: LimitFailure::Allow,
        },
        (RateLimitBackend::Redis, OnBackendFailure::Deny) => LimitBackend::Redis {
            on_failure: LimitFailure::Deny,
        },
        (RateLimitBackend::Redis, OnBackendFailure::Local) => LimitBackend::Redis {
            on_failure: LimitFailure::Local {
                share: spec.local_share.unwrap_or(1).max(1),
            },
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RateLimitPolicy {
        name: name.clone(),
        limits,
        headers: match spec.headers {
            RateLimitHeaders::Ietf => LimitHeaders::Ietf,
            RateLimitHeaders::Legacy => LimitHeaders::Legacy,
            RateLimitHeaders::None => LimitHeaders::None,
        },
        backend,
    })
}

fn compile_limit(limit: &Limit, field: &str) -> Result<LimitRule, CompileError> {
    let invalid = |part: &str, why: String| CompileError::InvalidPolicy {
        field: format!("{field}.{part}"),
        why,
    };
    if limit.requests == 0 {
        return Err(invalid("requests", "must be at least 1".into()));
    }
    let period = parse_period(&limit.period).ok_or_else(|| {
        invalid(
            "period",
            format!("{:?} is not like 10s, 1m or 24h", limit.period),
        )
    })?;
    if period > MAX_PERIOD {
        return Err(invalid("period", "must be at most 168h".into()));
    }
    let burst = limit.burst.unwrap_or(limit.requests);
    if burst == 0 {
        return Err(invalid("burst", "must be at least 1".into()));
    }
    if limit.key.is_empty() {
        return Err(invalid("key", "needs at least one part".into()));
    }
    let key = limit
        .key
        .iter()
        .enumerate()
        .map(|(index, part)| {
            parse_key_part(part).ok_or_else(|| {
                invalid(
                    &format!("key[{index}]"),
                    format!(
                        "{:?} is not one of clientIP, host, path, method, header:NAME, cookie:NAME",
                        part.0
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LimitRule {
        requests: limit.requests,
        period,
        burst,
        key,
    })
}

/// `10s`, `5m`, `24h`: a whole number, not zero, and one unit.
fn parse_period(text: &str) -> Option<Duration> {
    parse_whole_duration(text).filter(|period| !period.is_zero())
}

/// `0s`, `10s`, `5m`, `24h`: a whole number of seconds, minutes or hours.
pub(super) fn parse_whole_duration(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (number, unit) = text.split_at_checked(split)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

fn parse_key_part(part: &KeyPart) -> Option<LimitKeyPart> {
    let text = part.0.as_str();
    let token = |name: &str| (name.len() <= 128 && is_token(name)).then(|| name.to_owned());
    match text {
        "clientIP" => Some(LimitKeyPart::ClientIp),
        "host" => Some(LimitKeyPart::Host),
        "path" => Some(LimitKeyPart::Path),
        "method" => Some(LimitKeyPart::Method),
        _ => {
            if let Some(name) = text.strip_prefix("header:") {
                token(name).map(|name| LimitKeyPart::Header(name.to_ascii_lowercase()))
            } else if let Some(name) = text.strip_prefix("cookie:") {
                token(name).map(LimitKeyPart::Cookie)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rate_limit(spec: serde_json::Value) -> RateLimit {
        crate::compile::fixtures::policy("RateLimit", "api", spec)
    }

    fn compiled(spec: serde_json::Value) -> Result<RateLimitPolicy, Vec<CompileError>> {
        compile_rate_limit(&rate_limit(spec), &ObjectRef::new("shop", "api"), false)
    }

    #[test]
    fn a_full_spec_compiles_with_its_defaults() {
        let policy = compiled(json!({
            "limits": [
                {"requests": 10, "period": "1s", "key": ["clientIP", "header:X-Api-Key"]},
                {"requests": 1000, "period": "1h", "burst": 50},
            ],
            "headers": "legacy",
        }))
        .unwrap();
        assert_eq!(policy.headers, LimitHeaders::Legacy);
        assert_eq!(
            policy.limits,
            vec![
                LimitRule {
                    requests: 10,
                    period: Duration::from_secs(1),
                    burst: 10,
                    key: vec![
                        LimitKeyPart::ClientIp,
                        LimitKeyPart::Header("x-api-key".into())
                    ],
                },
                LimitRule {
                    requests: 1000,
                    period: Duration::from_secs(3600),
                    burst: 50,
                    key: vec![LimitKeyPart::ClientIp],
                },
            ]
        );
    }

    #[test]
    fn bad_specs_name_the_field() {
        let cases = [
            (json!({"limits": []}), "spec.limits"),
            (
                json!({"limits": [{"requests": 0, "period": "1m"}]}),
                "spec.limits[0].requests",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1d"}]}),
                "spec.limits[0].period",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "0s"}]}),
                "spec.limits[0].period",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "200h"}]}),
                "spec.limits[0].period",
            ),
            // A unit that is not one byte long must be refused, not split inside.
            (
                json!({"limits": [{"requests": 1, "period": "1é"}]}),
                "spec.limits[0].period",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1m", "burst": 0}]}),
                "spec.limits[0].burst",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1m", "key": []}]}),
                "spec.limits[0].key",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1m", "key": ["ip"]}]}),
                "spec.limits[0].key[0]",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1m", "key": ["header:a b"]}]}),
                "spec.limits[0].key[0]",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1m"}], "localShare": 3}),
                "spec.localShare",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1m"}], "onBackendFailure": "local"}),
                "spec.onBackendFailure",
            ),
            (
                json!({"limits": [{"requests": 1, "period": "1m"}], "backend": "redis"}),
                "spec.backend",
            ),
        ];
        for (spec, field) in cases {
            let errors = compiled(spec.clone()).unwrap_err();
            assert!(
                errors
                    .iter()
                    .any(|e| e.field() == Some(field) && e.reason() == "InvalidSpec"),
                "{spec}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_index_tells_found_invalid_and_missing_apart() {
        let good = Arc::new(rate_limit(
            json!({"limits": [{"requests": 1, "period": "1m"}]}),
        ));
        let mut bad = rate_limit(json!({"limits": []}));
        bad.metadata.name = Some("bad".into());
        let mut reported = BTreeMap::new();
        let secrets = SecretIndex::new(std::iter::empty());
        let auths = [Arc::new(crate::compile::fixtures::policy::<Auth>(
            "Auth",
            "office",
            json!({"ipAllow": ["10.0.0.0/8"]}),
        ))];
        let caches = [Arc::new(crate::compile::fixtures::policy::<Cache>(
            "Cache",
            "pages",
            json!({}),
        ))];
        let index = PolicyIndex::new(
            &[good, Arc::new(bad)],
            &auths,
            &caches,
            &secrets,
            &LastGoodAuths::default(),
            false,
            &mut |kind: ObjectKind, name: ObjectRef, errors: Vec<CompileError>| {
                reported.insert((kind, name), errors.len());
            },
        );
        assert!(matches!(
            index.auth("shop", "office"),
            PolicyLookup::Found(_)
        ));
        assert_eq!(index.auth("shop", "api"), PolicyLookup::NotFound);
        assert!(matches!(
            index.cache("shop", "pages"),
            PolicyLookup::Found(_)
        ));
        assert_eq!(index.cache("shop", "office"), PolicyLookup::NotFound);
        assert!(matches!(
            index.rate_limit("shop", "api"),
            PolicyLookup::Found(_)
        ));
        assert_eq!(index.rate_limit("shop", "bad"), PolicyLookup::NotAccepted);
        assert_eq!(index.rate_limit("other", "api"), PolicyLookup::NotFound);
        let rate_limit_errors =
            |name: &str| reported[&(ObjectKind::RateLimit, ObjectRef::new("shop", name))];
        assert_eq!(rate_limit_errors("api"), 0);
        assert_eq!(rate_limit_errors("bad"), 1);
        assert_eq!(
            reported[&(ObjectKind::Auth, ObjectRef::new("shop", "office"))],
            0
        );
        assert_eq!(
            reported[&(ObjectKind::Cache, ObjectRef::new("shop", "pages"))],
            0
        );
    }
}
