//! The load balancer testbed: one L2 segment (a Linux bridge in its own
//! namespace) joining a client, the balancer and three backends, each in its
//! own namespace, the way a one-armed balancer sits on a data-centre segment.
//!
//! ```text
//!   client c0 198.18.70.2, 2001:2::70:2      route to the VIPs via the balancer
//!   lb     lb0 198.18.70.1 + 198.18.71.254, 2001:2::70:1 + 2001:2::71:fe
//!   b1..b3 eth0 198.18.71.N, 2001:2::71:N    VIPs on lo (ipip), or default via the balancer (nat)
//!   VIPs   198.18.70.100, 2001:2::70:100
//! ```
//!
//! IPv6 addresses come from 2001:2::/48, IPv6's benchmarking prefix
//! (RFC 5180), as 198.18.0.0/15 is IPv4's. No route leads out of the
//! segment. The switch-side end of the balancer's link runs an XDP_PASS
//! program: veth drops frames sent with XDP_TX toward a peer without one.

use std::{io, time::Duration};

use crate::{Netns, run, veth_pair, wait_until};

pub const VIP4: &str = "198.18.70.100";
pub const VIP6: &str = "2001:2::70:100";
pub const CLIENT4: &str = "198.18.70.2";
pub const CLIENT6: &str = "2001:2::70:2";

/// How replies get back to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Return {
    /// Backends answer the client directly, from the VIP (ipip mode).
    Direct,
    /// Backends route everything through the balancer (nat mode).
    ViaBalancer,
}

#[derive(Debug)]
pub struct LbTestbed {
    // Field order is drop order: the namespaces go last.
    /// Keeps the XDP_PASS program on the switch side of the balancer's link.
    _peer_xdp: Box<dyn std::any::Any + Send>,
    pub lb_if: String,
    pub backend_if: String,
    pub backends4: Vec<String>,
    pub backends6: Vec<String>,
    pub client: Netns,
    pub lb: Netns,
    pub backends: Vec<Netns>,
    pub switch: Netns,
}

pub(crate) fn addr(ns: &Netns, cidr: &str, dev: &str) -> io::Result<()> {
    if cidr.contains(':') {
        ns.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
    } else {
        ns.ip(&["addr", "add", cidr, "dev", dev])?;
    }
    Ok(())
}

/// Link up with IPv6 on (no duplicate address detection wait), TX
/// checksum offload off (veth would hand on partial checksums), and `mtu`.
pub(crate) fn link(ns: &Netns, ifname: &str, mtu: u32) -> io::Result<()> {
    ns.sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0")?;
    run(ns.command("ethtool").args(["-K", ifname, "tx", "off"]))?;
    ns.ip(&["link", "set", ifname, "mtu", &mtu.to_string(), "up"])?;
    Ok(())
}

impl LbTestbed {
    /// Builds the segment; `attach_pass(ifname)` must attach an XDP_PASS
    /// program to `ifname` in the calling thread's namespace and return
    /// what keeps it attached (it runs inside the switch namespace).
    pub fn up<K: Send + 'static>(
        queues: u32,
        ret: Return,
        attach_pass: impl FnOnce(&str) -> K + Send + 'static,
    ) -> io::Result<LbTestbed> {
        crate::require_root("the load balancer testbed");
        let switch = Netns::new("dplbsw")?;
        let client = Netns::new("dplbcli")?;
        let lb = Netns::new("dplb")?;
        let backends: Vec<Netns> = (1..=3)
            .map(|i| Netns::new(&format!("dplbb{i}")))
            .collect::<io::Result<_>>()?;
        switch.ip(&["link", "add", "seg", "type", "bridge"])?;
        switch.ip(&["link", "set", "seg", "up"])?;
        // The balancer's link carries encapsulated frames: room for the
        // outer header on it and toward the backends (the client stays at 1500).
        veth_pair(&client, "c0", &switch, "p-c", 1)?;
        veth_pair(&lb, "lb0", &switch, "p-lb", queues)?;
        for (i, b) in backends.iter().enumerate() {
            veth_pair(b, "eth0", &switch, &format!("p-b{}", i + 1), 1)?;
        }
        for (port, mtu) in [
            ("p-c", 1500),
            ("p-lb", 1600),
            ("p-b1", 1600),
            ("p-b2", 1600),
            ("p-b3", 1600),
        ] {
            switch.ip(&["link", "set", port, "master", "seg"])?;
            link(&switch, port, mtu)?;
        }
        link(&client, "c0", 1500)?;
        addr(&client, "198.18.70.2/24", "c0")?;
        addr(&client, "2001:2::70:2/112", "c0")?;
        client.ip(&["route", "add", &format!("{VIP4}/32"), "via", "198.18.70.1"])?;
        client.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "via",
            "2001:2::70:1",
        ])?;
        // the client reaches backends on the segment only for DSR replies'
        // neighbour resolution (they ask for the client's MAC)
        link(&lb, "lb0", 1600)?;
        // the balancer's FIB lookups are forwarding lookups (its own namespace)
        lb.sysctl("net.ipv4.conf.lb0.forwarding", "1")?;
        lb.sysctl("net.ipv6.conf.lb0.forwarding", "1")?;
        for a in [
            "198.18.70.1/24",
            "198.18.71.254/24",
            "2001:2::70:1/112",
            "2001:2::71:fe/112",
        ] {
            addr(&lb, a, "lb0")?;
        }
        let mut backends4 = Vec::new();
        let mut backends6 = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let n = i + 1;
            link(b, "eth0", 1600)?;
            addr(b, &format!("198.18.71.{n}/24"), "eth0")?;
            addr(b, &format!("2001:2::71:{n}/112"), "eth0")?;
            backends4.push(format!("198.18.71.{n}"));
            backends6.push(format!("2001:2::71:{n}"));
            match ret {
                Return::Direct => {
                    // the VIPs are local (the decapsulated packets are for
                    // them); clients are on the segment
                    b.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;
                    addr(b, &format!("{VIP6}/128"), "lo")?;
                    b.ip(&["route", "add", "198.18.70.0/24", "dev", "eth0"])?;
                    b.ip(&["-6", "route", "add", "2001:2::70:0/112", "dev", "eth0"])?;
                }
                Return::ViaBalancer => {
                    b.ip(&["route", "add", "198.18.70.0/24", "via", "198.18.71.254"])?;
                    b.ip(&[
                        "-6",
                        "route",
                        "add",
                        "2001:2::70:0/112",
                        "via",
                        "2001:2::71:fe",
                    ])?;
                }
            }
        }
        let keep = switch
            .run_inside(move || attach_pass("p-lb"))
            .map_err(|e| io::Error::other(format!("XDP_PASS on p-lb: {e}")))?;
        // IPv6 addresses are usable at once (nodad); wait for the links.
        wait_until("the segment's links up", Duration::from_secs(5), || {
            let out = switch.ip(&["-br", "link", "show", "master", "seg"]).ok()?;
            (out.lines().filter(|l| l.contains("UP")).count() == 5).then_some(())
        })
        .map_err(io::Error::other)?;
        Ok(LbTestbed {
            _peer_xdp: Box::new(keep),
            lb_if: "lb0".into(),
            backend_if: "eth0".into(),
            backends4,
            backends6,
            client,
            lb,
            backends,
            switch,
        })
    }
}
