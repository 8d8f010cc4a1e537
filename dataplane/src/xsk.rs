//! UMEM and AF_XDP sockets, one pair per RX queue, over xsk-rs.
//!
//! Each queue owns its UMEM (so no two workers share ring state). In bridge
//! mode the queue has a second socket, on the same queue of the peer
//! interface, sharing that UMEM (`XDP_SHARED_UMEM` with its own fill and
//! completion rings), so a frame received on one port is sent out of the
//! other by passing its descriptor, without a copy. Sockets are bound with
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
        "cannot allocate the UMEM for {iface} queue {queue} ({frames} frames of {frame_size} B): {reason}; \
         lower --ring-size, or raise the memlock limit (ulimit -l)"
    )]
    Umem {
        iface: String,
        queue: u32,
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

/// Everything one worker needs for its queue.
pub struct QueueSocket {
    pub queue: u32,
    pub bind_mode: BindMode,
    pub umem: Umem,
    pub fill: FillQueue,
    pub comp: CompQueue,
    pub rx: RxQueue,
    pub tx: TxQueue,
    /// Frames not handed to the kernel (the fill rings were primed from the rest).
    pub free_frames: Vec<FrameDesc>,
    /// Bridge mode: the socket on the same queue of the peer interface.
    pub peer: Option<PeerSocket>,
}

/// The peer port's socket of a queue in bridge mode, sharing the UMEM of
/// its [`QueueSocket`].
pub struct PeerSocket {
    pub fill: FillQueue,
    pub comp: CompQueue,
    pub rx: RxQueue,
    pub tx: TxQueue,
}

impl PeerSocket {
    /// The socket's file descriptor (for the XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }
}

impl QueueSocket {
    /// The socket's file descriptor (for the XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// The kernel statistics of the queue's socket(s), summed over both
    /// ports in bridge mode.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        let mut sum = statistics_of(&self.rx)?;
        if let Some(peer) = &self.peer {
            let p = statistics_of(&peer.rx)?;
            sum.rx_dropped += p.rx_dropped;
            sum.rx_invalid_descs += p.rx_invalid_descs;
            sum.rx_ring_full += p.rx_ring_full;
            sum.rx_fill_ring_empty += p.rx_fill_ring_empty;
            sum.tx_invalid_descs += p.tx_invalid_descs;
        }
        Ok(sum)
    }
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

fn umem(
    config: &XskConfig,
    iface: &str,
    queue: u32,
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
    let frames = NonZeroU32::new(config.frame_count(ports))
        .ok_or_else(|| XskError::Config("zero frames".into()))?;
    Umem::new(umem_config, frames, false).map_err(|e| XskError::Umem {
        iface: iface.to_string(),
        queue,
        frames: config.frame_count(ports),
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

fn bind(
    config: &XskConfig,
    iface: &str,
    queue: u32,
    mode: BindMode,
    peer: Option<&str>,
) -> Result<QueueSocket, String> {
    let ports = if peer.is_some() { 2 } else { 1 };
    let (umem, descs) = umem(config, iface, queue, ports).map_err(|e| e.to_string())?;
    // SAFETY: the UMEM is new and not shared with any other socket, so the
    // shared-UMEM double-free hazard documented on `Socket::new` cannot arise.
    let (tx, rx, rings) = unsafe {
        Socket::new(
            socket_config(config, mode)?,
            &umem,
            &interface(iface)?,
            queue,
        )
    }
    .map_err(|e| with_causes(&e))?;
    let (fill, comp) =
        rings.ok_or("the kernel returned no fill/completion rings for a fresh UMEM")?;
    let bound = zero_copy_of(rx.fd().as_raw_fd()).map_err(|e| format!("XDP_OPTIONS: {e}"))?;
    let peer = match peer {
        None => None,
        Some(peer) => {
            // SAFETY: the UMEM is shared with the socket above, but on another
            // interface, so this (interface, queue) pair is not bound yet and
            // the kernel hands out a fresh fill/completion ring pair;
            // INHIBIT_PROG_LOAD is set (socket_config), as `Socket::new`
            // requires for shared UMEMs. libxdp binds it with
            // XDP_SHARED_UMEM, inheriting the first socket's mode.
            let (tx, rx, rings) = unsafe {
                Socket::new(
                    socket_config(config, mode)?,
                    &umem,
                    &interface(peer)?,
                    queue,
                )
            }
            .map_err(|e| format!("peer {peer} queue {queue}: {}", with_causes(&e)))?;
            let (fill, comp) = rings.ok_or_else(|| {
                format!("peer {peer} queue {queue}: the kernel returned no fill/completion rings")
            })?;
            Some(PeerSocket { fill, comp, rx, tx })
        }
    };
    Ok(QueueSocket {
        queue,
        bind_mode: bound,
        umem,
        fill,
        comp,
        rx,
        tx,
        free_frames: descs,
        peer,
    })
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

/// Opens the socket of one queue per `config.zero_copy` (and, in bridge
/// mode, the socket on the same queue of `peer`, sharing its UMEM).
pub fn open(
    config: &XskConfig,
    iface: &str,
    driver: &str,
    queue: u32,
    peer: Option<&str>,
) -> Result<QueueSocket, XskError> {
    let bind_error = |mode: BindMode, reason: String| XskError::Bind {
        iface: iface.to_string(),
        queue,
        mode: mode.as_str(),
        reason,
    };
    let socket = match (config.zero_copy, config.generic_xdp) {
        (ZeroCopyArg::Off, _) => bind(config, iface, queue, BindMode::Copy, peer)
            .map_err(|r| bind_error(BindMode::Copy, r))?,
        (ZeroCopyArg::Require, true) => {
            return Err(XskError::ZeroCopyUnavailable {
                iface: iface.into(),
                driver: driver.into(),
                queue,
                reason: "the XDP program runs in generic mode".into(),
            });
        }
        (ZeroCopyArg::Auto, true) => bind(config, iface, queue, BindMode::Copy, peer)
            .map_err(|r| bind_error(BindMode::Copy, r))?,
        (zero_copy, false) => match bind(config, iface, queue, BindMode::ZeroCopy, peer) {
            Ok(socket) => socket,
            Err(reason) if zero_copy == ZeroCopyArg::Require => {
                return Err(XskError::ZeroCopyUnavailable {
                    iface: iface.into(),
                    driver: driver.into(),
                    queue,
                    reason,
                });
            }
            Err(reason) => {
                if queue == 0 {
                    tracing::info!(
                        iface, driver, %reason,
                        "AF_XDP zero copy not available; using copy mode (frames are copied once by the kernel into the UMEM)"
                    );
                }
                bind(config, iface, queue, BindMode::Copy, peer)
                    .map_err(|r| bind_error(BindMode::Copy, r))?
            }
        },
    };
    // Hand the kernel full fill rings now, before the program is attached:
    // a packet redirected to a socket with an empty fill ring is dropped.
    // The other frames stay free (for frames in flight on the TX rings).
    let mut socket = socket;
    let initial = (config.ring_size as usize).min(socket.free_frames.len());
    let fill_frames: Vec<FrameDesc> = socket.free_frames.drain(..initial).collect();
    let mode = socket.bind_mode.as_str();
    let refused = |what: &str| XskError::Bind {
        iface: iface.to_string(),
        queue,
        mode,
        reason: format!("the {what} fill ring refused the initial {initial} frames"),
    };
    // SAFETY: the frames come from this socket's own UMEM and are owned by no ring yet.
    if unsafe { socket.fill.produce(&fill_frames) } != fill_frames.len() {
        return Err(refused("primary"));
    }
    if let Some(peer) = &mut socket.peer {
        let peer_frames: Vec<FrameDesc> = socket.free_frames.drain(..initial).collect();
        // SAFETY: as above; the peer socket shares this UMEM.
        if unsafe { peer.fill.produce(&peer_frames) } != peer_frames.len() {
            return Err(refused("peer"));
        }
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
    Ok(socket)
}
