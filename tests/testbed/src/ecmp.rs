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

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    Netns, Process, Scratch,
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

/// Where the pieces of a run are: the `dataplane` binary, the test peers
/// (`tests/peers`) and the BIRD templates (`dist/bird`).
#[derive(Clone, Debug)]
pub struct Paths {
    pub dataplane: String,
    pub peers: String,
    pub bird: String,
}

/// A shipped template with its @KEY@ values filled in; an error names a
/// key left without one.
pub fn render(paths: &Paths, template: &str, values: &[(&str, String)]) -> io::Result<String> {
    let mut text = std::fs::read_to_string(format!("{}/{template}", paths.bird))?;
    for (key, value) in values {
        text = text.replace(&format!("@{key}@"), value);
    }
    if let Some(at) = text.find('@') {
        return Err(io::Error::other(format!(
            "{template}: a value is missing near `{}`",
            &text[at..(at + 20).min(text.len())]
        )));
    }
    Ok(text)
}

/// Starts BIRD in `ns` with `conf` (control socket `socket`), in the
/// foreground so it is ours to stop; waits for it to start.
pub fn bird(ns: &Netns, conf: &Path, socket: &Path) -> io::Result<Process> {
    let mut cmd = ns.command("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(conf)
        .arg("-s")
        .arg(socket)
        .arg("-P")
        .arg(conf.with_extension("pid"));
    let mut p = Process::spawn(cmd)?;
    p.wait_for_line("Started", Duration::from_secs(20))
        .map_err(|e| io::Error::other(format!("bird ({}): {e}", conf.display())))?;
    Ok(p)
}

/// `dataplane ctl --socket SOCKET --json WORDS...`: the reply, or the error
/// it printed.
pub fn ctl(paths: &Paths, socket: &Path, words: &[&str]) -> Result<serde_json::Value, String> {
    let out = std::process::Command::new(&paths.dataplane)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(words)
        .output()
        .map_err(|e| format!("run dataplane ctl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("ctl JSON: {e}"))
}

/// One balancer instance: the data plane, its BGP speaker and the health
/// check between them (`dist/bird/dataplane-bird-health`).
pub struct Instance {
    pub socket: PathBuf,
    /// None while killed.
    pub dp: Option<Process>,
    pub health: Process,
    pub bird: Process,
}

/// The testbed with everything running: backends (HTTP servers and
/// decapsulators), the router's BGP speaker, and the instances.
pub struct EcmpRun {
    // Field order is drop order: processes before the testbed.
    pub instances: Vec<Instance>,
    pub router_bird: Process,
    pub servers: Vec<Process>,
    pub paths: Paths,
    pub lb_file: PathBuf,
    pub scratch: Scratch,
    pub tb: EcmpTestbed,
}

impl EcmpRun {
    /// Brings everything up with `lb.toml` (`weights` for b1..b3, ipip,
    /// TCP health checks every 200 ms) on every instance, each checked
    /// every `health_every_s` seconds; returns once the router has a route
    /// to the VIP through all three.
    pub fn start<K: Send + 'static>(
        paths: Paths,
        tag: &str,
        weights: [u32; 3],
        health_every_s: &str,
        attach_pass: impl Fn(&str) -> K + Send + Clone + 'static,
    ) -> io::Result<EcmpRun> {
        let tb = EcmpTestbed::up(attach_pass)?;
        let scratch = Scratch::new(tag);
        let mut servers = Vec::new();
        for (i, ns) in tb.backends.iter().enumerate() {
            let mut cmd = ns.command("python3");
            cmd.arg(format!("{}/lb_backend.py", paths.peers))
                .arg(format!("b{}", i + 1));
            let mut p = Process::spawn(cmd)?;
            p.wait_for_line("ready", Duration::from_secs(20))
                .map_err(|e| io::Error::other(format!("backend b{}: {e}", i + 1)))?;
            servers.push(p);
            let mut cmd = ns.command(&paths.dataplane);
            cmd.args(["decap", "--iface", "eth0"]);
            let mut d = Process::spawn(cmd)?;
            d.wait_for_line("stripping", Duration::from_secs(20))
                .map_err(|e| io::Error::other(format!("decap: {e}")))?;
            servers.push(d);
        }
        let neighbors: String = tb
            .balancers4
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "protocol bgp lb{} from balancers {{ neighbor {a} as {BALANCER_AS}; }}\n",
                    i + 1
                )
            })
            .collect();
        let router_conf = scratch.path("bird-router.conf");
        std::fs::write(
            &router_conf,
            render(
                &paths,
                "router.conf",
                &[
                    ("ROUTER_ID", ROUTER.to_string()),
                    ("LOCAL_AS", ROUTER_AS.to_string()),
                    ("PEER_AS", BALANCER_AS.to_string()),
                    ("VIP_PREFIX", "198.18.70.0/24".to_string()),
                    ("NEIGHBORS", neighbors),
                ],
            )?,
        )?;
        let router_bird = bird(&tb.router, &router_conf, &scratch.path("bird-router.ctl"))?;
        let lb_file = scratch.path("lb.toml");
        let mut text = format!(
            "mode = \"ipip\"\n[health]\nkind = \"tcp\"\nport = 80\ninterval_ms = 200\ntimeout_ms = 150\nrise = 2\nfall = 2\n[[service]]\nvip = \"{VIP}\"\nport = 80\nproto = \"tcp\"\n"
        );
        for (addr, weight) in tb.backends4.iter().zip(weights) {
            text += &format!("[[service.backend]]\naddr = \"{addr}\"\nweight = {weight}\n");
        }
        std::fs::write(&lb_file, text)?;
        let mut run = EcmpRun {
            instances: Vec::new(),
            router_bird,
            servers,
            paths,
            lb_file,
            scratch,
            tb,
        };
        for i in 0..3 {
            let instance = run.start_instance(i, health_every_s)?;
            run.instances.push(instance);
        }
        run.wait_next_hops(3, Duration::from_secs(30))?;
        Ok(run)
    }

    fn start_instance(&self, i: usize, health_every_s: &str) -> io::Result<Instance> {
        let ns = &self.tb.balancers[i];
        let socket = self.scratch.path(&format!("lb{}.sock", i + 1));
        let dp = Some(self.dataplane(i, &socket)?);
        let conf = self.scratch.path(&format!("bird-lb{}.conf", i + 1));
        std::fs::write(
            &conf,
            render(
                &self.paths,
                "balancer.conf",
                &[
                    ("ROUTER_ID", self.tb.balancers4[i].clone()),
                    ("LOCAL_AS", BALANCER_AS.to_string()),
                    ("PEER", ROUTER.to_string()),
                    ("PEER_AS", ROUTER_AS.to_string()),
                    ("VIP_ROUTES", format!("\troute {VIP}/32 blackhole;")),
                ],
            )?,
        )?;
        let bird_socket = self.scratch.path(&format!("bird-lb{}.ctl", i + 1));
        let bird = bird(ns, &conf, &bird_socket)?;
        let mut cmd = ns.command("sh");
        cmd.arg(format!("{}/dataplane-bird-health", self.paths.bird))
            .arg(&socket)
            .arg(&bird_socket)
            .arg(health_every_s)
            .env("DATAPLANE", &self.paths.dataplane);
        let health = Process::spawn(cmd)?;
        Ok(Instance {
            socket,
            dp,
            health,
            bird,
        })
    }

    /// Starts instance `i`'s data plane (again).
    fn dataplane(&self, i: usize, socket: &Path) -> io::Result<Process> {
        let mut cmd = self.tb.balancers[i].command(&self.paths.dataplane);
        cmd.args(["--iface", "lb0", "--lb"])
            .arg(&self.lb_file)
            .arg("--control")
            .arg(socket)
            .args(["--stats-interval", "1"])
            .env("RUST_LOG", "info");
        let mut dp = Process::spawn(cmd)?;
        dp.wait_for_line("load balancing on", Duration::from_secs(20))
            .map_err(io::Error::other)?;
        Ok(dp)
    }

    /// SIGKILLs instance `i`'s data plane (its BGP speaker and health check
    /// stay: the check withdraws the VIP).
    pub fn kill(&mut self, i: usize) -> io::Result<()> {
        if let Some(mut dp) = self.instances[i].dp.take() {
            dp.signal(libc::SIGKILL)?;
            dp.wait_exit(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Starts instance `i`'s data plane again after [`EcmpRun::kill`].
    pub fn restart(&mut self, i: usize) -> io::Result<()> {
        let socket = self.instances[i].socket.clone();
        self.instances[i].dp = Some(self.dataplane(i, &socket)?);
        Ok(())
    }

    /// Waits until the router has `n` next hops for the VIP; returns how
    /// long that took.
    pub fn wait_next_hops(&self, n: usize, within: Duration) -> io::Result<Duration> {
        let started = Instant::now();
        wait_until(
            &format!("{n} next hop(s) for the VIP on the router"),
            within,
            || (self.tb.vip_next_hops().ok()?.len() == n).then_some(()),
        )
        .map_err(|e| {
            io::Error::other(format!(
                "{e}: {:?}; router: {}",
                self.tb.vip_next_hops(),
                self.router_bird.output()
            ))
        })?;
        Ok(started.elapsed())
    }

    /// `lb show` of instance `i`.
    pub fn show(&self, i: usize) -> Result<serde_json::Value, String> {
        ctl(&self.paths, &self.instances[i].socket, &["lb", "show"])
    }

    /// The table digest of instance `i`'s service.
    pub fn digest(&self, i: usize) -> Result<String, String> {
        self.show(i)?["services"][0]["table_digest"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "no table digest".to_string())
    }

    /// Instance `i`'s (new connections, mid-connection misses: flows that
    /// came to it without a SYN) so far.
    pub fn connections(&self, i: usize) -> Result<(u64, u64), String> {
        let doc = self.show(i)?;
        Ok((
            doc["services"][0]["new_conns"].as_u64().unwrap_or(0),
            doc["connections"]["lost"].as_u64().unwrap_or(0),
        ))
    }

    /// Instance `i`'s packets of the service so far.
    pub fn packets(&self, i: usize) -> Result<u64, String> {
        Ok(self.show(i)?["services"][0]["packets"]
            .as_u64()
            .unwrap_or(0))
    }

    /// Runs the test client (`lb_client.py ARGS`) in the client namespace.
    pub fn client(&self, args: &[&str]) -> io::Result<serde_json::Value> {
        let out = self
            .tb
            .client
            .command("python3")
            .arg(format!("{}/lb_client.py", self.paths.peers))
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "lb_client.py {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(io::Error::other)
    }

    /// Starts `lb_client.py steady` with `n` connections for `seconds`,
    /// each a request every `every_s` seconds; returns once they are open.
    pub fn steady(&self, n: usize, seconds: u32, every_s: f64) -> io::Result<Process> {
        let mut cmd = self.tb.client.command("python3");
        cmd.arg(format!("{}/lb_client.py", self.paths.peers)).args([
            "steady",
            VIP,
            "80",
            &n.to_string(),
            &seconds.to_string(),
            &every_s.to_string(),
        ]);
        let mut p = Process::spawn(cmd)?;
        p.wait_for_line("connected", Duration::from_secs(60))
            .map_err(io::Error::other)?;
        Ok(p)
    }
}
