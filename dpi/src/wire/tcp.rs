//! TCP (RFC 9293) header.

use super::{Error, Layer, be16, be32, need};

mod field {
    use super::super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ: Field = 4..8;
    pub const ACK: Field = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const MIN_HEADER_LEN: usize = 20;
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// Option kinds (RFC 9293 §3.2, RFC 7323).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_WINDOW_SCALE: u8 = 3;

/// A checked TCP segment: data offset >= 5 and the whole header (with options) present.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        need(Layer::Tcp, b, field::MIN_HEADER_LEN)?;
        let header_len = usize::from(b[field::DATA_OFFSET] >> 4) * 4;
        if header_len < field::MIN_HEADER_LEN {
            return Err(Error::Malformed {
                layer: Layer::Tcp,
                offset: field::DATA_OFFSET,
                what: "data offset below 5",
            });
        }
        need(Layer::Tcp, b, header_len)?;
        Ok(Packet { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Receive window, unscaled.
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer (meaningful with [`URG`]).
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// The window scale option's shift (RFC 7323 §2.2), capped at 14 as the
    /// RFC says; None without the option or with a malformed option list.
    pub fn window_scale(&self) -> Option<u8> {
        let b = self.buffer.as_ref();
        let mut options = &b[field::MIN_HEADER_LEN..self.header_len()];
        while let Some(&kind) = options.first() {
            match kind {
                OPT_END => return None,
                OPT_NOP => options = &options[1..],
                _ => {
                    let len = usize::from(*options.get(1)?);
                    if len < 2 || len > options.len() {
                        return None;
                    }
                    if kind == OPT_WINDOW_SCALE && len == 3 {
                        return Some(options[2].min(14));
                    }
                    options = &options[len..];
                }
            }
        }
        None
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 40000 -> 443, SYN, data offset 6 (one 4-byte option), 2 bytes payload
    const SEGMENT: [u8; 26] = [
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, 2, 4,
        5, 0xb4, 0xaa, 0xbb,
    ];

    #[test]
    fn reads_ports_flags_and_payload() {
        let t = Packet::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (40000, 443));
        assert_eq!(t.flags(), SYN);
        assert_eq!(t.seq(), 1);
        assert_eq!(t.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn window_scale_is_read_from_the_options() {
        // MSS 1460, NOP, window scale 7, then 2 bytes of payload
        let mut seg = vec![
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        ];
        seg.extend_from_slice(&[2, 4, 5, 0xb4, 1, 3, 3, 7, 0, 0, 0, 0, 0xaa, 0xbb]);
        let t = Packet::new_checked(&seg[..]).unwrap();
        assert_eq!(t.window_scale(), Some(7));
        assert_eq!(t.window(), 0xfaf0);
        assert_eq!(
            Packet::new_checked(&SEGMENT[..]).unwrap().window_scale(),
            None
        );
        // an option whose length runs past the header
        seg[21] = 40;
        assert_eq!(Packet::new_checked(&seg[..]).unwrap().window_scale(), None);
    }

    #[test]
    fn options_must_be_present() {
        assert!(Packet::new_checked(&SEGMENT[..23]).is_err());
        let mut bad = SEGMENT;
        bad[12] = 0x40;
        assert!(matches!(
            Packet::new_checked(&bad[..]),
            Err(Error::Malformed { .. })
        ));
    }
}
