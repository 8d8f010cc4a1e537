//! Ethernet II with up to eight 802.1Q / 802.1ad VLAN tags.

use super::{Error, Layer, be16, need};

mod field {
    use super::super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const HEADER_LEN: usize = 14;
    pub const VLAN_TCI: Field = 0..2;
    pub const VLAN_ETHERTYPE: Field = 2..4;
    pub const VLAN_LEN: usize = 4;
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// VLAN tags followed: more than the XDP program's `DP_MAX_VLAN_TAGS` (2),
/// because in inline mode the frames it gives up on come here, to be read
/// further instead of going around inspection.
pub const MAX_VLAN_TAGS: usize = 8;

/// An Ethernet frame with its VLAN tags resolved.
#[derive(Clone, Copy, Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    /// Ethertype after the VLAN tags.
    ethertype: u16,
    /// Innermost VLAN id, 0 if untagged.
    vlan: u16,
    vlan_tags: u8,
    payload_offset: usize,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks the Ethernet header and any VLAN tags. A tag beyond
    /// [`MAX_VLAN_TAGS`] is left unresolved: [`Frame::ethertype`] then
    /// reports a VLAN ethertype.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        need(Layer::Ethernet, b, field::HEADER_LEN)?;
        let mut ethertype = be16(b, field::ETHERTYPE);
        let mut offset = field::HEADER_LEN;
        let mut vlan = 0;
        let mut vlan_tags = 0;
        while (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ)
            && (vlan_tags as usize) < MAX_VLAN_TAGS
        {
            let tag = &b[offset..];
            need(Layer::Vlan, tag, field::VLAN_LEN).map_err(|e| e.at(offset))?;
            vlan = be16(tag, field::VLAN_TCI) & 0x0fff;
            ethertype = be16(tag, field::VLAN_ETHERTYPE);
            offset += field::VLAN_LEN;
            vlan_tags += 1;
        }
        Ok(Frame {
            buffer,
            ethertype,
            vlan,
            vlan_tags,
            payload_offset: offset,
        })
    }

    pub fn dst(&self) -> [u8; 6] {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        mac
    }

    pub fn src(&self) -> [u8; 6] {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        mac
    }

    /// The ethertype of the payload (after VLAN tags).
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Innermost VLAN id, 0 if untagged.
    pub fn vlan(&self) -> u16 {
        self.vlan
    }

    pub fn vlan_tags(&self) -> usize {
        self.vlan_tags as usize
    }

    /// Offset of the payload in the frame.
    pub fn payload_offset(&self) -> usize {
        self.payload_offset
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_offset..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QINQ: [u8; 22] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, // macs
        0x88, 0xa8, 0x00, 0x64, // outer tag, vid 100
        0x81, 0x00, 0x20, 0xc8, // inner tag, pcp 1, vid 200
        0x08, 0x00,
    ];

    #[test]
    fn double_tag_gives_inner_vlan_and_ethertype() {
        let f = Frame::new_checked(&QINQ[..]).unwrap();
        assert_eq!(f.vlan(), 200);
        assert_eq!(f.vlan_tags(), 2);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.payload_offset(), 22);
        assert_eq!(f.src(), [7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn truncated_tag_names_the_layer_and_offset() {
        let err = Frame::new_checked(&QINQ[..17]).unwrap_err();
        assert_eq!(
            err,
            Error::Truncated {
                layer: Layer::Vlan,
                offset: 14,
                needed: 4,
                available: 3
            }
        );
        assert!(Frame::new_checked(&QINQ[..13]).is_err());
    }
}
