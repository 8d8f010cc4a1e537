//! `dataplane --iface IF --lb lb.toml`: the load balancer.
//!
//! The kernel forwards every packet (dp_lb.h); this thread owns the
//! [`lb::Balancer`]: it takes health and load events from the probe threads
//! and operator commands from the control socket, and whenever effective
//! weights change it writes the service's new table into the unused half
//! and flips the service entry to it (no half-written table is ever live).
//!
//! Order, as for the data plane: the file is read and checked, every backend
//! is given a route and a source address, the program is loaded and every
//! map filled, and only then is it attached; a failure at any step leaves
//! the interface as it was.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use lb::{Balancer, Change, Config, Event, balancer::BackendState};
use xdp_redirect::lb::{LbMaps, LbOptions, NO_BACKEND, RING_SIZE};

use crate::{cli::RunArgs, control};

/// The kernel's index of each (service, backend): services' backends laid
/// out one after the other.
struct Layout {
    /// first[s] = kernel index of service s's backend 0
    first: Vec<u32>,
    /// By kernel index: our source address toward the backend (the ipip
    /// outer source), resolved once at start.
    sources: Vec<IpAddr>,
}

impl Layout {
    fn new(config: &Config) -> anyhow::Result<Layout> {
        let mut first = Vec::new();
        let mut sources = Vec::new();
        for s in &config.services {
            first.push(sources.len() as u32);
            for b in &s.backends {
                sources.push(source_toward(b.addr)?);
            }
        }
        Ok(Layout { first, sources })
    }

    fn index(&self, service: usize, backend: usize) -> u32 {
        self.first[service] + backend as u32
    }
}

/// The address this host sends from toward `backend` (what the kernel's
/// routing picks; nothing is sent), for the outer header in ipip mode.
fn source_toward(backend: IpAddr) -> anyhow::Result<IpAddr> {
    let bind: SocketAddr = if backend.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    socket
        .connect(SocketAddr::new(backend, 9))
        .with_context(|| format!("no route to backend {backend} from this network namespace"))?;
    Ok(socket.local_addr()?.ip())
}

/// Neighbour entries of the backends' next hops that this balancer made
/// "managed" (the kernel keeps them resolved, so `bpf_fib_lookup` finds a
/// MAC from the first packet on, with or without health probes); deleted
/// at exit. Entries an operator made permanent are left alone.
struct ManagedNeighbours(Vec<(String, String)>);

fn ip_cmd(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("ip").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl ManagedNeighbours {
    fn add(backends: &[IpAddr]) -> ManagedNeighbours {
        let mut added = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for addr in backends {
            let addr = addr.to_string();
            let Some(route) = ip_cmd(&["route", "get", &addr]) else {
                tracing::warn!(backend = %addr, "no route to the backend");
                continue;
            };
            let words: Vec<&str> = route.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .map(|w| w.to_string())
            };
            let (Some(dev), hop) = (after("dev"), after("via").unwrap_or(addr.clone())) else {
                continue;
            };
            if !seen.insert((hop.clone(), dev.clone())) {
                continue;
            }
            let existing = ip_cmd(&["neigh", "show", &hop, "dev", &dev]).unwrap_or_default();
            if existing.contains("PERMANENT") || existing.contains("managed") {
                continue;
            }
            match ip_cmd(&["neigh", "replace", &hop, "dev", &dev, "managed"]) {
                Some(_) => added.push((hop, dev)),
                None => tracing::warn!(
                    next_hop = %hop, %dev,
                    "could not add a managed neighbour entry (kernel older than 5.16?): \
                     until something resolves it, packets to this next hop go to the stack"
                ),
            }
        }
        if !added.is_empty() {
            tracing::info!(
                "keeping {} next-hop neighbour entr(ies) resolved (managed): {}",
                added.len(),
                added
                    .iter()
                    .map(|(h, d)| format!("{h} dev {d}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ManagedNeighbours(added)
    }
}

impl Drop for ManagedNeighbours {
    fn drop(&mut self) {
        for (hop, dev) in &self.0 {
            let _ = ip_cmd(&["neigh", "del", hop, "dev", dev]);
        }
    }
}

struct Lb<'a> {
    args: &'a RunArgs,
    /// The lb file, read again on `lb reload` and SIGHUP.
    file: &'a Path,
    balancer: Balancer,
    layout: Layout,
    maps: LbMaps,
}

impl Lb<'_> {
    /// Writes service `s`'s table (backend positions mapped to kernel indexes).
    fn install(&mut self, s: usize) -> anyhow::Result<u32> {
        let state = &self.balancer.services[s];
        let first = self.layout.index(s, 0);
        let slots: Vec<u32> = state
            .table
            .slots()
            .iter()
            .map(|&b| {
                if b == lb::table::EMPTY {
                    NO_BACKEND
                } else {
                    first + b
                }
            })
            .collect();
        let key = xdp_redirect::lb::service_key(
            state.service.vip,
            state.service.port,
            state.service.proto.number(),
        );
        let mode = match self.balancer.config.mode {
            lb::Mode::Ipip => xdp_redirect::lb::Mode::Ipip,
            lb::Mode::Nat => xdp_redirect::lb::Mode::Nat,
        };
        let reset = self.balancer.config.on_backend_down == lb::config::OnDown::Reset;
        Ok(self.maps.install(&key, s as u32, mode, reset, &slots)?)
    }

    fn write_backend(&mut self, s: usize, b: usize) -> anyhow::Result<()> {
        let state: &BackendState = &self.balancer.services[s].backends[b];
        let index = self.layout.index(s, b);
        let src = self.layout.sources[index as usize];
        self.maps
            .set_backend(index, state.addr, src, !state.health.up)?;
        Ok(())
    }

    /// Puts a change into the kernel and logs it.
    fn apply(&mut self, change: Change) {
        let s = change.service;
        let name = self.balancer.services[s].service.name();
        for b in 0..self.balancer.services[s].backends.len() {
            if let Err(e) = self.write_backend(s, b) {
                tracing::error!(service = %name, "cannot update backend: {e:#}");
            }
        }
        let weights: Vec<String> = change
            .weights
            .iter()
            .map(|(addr, old, new)| format!("{addr} {old} -> {new}"))
            .collect();
        match self.install(s) {
            Ok(table) => tracing::info!(
                service = %name,
                cause = change.cause,
                table,
                moved_slots = change.diff.moved,
                moved_pct = format!("{:.2}", 100.0 * change.diff.moved_fraction()),
                "weights changed: {}",
                weights.join(", ")
            ),
            Err(e) => tracing::error!(service = %name, "cannot install the new table: {e:#}"),
        }
    }

    /// The `lb show` document: services, backends, weights, health and counters.
    fn show(&self, kernel: &xdp_redirect::Counters) -> Value {
        let services: Vec<Value> = self
            .balancer
            .services
            .iter()
            .enumerate()
            .map(|(s, st)| {
                let slots = st.table.shares(st.backends.len());
                let per_backend: Vec<_> = (0..st.backends.len())
                    .map(|b| {
                        self.maps
                            .backend_stats(self.layout.index(s, b))
                            .unwrap_or_default()
                    })
                    .collect();
                let replies = self.maps.reply_stats(s as u32).unwrap_or_default();
                let stats = xdp_redirect::lb::sum(per_backend.iter().chain([&replies]));
                let backends: Vec<Value> = st
                    .backends
                    .iter()
                    .zip(&per_backend)
                    .enumerate()
                    .map(|(b, (be, bs))| {
                        json!({
                            "addr": be.addr.to_string(),
                            "up": be.health.up,
                            "weight": be.configured,
                            "effective_weight": be.effective,
                            "load": be.load,
                            "slots": slots[b],
                            "packets": bs.packets,
                            "bytes": bs.bytes,
                            "new_conns": bs.new_conns,
                        })
                    })
                    .collect();
                json!({
                    "service": st.service.name(),
                    "packets": stats.packets,
                    "bytes": stats.bytes,
                    "new_conns": stats.new_conns,
                    "backends": backends,
                })
            })
            .collect();
        json!({
            "iface": self.args.iface,
            "mode": self.balancer.config.mode.as_str(),
            "table": self.balancer.config.table.as_str(),
            "table_size": RING_SIZE,
            "services": services,
            "connections": {
                "hits": kernel.lb_conn_hits,
                "misses": kernel.lb_conn_misses,
                "lost": kernel.lb_conn_lost,
            },
            "kernel": kernel,
        })
    }

    /// `lb set-weight ADDR W` / `lb drain ADDR`: every service with that backend.
    fn set_weight(&mut self, addr: &str, weight: u32) -> Result<Value, String> {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not a backend address"))?;
        if weight > lb::config::MAX_WEIGHT {
            return Err(format!(
                "weight {weight} is out of range 0..={}",
                lb::config::MAX_WEIGHT
            ));
        }
        let mut hits = Vec::new();
        for s in 0..self.balancer.services.len() {
            if let Some(b) = self.balancer.services[s]
                .backends
                .iter()
                .position(|be| be.addr == addr)
            {
                hits.push((s, b));
            }
        }
        if hits.is_empty() {
            return Err(format!("{addr} is not a backend of any service"));
        }
        let mut changed = Vec::new();
        for (s, b) in hits {
            let event = Event::SetWeight {
                service: s,
                backend: b,
                weight,
            };
            if let Some(change) = self.balancer.apply(event) {
                changed.push(json!({
                    "service": self.balancer.services[s].service.name(),
                    "moved_slots": change.diff.moved,
                }));
                self.apply(change);
            }
        }
        Ok(json!({"backend": addr.to_string(), "weight": weight, "changed": changed}))
    }

    fn command(&mut self, line: &str, kernel: &xdp_redirect::Counters) -> Result<Value, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["lb"] | ["lb", "show"] => Ok(self.show(kernel)),
            ["lb", "set-weight", addr, w] => {
                let w: u32 = w.parse().map_err(|_| format!("`{w}` is not a weight"))?;
                self.set_weight(addr, w)
            }
            ["lb", "drain", addr] => self.set_weight(addr, 0),
            ["lb", "reload"] => self.reload(),
            _ => Err(
                "lb commands: lb show | lb set-weight BACKEND WEIGHT | lb drain BACKEND | lb reload"
                    .into(),
            ),
        }
    }

    /// Reads the lb file again. Only weights can change while running (the
    /// services and backends are the program's maps and the probes'
    /// threads); anything else, or a file that does not parse, is refused
    /// and changes nothing.
    fn reload(&mut self) -> Result<Value, String> {
        let fresh = Config::load(self.file).map_err(|e| e.to_string())?;
        let running = &self.balancer.config;
        let shape = |c: &Config| {
            c.services
                .iter()
                .map(|s| {
                    (
                        s.vip,
                        s.port,
                        s.proto,
                        s.backends.iter().map(|b| b.addr).collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut differs = Vec::new();
        if shape(&fresh) != shape(running) {
            differs.push("services or backends");
        }
        if fresh.mode != running.mode {
            differs.push("mode");
        }
        if fresh.table != running.table {
            differs.push("table");
        }
        if fresh.gateway_mac != running.gateway_mac {
            differs.push("gateway_mac");
        }
        if fresh.health != running.health || fresh.load != running.load {
            differs.push("[health] or [load]");
        }
        if fresh.on_backend_down != running.on_backend_down {
            differs.push("on_backend_down");
        }
        if !differs.is_empty() {
            return Err(format!(
                "{}: {} changed; only weights change while running (restart for the rest); nothing was changed",
                self.file.display(),
                differs.join(", ")
            ));
        }
        let mut changed = Vec::new();
        for (s, service) in fresh.services.iter().enumerate() {
            for (b, backend) in service.backends.iter().enumerate() {
                if self.balancer.services[s].backends[b].configured == backend.weight {
                    continue;
                }
                let event = Event::SetWeight {
                    service: s,
                    backend: b,
                    weight: backend.weight,
                };
                changed.push(json!({
                    "service": service.name(),
                    "backend": backend.addr.to_string(),
                    "weight": backend.weight,
                }));
                if let Some(change) = self.balancer.apply(event) {
                    self.apply(change);
                }
            }
        }
        self.balancer.config = fresh;
        Ok(json!({"file": self.file.display().to_string(), "changed": changed}))
    }

    fn status_line(&self) -> String {
        let mut parts = Vec::new();
        for (s, st) in self.balancer.services.iter().enumerate() {
            let first = self.layout.index(s, 0);
            let stats = self
                .maps
                .service_stats(s as u32, first..first + st.backends.len() as u32)
                .unwrap_or_default();
            let backends: Vec<String> = st
                .backends
                .iter()
                .map(|b| {
                    format!(
                        "{}{} w{}",
                        b.addr,
                        if b.health.up { "" } else { " DOWN" },
                        b.effective
                    )
                })
                .collect();
            parts.push(format!(
                "{}: {} pkts {} conns [{}]",
                st.service.name(),
                stats.packets,
                stats.new_conns,
                backends.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// Without a configured gateway the program finds next hops with
/// bpf_fib_lookup, which the kernel answers only when forwarding is enabled
/// on the interface. Refuse to start rather than count every packet as
/// "no route".
fn check_forwarding(config: &Config, iface: &str) -> anyhow::Result<()> {
    if config.gateway_mac.is_some() {
        return Ok(());
    }
    let mut families = vec!["ipv4"];
    if config.services.iter().any(|s| s.vip.is_ipv6()) {
        families.push("ipv6");
    }
    for family in families {
        let path = format!("/proc/sys/net/{family}/conf/{iface}/forwarding");
        let value = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        if value.trim() != "1" {
            bail!(
                "forwarding is off on {iface} ({path} = {}): the balancer looks up next hops \
                 with bpf_fib_lookup, which needs it; enable it (sysctl -w \
                 net.{family}.conf.{iface}.forwarding=1) or set gateway_mac in the lb file",
                value.trim()
            );
        }
    }
    Ok(())
}

pub fn run(args: &RunArgs, file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    crate::preflight::check_lb(args)?;
    check_forwarding(&config, &args.iface)?;
    let layout = Layout::new(&config)?;

    let program = xdp_redirect::XdpRedirect::load(&xdp_redirect::LoadOptions {
        stamp_meta: false,
        lb: Some(LbOptions {
            nat: config.mode == lb::Mode::Nat,
            gateway: config.gateway_mac,
        }),
        ..xdp_redirect::LoadOptions::default()
    })?;
    let mut program = program;
    // no workers beat here: this loop keeps the program's clock (the
    // connections' last-seen times) going, every turn (at most 20 ms)
    let clock = program.heartbeat()?;
    clock.tick();
    let balancer = Balancer::new(config.clone(), RING_SIZE);
    let mut lb = Lb {
        args,
        file,
        balancer,
        layout,
        maps: program.lb_maps()?,
    };
    for s in 0..lb.balancer.services.len() {
        for b in 0..lb.balancer.services[s].backends.len() {
            lb.write_backend(s, b)?;
        }
        lb.install(s)?;
    }

    let servers = control::Servers::start(args)?;
    let ctl_rx = servers.commands();

    let _neighbours = match config.gateway_mac {
        Some(_) => ManagedNeighbours(Vec::new()),
        None => ManagedNeighbours::add(
            &config
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.addr))
                .collect::<Vec<_>>(),
        ),
    };
    let xdp_mode = program.attach(&args.iface, args.xdp_mode.into(), args.force)?;
    let (events_tx, events_rx) = mpsc::channel();
    let monitor = lb::monitor::Monitor::start(&config, events_tx);
    let services: Vec<String> = lb
        .balancer
        .services
        .iter()
        .map(|s| format!("{} ({} backends)", s.service.name(), s.backends.len()))
        .collect();
    // Signal handlers before the "running" line: whoever waits for that
    // line may stop us at once.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("install signal handlers")?;
    crate::logging::say(&format!(
        "dataplane: load balancing on {} in XDP {} mode, {} forwarding, {} tables of {} slots: {}; Ctrl-C to stop",
        args.iface,
        xdp_mode.as_str(),
        config.mode.as_str(),
        config.table.as_str(),
        RING_SIZE,
        services.join(", ")
    ));

    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let tick = (args.stats_interval > 0.0).then(|| Duration::from_secs_f64(args.stats_interval));
    let mut next_status = tick.map(|t| started + t);
    'run: loop {
        for signal in signals.pending() {
            if signal != SIGHUP {
                break 'run;
            }
            match lb.reload() {
                Ok(v) => tracing::info!("SIGHUP: reloaded {}: {}", file.display(), v["changed"]),
                Err(e) => tracing::error!("SIGHUP: {e}"),
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        clock.tick();
        match events_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(event) => {
                if let Some(change) = lb.balancer.apply(event) {
                    lb.apply(change);
                }
                // drain what queued up behind it
                while let Ok(event) = events_rx.try_recv() {
                    if let Some(change) = lb.balancer.apply(event) {
                        lb.apply(change);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if monitor.is_idle() {
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    bail!("the backend probes stopped");
                }
            }
        }
        while let Ok(command) = ctl_rx.try_recv() {
            let kernel = program.counters().unwrap_or_default();
            let result = match &command.request {
                control::Request::Lb(line) => lb.command(line, &kernel),
                control::Request::Stats => Ok(lb.show(&kernel)),
                control::Request::Metrics => {
                    Ok(Value::String(crate::metrics::render_lb(&lb.show(&kernel))))
                }
                _ => Err("this data plane runs as a load balancer (--lb): commands are stats, lb show, lb set-weight BACKEND WEIGHT, lb drain BACKEND".to_string()),
            };
            let _ = command.reply.send(result);
        }
        if let (Some(t), Some(next)) = (tick, next_status)
            && Instant::now() >= next
        {
            tracing::info!("{}", lb.status_line());
            next_status = Some(next + t);
        }
    }
    drop(monitor);
    drop(servers);
    let kernel = program.counters().unwrap_or_default();
    let doc = lb.show(&kernel);
    program.detach()?;
    print_summary(&doc, started.elapsed());
    if let Some(path) = &args.stats_json {
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn print_summary(doc: &Value, uptime: Duration) {
    crate::logging::say(&format!(
        "\ndataplane: load balancer stopped after {:.1} s ({} mode, {} table)",
        uptime.as_secs_f64(),
        doc["mode"].as_str().unwrap_or("?"),
        doc["table"].as_str().unwrap_or("?")
    ));
    for s in doc["services"].as_array().into_iter().flatten() {
        crate::logging::say(&format!(
            "  {}: {} packets, {} bytes, {} new connections",
            s["service"].as_str().unwrap_or("?"),
            s["packets"],
            s["bytes"],
            s["new_conns"]
        ));
        for b in s["backends"].as_array().into_iter().flatten() {
            crate::logging::say(&format!(
                "    {:<28} {:>4} weight {:>4} effective {:>6} slots {:>6} packets {:>10} connections {:>8}",
                b["addr"].as_str().unwrap_or("?"),
                if b["up"].as_bool() == Some(true) {
                    "up"
                } else {
                    "DOWN"
                },
                b["weight"],
                b["effective_weight"],
                b["slots"],
                b["packets"],
                b["new_conns"]
            ));
        }
    }
    let k = &doc["kernel"];
    crate::logging::say(&format!(
        "  kernel: rx {} forwarded {} replies {} passed {} (no route {}) no backend {} other {}; connections: hits {} new {} lost {}",
        k["rx"],
        k["lb_forwarded"],
        k["lb_replies"],
        k["lb_passed"],
        k["lb_no_route"],
        k["lb_no_backend"],
        k["lb_other"],
        k["lb_conn_hits"],
        k["lb_conn_misses"],
        k["lb_conn_lost"]
    ));
}
