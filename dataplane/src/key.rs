//! The one conversion between `dpi`'s flow key and the kernel's
//! `struct dp_flow_key`. Both follow the same ordering rule (see dp_abi.h);
//! the root test `tests/key_agreement.rs` checks they agree on real frames.

use xdp_redirect::{FlowKey as KernelKey, abi::dp_family};

/// The kernel map key for a flow.
pub fn to_kernel(key: &dpi::FlowKey) -> KernelKey {
    KernelKey {
        addr_a: key.addr_a,
        addr_b: key.addr_b,
        port_a: key.port_a.to_be(),
        port_b: key.port_b.to_be(),
        family: if key.ipv6 {
            dp_family::DP_FAMILY_IPV6
        } else {
            dp_family::DP_FAMILY_IPV4
        } as u8,
        proto: key.proto,
        vlan: key.vlan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_go_to_network_order() {
        let (k, _) = dpi::FlowKey::new(
            "198.18.0.1:4660".parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
            6,
            7,
        );
        let kk = to_kernel(&k);
        assert_eq!(kk.port_a.to_ne_bytes(), [0x12, 0x34]);
        assert_eq!(kk.port_b.to_ne_bytes(), [0, 80]);
        assert_eq!((kk.family, kk.proto, kk.vlan), (2, 6, 7));
        assert_eq!(kk.addr_a[..4], [198, 18, 0, 1]);
    }
}
