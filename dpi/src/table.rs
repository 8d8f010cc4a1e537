//! Flow lifetimes, one set for the live workers and for `inspect`: idle
//! timeouts by transport and TCP state, and why a flow ended. The flow
//! table itself is [`crate::engine::FlowTable`].

use std::time::Duration;

use serde::Serialize;

use crate::flow::{PROTO_TCP, PROTO_UDP};

/// Idle timeouts by transport and TCP state: one set, for the live workers
/// and for `inspect` alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP flows with no FIN or RST seen.
    pub tcp: Duration,
    /// TCP flows after a FIN or RST.
    pub tcp_closing: Duration,
    pub udp: Duration,
    /// ICMP and every other IP protocol.
    pub other: Duration,
}

impl Default for Timeouts {
    /// Suricata's defaults for established flows (TCP 600 s, UDP 300 s),
    /// shortened for closing TCP and for ICMP and the rest (30 s).
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(600),
            tcp_closing: Duration::from_secs(30),
            udp: Duration::from_secs(300),
            other: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The idle timeout of a flow, in nanoseconds.
    pub fn for_flow(&self, proto: u8, closing: bool) -> u64 {
        let timeout = match proto {
            PROTO_TCP if closing => self.tcp_closing,
            PROTO_TCP => self.tcp,
            PROTO_UDP => self.udp,
            _ => self.other,
        };
        timeout.as_nanos().min(u128::from(u64::MAX)) as u64
    }

    /// How long after its last packet a flow is next looked at, in
    /// nanoseconds. TCP flows are looked at every closing timeout, because a
    /// FIN or RST handled in XDP only shows as a flag on the kernel entry.
    pub fn check_after(&self, proto: u8) -> u64 {
        self.for_flow(proto, proto == PROTO_TCP)
    }
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Idle past its timeout.
    Timeout,
    /// Idle past the closing timeout after a FIN or RST.
    Closed,
    /// Pushed out of the table by a new flow (table full).
    Evicted,
    /// Still there when the data plane stopped (or the capture ended).
    Shutdown,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Closed => "closed",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_transport_and_tcp_state() {
        let t = Timeouts {
            tcp: Duration::from_secs(10),
            tcp_closing: Duration::from_secs(2),
            udp: Duration::from_secs(5),
            other: Duration::from_secs(1),
        };
        assert_eq!(t.for_flow(6, false), 10_000_000_000);
        assert_eq!(t.for_flow(6, true), 2_000_000_000);
        assert_eq!(t.for_flow(17, true), 5_000_000_000, "closing is TCP only");
        assert_eq!(t.for_flow(1, false), 1_000_000_000);
        assert_eq!(t.check_after(6), 2_000_000_000);
    }
}
