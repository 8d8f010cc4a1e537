//! `lb`: the load balancer's logic, free of packets and BPF.
//!
//! - [`config`]: `lb.toml` (services, backends, weights, health checks, load
//!   policy), checked whole before anything runs;
//! - [`table`]: the lookup table new connections hash into (weighted Maglev,
//!   or weighted rendezvous for strictly minimal disruption), and how many
//!   slots a change moves;
//! - [`balancer`]: health (rise/fall) and load turned into effective weights,
//!   and tables rebuilt when they change;
//! - [`monitor`]: the threads that probe backends.
//!
//! The data plane writes the tables into the kernel's maps; nothing here
//! knows about XDP or AF_XDP.

#![forbid(unsafe_code)]

pub mod balancer;
pub mod config;
pub mod monitor;
pub mod table;

pub use balancer::{Balancer, Change, Event};
pub use config::{Config, ConfigError, Mode};
pub use table::{Algorithm, Table};
