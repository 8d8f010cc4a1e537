//! The balancer's state: per service, each backend's configured weight,
//! health (rise/fall) and measured load, the effective weights computed from
//! them, and the table built from those. Pure: events go in, changes come out;
//! the caller writes the tables where the packets are.

use std::net::IpAddr;

use crate::{
    config::{Config, Service},
    table::{self, Entry, Table},
};

/// Effective weight of a backend as the operator left it: drained counts
/// as weight 0, its configured weight kept.
fn effective_of(b: &BackendState) -> u32 {
    effective_weight(
        if b.drained { 0 } else { b.configured },
        b.health.up,
        b.load,
    )
}

/// Configured weights are multiplied by this before load scales them, so a
/// load of 0.3 on a weight-1 backend still changes its share.
pub const SCALE: u32 = 100;
/// A saturated backend keeps this share of its weight (not zero), so it keeps
/// seeing a little traffic and its load figure keeps meaning something.
pub const MIN_LOAD_FACTOR: f64 = 0.05;

/// Effective weight of a backend: 0 when down or drained, else the
/// configured weight × SCALE × (1 − load), never below MIN_LOAD_FACTOR of it.
pub fn effective_weight(configured: u32, up: bool, load: Option<f64>) -> u32 {
    if !up || configured == 0 {
        return 0;
    }
    let factor = match load {
        Some(l) if l.is_finite() => (1.0 - l.clamp(0.0, 1.0)).max(MIN_LOAD_FACTOR),
        _ => 1.0,
    };
    ((f64::from(configured * SCALE) * factor).round() as u32).max(1)
}

/// Rise/fall state of one backend's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    /// Consecutive results contrary to `up`.
    streak: u32,
}

impl Default for Health {
    /// Backends start up, as in haproxy and Katran: the balancer serves at
    /// once, and a dead backend is found within fall × interval.
    fn default() -> Self {
        Health {
            up: true,
            streak: 0,
        }
    }
}

impl Health {
    /// Records one probe; returns true when the state flips.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        if self.streak >= if self.up { fall } else { rise } {
            self.up = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

/// One backend of one service, as the balancer tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendState {
    pub addr: IpAddr,
    /// From the file, or `ctl lb set-weight`.
    pub configured: u32,
    /// `ctl lb drain`: weight 0 until `lb undrain`, `configured` kept.
    pub drained: bool,
    pub health: Health,
    /// Why health last changed (`connection refused`, `HTTP status 503`,
    /// `probe ok`), once it has.
    pub health_reason: Option<String>,
    /// Last load figure (0.0..=1.0), if a load source is configured and answered.
    pub load: Option<f64>,
    /// Weight in the current table.
    pub effective: u32,
}

#[derive(Debug, Clone)]
pub struct ServiceState {
    pub service: Service,
    pub backends: Vec<BackendState>,
    pub table: Table,
}

impl ServiceState {
    /// A digest of the live table: SHA-256 over each slot's backend
    /// address (or none), first 16 hex digits. Instances that build the
    /// same table, whatever order their backends came in or which kernel
    /// slots they sit in, show the same digest.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(self.service.name().as_bytes());
        for &slot in self.table.slots() {
            match self.backends.get(slot as usize) {
                Some(b) if slot != table::EMPTY => {
                    let id = addr_id(b.addr);
                    hash.update([id.len() as u8]);
                    hash.update(&id);
                }
                _ => hash.update([0u8]),
            }
        }
        hex16(&hash.finalize())
    }

    fn entries(&self) -> Vec<Entry> {
        self.backends
            .iter()
            .map(|b| Entry {
                id: addr_id(b.addr),
                weight: b.effective,
            })
            .collect()
    }
}

/// The first 8 bytes of a digest in hex.
fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Balancer {
    /// A digest of every service's table (in name order, so the order of
    /// the file does not matter): equal on instances that balance alike.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut digests: Vec<(String, String)> = self
            .services
            .iter()
            .map(|s| (s.service.name(), s.digest()))
            .collect();
        digests.sort();
        let mut hash = sha2::Sha256::new();
        for (name, digest) in digests {
            hash.update(name.as_bytes());
            hash.update(digest.as_bytes());
        }
        hex16(&hash.finalize())
    }

    /// Whether this instance should carry traffic (announce its VIPs):
    /// every service has a backend with weight in its table. The reasons
    /// why not, if not.
    pub fn health(&self) -> Result<(), Vec<String>> {
        let empty: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.backends.iter().all(|b| b.effective == 0))
            .map(|s| format!("{}: no backend up with weight", s.service.name()))
            .collect();
        if empty.is_empty() { Ok(()) } else { Err(empty) }
    }
}

/// A backend's identity in the table: its address bytes.
pub fn addr_id(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A table change, to be written to the kernel and logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub service: usize,
    /// (address, old effective weight, new effective weight) of each backend whose weight changed.
    pub weights: Vec<(IpAddr, u32, u32)>,
    /// What the new table moved.
    pub diff: table::Diff,
    /// Why: "health", "load" or "operator".
    pub cause: &'static str,
    /// For a health change: what the probe said.
    pub reason: Option<String>,
}

/// All services' state.
#[derive(Debug, Clone)]
pub struct Balancer {
    pub config: Config,
    pub services: Vec<ServiceState>,
    size: u32,
    /// Bumped whenever services or backends come or go: probe results of
    /// an earlier layout ([`Event`]s carry it) are ignored.
    pub generation: u64,
}

/// What [`Balancer::update`] changed besides weights: the kernel's side
/// (service ids, backend slots, probes) follows from it.
#[derive(Debug, Default)]
pub struct Update {
    /// Services gone, with the backends they had.
    pub removed_services: Vec<ServiceState>,
    /// Names of services that are new.
    pub added_services: Vec<String>,
    /// (service name, backend) of backends gone from services that stay.
    pub removed_backends: Vec<(String, BackendState)>,
    /// (service name, address) of backends new in services that stay.
    pub added_backends: Vec<(String, IpAddr)>,
    /// Tables rebuilt (services that stay or are new), by new position.
    pub changes: Vec<Change>,
}

impl Update {
    /// Services or backends came or went.
    pub fn topology_changed(&self) -> bool {
        !(self.removed_services.is_empty()
            && self.added_services.is_empty()
            && self.removed_backends.is_empty()
            && self.added_backends.is_empty())
    }
}

/// What a probe or the operator reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Probe {
        generation: u64,
        service: usize,
        backend: usize,
        /// Ok, or why not (`connection refused`, `HTTP status 503`...).
        result: Result<(), String>,
    },
    Load {
        generation: u64,
        service: usize,
        backend: usize,
        load: Option<f64>,
    },
}

impl Balancer {
    /// Builds every service's table from the configured weights (all backends up).
    pub fn new(config: Config, size: u32) -> Balancer {
        let services = config
            .services
            .iter()
            .map(|s| {
                let backends: Vec<BackendState> = s.backends.iter().map(new_backend).collect();
                let mut st = ServiceState {
                    service: s.clone(),
                    backends,
                    table: Table::build(config.table, &[], size),
                };
                st.table = Table::build(config.table, &st.entries(), size);
                st
            })
            .collect();
        Balancer {
            config,
            services,
            size,
            generation: 0,
        }
    }

    /// Makes `config` the running configuration: services and backends
    /// that stay keep their health and load, new ones start up, and every
    /// table whose weights changed is rebuilt. The caller checked `config`
    /// (it parsed).
    pub fn update(&mut self, config: Config) -> Update {
        let mut update = Update::default();
        let mut old: Vec<ServiceState> = std::mem::take(&mut self.services);
        let mut services = Vec::with_capacity(config.services.len());
        for s in &config.services {
            let name = s.name();
            let st = match old.iter().position(|o| o.service.name() == name) {
                Some(i) => {
                    let mut st = old.remove(i);
                    let mut backends = Vec::with_capacity(s.backends.len());
                    for b in &s.backends {
                        match st.backends.iter().position(|x| x.addr == b.addr) {
                            Some(j) => {
                                let mut kept = st.backends.remove(j);
                                kept.configured = b.weight;
                                kept.drained = b.drained;
                                backends.push(kept);
                            }
                            None => {
                                update.added_backends.push((name.clone(), b.addr));
                                let mut fresh = new_backend(b);
                                // enters with weight 0: the rebuild below adds it
                                fresh.effective = 0;
                                backends.push(fresh);
                            }
                        }
                    }
                    for gone in st.backends.drain(..) {
                        update.removed_backends.push((name.clone(), gone));
                    }
                    st.backends = backends;
                    st.service = s.clone();
                    st
                }
                None => {
                    update.added_services.push(name.clone());
                    let backends: Vec<BackendState> = s
                        .backends
                        .iter()
                        .map(|b| BackendState {
                            effective: 0,
                            ..new_backend(b)
                        })
                        .collect();
                    ServiceState {
                        service: s.clone(),
                        backends,
                        table: Table::build(config.table, &[], self.size),
                    }
                }
            };
            services.push(st);
        }
        update.removed_services = old;
        self.services = services;
        self.config = config;
        if update.topology_changed() {
            self.generation += 1;
        }
        for i in 0..self.services.len() {
            let name = self.services[i].service.name();
            let forced = update.added_services.contains(&name)
                || update.removed_backends.iter().any(|(n, _)| *n == name);
            if let Some(change) = self.rebuild_with(i, "operator", None, forced) {
                update.changes.push(change);
            }
        }
        update
    }

    /// Applies an event; returns the change when the table of its service had
    /// to be rebuilt. Unknown indexes are ignored (an event from a monitor of
    /// a configuration that has since been replaced).
    pub fn apply(&mut self, event: Event) -> Option<Change> {
        let (rise, fall) = (self.config.health.rise, self.config.health.fall);
        let current = self.generation;
        let mut reason = None;
        let (service, backend, cause) = match event {
            Event::Probe {
                generation,
                service,
                backend,
                result,
            } => {
                if generation != current {
                    return None;
                }
                let b = self.services.get_mut(service)?.backends.get_mut(backend)?;
                if !b.health.record(result.is_ok(), rise, fall) {
                    return None;
                }
                let why = result.err().unwrap_or_else(|| "probe ok".into());
                b.health_reason = Some(why.clone());
                reason = Some(why);
                (service, backend, "health")
            }
            Event::Load {
                generation,
                service,
                backend,
                load,
            } => {
                if generation != current {
                    return None;
                }
                let b = self.services.get_mut(service)?.backends.get_mut(backend)?;
                b.load = load;
                (service, backend, "load")
            }
        };
        let _ = backend;
        self.rebuild_with(service, cause, reason, false)
    }

    /// Recomputes the effective weights of one service; rebuilds its table if
    /// any changed (or, `forced`, in any case: its backends changed).
    fn rebuild_with(
        &mut self,
        service: usize,
        cause: &'static str,
        reason: Option<String>,
        forced: bool,
    ) -> Option<Change> {
        let algorithm = self.config.table;
        let size = self.size;
        let st = &mut self.services[service];
        let old_entries = st.entries();
        let mut weights = Vec::new();
        for b in &mut st.backends {
            let w = effective_of(b);
            // Load figures jitter: ignore changes under 10 % of the weight,
            // which would move slots (and new connections) for nothing.
            let small = cause == "load"
                && w != 0
                && b.effective != 0
                && w.abs_diff(b.effective) * 10 < b.effective;
            if w != b.effective && !small {
                weights.push((b.addr, b.effective, w));
                b.effective = w;
            }
        }
        if weights.is_empty() && !forced {
            return None;
        }
        let new_entries = st.entries();
        let table = Table::build(algorithm, &new_entries, size);
        let diff = table::diff((&st.table, &old_entries), (&table, &new_entries));
        st.table = table;
        Some(Change {
            service,
            weights,
            diff,
            cause,
            reason,
        })
    }
}

/// A backend as it enters: up, not loaded, at its configured weight.
fn new_backend(b: &crate::config::Backend) -> BackendState {
    let mut state = BackendState {
        addr: b.addr,
        configured: b.weight,
        drained: b.drained,
        health: Health::default(),
        health_reason: None,
        load: None,
        effective: 0,
    };
    state.effective = effective_of(&state);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut h = Health::default();
        assert!(!h.record(false, 2, 3));
        assert!(!h.record(false, 2, 3));
        assert!(!h.record(true, 2, 3)); // streak broken
        assert!(!h.record(false, 2, 3));
        assert!(!h.record(false, 2, 3));
        assert!(h.record(false, 2, 3));
        assert!(!h.up);
        assert!(!h.record(true, 2, 3));
        assert!(h.record(true, 2, 3));
        assert!(h.up);
    }

    #[test]
    fn effective_weights() {
        assert_eq!(effective_weight(5, true, None), 500);
        assert_eq!(effective_weight(5, false, None), 0);
        assert_eq!(effective_weight(0, true, Some(0.0)), 0);
        assert_eq!(effective_weight(5, true, Some(0.4)), 300);
        assert_eq!(effective_weight(5, true, Some(1.0)), 25);
        assert_eq!(effective_weight(5, true, Some(7.0)), 25);
        assert_eq!(effective_weight(5, true, Some(f64::NAN)), 500);
    }

    fn config() -> Config {
        Config::parse(
            "t",
            r#"
[[service]]
vip = "198.18.70.100"
port = 80
proto = "tcp"
[[service.backend]]
addr = "198.18.71.1"
weight = 5
[[service.backend]]
addr = "198.18.71.2"
weight = 3
[[service.backend]]
addr = "198.18.71.3"
weight = 2
"#,
        )
        .unwrap()
    }

    #[test]
    fn a_failed_backend_leaves_the_table_and_comes_back() {
        let mut b = Balancer::new(config(), 251);
        let probe = |ok: bool| Event::Probe {
            generation: 0,
            service: 0,
            backend: 2,
            result: if ok {
                Ok(())
            } else {
                Err("connection refused".into())
            },
        };
        assert_eq!(b.apply(probe(false)), None);
        let change = b.apply(probe(false)).expect("down after fall = 2");
        assert_eq!(
            change.weights,
            vec![("198.18.71.3".parse().unwrap(), 200, 0)]
        );
        assert_eq!(b.services[0].table.shares(3)[2], 0);
        assert_eq!(b.apply(probe(true)), None);
        assert!(b.apply(probe(true)).is_some());
        assert!(b.services[0].table.shares(3)[2] > 0);
    }

    #[test]
    fn small_load_jitter_does_not_move_slots() {
        let mut b = Balancer::new(config(), 251);
        let load = |l| Event::Load {
            generation: 0,
            service: 0,
            backend: 0,
            load: Some(l),
        };
        assert!(b.apply(load(0.05)).is_none());
        assert!(b.apply(load(0.5)).is_some());
        assert_eq!(b.services[0].backends[0].effective, 250);
    }

    #[test]
    fn updates_keep_the_state_of_what_stays_and_move_only_what_changes() {
        let mut b = Balancer::new(config(), 251);
        // backend 2 goes down first: that state must survive the update
        for _ in 0..2 {
            b.apply(Event::Probe {
                generation: 0,
                service: 0,
                backend: 2,
                result: Err("connection refused".into()),
            });
        }
        assert_eq!(
            b.services[0].backends[2].health_reason.as_deref(),
            Some("connection refused")
        );
        let before = b.services[0].table.clone();
        let mut next = b.config.clone();
        next.services[0].backends.remove(0); // 198.18.71.1 goes
        next.services[0].backends.push(crate::config::Backend {
            addr: "198.18.71.4".parse().unwrap(),
            weight: 5,
            drained: false,
            line: 0,
        });
        let update = b.update(next);
        assert_eq!(b.generation, 1, "the layout changed");
        assert_eq!(update.removed_backends.len(), 1);
        assert_eq!(update.added_backends.len(), 1);
        assert_eq!(update.changes.len(), 1);
        let st = &b.services[0];
        assert_eq!(
            st.backends
                .iter()
                .map(|x| x.addr.to_string())
                .collect::<Vec<_>>(),
            ["198.18.71.2", "198.18.71.3", "198.18.71.4"]
        );
        assert!(!st.backends[1].health.up, "the down backend stays down");
        assert_eq!(st.backends[2].effective, 500);
        // the table is the one any balancer builds from these weights
        assert_eq!(
            st.table.slots(),
            Table::build(b.config.table, &st.entries(), 251).slots()
        );
        assert_ne!(before.slots(), st.table.slots());
        // events of the old layout are ignored
        assert_eq!(
            b.apply(Event::Probe {
                generation: 0,
                service: 0,
                backend: 1,
                result: Ok(()),
            }),
            None
        );
        // drained: weight 0, the configured weight kept
        let mut next = b.config.clone();
        next.services[0].backends[0].drained = true;
        let update = b.update(next);
        assert!(!update.topology_changed());
        assert_eq!(b.services[0].backends[0].effective, 0);
        assert_eq!(b.services[0].backends[0].configured, 3);
    }

    #[test]
    fn the_configuration_written_back_reads_as_itself() {
        let mut c = config();
        c.services[0].backends[1].drained = true;
        c.health.path = "/health \"x\"".into();
        let text = c.to_toml();
        let mut again = Config::parse("saved", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        // lines differ; everything else is the same
        for s in again.services.iter_mut().chain(c.services.iter_mut()) {
            for b in &mut s.backends {
                b.line = 0;
            }
        }
        assert_eq!(again, c);
    }

    #[test]
    fn digests_follow_the_table_not_the_order_or_the_state_that_made_it() {
        let a = Balancer::new(config(), 251);
        let mut reordered = config();
        reordered.services[0].backends.reverse();
        let b = Balancer::new(reordered, 251);
        assert_eq!(a.services[0].digest(), b.services[0].digest());
        assert_eq!(a.digest(), b.digest());
        let mut c = Balancer::new(config(), 251);
        for _ in 0..2 {
            c.apply(Event::Probe {
                generation: 0,
                service: 0,
                backend: 0,
                result: Err("timed out".into()),
            });
        }
        assert_ne!(a.digest(), c.digest(), "a backend down changes the table");
        assert!(c.health().is_ok(), "two backends still carry it");
        for backend in 1..3 {
            for _ in 0..2 {
                c.apply(Event::Probe {
                    generation: 0,
                    service: 0,
                    backend,
                    result: Err("timed out".into()),
                });
            }
        }
        assert_eq!(
            c.health(),
            Err(vec![
                "tcp/198.18.70.100:80: no backend up with weight".to_string()
            ])
        );
    }
}
