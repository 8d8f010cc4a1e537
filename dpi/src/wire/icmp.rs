//! ICMP (RFC 792) and ICMPv6 (RFC 4443): the common first 8 bytes.

use super::{Error, Layer, be16, need};

mod field {
    use super::super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const ECHO_ID: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    pub const HEADER_LEN: usize = 8;
}

pub const V4_ECHO_REPLY: u8 = 0;
pub const V4_ECHO_REQUEST: u8 = 8;
pub const V6_ECHO_REQUEST: u8 = 128;
pub const V6_ECHO_REPLY: u8 = 129;

/// A checked ICMP or ICMPv6 header.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    v6: bool,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// `v6` selects the ICMPv6 type numbers.
    pub fn new_checked(buffer: T, v6: bool) -> Result<Self, Error> {
        need(Layer::Icmp, buffer.as_ref(), field::HEADER_LEN)?;
        Ok(Packet { buffer, v6 })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The echo identifier and sequence, for echo requests and replies.
    pub fn echo(&self) -> Option<(u16, u16)> {
        let is_echo = if self.v6 {
            matches!(self.msg_type(), V6_ECHO_REQUEST | V6_ECHO_REPLY)
        } else {
            matches!(self.msg_type(), V4_ECHO_REQUEST | V4_ECHO_REPLY)
        };
        let b = self.buffer.as_ref();
        is_echo.then(|| (be16(b, field::ECHO_ID), be16(b, field::ECHO_SEQ)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_fields_only_for_echo_types() {
        let req = [8, 0, 0, 0, 0x12, 0x34, 0, 7];
        assert_eq!(
            Packet::new_checked(&req[..], false).unwrap().echo(),
            Some((0x1234, 7))
        );
        assert_eq!(Packet::new_checked(&req[..], true).unwrap().echo(), None);
        let unreachable = [3, 3, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Packet::new_checked(&unreachable[..], false).unwrap().echo(),
            None
        );
    }
}
