//! Sluice's control side: the pure compiler from Kubernetes objects to a routing snapshot,
//! the errors it reports per object, the standalone YAML source and snapshot publishing.

pub mod cluster;
pub mod compile;
pub mod error;
pub mod leader;
pub mod object_key;
pub mod publish;
mod redact;
pub mod standalone;
mod yaml_depth;
