//! A development aid for running against a real API server on one machine.
//!
//! The API server refuses loopback addresses in EndpointSlices, so a test cluster without
//! pods cannot point a Service at a backend on 127.0.0.x. The e2e harness writes
//! documentation addresses (192.0.2.0/24) instead, and `--dev-remap-endpoints
//! 192.0.2.0/24=127.0.0.0/24` maps them back, keeping the host part, before compiling.
//! Nothing else in Sluice knows about it, and it is off unless the flag is given.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Maps IPv4 endpoint addresses from one network to another of the same size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointRemap {
    from: Ipv4Addr,
    to: Ipv4Addr,
    prefix: u8,
}

impl EndpointRemap {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The mapped address, or `None` when `address` is outside the `from` network.
    pub fn map(&self, address: Ipv4Addr) -> Option<Ipv4Addr> {
        let mask = self.mask();
        (u32::from(address) & mask == u32::from(self.from) & mask)
            .then(|| Ipv4Addr::from((u32::from(self.to) & mask) | (u32::from(address) & !mask)))
    }

    /// Rewrites the addresses of IPv4 slices in place.
    pub fn apply(&self, slices: &mut [EndpointSlice]) {
        for slice in slices
            .iter_mut()
            .filter(|slice| slice.address_type == "IPv4")
        {
            for address in slice
                .endpoints
                .iter_mut()
                .flat_map(|endpoint| endpoint.addresses.iter_mut())
            {
                if let Ok(IpAddr::V4(ip)) = address.parse::<IpAddr>()
                    && let Some(mapped) = self.map(ip)
                {
                    *address = mapped.to_string();
                }
            }
        }
    }
}

/// Why a `FROM/LEN=TO/LEN` remap does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected FROM/LEN=TO/LEN with two IPv4 networks of the same length")]
pub struct RemapSyntax(String);

impl FromStr for EndpointRemap {
    type Err = RemapSyntax;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = || RemapSyntax(text.to_owned());
        let network = |part: &str| -> Option<(Ipv4Addr, u8)> {
            let (address, prefix) = part.split_once('/')?;
            let prefix: u8 = prefix.parse().ok().filter(|prefix| *prefix <= 32)?;
            Some((address.parse().ok()?, prefix))
        };
        let (from, to) = text.split_once('=').ok_or_else(wrong)?;
        let (from, from_prefix) = network(from).ok_or_else(wrong)?;
        let (to, to_prefix) = network(to).ok_or_else(wrong)?;
        if from_prefix != to_prefix {
            return Err(wrong());
        }
        Ok(EndpointRemap {
            from,
            to,
            prefix: from_prefix,
        })
    }
}

impl fmt::Display for EndpointRemap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}={}/{}",
            self.from, self.prefix, self.to, self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_the_host_part_into_the_target_network() {
        let remap: EndpointRemap = "192.0.2.0/24=127.0.0.0/24".parse().expect("valid");
        assert_eq!(
            remap.map(Ipv4Addr::new(192, 0, 2, 111)),
            Some(Ipv4Addr::new(127, 0, 0, 111))
        );
        assert_eq!(remap.map(Ipv4Addr::new(192, 0, 3, 1)), None);
        assert_eq!(remap.to_string(), "192.0.2.0/24=127.0.0.0/24");
    }

    #[test]
    fn rejects_mismatched_or_malformed_networks() {
        for bad in [
            "192.0.2.0/24=127.0.0.0/8",
            "192.0.2.0/24",
            "192.0.2.0=127.0.0.0",
            "192.0.2.0/33=127.0.0.0/33",
            "2001:db8::/64=::1/64",
        ] {
            assert!(bad.parse::<EndpointRemap>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rewrites_only_ipv4_slices_and_only_matching_addresses() {
        let slice = |address_type: &str, addresses: &[&str]| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": "web-0", "namespace": "shop"},
                "addressType": address_type,
                "endpoints": [{"addresses": addresses}],
            }))
            .expect("slice")
        };
        let mut slices = vec![
            slice("IPv4", &["192.0.2.7", "10.0.0.7"]),
            slice("FQDN", &["192.0.2.7"]),
        ];
        let remap: EndpointRemap = "192.0.2.0/24=127.0.0.0/24".parse().expect("valid");
        remap.apply(&mut slices);
        assert_eq!(slices[0].endpoints[0].addresses, ["127.0.0.7", "10.0.0.7"]);
        assert_eq!(slices[1].endpoints[0].addresses, ["192.0.2.7"]);
    }
}
