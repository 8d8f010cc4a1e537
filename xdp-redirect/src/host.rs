//! Host mode's copy path: the data plane watches (and can block) the traffic
//! of the machine it runs on without taking a single packet from its stack.
//!
//! The XDP program passes every packet to the stack and, for a flow that
//! has no verdict yet, puts a copy (`struct dp_host_record` and the first
//! `DP_HOST_SNAP` bytes) into the BPF ring buffer of the worker that owns
//! the flow; `dp_tc_egress` does the same for what the host sends. The ring
//! is picked by a hash of the direction-independent flow key, so both
//! directions of a flow meet in one worker. A "drop" verdict is enforced in
//! XDP (received) and TC (sent); a decided flow is no longer copied.
//!
//! The rings are made here, one per worker, and put into the program's
//! `host_rings` array of maps; a worker reads its ring in place
//! ([`HostRing::take`]) and releases each record when done with it.

use std::os::fd::{AsFd as _, AsRawFd, FromRawFd as _, OwnedFd, RawFd};

use aya::maps::{Map, MapData, RingBuf, ring_buf::RingBufItem};

use crate::{Error, abi, map_error};

/// Name of the program's array of worker rings.
pub const MAP_HOST_RINGS: &str = abi::c_name(abi::DP_MAP_HOST_RINGS);
/// Most bytes of a packet a record carries.
pub const SNAP: usize = abi::dp_limits::DP_HOST_SNAP as usize;
/// Bytes of each worker's ring.
pub const RING_BYTES: u32 = abi::dp_limits::DP_HOST_RING_BYTES;
const HEADER: usize = std::mem::size_of::<abi::dp_host_record>();

/// Which way a copied packet went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the host (seen by the XDP program).
    Received,
    /// Sent by the host (seen by the TC egress program).
    Sent,
}

/// One worker's ring buffer.
pub struct HostRing {
    ring: RingBuf<MapData>,
    index: u32,
}

impl std::fmt::Debug for HostRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRing")
            .field("index", &self.index)
            .finish()
    }
}

/// A copied packet, lent from the ring until dropped.
pub struct HostPacket<'a> {
    item: RingBufItem<'a>,
    header: abi::dp_host_record,
}

impl HostPacket<'_> {
    /// The copied bytes, from the Ethernet header on (`caplen` of them).
    pub fn data(&self) -> &[u8] {
        let end = HEADER + usize::from(self.header.caplen);
        self.item.get(HEADER..end).unwrap_or(&[])
    }

    /// The packet's length (more than `data().len()` when it was cut).
    pub fn len(&self) -> u32 {
        self.header.len
    }

    /// Never true for a packet the programs copy (a frame has a header).
    pub fn is_empty(&self) -> bool {
        self.header.len == 0
    }

    /// When the program saw it (CLOCK_MONOTONIC ns).
    pub fn rx_ns(&self) -> u64 {
        self.header.rx_ns
    }

    pub fn direction(&self) -> Direction {
        if self.header.direction == 0 {
            Direction::Received
        } else {
            Direction::Sent
        }
    }
}

impl HostRing {
    /// The worker this ring belongs to.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The next record, if any. The record's space goes back to the
    /// program when the returned value is dropped. (Not an `Iterator`: each
    /// record borrows the ring.)
    pub fn take(&mut self) -> Option<HostPacket<'_>> {
        let item = self.ring.next()?;
        let header = if item.len() >= HEADER {
            // SAFETY: `dp_host_record` is plain integers (no invalid bit
            // patterns) and the item holds at least its size; unaligned read.
            unsafe { item.as_ptr().cast::<abi::dp_host_record>().read_unaligned() }
        } else {
            // not one of ours (cannot happen with our programs): no bytes
            abi::dp_host_record::default()
        };
        Some(HostPacket { item, header })
    }

    /// The ring's fd: readable (poll) when records are waiting.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// Makes `count` rings and puts them into the program's `host_rings`.
pub(crate) fn make_rings(ebpf: &aya::Ebpf, count: u32) -> Result<Vec<HostRing>, Error> {
    let outer = ebpf.map(MAP_HOST_RINGS).ok_or(Error::Missing {
        kind: "map",
        name: MAP_HOST_RINGS,
    })?;
    let outer_fd = match outer {
        Map::ArrayOfMaps(data) => data.fd().as_fd().as_raw_fd(),
        _ => {
            return Err(Error::Missing {
                kind: "array of maps",
                name: MAP_HOST_RINGS,
            });
        }
    };
    let syscall = |what: String, rc: i32| Error::Syscall {
        map: MAP_HOST_RINGS,
        what,
        source: std::io::Error::from_raw_os_error(-rc),
    };
    let mut rings = Vec::with_capacity(count as usize);
    for index in 0..count {
        let name = std::ffi::CString::new(format!("dp_host{index}")).expect("no NUL");
        // SAFETY: plain syscall wrapper; a null opts pointer is allowed.
        let fd = unsafe {
            libbpf_sys::bpf_map_create(
                libbpf_sys::BPF_MAP_TYPE_RINGBUF,
                name.as_ptr(),
                0,
                0,
                RING_BYTES,
                std::ptr::null(),
            )
        };
        if fd < 0 {
            return Err(syscall(
                format!("create the ring buffer of worker {index}"),
                fd,
            ));
        }
        // SAFETY: `fd` is a fresh map fd nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let value: u32 = fd as u32;
        // SAFETY: key and value point at u32s, the map's key and value sizes.
        let rc = unsafe {
            libbpf_sys::bpf_map_update_elem(
                outer_fd,
                (&index as *const u32).cast(),
                (&value as *const u32).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(syscall(
                format!("put the ring of worker {index} in place"),
                rc,
            ));
        }
        let data = MapData::from_fd(owned)
            .map_err(|source| map_error(MAP_HOST_RINGS, "open a worker ring", source))?;
        let ring = RingBuf::try_from(Map::RingBuf(data))
            .map_err(|source| map_error(MAP_HOST_RINGS, "map a worker ring", source))?;
        rings.push(HostRing { ring, index });
    }
    Ok(rings)
}
