//! Link layers of captures and interfaces: turn a frame of a given pcap
//! LINKTYPE into the same [`Decoded`] the Ethernet path gives.
//!
//! Supported: Ethernet (1), BSD loopback / NULL (0) and OpenBSD LOOP (108),
//! raw IP (101, and the old 12/14), IPv4 (228), IPv6 (229), Linux cooked
//! capture v1 (113) and v2 (276), PPP (9) and Cisco HDLC (104).

use crate::{
    flow::{DecodeError, Decoded},
    wire::{self, Layer, ethernet},
};

/// A pcap LINKTYPE this crate decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    Ethernet,
    Null,
    Loop,
    RawIp,
    Ipv4,
    Ipv6,
    LinuxSll,
    LinuxSll2,
    Ppp,
    CiscoHdlc,
}

impl LinkType {
    /// The link type of a pcap LINKTYPE number, if supported.
    pub fn from_linktype(value: u32) -> Option<LinkType> {
        Some(match value {
            1 => LinkType::Ethernet,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            12 | 14 | 101 => LinkType::RawIp,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            9 => LinkType::Ppp,
            104 => LinkType::CiscoHdlc,
            _ => return None,
        })
    }
}

const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

fn too_short(layer: Layer, needed: usize, available: usize) -> DecodeError {
    DecodeError::Wire(wire::Error::Truncated {
        layer,
        offset: 0,
        needed,
        available,
    })
}

/// Decodes one frame of link type `link`.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Decoded, DecodeError> {
    decode_as(link, frame, false)
}

/// As [`decode`]; `cut`: the frame was captured shorter than it was sent
/// (a snap length), so the IP header may promise more than is there.
fn decode_as(link: LinkType, frame: &[u8], cut: bool) -> Result<Decoded, DecodeError> {
    match link {
        LinkType::Ethernet => crate::flow::decode_ethernet_as(frame, cut),
        LinkType::RawIp => crate::flow::decode_ip_as(frame, 0, 0, None, cut),
        LinkType::Ipv4 => {
            crate::flow::decode_ip_as(frame, 0, 0, Some(ethernet::ETHERTYPE_IPV4), cut)
        }
        LinkType::Ipv6 => {
            crate::flow::decode_ip_as(frame, 0, 0, Some(ethernet::ETHERTYPE_IPV6), cut)
        }
        LinkType::Null | LinkType::Loop => {
            // 4-byte address family, host order for NULL (either byte order
            // in practice), network order for LOOP. AF_INET is 2 everywhere;
            // AF_INET6 is 10, 24, 28 or 30 depending on the OS.
            if frame.len() < 4 {
                return Err(too_short(Layer::Ethernet, 4, frame.len()));
            }
            let le = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let be = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let family = if link == LinkType::Loop || le > 0xffff {
                be
            } else {
                le
            };
            match family {
                2 => crate::flow::decode_ip_as(frame, 4, 0, Some(ethernet::ETHERTYPE_IPV4), cut),
                10 | 24 | 28 | 30 => {
                    crate::flow::decode_ip_as(frame, 4, 0, Some(ethernet::ETHERTYPE_IPV6), cut)
                }
                other => Err(DecodeError::NotIp {
                    ethertype: other as u16,
                }),
            }
        }
        LinkType::LinuxSll => {
            // packet type, ARPHRD, address length, 8-byte address, protocol
            if frame.len() < 16 {
                return Err(too_short(Layer::Ethernet, 16, frame.len()));
            }
            let proto = u16::from_be_bytes([frame[14], frame[15]]);
            decode_ethertype(frame, 16, proto, cut)
        }
        LinkType::LinuxSll2 => {
            // protocol, reserved, ifindex, ARPHRD, packet type, address length, 8-byte address
            if frame.len() < 20 {
                return Err(too_short(Layer::Ethernet, 20, frame.len()));
            }
            let proto = u16::from_be_bytes([frame[0], frame[1]]);
            decode_ethertype(frame, 20, proto, cut)
        }
        LinkType::Ppp | LinkType::CiscoHdlc => {
            // PPP: optional address/control 0xff 0x03, then a 1- or 2-byte protocol.
            // Cisco HDLC: address, control, 2-byte ethertype.
            if frame.len() < 4 {
                return Err(too_short(Layer::Ethernet, 4, frame.len()));
            }
            if link == LinkType::CiscoHdlc {
                return decode_ethertype(frame, 4, u16::from_be_bytes([frame[2], frame[3]]), cut);
            }
            let start = if frame[0] == 0xff && frame[1] == 0x03 {
                2
            } else {
                0
            };
            let (proto, len) = if frame[start] & 1 == 1 {
                (u16::from(frame[start]), 1)
            } else {
                (u16::from_be_bytes([frame[start], frame[start + 1]]), 2)
            };
            match proto {
                PPP_IPV4 => crate::flow::decode_ip_as(
                    frame,
                    start + len,
                    0,
                    Some(ethernet::ETHERTYPE_IPV4),
                    cut,
                ),
                PPP_IPV6 => crate::flow::decode_ip_as(
                    frame,
                    start + len,
                    0,
                    Some(ethernet::ETHERTYPE_IPV6),
                    cut,
                ),
                other => Err(DecodeError::NotIp { ethertype: other }),
            }
        }
    }
}

/// PPPoE session frames (RFC 2516).
const ETHERTYPE_PPPOE: u16 = 0x8864;

/// As [`decode`], and through the tunnels nDPI looks through: a PPPoE
/// session, and those of [`crate::tunnel`]. The flow is the inner one.
/// For captures (`dataplane inspect`); live, flows are keyed by the
/// headers the XDP program reads.
/// `cut` as for [`decode_as`].
pub fn decode_inner(link: LinkType, frame: &[u8], cut: bool) -> Result<Decoded, DecodeError> {
    let outer = match decode_as(link, frame, cut) {
        Err(DecodeError::NotIp {
            ethertype: ETHERTYPE_PPPOE,
        }) => pppoe(link, frame, cut)?,
        other => other?,
    };
    Ok(crate::tunnel::innermost(frame, outer))
}

/// The IP packet of a PPPoE session frame: after the 6-byte PPPoE header
/// (version and type 1, code 0) and the PPP protocol.
fn pppoe(link: LinkType, frame: &[u8], cut: bool) -> Result<Decoded, DecodeError> {
    let (offset, vlan) = match link {
        LinkType::Ethernet => {
            let eth = ethernet::Frame::new_checked(frame)?;
            (eth.payload_offset(), eth.vlan())
        }
        LinkType::LinuxSll => (16, 0),
        LinkType::LinuxSll2 => (20, 0),
        _ => {
            return Err(DecodeError::NotIp {
                ethertype: ETHERTYPE_PPPOE,
            });
        }
    };
    let header = frame
        .get(offset..offset + 8)
        .ok_or_else(|| too_short(Layer::Ethernet, 8, frame.len().saturating_sub(offset)))?;
    let ethertype = match (
        header[0],
        header[1],
        u16::from_be_bytes([header[6], header[7]]),
    ) {
        (0x11, 0, PPP_IPV4) => ethernet::ETHERTYPE_IPV4,
        (0x11, 0, PPP_IPV6) => ethernet::ETHERTYPE_IPV6,
        _ => {
            return Err(DecodeError::NotIp {
                ethertype: ETHERTYPE_PPPOE,
            });
        }
    };
    crate::flow::decode_ip_as(frame, offset + 8, vlan, Some(ethertype), cut)
}

fn decode_ethertype(
    frame: &[u8],
    offset: usize,
    ethertype: u16,
    cut: bool,
) -> Result<Decoded, DecodeError> {
    match ethertype {
        ethernet::ETHERTYPE_IPV4 | ethernet::ETHERTYPE_IPV6 => {
            crate::flow::decode_ip_as(frame, offset, 0, Some(ethertype), cut)
        }
        ethernet::ETHERTYPE_VLAN | ethernet::ETHERTYPE_QINQ => {
            let tag = frame
                .get(offset..offset + 4)
                .ok_or_else(|| too_short(Layer::Vlan, 4, frame.len() - offset))?;
            let vlan = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
            let inner = u16::from_be_bytes([tag[2], tag[3]]);
            match inner {
                ethernet::ETHERTYPE_IPV4 | ethernet::ETHERTYPE_IPV6 => {
                    crate::flow::decode_ip_as(frame, offset + 4, vlan, Some(inner), cut)
                }
                other => Err(DecodeError::NotIp { ethertype: other }),
            }
        }
        other => Err(DecodeError::NotIp { ethertype: other }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0, 10, 0, 0, b'h', b'i']);
        p
    }

    #[test]
    fn raw_null_sll_sll2_ppp_all_find_the_same_flow() {
        let ip = ipv4_udp();
        let raw = decode(LinkType::RawIp, &ip).unwrap();
        let null = decode(LinkType::Null, &[&[2, 0, 0, 0][..], &ip].concat()).unwrap();
        let mut sll = vec![0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        let ppp = [&[0xff, 0x03, 0x00, 0x21][..], &ip].concat();
        for (name, d) in [
            ("null", null),
            ("sll", decode(LinkType::LinuxSll, &sll).unwrap()),
            ("sll2", decode(LinkType::LinuxSll2, &sll2).unwrap()),
            ("ppp", decode(LinkType::Ppp, &ppp).unwrap()),
        ] {
            assert_eq!(d.key, raw.key, "{name}");
            assert_eq!(d.payload_len, 2, "{name}");
        }
        assert_eq!(raw.key.b(), "10.0.0.2:53".parse().unwrap());
    }

    #[test]
    fn short_and_foreign_frames_are_errors() {
        assert!(decode(LinkType::LinuxSll, &[0; 10]).is_err());
        assert!(decode(LinkType::Null, &[0x18, 0, 0]).is_err());
        assert!(matches!(
            decode(LinkType::Null, &[7, 0, 0, 0, 1]),
            Err(DecodeError::NotIp { .. })
        ));
        assert_eq!(LinkType::from_linktype(147), None);
    }
}

#[cfg(test)]
mod pppoe_tests {
    use super::*;

    /// A PPPoE session frame carries an IP packet after its 6-byte header
    /// and the PPP protocol: the flow is that packet's.
    #[test]
    fn pppoe_sessions_are_read_through() {
        let inner = testbed::frames::Packet::udp(
            testbed::frames::ip("198.18.1.1"),
            5000,
            testbed::frames::ip("198.18.1.2"),
            53,
        )
        .with_payload(&[1, 2, 3, 4])
        .build();
        let ip = &inner[14..];
        let mut frame = inner[..12].to_vec();
        frame.extend_from_slice(&[0x88, 0x64, 0x11, 0, 0x12, 0x34]);
        frame.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
        frame.extend_from_slice(&[0x00, 0x21]);
        frame.extend_from_slice(ip);
        assert!(matches!(
            decode(LinkType::Ethernet, &frame),
            Err(DecodeError::NotIp { ethertype: 0x8864 })
        ));
        let d = decode_inner(LinkType::Ethernet, &frame, false).unwrap();
        assert_eq!(d.key.b().to_string(), "198.18.1.2:53");
        assert_eq!(
            &frame[d.payload_offset..d.payload_offset + d.payload_len],
            &[1, 2, 3, 4]
        );
        // LCP (0xc021) inside a session is no IP
        let n = frame.len();
        let mut lcp = frame.clone();
        lcp[20..22].copy_from_slice(&[0xc0, 0x21]);
        assert!(decode_inner(LinkType::Ethernet, &lcp[..n], false).is_err());
    }
}
