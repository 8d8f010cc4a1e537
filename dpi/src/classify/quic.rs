//! QUIC: decrypts the client's Initial packets (RFC 9001 §5, RFC 9369 for
//! v2) as nDPI and Wireshark do, gathers the CRYPTO frames, and reads the
//! TLS ClientHello inside for the SNI. A datagram is QUIC only if its Initial
//! decrypts: the AEAD tag makes a false match practically impossible, which
//! matters on UDP/443 where DNSCrypt and others look like random long headers.
//! Google QUIC (Q0xx) Initials are plaintext and carry the SNI as a CHLO tag.

use aes::{
    Aes128,
    cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray},
};
use aes_gcm::{
    Aes128Gcm, Nonce,
    aead::{Aead, Payload as AeadPayload},
};
use hkdf::Hkdf;
use sha2::Sha256;

use super::{Dissect, Payload, Protocol, Scratch, tls};

pub(crate) const V1: u32 = 0x0000_0001;
pub(crate) const V2: u32 = 0x6b33_43cf;

/// Most CRYPTO bytes gathered from a client's Initials (a post-quantum
/// ClientHello spans two or three packets).
const MAX_CRYPTO: usize = 8 * 1024;

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];
const SALT_DRAFT29: [u8; 20] = [
    0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97, 0x86, 0xf1, 0x9c, 0x61, 0x11, 0xe0,
    0x43, 0x90, 0xa8, 0x99,
];
const SALT_DRAFT23: [u8; 20] = [
    0xc3, 0xee, 0xf7, 0x12, 0xc7, 0x2e, 0xbb, 0x5a, 0x11, 0xa7, 0xd2, 0x43, 0x2b, 0xb4, 0x63, 0x65,
    0xbe, 0xf9, 0xf5, 0x02,
];
const SALT_DRAFT22: [u8; 20] = [
    0x7f, 0xbc, 0xdb, 0x0e, 0x7c, 0x66, 0xbb, 0xe9, 0x19, 0x3a, 0x96, 0xcd, 0x21, 0x51, 0x9e, 0xbd,
    0x7a, 0x02, 0x64, 0x4a,
];

/// The Initial salts (with the label prefix) a version's client Initial
/// may be protected with, most likely first. The AEAD tag tells which (if
/// any) is right, so trying a few costs no false match.
fn version_params(version: u32) -> &'static [(&'static [u8; 20], &'static str)] {
    match version {
        // RFC 9001's keys; drafts 33 and 34 already used them.
        V1 | 0xff00_0021..=0xff00_0022 => &[(&SALT_V1, "quic")],
        V2 => &[(&SALT_V2, "quicv2")],
        0xff00_001d..=0xff00_0020 => &[(&SALT_DRAFT29, "quic")],
        0xff00_0017..=0xff00_001c => &[(&SALT_DRAFT23, "quic")],
        0xff00_0016 => &[(&SALT_DRAFT22, "quic")],
        // Facebook's mvfst: its draft-22 and draft-27 versions and its
        // experimental one take those drafts' salts; newer numbers
        // follow later drafts or v1.
        0xface_b001 => &[(&SALT_DRAFT22, "quic")],
        0xface_b002 | 0xface_b00e => &[(&SALT_DRAFT23, "quic")],
        v if v & 0xffff_f000 == 0xface_b000 => &[
            (&SALT_V1, "quic"),
            (&SALT_DRAFT29, "quic"),
            (&SALT_DRAFT23, "quic"),
        ],
        // RFC 9000 §15: a version reserved to force version negotiation
        // (0x?a?a?a?a) carries whichever Initial the client would send.
        v if v & 0x0f0f_0f0f == 0x0a0a_0a0a => &[(&SALT_V1, "quic"), (&SALT_DRAFT29, "quic")],
        _ => &[],
    }
}

fn expand_label(secret: &[u8], label: &str, len: usize) -> Option<Vec<u8>> {
    let hk = Hkdf::<Sha256>::from_prk(secret).ok()?;
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    let mut out = vec![0u8; len];
    hk.expand(&info, &mut out).ok()?;
    Some(out)
}

struct Keys {
    key: Vec<u8>,
    iv: Vec<u8>,
    hp: Vec<u8>,
}

fn client_keys(salt: &[u8; 20], prefix: &str, dcid: &[u8]) -> Option<Keys> {
    let (initial, _) = Hkdf::<Sha256>::extract(Some(salt), dcid);
    let client = expand_label(&initial, "client in", 32)?;
    Some(Keys {
        key: expand_label(&client, &format!("{prefix} key"), 16)?,
        iv: expand_label(&client, &format!("{prefix} iv"), 12)?,
        hp: expand_label(&client, &format!("{prefix} hp"), 16)?,
    })
}

/// A QUIC variable-length integer at `at`: (value, bytes used).
fn varint(d: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *d.get(at)?;
    let len = 1usize << (first >> 6);
    let bytes = d.get(at..at + len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = v << 8 | u64::from(*b);
    }
    Some((v, len))
}

/// Decrypts the Initial at the start of `d`; returns its plaintext frames.
fn decrypt_initial(d: &[u8], version: u32) -> Option<Vec<u8>> {
    let initial_type = if version == V2 { 1 } else { 0 };
    if (d[0] >> 4) & 3 != initial_type {
        return None;
    }
    let mut at = 5;
    let dcid_len = usize::from(*d.get(at)?);
    let dcid = d.get(at + 1..at + 1 + dcid_len)?;
    at += 1 + dcid_len;
    let scid_len = usize::from(*d.get(at)?);
    at += 1 + scid_len;
    let (token_len, used) = varint(d, at)?;
    at += used + usize::try_from(token_len).ok()?;
    let (length, used) = varint(d, at)?;
    at += used;
    let pn_offset = at;
    let end = pn_offset.checked_add(usize::try_from(length).ok()?)?;
    if end > d.len() || dcid_len > 20 || length < 20 {
        return None;
    }
    version_params(version)
        .iter()
        .find_map(|(salt, prefix)| open_initial(d, dcid, pn_offset, end, salt, prefix))
}

/// Removes header protection and decrypts with one candidate's keys.
fn open_initial(
    d: &[u8],
    dcid: &[u8],
    pn_offset: usize,
    end: usize,
    salt: &[u8; 20],
    prefix: &str,
) -> Option<Vec<u8>> {
    let keys = client_keys(salt, prefix, dcid)?;

    // Header protection: the sample starts 4 bytes after the packet number.
    let sample = d.get(pn_offset + 4..pn_offset + 20)?;
    let hp = Aes128::new_from_slice(&keys.hp).ok()?;
    let mut mask = GenericArray::clone_from_slice(sample);
    hp.encrypt_block(&mut mask);
    let first = d[0] ^ (mask[0] & 0x0f);
    let pn_len = usize::from(first & 3) + 1;
    let mut header = d[..pn_offset + pn_len].to_vec();
    header[0] = first;
    let mut pn = 0u64;
    for i in 0..pn_len {
        header[pn_offset + i] ^= mask[1 + i];
        pn = pn << 8 | u64::from(header[pn_offset + i]);
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&keys.iv);
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let aead = Aes128Gcm::new_from_slice(&keys.key).ok()?;
    aead.decrypt(
        Nonce::from_slice(&nonce),
        AeadPayload {
            msg: &d[pn_offset + pn_len..end],
            aad: &header,
        },
    )
    .ok()
}

/// Copies the CRYPTO frames of a decrypted Initial into `crypto` at their offsets.
fn gather_crypto(frames: &[u8], crypto: &mut Vec<u8>) -> Option<()> {
    let mut at = 0;
    while at < frames.len() {
        let (kind, used) = varint(frames, at)?;
        at += used;
        match kind {
            0x00 | 0x01 => {} // PADDING, PING
            0x02 | 0x03 => {
                // ACK: largest, delay, range count, first range, ranges (and ECN counts)
                let mut fields = 4;
                let mut i = 0;
                while i < fields {
                    let (v, used) = varint(frames, at)?;
                    at += used;
                    if i == 2 {
                        fields += 2 * usize::try_from(v).ok()?;
                    }
                    i += 1;
                }
                if kind == 0x03 {
                    for _ in 0..3 {
                        at += varint(frames, at)?.1;
                    }
                }
            }
            0x06 => {
                let (offset, used) = varint(frames, at)?;
                at += used;
                let (len, used) = varint(frames, at)?;
                at += used;
                let data = frames.get(at..at + usize::try_from(len).ok()?)?;
                at += data.len();
                let offset = usize::try_from(offset).ok()?;
                if offset + data.len() <= MAX_CRYPTO {
                    if crypto.len() < offset + data.len() {
                        crypto.resize(offset + data.len(), 0);
                    }
                    crypto[offset..offset + data.len()].copy_from_slice(data);
                }
            }
            0x1c | 0x1d => return Some(()), // CONNECTION_CLOSE: nothing more of use
            _ => return None,
        }
    }
    Some(())
}

/// The SNI tag of a gQUIC (Q043/Q046/Q050) client hello, if present.
fn gquic_sni(d: &[u8]) -> Option<String> {
    let chlo = d.windows(4).position(|w| w == b"CHLO")?;
    let tags = usize::from(u16::from_le_bytes([*d.get(chlo + 4)?, *d.get(chlo + 5)?]));
    let index = chlo + 8;
    let values = index + tags * 8;
    let mut start = 0usize;
    for i in 0..tags {
        let entry = d.get(index + i * 8..index + i * 8 + 8)?;
        let end = u32::from_le_bytes(entry[4..8].try_into().ok()?) as usize;
        if &entry[..4] == b"SNI\0" {
            let sni = d.get(values + start..values + end)?;
            return Some(String::from_utf8_lossy(sni).to_ascii_lowercase());
        }
        start = end;
    }
    None
}

fn is_gquic_tag(v: &[u8]) -> bool {
    v.len() == 4 && v[0] == b'Q' && v[1] == b'0' && v[2].is_ascii_digit() && v[3].is_ascii_digit()
}

pub(crate) fn quic(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 21 {
        return Dissect::No;
    }
    if d[0] & 0x80 == 0 {
        // Legacy gQUIC public header (before Q046): flags with the version
        // bit and an 8-byte connection id, then the version tag.
        if p.from_client && d[0] & 0x09 == 0x09 && is_gquic_tag(&d[9..13]) {
            return Dissect::Match(Protocol::Quic, gquic_sni(d));
        }
        return if s.quic_crypto.is_empty() {
            Dissect::No
        } else {
            Dissect::More
        };
    }
    let version = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
    if p.from_client && d[0] & 0x40 != 0 && !version_params(version).is_empty() {
        let Some(frames) = decrypt_initial(d, version) else {
            return if s.quic_crypto.is_empty() {
                Dissect::No
            } else {
                Dissect::More
            };
        };
        if gather_crypto(&frames, &mut s.quic_crypto).is_none() {
            return Dissect::Match(Protocol::Quic, None);
        }
        let hello = &s.quic_crypto;
        if hello.len() >= 4 && hello[0] == 1 {
            let len =
                usize::from(hello[1]) << 16 | usize::from(hello[2]) << 8 | usize::from(hello[3]);
            if hello.len() >= 4 + len {
                let hello = tls::parse_client_hello(&hello[4..4 + len], false);
                s.quic_crypto = Vec::new();
                let sni = hello.and_then(|h| {
                    s.info.ja4 = Some(h.ja4('q'));
                    s.info.sni_raw = h.sni_raw.clone();
                    s.info.alpn = h.alpn;
                    s.info.tls_version = Some(h.version);
                    h.sni
                });
                return Dissect::Match(Protocol::Quic, sni);
            }
            if len + 4 > MAX_CRYPTO || p.index >= 3 {
                return Dissect::Match(Protocol::Quic, None);
            }
        }
        // The hello continues in the next Initial.
        return Dissect::More;
    }
    // RFC 9000 §15: versions 0x?a?a?a?a are reserved to force version
    // negotiation. A full-size client Initial with one is QUIC by design.
    if p.from_client && version & 0x0f0f_0f0f == 0x0a0a_0a0a && d.len() >= 1200 && d[5] <= 20 {
        return Dissect::Match(Protocol::Quic, None);
    }
    // Google QUIC: version tag "Q0xx" in a long header, plaintext CHLO.
    if is_gquic_tag(&d[1..5]) && p.from_client {
        return Dissect::Match(Protocol::Quic, gquic_sni(d));
    }
    if !s.quic_crypto.is_empty() {
        Dissect::More
    } else {
        Dissect::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9001 Appendix A: the client Initial's keys for DCID 0x8394c8f03e515708.
    #[test]
    fn rfc9001_initial_keys() {
        let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
        let keys = client_keys(&SALT_V1, "quic", &dcid).unwrap();
        assert_eq!(keys.key, hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(keys.iv, hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(keys.hp, hex("9f50449e04a0e810283a1e9933adedd2"));
    }

    /// RFC 9369 Appendix A: the same DCID under QUIC v2.
    #[test]
    fn rfc9369_v2_initial_keys() {
        let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
        let keys = client_keys(&SALT_V2, "quicv2", &dcid).unwrap();
        assert_eq!(keys.key, hex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(keys.iv, hex("91f73e2351d8fa91660e909f"));
        assert_eq!(keys.hp, hex("45b95e15235d6f45a6b19cbcb0294ba9"));
    }

    /// A client Initial carrying a ClientHello for `sni`, protected with
    /// `salt` (RFC 9001 §5: AEAD, then header protection).
    fn initial(version: u32, salt: &[u8; 20], sni: &str) -> Vec<u8> {
        let mut hello = vec![0x03, 0x03];
        hello.extend_from_slice(&[0; 32]);
        hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        let mut sni_ext = vec![0, 0];
        let name = sni.as_bytes();
        let list = (name.len() + 3) as u16;
        sni_ext.extend_from_slice(&(list + 2).to_be_bytes());
        sni_ext.extend_from_slice(&list.to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        hello.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
        hello.extend_from_slice(&sni_ext);
        let mut msg = vec![1, 0, (hello.len() >> 8) as u8, hello.len() as u8];
        msg.extend_from_slice(&hello);
        // CRYPTO frame at offset 0, then PADDING to a full Initial
        let mut frames = vec![0x06, 0x00, 0x40 | (msg.len() >> 8) as u8, msg.len() as u8];
        frames.extend_from_slice(&msg);
        frames.resize(1100, 0);
        let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
        let keys = client_keys(salt, "quic", &dcid).unwrap();
        let mut header = vec![0xc3];
        header.extend_from_slice(&version.to_be_bytes());
        header.push(dcid.len() as u8);
        header.extend_from_slice(&dcid);
        header.extend_from_slice(&[0, 0]); // no SCID, no token
        let length = frames.len() + 16 + 4;
        header.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
        let pn_offset = header.len();
        header.extend_from_slice(&[0, 0, 0, 2]); // packet number 2, 4 bytes
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&keys.iv);
        nonce[11] ^= 2;
        let sealed = Aes128Gcm::new_from_slice(&keys.key)
            .unwrap()
            .encrypt(
                Nonce::from_slice(&nonce),
                AeadPayload {
                    msg: &frames,
                    aad: &header,
                },
            )
            .unwrap();
        let mut packet = header;
        packet.extend_from_slice(&sealed);
        let hp = Aes128::new_from_slice(&keys.hp).unwrap();
        let mut mask = GenericArray::clone_from_slice(&packet[pn_offset + 4..pn_offset + 20]);
        hp.encrypt_block(&mut mask);
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..4 {
            packet[pn_offset + i] ^= mask[1 + i];
        }
        packet
    }

    /// mvfst's versions take the salts of the drafts they implement (as
    /// nDPI and mvfst use them); a later mvfst number is tried with each.
    #[test]
    fn mvfst_and_draft_versions_decrypt() {
        let cases: [(u32, &[u8; 20]); 6] = [
            (V1, &SALT_V1),
            (0xface_b001, &SALT_DRAFT22),
            (0xface_b002, &SALT_DRAFT23),
            (0xface_b00e, &SALT_DRAFT23),
            (0xface_b010, &SALT_V1),
            (0xff00_001d, &SALT_DRAFT29),
        ];
        for (version, salt) in cases {
            let d = initial(version, salt, "a.example");
            let p = Payload {
                data: &d,
                from_client: true,
                src_port: 40000,
                dst_port: 443,
                index: 0,
                l4: 17,
            };
            assert_eq!(
                quic(&p, &mut Scratch::default()),
                Dissect::Match(Protocol::Quic, Some("a.example".into())),
                "{version:#x}"
            );
        }
        // the wrong salt for the version does not decrypt
        let d = initial(0xface_b002, &SALT_V1, "a.example");
        assert!(decrypt_initial(&d, 0xface_b002).is_none());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn random_long_headers_are_not_quic() {
        let mut d = vec![0xc3, 0, 0, 0, 1, 8];
        d.extend_from_slice(&[0x55; 1300]);
        let p = Payload {
            data: &d,
            from_client: true,
            src_port: 1,
            dst_port: 443,
            index: 0,
            l4: 17,
        };
        assert_eq!(quic(&p, &mut Scratch::default()), Dissect::No);
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x25], 0), Some((37, 1)));
        assert_eq!(varint(&[0x7b, 0xbd], 0), Some((15293, 2)));
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d], 0), Some((494_878_333, 4)));
        assert_eq!(varint(&[0x9d, 0x7f], 0), None);
    }
}
