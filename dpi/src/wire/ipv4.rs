//! IPv4 (RFC 791). Options are skipped, not interpreted.

use std::net::Ipv4Addr;

use super::{Error, Layer, be16, need};

mod field {
    use super::super::Field;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Field = 2..4;
    pub const FLAGS_FRAG: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
    pub const MIN_HEADER_LEN: usize = 20;
}

/// A checked IPv4 packet: version 4, header length >= 20 and within the
/// buffer, total length within the buffer (trailing link padding is ignored).
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_cut(buffer)?;
        let b = packet.buffer.as_ref();
        need(Layer::Ipv4, b, packet.total_len())?;
        Ok(packet)
    }

    /// As [`Packet::new_checked`], for a packet cut short by a capture's
    /// snap length: the total length may run past the buffer, and
    /// [`Packet::payload`] then ends where the buffer does.
    pub fn new_cut(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        need(Layer::Ipv4, b, field::MIN_HEADER_LEN)?;
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed {
                layer: Layer::Ipv4,
                offset: 0,
                what: "version is not 4",
            });
        }
        let header_len = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if header_len < field::MIN_HEADER_LEN {
            return Err(Error::Malformed {
                layer: Layer::Ipv4,
                offset: 0,
                what: "header length below 20 bytes",
            });
        }
        need(Layer::Ipv4, b, header_len)?;
        let total = usize::from(be16(b, field::TOTAL_LEN));
        if total < header_len {
            return Err(Error::Malformed {
                layer: Layer::Ipv4,
                offset: 2,
                what: "total length shorter than the header",
            });
        }
        Ok(Packet { buffer })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::TOTAL_LEN))
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// More-fragments set or a non-zero fragment offset.
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x3fff != 0
    }

    /// The payload, up to the total length (link padding excluded), or to
    /// the end of the buffer for a packet cut short ([`Packet::new_cut`]).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len()..self.total_len().min(b.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 198.18.0.1 -> 198.18.0.2, UDP, one 4-byte option (NOP x3 + EOL), 4 bytes payload
    const WITH_OPTION: [u8; 28] = [
        0x46, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2, 1, 1, 1, 0,
        0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn options_are_skipped() {
        let p = Packet::new_checked(&WITH_OPTION[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.src(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.protocol(), 17);
        assert!(!p.is_fragment());
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..WITH_OPTION.len() {
            assert!(
                Packet::new_checked(&WITH_OPTION[..len]).is_err(),
                "length {len}"
            );
        }
    }

    #[test]
    fn link_padding_is_not_payload() {
        let mut padded = WITH_OPTION.to_vec();
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 4);
    }

    #[test]
    fn bad_version_and_ihl_are_malformed() {
        let mut b = WITH_OPTION;
        b[0] = 0x66;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::Malformed { .. })
        ));
        b[0] = 0x44;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::Malformed { .. })
        ));
    }
}
