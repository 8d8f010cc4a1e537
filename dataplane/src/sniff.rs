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
}

/// Decides flows from the packets user space sees of them.
pub trait Decider {
    /// What the decider keeps per flow (stored in the flow table).
    type Flow: Default;

    /// Called for each packet of an undecided flow; `flow` already counts it.
    /// `frame` is the whole frame, lent for the duration of the call.
    fn on_packet(
        &mut self,
        state: &mut Self::Flow,
        flow: &FlowState,
        packet: &Decoded,
        frame: &[u8],
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
}

impl Decider for SniffDecider {
    type Flow = Option<FlowInspector>;

    fn on_packet(
        &mut self,
        state: &mut Self::Flow,
        flow: &FlowState,
        packet: &Decoded,
        frame: &[u8],
    ) -> Decision {
        let Some(engine) = &self.engine else {
            return self.count.on_packet(&mut (), flow, packet, frame);
        };
        let inspector = state.get_or_insert_with(|| FlowInspector::new(packet.key.proto, engine));
        let from_client = packet.from_a == flow.client_is_a;
        let (src, dst) = if packet.from_a {
            (packet.key.a(), packet.key.b())
        } else {
            (packet.key.b(), packet.key.a())
        };
        let payload = frame
            .get(packet.payload_offset..packet.payload_offset + packet.payload_len)
            .unwrap_or(&[]);
        let tcp = (packet.key.proto == dpi::flow::PROTO_TCP)
            .then_some((packet.tcp_seq, packet.tcp_flags & dpi::wire::tcp::SYN != 0));
        let view = FlowPacket {
            src: src.ip(),
            dst: dst.ip(),
            sport: src.port(),
            dport: dst.port(),
            from_client,
            payload,
            tcp,
        };
        match inspector.on_packet(engine, &view) {
            Verdict::Allow => Decision::Decide(Action::Pass),
            Verdict::Drop => Decision::Decide(Action::Drop),
            Verdict::InspectMore => Decision::InspectMore,
        }
    }
}

/// What user space knows about one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
}

/// Result of accounting one packet in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The flow is new to this table.
    pub new_flow: bool,
    /// A flow was evicted to make room.
    pub evicted: bool,
    /// A verdict to write to the kernel now.
    pub verdict: Option<Action>,
    /// The packet belongs to a flow already decided.
    pub after_verdict: bool,
    /// Packets of this flow user space has seen so far, this one included.
    pub flow_packets: u32,
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

    /// Accounts a packet and asks the decider when the flow is undecided.
    pub fn on_packet(&mut self, packet: &Decoded, frame: &[u8]) -> Seen {
        let mut seen = Seen {
            new_flow: false,
            evicted: false,
            verdict: None,
            after_verdict: false,
            flow_packets: 0,
        };
        if !self.flows.contains(&packet.key) {
            seen.new_flow = true;
            let state = FlowState {
                client_is_a: packet.from_a,
                ..FlowState::default()
            };
            seen.evicted = self
                .flows
                .push(packet.key, (state, D::Flow::default()))
                .is_some();
        }
        let (flow, decider_state) = self
            .flows
            .get_mut(&packet.key)
            .expect("present: inserted above");
        flow.packets = flow.packets.saturating_add(1);
        flow.bytes += frame.len() as u64;
        seen.flow_packets = flow.packets;
        if flow.decided.is_some() {
            flow.after_verdict = flow.after_verdict.saturating_add(1);
            seen.after_verdict = true;
            return seen;
        }
        if let Decision::Decide(action) = self.decider.on_packet(decider_state, flow, packet, frame)
        {
            flow.decided = Some(action);
            seen.verdict = Some(action);
            // The decider's per-flow state is no longer needed.
            *decider_state = D::Flow::default();
        }
        seen
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
        assert!(table.on_packet(&p, &frame).new_flow);
        assert_eq!(table.on_packet(&p, &frame).verdict, None);
        let third = table.on_packet(&p, &frame);
        assert_eq!(third.verdict, Some(Action::Pass));
        assert_eq!(third.flow_packets, 3);
        let late = table.on_packet(&p, &frame);
        assert!(late.after_verdict && late.verdict.is_none());
        let state = table.get(&p.key).unwrap();
        assert_eq!(
            (state.packets, state.after_verdict, state.bytes),
            (4, 1, 240)
        );
    }

    #[test]
    fn unlimited_never_decides_and_table_stays_bounded() {
        let mut table = FlowTable::new(NonZeroUsize::new(4).unwrap(), PacketCount { limit: None });
        let mut evictions = 0;
        for sport in 0..100 {
            for _ in 0..20 {
                let seen = table.on_packet(&packet(sport), &[0; 64]);
                assert_eq!(seen.verdict, None);
                evictions += usize::from(seen.evicted);
            }
        }
        assert_eq!(table.len(), 4);
        assert_eq!(evictions, 96);
    }
}
