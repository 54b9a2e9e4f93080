//! `Auth`: who may use a route. Client networks, Basic credentials, API keys, JWTs and an
//! external authorization service, alone or combined.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::PolicyStatus;

/// Authentication and client-network rules for the routes of Ingresses that name this
/// policy in their `sluice.dev/auth` annotation (same namespace only).
// Clippy reads the repeated `type_ = "string"` of separate printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Auth",
    namespaced,
    status = "PolicyStatus",
    category = "sluice",
    doc = "Authentication and client-network rules for the routes of Ingresses that name this policy",
    printcolumn(name = "Require", type_ = "string", json_path = ".spec.require"),
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
    "has(self.basic) || has(self.apiKey) || has(self.jwt) || has(self.forward) || (has(self.ipAllow) && size(self.ipAllow) > 0) || (has(self.ipDeny) && size(self.ipDeny) > 0)"
).message("an Auth needs at least one of basic, apiKey, jwt, forward, ipAllow or ipDeny"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// HTTP Basic credentials from an htpasswd Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// Keys in a header or query parameter, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,
    /// Bearer JSON Web Tokens, verified against a JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
    /// An external service that answers 2xx to let a request through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardAuth>,
    /// Only clients in these networks (CIDRs) may pass; checked before any credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ip_allow: Vec<Cidr>,
    /// Clients in these networks (CIDRs) are refused; checked first of all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ip_deny: Vec<Cidr>,
    /// With several credential methods: `any` lets a request through on one success,
    /// `all` needs every one.
    #[serde(default)]
    pub require: Require,
    /// Remove the credentials (Authorization, the API key) before the request goes upstream.
    #[serde(default = "yes")]
    pub strip_credentials: bool,
}

fn yes() -> bool {
    true
}

/// A network in CIDR notation, IPv4 or IPv6 (`10.0.0.0/8`, `2001:db8::/32`); a bare
/// address means that one address.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cidr(#[schemars(regex(pattern = r"^[0-9a-fA-F:.]{2,45}(/[0-9]{1,3})?$"))] pub String);

/// A Secret in the policy's own namespace.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub name: String,
}

#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// Key `auth` holds htpasswd lines (`user:hash`); bcrypt (`$2y$`, `$2b$`, `$2a$`),
    /// SHA-256-crypt (`$5$`) and SHA-512-crypt (`$6$`) hashes. Plain text, MD5 and crypt(3)
    /// DES lines are refused.
    pub secret_ref: SecretRef,
    /// The realm sent in `WWW-Authenticate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r#"^[ !#-\[\]-~]{1,128}$"#))]
    pub realm: Option<String>,
}

#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.header) != has(self.query)",
    "message": "apiKey needs exactly one of header or query"
}, {
    "rule": "has(self.secretRef) || (has(self.redisSet) && self.redisSet)",
    "message": "apiKey needs secretRef, redisSet: true, or both"
}]))]
pub struct ApiKeyAuth {
    /// The request header carrying the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"))]
    pub header: Option<String>,
    /// The query parameter carrying the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._~-]{1,128}$"))]
    pub query: Option<String>,
    /// Every value of the Secret's data is one valid key (the key names are labels, for
    /// example who the key belongs to). Sluice keeps only SHA-256 digests in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Also accept keys whose SHA-256 digest (lower-case hex) is in the Redis set
    /// `sluice:auth:{NAMESPACE/NAME}:api-keys`, for key stores too large or too busy for a
    /// Secret (needs `--redis-url`; when Redis cannot answer, such keys get 503).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_set: bool,
}

#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.jwksSecretRef) || has(self.jwksUri)",
    "message": "jwt needs jwksSecretRef or jwksUri"
}]))]
pub struct JwtAuth {
    /// The `iss` every token must carry.
    #[schemars(length(min = 1, max = 512))]
    pub issuer: String,
    /// Tokens must name one of these in `aud`.
    #[schemars(length(min = 1, max = 16))]
    pub audiences: Vec<String>,
    /// A Secret whose key `jwks.json` holds the JSON Web Key Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_secret_ref: Option<SecretRef>,
    /// An https URL the key set is fetched from and refreshed, never on the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https://\S+$"), length(max = 2048))]
    pub jwks_uri: Option<String>,
    /// A Secret whose key `ca.crt` holds the CA certificates (PEM) the `jwksUri` server's
    /// certificate must chain to; without it, the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca_secret_ref: Option<SecretRef>,
    /// Signature algorithms accepted; `none` and HMAC never are.
    #[serde(default = "default_algorithms")]
    #[schemars(length(min = 1, max = 8))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Claims copied to request headers upstream (`sub: X-User`). Client-sent headers of
    /// these names are always removed. Arrays are joined with commas; objects are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub claims_to_headers: BTreeMap<String, HeaderName>,
    /// Refuse tokens whose `jti` is in the Redis set `sluice:auth:{NAMESPACE/NAME}:revoked-jti`
    /// (needs `--redis-url`; tokens without a `jti` are then refused too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_list: Option<RevocationList>,
}

fn default_algorithms() -> Vec<JwtAlgorithm> {
    vec![JwtAlgorithm::RS256]
}

#[derive(JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

#[derive(JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationList {
    Redis,
}

#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardAuth {
    /// The authorization service (http:// or https://), asked with a `GET`: 2xx lets the
    /// request through, 401/403 are passed to the client, and so is a 3xx redirect with a
    /// `Location` (to a sign-in page); anything else (or no answer) is a 503.
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 2048))]
    pub url: String,
    /// How long to wait for its answer: `500ms`, `2s` (at most 60 s).
    #[serde(default = "default_forward_timeout")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,4}(ms|s)$"))]
    pub timeout: String,
    /// Request headers sent to the service (the request itself always goes, as
    /// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For` and `X-Original-URL`).
    /// Hop-by-hop headers and those Sluice sets itself (`Host`, `Content-Length`, `Via`,
    /// `X-Real-IP`, `SSL-Client-*`, any `X-Forwarded-*` or `X-Original-*`) cannot be listed,
    /// here or below.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub request_headers: Vec<HeaderName>,
    /// Headers of its 2xx answer copied onto the upstream request; a client's own copies of
    /// these never reach the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub response_headers: Vec<HeaderName>,
}

fn default_forward_timeout() -> String {
    "500ms".to_owned()
}

/// An HTTP header name.
#[derive(JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeaderName(
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"))] pub String,
);

#[derive(JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Require {
    /// One successful credential method is enough.
    #[default]
    Any,
    /// Every credential method must succeed.
    All,
}
