//! The balancer's state: per service, each backend's configured weight,
//! health (rise/fall) and measured load, the effective weights computed from
//! them, and the table built from those. Pure: events go in, changes come out;
//! the caller writes the tables where the packets are.

use std::net::IpAddr;

use crate::{
    config::{Config, Service},
    table::{self, Entry, Table},
};

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
    pub health: Health,
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
}

/// All services' state.
#[derive(Debug, Clone)]
pub struct Balancer {
    pub config: Config,
    pub services: Vec<ServiceState>,
    size: u32,
}

/// What a probe or the operator reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Probe {
        service: usize,
        backend: usize,
        ok: bool,
    },
    Load {
        service: usize,
        backend: usize,
        load: Option<f64>,
    },
    SetWeight {
        service: usize,
        backend: usize,
        weight: u32,
    },
}

impl Balancer {
    /// Builds every service's table from the configured weights (all backends up).
    pub fn new(config: Config, size: u32) -> Balancer {
        let services = config
            .services
            .iter()
            .map(|s| {
                let backends: Vec<BackendState> = s
                    .backends
                    .iter()
                    .map(|b| BackendState {
                        addr: b.addr,
                        configured: b.weight,
                        health: Health::default(),
                        load: None,
                        effective: effective_weight(b.weight, true, None),
                    })
                    .collect();
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
        }
    }

    /// Applies an event; returns the change when the table of its service had
    /// to be rebuilt. Unknown indexes are ignored (an event from a monitor of
    /// a configuration that has since been replaced).
    pub fn apply(&mut self, event: Event) -> Option<Change> {
        let (rise, fall) = (self.config.health.rise, self.config.health.fall);
        let (service, backend, cause) = match event {
            Event::Probe {
                service,
                backend,
                ok,
            } => {
                let b = self.services.get_mut(service)?.backends.get_mut(backend)?;
                if !b.health.record(ok, rise, fall) {
                    return None;
                }
                (service, backend, "health")
            }
            Event::Load {
                service,
                backend,
                load,
            } => {
                let b = self.services.get_mut(service)?.backends.get_mut(backend)?;
                b.load = load;
                (service, backend, "load")
            }
            Event::SetWeight {
                service,
                backend,
                weight,
            } => {
                let b = self.services.get_mut(service)?.backends.get_mut(backend)?;
                b.configured = weight;
                (service, backend, "operator")
            }
        };
        let _ = backend;
        self.rebuild(service, cause)
    }

    /// Recomputes the effective weights of one service; rebuilds its table if
    /// any changed.
    fn rebuild(&mut self, service: usize, cause: &'static str) -> Option<Change> {
        let algorithm = self.config.table;
        let size = self.size;
        let st = &mut self.services[service];
        let old_entries = st.entries();
        let mut weights = Vec::new();
        for b in &mut st.backends {
            let w = effective_weight(b.configured, b.health.up, b.load);
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
        if weights.is_empty() {
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
        })
    }
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
        let probe = |ok| Event::Probe {
            service: 0,
            backend: 2,
            ok,
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
            service: 0,
            backend: 0,
            load: Some(l),
        };
        assert!(b.apply(load(0.05)).is_none());
        assert!(b.apply(load(0.5)).is_some());
        assert_eq!(b.services[0].backends[0].effective, 250);
    }
}
