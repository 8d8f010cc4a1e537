//! IP reassembly for inspection: the fragments of a datagram are held (as
//! caller tokens, e.g. the frames they came in, plus a copy of their bytes)
//! until the datagram is whole, then the whole datagram is handed back as
//! one frame to inspect, with the tokens, so the caller can forward the
//! fragments as they were sent, or drop them all.
//!
//! The overlap policy is the receiving Linux host's (`inet_frag_queue_insert`
//! since 4.19, and RFC 5722 for IPv6): a fragment that lies entirely inside
//! one already held is a duplicate and is dropped (the first copy stays);
//! any other overlap discards the whole datagram, as does an end that
//! contradicts the last fragment's. So a datagram whose fragments disagree
//! is never inspected one way and read another.
//!
//! Bounded: at most [`DefragConfig::max_datagrams`] datagrams in progress,
//! [`DefragConfig::max_fragments`] fragments per datagram and
//! [`DefragConfig::max_held`] fragments held in all; a datagram is given up
//! after [`DefragConfig::timeout_ns`]. What does not fit is refused.

use std::{collections::HashMap, net::IpAddr};

use crate::wire::{ethernet, ipv4, ipv6};

/// Limits of one reassembly table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefragConfig {
    pub max_datagrams: usize,
    pub max_fragments: usize,
    pub max_held: usize,
    /// Linux's `ipfrag_time` is 30 s.
    pub timeout_ns: u64,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig {
            max_datagrams: 128,
            max_fragments: 64,
            max_held: 256,
            timeout_ns: 30_000_000_000,
        }
    }
}

/// The largest IP datagram (IPv4 total length; IPv6 payload length plus
/// the fixed header).
const MAX_DATAGRAM: usize = 65_535;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    /// IPv4: the protocol (part of the datagram's identity, RFC 791).
    proto: u8,
    vlan: u16,
}

/// One fragment of a frame.
#[derive(Clone, Copy, Debug)]
pub struct Fragment<'a> {
    key: Key,
    /// Byte offset of `data` in the datagram's fragmentable part.
    offset: usize,
    more: bool,
    data: &'a [u8],
    /// Everything before the fragmentable part: link header, IP header (and
    /// IPv6's unfragmentable extension headers).
    head: &'a [u8],
    /// Where the IP header starts in `head`.
    l3: usize,
    /// IPv6: where in `head` the next-header byte naming the fragment
    /// header is, and the protocol the fragment header names.
    v6_next: Option<(usize, u8)>,
}

/// Reads a frame as an IP fragment; None if it is not one (or malformed).
pub fn parse_fragment(frame: &[u8]) -> Option<Fragment<'_>> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let l3 = eth.payload_offset();
    let vlan = eth.vlan();
    match eth.ethertype() {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::new_checked(&frame[l3..]).ok()?;
            if !ip.is_fragment() {
                return None;
            }
            let b = &frame[l3..];
            let flags_frag = u16::from_be_bytes([b[6], b[7]]);
            let hl = ip.header_len();
            let data = b.get(hl..ip.total_len().min(b.len()))?;
            Some(Fragment {
                key: Key {
                    src: IpAddr::V4(ip.src()),
                    dst: IpAddr::V4(ip.dst()),
                    id: u32::from(u16::from_be_bytes([b[4], b[5]])),
                    proto: ip.protocol(),
                    vlan,
                },
                offset: usize::from(flags_frag & 0x1fff) * 8,
                more: flags_frag & 0x2000 != 0,
                data,
                head: &frame[..l3 + hl],
                l3,
                v6_next: None,
            })
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(&frame[l3..]).ok()?;
            let upper = ip.upper_layer().ok()?;
            if !upper.fragment {
                return None;
            }
            let b = &frame[l3..];
            let end = 40 + ip.payload().len();
            let frag = b.get(upper.offset..upper.offset + 8)?;
            // The byte that names the fragment header: the fixed header's
            // next-header field, or the last extension header's.
            let (mut at, mut next, mut off) = (6, b[6], 40);
            while off < upper.offset {
                let ext = b.get(off..off + 2)?;
                let len = if next == 51 {
                    (usize::from(ext[1]) + 2) * 4
                } else {
                    (usize::from(ext[1]) + 1) * 8
                };
                (at, next) = (off, ext[0]);
                off += len;
            }
            let frag_off = u16::from_be_bytes([frag[2], frag[3]]);
            Some(Fragment {
                key: Key {
                    src: IpAddr::V6(ip.src()),
                    dst: IpAddr::V6(ip.dst()),
                    id: u32::from_be_bytes([frag[4], frag[5], frag[6], frag[7]]),
                    proto: 0,
                    vlan,
                },
                offset: usize::from(frag_off >> 3) * 8,
                more: frag_off & 1 != 0,
                data: b.get(upper.offset + 8..end)?,
                head: &frame[..l3 + upper.offset],
                l3,
                v6_next: Some((l3 + at, frag[0])),
            })
        }
        _ => None,
    }
}

/// What became of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Held until the rest comes.
    Held,
    /// Refused (no room, or a duplicate): only this fragment's token.
    Refused(T, &'static str),
    /// The datagram is whole: the frame to inspect, and every fragment's
    /// token in arrival order.
    Complete(Vec<u8>, Vec<T>),
    /// The datagram is discarded (its fragments disagree): every token.
    Discarded(Vec<T>, &'static str),
}

/// A first fragment's head (see [`Fragment`]): bytes, `l3`, `v6_next`.
type Head = (Vec<u8>, usize, Option<(usize, u8)>);

#[derive(Debug)]
struct Datagram<T> {
    started_ns: u64,
    /// (offset, bytes), kept sorted by offset.
    parts: Vec<(usize, Vec<u8>)>,
    /// Length of the fragmentable part, once the last fragment came.
    end: Option<usize>,
    /// The first fragment's head, its IP header's offset, and IPv6's
    /// next-header position.
    head: Option<Head>,
    tokens: Vec<T>,
}

/// Datagrams being reassembled.
#[derive(Debug)]
pub struct Defrag<T> {
    config: DefragConfig,
    table: HashMap<Key, Datagram<T>>,
    held: usize,
}

impl<T> Defrag<T> {
    pub fn new(config: DefragConfig) -> Self {
        Defrag {
            config,
            table: HashMap::new(),
            held: 0,
        }
    }

    /// Fragments held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes one fragment (with the caller's token for it).
    pub fn add(&mut self, f: &Fragment<'_>, token: T, now_ns: u64) -> Outcome<T> {
        let end = f.offset + f.data.len();
        if end + f.head.len() > MAX_DATAGRAM + 64 || (f.more && !f.data.len().is_multiple_of(8)) {
            return self.discard(&f.key, token, "malformed");
        }
        if self.held >= self.config.max_held
            || (!self.table.contains_key(&f.key) && self.table.len() >= self.config.max_datagrams)
        {
            return Outcome::Refused(token, "no room");
        }
        let d = self.table.entry(f.key).or_insert_with(|| Datagram {
            started_ns: now_ns,
            parts: Vec::new(),
            end: None,
            head: None,
            tokens: Vec::new(),
        });
        if d.tokens.len() >= self.config.max_fragments {
            return self.discard(&f.key, token, "too many fragments");
        }
        // The end: set by the last fragment, never contradicted.
        let contradicts = match d.end {
            Some(e) => end > e || (!f.more && end != e),
            None => !f.more && d.parts.iter().any(|(o, p)| o + p.len() > end),
        };
        if contradicts {
            return self.discard(&f.key, token, "inconsistent length");
        }
        for (o, p) in &d.parts {
            let (s, e) = (*o, o + p.len());
            if f.offset < e && end > s {
                if f.offset >= s && end <= e {
                    return Outcome::Refused(token, "duplicate");
                }
                return self.discard(&f.key, token, "overlap");
            }
        }
        if !f.more {
            d.end = Some(end);
        }
        if f.offset == 0 {
            d.head = Some((f.head.to_vec(), f.l3, f.v6_next));
        }
        let at = d.parts.partition_point(|(o, _)| *o < f.offset);
        d.parts.insert(at, (f.offset, f.data.to_vec()));
        d.tokens.push(token);
        self.held += 1;
        // Whole: the head, the end, and no hole.
        let whole = d.head.is_some()
            && d.end.is_some_and(|e| {
                let mut next = 0;
                for (o, p) in &d.parts {
                    if *o != next {
                        return false;
                    }
                    next = o + p.len();
                }
                next == e
            });
        if !whole {
            return Outcome::Held;
        }
        let d = self.table.remove(&f.key).expect("present");
        self.held -= d.tokens.len();
        let (mut frame, l3, v6_next) = d.head.expect("whole");
        for (_, p) in &d.parts {
            frame.extend_from_slice(p);
        }
        match v6_next {
            None => {
                let total = (frame.len() - l3) as u16;
                frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
                frame[l3 + 6] &= 0x40; // keep DF, clear MF and the offset
                frame[l3 + 7] = 0;
            }
            Some((at, next)) => {
                frame[at] = next;
                let plen = (frame.len() - l3 - 40) as u16;
                frame[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
            }
        }
        Outcome::Complete(frame, d.tokens)
    }

    fn discard(&mut self, key: &Key, token: T, why: &'static str) -> Outcome<T> {
        let mut tokens = match self.table.remove(key) {
            Some(d) => {
                self.held -= d.tokens.len();
                d.tokens
            }
            None => Vec::new(),
        };
        tokens.push(token);
        Outcome::Discarded(tokens, why)
    }

    /// Gives up datagrams older than the timeout: their tokens.
    pub fn expire(&mut self, now_ns: u64) -> Vec<T> {
        let timeout = self.config.timeout_ns;
        let old: Vec<Key> = self
            .table
            .iter()
            .filter(|(_, d)| now_ns.saturating_sub(d.started_ns) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        let mut tokens = Vec::new();
        for k in old {
            if let Some(d) = self.table.remove(&k) {
                self.held -= d.tokens.len();
                tokens.extend(d.tokens);
            }
        }
        tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::decode_ethernet;

    const SEGMENT: &[u8] = b"\x9c\x40\x00\x50\0\0\0\x01\0\0\0\0\x50\x18\xff\xff\0\0\0\0GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n";

    /// An Ethernet + IPv4 frame carrying `data` at fragment `offset`.
    fn v4(id: u16, offset: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + data.len()) as u16;
        let frag = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, 6, 0, 0, 198, 18, 1, 1, 198, 18, 1, 2]);
        f.extend_from_slice(data);
        f
    }

    /// `SEGMENT` in fragments of `size` bytes (a multiple of 8).
    fn fragments(id: u16, size: usize) -> Vec<Vec<u8>> {
        let n = SEGMENT.len().div_ceil(size);
        (0..n)
            .map(|i| {
                let end = ((i + 1) * size).min(SEGMENT.len());
                v4(id, i * size, end < SEGMENT.len(), &SEGMENT[i * size..end])
            })
            .collect()
    }

    fn feed(d: &mut Defrag<usize>, frames: &[Vec<u8>], order: &[usize]) -> Vec<Outcome<usize>> {
        order
            .iter()
            .map(|&i| d.add(&parse_fragment(&frames[i]).expect("a fragment"), i, 0))
            .collect()
    }

    #[test]
    fn fragments_in_any_order_give_the_datagram() {
        let whole = decode_ethernet(&v4(7, 0, false, SEGMENT)).unwrap();
        let frames = fragments(7, 16);
        assert_eq!(frames.len(), 4);
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
            let mut d = Defrag::new(DefragConfig::default());
            let out = feed(&mut d, &frames, &order);
            assert!(out[..3].iter().all(|o| *o == Outcome::Held));
            let Outcome::Complete(frame, tokens) = &out[3] else {
                panic!("{:?}", out[3]);
            };
            assert_eq!(tokens, &order.to_vec(), "every fragment, in arrival order");
            let got = decode_ethernet(frame).unwrap();
            assert_eq!((got.key, got.payload_len), (whole.key, whole.payload_len));
            assert_eq!(&frame[got.payload_offset..], &SEGMENT[20..]);
            assert_eq!(d.held(), 0);
        }
    }

    /// Linux: a fragment inside one already held is a duplicate (the first
    /// copy stays); any other overlap discards the whole datagram.
    #[test]
    fn overlaps_follow_linux() {
        let frames = fragments(9, 16);
        let mut d = Defrag::new(DefragConfig::default());
        feed(&mut d, &frames, &[0]);
        let dup = v4(9, 0, true, &SEGMENT[..8]);
        assert_eq!(
            d.add(&parse_fragment(&dup).unwrap(), 99, 0),
            Outcome::Refused(99, "duplicate")
        );
        let overlap = v4(9, 8, true, &[b'x'; 16]);
        assert_eq!(
            d.add(&parse_fragment(&overlap).unwrap(), 98, 0),
            Outcome::Discarded(vec![0, 98], "overlap")
        );
        assert_eq!(d.held(), 0);
        // a last fragment that ends before data already held
        let mut d = Defrag::new(DefragConfig::default());
        feed(&mut d, &frames, &[2]);
        let short_end = v4(9, 16, false, &SEGMENT[16..24]);
        assert!(matches!(
            d.add(&parse_fragment(&short_end).unwrap(), 97, 0),
            Outcome::Discarded(_, "inconsistent length")
        ));
    }

    #[test]
    fn the_table_is_bounded_and_expires() {
        let config = DefragConfig {
            max_datagrams: 2,
            max_held: 3,
            ..DefragConfig::default()
        };
        let mut d = Defrag::new(config);
        for id in 0..2 {
            assert_eq!(feed(&mut d, &fragments(id, 16), &[0]), [Outcome::Held]);
        }
        let third = fragments(2, 16);
        assert_eq!(
            d.add(&parse_fragment(&third[0]).unwrap(), 5, 0),
            Outcome::Refused(5, "no room")
        );
        assert_eq!(feed(&mut d, &fragments(0, 16), &[1]), [Outcome::Held]);
        assert_eq!(
            d.add(&parse_fragment(&fragments(1, 16)[1]).unwrap(), 6, 0),
            Outcome::Refused(6, "no room"),
            "3 fragments held at most"
        );
        assert!(d.expire(1).is_empty());
        let mut expired = d.expire(config.timeout_ns);
        expired.sort();
        assert_eq!(expired, [0, 0, 1]);
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn ipv6_fragments_lose_their_fragment_header() {
        let v6 = |offset: usize, more: bool, data: &[u8]| {
            let mut f = vec![
                2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0,
            ];
            // a destination options header (8 bytes), then the fragment header
            f.extend_from_slice(&((16 + data.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[60, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
            let off = ((offset / 8) as u16) << 3 | u16::from(more);
            f.extend_from_slice(&[6, 0]);
            f.extend_from_slice(&off.to_be_bytes());
            f.extend_from_slice(&[0xca, 0xfe, 0, 1]);
            f.extend_from_slice(data);
            f
        };
        let frames = [v6(0, true, &SEGMENT[..24]), v6(24, false, &SEGMENT[24..])];
        let mut d = Defrag::new(DefragConfig::default());
        let out = feed(&mut d, &frames, &[1, 0]);
        let Outcome::Complete(frame, _) = &out[1] else {
            panic!("{:?}", out[1]);
        };
        let got = decode_ethernet(frame).unwrap();
        assert_eq!(got.key.proto, 6);
        assert_eq!(got.key.port_b, 80);
        assert_eq!(&frame[got.payload_offset..], &SEGMENT[20..]);
    }
}
