//! The ECMP testbed: a client, a router that spreads the VIP's flows over
//! three balancer instances by L4 hash (the routes come from BGP), and three
//! backends that decapsulate and answer the client directly (DSR). The
//! router, balancers and backends share one L2 segment (a Linux bridge in its
//! own namespace); the client sits behind the router.
//!
//! ```text
//!   client  c0 198.18.73.2/24        route to the VIP via the router
//!   router  rc 198.18.73.1/24, r0 198.18.72.1/24   forwarding, fib_multipath_hash_policy = 1
//!   lb1..3  lb0 198.18.72.11..13     dataplane --lb (ipip) and a BGP speaker each
//!   b1..b3  eth0 198.18.72.21..23    VIP on lo, decapsulator; the client via the router
//!   VIP     198.18.70.100
//! ```
//!
//! Nothing here speaks BGP: the test starts the daemons. The switch-side
//! ends of the balancers' links run an XDP_PASS program (veth drops frames
//! sent with XDP_TX toward a peer without one). No route leads out.

use std::{io, time::Duration};

use crate::{
    Netns,
    lb::{addr, link},
    veth_pair, wait_until,
};

pub const VIP: &str = "198.18.70.100";
pub const CLIENT: &str = "198.18.73.2";
pub const ROUTER: &str = "198.18.72.1";
/// AS numbers of the router and of every balancer instance.
pub const ROUTER_AS: u32 = 65000;
pub const BALANCER_AS: u32 = 65001;

#[derive(Debug)]
pub struct EcmpTestbed {
    // Field order is drop order: the namespaces go last.
    /// Keep the XDP_PASS programs on the switch side of the balancers' links.
    _peer_xdp: Vec<Box<dyn std::any::Any + Send>>,
    /// Each balancer's address on the segment.
    pub balancers4: Vec<String>,
    pub backends4: Vec<String>,
    pub client: Netns,
    pub router: Netns,
    pub balancers: Vec<Netns>,
    pub backends: Vec<Netns>,
    pub switch: Netns,
}

impl EcmpTestbed {
    /// Builds it; `attach_pass(ifname)` attaches an XDP_PASS program to
    /// `ifname` in the calling thread's namespace (the switch's) and returns
    /// what keeps it attached.
    pub fn up<K: Send + 'static>(
        attach_pass: impl Fn(&str) -> K + Send + Clone + 'static,
    ) -> io::Result<EcmpTestbed> {
        crate::require_root("the ECMP testbed");
        let switch = Netns::new("dpesw")?;
        let client = Netns::new("dpecli")?;
        let router = Netns::new("dper")?;
        let balancers: Vec<Netns> = (1..=3)
            .map(|i| Netns::new(&format!("dpelb{i}")))
            .collect::<io::Result<_>>()?;
        let backends: Vec<Netns> = (1..=3)
            .map(|i| Netns::new(&format!("dpeb{i}")))
            .collect::<io::Result<_>>()?;
        switch.ip(&["link", "add", "seg", "type", "bridge"])?;
        switch.ip(&["link", "set", "seg", "up"])?;

        // client <-> router, a plain link
        veth_pair(&client, "c0", &router, "rc", 1)?;
        link(&client, "c0", 1500)?;
        link(&router, "rc", 1500)?;
        addr(&client, &format!("{CLIENT}/24"), "c0")?;
        addr(&router, "198.18.73.1/24", "rc")?;
        client.ip(&["route", "add", &format!("{VIP}/32"), "via", "198.18.73.1"])?;

        // the segment: room for the outer header of encapsulated frames
        let mut ports = vec![("p-r".to_string(), 1600)];
        veth_pair(&router, "r0", &switch, "p-r", 1)?;
        link(&router, "r0", 1600)?;
        addr(&router, &format!("{ROUTER}/24"), "r0")?;
        // a router: forwarding, and ECMP by the 5-tuple (L4), not addresses only
        for key in [
            "net.ipv4.conf.all.forwarding",
            "net.ipv4.conf.rc.forwarding",
            "net.ipv4.conf.r0.forwarding",
        ] {
            router.sysctl(key, "1")?;
        }
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;

        let mut balancers4 = Vec::new();
        for (i, lb) in balancers.iter().enumerate() {
            let port = format!("p-lb{}", i + 1);
            // two queues: the workers of inspecting services would serve both
            veth_pair(lb, "lb0", &switch, &port, 2)?;
            link(lb, "lb0", 1600)?;
            let a = format!("198.18.72.{}", 11 + i);
            addr(lb, &format!("{a}/24"), "lb0")?;
            // the balancer's FIB lookups are forwarding lookups
            lb.sysctl("net.ipv4.conf.lb0.forwarding", "1")?;
            balancers4.push(a);
            ports.push((port, 1600));
        }
        let mut backends4 = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let port = format!("p-b{}", i + 1);
            veth_pair(b, "eth0", &switch, &port, 1)?;
            link(b, "eth0", 1600)?;
            let a = format!("198.18.72.{}", 21 + i);
            addr(b, &format!("{a}/24"), "eth0")?;
            // the decapsulated packets are for the VIP; answers go to the
            // client through the router, not back through a balancer
            b.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            b.ip(&["route", "add", "198.18.73.0/24", "via", ROUTER])?;
            backends4.push(a);
            ports.push((port, 1600));
        }
        for (port, mtu) in &ports {
            switch.ip(&["link", "set", port, "master", "seg"])?;
            link(&switch, port, *mtu)?;
        }
        let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        for i in 1..=3 {
            let port = format!("p-lb{i}");
            let attach = attach_pass.clone();
            let what = port.clone();
            let k = switch
                .run_inside(move || attach(&what))
                .map_err(|e| io::Error::other(format!("XDP_PASS on {port}: {e}")))?;
            keep.push(Box::new(k));
        }
        wait_until("the segment's links up", Duration::from_secs(5), || {
            let out = switch.ip(&["-br", "link", "show", "master", "seg"]).ok()?;
            (out.lines().filter(|l| l.contains("UP")).count() == ports.len()).then_some(())
        })
        .map_err(io::Error::other)?;
        Ok(EcmpTestbed {
            _peer_xdp: keep,
            balancers4,
            backends4,
            client,
            router,
            balancers,
            backends,
            switch,
        })
    }

    /// The router's next hops for the VIP now (the balancers it spreads
    /// flows over), from its kernel routing table.
    pub fn vip_next_hops(&self) -> io::Result<Vec<String>> {
        let out = self.router.ip(&["route", "show", &format!("{VIP}/32")])?;
        Ok(out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect())
    }
}
