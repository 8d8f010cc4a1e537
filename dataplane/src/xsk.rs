//! UMEM and AF_XDP sockets, one pair per RX queue, over xsk-rs.
//!
//! All queues share one UMEM (`XDP_SHARED_UMEM`, each (interface, queue)
//! with its own fill and completion rings), each queue owning a range of its
//! frames, so a frame can be handed to another queue's worker by its
//! descriptor, without a copy. In bridge mode each queue has a second
//! socket, on the same queue of the peer interface, so a frame received on
//! one port is sent out of the other by passing its descriptor. Sockets are bound with
//! `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD` so our program, not libxdp's, owns the
//! XSKMAP. Zero copy is asked for per `--zero-copy`; on refusal the UMEM is
//! rebuilt and bound in copy mode. The mode actually obtained is read back
//! from the kernel (`XDP_OPTIONS`), not assumed.
//!
//! This module and [`crate::worker`]'s frame access are the only places with
//! `unsafe`, each block saying why it is sound.

use std::{
    io,
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
};

use thiserror::Error;
use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
};

use crate::cli::ZeroCopyArg;

/// How the socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    ZeroCopy,
    Copy,
}

impl BindMode {
    /// The name tools read (`"zerocopy"` / `"copy"`).
    pub fn as_str(self) -> &'static str {
        match self {
            BindMode::ZeroCopy => "zerocopy",
            BindMode::Copy => "copy",
        }
    }
}

/// Socket and UMEM sizing.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    pub ring_size: u32,
    pub frame_size: u32,
    pub zero_copy: ZeroCopyArg,
    /// The XDP program runs in generic mode: zero copy is impossible.
    pub generic_xdp: bool,
    pub busy_poll: bool,
    pub batch: u32,
}

impl XskConfig {
    /// Frames per UMEM: per port, enough to fill the fill ring and have as
    /// many again in flight on the RX and TX rings.
    pub fn frame_count(&self, ports: u32) -> u32 {
        self.ring_size * 2 * ports
    }
}

/// Errors opening a queue's socket. Each names the interface and queue.
#[derive(Debug, Error)]
pub enum XskError {
    #[error(
        "cannot allocate the UMEM for {iface}'s {queues} queue(s) ({frames} frames of {frame_size} B): {reason}; \
         lower --ring-size, or raise the memlock limit (ulimit -l)"
    )]
    Umem {
        iface: String,
        queues: u32,
        frames: u32,
        frame_size: u32,
        reason: String,
    },
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
    #[error("cannot bind an AF_XDP socket to {iface} queue {queue} in {mode} mode: {reason}")]
    Bind {
        iface: String,
        queue: u32,
        mode: &'static str,
        reason: String,
    },
    #[error(
        "--zero-copy require: {iface} (driver `{driver}`) does not support AF_XDP zero copy on queue {queue} \
         ({reason}); use --zero-copy auto to fall back to copy mode"
    )]
    ZeroCopyUnavailable {
        iface: String,
        driver: String,
        queue: u32,
        reason: String,
    },
    #[error("{what} on the AF_XDP socket of {iface} queue {queue}: {source}")]
    Sockopt {
        iface: String,
        queue: u32,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The rings of one port (interface) on a queue.
struct PortRings {
    fill: FillQueue,
    comp: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    /// Frames on the fill ring or being filled by the kernel.
    in_fill: u32,
    /// Frames to send out of this port at the next flush.
    to_tx: Vec<FrameDesc>,
}

impl PortRings {
    fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }
}

/// Everything one worker needs for its queue: the socket of each port (the
/// `--iface` one, and in bridge mode the `--peer` one on the same queue),
/// their four rings, and the bookkeeping of the frames the worker owns.
/// Every queue's sockets share one UMEM (see [`open_all`]); this queue owns
/// the frames of its range of it, and a frame of another queue's range that
/// is released here is kept apart ([`QueueSocket::take_foreign`]) to go back
/// to its owner.
///
/// A frame is in exactly one place: on a fill ring (or being filled), on an
/// RX ring, lent out between [`QueueSocket::receive`] and
/// [`QueueSocket::forward`]/[`QueueSocket::release`], on a TX list or ring,
/// or on the free list.
pub struct QueueSocket {
    pub queue: u32,
    pub bind_mode: BindMode,
    umem: Umem,
    ports: Vec<PortRings>,
    /// Frames of this queue owned by the worker, on no ring.
    free: Vec<FrameDesc>,
    /// Frames of other queues released here, to hand back to their owners.
    foreign: Vec<FrameDesc>,
    /// Scratch for completion-ring reads.
    completed: Vec<FrameDesc>,
    /// Frames put on TX rings whose completion has not come back yet.
    tx_outstanding: usize,
    ring_size: u32,
    busy_poll: bool,
    frame_size: usize,
    /// This queue's frames: indexes `range.start..range.end` of the UMEM.
    range: std::ops::Range<usize>,
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Frames put on a TX ring.
    pub sent: u64,
    /// Frames dropped because a TX ring stayed full.
    pub ring_full: u64,
}

impl QueueSocket {
    /// The primary port's socket fd (for the XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.ports[0].fd()
    }

    /// The peer port's socket fd in bridge mode.
    pub fn peer_fd(&self) -> Option<RawFd> {
        self.ports.get(1).map(PortRings::fd)
    }

    /// Number of ports (1, or 2 in bridge mode).
    pub fn ports(&self) -> usize {
        self.ports.len()
    }

    /// Takes up to `batch.len()` received frames of `port`; they are lent
    /// to the caller until given to [`QueueSocket::forward`] or
    /// [`QueueSocket::release`].
    pub fn receive(&mut self, port: usize, batch: &mut [FrameDesc]) -> usize {
        let ring = &mut self.ports[port];
        // SAFETY: `batch` receives descriptors of this socket's UMEM, which
        // every RX ring of it only ever hands out.
        let n = unsafe { ring.rx.consume(batch) };
        ring.in_fill -= n as u32;
        n
    }

    /// The packet of a received frame, in place in the UMEM.
    ///
    /// # Safety
    /// `desc` must come from [`QueueSocket::receive`] (of any queue of this
    /// UMEM) and not have been forwarded or released yet: only then is the
    /// frame on no ring, so neither the kernel nor another worker writes it
    /// while the returned slice lives.
    pub unsafe fn frame(&self, desc: &FrameDesc) -> &[u8] {
        // SAFETY: per the contract, the frame belongs to this UMEM and is
        // owned by the caller for the slice's life.
        unsafe { self.umem.data(desc) }.contents()
    }

    /// Queues a lent frame to be sent out of `port` at the next flush.
    pub fn forward(&mut self, desc: FrameDesc, port: usize) {
        self.ports[port].to_tx.push(desc);
    }

    /// Queues a frame built here (a reset, say) to be sent out of `port` at
    /// the next flush, in a free frame of this queue; false when none is
    /// free or it does not fit.
    pub fn send_new(&mut self, bytes: &[u8], port: usize) -> bool {
        use std::io::Write;
        if bytes.len() > self.frame_size {
            return false;
        }
        let Some(mut desc) = self.free.pop() else {
            return false;
        };
        // SAFETY: a free frame of this queue is on no ring and lent to no
        // one: only this write touches it until it is queued below.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let mut cursor = data.cursor();
        cursor.set_pos(0);
        if cursor.write_all(bytes).is_err() {
            self.free.push(desc);
            return false;
        }
        self.ports[port].to_tx.push(desc);
        true
    }

    /// Gives back a lent frame (or one the kernel has sent).
    pub fn release(&mut self, desc: FrameDesc) {
        if self.range.contains(&(desc.addr() / self.frame_size)) {
            self.free.push(desc);
        } else {
            self.foreign.push(desc);
        }
    }

    /// Frames of other queues released here since the last call, each
    /// with the queue whose range it belongs to.
    pub fn take_foreign(&mut self) -> impl Iterator<Item = (usize, FrameDesc)> + '_ {
        let (frame_size, per_queue) = (self.frame_size, self.range.len());
        self.foreign
            .drain(..)
            .map(move |desc| ((desc.addr() / frame_size) / per_queue, desc))
    }

    /// Whether sent frames have still to come back from the kernel.
    pub fn tx_pending(&self) -> bool {
        self.tx_outstanding > 0 || self.ports.iter().any(|p| !p.to_tx.is_empty())
    }

    /// Sends what was forwarded, takes back what the kernel has sent, and
    /// tops the fill rings up. A full TX ring drops the frames (counted):
    /// the bridge never waits.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        let mut done = Flushed::default();
        for port in 0..self.ports.len() {
            let ring = &mut self.ports[port];
            if ring.to_tx.is_empty() {
                continue;
            }
            // SAFETY: the frames belong to this UMEM (shared by every
            // socket) and are on no ring; each is on one list only.
            let mut sent = unsafe { ring.tx.produce(&ring.to_tx) };
            if sent == 0 {
                // The ring may be full of frames the kernel has not sent yet.
                let _ = ring.tx.wakeup();
                // SAFETY: as above.
                sent = unsafe { ring.tx.produce(&ring.to_tx) };
            }
            if sent == 0 {
                done.ring_full += ring.to_tx.len() as u64;
                let dropped: Vec<FrameDesc> = ring.to_tx.drain(..).collect();
                for desc in dropped {
                    self.release(desc);
                }
                continue;
            }
            // produce() takes all or nothing
            ring.to_tx.clear();
            self.tx_outstanding += sent;
            done.sent += sent as u64;
            // Copy mode sends at most 32 frames per sendto (TX_BATCH_SIZE).
            for _ in 0..sent.div_ceil(32) {
                ring.tx.wakeup()?;
            }
        }
        for port in 0..self.ports.len() {
            // SAFETY: `completed` receives descriptors of this UMEM.
            let n = unsafe { self.ports[port].comp.consume(&mut self.completed) };
            self.tx_outstanding = self.tx_outstanding.saturating_sub(n);
            for i in 0..n {
                let desc = self.completed[i];
                self.release(desc);
            }
        }
        for port in 0..self.ports.len() {
            let ring = &mut self.ports[port];
            let room = self.ring_size - ring.in_fill;
            let n = (room as usize).min(self.free.len());
            if n > 0 {
                let from = self.free.len() - n;
                // SAFETY: these descriptors belong to this UMEM and are out
                // of every ring; `in_fill` bounds them to the ring's free room.
                if unsafe { ring.fill.produce(&self.free[from..]) } == n {
                    self.free.truncate(from);
                    ring.in_fill += n as u32;
                }
            }
            if ring.fill.needs_wakeup() {
                ring.fill.wakeup(ring.rx.fd_mut(), 0)?;
            }
        }
        Ok(done)
    }

    /// Waits for frames: busy-polls the sockets, or sleeps in poll() up to
    /// `timeout_ms` on them and on `extra` (another fd that wakes the
    /// worker, if any). With frames still on a TX ring, sleeps 1 ms at
    /// most, so completions come back soon.
    pub fn wait(&mut self, timeout_ms: i32, extra: Option<RawFd>) -> io::Result<()> {
        if self.busy_poll {
            for ring in &self.ports {
                // A non-blocking recvfrom drives the driver's NAPI loop in busy-poll mode.
                // SAFETY: a zero-length receive on our own socket fd.
                unsafe {
                    libc::recvfrom(
                        ring.fd(),
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
            }
            return Ok(());
        }
        let timeout = if self.tx_pending() { 1 } else { timeout_ms };
        // at most two ports and the wake-up fd: no allocation per idle turn
        let mut fds = [-1; 3];
        let mut n = 0;
        for fd in self.ports.iter().map(PortRings::fd).chain(extra) {
            fds[n] = fd;
            n += 1;
        }
        poll_readable(&fds[..n], timeout)
    }

    /// The kernel statistics of the queue's socket(s), summed over both
    /// ports in bridge mode.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        let mut sum = XskStatistics::default();
        for ring in &self.ports {
            let p = statistics_of(&ring.rx)?;
            sum.rx_dropped += p.rx_dropped;
            sum.rx_invalid_descs += p.rx_invalid_descs;
            sum.rx_ring_full += p.rx_ring_full;
            sum.rx_fill_ring_empty += p.rx_fill_ring_empty;
            sum.tx_invalid_descs += p.tx_invalid_descs;
        }
        Ok(sum)
    }
}

/// Sleeps in poll() until one of `fds` (at most 3: two ports and a wake-up
/// fd; more are ignored) is readable or `timeout_ms` passes
/// (an interrupted call returns early without error).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<()> {
    const MAX: usize = 3;
    let mut pollfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; MAX];
    let fds = &fds[..fds.len().min(MAX)];
    for (pollfd, fd) in pollfds.iter_mut().zip(fds) {
        pollfd.fd = *fd;
    }
    let pollfds = &mut pollfds[..fds.len()];
    // SAFETY: `pollfds` is a valid array of pollfd for its length.
    let rc = unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if rc < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

fn statistics_of(rx: &RxQueue) -> io::Result<XskStatistics> {
    let s = rx.fd().xdp_statistics()?;
    Ok(XskStatistics {
        rx_dropped: s.rx_dropped(),
        rx_invalid_descs: s.rx_invalid_descs(),
        rx_ring_full: s.rx_ring_full(),
        rx_fill_ring_empty: s.rx_fill_ring_empty_descs(),
        tx_invalid_descs: s.tx_invalid_descs(),
    })
}

/// `XDP_STATISTICS` of a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XskStatistics {
    /// Dropped for reasons other than a full ring or invalid descriptors.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    /// Dropped because the RX ring was full (user space too slow).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty: u64,
    pub tx_invalid_descs: u64,
}

impl XskStatistics {
    /// Packets the program redirected to the socket that never reached the RX ring.
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full + self.rx_invalid_descs
    }
}

/// An error with its chain of causes (xsk-rs puts the OS error in `source`).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn queue_size(n: u32) -> Result<QueueSize, XskError> {
    QueueSize::new(n).map_err(|e| XskError::Config(e.to_string()))
}

/// One UMEM for every queue: `queues` ranges of `frame_count(ports)` frames.
fn umem(
    config: &XskConfig,
    iface: &str,
    queues: u32,
    ports: u32,
) -> Result<(Umem, Vec<FrameDesc>), XskError> {
    let frame_size =
        FrameSize::new(config.frame_size).map_err(|e| XskError::Config(e.to_string()))?;
    let umem_config = UmemConfig::builder()
        .frame_size(frame_size)
        .fill_queue_size(queue_size(config.ring_size)?)
        .comp_queue_size(queue_size(config.ring_size)?)
        .build()
        .map_err(|e| XskError::Config(e.to_string()))?;
    let total = config.frame_count(ports) * queues;
    let frames = NonZeroU32::new(total).ok_or_else(|| XskError::Config("zero frames".into()))?;
    Umem::new(umem_config, frames, false).map_err(|e| XskError::Umem {
        iface: iface.to_string(),
        queues,
        frames: total,
        frame_size: config.frame_size,
        reason: with_causes(&e),
    })
}

fn socket_config(config: &XskConfig, mode: BindMode) -> Result<SocketConfig, String> {
    let bind_flags = BindFlags::XDP_USE_NEED_WAKEUP
        | match mode {
            BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            BindMode::Copy => BindFlags::XDP_COPY,
        };
    Ok(SocketConfig::builder()
        .rx_queue_size(queue_size(config.ring_size).map_err(|e| e.to_string())?)
        .tx_queue_size(queue_size(config.ring_size).map_err(|e| e.to_string())?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind_flags)
        .build())
}

fn interface(iface: &str) -> Result<Interface, String> {
    iface
        .parse()
        .map_err(|_| format!("interface name `{iface}` contains a NUL byte"))
}

/// Binds one port's socket of `queue` on the shared UMEM.
fn bind_port(
    config: &XskConfig,
    umem: &Umem,
    iface: &str,
    queue: u32,
    mode: BindMode,
) -> Result<PortRings, String> {
    // SAFETY: every (interface, queue) pair is bound once (one socket per
    // port and queue), so libxdp either uses the UMEM's own fill and
    // completion rings (the first socket) or makes a fresh pair for this
    // pair (XDP_SHARED_UMEM), never handing out one pair twice, which is
    // the double-free hazard documented on `Socket::new`; INHIBIT_PROG_LOAD
    // is set (socket_config), as `Socket::new` requires for shared UMEMs.
    let (tx, rx, rings) = unsafe {
        Socket::new(
            socket_config(config, mode)?,
            umem,
            &interface(iface)?,
            queue,
        )
    }
    .map_err(|e| format!("{iface} queue {queue}: {}", with_causes(&e)))?;
    let (fill, comp) = rings.ok_or_else(|| {
        format!("{iface} queue {queue}: the kernel returned no fill/completion rings")
    })?;
    Ok(PortRings {
        fill,
        comp,
        rx,
        tx,
        in_fill: 0,
        to_tx: Vec::with_capacity(config.batch as usize),
    })
}

/// Binds every queue's socket(s) in `mode` on one new UMEM.
fn bind_all(
    config: &XskConfig,
    iface: &str,
    queues: u32,
    mode: BindMode,
    peer: Option<&str>,
) -> Result<Vec<QueueSocket>, (u32, String)> {
    let port_names: Vec<&str> = std::iter::once(iface).chain(peer).collect();
    let ports = port_names.len() as u32;
    let (umem, mut descs) = umem(config, iface, queues, ports).map_err(|e| (0, e.to_string()))?;
    let per_queue = config.frame_count(ports) as usize;
    let mut sockets = Vec::with_capacity(queues as usize);
    for queue in 0..queues {
        let rings = port_names
            .iter()
            .map(|name| bind_port(config, &umem, name, queue, mode))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| (queue, reason))?;
        let bound =
            zero_copy_of(rings[0].fd()).map_err(|e| (queue, format!("XDP_OPTIONS: {e}")))?;
        let start = queue as usize * per_queue;
        let free: Vec<FrameDesc> = descs.drain(..per_queue).collect();
        sockets.push(QueueSocket {
            queue,
            bind_mode: bound,
            umem: umem.clone(),
            ports: rings,
            free,
            foreign: Vec::new(),
            completed: vec![FrameDesc::default(); config.ring_size as usize],
            tx_outstanding: 0,
            ring_size: config.ring_size,
            busy_poll: config.busy_poll,
            frame_size: config.frame_size as usize,
            range: start..start + per_queue,
        });
    }
    Ok(sockets)
}

/// Reads back whether the kernel bound the socket in zero-copy mode.
fn zero_copy_of(fd: RawFd) -> io::Result<BindMode> {
    let mut options = libc::xdp_options { flags: 0 };
    let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: `options` and `len` are valid for writes of the size given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut options as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 {
        BindMode::ZeroCopy
    } else {
        BindMode::Copy
    })
}

fn set_int_sockopt(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens the sockets of queues `0..queues` per `config.zero_copy`, all on
/// one UMEM (and, in bridge mode, the socket on the same queue of `peer`
/// for each), and primes their fill rings.
pub fn open_all(
    config: &XskConfig,
    iface: &str,
    driver: &str,
    queues: u32,
    peer: Option<&str>,
) -> Result<Vec<QueueSocket>, XskError> {
    let bind_error = |mode: BindMode, (queue, reason): (u32, String)| XskError::Bind {
        iface: iface.to_string(),
        queue,
        mode: mode.as_str(),
        reason,
    };
    let copy = || bind_all(config, iface, queues, BindMode::Copy, peer);
    let mut sockets = match (config.zero_copy, config.generic_xdp) {
        (ZeroCopyArg::Off, _) | (ZeroCopyArg::Auto, true) => {
            copy().map_err(|e| bind_error(BindMode::Copy, e))?
        }
        (ZeroCopyArg::Require, true) => {
            return Err(XskError::ZeroCopyUnavailable {
                iface: iface.into(),
                driver: driver.into(),
                queue: 0,
                reason: "the XDP program runs in generic mode".into(),
            });
        }
        (zero_copy, false) => match bind_all(config, iface, queues, BindMode::ZeroCopy, peer) {
            Ok(sockets) => sockets,
            Err((queue, reason)) if zero_copy == ZeroCopyArg::Require => {
                return Err(XskError::ZeroCopyUnavailable {
                    iface: iface.into(),
                    driver: driver.into(),
                    queue,
                    reason,
                });
            }
            Err((_, reason)) => {
                tracing::info!(
                    iface, driver, %reason,
                    "AF_XDP zero copy not available; using copy mode (frames are copied once by the kernel into the UMEM)"
                );
                copy().map_err(|e| bind_error(BindMode::Copy, e))?
            }
        },
    };
    for socket in &mut sockets {
        prime(config, iface, socket)?;
    }
    Ok(sockets)
}

/// Hands the kernel full fill rings now, before the program is attached (a
/// packet redirected to a socket with an empty fill ring is dropped; the
/// other frames stay free for frames in flight on the TX rings), and sets
/// the busy-poll options.
fn prime(config: &XskConfig, iface: &str, socket: &mut QueueSocket) -> Result<(), XskError> {
    let queue = socket.queue;
    let mode = socket.bind_mode.as_str();
    for port in 0..socket.ports.len() {
        let initial = (config.ring_size as usize).min(socket.free.len());
        let from = socket.free.len() - initial;
        let ring = &mut socket.ports[port];
        // SAFETY: the frames come from this queue's range of the UMEM and are
        // owned by no ring yet.
        if unsafe { ring.fill.produce(&socket.free[from..]) } != initial {
            return Err(XskError::Bind {
                iface: iface.to_string(),
                queue,
                mode,
                reason: format!("port {port}: the fill ring refused the initial {initial} frames"),
            });
        }
        ring.in_fill = initial as u32;
        socket.free.truncate(from);
    }
    if config.busy_poll {
        let fd = socket.fd();
        let sockopt = |what, option, value| {
            set_int_sockopt(fd, option, value).map_err(|source| XskError::Sockopt {
                iface: iface.into(),
                queue,
                what,
                source,
            })
        };
        sockopt("SO_PREFER_BUSY_POLL", libc::SO_PREFER_BUSY_POLL, 1)?;
        sockopt("SO_BUSY_POLL", libc::SO_BUSY_POLL, 20)?;
        sockopt(
            "SO_BUSY_POLL_BUDGET",
            libc::SO_BUSY_POLL_BUDGET,
            config.batch as libc::c_int,
        )?;
    }
    Ok(())
}
