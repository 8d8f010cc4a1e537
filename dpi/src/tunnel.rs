//! Tunnels looked through, as nDPI looks through them, so the flow
//! reported is the inner one: IP in IP (4in4, 6in4, 4in6, 6in6), GRE (RFC
//! 2784/2890) carrying IP, Ethernet (transparent bridging) or ERSPAN types
//! I to III, VXLAN (RFC 7348), GTP-U (3GPP TS 29.281), CAPWAP data (RFC
//! 5415, 802.3 or 802.11 payloads), Teredo (RFC 4380). PPPoE sessions (RFC
//! 2516) are read at the link layer ([`crate::flow`]).
//!
//! Offline only (`dataplane inspect`): live, the XDP program keys flows by
//! their outer headers, so the verdicts user space writes must be too.

use crate::flow::{Decoded, PROTO_UDP, decode_ethernet, decode_ip};

/// How many tunnels deep a packet is opened.
const MAX_DEPTH: usize = 3;

const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;
const PROTO_GRE: u8 = 47;

/// The innermost flow of `outer` (a decoding of `frame`), or `outer` itself
/// when it is no tunnel this module knows (or its inside does not decode).
pub fn innermost(frame: &[u8], outer: Decoded) -> Decoded {
    let mut d = outer;
    for _ in 0..MAX_DEPTH {
        match inner(frame, &d) {
            Some(next) => d = next,
            None => break,
        }
    }
    d
}

/// The packet inside an IP-in-IP (or 6in4, 4in6, 6in6) packet, one level
/// in only: what a load balancer in ipip mode sends its backend, read as the
/// client's packet.
pub fn ip_in_ip(frame: &[u8], outer: &Decoded) -> Option<Decoded> {
    match outer.key.proto {
        PROTO_IPIP | PROTO_IPV6 => ip_at(frame, outer.payload_offset),
        _ => None,
    }
}

/// One level in.
fn inner(frame: &[u8], d: &Decoded) -> Option<Decoded> {
    let at = d.payload_offset;
    let payload = frame.get(at..at + d.payload_len)?;
    match d.key.proto {
        PROTO_IPIP | PROTO_IPV6 => ip_at(frame, at),
        PROTO_GRE => gre(frame, at, payload),
        PROTO_UDP => {
            let (a, b) = (d.key.port_a, d.key.port_b);
            let port = |p: u16| a == p || b == p;
            if port(4789) && payload.len() > 8 && payload[0] & 0x08 != 0 {
                ethernet_at(frame, at + 8)
            } else if port(2152) {
                gtp_u(frame, at, payload)
            } else if port(5247) {
                capwap(frame, at, payload)
            } else if port(3544) {
                teredo(frame, at, payload)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The IP packet at `at` of `frame`.
fn ip_at(frame: &[u8], at: usize) -> Option<Decoded> {
    decode_ip(frame, at, 0, None).ok()
}

/// The Ethernet frame at `at` of `frame`, its offsets made the outer frame's.
fn ethernet_at(frame: &[u8], at: usize) -> Option<Decoded> {
    let mut d = decode_ethernet(frame.get(at..)?).ok()?;
    d.payload_offset += at;
    d.l4_offset += at;
    Some(d)
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

/// GRE: flags and version, the protocol type, then the optional checksum,
/// key and sequence number the flags announce.
fn gre(frame: &[u8], at: usize, g: &[u8]) -> Option<Decoded> {
    let flags = *g.first()?;
    if g.get(1)? & 0x07 != 0 {
        return None; // version 0 only (1 is PPTP's enhanced GRE)
    }
    let protocol = be16(g, 2)?;
    let mut len = 4;
    for bit in [0x80, 0x20, 0x10] {
        // checksum (with its reserved half), key, sequence number
        if flags & bit != 0 {
            len += 4;
        }
    }
    let inside = at + len;
    match protocol {
        0x0800 | 0x86dd => ip_at(frame, inside),
        0x6558 => ethernet_at(frame, inside),
        // ERSPAN type I has no header of its own (no sequence number); type
        // II an 8-byte one
        0x88be if flags & 0x10 == 0 => ethernet_at(frame, inside),
        0x88be => ethernet_at(frame, inside + 8),
        // ERSPAN type III: 12 bytes, and an 8-byte platform subheader if O
        0x22eb => {
            let o = g.get(len + 11)? & 0x01 != 0;
            ethernet_at(frame, inside + 12 + if o { 8 } else { 0 })
        }
        _ => None,
    }
}

/// GTP-U: a G-PDU (version 1, protocol type GTP, message 0xFF) carries a
/// user's IP packet after the 8-byte header, its optional 4 bytes and
/// extension headers.
fn gtp_u(frame: &[u8], at: usize, g: &[u8]) -> Option<Decoded> {
    let flags = *g.first()?;
    if flags >> 5 != 1 || flags & 0x10 == 0 || *g.get(1)? != 0xff {
        return None;
    }
    let mut len = 8;
    if flags & 0x07 != 0 {
        len += 4;
        // extension headers: length in 4-byte units, the last byte the next type
        let mut next = *g.get(len - 1)?;
        while flags & 0x04 != 0 && next != 0 {
            let units = usize::from(*g.get(len)?);
            if units == 0 {
                return None;
            }
            len += units * 4;
            next = *g.get(len - 1)?;
        }
    }
    ip_at(frame, at + len)
}

/// CAPWAP data: the header's length (HLEN, 4-byte words); T=0 carries an
/// 802.3 frame, T=1 with the 802.11 binding an 802.11 data frame.
fn capwap(frame: &[u8], at: usize, c: &[u8]) -> Option<Decoded> {
    if *c.first()? != 0 {
        return None; // preamble: version 0, type 0 (1 is DTLS)
    }
    let word = u32::from_be_bytes(c.get(..4)?.try_into().ok()?);
    let hlen = ((word >> 19) & 0x1f) as usize * 4;
    let wbid = (word >> 9) & 0x1f;
    let native = word & 0x100 != 0;
    if hlen < 8 {
        return None;
    }
    if !native {
        return ethernet_at(frame, at + hlen);
    }
    if wbid != 1 {
        return None;
    }
    // 802.11 data frame: frame control, duration, three addresses, sequence
    let w = c.get(hlen..)?;
    let fc = *w.first()?;
    if fc & 0x0c != 0x08 {
        return None;
    }
    let mut header = 24;
    if w.get(1)? & 0x03 == 0x03 {
        header += 6; // a fourth address
    }
    if fc & 0x80 != 0 {
        header += 2; // QoS control
    }
    // LLC/SNAP, then the ethertype
    let llc = w.get(header..header + 8)?;
    if llc[..6] != [0xaa, 0xaa, 0x03, 0, 0, 0] || !matches!(be16(llc, 6)?, 0x0800 | 0x86dd) {
        return None;
    }
    ip_at(frame, at + hlen + header + 8)
}

/// Teredo: an IPv6 packet in UDP, maybe after an origin indication
/// (0x0000, 8 bytes) or an authentication header (0x0001).
fn teredo(frame: &[u8], at: usize, t: &[u8]) -> Option<Decoded> {
    let mut skip = 0;
    if be16(t, 0)? == 0x0001 {
        let (id, au) = (usize::from(*t.get(2)?), usize::from(*t.get(3)?));
        skip = 4 + id + au + 9;
    }
    if be16(t, skip)? == 0x0000 {
        skip += 8;
    }
    if t.get(skip)? >> 4 != 6 {
        return None;
    }
    ip_at(frame, at + skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use testbed::frames::{L4, Packet, ip};

    fn outer_udp(dport: u16, inside: &[u8]) -> Vec<u8> {
        Packet::udp(ip("198.18.0.1"), 40000, ip("198.18.0.2"), dport)
            .with_payload(inside)
            .build()
    }

    fn outer_ip(proto: u8, inside: &[u8]) -> Vec<u8> {
        Packet::new(ip("198.18.0.1"), ip("198.18.0.2"), L4::Other(proto))
            .with_payload(inside)
            .build()
    }

    /// The inner flow: 198.18.1.1:1111 -> 198.18.1.2:80 over TCP.
    fn inner_ethernet() -> Vec<u8> {
        Packet::tcp(ip("198.18.1.1"), 1111, ip("198.18.1.2"), 80, 0x18)
            .with_payload(b"GET / HTTP/1.1\r\n\r\n")
            .build()
    }

    fn inner_ip() -> Vec<u8> {
        inner_ethernet()[14..].to_vec()
    }

    fn seen(frame: &[u8]) -> (String, String, usize) {
        let d = innermost(frame, decode_ethernet(frame).unwrap());
        let payload = &frame[d.payload_offset..d.payload_offset + d.payload_len];
        (d.key.a().to_string(), d.key.b().to_string(), payload.len())
    }

    #[test]
    fn every_tunnel_shows_its_inner_flow() {
        let want = (
            "198.18.1.1:1111".to_string(),
            "198.18.1.2:80".to_string(),
            18,
        );
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        vxlan.extend_from_slice(&inner_ethernet());
        let mut gtp = vec![0x34, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x85];
        gtp.extend_from_slice(&[1, 0x10, 0x05, 0]); // PDU session container, then none
        gtp.extend_from_slice(&inner_ip());
        let mut gre_ip = vec![0x20, 0, 0x08, 0, 0, 0, 0, 7]; // key present
        gre_ip.extend_from_slice(&inner_ip());
        let mut gre_teb = vec![0, 0, 0x65, 0x58];
        gre_teb.extend_from_slice(&inner_ethernet());
        let mut erspan2 = vec![0x10, 0, 0x88, 0xbe, 0, 0, 0, 1];
        erspan2.extend_from_slice(&[0x10, 0, 0, 1, 0, 0, 0, 0]);
        erspan2.extend_from_slice(&inner_ethernet());
        let mut capwap_8023 = vec![0, 0x10, 0, 0, 0, 0, 0, 0]; // HLEN 2 words, T=0
        capwap_8023.extend_from_slice(&inner_ethernet());
        let mut capwap_80211 = vec![0, 0x10, 0x03, 0, 0, 0, 0, 0]; // HLEN 2, WBID 1, T=1
        capwap_80211.extend_from_slice(&[0x08, 0x02]); // data, from DS
        capwap_80211.extend_from_slice(&[0; 22]);
        capwap_80211.extend_from_slice(&[0xaa, 0xaa, 3, 0, 0, 0, 0x08, 0x00]);
        capwap_80211.extend_from_slice(&inner_ip());
        for (name, frame) in [
            ("vxlan", outer_udp(4789, &vxlan)),
            ("gtp-u", outer_udp(2152, &gtp)),
            ("gre", outer_ip(47, &gre_ip)),
            ("gre teb", outer_ip(47, &gre_teb)),
            ("erspan ii", outer_ip(47, &erspan2)),
            ("4in4", outer_ip(4, &inner_ip())),
            ("capwap 802.3", outer_udp(5247, &capwap_8023)),
            ("capwap 802.11", outer_udp(5247, &capwap_80211)),
        ] {
            assert_eq!(seen(&frame), want, "{name}");
        }
        // 6in4 and Teredo carry IPv6
        let v6 = Packet::udp(ip("2001:db8::1"), 5353, ip("2001:db8::2"), 53)
            .with_payload(&[1, 2, 3])
            .build()[14..]
            .to_vec();
        let want6 = (
            "[2001:db8::1]:5353".to_string(),
            "[2001:db8::2]:53".to_string(),
            3,
        );
        assert_eq!(seen(&outer_ip(41, &v6)), want6, "6in4");
        let mut teredo = vec![0, 0, 0x12, 0x34, 1, 2, 3, 4]; // origin indication
        teredo.extend_from_slice(&v6);
        assert_eq!(seen(&outer_udp(3544, &teredo)), want6, "teredo");
        // not a tunnel, or not one that decodes: the outer flow
        let plain = outer_udp(4789, &[0; 4]);
        assert_eq!(seen(&plain).1, "198.18.0.2:4789");
    }
}
