//! `dpi`: pure packet inspection over `&[u8]`.
//!
//! Owns zero-copy wire views ([`wire`]), direction-independent flow keys and
//! the decoding of a frame into the facts the data plane needs about it
//! ([`flow`]). Later: per-flow state, protocol classifiers, signature rules and
//! the verdict policy (issue 3).
//!
//! Contracts:
//! - No I/O, no BPF, no allocation on the per-packet path.
//! - Parsers take untrusted bytes and never panic: every view checks its
//!   length once at construction (`new_checked`), after which no accessor
//!   can go out of bounds.
//! - A frame is only borrowed for the duration of a call; nothing returned
//!   holds on to it, so a UMEM frame can go back to the fill ring right after.
#![forbid(unsafe_code)]

pub mod classify;
pub mod defrag;
pub mod engine;
pub mod flow;
pub mod http;
pub mod link;
pub mod policy;
pub mod reject;
pub mod rules;
pub mod stream;
pub mod table;
pub mod tunnel;
pub mod wire;

pub use classify::{Classification, Confidence, FlowClassifier, Protocol};
pub use flow::{DecodeError, Decoded, FlowKey, decode_ethernet, decode_ethernet_cut};
pub use link::LinkType;
pub use wire::{Error as WireError, Layer};
