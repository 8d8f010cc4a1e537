//! Outliving the process: the bpffs directory for pinned maps and links,
//! the counters read back from a pin (when no data plane runs), and the
//! worker heartbeat array mapped into user space.
//!
//! Layout of a pin directory: `verdicts4`, `verdicts` and `counters` (maps, reused by the
//! next start, so verdicts and counters survive a restart or an upgrade) and
//! `link-IFACE` (the bpf_link holding the program on IFACE: the next start
//! replaces the program behind it atomically; removing the file detaches).

use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{HashMap, Map, MapData};

use crate::{
    Counters, Error, FlowKey, FlowKey4, MAP_COUNTERS, MAP_VERDICTS, MAP_VERDICTS4, map_error,
};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Makes sure `dir` exists and is on a bpffs, mounting one there if not.
pub fn ensure_bpffs(dir: &Path) -> Result<(), Error> {
    let io = |what: String, source: std::io::Error| Error::Pin {
        dir: dir.to_path_buf(),
        what,
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create the pin directory".into(), e))?;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        io(
            "pin path".into(),
            std::io::Error::other("contains a NUL byte"),
        )
    })?;
    // SAFETY: a zeroed statfs is valid for writes; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io("statfs".into(), std::io::Error::last_os_error()));
    }
    if st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    // A bpffs mounted here would live in this process's mount namespace.
    // `ip netns exec` gives every command a private one, which goes away
    // with the process: the pins, and the program they hold, would vanish
    // on a crash while the log says they stay.
    if !in_init_mount_namespace() {
        return Err(io(
            "not a bpffs".into(),
            std::io::Error::other(
                "this process runs in a private mount namespace (as under `ip netns exec`), where \
                 a bpffs mounted now would vanish with the process and take the pinned program \
                 with it; mount one first where it outlives the process (`mount -t bpf bpf DIR` \
                 in the host's mount namespace, before `ip netns exec`)",
            ),
        ));
    }
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings; no data argument for bpffs.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io(
            "mount a bpffs on the pin directory".into(),
            std::io::Error::last_os_error(),
        ));
    }
    tracing::info!(dir = %dir.display(), "mounted a bpffs for the pins");
    Ok(())
}

/// Whether mounts made by this process outlive it: it shares the mount
/// namespace of PID 1 and of its parent, as far as those can be read (`ip
/// netns exec` runs its command in a fresh, private mount namespace, which
/// goes away with it; PID 1's is often unreadable in a container).
fn in_init_mount_namespace() -> bool {
    let Ok(ours) = std::fs::read_link("/proc/self/ns/mnt") else {
        return true;
    };
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    [
        "/proc/1/ns/mnt".to_string(),
        format!("/proc/{parent}/ns/mnt"),
    ]
    .iter()
    .filter_map(|path| std::fs::read_link(path).ok())
    .all(|theirs| theirs == ours)
}

/// Where the link holding the program on `iface` is pinned.
pub fn link_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("link-{iface}"))
}

/// The counters of a pinned data plane, running or not.
pub fn read_counters(dir: &Path) -> Result<Counters, Error> {
    let data = MapData::from_pin(dir.join(MAP_COUNTERS))
        .map_err(|source| map_error(MAP_COUNTERS, "open the pinned map", source))?;
    let sums = crate::percpu_sums(&Map::PerCpuArray(data), MAP_COUNTERS)?;
    Ok(Counters::from_array(&sums))
}

/// Entries in the pinned verdict maps (IPv4 and IPv6) right now (a walk
/// over their keys).
pub fn verdict_entries(dir: &Path) -> Result<usize, Error> {
    let open = |name: &'static str| {
        MapData::from_pin(dir.join(name))
            .map_err(|source| map_error(name, "open the pinned map", source))
    };
    let maps = crate::VerdictMap::new(open(crate::MAP_VERDICTS4)?, open(crate::MAP_VERDICTS)?)?;
    Ok(maps.entries().filter(Result::is_ok).count())
}

/// A verdict map value as versions before per-direction counters laid it
/// out (32 bytes): one packet and one byte count for both directions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictV1 {
    pub action: u32,
    pub flags: u32,
    pub packets: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
}

// SAFETY: `#[repr(C)]`, integers only, no padding (4 + 4 + 8 + 8 + 8), and
// every bit pattern is a valid value.
unsafe impl aya::Pod for VerdictV1 {}

/// Reads the entries of pinned verdict maps whose values have the older
/// 32-byte layout ([`VerdictV1`]) and removes those pins, so that the next
/// load creates the maps anew; returns the entries, to be written back
/// ([`crate::VerdictMap::restore`]). Maps of the current layout are left
/// alone. `verdicts4` and `verdicts` are the two maps' pin paths.
pub(crate) fn take_v1_verdicts(
    verdicts4: &Path,
    verdicts: &Path,
) -> Result<Vec<(FlowKey, VerdictV1)>, Error> {
    const V1_SIZE: u32 = std::mem::size_of::<VerdictV1>() as u32;
    let old = |path: &Path| {
        MapData::from_pin(path)
            .ok()
            .filter(|m| m.info().is_ok_and(|i| i.value_size() == V1_SIZE))
    };
    let mut entries = Vec::new();
    if let Some(data) = old(verdicts4) {
        let map: HashMap<MapData, FlowKey4, VerdictV1> =
            HashMap::try_from(Map::LruHashMap(data))
                .map_err(|source| map_error(MAP_VERDICTS4, "open the pinned map", source))?;
        entries.extend(
            map.iter()
                .filter_map(Result::ok)
                .map(|(k, v)| (FlowKey::from_v4(&k), v)),
        );
        remove_pin(verdicts4)?;
    }
    if let Some(data) = old(verdicts) {
        let map: HashMap<MapData, FlowKey, VerdictV1> = HashMap::try_from(Map::LruHashMap(data))
            .map_err(|source| map_error(MAP_VERDICTS, "open the pinned map", source))?;
        entries.extend(map.iter().filter_map(Result::ok));
        remove_pin(verdicts)?;
    }
    Ok(entries)
}

fn remove_pin(path: &Path) -> Result<(), Error> {
    std::fs::remove_file(path).map_err(|source| Error::Pin {
        dir: path.to_path_buf(),
        what: "replace a pinned verdict map of an older layout".into(),
        source,
    })
}

/// A `BPF_F_MMAPABLE` array of `slots` elements of 8 bytes (the kernel
/// rounds every element up to 8), mapped shared and read-write into this
/// process; unmapped on drop.
#[derive(Debug)]
pub(crate) struct SharedArray {
    base: *mut u64,
    len: usize,
}

// SAFETY: plain shared memory owned by this value until drop; its users
// decide how it is accessed (atomics for the heartbeat, `&mut self` for the
// balancer's tables).
unsafe impl Send for SharedArray {}
// SAFETY: as above.
unsafe impl Sync for SharedArray {}

impl SharedArray {
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        slots: usize,
        map: &'static str,
        what: &str,
    ) -> Result<SharedArray, Error> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = (slots * 8).div_ceil(page) * page;
        // SAFETY: mapping a BPF_F_MMAPABLE array map fd, shared, read-write,
        // at offset 0 with a page-rounded length, as the kernel documents.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Syscall {
                map,
                what: what.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(SharedArray {
            base: ptr.cast(),
            len,
        })
    }

    /// The first element; the mapping holds at least `slots` of them,
    /// 8-byte aligned (the mapping is page-aligned).
    pub(crate) fn base(&self) -> *mut u64 {
        self.base
    }
}

impl Drop for SharedArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The heartbeat array (one `u64` per queue, then the clock slot
/// `DP_HEARTBEAT_CLOCK`), mapped shared into this process.
#[derive(Debug)]
pub struct Heartbeat {
    array: SharedArray,
    /// Queue slots; the clock slot follows them.
    slots: usize,
}

impl Heartbeat {
    /// Maps the array of `slots` queue slots plus the clock slot.
    pub(crate) fn map(fd: BorrowedFd<'_>, slots: usize) -> Result<Heartbeat, Error> {
        let array = SharedArray::map(
            fd,
            slots + 1,
            crate::MAP_HEARTBEAT,
            "mmap the heartbeat array",
        )?;
        Ok(Heartbeat { array, slots })
    }

    fn slot(&self, index: usize) -> &AtomicU64 {
        // SAFETY: callers check index <= slots: within the mapping, 8-byte
        // aligned; shared with the kernel, so only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.array.base().add(index)) }
    }

    /// When the worker of `queue` last beat (CLOCK_MONOTONIC_COARSE ns; 0 = never).
    pub fn last(&self, queue: u32) -> u64 {
        let queue = queue as usize;
        if queue < self.slots {
            self.slot(queue).load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// The program's clock: the latest heartbeat of any worker (0 = none yet).
    pub fn clock(&self) -> u64 {
        self.slot(self.slots).load(Ordering::Relaxed)
    }

    /// Records that the worker of `queue` is alive now, and moves the
    /// program's clock forward to now. The coarse clock ticks every few
    /// milliseconds, so the shared clock slot (read by the program on every
    /// decided packet) is written at most once a tick per worker, not once
    /// a batch.
    #[inline]
    pub fn beat(&self, queue: u32) {
        let queue = queue as usize;
        if queue < self.slots {
            let now = crate::clock::coarse_monotonic_ns();
            self.slot(queue).store(now, Ordering::Relaxed);
            self.advance(now);
        }
    }

    /// Moves the program's clock forward to now without a heartbeat: for a
    /// process that runs the program without workers (the load balancer).
    pub fn tick(&self) {
        self.advance(crate::clock::coarse_monotonic_ns());
    }

    #[inline]
    fn advance(&self, now: u64) {
        let clock = self.slot(self.slots);
        if clock.load(Ordering::Relaxed) < now {
            clock.fetch_max(now, Ordering::Relaxed);
        }
    }
}
