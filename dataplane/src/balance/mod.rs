//! Load balancing across the endpoints of a backend.

mod ring;

pub use ring::{HashRing, stable_hash};
