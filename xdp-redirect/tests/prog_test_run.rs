//! Table-driven `BPF_PROG_TEST_RUN` tests of the XDP program (root, no
//! traffic): for each frame, the expected XDP action and which counter moves.
//! `test_run` has no AF_XDP socket in the XSKMAP, so an undecided flow takes
//! the program's fallback (`XDP_PASS`, counted `no_socket`); the redirect
//! itself is covered by the end-to-end tests on veth.

use std::net::IpAddr;

use testbed::frames::{self, Ipv6Ext, L4, Packet, ip};
use xdp_redirect::{Action, Counters, FlowKey, LoadOptions, XdpRedirect, abi, xdp_action};

fn load() -> XdpRedirect {
    testbed::require_root("BPF_PROG_TEST_RUN of the XDP program");
    XdpRedirect::load(&LoadOptions::default()).expect("load the XDP program")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    ToUserSpace, // no socket in test_run: PASS + no_socket
    NonIp,
    ParseError,
    Fragment,
    LinkControl,
    BypassPass,
    BypassDrop,
}

fn expected(outcome: Outcome) -> (u32, Counters) {
    let mut c = Counters {
        rx: 1,
        ..Counters::default()
    };
    let action = match outcome {
        Outcome::ToUserSpace => {
            c.no_socket = 1;
            xdp_action::PASS
        }
        Outcome::NonIp => {
            c.non_ip = 1;
            xdp_action::PASS
        }
        Outcome::ParseError => {
            c.parse_errors = 1;
            xdp_action::PASS
        }
        Outcome::Fragment => {
            c.fragments = 1;
            xdp_action::PASS
        }
        Outcome::LinkControl => {
            c.link_control = 1;
            xdp_action::PASS
        }
        Outcome::BypassPass => {
            c.bypass_pass = 1;
            xdp_action::PASS
        }
        Outcome::BypassDrop => {
            c.bypass_drop = 1;
            xdp_action::DROP
        }
    };
    (action, c)
}

fn check(prog: &XdpRedirect, what: &str, frame: &[u8], outcome: Outcome) {
    let before = prog.counters().unwrap();
    let result = prog
        .test_run(frame, 1)
        .unwrap_or_else(|e| panic!("{what}: test_run failed: {e}"));
    let delta = prog.counters().unwrap().since(&before);
    let (action, counters) = expected(outcome);
    assert_eq!(
        result.action,
        action,
        "{what}: XDP action (frame {} bytes)",
        frame.len()
    );
    assert_eq!(delta, counters, "{what}: counter change");
    assert_eq!(
        delta.rx,
        delta.outcomes(),
        "{what}: every packet has exactly one outcome"
    );
}

fn base_packets() -> Vec<(&'static str, Packet)> {
    let v4 = |l4| Packet::new(ip("198.18.0.1"), ip("198.18.0.2"), l4);
    let v6 = |l4| Packet::new(ip("2001:db8::1"), ip("2001:db8::2"), l4);
    let mut with_opts = v4(L4::Udp {
        sport: 1000,
        dport: 53,
    })
    .with_payload(b"query");
    with_opts.ipv4_options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert + NOPs
    let mut v6_ext = v6(L4::Tcp {
        sport: 40000,
        dport: 443,
        flags: frames::TCP_SYN,
    });
    v6_ext.ipv6_ext = vec![Ipv6Ext::HopByHop, Ipv6Ext::Routing, Ipv6Ext::DestOpts];
    vec![
        (
            "IPv4 TCP",
            v4(L4::Tcp {
                sport: 40000,
                dport: 80,
                flags: frames::TCP_SYN,
            }),
        ),
        (
            "IPv4 UDP",
            v4(L4::Udp {
                sport: 5353,
                dport: 53,
            })
            .with_payload(b"dns"),
        ),
        (
            "IPv6 TCP",
            v6(L4::Tcp {
                sport: 40000,
                dport: 443,
                flags: frames::TCP_ACK,
            }),
        ),
        (
            "IPv6 UDP",
            v6(L4::Udp {
                sport: 4433,
                dport: 443,
            })
            .with_payload(&[0xc0; 32]),
        ),
        (
            "IPv4 UDP in VLAN 100",
            v4(L4::Udp { sport: 1, dport: 2 }).with_vlans(&[100]),
        ),
        (
            "IPv6 TCP in QinQ 100/200",
            v6(L4::Tcp {
                sport: 3,
                dport: 4,
                flags: 0,
            })
            .with_vlans(&[100, 200]),
        ),
        ("IPv4 with options", with_opts),
        ("IPv6 with 3 extension headers", v6_ext),
        (
            "ICMP echo",
            v4(L4::Echo {
                id: 7,
                seq: 1,
                reply: false,
            }),
        ),
        (
            "ICMPv6 echo reply",
            v6(L4::Echo {
                id: 7,
                seq: 1,
                reply: true,
            }),
        ),
        (
            "IPv4 GRE (no ports)",
            v4(L4::Other(47)).with_payload(&[0; 4]),
        ),
    ]
}

#[test]
fn table_of_frames_root() {
    let prog = load();
    for (what, packet) in base_packets() {
        check(&prog, what, &packet.build(), Outcome::ToUserSpace);
    }

    let v4 = |l4| Packet::new(ip("198.18.0.1"), ip("198.18.0.2"), l4);
    let mut first_fragment = v4(L4::Udp { sport: 1, dport: 2 }).with_payload(&[0; 16]);
    first_fragment.ipv4_fragment = Some((0, true));
    check(
        &prog,
        "IPv4 first fragment (MF)",
        &first_fragment.build(),
        Outcome::Fragment,
    );
    let mut later_fragment = first_fragment.clone();
    later_fragment.ipv4_fragment = Some((185, false));
    check(
        &prog,
        "IPv4 last fragment (offset)",
        &later_fragment.build(),
        Outcome::Fragment,
    );
    let mut v6_frag = Packet::udp(ip("2001:db8::1"), 1, ip("2001:db8::2"), 2);
    v6_frag.ipv6_ext = vec![
        Ipv6Ext::HopByHop,
        Ipv6Ext::Fragment {
            offset: 0,
            more: true,
        },
    ];
    check(
        &prog,
        "IPv6 fragment header",
        &v6_frag.build(),
        Outcome::Fragment,
    );

    // An atomic fragment (offset 0, no more fragments) is a whole packet.
    let mut atomic = Packet::udp(ip("2001:db8::1"), 1, ip("2001:db8::2"), 2);
    atomic.ipv6_ext = vec![Ipv6Ext::Fragment {
        offset: 0,
        more: false,
    }];
    check(
        &prog,
        "IPv6 atomic fragment",
        &atomic.build(),
        Outcome::ToUserSpace,
    );

    let mut too_many_ext = Packet::udp(ip("2001:db8::1"), 1, ip("2001:db8::2"), 2);
    too_many_ext.ipv6_ext = vec![Ipv6Ext::DestOpts; 5];
    check(
        &prog,
        "IPv6 with 5 extension headers",
        &too_many_ext.build(),
        Outcome::ParseError,
    );

    let arp = frames::arp_request([2, 0, 0, 0, 0, 1], [198, 18, 0, 1], [198, 18, 0, 2]);
    check(&prog, "ARP request", &arp, Outcome::NonIp);
    let lldp: Vec<u8> = [[0x01, 0x80, 0xc2, 0, 0, 0x0e], [2, 0, 0, 0, 0, 1]]
        .concat()
        .into_iter()
        .chain([0x88, 0xcc, 0, 0])
        .collect();
    check(&prog, "LLDP", &lldp, Outcome::NonIp);
    // IPv6's ARP: neighbour discovery and MLD stay with the stack.
    for (name, icmp_type) in [
        ("neighbour solicitation", 135u8),
        ("neighbour advertisement", 136),
        ("router advertisement", 134),
        ("MLDv2 report", 143),
    ] {
        let nd = Packet::new(ip("fe80::1"), ip("ff02::1:ff00:2"), L4::Other(58))
            .with_payload(&[icmp_type, 0, 0, 0, 0, 0, 0, 0]);
        check(
            &prog,
            &format!("ICMPv6 {name}"),
            &nd.build(),
            Outcome::LinkControl,
        );
    }
    let three_tags = v4(L4::Udp { sport: 1, dport: 2 }).with_vlans(&[1, 2, 3]);
    check(
        &prog,
        "three VLAN tags",
        &three_tags.build(),
        Outcome::NonIp,
    );

    let mut bad_ihl = v4(L4::Udp { sport: 1, dport: 2 }).build();
    bad_ihl[14] = 0x44;
    check(&prog, "IPv4 IHL 4", &bad_ihl, Outcome::ParseError);
    let mut bad_version = v4(L4::Udp { sport: 1, dport: 2 }).build();
    bad_version[14] = 0x65;
    check(
        &prog,
        "IPv4 ethertype with version 6",
        &bad_version,
        Outcome::ParseError,
    );
    let mut bad_doff = v4(L4::Tcp {
        sport: 1,
        dport: 2,
        flags: 0,
    })
    .build();
    bad_doff[14 + 20 + 12] = 0x40;
    check(&prog, "TCP data offset 4", &bad_doff, Outcome::ParseError);
    let mut long_total = v4(L4::Udp { sport: 1, dport: 2 }).build();
    long_total[16..18].copy_from_slice(&1500u16.to_be_bytes());
    check(
        &prog,
        "IPv4 total length beyond the frame",
        &long_total,
        Outcome::ParseError,
    );
    let mut garbage = vec![0u8; 64];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    garbage[12..14].copy_from_slice(&[0x08, 0x00]);
    check(
        &prog,
        "garbage with IPv4 ethertype",
        &garbage,
        Outcome::ParseError,
    );
    garbage[12..14].copy_from_slice(&[0x86, 0xdd]);
    check(
        &prog,
        "garbage with IPv6 ethertype",
        &garbage,
        Outcome::ParseError,
    );

    // A padded minimum-size frame is still the same flow (padding is not payload).
    let mut padded = v4(L4::Udp { sport: 1, dport: 2 }).build();
    padded.resize(60, 0);
    check(
        &prog,
        "IPv4 UDP with Ethernet padding",
        &padded,
        Outcome::ToUserSpace,
    );
}

#[test]
fn every_truncation_is_a_counted_parse_error_root() {
    let prog = load();
    for (what, packet) in base_packets() {
        let frame = packet.build();
        let headers_end = *packet.header_boundaries().last().unwrap();
        // test_run refuses frames shorter than an Ethernet header (EINVAL).
        for len in 14..frame.len() {
            let outcome = Outcome::ParseError;
            check(
                &prog,
                &format!("{what} truncated to {len} (headers end at {headers_end})"),
                &frame[..len],
                outcome,
            );
        }
    }
}

/// The key the program must build: endpoints ordered by (address bytes, port).
fn key(a: IpAddr, port_a: u16, b: IpAddr, port_b: u16, proto: u8, vlan: u16) -> FlowKey {
    let bytes = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&v4.octets());
            x
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    FlowKey {
        addr_a: bytes(a),
        addr_b: bytes(b),
        port_a: port_a.to_be(),
        port_b: port_b.to_be(),
        family: if a.is_ipv4() {
            abi::dp_family::DP_FAMILY_IPV4
        } else {
            abi::dp_family::DP_FAMILY_IPV6
        } as u8,
        proto,
        vlan,
    }
}

#[test]
fn verdicts_act_on_both_directions_root() {
    let prog = load();
    let mut verdicts = prog.verdict_map().unwrap();

    // 198.18.0.9:5000 -> 198.18.0.2:53: endpoint A is 198.18.0.2:53 (smaller address).
    let fwd = Packet::udp(ip("198.18.0.9"), 5000, ip("198.18.0.2"), 53).with_payload(b"query");
    let k = key(ip("198.18.0.2"), 53, ip("198.18.0.9"), 5000, 17, 0);
    check(
        &prog,
        "UDP before any verdict",
        &fwd.build(),
        Outcome::ToUserSpace,
    );
    verdicts.set(&k, Action::Drop).unwrap();
    check(
        &prog,
        "UDP with DROP verdict",
        &fwd.build(),
        Outcome::BypassDrop,
    );
    check(
        &prog,
        "reverse UDP with DROP verdict",
        &fwd.reversed().build(),
        Outcome::BypassDrop,
    );
    let entry = verdicts.get(&k).unwrap().expect("entry stays");
    assert_eq!(
        entry.packets,
        [1, 1],
        "one packet each way, counted by sender"
    );
    // `fwd` is sent by B (198.18.0.9), its reverse by A
    assert_eq!(
        entry.bytes,
        [
            fwd.reversed().build().len() as u64,
            fwd.build().len() as u64
        ]
    );
    check(
        &prog,
        "a second UDP from B with DROP verdict",
        &fwd.build(),
        Outcome::BypassDrop,
    );
    let entry = verdicts.get(&k).unwrap().unwrap();
    assert_eq!(entry.packets, [1, 2], "B's packets are counted as B's");
    assert_ne!(entry.last_seen_ns, 0);

    // Once a worker has beaten, last-seen times come from the workers'
    // clock slot, not the kernel's clock: wait for the coarse clock to tick
    // past the published value, so the two differ.
    let heartbeat = prog.heartbeat().unwrap();
    heartbeat.beat(0);
    let published = heartbeat.clock();
    assert_ne!(published, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while xdp_redirect::clock::coarse_monotonic_ns() <= published {
        assert!(
            std::time::Instant::now() < deadline,
            "the coarse clock did not tick"
        );
        std::thread::yield_now();
    }
    check(
        &prog,
        "UDP with DROP verdict, clock published",
        &fwd.build(),
        Outcome::BypassDrop,
    );
    let entry = verdicts.get(&k).unwrap().expect("entry stays");
    assert_eq!(entry.last_seen_ns, published, "stamped from the clock slot");
    // Another flow between the same hosts is untouched.
    let other = Packet::udp(ip("198.18.0.9"), 5001, ip("198.18.0.2"), 53);
    check(
        &prog,
        "neighbouring flow",
        &other.build(),
        Outcome::ToUserSpace,
    );

    // Same addresses, ports decide the order; VLAN is part of the key.
    let tcp = Packet::tcp(
        ip("2001:db8::5"),
        443,
        ip("2001:db8::5"),
        80,
        frames::TCP_ACK,
    )
    .with_vlans(&[42]);
    let k6 = key(ip("2001:db8::5"), 80, ip("2001:db8::5"), 443, 6, 42);
    verdicts.set(&k6, Action::Pass).unwrap();
    check(
        &prog,
        "TCP with PASS verdict",
        &tcp.build(),
        Outcome::BypassPass,
    );
    check(
        &prog,
        "reverse TCP with PASS verdict",
        &tcp.reversed().build(),
        Outcome::BypassPass,
    );
    check(
        &prog,
        "same flow in another VLAN",
        &tcp.clone().with_vlans(&[43]).build(),
        Outcome::ToUserSpace,
    );

    // ICMP echo: both directions keyed on the identifier.
    let echo = Packet::new(
        ip("198.18.0.1"),
        ip("198.18.0.2"),
        L4::Echo {
            id: 99,
            seq: 1,
            reply: false,
        },
    );
    verdicts
        .set(
            &key(ip("198.18.0.1"), 99, ip("198.18.0.2"), 99, 1, 0),
            Action::Drop,
        )
        .unwrap();
    check(
        &prog,
        "ICMP echo with DROP verdict",
        &echo.build(),
        Outcome::BypassDrop,
    );
    check(
        &prog,
        "ICMP echo reply with DROP verdict",
        &echo.reversed().build(),
        Outcome::BypassDrop,
    );

    // Clearing a verdict sends the flow back to user space.
    verdicts.remove(&k).unwrap();
    check(
        &prog,
        "UDP after verdict removed",
        &fwd.build(),
        Outcome::ToUserSpace,
    );
}

/// Bridge mode: FORWARD verdicts and unparsed frames go to the other port
/// through the `peers` DEVMAP (`XDP_REDIRECT`); DROP still drops; FIN/RST
/// through the kernel path mark the entry as closing. `test_run` runs with
/// the loopback device as ingress (side 0), whose egress is the "peer"
/// given here; the redirect itself is exercised on veth by the inline tests.
#[test]
fn bridge_mode_forwards_in_kernel_root() {
    testbed::require_root("BPF_PROG_TEST_RUN of the XDP program");
    let lo = xdp_redirect::iface::index("lo").expect("loopback index");
    let prog = XdpRedirect::load(&LoadOptions {
        bridge: Some(xdp_redirect::BridgePorts {
            primary: lo,
            peer: lo,
        }),
        ..LoadOptions::default()
    })
    .expect("load in bridge mode");
    let mut verdicts = prog.verdict_map().unwrap();
    let run = |what: &str, frame: &[u8]| {
        let before = prog.counters().unwrap();
        let result = prog
            .test_run(frame, 1)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let delta = prog.counters().unwrap().since(&before);
        assert_eq!(delta.rx, delta.outcomes(), "{what}: one outcome per packet");
        (result.action, delta)
    };

    let flow = Packet::tcp(
        ip("198.18.1.1"),
        40000,
        ip("198.18.1.2"),
        80,
        frames::TCP_ACK,
    );
    let k = key(ip("198.18.1.1"), 40000, ip("198.18.1.2"), 80, 6, 0);
    // Undecided: to user space; no socket here, so the failure action,
    // which in bridge mode (fail open) is to bridge the frame.
    let (action, delta) = run("undecided", &flow.build());
    assert_eq!((action, delta.no_socket), (xdp_action::REDIRECT, 1));

    assert!(verdicts.set_if_absent(&k, Action::Forward).unwrap());
    let (action, delta) = run("forward verdict", &flow.build());
    assert_eq!(action, xdp_action::REDIRECT, "forwarded to the peer port");
    assert_eq!(delta.bypass_forward, 1);
    let (action, _) = run("reverse direction", &flow.reversed().build());
    assert_eq!(action, xdp_action::REDIRECT);
    assert_eq!(verdicts.get(&k).unwrap().unwrap().flags, 0, "no FIN yet");
    let fin = Packet::tcp(
        ip("198.18.1.2"),
        80,
        ip("198.18.1.1"),
        40000,
        frames::TCP_FIN | frames::TCP_ACK,
    );
    run("FIN", &fin.build());
    let entry = verdicts.get(&k).unwrap().unwrap();
    assert_eq!(
        entry.flags,
        abi::dp_verdict_flags::DP_VERDICT_F_CLOSING,
        "FIN through the kernel path marks the flow closing"
    );
    assert_eq!(entry.packets.iter().sum::<u64>(), 3);

    // "Drop wins": an allow does not replace an existing verdict, a drop does.
    assert!(!verdicts.set_if_absent(&k, Action::Forward).unwrap());
    verdicts.set(&k, Action::Drop).unwrap();
    let (action, delta) = run("drop verdict", &flow.build());
    assert_eq!((action, delta.bypass_drop), (xdp_action::DROP, 1));

    // Batched writes: one syscall for many flows, overwriting.
    let others: Vec<FlowKey> = (1..=3)
        .map(|i| key(ip("198.18.1.1"), 41000 + i, ip("198.18.1.2"), 80, 6, 0))
        .collect();
    assert_eq!(verdicts.set_batch(&others, Action::Forward).unwrap(), 3);
    assert_eq!(verdicts.set_batch(&others, Action::Drop).unwrap(), 3);
    for other in &others {
        let entry = verdicts.get(other).unwrap().expect("written");
        assert_eq!(Action::from_code(entry.action).unwrap(), Some(Action::Drop));
    }

    // What the program does not parse is bridged, and counted by reason.
    let (action, delta) = run(
        "ARP",
        &frames::arp_request([2, 0, 0, 0, 0, 1], [198, 18, 1, 1], [198, 18, 1, 2]),
    );
    assert_eq!(action, xdp_action::REDIRECT);
    assert_eq!((delta.non_ip, delta.bridged), (1, 1));
    // What it cannot key (malformed IP, more VLAN tags or IPv6 extension
    // headers than it walks) goes to user space, never around inspection;
    // test_run has no socket, so this is the failure action (fail open:
    // the other port), counted as no_socket.
    let mut garbage = vec![0xffu8; 30];
    garbage[12..14].copy_from_slice(&[0x08, 0x00]); // "IPv4", version 15
    let three_tags = Packet::udp(ip("198.18.1.1"), 1, ip("198.18.1.2"), 2).with_vlans(&[1, 2, 3]);
    let mut deep_v6 = Packet::udp(ip("2001:db8::1"), 1, ip("2001:db8::2"), 2);
    deep_v6.ipv6_ext = vec![Ipv6Ext::DestOpts; 5];
    for (what, frame) in [
        ("garbage", garbage),
        ("three VLAN tags", three_tags.build()),
        ("five IPv6 destination options", deep_v6.build()),
    ] {
        let (action, delta) = run(what, &frame);
        assert_eq!(action, xdp_action::REDIRECT, "{what}");
        assert_eq!(
            (
                delta.unparsed_to_user,
                delta.no_socket,
                delta.bridged,
                delta.parse_errors
            ),
            (1, 1, 0, 0),
            "{what}: {delta:?}"
        );
    }
}

/// Fail open / fail closed: a queue whose worker stopped beating gets the
/// failure action instead of user space (counted as `failover`); a queue no
/// worker ever served is just `no_socket`.
#[test]
fn dead_workers_fail_open_or_closed_root() {
    testbed::require_root("BPF_PROG_TEST_RUN of the XDP program");
    let frame = Packet::udp(ip("198.18.0.1"), 4000, ip("198.18.0.2"), 9).build();
    for (drop, expected) in [(false, xdp_action::PASS), (true, xdp_action::DROP)] {
        let prog = XdpRedirect::load(&LoadOptions {
            failure: xdp_redirect::FailurePolicy {
                grace: Some(std::time::Duration::from_millis(50)),
                drop,
            },
            ..LoadOptions::default()
        })
        .unwrap();
        let heartbeat = prog.heartbeat().unwrap();
        let run = |what: &str| {
            let before = prog.counters().unwrap();
            let action = prog.test_run(&frame, 1).unwrap().action;
            let delta = prog.counters().unwrap().since(&before);
            assert_eq!(delta.rx, delta.outcomes(), "{what}: one outcome per packet");
            (action, delta)
        };
        // Never served: no socket, the failure action, counted as no_socket.
        let (action, delta) = run("never served");
        assert_eq!((action, delta.no_socket, delta.failover), (expected, 1, 0));
        // A live worker on queue 0 (test_run's queue): still no socket here,
        // so no_socket again, not failover.
        heartbeat.beat(0);
        let (_, delta) = run("alive");
        assert_eq!((delta.no_socket, delta.failover), (1, 0), "drop = {drop}");
        // The worker stops beating: after the grace, failover.
        std::thread::sleep(std::time::Duration::from_millis(120));
        let (action, delta) = run("dead");
        assert_eq!((action, delta.failover), (expected, 1), "drop = {drop}");
    }
}

/// Host mode: every packet goes to the stack (`XDP_PASS`), never to an
/// AF_XDP socket; an undecided flow's packets are copied, whole, into the
/// ring of one worker, the same one for both directions; a decided flow is
/// no longer copied, and "drop" is still dropped in XDP.
#[test]
fn host_mode_passes_everything_and_copies_undecided_flows_root() {
    testbed::require_root("BPF_PROG_TEST_RUN of the XDP program");
    const RINGS: u32 = 4;
    let prog = XdpRedirect::load(&LoadOptions {
        host: Some(RINGS),
        ..LoadOptions::default()
    })
    .expect("load in host mode");
    let mut rings = prog.host_rings(RINGS).expect("make the worker rings");
    let mut verdicts = prog.verdict_map().unwrap();
    let run = |what: &str, frame: &[u8]| {
        let before = prog.counters().unwrap();
        let action = prog.test_run(frame, 1).unwrap().action;
        let delta = prog.counters().unwrap().since(&before);
        assert_eq!(delta.rx, delta.outcomes(), "{what}: one outcome per packet");
        (action, delta)
    };
    // Which rings hold a record now, with the bytes of each.
    let drain = |rings: &mut Vec<xdp_redirect::host::HostRing>| {
        let mut found = Vec::new();
        for ring in rings.iter_mut() {
            let index = ring.index();
            while let Some(packet) = ring.take() {
                assert_eq!(packet.direction(), xdp_redirect::host::Direction::Received);
                assert!(packet.rx_ns() > 0);
                found.push((index, packet.data().to_vec(), packet.len()));
            }
        }
        found
    };

    let mut owners = std::collections::BTreeSet::new();
    for sport in 0..64u16 {
        let flow = Packet::udp(ip("198.18.0.1"), 5000 + sport, ip("198.18.0.2"), 53)
            .with_payload(&[sport as u8; 100]);
        let (action, delta) = run("undecided", &flow.build());
        assert_eq!(
            (action, delta.to_user),
            (xdp_action::PASS, 1),
            "to the stack, and copied"
        );
        let (action, _) = run("undecided, reply", &flow.reversed().build());
        assert_eq!(action, xdp_action::PASS);
        let copies = drain(&mut rings);
        assert_eq!(copies.len(), 2, "one copy per packet: {copies:?}");
        assert_eq!(
            copies[0].0, copies[1].0,
            "both directions in one worker's ring"
        );
        assert_eq!(copies[0].1, flow.build(), "the whole frame");
        assert_eq!(copies[0].2 as usize, flow.build().len());
        owners.insert(copies[0].0);
    }
    assert_eq!(
        owners.len() as u32,
        RINGS,
        "flows spread over every ring: {owners:?}"
    );

    // A frame longer than the snap length is cut, and says so.
    let big = Packet::udp(ip("198.18.0.1"), 6000, ip("198.18.0.2"), 9)
        .with_payload(&vec![7u8; 3000])
        .build();
    run("big", &big);
    let copies = drain(&mut rings);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].1.len(), xdp_redirect::host::SNAP);
    assert_eq!(copies[0].2 as usize, big.len());
    assert_eq!(copies[0].1[..], big[..xdp_redirect::host::SNAP]);

    // Decided: passed or dropped in XDP, no copy.
    let flow = Packet::tcp(
        ip("198.18.0.1"),
        40000,
        ip("198.18.0.2"),
        80,
        frames::TCP_ACK,
    );
    let k = key(ip("198.18.0.1"), 40000, ip("198.18.0.2"), 80, 6, 0);
    verdicts.set(&k, Action::Pass).unwrap();
    let (action, delta) = run("allowed", &flow.build());
    assert_eq!(
        (action, delta.bypass_pass, delta.to_user),
        (xdp_action::PASS, 1, 0)
    );
    verdicts.set(&k, Action::Drop).unwrap();
    let (action, delta) = run("dropped", &flow.reversed().build());
    assert_eq!((action, delta.bypass_drop), (xdp_action::DROP, 1));
    assert!(drain(&mut rings).is_empty(), "decided flows are not copied");

    // What the program does not parse goes to the stack, uncopied.
    let (action, delta) = run(
        "ARP",
        &frames::arp_request([2, 0, 0, 0, 0, 1], [198, 18, 0, 1], [198, 18, 0, 2]),
    );
    assert_eq!((action, delta.non_ip), (xdp_action::PASS, 1));
    assert!(drain(&mut rings).is_empty());
}
