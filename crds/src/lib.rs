//! Rust types of the `sluice.dev` custom resources, and their CRDs.
//!
//! These are wire types: what users write and what the API server stores. The controller
//! validates them into its own types before anything reaches a snapshot. Every policy kind
//! shares [`PolicyStatus`], so status handling is written once.

mod auth;
mod cache;
mod rate_limit;
mod status;

pub use auth::{
    ApiKeyAuth, Auth, AuthSpec, BasicAuth, Cidr, ForwardAuth, HeaderName, JwtAlgorithm, JwtAuth,
    Require, RevocationList, SecretRef,
};
pub use cache::{
    Cache, CacheBypass, CacheKeyPart, CacheMemory, CacheMethod, CacheRedis, CacheSpec, CookieName,
};
pub use rate_limit::{
    KeyPart, Limit, OnBackendFailure, RateLimit, RateLimitBackend, RateLimitHeaders, RateLimitSpec,
};
pub use status::{PolicyCondition, PolicyStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Sluice custom resource.
pub const GROUP: &str = "sluice.dev";

/// Every CRD Sluice defines, in a fixed order.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![RateLimit::crd(), Auth::crd(), Cache::crd()]
}

/// The CRDs as one multi-document YAML stream, as `sluice crds` prints it and as
/// `manifests/crds/` holds it.
pub fn definitions_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for definition in definitions() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&definition)?);
    }
    Ok(out)
}
