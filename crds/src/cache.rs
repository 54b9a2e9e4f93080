//! `Cache`: which responses of a route are stored and served again, for how long, in each
//! replica's memory and optionally in Redis shared by all replicas.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::HeaderName;
use crate::status::PolicyStatus;

/// A response cache for the routes of Ingresses that name this policy in their
/// `sluice.dev/cache` annotation (same namespace only). The HTTP caching rules of a shared
/// cache (RFC 9111) always apply: `no-store`, `private`, `Vary` and the rules for
/// `Authorization` are honoured whatever the spec says.
// Clippy reads the repeated `type_ = "string"` of separate printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Cache",
    namespaced,
    status = "PolicyStatus",
    category = "sluice",
    doc = "A response cache for the routes of Ingresses that name this policy",
    printcolumn(name = "TTL", type_ = "string", json_path = ".spec.ttl"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// How long a stored response stays fresh when the upstream says nothing about it (no
    /// `s-maxage`, `max-age` or `Expires`), or always when `respectCacheControl` is false:
    /// a whole number of seconds, minutes or hours (`60s`, `5m`, `1h`), at most `8760h`.
    #[serde(default = "default_ttl")]
    #[schemars(
        regex(pattern = TTL),
        length(max = 9),
        extend("x-kubernetes-validations" = [{
            "rule": "duration(self) <= duration('8760h')",
            "message": "ttl is at most 8760h (365 days)"
        }])
    )]
    pub ttl: String,
    /// The statuses stored for `ttl` when the upstream gives no freshness (no `s-maxage`,
    /// `max-age` or `Expires`), or for every response when `respectCacheControl` is false.
    /// Each must be one RFC 9110 §15.1 lets a cache store without being told: 200, 203,
    /// 204, 206, 300, 301, 308, 404, 405, 410, 414 or 501 (206 is accepted but never
    /// stored: this cache keeps no partial responses). Defaults to `[200, 203, 204, 300,
    /// 301, 308]`: an error answer is stored only when the upstream says for how long.
    #[serde(default = "default_ttl_statuses")]
    #[schemars(
        length(max = 12),
        extend(
            "x-kubernetes-list-type" = "set",
            "items" = {
                "type": "integer",
                "enum": [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]
            }
        )
    )]
    pub ttl_statuses: Vec<u16>,
    /// Let the upstream's `s-maxage`, `max-age` and `Expires` decide how long a response
    /// stays fresh. `no-store`, `private`, `Vary` and `Set-Cookie` are honoured either way.
    #[serde(default = "yes")]
    pub respect_cache_control: bool,
    /// After a response goes stale, serve it for this long more while one background
    /// request refreshes it (a response's own `stale-while-revalidate` wins when longer):
    /// `30s`, `5m`, `1h`. Defaults to `0s`: only what the response itself allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = WINDOW),
        length(max = 9),
        extend("x-kubernetes-validations" = [{
            "rule": "duration(self) <= duration('8760h')",
            "message": "staleWhileRevalidate is at most 8760h (365 days)"
        }])
    )]
    pub stale_while_revalidate: Option<String>,
    /// After a response goes stale, serve it for this long more when the upstream fails or
    /// times out (a response's own `stale-if-error` wins when longer): `5m`, `1h`. Defaults
    /// to `0s`: only what the response itself allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = WINDOW),
        length(max = 9),
        extend("x-kubernetes-validations" = [{
            "rule": "duration(self) <= duration('8760h')",
            "message": "staleIfError is at most 8760h (365 days)"
        }])
    )]
    pub stale_if_error: Option<String>,
    /// What tells two requests apart, in order: any of `method` (HEAD shares GET's
    /// entries), `host`, `path`, `query` (the raw query string), `header:NAME` and
    /// `cookie:NAME`. Defaults to `[method, host, path, query]`. The upstream's `Vary` keeps
    /// variants apart on top of this.
    #[serde(default = "default_key")]
    #[schemars(
        length(min = 1, max = 8),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub key: Vec<CacheKeyPart>,
    /// The request methods answered from the cache: `GET`, `HEAD` or both (the default).
    #[serde(default = "default_methods")]
    #[schemars(
        length(min = 1, max = 2),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub methods: Vec<CacheMethod>,
    /// Responses with a larger body are passed on and not stored: bytes, or a quantity
    /// such as `512Ki` or `1Mi` (suffixes k, M, G, Ki, Mi, Gi). At most `64Mi`, and at most
    /// `memory.maxSize`. Defaults to `1Mi`.
    #[serde(default = "default_max_object_size")]
    #[schemars(regex(pattern = QUANTITY), length(max = 16))]
    pub max_object_size: String,
    /// The in-memory store each replica keeps for this policy.
    #[serde(default)]
    pub memory: CacheMemory,
    /// A second layer in Redis, shared by every replica (needs `--redis-url`). When Redis
    /// cannot answer, the cache works from memory alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<CacheRedis>,
    /// Requests that go upstream untouched, neither served from nor stored in the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<CacheBypass>,
    /// Store responses that carry `Set-Cookie`. Off by default: such responses are usually
    /// meant for one user, and storing them could hand one user's cookie to another.
    #[serde(default)]
    pub allow_set_cookie: bool,
}

/// A whole number of seconds, minutes or hours, from 1 (the digits are bounded so that
/// the CEL rule's `duration()` never overflows; the rule sets the real bound).
const TTL: &str = r"^([1-9][0-9]{0,7}s|[1-9][0-9]{0,5}m|[1-9][0-9]{0,3}h)$";

/// The same, from 0.
const WINDOW: &str = r"^([0-9]{1,8}s|[0-9]{1,6}m|[0-9]{1,4}h)$";

/// Bytes, or a whole number with one of the suffixes k, M, G (powers of 1000) or Ki, Mi,
/// Gi (powers of 1024).
const QUANTITY: &str = r"^[1-9][0-9]{0,11}(k|M|G|Ki|Mi|Gi)?$";

fn default_ttl() -> String {
    "60s".to_owned()
}

fn default_ttl_statuses() -> Vec<u16> {
    vec![200, 203, 204, 300, 301, 308]
}

fn yes() -> bool {
    true
}

fn default_key() -> Vec<CacheKeyPart> {
    ["method", "host", "path", "query"]
        .into_iter()
        .map(|part| CacheKeyPart(part.to_owned()))
        .collect()
}

fn default_methods() -> Vec<CacheMethod> {
    vec![CacheMethod::GET, CacheMethod::HEAD]
}

fn default_max_object_size() -> String {
    "1Mi".to_owned()
}

fn default_memory_size() -> String {
    "64Mi".to_owned()
}

fn default_ttl_jitter() -> String {
    "10%".to_owned()
}

/// One part of a cache key: `method`, `host`, `path`, `query`, `header:NAME` or
/// `cookie:NAME`.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CacheKeyPart(
    #[schemars(regex(
        pattern = r"^(method|host|path|query|header:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}|cookie:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128})$"
    ))]
    pub String,
);

/// A request method the cache answers.
#[derive(JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum CacheMethod {
    GET,
    HEAD,
}

/// The in-memory store of one policy in each replica.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheMemory {
    /// The most the stored responses of this policy take in each replica (bodies and
    /// headers), as bytes or a quantity such as `256Mi` or `1Gi`; the least recently
    /// useful entries are evicted to stay within it. At most `16Gi`. Defaults to `64Mi`.
    #[serde(default = "default_memory_size")]
    #[schemars(regex(pattern = QUANTITY), length(max = 16))]
    pub max_size: String,
}

impl Default for CacheMemory {
    fn default() -> Self {
        CacheMemory {
            max_size: default_memory_size(),
        }
    }
}

/// The shared second layer in Redis.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRedis {
    /// Store and look up responses in Redis too (needs `--redis-url`; a policy asking for
    /// it without one is not accepted).
    #[serde(default)]
    pub enabled: bool,
    /// Each entry's Redis expiry is lengthened by up to this percentage, at random, so
    /// entries stored together do not all expire together: `0%` to `50%`, default `10%`.
    #[serde(default = "default_ttl_jitter")]
    #[schemars(regex(pattern = r"^([0-9]|[1-4][0-9]|50)%$"))]
    pub ttl_jitter: String,
}

/// Requests carrying any of these go upstream untouched.
#[derive(JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheBypass {
    /// Request header names (`Authorization`, `X-Preview`); case does not matter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<HeaderName>,
    /// Cookie names (`session`); case matters, as it does for cookies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub cookies: Vec<CookieName>,
}

/// A cookie name: an HTTP token.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CookieName(
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"))] pub String,
);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn an_empty_spec_takes_the_documented_defaults() {
        let spec: CacheSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(spec.ttl, "60s");
        assert_eq!(spec.ttl_statuses, [200, 203, 204, 300, 301, 308]);
        assert!(spec.respect_cache_control);
        assert_eq!(spec.stale_while_revalidate, None);
        assert_eq!(spec.stale_if_error, None);
        let key: Vec<&str> = spec.key.iter().map(|part| part.0.as_str()).collect();
        assert_eq!(key, ["method", "host", "path", "query"]);
        assert_eq!(spec.methods, [CacheMethod::GET, CacheMethod::HEAD]);
        assert_eq!(spec.max_object_size, "1Mi");
        assert_eq!(spec.memory.max_size, "64Mi");
        assert_eq!(spec.redis, None);
        assert_eq!(spec.bypass, None);
        assert!(!spec.allow_set_cookie);
        let redis: CacheRedis = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(
            redis,
            CacheRedis {
                enabled: false,
                ttl_jitter: "10%".into()
            }
        );
    }

    #[test]
    fn the_crd_is_namespaced_in_the_sluice_category_with_a_status() {
        let crd = Cache::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("caches.sluice.dev"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.categories, Some(vec!["sluice".to_owned()]));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let schema = serde_json::to_value(&version.schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["methods"]["x-kubernetes-list-type"], "set");
        assert_eq!(spec["key"]["maxItems"], 8);
        assert!(spec["ttl"]["x-kubernetes-validations"].is_array());
        let statuses = &spec["ttlStatuses"];
        assert_eq!(statuses["x-kubernetes-list-type"], "set");
        assert_eq!(statuses["maxItems"], 12);
        assert_eq!(
            statuses["items"]["enum"],
            serde_json::json!([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501])
        );
        assert_eq!(
            statuses["default"],
            serde_json::json!([200, 203, 204, 300, 301, 308])
        );
    }
}
