//! The one conversion between `dpi`'s flow key and the kernel's
//! `struct dp_flow_key`. Both follow the same ordering rule (see dp_abi.h);
//! the root test `tests/key_agreement.rs` checks they agree on real frames.

use dpi::{
    engine::{KernelEntry, VerdictStore},
    policy::Verdict,
};
use xdp_redirect::{
    Action, FlowKey as KernelKey, VerdictMap, abi::dp_family,
    abi::dp_verdict_flags::DP_VERDICT_F_CLOSING,
};

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

/// The kernel's verdict map as the flow engine's [`VerdictStore`]: keys
/// converted, and "allow" written as what it means in this mode (`pass` to
/// the stack, `forward` to the peer port, or `drop` for a mirror port's
/// copies).
pub struct KernelVerdicts {
    pub map: VerdictMap,
    pub allow: Action,
}

impl KernelVerdicts {
    fn action(&self, verdict: Verdict) -> Action {
        match verdict {
            Verdict::Drop => Action::Drop,
            _ => self.allow,
        }
    }
}

impl VerdictStore for KernelVerdicts {
    type Error = xdp_redirect::Error;

    fn get(&self, key: &dpi::FlowKey) -> Result<Option<KernelEntry>, Self::Error> {
        Ok(self.map.get(&to_kernel(key))?.map(|v| KernelEntry {
            verdict: if v.action == Action::Drop.code() {
                Verdict::Drop
            } else {
                Verdict::Allow
            },
            packets_from: v.packets,
            bytes_from: v.bytes,
            last_seen_ns: v.last_seen_ns,
            closing: v.flags & DP_VERDICT_F_CLOSING != 0,
        }))
    }

    fn remove(&mut self, key: &dpi::FlowKey) -> Result<(), Self::Error> {
        self.map.remove(&to_kernel(key))
    }

    fn set_drops(&mut self, keys: &[dpi::FlowKey]) -> Result<usize, Self::Error> {
        let keys: Vec<KernelKey> = keys.iter().map(to_kernel).collect();
        self.map.set_batch(&keys, Action::Drop)
    }

    fn set_if_absent(&mut self, key: &dpi::FlowKey, verdict: Verdict) -> Result<bool, Self::Error> {
        let action = self.action(verdict);
        self.map.set_if_absent(&to_kernel(key), action)
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
