//! `dataplane`: the binary that turns a multiqueue NIC into a hybrid
//! kernel/user-space network function.
//!
//! Owns the CLI, the preflight checks, the UMEM and AF_XDP sockets (one per
//! RX queue, [`xsk`]), the pinned workers ([`worker`]) with their per-flow
//! tables and the dynamic-sniffing decision ([`sniff`]), and the stats
//! ([`stats`]). Parsing comes from `dpi`; the XDP program and its maps from
//! `xdp-redirect`.
//!
//! Contracts:
//! - Nothing is left attached on any exit path: the program is attached last,
//!   after every socket is ready, and detached by RAII on error or exit.
//! - Workers take no lock on the per-packet path; they hand stats to the main
//!   thread over crossbeam channels.
//! - A frame is lent to the decision code as `&[u8]` inside the UMEM, never
//!   copied, and goes back to the fill ring after the call.

pub mod cli;
pub mod config;
pub mod control;
pub mod eve;
pub mod flowlog;
pub mod handoff;
pub mod inspect;
pub mod ipfix;
pub mod key;
pub mod lbframe;
mod lbinspect;
mod lbrun;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod preflight;
mod run;
pub mod stats;
pub mod worker;
pub mod xsk;

pub use run::run;
