//! Sluice's data plane: the routing snapshot types and everything on the request path.
//!
//! This crate must never depend on kube or k8s-openapi; CI checks `cargo tree`.

pub mod balance;
pub mod snapshot;
