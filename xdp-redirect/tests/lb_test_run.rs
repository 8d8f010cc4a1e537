//! `BPF_PROG_TEST_RUN` tests of the load balancer path (root, no traffic):
//! encapsulation and NAT rewrites byte by byte with checksums verified,
//! connection stickiness across table changes, and what is passed untouched.
//! The next hop is a configured gateway MAC here (the FIB path needs routes
//! and neighbours: the end-to-end tests cover it).

use std::net::IpAddr;

use testbed::frames::{self, Packet, ip};
use xdp_redirect::{
    Counters, LoadOptions, XdpRedirect,
    lb::{self, LbMaps, LbOptions, Mode},
    xdp_action,
};

const GATEWAY: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

struct Lb {
    prog: XdpRedirect,
    maps: LbMaps,
}

/// Backend 0 = .71.1, 1 = .71.2 (and 2, 3 = IPv6); service 0 = tcp VIP:80,
/// 1 = udp [v6 VIP]:53.
fn setup(mode: Mode) -> Lb {
    testbed::require_root("BPF_PROG_TEST_RUN of the load balancer");
    let prog = XdpRedirect::load(&LoadOptions {
        lb: Some(LbOptions {
            nat: mode == Mode::Nat,
            gateway: Some(GATEWAY),
        }),
        ..LoadOptions::default()
    })
    .expect("load the XDP program in load balancer mode");
    let mut maps = prog.lb_maps().expect("open the balancer's maps");
    for (i, addr, src) in [
        (0, "198.18.71.1", "198.18.71.254"),
        (1, "198.18.71.2", "198.18.71.254"),
        (2, "2001:2::71:1", "2001:2::71:fe"),
        (3, "2001:2::71:2", "2001:2::71:fe"),
    ] {
        maps.set_backend(i, ip(addr), ip(src), false).unwrap();
    }
    let mut lb = Lb { prog, maps };
    lb.table(0, &[0, 1], mode);
    lb.table(1, &[2, 3], mode);
    lb
}

impl Lb {
    /// Installs a table for service `id` that alternates over `backends`.
    fn table(&mut self, id: u32, backends: &[u32], mode: Mode) {
        let key = service(id);
        let slots: Vec<u32> = (0..lb::RING_SIZE as usize)
            .map(|i| {
                if backends.is_empty() {
                    lb::NO_BACKEND
                } else {
                    backends[i % backends.len()]
                }
            })
            .collect();
        self.maps
            .install(
                &key,
                id,
                mode,
                lb::ServiceFlags {
                    reset_down: true,
                    inspect: false,
                },
                &slots,
            )
            .unwrap();
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>, Counters) {
        let before = self.prog.counters().unwrap();
        let (outcome, out) = self.prog.test_run_frame(frame).unwrap();
        let delta = self.prog.counters().unwrap().since(&before);
        assert_eq!(
            delta.rx,
            delta.outcomes(),
            "one outcome per packet: {delta:?}"
        );
        (outcome.action, out, delta)
    }
}

fn service(id: u32) -> lb::ServiceKey {
    match id {
        0 => lb::service_key(ip("198.18.70.100"), 80, 6),
        _ => lb::service_key(ip("2001:2::70:100"), 53, 17),
    }
}

fn tcp(sport: u16, flags: u8) -> Packet {
    Packet::tcp(ip("198.18.70.7"), sport, ip("198.18.70.100"), 80, flags)
        .with_macs([0x02, 0, 0, 0, 0, 0x01], OUR_MAC)
        .with_payload(b"GET / HTTP/1.1\r\n\r\n")
}

fn udp6(sport: u16) -> Packet {
    Packet::udp(ip("2001:2::70:7"), sport, ip("2001:2::70:100"), 53)
        .with_macs([0x02, 0, 0, 0, 0, 0x01], OUR_MAC)
        .with_payload(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")
}

/// The L4 checksum of an IP packet (header included) verifies.
fn l4_checksum_ok(ip_packet: &[u8]) -> bool {
    let (pseudo, l4) = if ip_packet[0] >> 4 == 4 {
        let hl = usize::from(ip_packet[0] & 0xf) * 4;
        let l4 = &ip_packet[hl..usize::from(u16::from_be_bytes([ip_packet[2], ip_packet[3]]))];
        let mut p = ip_packet[12..20].to_vec();
        p.extend_from_slice(&[0, ip_packet[9]]);
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        (p, l4)
    } else {
        let l4 = &ip_packet[40..];
        let mut p = ip_packet[8..40].to_vec();
        p.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, ip_packet[6]]);
        (p, l4)
    };
    let mut all = pseudo;
    all.extend_from_slice(l4);
    frames::checksum(&all, 0) == 0
}

fn ipv4_header_ok(ip_packet: &[u8]) -> bool {
    frames::checksum(&ip_packet[..20], 0) == 0
}

#[test]
fn ipip_encapsulates_toward_the_tables_backend_and_connections_stick() {
    let mut lb = setup(Mode::Ipip);
    let frame = tcp(40000, SYN).build();
    let (action, out, c) = lb.run(&frame);
    assert_eq!(action, xdp_action::TX);
    assert_eq!(
        (c.lb_forwarded, c.lb_conn_misses, c.lb_conn_lost),
        (1, 1, 0)
    );
    assert_eq!(out.len(), frame.len() + 20);
    assert_eq!(&out[..6], &GATEWAY, "to the next hop");
    assert_eq!(&out[6..12], &OUR_MAC, "from us");
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let outer = &out[14..34];
    assert_eq!(outer[0], 0x45);
    assert_eq!(outer[9], 4, "IP-in-IP");
    assert!(ipv4_header_ok(outer));
    assert_eq!(
        usize::from(u16::from_be_bytes([outer[2], outer[3]])),
        frame.len() - 14 + 20
    );
    assert_eq!(&outer[12..16], &[198, 18, 71, 254], "our source address");
    let first = [outer[16], outer[17], outer[18], outer[19]];
    assert!(first == [198, 18, 71, 1] || first == [198, 18, 71, 2]);
    assert_eq!(&out[34..], &frame[14..], "the client's packet, untouched");

    // the connection is remembered, with the backend the table gave
    let key = lb::conn_key((ip("198.18.70.7"), 40000), (ip("198.18.70.100"), 80), 6);
    let conn = lb.maps.conn(&key).unwrap().expect("connection entry");
    assert_eq!(conn.backend, u32::from(first[3] - 1));

    // a new table sends every new connection to the other backend...
    let other = 1 - conn.backend;
    lb.table(0, &[other], Mode::Ipip);
    let (_, out, c) = lb.run(&tcp(40000, ACK).build());
    assert_eq!((c.lb_conn_hits, c.lb_conn_misses), (1, 0));
    assert_eq!(
        out[33], first[3],
        "an established connection keeps its backend"
    );
    let (_, out, c) = lb.run(&tcp(40001, SYN).build());
    assert_eq!(c.lb_conn_misses, 1);
    assert_eq!(
        u32::from(out[33]) - 1,
        other,
        "a new one takes the new table's"
    );
    // ...and a connection the table never saw, mid-stream, is counted as lost
    let (_, _, c) = lb.run(&tcp(40002, ACK).build());
    assert_eq!((c.lb_conn_misses, c.lb_conn_lost), (1, 1));

    // per-service and per-backend counters
    let s = lb.maps.service_stats(0, [0, 1]).unwrap();
    assert_eq!((s.packets, s.new_conns), (4, 3));
    let b = lb.maps.backend_stats(other).unwrap();
    assert_eq!(b.new_conns, if other == conn.backend { 3 } else { 2 });
}

#[test]
fn ipv6_udp_service_is_encapsulated_in_ipv6() {
    let lb = setup(Mode::Ipip);
    let frame = udp6(5353).build();
    let (action, out, c) = lb.run(&frame);
    assert_eq!((action, c.lb_forwarded), (xdp_action::TX, 1));
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    let outer = &out[14..54];
    assert_eq!(outer[6], 41, "IPv6-in-IPv6");
    assert_eq!(
        usize::from(u16::from_be_bytes([outer[4], outer[5]])),
        frame.len() - 14
    );
    assert_eq!(&outer[8..24], &ip_bytes("2001:2::71:fe"));
    let dst = &outer[24..40];
    assert!(dst == ip_bytes("2001:2::71:1") || dst == ip_bytes("2001:2::71:2"));
    assert_eq!(&out[54..], &frame[14..]);
}

fn ip_bytes(s: &str) -> [u8; 16] {
    lb::addr_bytes(ip(s)).0
}

#[test]
fn nat_rewrites_both_ways_with_valid_checksums() {
    let lb = setup(Mode::Nat);
    let frame = tcp(41000, SYN).build();
    let (action, out, c) = lb.run(&frame);
    assert_eq!((action, c.lb_forwarded), (xdp_action::TX, 1));
    assert_eq!(out.len(), frame.len());
    assert_eq!(&out[..6], &GATEWAY);
    let ipv4 = &out[14..];
    let backend = [ipv4[16], ipv4[17], ipv4[18], ipv4[19]];
    assert!(backend == [198, 18, 71, 1] || backend == [198, 18, 71, 2]);
    assert_eq!(
        &ipv4[12..16],
        &[198, 18, 70, 7],
        "the client stays the source"
    );
    assert!(ipv4_header_ok(ipv4), "IPv4 header checksum");
    assert!(l4_checksum_ok(ipv4), "TCP checksum after the rewrite");

    // the backend's reply gets the VIP back as its source
    let reply = Packet::tcp(
        IpAddr::from(backend),
        80,
        ip("198.18.70.7"),
        41000,
        SYN | ACK,
    )
    .with_macs([0x02, 0, 0, 0, 0, 0x71], OUR_MAC)
    .build();
    let (action, out, c) = lb.run(&reply);
    assert_eq!((action, c.lb_replies), (xdp_action::TX, 1));
    let ipv4 = &out[14..];
    assert_eq!(&ipv4[12..16], &[198, 18, 70, 100]);
    assert!(ipv4_header_ok(ipv4) && l4_checksum_ok(ipv4));

    // IPv6 UDP both ways
    let frame = udp6(5300).build();
    let (_, out, c) = lb.run(&frame);
    assert_eq!(c.lb_forwarded, 1);
    assert!(
        l4_checksum_ok(&out[14..]),
        "UDP/IPv6 checksum after the rewrite"
    );
    let backend: [u8; 16] = out[14 + 24..14 + 40].try_into().unwrap();
    let reply = Packet::udp(IpAddr::from(backend), 53, ip("2001:2::70:7"), 5300)
        .with_payload(b"answer")
        .build();
    let (_, out, c) = lb.run(&reply);
    assert_eq!(c.lb_replies, 1);
    assert_eq!(&out[14 + 8..14 + 24], &ip_bytes("2001:2::70:100"));
    assert!(l4_checksum_ok(&out[14..]));
}

#[test]
fn what_the_balancer_must_not_mangle_goes_to_the_stack_untouched() {
    let mut lb = setup(Mode::Ipip);
    let mut with_options = tcp(42000, SYN);
    with_options.ipv4_options = vec![1, 1, 1, 1]; // NOPs
    let mut fragment = tcp(42001, SYN);
    fragment.ipv4_fragment = Some((0, true));
    /// (what, frame, the counter that must move)
    type Case = (&'static str, Vec<u8>, fn(&Counters) -> u64);
    let cases: [Case; 5] = [
        ("IPv4 options", with_options.build(), |c| c.lb_passed),
        ("fragment", fragment.build(), |c| c.fragments),
        ("VLAN tag", tcp(42002, SYN).with_vlans(&[7]).build(), |c| {
            c.lb_passed
        }),
        (
            "not a service",
            Packet::tcp(ip("198.18.70.7"), 1, ip("198.18.70.100"), 22, SYN).build(),
            |c| c.lb_other,
        ),
        (
            "ARP",
            frames::arp_request([2, 0, 0, 0, 0, 1], [198, 18, 70, 7], [198, 18, 70, 100]),
            |c| c.non_ip,
        ),
    ];
    for (what, frame, counter) in cases {
        let (action, out, c) = lb.run(&frame);
        assert_eq!(action, xdp_action::PASS, "{what}");
        assert_eq!(counter(&c), 1, "{what}: {c:?}");
        assert_eq!(out, frame, "{what}: passed as it came");
    }
    // no backend with weight: dropped and counted
    lb.table(0, &[], Mode::Ipip);
    let (action, _, c) = lb.run(&tcp(42003, SYN).build());
    assert_eq!((action, c.lb_no_backend), (xdp_action::DROP, 1));
}

#[test]
fn a_down_backend_loses_its_connections_when_the_service_resets_them() {
    let mut lb = setup(Mode::Ipip);
    let (_, out, _) = lb.run(&tcp(43000, SYN).build());
    let first = u32::from(out[33]) - 1;
    let other = 1 - first;
    lb.table(0, &[other], Mode::Ipip);
    lb.maps
        .set_backend(
            first,
            IpAddr::from([198, 18, 71, first as u8 + 1]),
            ip("198.18.71.254"),
            true,
        )
        .unwrap();
    let (_, out, c) = lb.run(&tcp(43000, ACK).build());
    assert_eq!(
        c.lb_conn_misses, 1,
        "the entry of a down backend is not used"
    );
    assert_eq!(u32::from(out[33]) - 1, other);
}

/// The flow key user space writes for a client's connection to the VIP
/// (ordered endpoints, as the program orders them).
fn flow_key(client: (IpAddr, u16), server: (IpAddr, u16), proto: u8) -> xdp_redirect::FlowKey {
    let bytes = |ip: IpAddr| lb::addr_bytes(ip).0;
    let (a, b) = if (bytes(client.0), client.1) <= (bytes(server.0), server.1) {
        (client, server)
    } else {
        (server, client)
    };
    xdp_redirect::FlowKey {
        addr_a: bytes(a.0),
        addr_b: bytes(b.0),
        port_a: a.1.to_be(),
        port_b: b.1.to_be(),
        family: lb::addr_bytes(client.0).1,
        proto,
        vlan: 0,
    }
}

#[test]
fn inspected_service_sends_data_to_user_space_until_its_verdict() {
    for mode in [Mode::Ipip, Mode::Nat] {
        let mut lb = setup(mode);
        lb.maps
            .install(
                &service(0),
                0,
                mode,
                lb::ServiceFlags {
                    reset_down: false,
                    inspect: true,
                },
                &vec![0; lb::RING_SIZE as usize],
            )
            .unwrap();
        let bare = |sport, flags| {
            Packet::tcp(ip("198.18.70.7"), sport, ip("198.18.70.100"), 80, flags)
                .with_macs([0x02, 0, 0, 0, 0, 0x01], OUR_MAC)
                .build()
        };
        // the handshake is balanced in XDP as for any service
        let (action, _, c) = lb.run(&bare(41000, SYN));
        assert_eq!((action, c.lb_forwarded, c.to_user), (xdp_action::TX, 1, 0));
        let (action, _, c) = lb.run(&bare(41000, ACK));
        assert_eq!((action, c.lb_forwarded), (xdp_action::TX, 1), "{mode:?}");
        // data: to the AF_XDP socket, ready for the backend; with no socket
        // (none in a test run) the failure action, here "pass on"
        let data = tcp(41000, ACK).build();
        let (action, out, c) = lb.run(&data);
        assert_eq!(
            (action, c.no_socket, c.lb_forwarded),
            (xdp_action::TX, 1, 0),
            "{mode:?}: {c:?}"
        );
        // a test run's output starts at the metadata: dp_lb_meta (the MAC
        // the frame came from), then dp_xdp_meta
        assert_eq!(
            &out[..6],
            &[0x02, 0, 0, 0, 0, 0x01],
            "{mode:?}: the sender's MAC"
        );
        assert_eq!(&out[8..12], &[198, 18, 70, 100], "{mode:?}: the VIP");
        assert_eq!(
            &out[6..8],
            &[1, 0],
            "{mode:?}: the first packet of a new connection"
        );
        let frame = &out[32..];
        assert_eq!(&frame[..6], &GATEWAY, "{mode:?}: ready for the next hop");
        assert_eq!(
            &frame[30..34],
            &[198, 18, 71, 1],
            "{mode:?}: to the backend"
        );
        assert_eq!(
            frame.len(),
            data.len() + if mode == Mode::Ipip { 20 } else { 0 }
        );
        // the key user space reads: to the VIP, or in nat mode to the backend
        let server = match mode {
            Mode::Ipip => ip("198.18.70.100"),
            Mode::Nat => ip("198.18.71.1"),
        };
        let key = flow_key((ip("198.18.70.7"), 41000), (server, 80), 6);
        let mut verdicts = lb.prog.verdict_map().unwrap();
        verdicts.set(&key, xdp_redirect::Action::Drop).unwrap();
        let (action, _, c) = lb.run(&data);
        assert_eq!((action, c.bypass_drop), (xdp_action::DROP, 1), "{mode:?}");
        let (action, _, c) = lb.run(&bare(41000, ACK));
        assert_eq!(
            (action, c.bypass_drop),
            (xdp_action::DROP, 1),
            "a dropped flow's bare ACK too"
        );
        verdicts.set(&key, xdp_redirect::Action::Pass).unwrap();
        let (action, _, c) = lb.run(&data);
        assert_eq!(
            (action, c.lb_forwarded, c.no_socket),
            (xdp_action::TX, 1, 0),
            "{mode:?}: allowed, balanced in XDP alone"
        );
        let entry = verdicts.get(&key).unwrap().expect("the verdict entry");
        assert_eq!(
            (entry.packets[0], entry.packets[1]),
            (1, 0),
            "{mode:?}: the kernel's packets are counted on the flow's entry (written anew \
             with the pass), by sender"
        );
        // a SYN on the same 5-tuple opens a new connection: the old
        // verdict goes, and the new one's data is read from its start
        let (action, _, c) = lb.run(&bare(41000, SYN));
        assert_eq!((action, c.lb_forwarded), (xdp_action::TX, 1), "{mode:?}");
        assert!(
            verdicts.get(&key).unwrap().is_none(),
            "{mode:?}: the old verdict is gone"
        );
        let (action, out, c) = lb.run(&data);
        assert_eq!(
            (action, c.no_socket),
            (xdp_action::TX, 1),
            "{mode:?}: to user space"
        );
        assert_eq!(&out[6..8], &[1, 0], "{mode:?}: marked new");
        let (_, out, _) = lb.run(&data);
        assert_eq!(&out[6..8], &[0, 0], "{mode:?}: only its first packet is");
    }
}
