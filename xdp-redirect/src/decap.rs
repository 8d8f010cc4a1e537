//! The decapsulator for load-balancer backends in ipip mode
//! (`src/bpf/dp_decap.c`): strips the balancer's outer IPv4/IPv6 header so
//! the stack sees the client's packet to the VIP. Attached with
//! `dataplane decap --iface IF` on each backend.

use aya::{Ebpf, programs::xdp::XdpLinkId};

use crate::{AttachMode, Error, iface};

/// The compiled decapsulator, embedded at build time.
pub static DECAP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dp_decap.o"));
const PROGRAM: &str = "xdp_decap";
const COUNTERS: &str = "decap_counters";

/// The loaded and attached decapsulator; dropping it detaches it.
#[derive(Debug)]
pub struct Decap {
    ebpf: Ebpf,
    _link: XdpLinkId,
}

/// Packets decapsulated and passed untouched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecapCounters {
    pub decapsulated: u64,
    pub passed: u64,
}

impl Decap {
    /// Loads the program and attaches it to `ifname` (refusing to replace
    /// another program unless `force`).
    pub fn attach(ifname: &str, mode: AttachMode, force: bool) -> Result<Decap, Error> {
        let ifindex = iface::index(ifname)?;
        if let Some(existing) = crate::attached::query(ifname, ifindex)? {
            if !force {
                return Err(Error::AlreadyAttached {
                    iface: ifname.to_string(),
                    existing,
                });
            }
            crate::attached::detach(ifname, ifindex, &existing)?;
        }
        let mut ebpf = Ebpf::load(DECAP_OBJECT).map_err(Box::new)?;
        let program = crate::program_named_mut(&mut ebpf, PROGRAM)?;
        program.load().map_err(|source| Error::Program {
            what: format!("load {PROGRAM}"),
            source: Box::new(source),
        })?;
        let driver = iface::driver(ifname).unwrap_or_default();
        let link = crate::attach_in(program, ifname, &driver, mode)?;
        Ok(Decap { ebpf, _link: link })
    }

    pub fn counters(&self) -> Result<DecapCounters, Error> {
        let map = self.ebpf.map(COUNTERS).ok_or(Error::Missing {
            kind: "map",
            name: COUNTERS,
        })?;
        let [decapsulated, passed] = crate::percpu_sums::<2>(map, COUNTERS)?;
        Ok(DecapCounters {
            decapsulated,
            passed,
        })
    }
}
