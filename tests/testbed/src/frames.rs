//! Builds test frames: Ethernet, VLAN tags, IPv4 (with options or fragment
//! bits) or IPv6 (with extension headers), TCP/UDP/ICMP, with correct
//! checksums, so the same frames can be fed to `BPF_PROG_TEST_RUN` and put on
//! a veth link. Also says where each header ends, for truncation tests.

use std::net::IpAddr;

/// The transport part of a test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP (v4) or ICMPv6 echo request (`reply` = false) or reply.
    Echo {
        id: u16,
        seq: u16,
        reply: bool,
    },
    /// Any other IP protocol number, with no transport header.
    Other(u8),
}

/// An IPv6 extension header to put before the transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Fragment header with this offset (8-byte units) and more-fragments bit.
    Fragment {
        offset: u16,
        more: bool,
    },
}

impl Ipv6Ext {
    fn number(self) -> u8 {
        match self {
            Ipv6Ext::HopByHop => 0,
            Ipv6Ext::Routing => 43,
            Ipv6Ext::DestOpts => 60,
            Ipv6Ext::Fragment { .. } => 44,
        }
    }
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_FIN: u8 = 0x01;

/// A test packet description; [`Packet::build`] turns it into frame bytes.
#[derive(Clone, Debug)]
pub struct Packet {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// VLAN ids, outermost first. The outer tag of two uses TPID 0x88a8 (802.1ad).
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// IPv4 options (padded to a multiple of 4 bytes); ignored for IPv6.
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment: (offset in 8-byte units, more fragments).
    pub ipv4_fragment: Option<(u16, bool)>,
    /// IPv6 extension headers, in order.
    pub ipv6_ext: Vec<Ipv6Ext>,
    pub payload: Vec<u8>,
    pub ttl: u8,
    /// TCP sequence and acknowledgement numbers (default 1000 and, with
    /// ACK, 1).
    pub tcp_seq_ack: Option<(u32, u32)>,
}

impl Packet {
    /// A packet between two addresses with default MACs and no payload.
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        Packet {
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            vlans: Vec::new(),
            src,
            dst,
            l4,
            ipv4_options: Vec::new(),
            ipv4_fragment: None,
            ipv6_ext: Vec::new(),
            payload: Vec::new(),
            ttl: 64,
            tcp_seq_ack: None,
        }
    }

    /// TCP: these sequence and acknowledgement numbers.
    pub fn with_seq(mut self, seq: u32, ack: u32) -> Self {
        self.tcp_seq_ack = Some((seq, ack));
        self
    }

    pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Self {
        Packet::new(src, dst, L4::Udp { sport, dport })
    }

    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Self {
        Packet::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn with_vlans(mut self, vlans: &[u16]) -> Self {
        self.vlans = vlans.to_vec();
        self
    }

    pub fn with_macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// The same flow seen in the other direction.
    pub fn reversed(&self) -> Self {
        let mut p = self.clone();
        std::mem::swap(&mut p.src, &mut p.dst);
        std::mem::swap(&mut p.src_mac, &mut p.dst_mac);
        p.l4 = match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => L4::Tcp {
                sport: dport,
                dport: sport,
                flags,
            },
            L4::Udp { sport, dport } => L4::Udp {
                sport: dport,
                dport: sport,
            },
            L4::Echo { id, seq, reply } => L4::Echo {
                id,
                seq,
                reply: !reply,
            },
            L4::Other(proto) => L4::Other(proto),
        };
        p
    }

    fn ip_proto(&self) -> u8 {
        match (&self.l4, self.src) {
            (L4::Tcp { .. }, _) => 6,
            (L4::Udp { .. }, _) => 17,
            (L4::Echo { .. }, IpAddr::V4(_)) => 1,
            (L4::Echo { .. }, IpAddr::V6(_)) => 58,
            (L4::Other(p), _) => *p,
        }
    }

    /// The frame bytes, with valid IPv4 header and transport checksums.
    pub fn build(&self) -> Vec<u8> {
        self.build_with_boundaries().0
    }

    /// Offsets at which each header ends (Ethernet with its VLAN tags, IP, each
    /// extension header, transport), in order; the last is where the payload starts.
    pub fn header_boundaries(&self) -> Vec<usize> {
        self.build_with_boundaries().1
    }

    fn build_with_boundaries(&self) -> (Vec<u8>, Vec<usize>) {
        let mut f = Vec::with_capacity(128 + self.payload.len());
        let mut bounds = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid: u16 = if i == 0 && self.vlans.len() > 1 {
                0x88a8
            } else {
                0x8100
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        bounds.push(f.len());

        let transport = self.transport_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut opts = self.ipv4_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0); // end-of-options padding
                }
                let hlen = 20 + opts.len();
                let total = hlen + transport.len();
                let ip_start = f.len();
                let (frag_off, more) = self.ipv4_fragment.unwrap_or((0, false));
                let frag = (frag_off & 0x1fff) | if more { 0x2000 } else { 0 };
                f.push(0x40 | (hlen / 4) as u8);
                f.push(0);
                f.extend_from_slice(&(total as u16).to_be_bytes());
                f.extend_from_slice(&0x1234u16.to_be_bytes());
                f.extend_from_slice(&frag.to_be_bytes());
                f.push(self.ttl);
                f.push(self.ip_proto());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&opts);
                let csum = checksum(&f[ip_start..ip_start + hlen], 0);
                f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
                bounds.push(f.len());
                let mut pseudo = 0u32;
                pseudo = sum_words(&src.octets(), pseudo);
                pseudo = sum_words(&dst.octets(), pseudo);
                pseudo += u32::from(self.ip_proto()) + transport.len() as u32;
                let l4_start = f.len();
                f.extend_from_slice(&transport);
                self.fill_l4_checksum(
                    &mut f[l4_start..],
                    if self.ip_proto() == 1 { 0 } else { pseudo },
                );
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut ext_bytes = Vec::new();
                let mut ext_bounds = Vec::new();
                for (i, ext) in self.ipv6_ext.iter().enumerate() {
                    let next = self
                        .ipv6_ext
                        .get(i + 1)
                        .map(|e| e.number())
                        .unwrap_or(self.ip_proto());
                    match ext {
                        Ipv6Ext::Fragment { offset, more } => {
                            let fo = (offset << 3) | u16::from(*more);
                            ext_bytes.extend_from_slice(&[next, 0]);
                            ext_bytes.extend_from_slice(&fo.to_be_bytes());
                            ext_bytes.extend_from_slice(&0xabcd_0001u32.to_be_bytes());
                        }
                        _ => {
                            // 8 bytes: next header, length 0, PadN option of 4
                            ext_bytes.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                        }
                    }
                    ext_bounds.push(ext_bytes.len());
                }
                let payload_len = ext_bytes.len() + transport.len();
                let first_next = self
                    .ipv6_ext
                    .first()
                    .map(|e| e.number())
                    .unwrap_or(self.ip_proto());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
                f.push(first_next);
                f.push(self.ttl);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                bounds.push(f.len());
                let ext_start = f.len();
                f.extend_from_slice(&ext_bytes);
                bounds.extend(ext_bounds.iter().map(|b| ext_start + b));
                let mut pseudo = 0u32;
                pseudo = sum_words(&src.octets(), pseudo);
                pseudo = sum_words(&dst.octets(), pseudo);
                pseudo += u32::from(self.ip_proto()) + transport.len() as u32;
                let l4_start = f.len();
                f.extend_from_slice(&transport);
                self.fill_l4_checksum(&mut f[l4_start..], pseudo);
            }
            _ => panic!("source and destination must be the same IP version"),
        }
        let transport_header = match self.l4 {
            L4::Tcp { .. } => 20,
            L4::Udp { .. } | L4::Echo { .. } => 8,
            L4::Other(_) => 0,
        };
        let payload_start = f.len() - self.payload.len();
        if transport_header > 0 {
            bounds.push(payload_start);
        }
        (f, bounds)
    }

    fn transport_bytes(&self) -> Vec<u8> {
        let mut t = Vec::new();
        match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                let (seq, ack) = self
                    .tcp_seq_ack
                    .unwrap_or((1000, u32::from(flags & TCP_ACK != 0)));
                t.extend_from_slice(&seq.to_be_bytes());
                t.extend_from_slice(&ack.to_be_bytes());
                t.push(5 << 4);
                t.push(flags);
                t.extend_from_slice(&64240u16.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 0]);
            }
            L4::Udp { sport, dport } => {
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                t.extend_from_slice(&[0, 0]);
            }
            L4::Echo { id, seq, reply } => {
                let ty = match (self.src.is_ipv4(), reply) {
                    (true, false) => 8,
                    (true, true) => 0,
                    (false, false) => 128,
                    (false, true) => 129,
                };
                t.extend_from_slice(&[ty, 0, 0, 0]);
                t.extend_from_slice(&id.to_be_bytes());
                t.extend_from_slice(&seq.to_be_bytes());
            }
            L4::Other(_) => {}
        }
        t.extend_from_slice(&self.payload);
        t
    }

    fn fill_l4_checksum(&self, t: &mut [u8], pseudo: u32) {
        let at = match self.l4 {
            L4::Tcp { .. } => 16,
            L4::Udp { .. } => 6,
            L4::Echo { .. } => 2,
            L4::Other(_) => return,
        };
        let mut csum = checksum(t, pseudo);
        if csum == 0 && matches!(self.l4, L4::Udp { .. }) {
            csum = 0xffff;
        }
        t[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    }
}

fn sum_words(bytes: &[u8], mut acc: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// An address literal of a test or benchmark (panics on a typo there).
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// The Internet checksum (RFC 1071) of `bytes`, starting from `acc`.
pub fn checksum(bytes: &[u8], acc: u32) -> u16 {
    let mut sum = u64::from(sum_words(bytes, acc));
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(src_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// A DNS query for `name`, type A, class IN (RFC 1035 §4.1), id 0x1234,
/// recursion desired.
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// A minimal TLS 1.3-style ClientHello record (SNI `sni`, ALPN "h2",
/// supported_versions with a GREASE value and TLS 1.3, one cipher suite):
/// enough for a classifier to name TLS and read the SNI, ALPN and JA4.
pub fn tls_client_hello(sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
    ext.extend_from_slice(&[0, 43, 0, 5, 4, 0x1a, 0x1a, 0x03, 0x04]);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = Packet::udp(
            "198.18.0.1".parse().unwrap(),
            1000,
            "198.18.0.2".parse().unwrap(),
            53,
        )
        .with_payload(b"hello");
        let f = p.build();
        assert_eq!(
            checksum(&f[14..34], 0),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(p.header_boundaries(), vec![14, 34, 42]);
    }

    #[test]
    fn boundaries_cover_vlans_and_extensions() {
        let mut p = Packet::tcp(
            "2001:db8::1".parse().unwrap(),
            1,
            "2001:db8::2".parse().unwrap(),
            2,
            TCP_SYN,
        )
        .with_vlans(&[10, 20]);
        p.ipv6_ext = vec![Ipv6Ext::HopByHop, Ipv6Ext::DestOpts];
        assert_eq!(
            p.header_boundaries(),
            vec![22, 22 + 40, 22 + 48, 22 + 56, 22 + 56 + 20]
        );
        assert_eq!(p.build().len(), 22 + 56 + 20);
    }
}
