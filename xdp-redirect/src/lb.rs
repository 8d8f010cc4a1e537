//! Typed handles on the load balancer's maps (see "Load balancer" in
//! `dp_abi.h`): services, backends, the lookup tables (written through a
//! shared mapping, then made live with one map update), the connection table
//! and the per-service/per-backend counters.

use std::{net::IpAddr, os::fd::AsFd as _};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};

use crate::{Error, abi, map_error, owned_map as owned};

pub use abi::{
    dp_lb_backend as Backend, dp_lb_conn as Conn, dp_lb_conn_key as ConnKey,
    dp_lb_service as Service, dp_lb_service_key as ServiceKey, dp_lb_stats as Stats,
};

pub const MAP_SERVICES: &str = abi::c_name(abi::DP_MAP_LB_SERVICES);
pub const MAP_RINGS: &str = abi::c_name(abi::DP_MAP_LB_RINGS);
pub const MAP_BACKENDS: &str = abi::c_name(abi::DP_MAP_LB_BACKENDS);
pub const MAP_CONNS: &str = abi::c_name(abi::DP_MAP_LB_CONNS);
pub const MAP_NAT: &str = abi::c_name(abi::DP_MAP_LB_NAT);
pub const MAP_STATS: &str = abi::c_name(abi::DP_MAP_LB_STATS);

pub const RING_SIZE: u32 = abi::dp_lb_limits::DP_LB_RING_SIZE;
pub const MAX_SERVICES: u32 = abi::dp_lb_limits::DP_LB_MAX_SERVICES;
pub const MAX_BACKENDS: u32 = abi::dp_lb_limits::DP_LB_MAX_BACKENDS;
pub const NO_BACKEND: u32 = abi::dp_lb_limits::DP_LB_NO_BACKEND;

/// Load-time options of the balancer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbOptions {
    /// Some service is in nat mode: replies are looked up and rewritten.
    pub nat: bool,
    /// Next-hop MAC for everything the balancer sends; `None`: bpf_fib_lookup.
    pub gateway: Option<[u8; 6]>,
}

/// How a service treats its connections besides forwarding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceFlags {
    /// A connection whose backend is down is balanced again (else it stays).
    pub reset_down: bool,
    /// Inspect, then balance: a connection's data packets go to user space
    /// (ready for the backend) until its flow has a verdict.
    pub inspect: bool,
}

/// How a service forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ipip,
    Nat,
}

/// 16 address bytes as the ABI stores them (IPv4 in the first 4) and the family.
pub fn addr_bytes(addr: IpAddr) -> ([u8; 16], u8) {
    let mut bytes = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            bytes[..4].copy_from_slice(&a.octets());
            (bytes, abi::dp_family::DP_FAMILY_IPV4 as u8)
        }
        IpAddr::V6(a) => (a.octets(), abi::dp_family::DP_FAMILY_IPV6 as u8),
    }
}

/// The service key of (VIP, port, IP protocol).
pub fn service_key(vip: IpAddr, port: u16, proto: u8) -> ServiceKey {
    let (addr, family) = addr_bytes(vip);
    ServiceKey {
        addr,
        port: port.to_be(),
        proto,
        family,
    }
}

/// The connection key of a client's packets to a VIP.
pub fn conn_key(client: (IpAddr, u16), vip: (IpAddr, u16), proto: u8) -> ConnKey {
    let (src, family) = addr_bytes(client.0);
    ConnKey {
        src,
        dst: addr_bytes(vip.0).0,
        sport: client.1.to_be(),
        dport: vip.1.to_be(),
        proto,
        family,
        pad: 0,
    }
}

/// Counter-wise sum.
pub fn sum<'a>(stats: impl Iterator<Item = &'a Stats>) -> Stats {
    stats.fold(Stats::default(), |a, s| Stats {
        packets: a.packets + s.packets,
        bytes: a.bytes + s.bytes,
        new_conns: a.new_conns + s.new_conns,
    })
}

/// Handles on the balancer's maps.
pub struct LbMaps {
    services: HashMap<MapData, ServiceKey, Service>,
    backends: Array<MapData, Backend>,
    conns: HashMap<MapData, ConnKey, Conn>,
    stats: PerCpuArray<MapData, Stats>,
    /// The lookup tables, mapped shared: writes need no syscall. A `u32`
    /// slot `i` is the low half (little-endian) of the 8-byte element `i`.
    rings: crate::pin::SharedArray,
}

impl std::fmt::Debug for LbMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbMaps").finish_non_exhaustive()
    }
}

impl LbMaps {
    pub(crate) fn open(ebpf: &aya::Ebpf) -> Result<LbMaps, Error> {
        let open = |name| move |source| map_error(name, "open", source);
        let services = HashMap::try_from(Map::HashMap(owned(ebpf, MAP_SERVICES)?))
            .map_err(open(MAP_SERVICES))?;
        let backends =
            Array::try_from(Map::Array(owned(ebpf, MAP_BACKENDS)?)).map_err(open(MAP_BACKENDS))?;
        let conns =
            HashMap::try_from(Map::LruHashMap(owned(ebpf, MAP_CONNS)?)).map_err(open(MAP_CONNS))?;
        let stats = PerCpuArray::try_from(Map::PerCpuArray(owned(ebpf, MAP_STATS)?))
            .map_err(open(MAP_STATS))?;
        let rings_data = owned(ebpf, MAP_RINGS)?;
        let rings = crate::pin::SharedArray::map(
            rings_data.fd().as_fd(),
            (MAX_SERVICES * 2 * RING_SIZE) as usize,
            MAP_RINGS,
            "mmap the lookup tables",
        )?;
        Ok(LbMaps {
            services,
            backends,
            conns,
            stats,
            rings,
        })
    }

    /// Writes backend `index`: where it is, the outer source address to use
    /// toward it (ipip), and whether it is down.
    pub fn set_backend(
        &mut self,
        index: u32,
        addr: IpAddr,
        src: IpAddr,
        down: bool,
    ) -> Result<(), Error> {
        let (addr, family) = addr_bytes(addr);
        let value = Backend {
            addr,
            src: addr_bytes(src).0,
            family,
            flags: if down {
                abi::dp_lb_backend_flags::DP_LB_BACKEND_F_DOWN as u8
            } else {
                0
            },
            ..Backend::default()
        };
        self.backends
            .set(index, value, 0)
            .map_err(|source| map_error(MAP_BACKENDS, &format!("write backend {index}"), source))
    }

    /// Makes `slots` (backend indexes, [`NO_BACKEND`] for none) the live table
    /// of service `id`: written into the service's unused table, then the
    /// service entry is switched to it with one update, so a lookup sees the
    /// old table or the new one, never a mix. Returns the table now live (0/1).
    pub fn install(
        &mut self,
        key: &ServiceKey,
        id: u32,
        mode: Mode,
        flags: ServiceFlags,
        slots: &[u32],
    ) -> Result<u32, Error> {
        assert!(id < MAX_SERVICES, "service id {id} out of range");
        assert_eq!(slots.len(), RING_SIZE as usize, "table of the wrong size");
        let live = match self.services.get(key, 0) {
            Ok(s) if s.id == id => Some(s.table),
            _ => None,
        };
        let next = live.map_or(0, |t| 1 - (t & 1));
        let start = ((id * 2 + next) * RING_SIZE) as usize;
        // SAFETY: start + RING_SIZE <= MAX_SERVICES * 2 * RING_SIZE, inside
        // the mapping; the program only reads the table not yet live.
        let table =
            unsafe { std::slice::from_raw_parts_mut(self.rings.base().add(start), slots.len()) };
        for (dst, &src) in table.iter_mut().zip(slots) {
            *dst = u64::from(src).to_le();
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let value = Service {
            id,
            table: next,
            mode: match mode {
                Mode::Ipip => abi::dp_lb_mode::DP_LB_MODE_IPIP,
                Mode::Nat => abi::dp_lb_mode::DP_LB_MODE_NAT,
            },
            flags: (if flags.reset_down {
                abi::dp_lb_service_flags::DP_LB_SERVICE_F_RESET_DOWN
            } else {
                0
            }) | (if flags.inspect {
                abi::dp_lb_service_flags::DP_LB_SERVICE_F_INSPECT
            } else {
                0
            }),
        };
        self.services
            .insert(key, value, 0)
            .map_err(|source| map_error(MAP_SERVICES, "switch the live table", source))?;
        Ok(next)
    }

    /// Counters of service `id` or backend `index`, summed over CPUs.
    fn stats_at(&self, slot: u32) -> Result<Stats, Error> {
        let values = self
            .stats
            .get(&slot, 0)
            .map_err(|source| map_error(MAP_STATS, &format!("read slot {slot}"), source))?;
        Ok(sum(values.iter()))
    }

    /// Counters of service `id` whose backends are `backends` (kernel
    /// indexes): what was forwarded to them plus the service's nat replies.
    pub fn service_stats(
        &self,
        id: u32,
        backends: impl IntoIterator<Item = u32>,
    ) -> Result<Stats, Error> {
        let mut all = vec![self.stats_at(id)?];
        for index in backends {
            all.push(self.backend_stats(index)?);
        }
        Ok(sum(all.iter()))
    }

    /// The service's own slot: its nat replies (see `struct dp_lb_stats`).
    pub fn reply_stats(&self, id: u32) -> Result<Stats, Error> {
        self.stats_at(id)
    }

    pub fn backend_stats(&self, index: u32) -> Result<Stats, Error> {
        self.stats_at(MAX_SERVICES + index)
    }

    /// The backend a connection is pinned to, if the table knows it.
    pub fn conn(&self, key: &ConnKey) -> Result<Option<Conn>, Error> {
        match self.conns.get(key, 0) {
            Ok(c) => Ok(Some(c)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_error(MAP_CONNS, "look up a connection", source)),
        }
    }

    /// Connections in the table right now (a walk over its keys).
    pub fn conn_count(&self) -> usize {
        self.conns.keys().filter(Result::is_ok).count()
    }

    /// The backend indexes that connections seen at or after `since_ns`
    /// (the program's clock) are pinned to: a walk over the table.
    pub fn backends_in_use(&self, since_ns: u64) -> std::collections::HashSet<u32> {
        self.conns
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, c)| c.last_seen_ns >= since_ns)
            .map(|(_, c)| c.backend)
            .collect()
    }

    /// Removes a service: its VIP's packets go to the stack from now on.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        match self.services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_error(MAP_SERVICES, "remove a service", source)),
        }
    }

    /// Empties backend slot `index`: connections pinned to it are balanced
    /// again at their next packet.
    pub fn clear_backend(&mut self, index: u32) -> Result<(), Error> {
        self.backends
            .set(index, Backend::default(), 0)
            .map_err(|source| map_error(MAP_BACKENDS, &format!("clear backend {index}"), source))
    }

    /// Zeroes the counters of service `id` or, `backend`, backend `index`
    /// (a slot given to a new service or backend starts from zero).
    pub fn reset_stats(&mut self, slot: u32, backend: bool) -> Result<(), Error> {
        let slot = if backend { MAX_SERVICES + slot } else { slot };
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| {
            map_error(
                MAP_STATS,
                "count the CPUs",
                MapError::SyscallError(aya::sys::SyscallError {
                    call: "nr_cpus",
                    io_error: source,
                }),
            )
        })?;
        let zero =
            aya::maps::PerCpuValues::try_from(vec![Stats::default(); cpus]).map_err(|source| {
                map_error(
                    MAP_STATS,
                    "zero a slot",
                    MapError::SyscallError(aya::sys::SyscallError {
                        call: "zero",
                        io_error: source,
                    }),
                )
            })?;
        self.stats
            .set(slot, zero, 0)
            .map_err(|source| map_error(MAP_STATS, &format!("zero slot {slot}"), source))
    }
}
