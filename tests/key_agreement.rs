//! The kernel and user space must build the same flow key for a frame, or a
//! verdict written by a worker would never match in XDP. This checks it on
//! many generated frames (root: loads the program and uses BPF_PROG_TEST_RUN):
//! the key `dpi` decodes, converted by `dataplane::key`, written as a DROP
//! verdict, must make the program drop that frame and its reverse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use testbed::frames::{Ipv6Ext, L4, Packet};
use xdp_redirect::{Action, LoadOptions, XdpRedirect, xdp_action};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_packet(rng: &mut Rng) -> Packet {
    let v6 = rng.below(2) == 0;
    // Small address pools so that equal addresses (port tie-break) occur too.
    let addr = |rng: &mut Rng| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                rng.below(3) as u16,
                rng.below(4) as u16,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                198,
                18 + rng.below(2) as u8,
                rng.below(3) as u8,
                rng.below(4) as u8,
            ))
        }
    };
    let (src, dst) = (addr(rng), addr(rng));
    let port = |rng: &mut Rng| {
        [0u16, 53, 80, 443, 1024, 65535][rng.below(6) as usize].wrapping_add(rng.below(3) as u16)
    };
    let l4 = match rng.below(4) {
        0 => L4::Tcp {
            sport: port(rng),
            dport: port(rng),
            flags: 0x18,
        },
        1 => L4::Udp {
            sport: port(rng),
            dport: port(rng),
        },
        2 => L4::Echo {
            id: rng.below(65536) as u16,
            seq: 1,
            reply: rng.below(2) == 0,
        },
        _ => L4::Other(47),
    };
    let vlans: Vec<u16> = (0..rng.below(3))
        .map(|_| 1 + rng.below(4094) as u16)
        .collect();
    let mut packet = Packet::new(src, dst, l4)
        .with_vlans(&vlans)
        .with_payload(&vec![0xab; rng.below(64) as usize]);
    // IPv6: sometimes an atomic fragment header (RFC 6946), a whole packet
    // both parsers must walk past.
    if v6 && rng.below(3) == 0 {
        packet.ipv6_ext = vec![Ipv6Ext::Fragment {
            offset: 0,
            more: false,
        }];
    }
    packet
}

#[test]
fn user_space_and_xdp_build_the_same_key_root() {
    testbed::require_root("the flow key agreement test");
    let prog = XdpRedirect::load(&LoadOptions::default()).expect("load the XDP program");
    let mut verdicts = prog.verdict_map().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    for case in 0..400 {
        let packet = random_packet(&mut rng);
        let frame = packet.build();
        let decoded =
            dpi::decode_ethernet(&frame).unwrap_or_else(|e| panic!("case {case}: {packet:?}: {e}"));
        let key = dataplane::key::to_kernel(&decoded.key);

        let before = prog.test_run(&frame, 1).unwrap().action;
        assert_eq!(
            before,
            xdp_action::PASS,
            "case {case}: undecided flow, no socket in test_run"
        );
        verdicts.set(&key, Action::Drop).unwrap();
        for (dir, f) in [
            ("forward", frame.clone()),
            ("reverse", packet.reversed().build()),
        ] {
            assert_eq!(
                prog.test_run(&f, 1).unwrap().action,
                xdp_action::DROP,
                "case {case} {dir}: the kernel did not find the key user space wrote for {}\n{packet:?}",
                decoded.key
            );
        }
        verdicts.remove(&key).unwrap();
    }
}
