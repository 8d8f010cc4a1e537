//! The packets a `reject` rule answers with, inline: TCP resets (RFC 9293
//! §3.10.7.1, built as Linux's `tcp_v4_send_reset` builds them) and ICMP
//! destination-unreachable for other transports (RFC 792 type 3 code 3 /
//! RFC 4443 type 1 code 4), addressed so that each end takes them for its
//! peer's.

use std::net::IpAddr;

use crate::{
    flow::{Decoded, PROTO_TCP},
    wire::tcp::{ACK, FIN, RST, SYN},
};

/// Which ends a reject resets: Suricata's `reject`/`rejectsrc`,
/// `rejectdst` and `rejectboth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// The packet's sender.
    Source,
    /// The packet's destination.
    Destination,
    Both,
}

/// Where a built frame goes: back to the packet's sender (out of the port
/// it came in on), or on to its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toward {
    Sender,
    Receiver,
}

/// Bytes of the offending IPv6 packet quoted in an ICMPv6 error (RFC 4443
/// §2.4: as much as fits the minimum MTU; this keeps it smaller).
const ICMP6_QUOTE: usize = 512;

/// The frames answering `frame` (an Ethernet frame, `d` its decoding) for
/// a reject of `kind`. None for what cannot be answered (not Ethernet, an
/// ICMP packet: errors are not answered with errors).
pub fn frames(frame: &[u8], d: &Decoded, kind: Reject) -> Vec<(Vec<u8>, Toward)> {
    let Some(l2) = ethernet_len(frame) else {
        return Vec::new();
    };
    let targets: &[Toward] = match kind {
        Reject::Source => &[Toward::Sender],
        Reject::Destination => &[Toward::Receiver],
        Reject::Both => &[Toward::Sender, Toward::Receiver],
    };
    targets
        .iter()
        .filter_map(|&to| {
            let built = if d.key.proto == PROTO_TCP {
                tcp_reset(frame, l2, d, to)
            } else if matches!(d.key.proto, crate::flow::PROTO_UDP) {
                unreachable(frame, l2, d, to)
            } else {
                None
            }?;
            Some((built, to))
        })
        .collect()
}

/// Ethernet header length with its VLAN tags, if the frame is IP.
fn ethernet_len(frame: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            0x0800 | 0x86dd => return Some(at + 2),
            _ => return None,
        }
    }
}

/// The packet's addresses and ports, sender first.
fn endpoints(d: &Decoded) -> ((IpAddr, u16), (IpAddr, u16)) {
    let (a, b) = (d.key.a(), d.key.b());
    let (s, r) = if d.from_a { (a, b) } else { (b, a) };
    ((s.ip(), s.port()), (r.ip(), r.port()))
}

/// The L2 header of a frame going `to`: the packet's own (on toward the
/// receiver), or its addresses swapped (back to the sender); VLAN tags kept.
fn l2_header(frame: &[u8], l2: usize, to: Toward, ethertype: u16) -> Vec<u8> {
    let mut h = frame[..l2].to_vec();
    if to == Toward::Sender {
        let (dst, src) = (frame[..6].to_vec(), frame[6..12].to_vec());
        h[..6].copy_from_slice(&src);
        h[6..12].copy_from_slice(&dst);
    }
    h[l2 - 2..l2].copy_from_slice(&ethertype.to_be_bytes());
    h
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            sum += u64::from(pair[0]) << 8 | pair.get(1).map_or(0, |&lo| u64::from(lo));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IP header from `src` to `dst` carrying `len` bytes of `proto`,
/// and the pseudo-header its transport checksum covers.
fn ip_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + len).ok()?;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let sum = checksum(&[&h]);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            let mut pseudo = s.octets().to_vec();
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
            Some((h, pseudo))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let mut pseudo = s.octets().to_vec();
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
            Some((h, pseudo))
        }
        _ => None,
    }
}

fn tcp_reset(frame: &[u8], l2: usize, d: &Decoded, to: Toward) -> Option<Vec<u8>> {
    let ((s_ip, s_port), (r_ip, r_port)) = endpoints(d);
    let flags = d.tcp_flags;
    // Sequence space the packet takes: its data, and SYN and FIN count one.
    let used = d.payload_len as u32 + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
    let after = d.tcp_seq.wrapping_add(used);
    let (src, dst, sport, dport, seq, ack, out_flags) = match to {
        // To the sender, as its peer: what it acknowledged is where the
        // peer's sequence is; without an ACK, acknowledge what it sent.
        Toward::Sender if flags & ACK != 0 => (r_ip, s_ip, r_port, s_port, d.tcp.ack, 0, RST),
        Toward::Sender => (r_ip, s_ip, r_port, s_port, 0, after, RST | ACK),
        // To the receiver, as the sender: right after the packet's bytes.
        Toward::Receiver => (s_ip, r_ip, s_port, r_port, after, d.tcp.ack, RST | ACK),
    };
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, out_flags, 0, 0, 0, 0, 0, 0]);
    let (ip, pseudo) = ip_header(src, dst, PROTO_TCP, tcp.len())?;
    let sum = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let ethertype = if src.is_ipv4() { 0x0800 } else { 0x86dd };
    let mut out = l2_header(frame, l2, to, ethertype);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&tcp);
    Some(out)
}

fn unreachable(frame: &[u8], l2: usize, d: &Decoded, to: Toward) -> Option<Vec<u8>> {
    let ((s_ip, _), (r_ip, _)) = endpoints(d);
    // The error comes from the other end of the one it goes to.
    let (src, dst) = match to {
        Toward::Sender => (r_ip, s_ip),
        Toward::Receiver => (s_ip, r_ip),
    };
    let packet = frame.get(l2..)?;
    let (proto, kind, quote) = if src.is_ipv4() {
        // the IP header and the first 8 bytes of its payload (RFC 792)
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        (1u8, [3u8, 3], &packet[..(ihl + 8).min(packet.len())])
    } else {
        (58, [1, 4], &packet[..ICMP6_QUOTE.min(packet.len())])
    };
    let mut icmp = vec![kind[0], kind[1], 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    let (ip, pseudo) = ip_header(src, dst, proto, icmp.len())?;
    // ICMPv4's checksum covers the message only; ICMPv6's the pseudo-header too.
    let sum = if proto == 1 {
        checksum(&[&icmp])
    } else {
        checksum(&[&pseudo, &icmp])
    };
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let ethertype = if src.is_ipv4() { 0x0800 } else { 0x86dd };
    let mut out = l2_header(frame, l2, to, ethertype);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&icmp);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{flow::l4_checksum_ok, link};

    fn decode(frame: &[u8]) -> Decoded {
        link::decode(link::LinkType::Ethernet, frame).expect("a frame we built")
    }

    /// A TCP data segment from 198.18.0.1:40000 to 198.18.0.2:80.
    fn segment(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (40 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&1000u32.to_be_bytes());
        f.extend_from_slice(&5000u32.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn resets_both_ways_as_each_peer_expects() {
        let frame = segment(ACK | 0x08, b"GET / HTTP/1.1\r\n\r\n");
        let d = decode(&frame);
        let out = frames(&frame, &d, Reject::Both);
        assert_eq!(out.len(), 2);
        for (f, to) in &out {
            let r = decode(f);
            assert_eq!(l4_checksum_ok(f, &r), Some(true), "{to:?}");
            assert_eq!(r.tcp_flags & RST, RST);
            let (src, dst) = if r.from_a {
                (r.key.a(), r.key.b())
            } else {
                (r.key.b(), r.key.a())
            };
            match to {
                Toward::Sender => {
                    // from the server to the client, at the sequence the client acknowledged
                    assert_eq!(src.to_string(), "198.18.0.2:80");
                    assert_eq!(dst.to_string(), "198.18.0.1:40000");
                    assert_eq!(r.tcp_seq, 5000);
                    assert_eq!(&f[..6], &frame[6..12], "back to the sender's MAC");
                }
                Toward::Receiver => {
                    assert_eq!(src.to_string(), "198.18.0.1:40000");
                    assert_eq!(r.tcp_seq, 1000 + 18, "right after the request");
                    assert_eq!(&f[..12], &frame[..12]);
                }
            }
        }
        // a SYN: the reset acknowledges it
        let syn = segment(SYN, b"");
        let (f, _) = frames(&syn, &decode(&syn), Reject::Source).remove(0);
        let r = decode(&f);
        assert_eq!(r.tcp_flags, RST | ACK);
        assert_eq!(u32::from_be_bytes(f[42..46].try_into().unwrap()), 1001);
    }

    #[test]
    fn udp_gets_port_unreachable() {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        let d = decode(&f);
        let out = frames(&f, &d, Reject::Source);
        assert_eq!(out.len(), 1);
        let (icmp, to) = &out[0];
        assert_eq!(*to, Toward::Sender);
        let ip = &icmp[14..];
        assert_eq!(ip[9], 1);
        assert_eq!(&ip[12..16], &[198, 18, 0, 2], "from the destination");
        assert_eq!(&ip[20..22], &[3, 3], "port unreachable");
        assert_eq!(checksum(&[&ip[20..]]), 0, "ICMP checksum");
        assert_eq!(checksum(&[&ip[..20]]), 0, "IP checksum");
        assert_eq!(&ip[28..48], &f[14..34], "the original header quoted");
    }
}
