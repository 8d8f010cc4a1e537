//! QUIC: long-header Initial packets of known versions. (Decrypting the
//! Initial to read the SNI comes next.)

use super::{Dissect, Payload, Protocol, Scratch};

pub(crate) const V1: u32 = 0x0000_0001;
pub(crate) const V2: u32 = 0x6b33_43cf;

pub(crate) fn known_version(v: u32) -> bool {
    matches!(v, V1 | V2) || v & 0xffff_ff00 == 0xff00_0000 || v & 0x0f0f_0f0f == 0x0a0a_0a0a
}

pub(crate) fn quic(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 1200.min(64) || d[0] & 0x80 == 0 || d[0] & 0x40 == 0 {
        return Dissect::No;
    }
    let version = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
    if known_version(version) && p.from_client && d.len() >= 1200 {
        return Dissect::Match(Protocol::Quic, None);
    }
    Dissect::No
}
