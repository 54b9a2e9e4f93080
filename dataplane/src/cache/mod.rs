//! The response cache of `Cache` policies (issue 10), built bottom up: the HTTP caching
//! rules first ([`semantics`]), then storage, coalescing and the request path.

pub mod capture;
pub mod semantics;
pub mod store;
