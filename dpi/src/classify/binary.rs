//! Binary protocols. Every check is structural (lengths that must agree,
//! magic values, version fields); ports only narrow where a structure alone
//! is too weak to trust, and each such use says so.

use super::{Dissect, Payload, Protocol, Scratch, tls::Reader};
use crate::flow::PROTO_TCP;

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// Service Location Protocol (RFC 2165 v1, RFC 2608 v2): version, function
/// id and a length field equal to the datagram length.
pub(crate) fn slp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    let ok = match d.first() {
        Some(2) if d.len() >= 16 => {
            let len = usize::from(d[2]) << 16 | usize::from(d[3]) << 8 | usize::from(d[4]);
            (1..=11).contains(&d[1]) && len == d.len()
        }
        Some(1) if d.len() >= 12 => {
            (1..=10).contains(&d[1]) && be16(d, 2).map(usize::from) == Some(d.len())
        }
        _ => false,
    };
    if ok {
        Dissect::Match(Protocol::Slp, None)
    } else {
        Dissect::No
    }
}

/// Decodes a NetBIOS first-level encoded name (32 bytes 'A'..'P').
fn netbios_name(encoded: &[u8]) -> Option<String> {
    if encoded.len() != 32 || !encoded.iter().all(|b| (b'A'..=b'P').contains(b)) {
        return None;
    }
    let raw: Vec<u8> = encoded
        .chunks(2)
        .map(|c| ((c[0] - b'A') << 4) | (c[1] - b'A'))
        .collect();
    // 15 characters padded with spaces, then the suffix byte.
    let name = String::from_utf8_lossy(&raw[..15])
        .trim_end()
        .to_lowercase();
    (!name.is_empty() && name.chars().all(|c| !c.is_control())).then_some(name)
}

/// NetBIOS name service (UDP 137): a DNS-like header and an encoded name.
pub(crate) fn netbios_ns(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if !p.port(137) || d.len() < 12 + 34 {
        return Dissect::No;
    }
    let flags = be16(d, 2).unwrap_or(0);
    let opcode = (flags >> 11) & 0xf;
    if !matches!(opcode, 0 | 5 | 6 | 7 | 8)
        || be16(d, 4).unwrap_or(99) > 1 && be16(d, 6).unwrap_or(99) > 1
    {
        return Dissect::No;
    }
    match (d[12], netbios_name(&d[13..45])) {
        (32, Some(name)) => Dissect::Match(Protocol::NetBios, Some(name)),
        (32, None) if d[13..45].iter().all(|b| (b'A'..=b'P').contains(b)) => {
            Dissect::Match(Protocol::NetBios, None)
        }
        // node status queries use '*' (CKAAAA...), decoded above as not printable
        (32, None) => Dissect::Match(Protocol::NetBios, None),
        _ => Dissect::No,
    }
}

/// NetBIOS datagram service (UDP 138): message type, then the source name.
pub(crate) fn netbios_dgm(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if !p.port(138) || d.len() < 14 + 34 || !(0x10..=0x16).contains(&d[0]) {
        return Dissect::No;
    }
    if d[14] != 32 {
        return Dissect::No;
    }
    Dissect::Match(Protocol::NetBios, netbios_name(&d[15..47]))
}

/// NetBIOS session service (TCP 139): session request/response packets.
pub(crate) fn netbios_session(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if !p.port(139) || d.len() < 4 {
        return Dissect::No;
    }
    let len = usize::from(d[1] & 1) << 16 | usize::from(be16(d, 2).unwrap_or(0));
    match d[0] {
        0x81 if len == d.len() - 4 && d.get(4) == Some(&32) => {
            Dissect::Match(Protocol::NetBios, d.get(5..37).and_then(netbios_name))
        }
        0x82 | 0x83 | 0x85 if len == d.len() - 4 => Dissect::Match(Protocol::NetBios, None),
        _ => Dissect::No,
    }
}

/// DHCP (RFC 2131): BOOTP header with the magic cookie; host from option 12.
pub(crate) fn dhcp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 240 || !matches!(d[0], 1 | 2) || be32(d, 236) != Some(0x6382_5363) {
        return Dissect::No;
    }
    let mut host = None;
    let mut i = 240;
    while i + 1 < d.len() {
        let (code, len) = (d[i], usize::from(d[i + 1]));
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            12 => {
                if let Some(v) = d.get(i + 2..i + 2 + len) {
                    let name = String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_lowercase();
                    host = (!name.is_empty()).then_some(name);
                }
            }
            _ => {}
        }
        i += 2 + len;
    }
    Dissect::Match(Protocol::Dhcp, host)
}

/// DHCPv6 (RFC 8415) on its ports: a known message type.
pub(crate) fn dhcpv6(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    if (p.port(546) || p.port(547)) && p.data.len() >= 4 && (1..=13).contains(&p.data[0]) {
        Dissect::Match(Protocol::Dhcpv6, None)
    } else {
        Dissect::No
    }
}

/// NTP on UDP 123 (the 48-byte header alone is too weak elsewhere).
pub(crate) fn ntp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    let version = (d.first().copied().unwrap_or(0) >> 3) & 7;
    let mode = d.first().copied().unwrap_or(0) & 7;
    if p.port(123) && d.len() >= 48 && (1..=4).contains(&version) && mode != 0 {
        Dissect::Match(Protocol::Ntp, None)
    } else {
        Dissect::No
    }
}

/// BER length at `at`; returns (length, bytes used).
fn ber_len(d: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *d.get(at)?;
    if first < 0x80 {
        return Some((usize::from(first), 1));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 3 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = len << 8 | usize::from(*d.get(at + 1 + i)?);
    }
    Some((len, 1 + n))
}

/// SNMP (v1, v2c, v3): a BER SEQUENCE holding INTEGER version 0, 1 or 3.
pub(crate) fn snmp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if !(p.port(161) || p.port(162)) || d.first() != Some(&0x30) {
        return Dissect::No;
    }
    let Some((len, used)) = ber_len(d, 1) else {
        return Dissect::No;
    };
    let at = 1 + used;
    match d.get(at..at + 3) {
        Some([0x02, 0x01, 0 | 1 | 3]) if len + at == d.len() => {
            Dissect::Match(Protocol::Snmp, None)
        }
        _ => Dissect::No,
    }
}

/// STUN (RFC 5389 with the magic cookie; RFC 3489 classic on its port).
pub(crate) fn stun(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let mut d = p.data;
    if p.l4 == PROTO_TCP && d.len() >= 22 && be16(d, 0).map(usize::from) == Some(d.len() - 2) {
        d = &d[2..]; // RFC 4571 framing
    }
    if d.len() < 20 || d[0] & 0xc0 != 0 {
        return Dissect::No;
    }
    let len = usize::from(be16(d, 2).unwrap_or(0));
    if len + 20 != d.len() {
        return Dissect::No;
    }
    let msg_type = be16(d, 0).unwrap_or(0);
    // With the magic cookie the length alone is enough; some (WhatsApp)
    // leave attributes unpadded, so no multiple-of-4 rule here.
    if be32(d, 4) == Some(0x2112_a442) {
        return Dissect::Match(Protocol::Stun, None);
    }
    if len % 4 != 0 {
        return Dissect::No;
    }
    let classic = matches!(
        msg_type,
        0x0001 | 0x0101 | 0x0111 | 0x0002 | 0x0102 | 0x0112
    );
    if classic && (p.port(3478) || s.first_len[usize::from(!p.from_client)].is_some()) {
        return Dissect::Match(Protocol::Stun, None);
    }
    if classic {
        s.first_len[usize::from(!p.from_client)] = Some(d.len());
        return Dissect::More;
    }
    Dissect::No
}

/// RDP: TPKT + X.224 connection request/confirm.
pub(crate) fn rdp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() >= 11
        && d[0] == 3
        && d[1] == 0
        && be16(d, 2).map(usize::from) == Some(d.len())
        && matches!(d[5], 0xe0 | 0xd0)
    {
        let cookie = d.windows(17).any(|w| w == b"Cookie: mstshash=");
        if cookie || p.port(3389) || d.len() == 19 {
            return Dissect::Match(Protocol::Rdp, None);
        }
    }
    Dissect::No
}

/// SMB over NetBIOS session framing (TCP 445/139): `\xffSMB` or `\xfeSMB`.
pub(crate) fn smb(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() >= 8 && d[0] == 0 {
        match &d[4..8] {
            [0xff, b'S', b'M', b'B'] => return Dissect::Match(Protocol::SmbV1, None),
            [0xfe, b'S', b'M', b'B'] | [0xfd, b'S', b'M', b'B'] => {
                return Dissect::Match(Protocol::SmbV23, None);
            }
            _ => {}
        }
    }
    if p.index < 2 && (p.port(445) || p.port(139)) {
        Dissect::More
    } else {
        Dissect::No
    }
}

/// Kerberos v5: an application-tagged message whose pvno is 5.
pub(crate) fn kerberos(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let mut d = p.data;
    if p.l4 == PROTO_TCP && d.len() > 4 {
        d = &d[4..]; // record mark
    }
    if d.len() < 16 || !matches!(d[0], 0x6a..=0x6e | 0x7e) {
        return Dissect::No;
    }
    let Some((_, used)) = ber_len(d, 1) else {
        return Dissect::No;
    };
    let body = &d[1 + used..];
    if body.first() != Some(&0x30) {
        return Dissect::No;
    }
    let Some((_, used)) = ber_len(body, 1) else {
        return Dissect::No;
    };
    let fields = &body[1 + used..];
    // pvno [0] or [1] INTEGER 5 comes first (KRB-ERROR/AP-REQ use [0], KDC-REQ [1]).
    if fields.len() >= 5
        && matches!(fields[0], 0xa0 | 0xa1)
        && fields[1..5] == [0x03, 0x02, 0x01, 0x05]
    {
        Dissect::Match(Protocol::Kerberos, None)
    } else {
        Dissect::No
    }
}

/// LDAP: SEQUENCE { INTEGER messageID, [APPLICATION n] protocolOp }.
pub(crate) fn ldap(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.first() != Some(&0x30) {
        return Dissect::No;
    }
    let Some((len, used)) = ber_len(d, 1) else {
        return Dissect::No;
    };
    let at = 1 + used;
    if len + at > d.len() + 1500 || d.get(at) != Some(&0x02) {
        return Dissect::No;
    }
    let id_len = usize::from(*d.get(at + 1).unwrap_or(&9));
    if !(1..=4).contains(&id_len) {
        return Dissect::No;
    }
    match d.get(at + 2 + id_len) {
        Some(0x60..=0x78) if p.port(389) || p.port(3268) => Dissect::Match(Protocol::Ldap, None),
        _ => Dissect::No,
    }
}

/// RADIUS (RFC 2865) on its ports (the code-and-length test alone matches
/// random datagrams too often): code and a length equal to the datagram's.
pub(crate) fn radius(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    let port = [1812, 1813, 1645, 1646, 3799]
        .iter()
        .any(|port| p.port(*port));
    if port
        && d.len() >= 20
        && matches!(d[0], 1..=5 | 11..=13 | 40..=45)
        && be16(d, 2).map(usize::from) == Some(d.len())
    {
        Dissect::Match(Protocol::Radius, None)
    } else {
        Dissect::No
    }
}

/// BitTorrent: the peer handshake, or DHT/tracker bencoded messages over UDP.
pub(crate) fn bittorrent(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() >= 20 && d[0] == 19 && &d[1..20] == b"BitTorrent protocol" {
        return Dissect::Match(Protocol::BitTorrent, None);
    }
    if p.l4 != PROTO_TCP
        && (d.starts_with(b"d1:ad2:id20:")
            || d.starts_with(b"d1:rd2:id20:")
            || d.starts_with(b"d1:eli"))
    {
        return Dissect::Match(Protocol::BitTorrent, None);
    }
    Dissect::No
}

/// OpenVPN: a hard-reset control packet from the client, answered by the
/// server's hard reset (or on port 1194, the client's alone).
pub(crate) fn openvpn(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let mut d = p.data;
    if p.l4 == PROTO_TCP {
        if d.len() < 3 || be16(d, 0).map(usize::from) != Some(d.len() - 2) {
            return Dissect::No;
        }
        d = &d[2..];
    }
    let opcode = d.first().map_or(0, |b| b >> 3);
    let key_id = d.first().map_or(0, |b| b & 7);
    if d.len() < 14 || key_id != 0 {
        return Dissect::No;
    }
    match (p.from_client, opcode) {
        (true, 1 | 7 | 10) => {
            if p.port(1194) {
                return Dissect::Match(Protocol::OpenVpn, None);
            }
            s.first_len[0] = Some(d.len());
            Dissect::More
        }
        (false, 2 | 8) if s.first_len[0].is_some() => Dissect::Match(Protocol::OpenVpn, None),
        _ => Dissect::No,
    }
}

/// WireGuard: message type with three zero bytes and the type's fixed size.
pub(crate) fn wireguard(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 32 || d[1..4] != [0, 0, 0] {
        return Dissect::No;
    }
    match (d[0], d.len()) {
        (1, 148) | (2, 92) | (3, 64) => Dissect::Match(Protocol::WireGuard, None),
        (4, n) if n % 16 == 0 => {
            let dir = usize::from(!p.from_client);
            if s.first_len[dir].is_some() {
                Dissect::Match(Protocol::WireGuard, None)
            } else {
                s.first_len[dir] = Some(n);
                Dissect::More
            }
        }
        _ => Dissect::No,
    }
}

/// IKE (v1 and v2) on 500/4500, and ESP in UDP on 4500.
pub(crate) fn ike(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let mut d = p.data;
    if !(p.port(500) || p.port(4500)) {
        return Dissect::No;
    }
    if p.port(4500) {
        if d.len() >= 4 && d[..4] == [0, 0, 0, 0] {
            d = &d[4..]; // non-ESP marker
        } else if d.len() >= 8 && d[..4] != [0, 0, 0, 0] {
            return Dissect::Match(Protocol::IpSec, None); // ESP in UDP
        } else if d == [0xff] {
            return Dissect::Match(Protocol::IpSec, None); // NAT keepalive
        }
    }
    if d.len() < 28 {
        return Dissect::No;
    }
    let version = d[17];
    let exchange = d[18];
    let len = be32(d, 24).unwrap_or(0) as usize;
    if matches!(version, 0x10 | 0x20) && matches!(exchange, 1..=6 | 32..=37 | 243) && len == d.len()
    {
        Dissect::Match(Protocol::IpSec, None)
    } else {
        Dissect::No
    }
}

/// MQTT: CONNECT with the protocol name `MQTT` (3.1.1/5) or `MQIsdp` (3.1).
pub(crate) fn mqtt(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.first() != Some(&0x10) {
        return if p.index == 0 && !p.from_client {
            Dissect::More
        } else {
            Dissect::No
        };
    }
    // remaining length: 1-4 byte varint
    let mut i = 1;
    while i < 5 && d.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    let rest = d.get(i + 1..).unwrap_or(&[]);
    if rest.starts_with(b"\x00\x04MQTT") || rest.starts_with(b"\x00\x06MQIsdp") {
        Dissect::Match(Protocol::Mqtt, None)
    } else {
        Dissect::No
    }
}

/// PostgreSQL: startup message (protocol 3.0), SSL or GSS encryption request.
pub(crate) fn postgresql(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if !p.from_client || d.len() < 8 {
        return if p.index == 0 {
            Dissect::More
        } else {
            Dissect::No
        };
    }
    let len = be32(d, 0).unwrap_or(0) as usize;
    let code = be32(d, 4).unwrap_or(0);
    match code {
        0x0003_0000 if len == d.len() && d.ends_with(&[0]) => {
            Dissect::Match(Protocol::PostgreSql, None)
        }
        0x04d2_162f | 0x04d2_1630 if len == 8 && d.len() == 8 => {
            Dissect::Match(Protocol::PostgreSql, None)
        }
        _ => Dissect::No,
    }
}

/// MySQL: the server's initial handshake (protocol 10, version string).
pub(crate) fn mysql(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if p.from_client {
        return if p.index == 0 {
            Dissect::More
        } else {
            Dissect::No
        };
    }
    let len = usize::from(d.first().copied().unwrap_or(0))
        | usize::from(d.get(1).copied().unwrap_or(0)) << 8
        | usize::from(d.get(2).copied().unwrap_or(0)) << 16;
    if d.len() > 10
        && len + 4 == d.len()
        && d[3] == 0
        && d[4] == 10
        && d[5].is_ascii_digit()
        && d[6] == b'.'
    {
        Dissect::Match(Protocol::MySql, None)
    } else {
        Dissect::No
    }
}

/// MS-SQL TDS: pre-login or login packet whose header length is the segment's.
pub(crate) fn tds(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() >= 8
        && matches!(d[0], 0x10 | 0x12)
        && d[1] <= 1
        && be16(d, 2).map(usize::from) == Some(d.len())
        && d[7] == 0
        && p.port(1433)
    {
        Dissect::Match(Protocol::Tds, None)
    } else {
        Dissect::No
    }
}

/// SOCKS 4/5: the client's greeting, confirmed by the server's answer.
pub(crate) fn socks(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let d = p.data;
    if p.from_client && p.index == 0 {
        let v5 = d.len() >= 3 && d[0] == 5 && usize::from(d[1]) + 2 == d.len();
        let v4 = d.len() >= 9 && d[0] == 4 && matches!(d[1], 1 | 2) && d.ends_with(&[0]);
        if v5 || v4 {
            s.first_len[0] = Some(usize::from(d[0]));
            return Dissect::More;
        }
        return Dissect::No;
    }
    match (s.first_len[0], p.from_client, d) {
        (Some(5), false, [5, 0 | 1 | 2 | 0xff]) => Dissect::Match(Protocol::Socks, None),
        (Some(4), false, [0, 0x5a..=0x5d, ..]) if d.len() == 8 => {
            Dissect::Match(Protocol::Socks, None)
        }
        (Some(_), true, _) => Dissect::More,
        _ => Dissect::No,
    }
}

/// RTP (RFC 3550): version 2, an audio/video payload type, and a second
/// packet in the same direction with the same SSRC and the next sequence.
pub(crate) fn rtp(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 12 || d[0] >> 6 != 2 {
        return Dissect::No;
    }
    let pt = d[1] & 0x7f;
    if (72..=76).contains(&pt) || !(pt <= 34 || (96..=127).contains(&pt)) {
        return Dissect::No;
    }
    let mut r = Reader::new(&d[2..]);
    let (Some(seq), Some(_ts)) = (r.u16(), r.bytes(4)) else {
        return Dissect::No;
    };
    let Some(ssrc) = be32(d, 8) else {
        return Dissect::No;
    };
    let dir = usize::from(!p.from_client);
    match s.rtp[dir] {
        Some((prev_ssrc, prev_seq))
            if prev_ssrc == ssrc && seq.wrapping_sub(prev_seq) < 16 && seq != prev_seq =>
        {
            Dissect::Match(Protocol::Rtp, None)
        }
        Some((prev_ssrc, _)) if prev_ssrc != ssrc => Dissect::No,
        _ => {
            s.rtp[dir] = Some((ssrc, seq));
            Dissect::More
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(
        data: &[u8],
        from_client: bool,
        src_port: u16,
        dst_port: u16,
        l4: u8,
    ) -> Payload<'_> {
        Payload {
            data,
            from_client,
            src_port,
            dst_port,
            index: 0,
            l4,
        }
    }

    #[test]
    fn slp_needs_matching_length() {
        let mut v2 = vec![2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, b'e', b'n'];
        v2[4] = v2.len() as u8;
        assert_eq!(
            slp(&payload(&v2, true, 1, 427, 17), &mut Scratch::default()),
            Dissect::Match(Protocol::Slp, None)
        );
        v2[4] += 1;
        assert_eq!(
            slp(&payload(&v2, true, 1, 427, 17), &mut Scratch::default()),
            Dissect::No
        );
    }

    #[test]
    fn netbios_name_decoding() {
        // "WORKGROUP" padded, suffix 0x00
        let mut name = b"WORKGROUP      ".to_vec();
        name.push(0);
        let encoded: Vec<u8> = name
            .iter()
            .flat_map(|b| [b'A' + (b >> 4), b'A' + (b & 0xf)])
            .collect();
        assert_eq!(netbios_name(&encoded).as_deref(), Some("workgroup"));
        assert_eq!(netbios_name(&encoded[..30]), None);
    }

    #[test]
    fn stun_with_cookie() {
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[9; 12]);
        assert_eq!(
            stun(&payload(&m, true, 1, 2, 17), &mut Scratch::default()),
            Dissect::Match(Protocol::Stun, None)
        );
        m[3] = 4; // length disagrees with the datagram
        assert_eq!(
            stun(&payload(&m, true, 1, 2, 17), &mut Scratch::default()),
            Dissect::No
        );
    }

    #[test]
    fn rtp_needs_two_packets_of_one_stream() {
        let pkt = |seq: u16| {
            let mut d = vec![0x80, 0x00];
            d.extend_from_slice(&seq.to_be_bytes());
            d.extend_from_slice(&[0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd]);
            d.extend_from_slice(&[0; 160]);
            d
        };
        let mut s = Scratch::default();
        assert_eq!(
            rtp(&payload(&pkt(100), true, 5004, 5006, 17), &mut s),
            Dissect::More
        );
        assert_eq!(
            rtp(&payload(&pkt(101), true, 5004, 5006, 17), &mut s),
            Dissect::Match(Protocol::Rtp, None)
        );
    }

    #[test]
    fn wireguard_initiation_size() {
        let mut init = vec![1, 0, 0, 0];
        init.resize(148, 7);
        assert_eq!(
            wireguard(&payload(&init, true, 1, 51820, 17), &mut Scratch::default()),
            Dissect::Match(Protocol::WireGuard, None)
        );
        init.push(0);
        assert_eq!(
            wireguard(&payload(&init, true, 1, 51820, 17), &mut Scratch::default()),
            Dissect::No
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            for l4 in [6, 17] {
                for port in [
                    53, 88, 137, 138, 139, 161, 389, 427, 445, 500, 1194, 1433, 3389, 4500, 5060,
                ] {
                    let p = payload(&data, len % 2 == 0, 40000, port, l4);
                    let mut s = Scratch::default();
                    for f in [
                        slp,
                        netbios_ns,
                        netbios_dgm,
                        netbios_session,
                        dhcp,
                        dhcpv6,
                        ntp,
                        snmp,
                        stun,
                        rdp,
                        smb,
                        kerberos,
                        ldap,
                        radius,
                        bittorrent,
                        openvpn,
                        wireguard,
                        ike,
                        mqtt,
                        postgresql,
                        mysql,
                        tds,
                        socks,
                        rtp,
                    ] {
                        let _ = f(&p, &mut s);
                    }
                }
            }
        }
    }
}
