//! UDP (RFC 768) header.

use super::{Error, Layer, be16, need};

mod field {
    use super::super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const HEADER_LEN: usize = 8;
}

/// A checked UDP datagram header. The length field is not trusted for the
/// payload bounds beyond the buffer: the payload is what the IP layer gave.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        need(Layer::Udp, buffer.as_ref(), field::HEADER_LEN)?;
        Ok(Packet { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_header() {
        let d = [0x13, 0x88, 0, 53, 0, 10, 0, 0, 1, 2];
        let u = Packet::new_checked(&d[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.length()), (5000, 53, 10));
        assert_eq!(u.payload(), &[1, 2]);
        assert!(Packet::new_checked(&d[..7]).is_err());
    }
}
