//! Rust types of the `sluice.dev` custom resources. RateLimit, Auth and Cache land with their issues.
