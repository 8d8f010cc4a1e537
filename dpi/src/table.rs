//! A bounded flow table for one worker (no locks, no sharing): flows keyed by
//! [`FlowKey`], in least-recently-seen order, with idle timeouts that depend
//! on the flow's state (TCP established, TCP closing after FIN/RST, UDP and
//! other) and a hard capacity. A flow leaves the table by timeout or, when the
//! table is full, by eviction of the least recently seen one; either way the
//! caller gets the entry back with the reason, so it can write a flow record.
//!
//! Memory is `capacity × (entry + key + ~64 B of LRU bookkeeping)` at most,
//! whatever the traffic: a flood of new flows evicts old ones.

use std::{num::NonZeroUsize, time::Duration};

use lru::LruCache;
use serde::Serialize;

use crate::flow::{FlowKey, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{FIN, RST};

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

/// A flow in the table.
#[derive(Clone, Debug)]
pub struct Entry<V> {
    pub value: V,
    /// Time of the first and last packet, in the caller's clock (ns).
    pub first_ns: u64,
    pub last_ns: u64,
    /// A FIN or RST was seen.
    pub closing: bool,
}

/// The table.
pub struct FlowTable<V> {
    flows: LruCache<FlowKey, Entry<V>>,
    timeouts: Timeouts,
}

impl<V> FlowTable<V> {
    pub fn new(capacity: NonZeroUsize, timeouts: Timeouts) -> Self {
        FlowTable {
            flows: LruCache::new(capacity),
            timeouts,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.flows.cap().get()
    }

    /// The entry of `key`, created with `make` if absent, marked seen at
    /// `now_ns`. Returns the flow evicted to make room, if one was.
    pub fn touch(
        &mut self,
        key: FlowKey,
        now_ns: u64,
        tcp_flags: u8,
        make: impl FnOnce() -> V,
    ) -> (&mut Entry<V>, Option<(FlowKey, Entry<V>)>) {
        let mut evicted = None;
        if !self.flows.contains(&key) {
            let entry = Entry {
                value: make(),
                first_ns: now_ns,
                last_ns: now_ns,
                closing: false,
            };
            evicted = self.flows.push(key, entry).filter(|(k, _)| *k != key);
        }
        let entry = self.flows.get_mut(&key).expect("present: inserted above");
        entry.last_ns = entry.last_ns.max(now_ns);
        if tcp_flags & (FIN | RST) != 0 {
            entry.closing = true;
        }
        (entry, evicted)
    }

    /// Removes the flows idle past their timeout at `now_ns`, least recently
    /// seen first, each with why it ended (closed after a FIN or RST, or
    /// timed out). Stops at the first flow still within its timeout, so a
    /// long-timeout flow at the tail delays shorter ones behind it a little:
    /// a bound on work per call, not on precision.
    pub fn expire(&mut self, now_ns: u64) -> Vec<(FlowKey, Entry<V>, EndReason)> {
        let mut expired = Vec::new();
        while let Some((key, entry)) = self.flows.peek_lru() {
            let idle = now_ns.saturating_sub(entry.last_ns);
            if idle <= self.timeouts.for_flow(key.proto, entry.closing) {
                break;
            }
            let closing = entry.closing && key.proto == PROTO_TCP;
            if let Some((key, entry)) = self.flows.pop_lru() {
                let reason = if closing {
                    EndReason::Closed
                } else {
                    EndReason::Timeout
                };
                expired.push((key, entry, reason));
            }
        }
        expired
    }

    /// Removes and returns every flow (least recently seen first).
    pub fn drain(&mut self) -> Vec<(FlowKey, Entry<V>)> {
        let mut all = Vec::with_capacity(self.flows.len());
        while let Some(e) = self.flows.pop_lru() {
            all.push(e);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, proto: u8) -> FlowKey {
        FlowKey::new(
            format!("198.18.0.1:{port}").parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
            proto,
            0,
        )
        .0
    }

    const S: u64 = 1_000_000_000;

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

    #[test]
    fn capacity_evicts_least_recently_seen() {
        let mut t = FlowTable::new(NonZeroUsize::new(2).unwrap(), Timeouts::default());
        t.touch(key(1, 17), 0, 0, || 1);
        t.touch(key(2, 17), 1, 0, || 2);
        t.touch(key(1, 17), 2, 0, || 99); // refresh flow 1
        let (_, evicted) = t.touch(key(3, 17), 3, 0, || 3);
        assert_eq!(evicted.map(|(k, e)| (k, e.value)), Some((key(2, 17), 2)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn timeouts_by_state() {
        let timeouts = Timeouts {
            tcp: Duration::from_secs(100),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            other: Duration::from_secs(30),
        };
        let mut t = FlowTable::new(NonZeroUsize::new(16).unwrap(), timeouts);
        t.touch(key(1, 17), 0, 0, || "udp");
        t.touch(key(2, PROTO_TCP), 0, 0, || "tcp");
        t.touch(key(3, PROTO_TCP), 0, FIN, || "closing");
        assert!(t.expire(5 * S).is_empty());
        // at 31 s: UDP (30 s) and closing TCP (10 s) are gone; established TCP stays
        let touched_order_expired: Vec<_> = t
            .expire(31 * S)
            .into_iter()
            .map(|(_, e, _)| e.value)
            .collect();
        assert_eq!(
            touched_order_expired,
            vec!["udp"],
            "stops at the established TCP flow, next in LRU order"
        );
        t.touch(key(2, PROTO_TCP), 31 * S, 0, || "tcp");
        let rest: Vec<_> = t
            .expire(45 * S)
            .into_iter()
            .map(|(_, e, reason)| (e.value, reason))
            .collect();
        assert_eq!(rest, vec![("closing", EndReason::Closed)]);
        assert_eq!(t.drain().len(), 1);
    }

    #[test]
    fn a_flood_stays_within_capacity() {
        let mut t = FlowTable::new(NonZeroUsize::new(1000).unwrap(), Timeouts::default());
        let mut evicted = 0;
        for i in 0..50_000u32 {
            let k = FlowKey::new(
                format!(
                    "198.18.{}.{}:{}",
                    (i >> 8) & 0xff,
                    i & 0xff,
                    1000 + (i >> 16)
                )
                .parse()
                .unwrap(),
                "198.19.0.1:53".parse().unwrap(),
                17,
                0,
            )
            .0;
            evicted += usize::from(t.touch(k, u64::from(i), 0, || ()).1.is_some());
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(evicted, 49_000);
    }
}
