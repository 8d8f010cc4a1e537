//! The flow engine: per-flow state in user space, the decision of when the
//! kernel can take the rest of a flow, and the bookkeeping of the verdicts
//! written to the kernel (behind [`VerdictStore`]: the BPF map live, a
//! [`MemoryStore`] in tests and offline).
//!
//! The decision sits behind [`Decider`]: the DPI engine ([`InspectDecider`]:
//! classifier, stream, rules, policy) or a packet count ([`PacketCount`]).
//! The flow table is per worker (no locks) and bounded: an LRU that evicts
//! the least recently seen flow when full.

use std::{collections::HashMap, num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use crate::{
    Decoded, FlowKey,
    policy::{Engine, FlowInspector, FlowPacket, Verdict},
    stream::Anomaly,
};

/// What a decider says about a flow after a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep sending this flow to user space.
    InspectMore,
    /// Done: the kernel applies this verdict to the rest of the flow.
    Decide(Verdict),
    /// Dropped by a `reject` rule: as `Decide(Drop)`, and inline the ends
    /// are told ([`crate::reject`]).
    Reject(crate::reject::Reject),
    /// Not decided; this segment is one the receiving host discards (bad
    /// checksum, no ACK, outside the window...) and was not inspected:
    /// inline, drop it too.
    Discard(Anomaly),
}

pub use crate::policy::FlowLabel;

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
            Some(limit) if flow.packets >= limit => Decision::Decide(Verdict::Allow),
            _ => Decision::InspectMore,
        }
    }
}

/// An alert as a rule raised it, with the rule's identity and wording
/// (resolved when it fired, so a rules reload later does not change it).
#[derive(Clone, Debug)]
pub struct Alert {
    pub sid: u32,
    pub gid: u32,
    pub rev: u32,
    /// The rule's `msg`.
    pub msg: String,
    /// The description of its `classtype`.
    pub category: Option<&'static str>,
    pub severity: u8,
    pub action: crate::rules::Action,
    /// The flow's protocol when it fired.
    pub protocol: crate::Protocol,
    /// What the rule read (direction, application fields).
    pub fired: crate::policy::Fired,
}

/// The worker's decider: the DPI engine (classifier, rules, policy) when one
/// is configured, else [`PacketCount`].
pub struct InspectDecider {
    pub count: PacketCount,
    pub engine: Option<Arc<Engine>>,
    /// Validate TCP checksums (inline: frames from the wire carry real
    /// ones; host mode's copies of what the host sends carry partial ones).
    pub check_checksums: bool,
    /// Keep the alerts each packet raises in [`InspectDecider::alerts`]
    /// (for an event log); the caller takes them after each packet.
    pub collect_alerts: bool,
    pub alerts: Vec<Alert>,
    /// With `collect_alerts`: the transactions each packet brought (eve's
    /// `http`, `dns` and `tls` events), taken by the caller too.
    pub transactions: Vec<crate::policy::Transaction>,
}

impl InspectDecider {
    pub fn new(count: PacketCount, engine: Option<Arc<Engine>>, check_checksums: bool) -> Self {
        InspectDecider {
            count,
            engine,
            check_checksums,
            collect_alerts: false,
            alerts: Vec::new(),
            transactions: Vec::new(),
        }
    }
}

/// Counts by sender, [endpoint A, endpoint B] of a flow's key, as (to
/// server, to client) for a flow whose client is A when `client_is_a`.
fn oriented(packets: [u64; 2], bytes: [u64; 2], client_is_a: bool) -> ([u64; 2], [u64; 2]) {
    if client_is_a {
        (packets, bytes)
    } else {
        ([packets[1], packets[0]], [bytes[1], bytes[0]])
    }
}

impl FlowState {
    /// Packets and bytes user space saw (to server, to client).
    pub fn by_direction(&self) -> ([u64; 2], [u64; 2]) {
        oriented(self.packets_from, self.bytes_from, self.client_is_a)
    }

    /// The same with what the kernel carried under `kernel`, the flow's
    /// verdict entry, added: the whole flow.
    pub fn with_kernel(&self, kernel: Option<&KernelEntry>) -> ([u64; 2], [u64; 2]) {
        let (mut packets, mut bytes) = self.by_direction();
        if let Some(k) = kernel {
            let (p, b) = k.by_direction(self.client_is_a);
            for i in 0..2 {
                packets[i] += p[i];
                bytes[i] += b[i];
            }
        }
        (packets, bytes)
    }
}

impl Decider for InspectDecider {
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
        let collect = self.collect_alerts;
        let inspector = state.get_or_insert_with(|| {
            let mut inspector = FlowInspector::new(packet.key.proto, engine);
            inspector.collect_events = collect;
            inspector
        });
        let view = FlowPacket::from_frame(
            frame,
            packet,
            flow.client_is_a,
            wire_len,
            self.check_checksums,
            flow.last_ns,
        );
        let verdict = inspector.on_packet(engine, &view);
        // (the inspector keeps these only when collecting)
        let fired = inspector.take_fired();
        if collect {
            self.transactions.extend(inspector.take_transactions());
        }
        if !fired.is_empty() {
            let protocol = inspector
                .classification()
                .map_or(crate::Protocol::Unknown, |c| c.protocol);
            let rules = engine.rules.as_ref();
            for fired in fired {
                let Some(rule) = rules.and_then(|r| r.rule(fired.rule)) else {
                    continue;
                };
                self.alerts.push(Alert {
                    sid: rule.sid,
                    gid: rule.gid,
                    rev: rule.rev,
                    msg: rule.msg.clone(),
                    category: rule.class.map(|c| c.description),
                    severity: rule.severity(),
                    action: rule.action,
                    protocol: fired.app.as_ref().map_or(protocol, |a| a.protocol),
                    fired,
                });
            }
        }
        match verdict {
            Verdict::Allow => Decision::Decide(Verdict::Allow),
            Verdict::Drop => match inspector.reject() {
                Some(kind) => Decision::Reject(kind),
                None => Decision::Decide(Verdict::Drop),
            },
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
    /// The same by the endpoint that sent them: [A, B] of the flow's key.
    pub packets_from: [u64; 2],
    pub bytes_from: [u64; 2],
    /// The verdict written to the kernel, if any.
    pub decided: Option<Verdict>,
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
    /// Load balancer with inspection: the backend the flow's packets went to.
    pub backend: Option<std::net::IpAddr>,
}

/// Result of accounting one packet in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The flow is new to this table.
    pub new_flow: bool,
    /// A flow evicted to make room (for the flow log).
    pub evicted: Option<(FlowKey, FlowState)>,
    /// A verdict to write to the kernel now.
    pub verdict: Option<Verdict>,
    /// The packet belongs to a flow already decided (with that decision).
    pub after_verdict: Option<Verdict>,
    /// The decision is old enough that a packet reaching user space means
    /// the kernel entry is gone (LRU eviction): write it again. Packets in
    /// flight while the verdict was written do not ask for this.
    pub restore: bool,
    /// Packets of this flow user space has seen so far, this one included.
    pub flow_packets: u32,
    /// The packet was not inspected: the receiving host would discard it.
    pub discard: Option<Anomaly>,
    /// A `reject` rule dropped the flow at this packet: answer it so.
    pub reject: Option<crate::reject::Reject>,
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
            reject: None,
        };
        if !self.flows.contains(&packet.key) {
            seen.new_flow = true;
            let state = FlowState {
                client_is_a: packet.from_a != sent_by_server(packet, frame),
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
        let from = usize::from(!packet.from_a);
        flow.packets_from[from] += 1;
        flow.bytes_from[from] += wire_len as u64;
        flow.last_ns = now_ns;
        if packet.tcp_flags & (crate::wire::tcp::FIN | crate::wire::tcp::RST) != 0 {
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
            decision @ (Decision::Decide(_) | Decision::Reject(_)) => {
                let action = match decision {
                    Decision::Reject(kind) => {
                        seen.reject = Some(kind);
                        Verdict::Drop
                    }
                    Decision::Decide(action) => action,
                    _ => unreachable!("matched above"),
                };
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

    /// Ends the flows idle past their timeout at `now_ns` when no kernel
    /// holds any of their packets (offline, or with no verdict store),
    /// least recently seen first, each with what the decider made of it and
    /// why it ended. Stops at the first flow still within its timeout (a
    /// bound on work per call, not on precision).
    pub fn expire_idle(
        &mut self,
        timeouts: &crate::table::Timeouts,
        now_ns: u64,
    ) -> Vec<(FlowKey, FlowState, crate::table::EndReason)> {
        let mut ended = Vec::new();
        while let Some((key, (state, _))) = self.flows.peek_lru() {
            let Expiry::End { reason, .. } = expiry(key, state, None, timeouts, now_ns) else {
                break;
            };
            let key = *key;
            if let Some(state) = self.remove(&key) {
                ended.push((key, state, reason));
            }
        }
        ended
    }

    /// Every flow's key (for the shutdown flush).
    /// Every flow, most recently seen first.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowState)> {
        self.flows.iter().map(|(key, (state, _))| (key, state))
    }

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

/// Name of an IP protocol in flow records (`l4`).
pub fn l4_name(proto: u8) -> String {
    match proto {
        crate::flow::PROTO_TCP => "tcp".into(),
        crate::flow::PROTO_UDP => "udp".into(),
        crate::flow::PROTO_ICMP => "icmp".into(),
        crate::flow::PROTO_ICMPV6 => "ipv6-icmp".into(),
        2 => "igmp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        112 => "vrrp".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

/// What every flow record says of a flow, live (`--flow-log`) or offline
/// (`dataplane inspect`), in the same fields: who talked to whom, what it
/// was, what was decided.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FlowSummary {
    /// The side that sent the flow's first packet seen in user space.
    pub src: std::net::IpAddr,
    pub sport: u16,
    pub dst: std::net::IpAddr,
    pub dport: u16,
    /// `"tcp"`, `"udp"`, `"icmp"`, `"ipv6-icmp"` or the protocol number.
    pub l4: String,
    pub vlan: u16,
    #[serde(flatten)]
    pub label: FlowLabel,
    /// `"allow"`, `"drop"`, or `"undecided"` (inspected to its end).
    pub verdict: &'static str,
}

impl FlowState {
    /// The flow's summary for its record (`label` is taken).
    pub fn summary(&mut self, key: &FlowKey) -> FlowSummary {
        let (client, server) = if self.client_is_a {
            (key.a(), key.b())
        } else {
            (key.b(), key.a())
        };
        FlowSummary {
            src: client.ip(),
            sport: client.port(),
            dst: server.ip(),
            dport: server.port(),
            l4: l4_name(key.proto),
            vlan: key.vlan,
            label: self.label.take().map(|l| *l).unwrap_or_default(),
            verdict: self.decided.map_or("undecided", Verdict::name),
        }
    }
}

/// Whether a flow's first packet is one only a server sends, so that the
/// client is the other side (as Suricata reverses such a flow): a TCP
/// SYN/ACK, an HTTP response or a TLS ServerHello (a flow picked up
/// mid-way), or a DNS, mDNS or LLMNR response from its port.
pub fn sent_by_server(packet: &Decoded, frame: &[u8]) -> bool {
    use crate::wire::tcp::{ACK, SYN};
    let payload = frame
        .get(packet.payload_offset..)
        .map_or(&[][..], |p| &p[..p.len().min(packet.payload_len)]);
    match packet.key.proto {
        crate::flow::PROTO_TCP => {
            packet.tcp_flags & (SYN | ACK) == SYN | ACK
                || payload.starts_with(b"HTTP/1.")
                || (payload.len() > 5 && payload[..2] == [22, 3] && payload[5] == 2)
        }
        crate::flow::PROTO_UDP => {
            let (src, dst) = if packet.from_a {
                (packet.key.port_a, packet.key.port_b)
            } else {
                (packet.key.port_b, packet.key.port_a)
            };
            let dns = |port: u16| matches!(port, 53 | 5353 | 5355);
            // the QR bit of the DNS header: a response
            dns(src)
                && !dns(dst)
                && frame
                    .get(packet.payload_offset + 2)
                    .is_some_and(|flags| flags & 0x80 != 0)
        }
        _ => false,
    }
}

/// What the kernel holds for a decided flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    /// `Allow` (pass or forward, by mode) or `Drop`.
    pub verdict: Verdict,
    /// Packets and bytes the kernel handled under the entry, by sender:
    /// [endpoint A, endpoint B] of the flow's key.
    pub packets_from: [u64; 2],
    pub bytes_from: [u64; 2],
    /// CLOCK_MONOTONIC ns of the last packet the kernel handled.
    pub last_seen_ns: u64,
    /// A FIN or RST went through the kernel.
    pub closing: bool,
}

impl KernelEntry {
    pub fn packets(&self) -> u64 {
        self.packets_from[0] + self.packets_from[1]
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_from[0] + self.bytes_from[1]
    }

    /// Packets and bytes (to server, to client) of a flow whose client is
    /// endpoint A of its key when `client_is_a`.
    pub fn by_direction(&self, client_is_a: bool) -> ([u64; 2], [u64; 2]) {
        oriented(self.packets_from, self.bytes_from, client_is_a)
    }
}

/// Where the verdicts go: the kernel's verdict map live (an LRU map: it may
/// lose entries), a [`MemoryStore`] in tests.
pub trait VerdictStore {
    type Error: std::fmt::Display;
    /// The entry of a flow, if any.
    fn get(&self, key: &FlowKey) -> Result<Option<KernelEntry>, Self::Error>;
    /// Removes a flow's entry (the flow goes back to user space).
    fn remove(&mut self, key: &FlowKey) -> Result<(), Self::Error>;
    /// Writes "drop" for every key, over whatever is there, in one go;
    /// returns how many were written.
    fn set_drops(&mut self, keys: &[FlowKey]) -> Result<usize, Self::Error>;
    /// Writes `verdict` unless the flow has an entry; returns whether it
    /// was written.
    fn set_if_absent(&mut self, key: &FlowKey, verdict: Verdict) -> Result<bool, Self::Error>;
}

/// A verdict store in memory, bounded like the kernel's LRU map (the oldest
/// entry goes when full), for tests and offline runs.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    entries: HashMap<FlowKey, (KernelEntry, u64)>,
    capacity: usize,
    writes: u64,
}

impl MemoryStore {
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            writes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the kernel does for a decided flow's packet: counts it, stamps
    /// it, flags a FIN or RST. False if the flow has no entry (the packet
    /// would go to user space).
    pub fn kernel_packet(
        &mut self,
        key: &FlowKey,
        len: u64,
        now_ns: u64,
        fin_or_rst: bool,
        from_a: bool,
    ) -> bool {
        match self.entries.get_mut(key) {
            Some((e, _)) => {
                e.packets_from[usize::from(!from_a)] += 1;
                e.bytes_from[usize::from(!from_a)] += len;
                e.last_seen_ns = now_ns;
                e.closing |= fin_or_rst;
                true
            }
            None => false,
        }
    }

    /// Loses an entry, as the kernel's LRU map does under pressure.
    pub fn evict(&mut self, key: &FlowKey) {
        self.entries.remove(key);
    }

    fn insert(&mut self, key: FlowKey, verdict: Verdict) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, order))| *order)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.writes += 1;
        let entry = KernelEntry {
            verdict,
            packets_from: [0; 2],
            bytes_from: [0; 2],
            last_seen_ns: 0,
            closing: false,
        };
        self.entries.insert(key, (entry, self.writes));
    }
}

impl VerdictStore for MemoryStore {
    type Error = std::convert::Infallible;

    fn get(&self, key: &FlowKey) -> Result<Option<KernelEntry>, Self::Error> {
        Ok(self.entries.get(key).map(|(e, _)| *e))
    }

    fn remove(&mut self, key: &FlowKey) -> Result<(), Self::Error> {
        self.entries.remove(key);
        Ok(())
    }

    fn set_drops(&mut self, keys: &[FlowKey]) -> Result<usize, Self::Error> {
        for key in keys {
            self.insert(*key, Verdict::Drop);
        }
        Ok(keys.len())
    }

    fn set_if_absent(&mut self, key: &FlowKey, verdict: Verdict) -> Result<bool, Self::Error> {
        if self.entries.contains_key(key) {
            return Ok(false);
        }
        self.insert(*key, verdict);
        Ok(true)
    }
}

/// The verdicts of one batch of packets, written together after it.
#[derive(Clone, Debug, Default)]
pub struct PendingVerdicts {
    /// Flows just decided "drop": overwrite whatever is there.
    drop: Vec<FlowKey>,
    /// Flows just decided "allow": never replace an existing verdict, so a
    /// drop (of the other direction, by another worker) always wins.
    allow: Vec<FlowKey>,
    /// Decided flows whose packets came back long after the verdict: put
    /// the entry back if the store lost it (no-op if it is there).
    restore_drop: Vec<FlowKey>,
    restore_allow: Vec<FlowKey>,
}

/// What writing a batch's verdicts did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// New verdicts written, and of those "drop".
    pub written: u64,
    pub drops: u64,
    /// "allow" not written: the flow had a verdict already.
    pub conflicts: u64,
    /// Lost entries put back.
    pub rewritten: u64,
    /// Writes the store refused, and the first error.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl PendingVerdicts {
    /// Notes what a packet's [`Seen`] asks of the store; returns whether
    /// the packet may go on (false: its flow is dropped).
    pub fn note(&mut self, key: &FlowKey, seen: &Seen) -> bool {
        if let Some(verdict) = seen.verdict {
            match verdict {
                Verdict::Drop => self.drop.push(*key),
                _ => self.allow.push(*key),
            }
            verdict != Verdict::Drop
        } else if let Some(verdict) = seen.after_verdict {
            if seen.restore {
                match verdict {
                    Verdict::Drop => self.restore_drop.push(*key),
                    _ => self.restore_allow.push(*key),
                }
            }
            verdict != Verdict::Drop
        } else {
            true
        }
    }

    pub fn is_empty(&self) -> bool {
        self.drop.is_empty()
            && self.allow.is_empty()
            && self.restore_drop.is_empty()
            && self.restore_allow.is_empty()
    }

    /// Writes the batch: the drops in one call, then each "allow" only
    /// where no entry is, then the restores where the entry is gone.
    pub fn write<S: VerdictStore>(&mut self, store: &mut S) -> WriteReport {
        let mut report = WriteReport::default();
        let failed = |report: &mut WriteReport, n: u64, e: &S::Error| {
            report.errors += n;
            report.first_error.get_or_insert_with(|| e.to_string());
        };
        if !self.drop.is_empty() {
            match store.set_drops(&self.drop) {
                Ok(n) => {
                    report.written += n as u64;
                    report.drops += n as u64;
                }
                Err(e) => failed(&mut report, self.drop.len() as u64, &e),
            }
            self.drop.clear();
        }
        let groups = [
            (&mut self.allow, Verdict::Allow, false),
            (&mut self.restore_drop, Verdict::Drop, true),
            (&mut self.restore_allow, Verdict::Allow, true),
        ];
        for (keys, verdict, restore) in groups {
            for key in keys.drain(..) {
                match (store.set_if_absent(&key, verdict), restore) {
                    (Ok(written), true) => report.rewritten += u64::from(written),
                    (Ok(true), false) => report.written += 1,
                    (Ok(false), false) => report.conflicts += 1,
                    (Err(e), _) => failed(&mut report, 1, &e),
                }
            }
        }
        report
    }
}

/// What an idle check finds for a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Still active: check again at this time.
    CheckAt(u64),
    /// Idle past its timeout: the flow ends.
    End {
        reason: crate::table::EndReason,
        /// Only this half ended here: the flow is undecided in this table
        /// but has a kernel entry, so its other direction reached another
        /// worker, which decided it and owns the entry (asymmetric RSS).
        split: bool,
        /// Its last packet, in user space or in the kernel.
        end_ns: u64,
    },
}

/// Whether a flow is idle past its timeout at `now_ns`, given what the
/// kernel holds for it. Its last packet is the later of user space's and
/// the kernel's; TCP flows use the closing timeout once a FIN or RST was
/// seen in either, except dropped flows: their FIN never reached the other
/// end, their client may retransmit for minutes, and they keep the full
/// timeout so that a retransmitted request is never inspected again
/// mid-stream and let through.
pub fn expiry(
    key: &FlowKey,
    flow: &FlowState,
    kernel: Option<&KernelEntry>,
    timeouts: &crate::table::Timeouts,
    now_ns: u64,
) -> Expiry {
    let split = flow.decided.is_none() && kernel.is_some();
    let closing =
        flow.decided != Some(Verdict::Drop) && (flow.closing || kernel.is_some_and(|k| k.closing));
    let kernel = if split { None } else { kernel };
    let last = flow.last_ns.max(kernel.map_or(0, |k| k.last_seen_ns));
    let idle_until = last + timeouts.for_flow(key.proto, closing);
    if idle_until > now_ns {
        let next = idle_until.min(last + timeouts.check_after(key.proto));
        return Expiry::CheckAt(next.max(now_ns + 1));
    }
    Expiry::End {
        reason: if closing {
            crate::table::EndReason::Closed
        } else {
            crate::table::EndReason::Timeout
        },
        split,
        end_ns: last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP packet without payload from `src` to `dst` with `flags`.
    fn tcp_packet(src: &str, dst: &str, flags: u8) -> Decoded {
        let (key, from_a) = FlowKey::new(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            crate::flow::PROTO_TCP,
            0,
        );
        Decoded {
            key,
            from_a,
            payload_offset: 54,
            payload_len: 0,
            tcp_flags: flags,
            tcp_seq: 0,
            l4_offset: 34,
            tcp: Default::default(),
            ttl: 64,
            l3_offset: 14,
        }
    }

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
            ttl: 64,
            l3_offset: 14,
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
        assert_eq!(third.verdict, Some(Verdict::Allow));
        assert_eq!(third.flow_packets, 3);
        let late = table.on_packet(&p, &frame, frame.len(), 4);
        assert!(late.after_verdict == Some(Verdict::Allow) && late.verdict.is_none());
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

    /// Two workers see the two directions of one flow and decide it
    /// differently: "drop" wins whichever writes first.
    #[test]
    fn a_drop_wins_over_an_allow_in_either_order() {
        let key = packet(1).key;
        let seen = |verdict| Seen {
            new_flow: false,
            evicted: None,
            verdict: Some(verdict),
            after_verdict: None,
            restore: false,
            flow_packets: 1,
            discard: None,
            reject: None,
        };
        for drop_first in [true, false] {
            let mut store = MemoryStore::new(16);
            let (mut a, mut b) = (PendingVerdicts::default(), PendingVerdicts::default());
            assert!(
                a.note(&key, &seen(Verdict::Allow)),
                "an allowed packet goes on"
            );
            assert!(
                !b.note(&key, &seen(Verdict::Drop)),
                "a dropped one does not"
            );
            let (ra, rb) = if drop_first {
                let rb = b.write(&mut store);
                (a.write(&mut store), rb)
            } else {
                let ra = a.write(&mut store);
                (ra, b.write(&mut store))
            };
            assert_eq!(store.get(&key).unwrap().unwrap().verdict, Verdict::Drop);
            assert_eq!((rb.written, rb.drops), (1, 1));
            assert_eq!(
                (ra.written, ra.conflicts),
                if drop_first { (0, 1) } else { (1, 0) }
            );
        }
    }

    /// The kernel's LRU map lost a decided flow's entry: its packets come
    /// back to user space, and after `RESTORE_AFTER_NS` the entry is put
    /// back (once), without asking the decider again.
    #[test]
    fn a_lost_kernel_entry_is_restored() {
        let mut table = FlowTable::new(
            NonZeroUsize::new(16).unwrap(),
            PacketCount { limit: Some(1) },
        );
        let mut store = MemoryStore::new(16);
        let mut pending = PendingVerdicts::default();
        let p = packet(7);
        let frame = [0u8; 60];
        let first = table.on_packet(&p, &frame, 60, 1_000);
        assert!(pending.note(&p.key, &first));
        assert_eq!(pending.write(&mut store).written, 1);
        assert!(
            store.kernel_packet(&p.key, 60, 2_000, false, true),
            "the kernel has it"
        );
        store.evict(&p.key);
        assert!(!store.kernel_packet(&p.key, 60, 3_000, false, true));
        // in flight while the verdict was written: no restore
        let early = table.on_packet(&p, &frame, 60, 3_000);
        assert!(pending.note(&p.key, &early) && !early.restore);
        assert!(pending.is_empty());
        let late = table.on_packet(&p, &frame, 60, 1_000 + RESTORE_AFTER_NS);
        assert!(late.restore);
        pending.note(&p.key, &late);
        let report = pending.write(&mut store);
        assert_eq!((report.rewritten, report.written), (1, 0));
        assert_eq!(store.get(&p.key).unwrap().unwrap().verdict, Verdict::Allow);
        // a restore never overwrites an entry that is there
        let again = table.on_packet(&p, &frame, 60, 2_000 + 2 * RESTORE_AFTER_NS);
        pending.note(&p.key, &again);
        assert_eq!(pending.write(&mut store).rewritten, 0);
    }

    /// Idle checks read the kernel's last packet and closing flag; a
    /// dropped flow keeps the full timeout; an undecided half of a flow
    /// another worker decided ends as split.
    #[test]
    fn idle_checks_follow_the_kernel_entry() {
        use crate::table::{EndReason, Timeouts};
        const S: u64 = 1_000_000_000;
        let timeouts = Timeouts::default(); // TCP 600 s, closing 30 s
        let (key, _) = FlowKey::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
            crate::flow::PROTO_TCP,
            0,
        );
        let flow = |decided| FlowState {
            decided,
            last_ns: 10 * S,
            ..FlowState::default()
        };
        let kernel = |closing| KernelEntry {
            verdict: Verdict::Allow,
            packets_from: [60, 40],
            bytes_from: [60_000, 40_000],
            last_seen_ns: 100 * S,
            closing,
        };
        let allowed = flow(Some(Verdict::Allow));
        // the kernel saw a packet at 100 s: not idle at 120 s; looked at
        // again a closing timeout after that packet (a FIN in XDP only
        // shows as the entry's flag)
        assert_eq!(
            expiry(&key, &allowed, Some(&kernel(false)), &timeouts, 120 * S),
            Expiry::CheckAt(130 * S)
        );
        // a FIN in the kernel: closed 30 s after its last packet
        assert_eq!(
            expiry(&key, &allowed, Some(&kernel(true)), &timeouts, 200 * S),
            Expiry::End {
                reason: EndReason::Closed,
                split: false,
                end_ns: 100 * S
            }
        );
        // a dropped flow's FIN did not close it
        let dropped = flow(Some(Verdict::Drop));
        assert!(matches!(
            expiry(&key, &dropped, Some(&kernel(true)), &timeouts, 200 * S),
            Expiry::CheckAt(_)
        ));
        assert!(matches!(
            expiry(&key, &dropped, Some(&kernel(true)), &timeouts, 701 * S),
            Expiry::End {
                reason: EndReason::Timeout,
                ..
            }
        ));
        // undecided here, decided by the other direction's worker: a split
        // half, whose idle time is its own
        let undecided = flow(None);
        assert_eq!(
            expiry(&key, &undecided, Some(&kernel(false)), &timeouts, 611 * S),
            Expiry::End {
                reason: EndReason::Timeout,
                split: true,
                end_ns: 10 * S
            }
        );
    }

    /// Offline (no kernel): flows end by their own idle timeouts, closed
    /// TCP flows on the closing one, least recently seen first.
    #[test]
    fn idle_flows_end_by_transport_and_state() {
        use crate::table::{EndReason, Timeouts};
        const S: u64 = 1_000_000_000;
        let mut table = FlowTable::new(NonZeroUsize::new(16).unwrap(), PacketCount { limit: None });
        let tcp = |sport: u16, flags: u8| {
            tcp_packet(&format!("198.18.0.1:{sport}"), "198.18.0.2:80", flags)
        };
        let frame = [0u8; 60];
        table.on_packet(&packet(1), &frame, 60, 0); // UDP, 300 s
        table.on_packet(&tcp(2, crate::wire::tcp::ACK), &frame, 60, S); // 600 s
        table.on_packet(&tcp(3, crate::wire::tcp::FIN), &frame, 60, 2 * S); // closing, 30 s
        let timeouts = Timeouts::default();
        assert!(table.expire_idle(&timeouts, 100 * S).is_empty());
        // at 400 s the UDP flow is gone; the established TCP flow is next in
        // LRU order and stops the sweep before the closed one
        let ended: Vec<_> = table
            .expire_idle(&timeouts, 400 * S)
            .into_iter()
            .map(|(k, _, r)| (k.proto, r))
            .collect();
        assert_eq!(ended, [(17, EndReason::Timeout)]);
        let ended: Vec<_> = table
            .expire_idle(&timeouts, 700 * S)
            .into_iter()
            .map(|(k, _, r)| (k.port_a.max(k.port_b), r))
            .collect();
        assert_eq!(ended, [(80, EndReason::Timeout), (80, EndReason::Closed)]);
        assert!(table.is_empty());
    }

    /// A flow first seen by its response is the other side's: a SYN/ACK, a
    /// DNS answer from port 53.
    #[test]
    fn the_client_is_the_initiator_even_when_a_response_comes_first() {
        let mut table = FlowTable::new(NonZeroUsize::new(16).unwrap(), PacketCount { limit: None });
        let tcp = |flags: u8| tcp_packet("198.18.0.2:80", "198.18.0.1:40000", flags);
        use crate::wire::tcp::{ACK, SYN};
        let p = tcp(SYN | ACK);
        table.on_packet(&p, &[0; 60], 60, 0);
        let state = table.get(&p.key).unwrap();
        assert_eq!(
            state.client_is_a, !p.from_a,
            "the SYN/ACK's receiver is the client"
        );
        // a data packet from the server side first: no telling, the sender
        // (unless it is an HTTP response, which only a server sends)
        let mut p = tcp(ACK);
        p.payload_len = 7;
        for (payload, client_is_sender) in [(b"HTTP/2 ", true), (b"HTTP/1.", false)] {
            let mut table =
                FlowTable::new(NonZeroUsize::new(16).unwrap(), PacketCount { limit: None });
            let mut frame = [0u8; 61];
            frame[54..].copy_from_slice(payload);
            table.on_packet(&p, &frame, 61, 0);
            let client_is_a = table.get(&p.key).unwrap().client_is_a;
            assert_eq!(client_is_a == p.from_a, client_is_sender, "{payload:?}");
        }
        // a DNS answer from port 53 first
        let (key, from_a) = FlowKey::new(
            "198.18.0.2:53".parse().unwrap(),
            "198.18.0.1:40000".parse().unwrap(),
            crate::flow::PROTO_UDP,
            0,
        );
        let answer = Decoded {
            key,
            from_a,
            payload_offset: 42,
            payload_len: 12,
            tcp_flags: 0,
            tcp_seq: 0,
            l4_offset: 34,
            tcp: Default::default(),
            ttl: 64,
            l3_offset: 14,
        };
        let mut frame = [0u8; 54];
        frame[44] = 0x81;
        assert!(sent_by_server(&answer, &frame));
        frame[44] = 0x01;
        assert!(
            !sent_by_server(&answer, &frame),
            "a query from port 53 is a client's"
        );
    }
}
