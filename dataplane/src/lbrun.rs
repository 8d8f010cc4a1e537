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
    collections::HashMap,
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

/// Where services and backends live in the kernel's maps: a service id
/// (its tables and counters) per service, a backend slot per (service,
/// backend), given out from free lists so services and backends can come
/// and go while running. A removed backend's slot is kept ("retired") while
/// established connections may still use it, then freed.
#[derive(Clone, Debug)]
struct Slots {
    service_ids: HashMap<String, u32>,
    backends: HashMap<(String, IpAddr), u32>,
    /// By backend slot: our source address toward the backend (the ipip
    /// outer source), resolved when the backend was added.
    sources: HashMap<u32, IpAddr>,
    free_ids: Vec<u32>,
    free_backends: Vec<u32>,
    /// Slots of removed backends whose connections may still run, with
    /// the time they were removed.
    retired: Vec<(u32, Instant)>,
}

impl Slots {
    fn new() -> Slots {
        Slots {
            service_ids: HashMap::new(),
            backends: HashMap::new(),
            sources: HashMap::new(),
            // popped from the end: ids and slots are handed out from 0 up
            free_ids: (0..xdp_redirect::lb::MAX_SERVICES).rev().collect(),
            free_backends: (0..xdp_redirect::lb::MAX_BACKENDS).rev().collect(),
            retired: Vec::new(),
        }
    }

    fn add_service(&mut self, name: &str) -> Result<u32, String> {
        let id = self.free_ids.pop().ok_or_else(|| {
            format!(
                "no room for another service (at most {})",
                xdp_redirect::lb::MAX_SERVICES
            )
        })?;
        self.service_ids.insert(name.to_string(), id);
        Ok(id)
    }

    fn add_backend(&mut self, service: &str, addr: IpAddr) -> Result<u32, String> {
        let source = source_toward(addr).map_err(|e| format!("{e:#}"))?;
        let index = self.free_backends.pop().ok_or_else(|| {
            format!(
                "no room for another backend (at most {} over all services, counting removed ones whose connections still run)",
                xdp_redirect::lb::MAX_BACKENDS
            )
        })?;
        self.backends.insert((service.to_string(), addr), index);
        self.sources.insert(index, source);
        Ok(index)
    }

    fn backend(&self, service: &str, addr: IpAddr) -> u32 {
        self.backends[&(service.to_string(), addr)]
    }

    fn id(&self, service: &str) -> u32 {
        self.service_ids[service]
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
        let mut neighbours = ManagedNeighbours(Vec::new());
        neighbours.extend(backends);
        neighbours
    }

    /// Keeps the next hops of `backends` resolved too.
    fn extend(&mut self, backends: &[IpAddr]) {
        let mut added = Vec::new();
        let mut seen: std::collections::BTreeSet<(String, String)> =
            self.0.iter().cloned().collect();
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
        self.0.extend(added);
    }
}

impl Drop for ManagedNeighbours {
    fn drop(&mut self) {
        for (hop, dev) in &self.0 {
            let _ = ip_cmd(&["neigh", "del", hop, "dev", dev]);
        }
    }
}

/// How long a connection may sit idle and still count as running when a
/// removed backend's slot is considered for reuse (the longest TCP idle
/// timeout of the data plane).
const CONN_IDLE: Duration = Duration::from_secs(600);
/// How often retired backend slots are looked at (a walk of the
/// connection table).
const RETIRED_SWEEP: Duration = Duration::from_secs(5);

struct Lb<'a> {
    args: &'a RunArgs,
    /// The lb file, read again on `lb reload` and SIGHUP, written by `lb save`.
    file: &'a Path,
    balancer: Balancer,
    slots: Slots,
    maps: LbMaps,
    /// Next-hop neighbour entries kept resolved for the backends.
    neighbours: ManagedNeighbours,
    /// The probes of the current layout (restarted when it changes).
    monitor: Option<lb::monitor::Monitor>,
    events: mpsc::Sender<Event>,
    /// Per backend slot: packets at the last status tick, and the rate since.
    rates: HashMap<u32, (u64, Instant, f64)>,
    /// Workers inspect services with `inspect = true` (the run has rules).
    inspecting: bool,
}

impl Lb<'_> {
    /// Writes service `s`'s table (backend positions mapped to their slots).
    fn install(&mut self, s: usize) -> anyhow::Result<u32> {
        let state = &self.balancer.services[s];
        let name = state.service.name();
        let indexes = self.backend_slots(state);
        let slots: Vec<u32> = state
            .table
            .slots()
            .iter()
            .map(|&b| {
                if b == lb::table::EMPTY {
                    NO_BACKEND
                } else {
                    indexes[b as usize]
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
        let flags = xdp_redirect::lb::ServiceFlags {
            reset_down: self.balancer.config.on_backend_down == lb::config::OnDown::Reset,
            inspect: state.service.inspect,
        };
        let id = self.slots.id(&name);
        Ok(self.maps.install(&key, id, mode, flags, &slots)?)
    }

    /// The kernel slots of a service's backends, in the service's order.
    fn backend_slots(&self, state: &lb::balancer::ServiceState) -> Vec<u32> {
        let name = state.service.name();
        state
            .backends
            .iter()
            .map(|b| self.slots.backend(&name, b.addr))
            .collect()
    }

    fn write_backend(&mut self, s: usize, b: usize) -> anyhow::Result<()> {
        let service = &self.balancer.services[s];
        let state: &BackendState = &service.backends[b];
        let index = self.slots.backend(&service.service.name(), state.addr);
        let src = self.slots.sources[&index];
        self.maps
            .set_backend(index, state.addr, src, !state.health.up)?;
        Ok(())
    }

    /// Puts a change into the kernel and logs it: a health change as one
    /// line per backend with its old and new state and the probe's reason.
    fn apply(&mut self, change: Change) {
        let s = change.service;
        let name = self.balancer.services[s].service.name();
        for b in 0..self.balancer.services[s].backends.len() {
            if let Err(e) = self.write_backend(s, b) {
                tracing::error!(service = %name, "cannot update backend: {e:#}");
            }
        }
        if change.cause == "health" {
            for (addr, old, new) in &change.weights {
                let state = |w: u32| if w == 0 { "down" } else { "up" };
                tracing::warn!(
                    service = %name,
                    backend = %addr,
                    from = state(*old),
                    to = state(*new),
                    reason = change.reason.as_deref().unwrap_or("-"),
                    "backend health changed"
                );
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

    /// Makes `config` (checked: it parsed) the running one: new services
    /// and backends get their slots and entries, every changed table is
    /// switched, removed services leave the kernel, removed backends keep
    /// their established connections (or, `on_backend_down = "reset"`,
    /// lose them), and the probes follow the new layout. What cannot
    /// change while running (mode, table, gateway_mac), or what there is no
    /// room for, is refused before anything changes.
    fn apply_config(&mut self, config: Config) -> Result<Value, String> {
        let running = &self.balancer.config;
        let mut fixed = Vec::new();
        if config.mode != running.mode {
            fixed.push("mode");
        }
        if config.table != running.table {
            fixed.push("table");
        }
        if config.gateway_mac != running.gateway_mac {
            fixed.push("gateway_mac");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "{} cannot change while running (restart for that); nothing was changed",
                fixed.join(", ")
            ));
        }
        if !self.inspecting
            && let Some(s) = config.services.iter().find(|s| s.inspect)
        {
            return Err(format!(
                "{} has inspect = true, but this balancer runs without rules (start it with \
                 --rules or --policy to inspect); nothing was changed",
                s.name()
            ));
        }
        // an IPv6 service needs IPv6 forwarding for its next hops, too
        check_forwarding(&config, &self.args.iface)
            .map_err(|e| format!("{e:#}; nothing was changed"))?;
        // Room and routes first, on a copy: a failure changes nothing.
        let mut slots = self.slots.clone();
        let names = |c: &Config| -> Vec<String> { c.services.iter().map(|s| s.name()).collect() };
        let old_names = names(running);
        let mut new_backends = Vec::new();
        for s in &config.services {
            let name = s.name();
            if !old_names.contains(&name) {
                slots.add_service(&name)?;
            }
            for b in &s.backends {
                if !slots.backends.contains_key(&(name.clone(), b.addr)) {
                    let index = slots.add_backend(&name, b.addr)?;
                    new_backends.push((index, b.addr));
                }
            }
        }
        let health_changed = config.health != running.health || config.load != running.load;
        let mut update = self.balancer.update(config);
        let reset = self.balancer.config.on_backend_down == lb::config::OnDown::Reset;
        // Backends gone: out of the table (below) first, then their slot is
        // kept for their connections, or emptied.
        let mut gone: Vec<(String, IpAddr)> = update
            .removed_backends
            .iter()
            .map(|(service, b)| (service.clone(), b.addr))
            .collect();
        for st in &update.removed_services {
            let name = st.service.name();
            let key = xdp_redirect::lb::service_key(
                st.service.vip,
                st.service.port,
                st.service.proto.number(),
            );
            if let Err(e) = self.maps.remove_service(&key) {
                tracing::error!(service = %name, "cannot remove the service: {e:#}");
            }
            if let Some(id) = slots.service_ids.remove(&name) {
                slots.free_ids.push(id);
            }
            gone.extend(st.backends.iter().map(|b| (name.clone(), b.addr)));
        }
        for name in &update.added_services {
            let id = slots.id(name);
            if let Err(e) = self.maps.reset_stats(id, false) {
                tracing::warn!(service = %name, "cannot zero the service's counters: {e:#}");
            }
        }
        self.slots = slots;
        for (index, addr) in &new_backends {
            if let Err(e) = self.maps.reset_stats(*index, true) {
                tracing::warn!(backend = %addr, "cannot zero the backend's counters: {e:#}");
            }
        }
        if self.balancer.config.gateway_mac.is_none() {
            let addrs: Vec<IpAddr> = new_backends.iter().map(|(_, a)| *a).collect();
            self.neighbours.extend(&addrs);
        }
        let mut changed = Vec::new();
        let topology_changed = update.topology_changed();
        for change in std::mem::take(&mut update.changes) {
            let name = self.balancer.services[change.service].service.name();
            changed.push(json!({
                "service": name,
                "moved_slots": change.diff.moved,
            }));
            self.apply(change);
        }
        for (service, addr) in &gone {
            let Some(index) = self.slots.backends.remove(&(service.clone(), *addr)) else {
                continue;
            };
            if reset {
                if let Err(e) = self.maps.clear_backend(index) {
                    tracing::error!(backend = %addr, "cannot clear the backend: {e:#}");
                }
                self.slots.free_backends.push(index);
            } else {
                self.slots.retired.push((index, Instant::now()));
            }
            tracing::info!(
                service = %service,
                backend = %addr,
                connections = if reset { "reset" } else { "kept until they end" },
                "backend removed"
            );
        }
        for name in &update.added_services {
            tracing::info!(service = %name, "service added");
        }
        for st in &update.removed_services {
            tracing::info!(service = %st.service.name(), "service removed");
        }
        if topology_changed || health_changed {
            self.restart_probes();
        }
        Ok(json!({
            "services_added": update.added_services,
            "services_removed": update
                .removed_services
                .iter()
                .map(|s| s.service.name())
                .collect::<Vec<_>>(),
            "backends_added": update
                .added_backends
                .iter()
                .map(|(s, a)| format!("{s} {a}"))
                .collect::<Vec<_>>(),
            "backends_removed": update
                .removed_backends
                .iter()
                .map(|(s, b)| format!("{s} {}", b.addr))
                .collect::<Vec<_>>(),
            "changed": changed,
        }))
    }

    /// New probes for the current layout (the old ones stop first).
    fn restart_probes(&mut self) {
        self.monitor = None;
        self.monitor = Some(lb::monitor::Monitor::start(
            &self.balancer.config,
            self.balancer.generation,
            self.events.clone(),
        ));
    }

    /// Frees the slots of removed backends that no connection seen within
    /// [`CONN_IDLE`] still uses.
    fn sweep_retired(&mut self, now_ns: u64) {
        if self.slots.retired.is_empty() {
            return;
        }
        let since = now_ns.saturating_sub(CONN_IDLE.as_nanos() as u64);
        let in_use = self.maps.backends_in_use(since);
        let (still, done): (Vec<_>, Vec<_>) = self
            .slots
            .retired
            .drain(..)
            .partition(|(index, _)| in_use.contains(index));
        self.slots.retired = still;
        for (index, since) in done {
            if let Err(e) = self.maps.clear_backend(index) {
                tracing::error!(index, "cannot clear a retired backend: {e:#}");
                continue;
            }
            self.slots.free_backends.push(index);
            tracing::debug!(
                index,
                after_s = since.elapsed().as_secs(),
                "a removed backend's connections are over: its slot is free"
            );
        }
    }

    /// The `lb show` document: services, backends, weights, health and counters.
    fn show(&self, kernel: &xdp_redirect::Counters) -> Value {
        let services: Vec<Value> = self
            .balancer
            .services
            .iter()
            .map(|st| {
                let name = st.service.name();
                let slots = st.table.shares(st.backends.len());
                let indexes = self.backend_slots(st);
                let per_backend: Vec<_> = indexes
                    .iter()
                    .map(|&i| self.maps.backend_stats(i).unwrap_or_default())
                    .collect();
                let replies = self
                    .maps
                    .reply_stats(self.slots.id(&name))
                    .unwrap_or_default();
                let stats = xdp_redirect::lb::sum(per_backend.iter().chain([&replies]));
                let backends: Vec<Value> = st
                    .backends
                    .iter()
                    .zip(&per_backend)
                    .zip(&indexes)
                    .enumerate()
                    .map(|(b, ((be, bs), index))| {
                        json!({
                            "addr": be.addr.to_string(),
                            "up": be.health.up,
                            "health_reason": be.health_reason,
                            "weight": be.configured,
                            "drained": be.drained,
                            "effective_weight": be.effective,
                            "load": be.load,
                            "slots": slots[b],
                            "packets": bs.packets,
                            "bytes": bs.bytes,
                            "new_conns": bs.new_conns,
                            "packets_per_s": self.rates.get(index).map(|r| r.2),
                        })
                    })
                    .collect();
                json!({
                    "service": name,
                    "inspect": st.service.inspect,
                    "table_digest": st.digest(),
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
            "digest": self.balancer.digest(),
            "services": services,
            "retired_backends": self.slots.retired.len(),
            "connections": {
                "hits": kernel.lb_conn_hits,
                "misses": kernel.lb_conn_misses,
                "lost": kernel.lb_conn_lost,
            },
            "kernel": kernel,
        })
    }

    /// The services a command names: `tcp/VIP:PORT`, or every service with
    /// the backend when none is named.
    fn services_with(&self, service: Option<&str>, addr: IpAddr) -> Result<Vec<usize>, String> {
        let found: Vec<usize> = self
            .balancer
            .config
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| service.is_none_or(|n| s.name() == n))
            .filter(|(_, s)| s.backends.iter().any(|b| b.addr == addr))
            .map(|(i, _)| i)
            .collect();
        if let Some(name) = service
            && !self
                .balancer
                .config
                .services
                .iter()
                .any(|s| s.name() == name)
        {
            return Err(format!(
                "no service {name} (services are named like tcp/198.18.0.10:80)"
            ));
        }
        if found.is_empty() {
            return Err(format!(
                "{addr} is not a backend of {}",
                service.unwrap_or("any service")
            ));
        }
        Ok(found)
    }

    /// Applies an edit of the running configuration, checked as the lb
    /// file is (the edited configuration must read back from its file form).
    fn edit(&mut self, f: impl FnOnce(&mut Config) -> Result<(), String>) -> Result<Value, String> {
        let mut config = self.balancer.config.clone();
        f(&mut config)?;
        let checked = Config::parse("change", &config.to_toml()).map_err(|e| match e {
            lb::config::ConfigError::Invalid { key, message, .. } => {
                format!("{key}: {message}; nothing was changed")
            }
            other => format!("{other}; nothing was changed"),
        })?;
        self.apply_config(checked)
    }

    /// [`Lb::edit`] of backend `addr` in `service` (or every service that
    /// has it).
    fn edit_backend(
        &mut self,
        service: Option<&str>,
        addr: IpAddr,
        f: impl Fn(&mut lb::config::Backend),
    ) -> Result<Value, String> {
        let targets = self.services_with(service, addr)?;
        self.edit(|c| {
            for s in targets {
                c.services[s]
                    .backends
                    .iter_mut()
                    .filter(|b| b.addr == addr)
                    .for_each(&f);
            }
            Ok(())
        })
    }

    /// An `lb ...` command of the control socket; `show` and `health` also
    /// look at the inspecting workers, if any.
    fn command(
        &mut self,
        line: &str,
        kernel: &xdp_redirect::Counters,
        inspection: Option<&crate::lbinspect::Inspection>,
    ) -> Result<Value, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let addr = |a: &str| -> Result<IpAddr, String> {
            a.parse()
                .map_err(|_| format!("`{a}` is not a backend address"))
        };
        let weight = |w: &str| -> Result<u32, String> {
            w.parse().map_err(|_| format!("`{w}` is not a weight"))
        };
        match words.as_slice() {
            ["lb"] | ["lb", "show"] => Ok(with_inspection(self.show(kernel), inspection)),
            ["lb", "set-weight", rest @ ..] if matches!(rest.len(), 2 | 3) => {
                let (service, a, w) = match rest {
                    [a, w] => (None, *a, *w),
                    [s, a, w] => (Some(*s), *a, *w),
                    _ => unreachable!("two or three words"),
                };
                let (a, w) = (addr(a)?, weight(w)?);
                let value = self.edit_backend(service, a, |b| b.weight = w)?;
                Ok(json!({"backend": a.to_string(), "weight": w, "changed": value["changed"]}))
            }
            ["lb", verb @ ("drain" | "undrain"), rest @ ..] if matches!(rest.len(), 1 | 2) => {
                let (service, a) = match rest {
                    [a] => (None, *a),
                    [s, a] => (Some(*s), *a),
                    _ => unreachable!("one or two words"),
                };
                let a = addr(a)?;
                let drained = *verb == "drain";
                let value = self.edit_backend(service, a, |b| b.drained = drained)?;
                Ok(json!({"backend": a.to_string(), "drained": drained, "changed": value["changed"]}))
            }
            ["lb", "add-service", words @ ..] if words.len() >= 2 => {
                // `--inspect` first: inspect, then balance
                let (inspect, words) = match words {
                    ["--inspect", rest @ ..] => (true, rest),
                    rest => (false, rest),
                };
                let [proto, vip_port, backends @ ..] = words else {
                    return Err("usage: lb add-service [--inspect] PROTO VIP:PORT ADDR[=WEIGHT]...".into());
                };
                let proto = match *proto {
                    "tcp" => lb::config::Proto::Tcp,
                    "udp" => lb::config::Proto::Udp,
                    other => return Err(format!("`{other}` is not tcp or udp")),
                };
                let vip: SocketAddr = vip_port
                    .parse()
                    .map_err(|_| format!("`{vip_port}` is not VIP:PORT"))?;
                if backends.is_empty() {
                    return Err("a service needs a backend: lb add-service [--inspect] PROTO VIP:PORT ADDR[=WEIGHT]...".into());
                }
                let mut list = Vec::new();
                for b in backends {
                    let (a, w) = b.split_once('=').unwrap_or((b, "1"));
                    list.push(lb::config::Backend {
                        addr: addr(a)?,
                        weight: weight(w)?,
                        drained: false,
                        line: 0,
                    });
                }
                self.edit(|c| {
                    c.services.push(lb::config::Service {
                        vip: vip.ip(),
                        port: vip.port(),
                        proto,
                        backends: list,
                        inspect,
                    });
                    Ok(())
                })
            }
            ["lb", "remove-service", service] => {
                let name = service.to_string();
                self.edit(|c| {
                    let before = c.services.len();
                    c.services.retain(|s| s.name() != name);
                    if c.services.len() == before {
                        return Err(format!("no service {name} (services are named like tcp/198.18.0.10:80)"));
                    }
                    if c.services.is_empty() {
                        return Err("the balancer needs a service: this is its last one".into());
                    }
                    Ok(())
                })
            }
            ["lb", "add-backend", service, a, rest @ ..] if rest.len() <= 1 => {
                let (name, a) = (service.to_string(), addr(a)?);
                let w = rest.first().map_or(Ok(1), |w| weight(w))?;
                self.edit(|c| {
                    let s = c
                        .services
                        .iter_mut()
                        .find(|s| s.name() == name)
                        .ok_or_else(|| format!("no service {name}"))?;
                    s.backends.push(lb::config::Backend {
                        addr: a,
                        weight: w,
                        drained: false,
                        line: 0,
                    });
                    Ok(())
                })
            }
            ["lb", "remove-backend", service, a] => {
                let (name, a) = (service.to_string(), addr(a)?);
                self.edit(|c| {
                    let s = c
                        .services
                        .iter_mut()
                        .find(|s| s.name() == name)
                        .ok_or_else(|| format!("no service {name}"))?;
                    let before = s.backends.len();
                    s.backends.retain(|b| b.addr != a);
                    if s.backends.len() == before {
                        return Err(format!("{a} is not a backend of {name}"));
                    }
                    if s.backends.is_empty() {
                        return Err(format!(
                            "{a} is the last backend of {name}: remove the service instead"
                        ));
                    }
                    Ok(())
                })
            }
            ["lb", "health"] => health(self, inspection),
            ["lb", "reload"] => self.reload(),
            ["lb", "save"] => self.save(),
            _ => Err(
                "lb commands: show | health | set-weight [SERVICE] BACKEND WEIGHT | drain [SERVICE] BACKEND | \
                 undrain [SERVICE] BACKEND | add-service tcp|udp VIP:PORT BACKEND[=WEIGHT]... | \
                 remove-service SERVICE | add-backend SERVICE BACKEND [WEIGHT] | \
                 remove-backend SERVICE BACKEND | reload | save  (SERVICE: tcp/VIP:PORT)"
                    .into(),
            ),
        }
    }

    /// Reads the lb file again and makes it the running configuration
    /// (services, backends, weights, health and load settings; not mode,
    /// table or gateway_mac). A file that does not parse changes nothing.
    fn reload(&mut self) -> Result<Value, String> {
        let fresh = Config::load(self.file).map_err(|e| e.to_string())?;
        let mut value = self.apply_config(fresh)?;
        value["file"] = json!(self.file.display().to_string());
        Ok(value)
    }

    /// Writes the running configuration (with the changes made at run
    /// time) to the lb file, atomically, so a restart keeps them.
    fn save(&self) -> Result<Value, String> {
        let text = self.balancer.config.to_toml();
        let tmp = self.file.with_extension("toml.saving");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, self.file))
            .map_err(|e| format!("cannot write {}: {e}", self.file.display()))?;
        Ok(json!({"file": self.file.display().to_string(), "saved": true}))
    }

    /// Samples every backend's packet counter: the rates `lb show` reports.
    fn sample_rates(&mut self) {
        let now = Instant::now();
        for &index in self.slots.backends.values() {
            let packets = self
                .maps
                .backend_stats(index)
                .map(|s| s.packets)
                .unwrap_or(0);
            let rate = match self.rates.get(&index) {
                Some((before, at, _)) if packets >= *before => {
                    (packets - before) as f64 / now.duration_since(*at).as_secs_f64().max(1e-3)
                }
                _ => 0.0,
            };
            self.rates.insert(index, (packets, now, rate));
        }
    }

    fn status_line(&self) -> String {
        let mut parts = Vec::new();
        for st in &self.balancer.services {
            let name = st.service.name();
            let stats = self
                .maps
                .service_stats(
                    self.slots.id(&name),
                    st.backends
                        .iter()
                        .map(|b| self.slots.backend(&name, b.addr)),
                )
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
                name,
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
    // Inspect, then balance: with rules, workers read the first data
    // packets of the services that ask for it.
    let use_dpi = args.dpi
        || args.rules.is_some()
        || args.policy.is_some()
        || args.max_user_packets.is_some();
    if !use_dpi {
        if let Some(s) = config.services.iter().find(|s| s.inspect) {
            bail!(
                "{}: service {} has inspect = true: give the rules to inspect with (--rules \
                 FILE and/or --policy FILE), or remove inspect",
                file.display(),
                s.name()
            );
        }
        if args.flow_log.is_some() {
            bail!(
                "--flow-log with --lb records the connections of inspected services: give \
                 --rules or --policy (the kernel balances the others without records)"
            );
        }
    }
    let (plan, engine) = if use_dpi {
        let plan = crate::preflight::check(args)?;
        (Some(plan), Some(std::sync::Arc::new(args.engine().load()?)))
    } else {
        crate::preflight::check_lb(args)?;
        (None, None)
    };
    check_forwarding(&config, &args.iface)?;
    // every service and backend its kernel slot, and a route, before
    // anything is loaded
    let mut slots = Slots::new();
    for s in &config.services {
        let name = s.name();
        slots.add_service(&name).map_err(anyhow::Error::msg)?;
        for b in &s.backends {
            slots
                .add_backend(&name, b.addr)
                .map_err(anyhow::Error::msg)?;
        }
    }

    let program = xdp_redirect::XdpRedirect::load(&xdp_redirect::LoadOptions {
        stamp_meta: false,
        lb: Some(LbOptions {
            nat: config.mode == lb::Mode::Nat,
            gateway: config.gateway_mac,
        }),
        // an inspected connection's data packets when their worker cannot
        // take them: dropped unless --on-failure pass (then sent on,
        // uninspected)
        failure: xdp_redirect::FailurePolicy {
            grace: (use_dpi && args.failure_grace_ms > 0)
                .then(|| Duration::from_millis(args.failure_grace_ms)),
            drop: args.on_failure.unwrap_or(crate::cli::OnFailure::Drop)
                == crate::cli::OnFailure::Drop,
        },
        ..xdp_redirect::LoadOptions::default()
    })?;
    let mut program = program;
    // no workers beat here: this loop keeps the program's clock (the
    // connections' last-seen times) going, every turn (at most 20 ms)
    let clock = program.heartbeat()?;
    clock.tick();
    let balancer = Balancer::new(config.clone(), RING_SIZE);
    let (events_tx, events_rx) = mpsc::channel();
    let neighbours = match config.gateway_mac {
        Some(_) => ManagedNeighbours(Vec::new()),
        None => ManagedNeighbours::add(
            &config
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.addr))
                .collect::<Vec<_>>(),
        ),
    };
    let mut lb = Lb {
        args,
        file,
        balancer,
        slots,
        maps: program.lb_maps()?,
        neighbours,
        monitor: None,
        events: events_tx,
        rates: HashMap::new(),
        inspecting: use_dpi,
    };
    for s in 0..lb.balancer.services.len() {
        for b in 0..lb.balancer.services[s].backends.len() {
            lb.write_backend(s, b)?;
        }
        lb.install(s)?;
    }

    let mut inspection = match (&plan, engine) {
        (Some(plan), Some(engine)) => Some(crate::lbinspect::Inspection::start(
            args,
            plan,
            &mut program,
            engine,
        )?),
        _ => None,
    };

    let servers = control::Servers::start(args)?;
    let ctl_rx = servers.commands();

    let xdp_mode = program.attach(&args.iface, args.xdp_mode.into(), args.force)?;
    lb.restart_probes();
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
    let inspecting = match (&inspection, &plan) {
        (Some(i), Some(plan)) => format!(
            ", inspecting with {} worker(s) on cores {:?} (AF_XDP {} mode)",
            plan.queues, plan.cores, i.bind_mode
        ),
        _ => String::new(),
    };
    crate::logging::say(&format!(
        "dataplane: load balancing on {} in XDP {} mode, {} forwarding, {} tables of {} slots{}: {}; Ctrl-C to stop",
        args.iface,
        xdp_mode.as_str(),
        config.mode.as_str(),
        config.table.as_str(),
        RING_SIZE,
        inspecting,
        services.join(", ")
    ));

    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let tick = (args.stats_interval > 0.0).then(|| Duration::from_secs_f64(args.stats_interval));
    let mut next_status = tick.map(|t| started + t);
    let mut next_sweep = started + RETIRED_SWEEP;
    let mut failure = None;
    'run: loop {
        if let Some(i) = &mut inspection
            && let Err(e) = i.poll()
        {
            failure = Some(e);
            break;
        }
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
            // (the balancer holds a sender: the channel never disconnects)
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the backend probes stopped"),
        }
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + RETIRED_SWEEP;
            lb.sweep_retired(clock.clock());
        }
        while let Ok(command) = ctl_rx.try_recv() {
            let kernel = program.counters().unwrap_or_default();
            let result = match &command.request {
                control::Request::Lb(line) => lb.command(line, &kernel, inspection.as_ref()),
                control::Request::Stats => {
                    Ok(with_inspection(lb.show(&kernel), inspection.as_ref()))
                }
                control::Request::Metrics => {
                    Ok(Value::String(crate::metrics::render_lb(&lb.show(&kernel))))
                }
                control::Request::RulesReload => match &mut inspection {
                    Some(i) => i
                        .reload_rules(args)
                        .map(Value::String)
                        .map_err(|e| format!("{e:#}; the old rules keep running")),
                    None => Err("this balancer inspects nothing (start it with --rules or --policy)".to_string()),
                },
                _ => Err("this data plane runs as a load balancer (--lb): commands are stats and lb ... (`dataplane ctl help`)".to_string()),
            };
            let _ = command.reply.send(result);
        }
        if let (Some(t), Some(next)) = (tick, next_status)
            && Instant::now() >= next
        {
            lb.sample_rates();
            // every second or so: for debugging, not the log of record
            // (health changes and table changes have their own lines)
            tracing::debug!("{}", lb.status_line());
            next_status = Some(next + t);
        }
    }
    lb.monitor = None;
    drop(servers);
    program.detach()?;
    // the workers drain what is in flight once nothing new comes
    let inspected = inspection.map(|i| i.finish()).transpose()?;
    let kernel = program.counters().unwrap_or_default();
    let mut doc = lb.show(&kernel);
    if let Some(i) = inspected {
        doc["inspection"] = i;
    }
    print_summary(&doc, started.elapsed());
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(path) = &args.stats_json {
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `lb health`: what a routing daemon's check asks before it announces the
/// VIPs. Healthy while this process answers, its XDP program is attached
/// to the interface, every inspecting worker reports, and every service has
/// a backend up with weight; else the reasons.
fn health(lb: &Lb<'_>, inspection: Option<&crate::lbinspect::Inspection>) -> Result<Value, String> {
    let iface = &lb.args.iface;
    let mut reasons = Vec::new();
    match xdp_redirect::attached_program(iface) {
        Ok(Some(p)) if p.name == "dp_xdp" => {}
        Ok(Some(p)) => reasons.push(format!("{iface} runs another XDP program ({})", p.name)),
        Ok(None) => reasons.push(format!("no XDP program on {iface}")),
        Err(e) => reasons.push(format!("cannot query {iface}'s XDP program: {e}")),
    }
    if let Some(i) = inspection {
        reasons.extend(i.stalled());
    }
    if let Err(r) = lb.balancer.health() {
        reasons.extend(r);
    }
    if reasons.is_empty() {
        Ok(json!({"healthy": true, "digest": lb.balancer.digest()}))
    } else {
        Err(format!("unhealthy: {}", reasons.join("; ")))
    }
}

/// `lb show` (and stats) with what the inspecting workers did.
fn with_inspection(mut doc: Value, inspection: Option<&crate::lbinspect::Inspection>) -> Value {
    if let Some(i) = inspection {
        doc["inspection"] = i.json();
    }
    doc
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
    let i = &doc["inspection"];
    if i.is_object() {
        crate::logging::say(&format!(
            "  inspection: {} packets read in user space ({} sent on), {} flows, {} dropped, {} resets sent",
            i["user_packets"], i["sent"], i["flows"], i["dropped_flows"], i["rejects_sent"]
        ));
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
