//! `RateLimit`: how many requests a route takes per key and period, counted per replica or
//! across replicas in Redis.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::PolicyStatus;

/// Limits applied to every route of the Ingresses that name this policy in their
/// `sluice.dev/rate-limit` annotation (same namespace only).
// Clippy reads the repeated `type_ = "string"` of separate printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "RateLimit",
    namespaced,
    status = "PolicyStatus",
    shortname = "rl",
    category = "sluice",
    doc = "Request rate limits for the routes of Ingresses that name this policy",
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.backend"),
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
#[x_kube(validation = Rule::new(
    "self.onBackendFailure != 'local' || (self.backend == 'redis' && has(self.localShare))"
).message("onBackendFailure: local needs backend: redis and localShare"))]
#[x_kube(validation = Rule::new("!has(self.localShare) || self.backend == 'redis'")
    .message("localShare only applies to backend: redis"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Every limit applies; a request must pass all of them.
    #[schemars(length(min = 1, max = 8))]
    pub limits: Vec<Limit>,
    /// `local` counts in each replica; `redis` counts across replicas (needs `--redis-url`).
    #[serde(default)]
    pub backend: RateLimitBackend,
    /// What happens to a request when Redis cannot answer in time.
    #[serde(default)]
    pub on_backend_failure: OnBackendFailure,
    /// With `onBackendFailure: local`, each replica allows `requests / localShare` on its own
    /// while Redis is unreachable; usually the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub local_share: Option<u32>,
    /// Which response headers describe the limit.
    #[serde(default)]
    pub headers: RateLimitHeaders,
}

/// One limit: `requests` per `period`, counted separately for each value of `key`.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    /// Requests allowed per period.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: u64,
    /// A whole number of seconds, minutes or hours: `10s`, `1m`, `24h`.
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[smh]$"))]
    pub period: String,
    /// Requests that may arrive at once after a quiet spell; defaults to `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub burst: Option<u64>,
    /// What is counted separately: any of `clientIP`, `host`, `path`, `method`,
    /// `header:NAME`, `cookie:NAME`. Defaults to `[clientIP]`.
    #[serde(default = "default_key")]
    #[schemars(length(min = 1, max = 6))]
    pub key: Vec<KeyPart>,
}

fn default_key() -> Vec<KeyPart> {
    vec![KeyPart("clientIP".to_owned())]
}

/// One part of a limit's key: `clientIP`, `host`, `path`, `method`, `header:NAME` or
/// `cookie:NAME`.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyPart(
    #[schemars(regex(
        pattern = r"^(clientIP|host|path|method|header:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}|cookie:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128})$"
    ))]
    pub String,
);

#[derive(JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitBackend {
    #[default]
    Local,
    Redis,
}

#[derive(JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnBackendFailure {
    /// Let the request through (fail open).
    #[default]
    Allow,
    /// Refuse it with 503 (fail closed).
    Deny,
    /// Count it locally against `requests / localShare`.
    Local,
}

#[derive(JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitHeaders {
    /// `RateLimit` and `RateLimit-Policy` (the IETF httpapi draft).
    #[default]
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Legacy,
    None,
}
