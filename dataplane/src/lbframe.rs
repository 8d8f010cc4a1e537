//! Load balancer with inspection: what a worker reads from a frame that the
//! XDP program made ready for its backend (IP-in-IP encapsulated, or its
//! destination rewritten in nat mode), and the answers of a `reject` rule
//! built around it, addressed as the balancer would send them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dpi::reject::{Reject, Toward};

/// Ethernet header: XDP balances only untagged frames.
const ETH: usize = 14;

/// The backend a frame goes to: the outer destination of an encapsulated
/// frame (ipip), else (nat) the packet's own destination.
pub fn backend(frame: &[u8], d: &dpi::Decoded) -> Option<IpAddr> {
    if d.l3_offset == ETH {
        let receiver = if d.from_a { d.key.b() } else { d.key.a() };
        return Some(receiver.ip());
    }
    match frame.get(ETH)? >> 4 {
        4 => {
            let b: [u8; 4] = frame.get(ETH + 16..ETH + 20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = frame.get(ETH + 24..ETH + 40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The frames a reject of `kind` answers `frame` with (see
/// [`dpi::reject::frames`]), made right for the balancer's frame:
/// - back to the client: to the MAC the packet came from (`meta`: XDP
///   rewrote the frame's), from ours, and in nat mode from the VIP;
/// - on to the backend: encapsulated like the packet (ipip), or as built
///   (nat: the packet already goes to the backend).
pub fn rejects(
    frame: &[u8],
    d: &dpi::Decoded,
    kind: Reject,
    meta: xdp_redirect::LbMeta,
) -> Vec<(Vec<u8>, Toward)> {
    let encapsulated = d.l3_offset > ETH;
    let mut out = Vec::new();
    if frame.len() < ETH {
        return out;
    }
    if matches!(kind, Reject::Source | Reject::Both) {
        let built = if encapsulated {
            dpi::reject::frames(frame, d, Reject::Source)
        } else {
            // as the client's peer, the VIP (the backend's address is
            // the client's business only through the VIP)
            let vip = vip_of(&meta, d.key.ipv6);
            let sender = if d.from_a { d.key.a() } else { d.key.b() };
            let receiver = if d.from_a { d.key.b() } else { d.key.a() };
            let (key, from_a) = dpi::FlowKey::new(
                sender,
                SocketAddr::new(vip, receiver.port()),
                d.key.proto,
                d.key.vlan,
            );
            let toward_vip = dpi::Decoded { key, from_a, ..*d };
            dpi::reject::frames(frame, &toward_vip, Reject::Source)
        };
        for (mut f, to) in built {
            f[..6].copy_from_slice(&meta.peer_mac);
            f[6..12].copy_from_slice(&frame[6..12]);
            out.push((f, to));
        }
    }
    if matches!(kind, Reject::Destination | Reject::Both) {
        for (f, to) in dpi::reject::frames(frame, d, Reject::Destination) {
            if !encapsulated {
                out.push((f, to));
            } else if let Some(f) = encapsulate_like(frame, d.l3_offset, &f) {
                out.push((f, to));
            }
        }
    }
    out
}

/// The VIP of the frame's service, from the metadata.
fn vip_of(meta: &xdp_redirect::LbMeta, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(meta.vip))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            meta.vip[0],
            meta.vip[1],
            meta.vip[2],
            meta.vip[3],
        ))
    }
}

/// `built` (Ethernet, then an inner IP packet) inside the outer header of
/// `frame` (Ethernet and outer IP up to `inner_at`), its length and (IPv4)
/// checksum made right.
fn encapsulate_like(frame: &[u8], inner_at: usize, built: &[u8]) -> Option<Vec<u8>> {
    let mut out = frame.get(..inner_at)?.to_vec();
    out.extend_from_slice(built.get(ETH..)?);
    let outer_len = out.len() - ETH;
    match out[ETH] >> 4 {
        4 if inner_at == ETH + 20 => {
            out[ETH + 2..ETH + 4].copy_from_slice(&u16::try_from(outer_len).ok()?.to_be_bytes());
            out[ETH + 10..ETH + 12].fill(0);
            let sum = ipv4_checksum(&out[ETH..ETH + 20]);
            out[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
        }
        6 if inner_at == ETH + 40 => {
            let payload = u16::try_from(outer_len - 40).ok()?;
            out[ETH + 4..ETH + 6].copy_from_slice(&payload.to_be_bytes());
        }
        _ => return None,
    }
    Some(out)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const NEXT_HOP: [u8; 6] = [2, 0, 0, 0, 0, 3];

    /// A client's data segment to VIP 198.18.70.100:80 as XDP hands it
    /// over: encapsulated toward backend 198.18.71.1 (ipip) or rewritten to
    /// it (nat), Ethernet toward the next hop.
    fn ready(ipip: bool) -> Vec<u8> {
        let payload = b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n";
        let dst: [u8; 4] = if ipip {
            [198, 18, 70, 100]
        } else {
            [198, 18, 71, 1]
        };
        let mut tcp = vec![0x9c, 0x40, 0, 80];
        tcp.extend_from_slice(&1000u32.to_be_bytes());
        tcp.extend_from_slice(&5000u32.to_be_bytes());
        tcp.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        let mut inner = vec![0x45, 0];
        inner.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        inner.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 70, 7]);
        inner.extend_from_slice(&dst);
        let sum = ipv4_checksum(&inner);
        inner[10..12].copy_from_slice(&sum.to_be_bytes());
        inner.extend_from_slice(&tcp);
        let mut frame = NEXT_HOP.to_vec();
        frame.extend_from_slice(&OUR_MAC);
        frame.extend_from_slice(&[0x08, 0x00]);
        if ipip {
            let mut outer = vec![0x45, 0];
            outer.extend_from_slice(&((20 + inner.len()) as u16).to_be_bytes());
            outer.extend_from_slice(&[0, 0, 0, 0, 64, 4, 0, 0, 198, 18, 71, 254, 198, 18, 71, 1]);
            let sum = ipv4_checksum(&outer);
            outer[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&outer);
        }
        frame.extend_from_slice(&inner);
        frame
    }

    /// As a worker in load balancer mode decodes.
    fn decode(frame: &[u8]) -> dpi::Decoded {
        let outer = dpi::decode_ethernet(frame).unwrap();
        dpi::tunnel::ip_in_ip(frame, &outer).unwrap_or(outer)
    }

    fn meta() -> xdp_redirect::LbMeta {
        let mut vip = [0u8; 16];
        vip[..4].copy_from_slice(&[198, 18, 70, 100]);
        xdp_redirect::LbMeta {
            peer_mac: CLIENT_MAC,
            flags: 0,
            vip,
        }
    }

    #[test]
    fn the_backend_is_the_outer_destination_or_the_rewritten_one() {
        for ipip in [true, false] {
            let frame = ready(ipip);
            let d = decode(&frame);
            assert_eq!(
                backend(&frame, &d),
                Some("198.18.71.1".parse().unwrap()),
                "ipip: {ipip}"
            );
        }
    }

    #[test]
    fn resets_go_back_to_the_client_from_the_vip_and_on_to_the_backend_as_the_packet_went() {
        for ipip in [true, false] {
            let frame = ready(ipip);
            let d = decode(&frame);
            let replies = rejects(&frame, &d, Reject::Both, meta());
            assert_eq!(replies.len(), 2, "ipip: {ipip}");
            let (to_client, toward) = &replies[0];
            assert_eq!(*toward, Toward::Sender);
            assert_eq!(
                &to_client[..6],
                &CLIENT_MAC,
                "to the MAC the packet came from"
            );
            assert_eq!(&to_client[6..12], &OUR_MAC);
            let back = dpi::decode_ethernet(to_client).unwrap();
            let (from, to) = if back.from_a {
                (back.key.a(), back.key.b())
            } else {
                (back.key.b(), back.key.a())
            };
            assert_eq!(
                from.to_string(),
                "198.18.70.100:80",
                "ipip: {ipip}: from the VIP"
            );
            assert_eq!(to.to_string(), "198.18.70.7:40000");
            assert_eq!(back.tcp_flags & 0x04, 0x04, "a reset");
            assert_eq!(ipv4_checksum(&to_client[14..34]), 0);

            let (to_backend, toward) = &replies[1];
            assert_eq!(*toward, Toward::Receiver);
            assert_eq!(&to_backend[..6], &NEXT_HOP, "toward the backend's next hop");
            assert_eq!(
                backend(to_backend, &decode(to_backend)),
                Some("198.18.71.1".parse().unwrap())
            );
            if ipip {
                let outer_len = u16::from_be_bytes([to_backend[16], to_backend[17]]);
                assert_eq!(usize::from(outer_len), to_backend.len() - 14);
                assert_eq!(ipv4_checksum(&to_backend[14..34]), 0, "outer checksum");
                assert_eq!(to_backend[14 + 9], 4, "IP-in-IP");
            }
        }
    }
}
