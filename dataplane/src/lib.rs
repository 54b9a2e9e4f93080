//! Sluice's data plane: the routing snapshot types and everything on the request path.
//!
//! This crate must never depend on kube or k8s-openapi; CI checks `cargo tree`.

pub mod admin;
pub mod auth;
pub mod balance;
pub mod cache;
pub mod canonical;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
