//! A consistent-hash ring over the endpoints of one backend.
//!
//! Each endpoint owns `POINTS_PER_WEIGHT * weight` points on a 64-bit ring, placed by hashing
//! its address, so the ring is the same on every replica and an endpoint leaving only moves
//! the keys that it owned.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::snapshot::Endpoint;

/// Points per unit of weight: enough for an even spread with few endpoints.
const POINTS_PER_WEIGHT: u32 = 160;
/// Caps the ring of a heavily weighted endpoint so memory stays bounded.
const MAX_POINTS_PER_ENDPOINT: u32 = 160 * 16;

/// Points sorted by hash; each names an index into the backend's endpoint list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HashRing {
    points: Vec<(u64, u32)>,
}

/// A stable 64-bit hash. `DefaultHasher::new()` uses fixed keys, so every replica running
/// the same build maps a key to the same point.
pub fn stable_hash(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl HashRing {
    pub fn build(endpoints: &[Endpoint]) -> Self {
        let mut points = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            let count = POINTS_PER_WEIGHT
                .saturating_mul(endpoint.weight.max(1))
                .min(MAX_POINTS_PER_ENDPOINT);
            for replica in 0..count {
                points.push((stable_hash((endpoint.addr, replica)), index));
            }
        }
        points.sort_unstable();
        HashRing { points }
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Endpoint indexes in ring order starting at the point that owns `key_hash`, each
    /// index once; callers take the first one that is healthy.
    pub fn walk(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(point, _)| *point < key_hash);
        let (before, after) = self.points.split_at(start.min(self.points.len()));
        let mut seen = Vec::new();
        after
            .iter()
            .chain(before.iter())
            .map(|(_, index)| *index as usize)
            .filter(move |index| {
                if seen.contains(index) {
                    false
                } else {
                    seen.push(*index);
                    true
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::SocketAddr;

    fn endpoints(count: u8) -> Vec<Endpoint> {
        (1..=count)
            .map(|n| Endpoint::new(SocketAddr::from(([127, 0, 0, n], 8080))))
            .collect()
    }

    fn owner(ring: &HashRing, endpoints: &[Endpoint], key: u64) -> SocketAddr {
        let index = ring.walk(stable_hash(key)).next().unwrap();
        endpoints[index].addr
    }

    #[test]
    fn keys_spread_over_all_endpoints() {
        let endpoints = endpoints(4);
        let ring = HashRing::build(&endpoints);
        let mut counts: HashMap<SocketAddr, u32> = HashMap::new();
        for key in 0..10_000u64 {
            *counts.entry(owner(&ring, &endpoints, key)).or_default() += 1;
        }
        assert_eq!(counts.len(), 4);
        for count in counts.values() {
            // An even share is 2,500; 160 points per endpoint keep each within ±30 %.
            assert!((1_750..=3_250).contains(count), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn removing_an_endpoint_only_moves_its_own_keys() {
        let before = endpoints(5);
        let after: Vec<Endpoint> = before
            .iter()
            .copied()
            .filter(|e| e.addr.ip().to_string() != "127.0.0.3")
            .collect();
        let ring_before = HashRing::build(&before);
        let ring_after = HashRing::build(&after);
        let removed: SocketAddr = "127.0.0.3:8080".parse().unwrap();
        let mut moved = 0;
        for key in 0..10_000u64 {
            let old = owner(&ring_before, &before, key);
            let new = owner(&ring_after, &after, key);
            if old != removed {
                assert_eq!(old, new, "key {key} moved although its endpoint stayed");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn weight_scales_the_share() {
        let mut endpoints = endpoints(2);
        endpoints[0].weight = 3;
        let ring = HashRing::build(&endpoints);
        let heavy = (0..10_000u64)
            .filter(|key| owner(&ring, &endpoints, *key) == endpoints[0].addr)
            .count();
        // Expect about 7,500 of 10,000.
        assert!(
            (6_800..=8_200).contains(&heavy),
            "heavy endpoint got {heavy}"
        );
    }

    #[test]
    fn walk_visits_each_endpoint_once() {
        let endpoints = endpoints(3);
        let ring = HashRing::build(&endpoints);
        let mut order: Vec<usize> = ring.walk(42).collect();
        assert_eq!(order.len(), 3);
        order.sort();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(HashRing::build(&[]).walk(1).count(), 0);
    }
}
