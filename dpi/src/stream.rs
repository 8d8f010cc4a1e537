//! TCP stream tracking and reassembly: both directions of one connection,
//! put back in order the way the receiving Linux host reads them.
//!
//! An inline IPS only blocks what the host behind it would act on if the
//! bytes it inspects are the bytes that host reads. So this module follows
//! Linux (`net/ipv4/tcp_input.c`), not the first or the last copy seen:
//! - **Overlaps**: bytes already delivered in order stay (a retransmission
//!   cannot rewrite them). Among segments held out of order, a new segment
//!   that covers one starting at the same or a later sequence number
//!   replaces it; one that a held segment already covers is dropped; of two
//!   partly overlapping segments, the one that starts first gives the
//!   overlapped bytes (`tcp_data_queue_ofo`, `tcp_ofo_queue`).
//! - **What the host discards is not reassembled**, and [`Anomaly`] says
//!   why, so an inline caller drops the packet too (the peer sees the loss
//!   and retransmits): a bad checksum, a segment without ACK (other than
//!   SYN and RST), data starting at or past the receiver's advertised
//!   window (RFC 9293 §3.10.7.4; the window is only checked once both
//!   SYNs were seen, as the scale is unknown before).
//! - **Urgent data** is read as a socket without `SO_OOBINLINE` reads it:
//!   the byte the urgent pointer names (RFC 6093: the one before the
//!   pointer) is not part of the stream.
//! - **Bounded memory**: at most [`StreamConfig::max_held`] bytes and
//!   [`MAX_HELD_SEGMENTS`] segments are held out of order per direction; a
//!   segment that does not fit is refused ([`Anomaly::HeldFull`]), never
//!   released out of order. Only the first [`StreamConfig::depth`] bytes of
//!   each direction are delivered (Suricata's `stream.reassembly.depth`).
//! - **Gaps**: data the receiver acknowledged but that never reached the
//!   tracker (a capture's loss, a lost copy in host mode) is skipped once
//!   the acknowledgement shows it, and reported as [`Chunk::Gap`]; inline,
//!   every byte the host acknowledges went through the bridge.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::wire::tcp::{ACK, RST, SYN, URG};

/// Segments held out of order per direction.
pub const MAX_HELD_SEGMENTS: usize = 64;

/// Limits of one connection's reassembly.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Bytes of each direction delivered; later bytes are not (0: no limit).
    pub depth: u64,
    /// Bytes held out of order per direction.
    pub max_held: usize,
    /// Bytes held out of order by every stream sharing this budget.
    pub budget: Arc<Budget>,
}

/// Bytes held by all the flows that share it (out-of-order segments, stream
/// windows, request heads being gathered), and the most they may hold
/// together (Suricata's `stream.reassembly.memcap`).
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    pub cap: usize,
}

impl Budget {
    pub fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            cap,
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes from the budget; false (and nothing taken) if they
    /// do not fit.
    pub fn take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h + n <= self.cap).then_some(h + n)
            })
            .is_ok()
    }

    /// Gives `n` bytes back.
    pub fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Default total of out-of-order bytes held (per budget).
pub const DEFAULT_MEMCAP: usize = 256 << 20;

/// Suricata's default `stream.reassembly.depth`.
pub const DEFAULT_DEPTH: u64 = 1 << 20;

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            depth: DEFAULT_DEPTH,
            max_held: 64 * 1024,
            budget: Budget::new(DEFAULT_MEMCAP),
        }
    }
}

/// Why a segment was not taken into the stream. The receiving host would
/// discard it too (all but `HeldFull`, which it might keep: inline, the
/// packet is dropped and the peer retransmits it later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Anomaly {
    BadChecksum,
    NoAck,
    OutOfWindow,
    HeldFull,
}

impl Anomaly {
    pub const ALL: [Anomaly; 4] = [
        Anomaly::BadChecksum,
        Anomaly::NoAck,
        Anomaly::OutOfWindow,
        Anomaly::HeldFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Anomaly::BadChecksum => "bad-checksum",
            Anomaly::NoAck => "no-ack",
            Anomaly::OutOfWindow => "out-of-window",
            Anomaly::HeldFull => "held-full",
        }
    }
}

/// One TCP segment, as the tracker needs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment<'a> {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    /// Window scale option (SYN segments).
    pub window_scale: Option<u8>,
    /// None: not checked (a cut copy, or checksums not validated here).
    pub checksum_ok: Option<bool>,
    pub payload: &'a [u8],
    /// Payload bytes after `payload` that were not captured (a copy cut at
    /// a snap length): a gap in the stream.
    pub missing: usize,
}

/// What the stream hands on, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    /// This many bytes were acknowledged but never seen.
    Gap(u64),
}

#[derive(Clone, Debug, Default)]
struct Side {
    /// Sequence number of stream offset 0 (after the SYN).
    base: Option<u32>,
    /// Stream offset of the next byte to deliver.
    next: u64,
    /// Out of order: stream offset -> bytes.
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: usize,
    syn: bool,
    syn_scale: Option<u8>,
    /// As a receiver: the last acknowledgement and window (in bytes) it
    /// sent, in the other side's sequence space.
    ack: Option<u32>,
    window: u32,
    /// Stream offset of the urgent byte not yet delivered.
    urgent: Option<u64>,
    depth_reached: bool,
}

impl Side {
    /// Stream offset of `seq` (valid within 2 GiB of the next byte).
    fn offset(&self, base: u32, seq: u32) -> Option<u64> {
        let next_seq = base.wrapping_add(self.next as u32);
        let diff = i64::from(seq.wrapping_sub(next_seq) as i32);
        u64::try_from(self.next as i64 + diff).ok()
    }
}

/// Both directions of one TCP connection. Direction 0 is the client's.
#[derive(Debug, Default)]
pub struct TcpStream {
    sides: [Side; 2],
    config: StreamConfig,
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.config
            .budget
            .give(self.sides[0].held_bytes + self.sides[1].held_bytes);
    }
}

impl TcpStream {
    pub fn new(config: StreamConfig) -> Self {
        TcpStream {
            sides: Default::default(),
            config,
        }
    }

    /// Whether direction `dir` has delivered its depth.
    pub fn depth_reached(&self, dir: usize) -> bool {
        self.sides[dir].depth_reached
    }

    /// Bytes delivered (or skipped as gaps) in direction `dir`.
    pub fn delivered(&self, dir: usize) -> u64 {
        self.sides[dir].next
    }

    /// Bytes held out of order in direction `dir`.
    pub fn held(&self, dir: usize) -> usize {
        self.sides[dir].held_bytes
    }

    /// Both SYNs seen: the window scale is known.
    fn handshake_seen(&self) -> bool {
        self.sides[0].syn && self.sides[1].syn
    }

    fn scale(&self, dir: usize) -> u32 {
        // RFC 7323 §2.2: scaling holds only if both SYNs carried the option.
        match (self.sides[0].syn_scale, self.sides[1].syn_scale) {
            (Some(_), Some(_)) => u32::from(self.sides[dir].syn_scale.unwrap_or(0)),
            _ => 0,
        }
    }

    /// Takes one segment of direction `dir` and calls `deliver` with what
    /// is now in order. Err: the segment was not taken, and why.
    pub fn on_segment(
        &mut self,
        dir: usize,
        seg: &Segment<'_>,
        mut deliver: impl FnMut(Chunk<'_>),
    ) -> Result<(), Anomaly> {
        if seg.checksum_ok == Some(false) {
            return Err(Anomaly::BadChecksum);
        }
        let syn = seg.flags & SYN != 0;
        if seg.flags & (ACK | SYN | RST) == 0 {
            // tcp_rcv_established / tcp_rcv_state_process: discarded.
            return Err(Anomaly::NoAck);
        }
        if syn {
            let side = &mut self.sides[dir];
            if side.base.is_none() || !side.syn {
                side.syn = true;
                side.syn_scale = seg.window_scale;
                side.base = Some(seg.seq.wrapping_add(1));
                side.next = 0;
                side.held.clear();
                self.config.budget.give(side.held_bytes);
                side.held_bytes = 0;
            }
        }
        let data_seq = if syn {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        if !seg.payload.is_empty() {
            if self.handshake_seen()
                && let Some(ack) = self.sides[1 - dir].ack
            {
                // Data must start inside the window the receiver advertised.
                let right = ack.wrapping_add(self.sides[1 - dir].window);
                if data_seq.wrapping_sub(right) as i32 >= 0 {
                    return Err(Anomaly::OutOfWindow);
                }
            }
            self.take_data(dir, data_seq, seg, &mut deliver)?;
        }
        if seg.flags & ACK != 0 {
            // SYN segments' windows are never scaled (RFC 7323 §2.2).
            let scale = if syn { 0 } else { self.scale(dir) };
            let side = &mut self.sides[dir];
            if side.ack.is_none_or(|a| seg.ack.wrapping_sub(a) as i32 >= 0) {
                side.ack = Some(seg.ack);
            }
            side.window = u32::from(seg.window) << scale;
            let ack = seg.ack;
            self.skip_acked_gap(1 - dir, ack, &mut deliver);
        }
        Ok(())
    }

    fn take_data(
        &mut self,
        dir: usize,
        data_seq: u32,
        seg: &Segment<'_>,
        deliver: &mut impl FnMut(Chunk<'_>),
    ) -> Result<(), Anomaly> {
        let depth = self.config.depth;
        let max_held = self.config.max_held;
        let budget = &self.config.budget;
        let side = &mut self.sides[dir];
        // Caught mid-way (no SYN seen): this segment starts the stream.
        let base = *side.base.get_or_insert(data_seq);
        let Some(mut start) = side.offset(base, data_seq) else {
            // Before the stream's start: an old retransmission.
            return Ok(());
        };
        let mut data = seg.payload;
        if seg.flags & URG != 0 && seg.urgent != 0 {
            let at = start + u64::from(seg.urgent) - 1;
            if at >= side.next {
                side.urgent = Some(at);
            }
        }
        let end = start + (data.len() + seg.missing) as u64;
        if end <= side.next {
            return Ok(()); // all of it already delivered
        }
        if start + data.len() as u64 <= side.next {
            // Only the uncaptured part is new: a gap.
            deliver(Chunk::Gap(end - side.next));
            side.next = end;
            Self::release_held(side, depth, budget, deliver);
            return Ok(());
        }
        if start < side.next {
            data = &data[(side.next - start) as usize..];
            start = side.next;
        }
        if start > side.next {
            // Out of order: Linux's queue rules.
            let covered = side
                .held
                .range(..=start)
                .next_back()
                .is_some_and(|(s, d)| *s <= start && end <= s + d.len() as u64);
            if covered {
                return Ok(());
            }
            let replaced: Vec<u64> = side
                .held
                .range(start..end)
                .filter(|(s, d)| **s + d.len() as u64 <= end)
                .map(|(s, _)| *s)
                .collect();
            let freed: usize = replaced.iter().map(|s| side.held[s].len()).sum();
            if side.held.len() - replaced.len() >= MAX_HELD_SEGMENTS
                || side.held_bytes - freed + data.len() > max_held
                || !budget.take(data.len())
            {
                return Err(Anomaly::HeldFull);
            }
            for s in replaced {
                side.held.remove(&s);
            }
            budget.give(freed);
            side.held_bytes = side.held_bytes - freed + data.len();
            side.held.insert(start, data.to_vec());
            return Ok(());
        }
        Self::emit(side, depth, data, deliver);
        if seg.missing > 0 {
            // The rest of the segment was not captured: skip it.
            deliver(Chunk::Gap(seg.missing as u64));
            side.next += seg.missing as u64;
        }
        Self::release_held(side, depth, budget, deliver);
        Ok(())
    }

    /// Delivers `data`, which starts at `side.next`, less the urgent byte
    /// and anything past the depth.
    fn emit(side: &mut Side, depth: u64, data: &[u8], deliver: &mut impl FnMut(Chunk<'_>)) {
        let start = side.next;
        side.next += data.len() as u64;
        let limit = if depth == 0 {
            data.len()
        } else {
            depth.saturating_sub(start).min(data.len() as u64) as usize
        };
        if limit < data.len() {
            side.depth_reached = true;
        }
        let data = &data[..limit];
        match side.urgent {
            Some(at) if at >= start && at < start + data.len() as u64 => {
                side.urgent = None;
                let cut = (at - start) as usize;
                for part in [&data[..cut], &data[cut + 1..]] {
                    if !part.is_empty() {
                        deliver(Chunk::Data(part));
                    }
                }
            }
            _ if !data.is_empty() => deliver(Chunk::Data(data)),
            _ => {}
        }
    }

    /// Delivers held segments that now follow on (the one starting first
    /// gives overlapped bytes; what is behind is dropped).
    fn release_held(
        side: &mut Side,
        depth: u64,
        budget: &Budget,
        deliver: &mut impl FnMut(Chunk<'_>),
    ) {
        while let Some(entry) = side.held.first_entry() {
            let start = *entry.key();
            if start > side.next {
                break;
            }
            let data = entry.remove();
            side.held_bytes -= data.len();
            budget.give(data.len());
            let end = start + data.len() as u64;
            if end > side.next {
                let skip = (side.next - start) as usize;
                Self::emit(side, depth, &data[skip..], deliver);
            }
        }
    }

    /// The receiver of direction `dir` acknowledged `ack`: held data before
    /// it means the bytes in between went past unseen. Skip them.
    fn skip_acked_gap(&mut self, dir: usize, ack: u32, deliver: &mut impl FnMut(Chunk<'_>)) {
        let depth = self.config.depth;
        let budget = &self.config.budget;
        let side = &mut self.sides[dir];
        let Some(base) = side.base else { return };
        let Some(acked) = side.offset(base, ack) else {
            return;
        };
        while acked > side.next {
            let Some((&first, _)) = side.held.first_key_value() else {
                return;
            };
            if first >= acked {
                return;
            }
            deliver(Chunk::Gap(first - side.next));
            side.next = first;
            Self::release_held(side, depth, budget, deliver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: usize = 0;
    const SERVER: usize = 1;

    /// A stream with the handshake done: client ISN 999, server ISN 4999,
    /// both windows 65535 (no scaling).
    fn connected() -> TcpStream {
        connected_with(StreamConfig::default())
    }

    fn connected_with(config: StreamConfig) -> TcpStream {
        let mut s = TcpStream::new(config);
        let syn = |seq, ack, flags| Segment {
            seq,
            ack,
            flags,
            window: 65535,
            ..Segment::default()
        };
        s.on_segment(CLIENT, &syn(999, 0, SYN), |_| {}).unwrap();
        s.on_segment(SERVER, &syn(4999, 1000, SYN | ACK), |_| {})
            .unwrap();
        s.on_segment(CLIENT, &syn(1000, 5000, ACK), |_| {}).unwrap();
        s
    }

    fn data(seq: u32, payload: &[u8]) -> Segment<'_> {
        Segment {
            seq,
            ack: 5000,
            flags: ACK,
            window: 65535,
            payload,
            ..Segment::default()
        }
    }

    /// Feeds client segments; returns the bytes delivered and what was refused.
    fn feed(s: &mut TcpStream, segments: &[Segment<'_>]) -> (Vec<u8>, Vec<Anomaly>) {
        let mut out = Vec::new();
        let mut refused = Vec::new();
        for seg in segments {
            let r = s.on_segment(CLIENT, seg, |c| match c {
                Chunk::Data(d) => out.extend_from_slice(d),
                Chunk::Gap(n) => out.extend(std::iter::repeat_n(b'?', n as usize)),
            });
            if let Err(a) = r {
                refused.push(a);
            }
        }
        (out, refused)
    }

    fn stream_of(segments: &[Segment<'_>]) -> Vec<u8> {
        feed(&mut connected(), segments).0
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        assert_eq!(
            stream_of(&[data(1000, b"abc"), data(1003, b"def")]),
            b"abcdef"
        );
        assert_eq!(
            stream_of(&[data(1003, b"def"), data(1000, b"abc")]),
            b"abcdef"
        );
        assert_eq!(
            stream_of(&[data(1006, b"ghi"), data(1003, b"def"), data(1000, b"abc")]),
            b"abcdefghi"
        );
        // A retransmission cannot rewrite delivered bytes; its new tail counts.
        assert_eq!(
            stream_of(&[data(1000, b"abc"), data(1000, b"XYZ"), data(1001, b"QRSd")]),
            b"abcSd"
        );
    }

    /// Linux: a held segment is replaced by a longer one at the same
    /// sequence number (the attack the issue names), and by one that starts
    /// earlier and covers it.
    #[test]
    fn overlaps_follow_linux() {
        // same start, the later one longer: the later one wins
        assert_eq!(
            stream_of(&[
                data(1004, b"good"),
                data(1004, b"evil!"),
                data(1000, b"GET ")
            ]),
            b"GET evil!"
        );
        // same start, the later one not longer: the first stays
        assert_eq!(
            stream_of(&[
                data(1004, b"good!"),
                data(1004, b"evil"),
                data(1000, b"GET ")
            ]),
            b"GET good!"
        );
        // a later segment that starts earlier and covers a held one replaces it
        assert_eq!(
            stream_of(&[data(1005, b"ood"), data(1004, b"evil"), data(1000, b"GET ")]),
            b"GET evil"
        );
        // partial overlap: the segment that starts first gives the bytes
        assert_eq!(
            stream_of(&[
                data(1006, b"XYZW"),
                data(1004, b"abcd"),
                data(1000, b"GET ")
            ]),
            b"GET abcdZW"
        );
        assert_eq!(
            stream_of(&[
                data(1004, b"abcd"),
                data(1006, b"XYZW"),
                data(1000, b"GET ")
            ]),
            b"GET abcdZW"
        );
        // in-order data wins over held data it overlaps
        assert_eq!(
            stream_of(&[data(1002, b"XXXX"), data(1000, b"abcd")]),
            b"abcdXX"
        );
    }

    #[test]
    fn what_the_host_discards_is_not_reassembled() {
        let mut s = connected();
        let mut bad = data(1000, b"evil");
        bad.checksum_ok = Some(false);
        let mut no_ack = data(1000, b"evil");
        no_ack.flags = 0;
        let beyond = data(1000 + 65535, b"evil");
        let (out, refused) = feed(&mut s, &[bad, no_ack, beyond, data(1000, b"good")]);
        assert_eq!(out, b"good");
        assert_eq!(
            refused,
            [Anomaly::BadChecksum, Anomaly::NoAck, Anomaly::OutOfWindow]
        );
        // one byte short of the window's edge is inside it
        let (out, refused) = feed(&mut connected(), &[data(1000 + 65534, b"x")]);
        assert!(out.is_empty() && refused.is_empty());
    }

    #[test]
    fn the_window_scale_applies_when_both_syns_carry_it() {
        let handshake = |client_scale, server_scale| {
            let mut s = TcpStream::new(StreamConfig::default());
            let mut syn = Segment {
                seq: 999,
                flags: SYN,
                window: 100,
                window_scale: client_scale,
                ..Segment::default()
            };
            s.on_segment(CLIENT, &syn, |_| {}).unwrap();
            syn = Segment {
                seq: 4999,
                ack: 1000,
                flags: SYN | ACK,
                window: 100,
                window_scale: server_scale,
                ..Segment::default()
            };
            s.on_segment(SERVER, &syn, |_| {}).unwrap();
            // The server's first window after its SYN: 100 << its scale.
            let ack = Segment {
                seq: 5000,
                ack: 1000,
                flags: ACK,
                window: 100,
                ..Segment::default()
            };
            s.on_segment(SERVER, &ack, |_| {}).unwrap();
            s
        };
        let far = data(1000 + 100 * 128 - 10, b"x");
        let mut scaled = handshake(Some(2), Some(7));
        assert_eq!(feed(&mut scaled, &[far]).1, []);
        let mut unscaled = handshake(None, Some(7));
        assert_eq!(feed(&mut unscaled, &[far]).1, [Anomaly::OutOfWindow]);
    }

    #[test]
    fn the_urgent_byte_is_not_part_of_the_stream() {
        let mut urgent = data(1000, b"Host: evXil.test");
        urgent.flags |= URG;
        urgent.urgent = 9; // the byte before offset 9: 'X'
        assert_eq!(stream_of(&[urgent]), b"Host: evil.test");
        // urgent byte in a later segment than the pointer's
        let mut pointer = data(1000, b"Host: ev");
        pointer.flags |= URG;
        pointer.urgent = 9;
        assert_eq!(
            stream_of(&[pointer, data(1008, b"Xil.test")]),
            b"Host: evil.test"
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut s = TcpStream::new(StreamConfig::default());
        let syn = Segment {
            seq: u32::MAX - 1,
            flags: SYN,
            ..Segment::default()
        };
        s.on_segment(CLIENT, &syn, |_| {}).unwrap();
        // "ab" takes u32::MAX and 0; "cd" starts at 1.
        let (out, _) = feed(&mut s, &[data(1, b"cd"), data(u32::MAX, b"ab")]);
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn held_data_is_bounded_and_never_released_out_of_order() {
        let budget = Budget::new(1 << 20);
        let mut s = TcpStream::new(StreamConfig {
            depth: 0,
            max_held: 4096,
            budget: budget.clone(),
        });
        s.on_segment(
            CLIENT,
            &Segment {
                seq: 999,
                flags: SYN,
                ..Segment::default()
            },
            |_| {},
        )
        .unwrap();
        let mut refused = 0;
        for i in 0..100u32 {
            // every segment leaves a gap before it
            let seg = data(1000 + 100 + i * 200, &[7u8; 100]);
            let (out, r) = feed(&mut s, &[seg]);
            assert!(out.is_empty(), "nothing is released out of order");
            refused += r.len();
            assert!(s.held(CLIENT) <= 4096);
        }
        assert_eq!(refused, 100 - 40, "40 segments of 100 bytes fit in 4096");
        // The gap fills: everything held up to the next hole comes out.
        assert_eq!(budget.held(), 4000);
        let (out, _) = feed(&mut s, &[data(1000, &[1u8; 100])]);
        assert_eq!(out.len(), 200);
        assert_eq!(budget.held(), 3900);
        drop(s);
        assert_eq!(
            budget.held(),
            0,
            "a stream gives its bytes back when it goes"
        );
    }

    #[test]
    fn streams_share_one_budget() {
        let budget = Budget::new(150);
        let config = StreamConfig {
            budget: budget.clone(),
            ..StreamConfig::default()
        };
        let mut a = connected_with(config.clone());
        let mut b = connected_with(config);
        assert_eq!(feed(&mut a, &[data(1100, &[1; 100])]).1, []);
        assert_eq!(
            feed(&mut b, &[data(1100, &[1; 100])]).1,
            [Anomaly::HeldFull]
        );
        assert_eq!(feed(&mut b, &[data(1100, &[1; 50])]).1, []);
        assert_eq!(budget.held(), 150);
    }

    #[test]
    fn depth_limits_what_is_delivered() {
        let mut s = TcpStream::new(StreamConfig {
            depth: 5,
            ..StreamConfig::default()
        });
        let (out, _) = feed(&mut s, &[data(1000, b"abc"), data(1003, b"defgh")]);
        assert_eq!(out, b"abcde");
        assert!(s.depth_reached(CLIENT) && !s.depth_reached(SERVER));
        assert_eq!(s.delivered(CLIENT), 8);
    }

    #[test]
    fn a_cut_copy_leaves_a_gap_for_what_was_not_captured() {
        let mut s = connected();
        let mut cut = data(1000, b"abc");
        cut.missing = 5;
        let (out, _) = feed(&mut s, &[cut, data(1008, b"xyz")]);
        assert_eq!(out, b"abc?????xyz");
    }

    #[test]
    fn acknowledged_data_never_seen_is_a_gap() {
        let mut s = connected();
        let (out, _) = feed(&mut s, &[data(1000, b"abc"), data(1006, b"ghi")]);
        assert_eq!(out, b"abc");
        let mut got = Vec::new();
        let ack = Segment {
            seq: 5000,
            ack: 1009,
            flags: ACK,
            window: 65535,
            ..Segment::default()
        };
        s.on_segment(SERVER, &ack, |c| got.push(format!("{c:?}")))
            .unwrap();
        assert_eq!(got, ["Gap(3)", "Data([103, 104, 105])"]);
        // An acknowledgement of nothing new skips nothing.
        let mut got = Vec::new();
        s.on_segment(SERVER, &ack, |c| got.push(format!("{c:?}")))
            .unwrap();
        assert!(got.is_empty());
    }
}
