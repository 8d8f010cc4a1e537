//! IPv6 (RFC 8200) with a bounded walk over extension headers.

use std::net::Ipv6Addr;

use super::{Error, Layer, be16, need};

mod field {
    use super::super::Field;
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
    pub const HEADER_LEN: usize = 40;
}

pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_AUTH: u8 = 51;
pub const NEXT_DEST_OPTS: u8 = 60;
/// Extension headers walked: more than the XDP program's `DP_MAX_IPV6_EXT`
/// (4), because in inline mode the packets it gives up on come here, to be
/// read further instead of going around inspection.
pub const MAX_EXT_HEADERS: usize = 8;

/// A checked IPv6 packet: version 6, payload length within the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the upper-layer header starts after the extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// Protocol number of the upper layer.
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// A fragment header was found (the walk stops there).
    pub fragment: bool,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_cut(buffer)?;
        let b = packet.buffer.as_ref();
        need(
            Layer::Ipv6,
            b,
            field::HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)),
        )?;
        Ok(packet)
    }

    /// As [`Packet::new_checked`], for a packet cut short by a capture's
    /// snap length: the payload length may run past the buffer, and
    /// [`Packet::payload`] then ends where the buffer does.
    pub fn new_cut(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        need(Layer::Ipv6, b, field::HEADER_LEN)?;
        if b[field::VERSION] >> 4 != 6 {
            return Err(Error::Malformed {
                layer: Layer::Ipv6,
                offset: 0,
                what: "version is not 6",
            });
        }
        Ok(Packet { buffer })
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// Everything after the fixed header, up to the payload length (or the
    /// end of the buffer for a packet cut short, [`Packet::new_cut`]).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = field::HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN));
        &b[field::HEADER_LEN..end.min(b.len())]
    }

    /// Walks up to [`MAX_EXT_HEADERS`] extension headers (hop-by-hop,
    /// routing, destination options, AH, and an atomic fragment header) to
    /// the upper layer; stops at the fragment header of a real fragment.
    /// More extension headers than that is an error.
    pub fn upper_layer(&self) -> Result<UpperLayer, Error> {
        let payload = self.payload();
        let mut next = self.next_header();
        let mut offset = 0usize;
        for _ in 0..MAX_EXT_HEADERS {
            if next == NEXT_FRAGMENT {
                let frag = payload.get(offset..).unwrap_or(&[]);
                need(Layer::Ipv6Ext, frag, 8).map_err(|e| e.at(field::HEADER_LEN + offset))?;
                // An atomic fragment (RFC 6946: offset 0, no more
                // fragments) is a whole packet: walk past it, or it would
                // carry a flow past inspection on every packet.
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff9 == 0 {
                    next = frag[0];
                    offset += 8;
                    continue;
                }
                return Ok(UpperLayer {
                    protocol: next,
                    offset: field::HEADER_LEN + offset,
                    fragment: true,
                });
            }
            if !matches!(
                next,
                NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_AUTH
            ) {
                break;
            }
            let ext = payload.get(offset..).unwrap_or(&[]);
            need(Layer::Ipv6Ext, ext, 2).map_err(|e| e.at(field::HEADER_LEN + offset))?;
            let len = if next == NEXT_AUTH {
                (usize::from(ext[1]) + 2) * 4
            } else {
                (usize::from(ext[1]) + 1) * 8
            };
            need(Layer::Ipv6Ext, ext, len).map_err(|e| e.at(field::HEADER_LEN + offset))?;
            next = ext[0];
            offset += len;
        }
        if matches!(
            next,
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_AUTH | NEXT_FRAGMENT
        ) {
            return Err(Error::Malformed {
                layer: Layer::Ipv6Ext,
                offset: field::HEADER_LEN + offset,
                what: "more extension headers than are walked",
            });
        }
        Ok(UpperLayer {
            protocol: next,
            offset: field::HEADER_LEN + offset,
            fragment: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn walks_hop_by_hop_and_dest_opts() {
        let mut ext = vec![NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0; 8]);
        let p = packet(NEXT_HOP_BY_HOP, &ext);
        let ip = Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            ip.upper_layer().unwrap(),
            UpperLayer {
                protocol: 17,
                offset: 56,
                fragment: false
            }
        );
    }

    #[test]
    fn fragment_header_stops_the_walk() {
        let p = packet(NEXT_FRAGMENT, &[17, 0, 0, 1, 0, 0, 0, 1]);
        assert!(
            Packet::new_checked(&p[..])
                .unwrap()
                .upper_layer()
                .unwrap()
                .fragment
        );
    }

    #[test]
    fn an_atomic_fragment_is_a_whole_packet() {
        // offset 0, M = 0 (RFC 6946), then UDP
        let mut ext = vec![17, 0, 0, 0, 0, 0, 0, 1];
        ext.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        let p = packet(NEXT_FRAGMENT, &ext);
        let upper = Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
        assert_eq!(
            (upper.protocol, upper.offset, upper.fragment),
            (17, 48, false)
        );
    }

    #[test]
    fn too_many_extension_headers_is_malformed() {
        let mut ext = Vec::new();
        for _ in 0..MAX_EXT_HEADERS + 1 {
            ext.extend_from_slice(&[NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let p = packet(NEXT_DEST_OPTS, &ext);
        assert!(matches!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn payload_length_beyond_buffer_is_truncated() {
        let mut p = packet(17, &[0; 8]);
        p.truncate(44);
        assert!(matches!(
            Packet::new_checked(&p[..]),
            Err(Error::Truncated {
                layer: Layer::Ipv6,
                ..
            })
        ));
    }
}
