//! Dynamic sniffing: per-flow state in user space and the decision of when a
//! flow has been seen enough that the kernel can take the rest of it.
//!
//! The decision sits behind [`Decider`], so the DPI engine plugs in where
//! [`PacketCount`] stands now. The flow table is per worker (no locks) and
//! bounded: an LRU that evicts the least recently seen flow when full.

use std::num::NonZeroUsize;

use std::sync::Arc;

use dpi::{
    Decoded, FlowKey,
    policy::{Engine, FlowInspector, FlowPacket, Verdict},
    stream::Anomaly,
};
use lru::LruCache;
use xdp_redirect::Action;

/// What a decider says about a flow after a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep sending this flow to user space.
    InspectMore,
    /// Done: the kernel applies this action to the rest of the flow.
    Decide(Action),
    /// Not decided; this segment is one the receiving host discards (bad
    /// checksum, no ACK, outside the window...) and was not inspected:
    /// inline, drop it too.
    Discard(Anomaly),
}

pub use dpi::policy::FlowLabel;

/// Decides flows from the packets user space sees of them.
pub trait Decider {
    /// What the decider keeps per flow (stored in the flow table).
    type Flow: Default;

    /// What to log about the flow (called when it is decided, and when an
    /// undecided flow ends). None: nothing beyond the 5-tuple.
    fn label(&self, _state: &mut Self::Flow) -> Option<FlowLabel> {
        None
    }

    /// Called for each packet of an undecided flow; `flow` already counts it.
    /// `frame` is what user space has of the frame, lent for the duration
    /// of the call; `wire_len` the frame's length (more when the copy was cut).
    fn on_packet(
        &mut self,
        state: &mut Self::Flow,
        flow: &FlowState,
        packet: &Decoded,
        frame: &[u8],
        wire_len: usize,
    ) -> Decision;
}

/// The stand-in decider: PASS after `limit` packets (never, if `None`).
#[derive(Clone, Copy, Debug)]
pub struct PacketCount {
    pub limit: Option<u32>,
}

impl Decider for PacketCount {
    type Flow = ();

    fn on_packet(
        &mut self,
        _: &mut (),
        flow: &FlowState,
        _packet: &Decoded,
        _frame: &[u8],
        _wire_len: usize,
    ) -> Decision {
        match self.limit {
            Some(limit) if flow.packets >= limit => Decision::Decide(Action::Pass),
            _ => Decision::InspectMore,
        }
    }
}

/// The worker's decider: the DPI engine (classifier, rules, policy) when one
/// is configured, else [`PacketCount`].
pub struct SniffDecider {
    pub count: PacketCount,
    pub engine: Option<Arc<Engine>>,
    /// Validate TCP checksums (inline: frames from the wire carry real
    /// ones; host mode's copies of what the host sends carry partial ones).
    pub check_checksums: bool,
}

impl Decider for SniffDecider {
    type Flow = Option<FlowInspector>;

    fn label(&self, state: &mut Self::Flow) -> Option<FlowLabel> {
        state.as_mut().map(FlowInspector::label)
    }

    fn on_packet(
        &mut self,
        state: &mut Self::Flow,
        flow: &FlowState,
        packet: &Decoded,
        frame: &[u8],
        wire_len: usize,
    ) -> Decision {
        let Some(engine) = &self.engine else {
            return self.count.on_packet(&mut (), flow, packet, frame, wire_len);
        };
        let inspector = state.get_or_insert_with(|| FlowInspector::new(packet.key.proto, engine));
        let view = FlowPacket::from_frame(
            frame,
            packet,
            flow.client_is_a,
            wire_len,
            self.check_checksums,
        );
        match inspector.on_packet(engine, &view) {
            Verdict::Allow => Decision::Decide(Action::Pass),
            Verdict::Drop => Decision::Decide(Action::Drop),
            Verdict::InspectMore => match inspector.packet_anomaly() {
                Some(anomaly) => Decision::Discard(anomaly),
                None => Decision::InspectMore,
            },
        }
    }
}

/// A decided flow's packet that reaches user space this long after the
/// verdict was written means the kernel lost the entry (not a packet that was
/// in flight while it was written).
pub const RESTORE_AFTER_NS: u64 = 100_000_000;

/// What user space knows about one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Packets of this flow that reached user space.
    pub packets: u32,
    pub bytes: u64,
    /// The verdict written to the kernel, if any.
    pub decided: Option<Action>,
    /// Packets that reached user space after the verdict was written (in
    /// flight when it was written, or the kernel entry was evicted).
    pub after_verdict: u32,
    /// The flow's first packet came from endpoint A of its key.
    pub client_is_a: bool,
    /// CLOCK_MONOTONIC ns of the first and the latest packet seen in user space.
    pub first_ns: u64,
    pub last_ns: u64,
    /// A TCP FIN or RST was seen in user space.
    pub closing: bool,
    /// When the worker next checks whether the flow is idle (CLOCK_MONOTONIC ns).
    pub check_ns: u64,
    /// When the verdict was last written (or restored) to the kernel.
    pub verdict_ns: u64,
    /// What the decider made of the flow (DPI), once decided or ended.
    pub label: Option<Box<FlowLabel>>,
}

/// Result of accounting one packet in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The flow is new to this table.
    pub new_flow: bool,
    /// A flow evicted to make room (for the flow log).
    pub evicted: Option<(FlowKey, FlowState)>,
    /// A verdict to write to the kernel now.
    pub verdict: Option<Action>,
    /// The packet belongs to a flow already decided (with that decision).
    pub after_verdict: Option<Action>,
    /// The decision is old enough that a packet reaching user space means
    /// the kernel entry is gone (LRU eviction): write it again. Packets in
    /// flight while the verdict was written do not ask for this.
    pub restore: bool,
    /// Packets of this flow user space has seen so far, this one included.
    pub flow_packets: u32,
    /// The packet was not inspected: the receiving host would discard it.
    pub discard: Option<Anomaly>,
}

/// One worker's flow table.
pub struct FlowTable<D: Decider> {
    flows: LruCache<FlowKey, (FlowState, D::Flow)>,
    decider: D,
}

impl<D: Decider> FlowTable<D> {
    pub fn new(capacity: NonZeroUsize, decider: D) -> Self {
        FlowTable {
            flows: LruCache::new(capacity),
            decider,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&FlowState> {
        self.flows.peek(key).map(|(state, _)| state)
    }

    /// The flow's state, without touching its LRU position.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut FlowState> {
        self.flows.peek_mut(key).map(|(state, _)| state)
    }

    /// Accounts a packet seen at `now_ns` (CLOCK_MONOTONIC) and asks the
    /// decider when the flow is undecided. `frame` is what user space has
    /// of the packet, `wire_len` its length (more when the copy was cut).
    pub fn on_packet(
        &mut self,
        packet: &Decoded,
        frame: &[u8],
        wire_len: usize,
        now_ns: u64,
    ) -> Seen {
        let mut seen = Seen {
            new_flow: false,
            evicted: None,
            verdict: None,
            after_verdict: None,
            restore: false,
            flow_packets: 0,
            discard: None,
        };
        if !self.flows.contains(&packet.key) {
            seen.new_flow = true;
            let state = FlowState {
                client_is_a: packet.from_a,
                first_ns: now_ns,
                ..FlowState::default()
            };
            seen.evicted = self
                .flows
                .push(packet.key, (state, D::Flow::default()))
                .map(|(key, (mut state, mut decider_state))| {
                    if state.label.is_none() {
                        state.label = self.decider.label(&mut decider_state).map(Box::new);
                    }
                    (key, state)
                });
        }
        let (flow, decider_state) = self
            .flows
            .get_mut(&packet.key)
            .expect("present: inserted above");
        flow.packets = flow.packets.saturating_add(1);
        flow.bytes += wire_len as u64;
        flow.last_ns = now_ns;
        if packet.tcp_flags & (dpi::wire::tcp::FIN | dpi::wire::tcp::RST) != 0 {
            flow.closing = true;
        }
        seen.flow_packets = flow.packets;
        if let Some(decided) = flow.decided {
            flow.after_verdict = flow.after_verdict.saturating_add(1);
            seen.after_verdict = Some(decided);
            if now_ns.saturating_sub(flow.verdict_ns) >= RESTORE_AFTER_NS {
                seen.restore = true;
                flow.verdict_ns = now_ns;
            }
            return seen;
        }
        match self
            .decider
            .on_packet(decider_state, flow, packet, frame, wire_len)
        {
            Decision::Decide(action) => {
                flow.decided = Some(action);
                flow.verdict_ns = now_ns;
                seen.verdict = Some(action);
                flow.label = self.decider.label(decider_state).map(Box::new);
                // The decider's per-flow state is no longer needed.
                *decider_state = D::Flow::default();
            }
            Decision::Discard(anomaly) => seen.discard = Some(anomaly),
            Decision::InspectMore => {}
        }
        seen
    }

    /// Removes a flow, with what the decider made of it if it was undecided.
    pub fn remove(&mut self, key: &FlowKey) -> Option<FlowState> {
        let (mut state, mut decider_state) = self.flows.pop(key)?;
        if state.label.is_none() {
            state.label = self.decider.label(&mut decider_state).map(Box::new);
        }
        Some(state)
    }

    /// Every flow's key (for the shutdown flush).
    pub fn keys(&self) -> Vec<FlowKey> {
        self.flows.iter().map(|(key, _)| *key).collect()
    }

    /// The `n` flows with the most packets seen in user space.
    pub fn top(&self, n: usize) -> Vec<(FlowKey, FlowState)> {
        let mut all: Vec<(&FlowKey, &FlowState)> = self
            .flows
            .iter()
            .map(|(key, (state, _))| (key, state))
            .collect();
        all.sort_by_key(|(_, state)| std::cmp::Reverse(state.packets));
        all.into_iter()
            .take(n)
            .map(|(key, state)| (*key, state.clone()))
            .collect()
    }

    /// The decider (to swap the DPI engine on a rules reload).
    pub fn decider_mut(&mut self) -> &mut D {
        &mut self.decider
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sport: u16) -> Decoded {
        let (key, from_a) = FlowKey::new(
            format!("198.18.0.1:{sport}").parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
            17,
            0,
        );
        Decoded {
            key,
            from_a,
            payload_offset: 42,
            payload_len: 0,
            tcp_flags: 0,
            tcp_seq: 0,
            l4_offset: 34,
            tcp: Default::default(),
        }
    }

    #[test]
    fn pass_after_k_packets_then_counts_late_ones() {
        let mut table = FlowTable::new(
            NonZeroUsize::new(16).unwrap(),
            PacketCount { limit: Some(3) },
        );
        let p = packet(1000);
        let frame = [0u8; 60];
        assert!(table.on_packet(&p, &frame, frame.len(), 1).new_flow);
        assert_eq!(table.on_packet(&p, &frame, frame.len(), 2).verdict, None);
        let third = table.on_packet(&p, &frame, frame.len(), 3);
        assert_eq!(third.verdict, Some(Action::Pass));
        assert_eq!(third.flow_packets, 3);
        let late = table.on_packet(&p, &frame, frame.len(), 4);
        assert!(late.after_verdict == Some(Action::Pass) && late.verdict.is_none());
        assert!(!late.restore, "in flight while the verdict was written");
        let state = table.get(&p.key).unwrap();
        assert_eq!(
            (state.packets, state.after_verdict, state.bytes),
            (4, 1, 240)
        );
        assert_eq!((state.first_ns, state.last_ns), (1, 4));
        let much_later = 3 + RESTORE_AFTER_NS;
        assert!(
            table.on_packet(&p, &frame, frame.len(), much_later).restore,
            "entry lost: restore"
        );
        assert!(
            !table
                .on_packet(&p, &frame, frame.len(), much_later + 1)
                .restore,
            "once per RESTORE_AFTER_NS"
        );
    }

    #[test]
    fn unlimited_never_decides_and_table_stays_bounded() {
        let mut table = FlowTable::new(NonZeroUsize::new(4).unwrap(), PacketCount { limit: None });
        let mut evictions = 0;
        for sport in 0..100 {
            for _ in 0..20 {
                let seen = table.on_packet(&packet(sport), &[0; 64], 64, 0);
                assert_eq!(seen.verdict, None);
                evictions += usize::from(seen.evicted.is_some());
            }
        }
        assert_eq!(table.len(), 4);
        assert_eq!(evictions, 96);
    }
}
