//! Flow keys and frame decoding.
//!
//! [`FlowKey`] is direction independent with the same rule as the XDP
//! program's `struct dp_flow_key` (xdp-redirect/src/bpf/dp_abi.h): endpoint
//! A is the one whose address is smaller as 16 bytes compared in order (IPv4
//! in the first 4, the rest zero), and on equal addresses the smaller port.
//! Ports are TCP/UDP ports, the echo identifier on both sides for ICMP echo,
//! zero otherwise. VLAN is the innermost tag's id. The data plane converts
//! this key into the kernel's; a root test checks both agree on real frames.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::wire::{self, ethernet, icmp, ipv4, ipv6, tcp, udp};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Direction-independent 5-tuple plus VLAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub addr_a: [u8; 16],
    pub addr_b: [u8; 16],
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    pub ipv6: bool,
    pub vlan: u16,
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, in canonical order.
    /// Returns the key and whether `src` became endpoint A.
    pub fn new(src: SocketAddr, dst: SocketAddr, proto: u8, vlan: u16) -> (FlowKey, bool) {
        let (s, d) = (addr_bytes(src.ip()), addr_bytes(dst.ip()));
        let src_is_a = (s, src.port()) <= (d, dst.port());
        let ((addr_a, port_a), (addr_b, port_b)) = if src_is_a {
            ((s, src.port()), (d, dst.port()))
        } else {
            ((d, dst.port()), (s, src.port()))
        };
        let key = FlowKey {
            addr_a,
            addr_b,
            port_a,
            port_b,
            proto,
            ipv6: src.is_ipv6(),
            vlan,
        };
        (key, src_is_a)
    }

    fn addr(&self, bytes: [u8; 16]) -> IpAddr {
        if self.ipv6 {
            IpAddr::V6(Ipv6Addr::from(bytes))
        } else {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        }
    }

    /// Endpoint A (the lower one).
    pub fn a(&self) -> SocketAddr {
        SocketAddr::new(self.addr(self.addr_a), self.port_a)
    }

    /// Endpoint B (the higher one).
    pub fn b(&self) -> SocketAddr {
        SocketAddr::new(self.addr(self.addr_b), self.port_b)
    }

    /// Transport name as nDPI spells it (`TCP`, `UDP`, `ICMP`, `ICMPV6`, or the number).
    pub fn l4_name(&self) -> String {
        match self.proto {
            PROTO_TCP => "TCP".into(),
            PROTO_UDP => "UDP".into(),
            PROTO_ICMP => "ICMP".into(),
            PROTO_ICMPV6 => "ICMPV6".into(),
            // as nDPI names them in its flow lists
            2 => "IGMP".into(),
            112 => "VRRP".into(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} <-> {}", self.l4_name(), self.a(), self.b())?;
        if self.vlan != 0 {
            write!(f, " vlan {}", self.vlan)?;
        }
        Ok(())
    }
}

fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// What the data plane needs to know about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub key: FlowKey,
    /// The frame's source is endpoint A of the key.
    pub from_a: bool,
    /// Offset of the transport payload in the frame, and its length.
    pub payload_offset: usize,
    pub payload_len: usize,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// TCP sequence number (0 for other protocols).
    pub tcp_seq: u32,
    /// Offset of the transport header in the frame.
    pub l4_offset: usize,
    /// The rest of the TCP header (zero for other protocols).
    pub tcp: TcpHeader,
    /// The IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Offset of the (innermost decoded) IP header in the frame.
    pub l3_offset: usize,
}

/// The TCP header fields stream tracking needs besides flags and sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHeader {
    pub ack: u32,
    pub window: u16,
    pub urgent: u16,
    /// Window scale option (RFC 7323), read on SYN segments only.
    pub window_scale: Option<u8>,
}

/// Whether the transport checksum of a decoded TCP or UDP packet is right
/// (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1): the ones' complement sum over
/// the pseudo-header and the segment. A UDP/IPv4 checksum of zero means
/// "none" and passes. None when `frame` does not hold the whole segment
/// (a cut copy) or the transport has no checksum to check here.
pub fn l4_checksum_ok(frame: &[u8], d: &Decoded) -> Option<bool> {
    if d.key.proto != PROTO_TCP && d.key.proto != PROTO_UDP {
        return None;
    }
    let segment = frame.get(d.l4_offset..d.payload_offset + d.payload_len)?;
    if d.key.proto == PROTO_UDP && segment.get(6..8)? == [0, 0] && d.key.a().is_ipv4() {
        return Some(true);
    }
    let (src, dst) = if d.from_a {
        (d.key.a().ip(), d.key.b().ip())
    } else {
        (d.key.b().ip(), d.key.a().ip())
    };
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |&lo| u64::from(lo));
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        _ => return None,
    }
    add(&[0, d.key.proto]);
    add(&(segment.len() as u32).to_be_bytes());
    add(segment);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Some(sum == 0xffff)
}

/// Why a frame has no flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not IPv4/IPv6 (ARP, LLDP...) or more VLAN tags than are followed.
    NotIp { ethertype: u16 },
    /// An IP fragment: no transport header to key on.
    Fragment,
    /// Truncated or malformed header.
    Wire(wire::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotIp { ethertype } => write!(f, "not IP (ethertype 0x{ethertype:04x})"),
            DecodeError::Fragment => f.write_str("IP fragment"),
            DecodeError::Wire(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<wire::Error> for DecodeError {
    fn from(e: wire::Error) -> Self {
        DecodeError::Wire(e)
    }
}

/// Decodes an Ethernet frame into its flow key and payload position, with the
/// same acceptance rules as the XDP program.
pub fn decode_ethernet(frame: &[u8]) -> Result<Decoded, DecodeError> {
    decode_ethernet_as(frame, false)
}

/// As [`decode_ethernet`], for a frame cut short by a snap length (its IP
/// header says it is longer than `frame`): the payload is what was captured.
pub fn decode_ethernet_cut(frame: &[u8]) -> Result<Decoded, DecodeError> {
    decode_ethernet_as(frame, true)
}

pub(crate) fn decode_ethernet_as(frame: &[u8], cut: bool) -> Result<Decoded, DecodeError> {
    let eth = ethernet::Frame::new_checked(frame)?;
    match eth.ethertype() {
        et @ (ethernet::ETHERTYPE_IPV4 | ethernet::ETHERTYPE_IPV6) => {
            decode_ip_as(frame, eth.payload_offset(), eth.vlan(), Some(et), cut)
        }
        ethertype => Err(DecodeError::NotIp { ethertype }),
    }
}

/// Decodes the IP packet that starts at `offset` in `frame`. `ethertype`
/// says which version to expect; `None` reads it from the version nibble
/// (raw IP captures).
pub fn decode_ip(
    frame: &[u8],
    offset: usize,
    vlan: u16,
    ethertype: Option<u16>,
) -> Result<Decoded, DecodeError> {
    decode_ip_as(frame, offset, vlan, ethertype, false)
}

pub(crate) fn decode_ip_as(
    frame: &[u8],
    offset: usize,
    vlan: u16,
    ethertype: Option<u16>,
    cut: bool,
) -> Result<Decoded, DecodeError> {
    let packet = frame.get(offset..).unwrap_or(&[]);
    let ethertype = match ethertype {
        Some(et) => et,
        None => match packet.first().map(|b| b >> 4) {
            Some(4) => ethernet::ETHERTYPE_IPV4,
            Some(6) => ethernet::ETHERTYPE_IPV6,
            _ => {
                return Err(DecodeError::Wire(wire::Error::Malformed {
                    layer: wire::Layer::Ipv4,
                    offset,
                    what: "raw IP packet with neither version 4 nor 6",
                }));
            }
        },
    };
    if ethertype == ethernet::ETHERTYPE_IPV4 {
        let ip = if cut {
            ipv4::Packet::new_cut(packet)
        } else {
            ipv4::Packet::new_checked(packet)
        }
        .map_err(|e| e.at(offset))?;
        if ip.is_fragment() {
            return Err(DecodeError::Fragment);
        }
        decode_l4(
            ip.payload(),
            offset + ip.header_len(),
            IpAddr::V4(ip.src()),
            IpAddr::V4(ip.dst()),
            ip.protocol(),
            vlan,
        )
        .map(|d| Decoded {
            ttl: ip.ttl(),
            l3_offset: offset,
            ..d
        })
    } else {
        let ip = if cut {
            ipv6::Packet::new_cut(packet)
        } else {
            ipv6::Packet::new_checked(packet)
        }
        .map_err(|e| e.at(offset))?;
        let upper = ip.upper_layer().map_err(|e| e.at(offset))?;
        if upper.fragment {
            return Err(DecodeError::Fragment);
        }
        let l4 = packet
            .get(upper.offset..40 + ip.payload().len())
            .unwrap_or(&[]);
        decode_l4(
            l4,
            offset + upper.offset,
            IpAddr::V6(ip.src()),
            IpAddr::V6(ip.dst()),
            upper.protocol,
            vlan,
        )
        .map(|d| Decoded {
            ttl: ip.hop_limit(),
            l3_offset: offset,
            ..d
        })
    }
}

fn decode_l4(
    l4: &[u8],
    l4_base: usize,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    vlan: u16,
) -> Result<Decoded, DecodeError> {
    let mut tcp_header = TcpHeader::default();
    let (sport, dport, header_len, tcp_flags, tcp_seq) = match proto {
        PROTO_TCP => {
            let t = tcp::Packet::new_checked(l4).map_err(|e| e.at(l4_base))?;
            tcp_header = TcpHeader {
                ack: t.ack(),
                window: t.window(),
                urgent: t.urgent(),
                window_scale: if t.flags() & tcp::SYN != 0 {
                    t.window_scale()
                } else {
                    None
                },
            };
            (
                t.src_port(),
                t.dst_port(),
                t.header_len(),
                t.flags(),
                t.seq(),
            )
        }
        PROTO_UDP => {
            let u = udp::Packet::new_checked(l4).map_err(|e| e.at(l4_base))?;
            (u.src_port(), u.dst_port(), 8, 0, 0)
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let i =
                icmp::Packet::new_checked(l4, proto == PROTO_ICMPV6).map_err(|e| e.at(l4_base))?;
            let id = i.echo().map_or(0, |(id, _)| id);
            (id, id, 8, 0, 0)
        }
        _ => (0, 0, 0, 0, 0),
    };
    let (key, from_a) = FlowKey::new(
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
        proto,
        vlan,
    );
    Ok(Decoded {
        key,
        from_a,
        payload_offset: l4_base + header_len,
        payload_len: l4.len() - header_len,
        tcp_flags,
        tcp_seq,
        l4_offset: l4_base,
        tcp: tcp_header,
        ttl: 0,
        l3_offset: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 12, 0, 0, b'p', b'i', b'n', b'g']);
        f
    }

    #[test]
    fn both_directions_give_one_key() {
        let fwd = decode_ethernet(&udp4([198, 18, 0, 9], 5000, [198, 18, 0, 2], 53)).unwrap();
        let rev = decode_ethernet(&udp4([198, 18, 0, 2], 53, [198, 18, 0, 9], 5000)).unwrap();
        assert_eq!(fwd.key, rev.key);
        assert!(!fwd.from_a && rev.from_a);
        assert_eq!(fwd.key.a(), "198.18.0.2:53".parse().unwrap());
        assert_eq!(fwd.key.addr_a[4..], [0; 12]);
        assert_eq!((fwd.payload_offset, fwd.payload_len), (42, 4));
        assert_eq!(fwd.key.to_string(), "UDP 198.18.0.2:53 <-> 198.18.0.9:5000");
    }

    #[test]
    fn a_frame_cut_short_decodes_only_when_said_so() {
        let mut frame = udp4([198, 18, 0, 9], 5000, [198, 18, 0, 2], 53);
        // the IP header claims 100 more bytes than were captured
        frame[16..18].copy_from_slice(&132u16.to_be_bytes());
        assert!(
            decode_ethernet(&frame).is_err(),
            "a whole frame must be whole"
        );
        let d = decode_ethernet_cut(&frame).unwrap();
        assert_eq!(
            (d.payload_offset, d.payload_len),
            (42, 4),
            "what was captured"
        );
        assert_eq!(d.key.b(), "198.18.0.9:5000".parse().unwrap());
    }

    #[test]
    fn equal_addresses_order_by_port() {
        let (k, src_is_a) = FlowKey::new(
            "[::1]:9".parse().unwrap(),
            "[::1]:7".parse().unwrap(),
            PROTO_TCP,
            0,
        );
        assert!(!src_is_a);
        assert_eq!((k.port_a, k.port_b), (7, 9));
    }

    #[test]
    fn arp_is_not_ip_and_garbage_never_panics() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(
            decode_ethernet(&arp),
            Err(DecodeError::NotIp { ethertype: 0x0806 })
        );
        let frame = udp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2);
        for len in 0..frame.len() {
            assert!(
                decode_ethernet(&frame[..len]).is_err(),
                "truncated to {len}"
            );
        }
        // Every single-byte corruption either decodes or errors, never panics.
        for i in 0..frame.len() {
            for v in [0u8, 0x0f, 0x40, 0xff] {
                let mut f = frame.clone();
                f[i] = v;
                let _ = decode_ethernet(&f);
            }
        }
    }
}
