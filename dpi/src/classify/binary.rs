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
    // (Windows' LDAP and Kerberos write 4-byte lengths: 0x84)
    if n == 0 || n > 4 {
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

/// RDP (MS-RDPBCGR §2.2.1.1/2.2.1.2): a TPKT (RFC 1006) whose length is
/// the segment's, carrying an X.224 Connection Request (0xE0) or Confirm
/// (0xD0) TPDU (its length indicator the rest of the header), class 0,
/// followed by what RDP puts there: the `Cookie: mstshash=` or routing
/// token line, an RDP_NEG_REQ/RSP/FAILURE, or the correlation info. A bare
/// TPDU is RDP only on 3389; ISO-TSAP users (S7comm on 102) carry their
/// TSAP parameters instead.
pub(crate) fn rdp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 11
        || d[0] != 3
        || d[1] != 0
        || be16(d, 2).map(usize::from) != Some(d.len())
        || usize::from(d[4]) + 5 != d.len()
        || !matches!(d[5], 0xe0 | 0xd0)
        || d[10] & 0xf0 != 0
        || p.port(102)
    {
        return Dissect::No;
    }
    let request = d[5] == 0xe0;
    if request && d[6..8] != [0, 0] {
        return Dissect::No; // a CR's destination reference is zero
    }
    let rest = &d[11..];
    let negotiation = |t: &[u8]| -> bool {
        // type, flags, length 8 (little-endian), then 4 bytes
        t.len() >= 8 && matches!(t[0], 0x01..=0x03 | 0x06) && t[2..4] == [8, 0]
            || t.len() >= 36 && t[0] == 0x06 && t[2..4] == [36, 0]
    };
    let rdp = if rest.is_empty() {
        p.port(3389)
    } else if rest.starts_with(b"Cookie: ") {
        let line_end = rest.windows(2).position(|w| w == b"\r\n");
        line_end.is_some_and(|e| rest.len() == e + 2 || negotiation(&rest[e + 2..]))
    } else {
        negotiation(rest)
    };
    if rdp {
        Dissect::Match(Protocol::Rdp, None)
    } else {
        Dissect::No
    }
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

/// Kerberos v5 (RFC 4120 §5): an application-tagged message (AS-REQ 10
/// .. KRB-ERROR 30) whose SEQUENCE starts with pvno 5 ([0], or [1] in
/// KDC requests) and msg-type equal to the tag. Over TCP each message has
/// a 4-byte length first (§7.2.2, top bit reserved), which may come in a
/// segment of its own.
pub(crate) fn kerberos(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let mut d = p.data;
    if p.l4 == PROTO_TCP {
        let Some(mark) = d.get(..4) else {
            return if p.port(88) && p.index == 0 && !d.is_empty() {
                Dissect::More
            } else {
                Dissect::No
            };
        };
        if mark[0] & 0x80 != 0 {
            return Dissect::No;
        }
        d = &d[4..];
        if d.is_empty() {
            // the length alone: the message follows
            return if p.port(88) && p.index == 0 {
                Dissect::More
            } else {
                Dissect::No
            };
        }
    }
    let tag = match d.first() {
        Some(&t @ (0x6a..=0x6f | 0x74..=0x76 | 0x7e)) => t,
        _ => return Dissect::No,
    };
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
    // KDC-REQ (AS-REQ, TGS-REQ) number pvno [1]; the others [0]
    let pvno_tag = if matches!(tag, 0x6a | 0x6c) {
        0xa1
    } else {
        0xa0
    };
    if fields.len() < 10 || fields[0] != pvno_tag || fields[1..5] != [0x03, 0x02, 0x01, 0x05] {
        return Dissect::No;
    }
    // msg-type [n+1] INTEGER = the application tag's number
    let msg_type = &fields[5..];
    if msg_type[0] == pvno_tag + 1
        && msg_type[1..4] == [0x03, 0x02, 0x01]
        && msg_type[4] == tag & 0x1f
    {
        Dissect::Match(Protocol::Kerberos, None)
    } else {
        Dissect::No
    }
}

/// LDAP (RFC 4511 §4.1.1): LDAPMessage ::= SEQUENCE { messageID INTEGER
/// (0..2^31-1), protocolOp }, where protocolOp is one of RFC 4511's
/// application tags: constructed 0 to 25 (bind, search, modify...), or
/// the primitive unbindRequest (NULL), delRequest and abandonRequest. Over
/// TCP and over UDP (CLDAP, RFC 1798, Active Directory's "LDAP ping").
/// Off the LDAP ports, only a bind or search whose fields follow their
/// definitions counts.
pub(crate) fn ldap(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.first() != Some(&0x30) {
        return Dissect::No;
    }
    let Some((len, used)) = ber_len(d, 1) else {
        return Dissect::No;
    };
    let at = 1 + used;
    // a datagram holds its whole message; a segment may hold part of one
    if len == 0 || (p.l4 != PROTO_TCP && at + len > d.len()) {
        return Dissect::No;
    }
    if d.get(at) != Some(&0x02) {
        return Dissect::No;
    }
    let id_len = usize::from(*d.get(at + 1).unwrap_or(&9));
    if !(1..=5).contains(&id_len) || d.get(at + 2).is_some_and(|b| b & 0x80 != 0) {
        return Dissect::No;
    }
    let op_at = at + 2 + id_len;
    let Some(&op) = d.get(op_at) else {
        return Dissect::No;
    };
    let known_op = matches!(op, 0x60..=0x79)
        && !matches!(op, 0x62 | 0x6a | 0x70..=0x72 | 0x74..=0x76)
        || matches!(op, 0x42 | 0x4a | 0x50);
    if !known_op || ber_len(d, op_at + 1).is_none() {
        return Dissect::No;
    }
    if [389, 3268, 3269].iter().any(|port| p.port(*port)) {
        return Dissect::Match(Protocol::Ldap, None);
    }
    // elsewhere: a bindRequest with version 3 (or 2), or a searchRequest
    // whose baseObject is an OCTET STRING and scope an ENUMERATED
    let Some((_, op_used)) = ber_len(d, op_at + 1) else {
        return Dissect::No;
    };
    let inner = d.get(op_at + 1 + op_used..).unwrap_or(&[]);
    let strong = match op {
        0x60 => inner.starts_with(&[0x02, 0x01, 0x03]) || inner.starts_with(&[0x02, 0x01, 0x02]),
        0x63 => {
            inner.first() == Some(&0x04)
                && ber_len(inner, 1)
                    .and_then(|(n, u)| inner.get(1 + u + n))
                    .is_some_and(|t| *t == 0x0a)
        }
        _ => false,
    };
    if strong {
        Dissect::Match(Protocol::Ldap, None)
    } else {
        Dissect::No
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

/// MS-SQL TDS (MS-TDS §2.2.3.1): an 8-byte packet header (type, status,
/// length, SPID, packet id, window 0) whose length is the segment's. A
/// PRELOGIN (0x12) whose option list (§2.2.6.5: tokens of type, offset,
/// length, ended by 0xFF, VERSION first) points inside the packet is TDS
/// at once; a TDS 4/5 login (0x02), Login7 (0x10) or bulk load (0x07) is,
/// once the other side answers with a tabular result (0x04), as nDPI does.
pub(crate) fn tds(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let d = p.data;
    let header_ok = d.len() > 8
        && d[1] & 0xe0 == 0
        && be16(d, 2).map(usize::from) == Some(d.len())
        && d[7] == 0;
    if !header_ok {
        return Dissect::No;
    }
    let dir = usize::from(!p.from_client);
    if let Some(first_dir) = s.tds_login {
        // a login was seen from `first_dir`: the answer decides
        return if dir != first_dir && d[0] == 0x04 {
            Dissect::Match(Protocol::Tds, None)
        } else {
            Dissect::No
        };
    }
    match d[0] {
        0x12 if prelogin_options(&d[8..]) => Dissect::Match(Protocol::Tds, None),
        0x02 | 0x07 | 0x10 | 0x12 => {
            s.tds_login = Some(dir);
            Dissect::More
        }
        _ => Dissect::No,
    }
}

/// A PRELOGIN option list: VERSION first, each option's data inside the
/// message, the list ended by 0xFF.
fn prelogin_options(m: &[u8]) -> bool {
    if m.first() != Some(&0x00) {
        return false;
    }
    let mut at = 0;
    while let Some(&token) = m.get(at) {
        if token == 0xff {
            return at > 0;
        }
        let (Some(offset), Some(len)) = (be16(m, at + 1), be16(m, at + 3)) else {
            return false;
        };
        if usize::from(offset) + usize::from(len) > m.len() {
            return false;
        }
        at += 5;
    }
    false
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

    /// A BER TLV with a definite length in the shortest form, or the
    /// 4-byte form Windows writes when `long`.
    fn tlv(tag: u8, value: &[u8], long: bool) -> Vec<u8> {
        let mut out = vec![tag];
        if long {
            out.push(0x84);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        } else if value.len() < 0x80 {
            out.push(value.len() as u8);
        } else {
            out.extend_from_slice(&[0x82, (value.len() >> 8) as u8, value.len() as u8]);
        }
        out.extend_from_slice(value);
        out
    }

    /// RFC 4120: an AS-REQ (pvno [1], msg-type [2] = 10) and a KRB-ERROR
    /// (pvno [0], msg-type [1] = 30), over UDP and over TCP with the record
    /// mark in a segment of its own.
    #[test]
    fn kerberos_messages_by_rfc4120() {
        let int = |v: u8| tlv(0x02, &[v], false);
        let mut req = tlv(0xa1, &int(5), false);
        req.extend_from_slice(&tlv(0xa2, &int(10), false));
        req.extend_from_slice(&tlv(0xa4, &[0x30, 0], false)); // req-body
        let as_req = tlv(0x6a, &tlv(0x30, &req, false), false);
        let udp = payload(&as_req, true, 40000, 88, 17);
        assert_eq!(
            kerberos(&udp, &mut Scratch::default()),
            Dissect::Match(Protocol::Kerberos, None)
        );
        let mut err = tlv(0xa0, &int(5), false);
        err.extend_from_slice(&tlv(0xa1, &int(30), false));
        err.extend_from_slice(&tlv(0xa4, &[0x18, 0], false));
        let krb_error = tlv(0x7e, &tlv(0x30, &err, true), true);
        let mut framed = (krb_error.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&krb_error);
        let tcp = payload(&framed, false, 88, 40000, 6);
        assert_eq!(
            kerberos(&tcp, &mut Scratch::default()),
            Dissect::Match(Protocol::Kerberos, None)
        );
        // the mark alone first: wait for the message
        let mark = payload(&framed[..4], true, 40000, 88, 6);
        assert_eq!(kerberos(&mark, &mut Scratch::default()), Dissect::More);
        // a msg-type that is not the tag's
        let mut wrong = req.clone();
        wrong[9] = 11;
        let bad = tlv(0x6a, &tlv(0x30, &wrong, false), false);
        assert_eq!(
            kerberos(&payload(&bad, true, 40000, 88, 17), &mut Scratch::default()),
            Dissect::No
        );
    }

    /// RFC 4511: a bind request (with Windows' 4-byte lengths), a search
    /// request off the LDAP port, an unbind (primitive NULL), and CLDAP.
    #[test]
    fn ldap_messages_by_rfc4511() {
        let mut bind = vec![0x02, 0x01, 0x03];
        bind.extend_from_slice(&tlv(0x04, b"cn=admin", false));
        bind.extend_from_slice(&tlv(0x80, b"secret", false));
        let mut msg = vec![0x02, 0x01, 0x01];
        msg.extend_from_slice(&tlv(0x60, &bind, true));
        let bind_msg = tlv(0x30, &msg, true);
        for (port, l4) in [(389, 6), (10389, 6)] {
            let p = payload(&bind_msg, true, 40000, port, l4);
            assert_eq!(
                ldap(&p, &mut Scratch::default()),
                Dissect::Match(Protocol::Ldap, None),
                "{port}"
            );
        }
        let mut search = tlv(0x04, b"dc=example,dc=com", false);
        search.extend_from_slice(&[0x0a, 0x01, 0x02, 0x0a, 0x01, 0x00]);
        let mut msg = vec![0x02, 0x02, 0x01, 0x00];
        msg.extend_from_slice(&tlv(0x63, &search, false));
        let search_msg = tlv(0x30, &msg, false);
        let p = payload(&search_msg, true, 40000, 8389, 6);
        assert_eq!(
            ldap(&p, &mut Scratch::default()),
            Dissect::Match(Protocol::Ldap, None)
        );
        let cldap = payload(&search_msg, true, 40000, 389, 17);
        assert_eq!(
            ldap(&cldap, &mut Scratch::default()),
            Dissect::Match(Protocol::Ldap, None)
        );
        let unbind = [0x30, 0x05, 0x02, 0x01, 0x03, 0x42, 0x00];
        let p = payload(&unbind, true, 40000, 389, 6);
        assert_eq!(
            ldap(&p, &mut Scratch::default()),
            Dissect::Match(Protocol::Ldap, None)
        );
        // SNMP's community string where LDAP has its operation
        let snmp = [
            0x30, 0x0b, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c',
        ];
        assert_eq!(
            ldap(
                &payload(&snmp, true, 40000, 389, 17),
                &mut Scratch::default()
            ),
            Dissect::No
        );
    }

    /// MS-TDS: a PRELOGIN with its option list is TDS at once; a Login7
    /// is once the server answers with a tabular result.
    #[test]
    fn tds_by_ms_tds() {
        // VERSION at 11 (6 bytes), ENCRYPTION at 17 (1 byte), terminator
        let mut options = vec![0x00, 0, 11, 0, 6, 0x01, 0, 17, 0, 1, 0xff];
        options.extend_from_slice(&[15, 0, 0x07, 0xd0, 0, 0, 0]);
        let mut prelogin = vec![0x12, 0x01];
        prelogin.extend_from_slice(&((8 + options.len()) as u16).to_be_bytes());
        prelogin.extend_from_slice(&[0, 0, 1, 0]);
        prelogin.extend_from_slice(&options);
        let p = payload(&prelogin, true, 40000, 50123, 6);
        assert_eq!(
            tds(&p, &mut Scratch::default()),
            Dissect::Match(Protocol::Tds, None)
        );
        let mut login = vec![0x10, 0x01, 0, 20, 0, 0, 1, 0];
        login.extend_from_slice(&[0; 12]);
        let mut s = Scratch::default();
        assert_eq!(
            tds(&payload(&login, true, 40000, 1433, 6), &mut s),
            Dissect::More
        );
        let answer = [0x04, 0x01, 0, 12, 0, 0, 1, 0, 0xad, 0, 0, 0];
        assert_eq!(
            tds(&payload(&answer, false, 1433, 40000, 6), &mut s),
            Dissect::Match(Protocol::Tds, None)
        );
        // a header whose length is not the segment's
        let mut short = prelogin.clone();
        short[3] += 1;
        assert_eq!(
            tds(
                &payload(&short, true, 40000, 1433, 6),
                &mut Scratch::default()
            ),
            Dissect::No
        );
    }

    /// MS-RDPBCGR: a Connection Request with its cookie and RDP_NEG_REQ on
    /// any port; S7comm's TSAP parameters are not RDP.
    #[test]
    fn rdp_connection_requests() {
        let mut x224 = vec![0xe0, 0, 0, 0x12, 0x34, 0];
        x224.extend_from_slice(b"Cookie: mstshash=user\r\n");
        x224.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x03, 0, 0, 0]);
        let mut cr = vec![3, 0];
        cr.extend_from_slice(&((5 + x224.len()) as u16).to_be_bytes());
        cr.push(x224.len() as u8);
        cr.extend_from_slice(&x224);
        let p = payload(&cr, true, 40000, 13389, 6);
        assert_eq!(
            rdp(&p, &mut Scratch::default()),
            Dissect::Match(Protocol::Rdp, None)
        );
        let s7 = [
            3, 0, 0, 22, 17, 0xe0, 0, 0, 0, 1, 0, 0xc0, 1, 10, 0xc1, 2, 1, 0, 0xc2, 2, 1, 2,
        ];
        assert_eq!(
            rdp(
                &payload(&s7, true, 40000, 13389, 6),
                &mut Scratch::default()
            ),
            Dissect::No
        );
    }

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
