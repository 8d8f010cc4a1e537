//! UMEM and AF_XDP sockets, one pair per RX queue, over xsk-rs.
//!
//! Each queue owns its UMEM (so no two workers share ring state), with
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
    /// Frames per UMEM: enough to fill the fill ring and have as many again
    /// in flight on the RX ring (and later the TX ring).
    pub fn frame_count(&self) -> u32 {
        self.ring_size * 2
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
    /// Frames not yet handed to the kernel (initially all of them).
    pub free_frames: Vec<FrameDesc>,
}

impl QueueSocket {
    /// The socket's file descriptor (for the XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// The socket's kernel statistics.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        let s = self.rx.fd().xdp_statistics()?;
        Ok(XskStatistics {
            rx_dropped: s.rx_dropped(),
            rx_invalid_descs: s.rx_invalid_descs(),
            rx_ring_full: s.rx_ring_full(),
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs(),
            tx_invalid_descs: s.tx_invalid_descs(),
        })
    }
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

fn umem(config: &XskConfig, iface: &str, queue: u32) -> Result<(Umem, Vec<FrameDesc>), XskError> {
    let frame_size =
        FrameSize::new(config.frame_size).map_err(|e| XskError::Config(e.to_string()))?;
    let umem_config = UmemConfig::builder()
        .frame_size(frame_size)
        .fill_queue_size(queue_size(config.ring_size)?)
        .comp_queue_size(queue_size(config.ring_size)?)
        .build()
        .map_err(|e| XskError::Config(e.to_string()))?;
    let frames = NonZeroU32::new(config.frame_count())
        .ok_or_else(|| XskError::Config("zero frames".into()))?;
    Umem::new(umem_config, frames, false).map_err(|e| XskError::Umem {
        iface: iface.to_string(),
        queue,
        frames: config.frame_count(),
        frame_size: config.frame_size,
        reason: with_causes(&e),
    })
}

fn bind(
    config: &XskConfig,
    iface: &str,
    queue: u32,
    mode: BindMode,
) -> Result<QueueSocket, String> {
    let (umem, descs) = umem(config, iface, queue).map_err(|e| e.to_string())?;
    let bind_flags = BindFlags::XDP_USE_NEED_WAKEUP
        | match mode {
            BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            BindMode::Copy => BindFlags::XDP_COPY,
        };
    let socket_config = SocketConfig::builder()
        .rx_queue_size(queue_size(config.ring_size).map_err(|e| e.to_string())?)
        .tx_queue_size(queue_size(config.ring_size).map_err(|e| e.to_string())?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind_flags)
        .build();
    let ifname: Interface = iface
        .parse()
        .map_err(|_| format!("interface name `{iface}` contains a NUL byte"))?;
    // SAFETY: the UMEM is new and not shared with any other socket, so the
    // shared-UMEM double-free hazard documented on `Socket::new` cannot arise.
    let (tx, rx, rings) = unsafe { Socket::new(socket_config, &umem, &ifname, queue) }
        .map_err(|e| with_causes(&e))?;
    let (fill, comp) =
        rings.ok_or("the kernel returned no fill/completion rings for a fresh UMEM")?;
    let bound = zero_copy_of(rx.fd().as_raw_fd()).map_err(|e| format!("XDP_OPTIONS: {e}"))?;
    Ok(QueueSocket {
        queue,
        bind_mode: bound,
        umem,
        fill,
        comp,
        rx,
        tx,
        free_frames: descs,
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

/// Opens the socket of one queue per `config.zero_copy`.
pub fn open(
    config: &XskConfig,
    iface: &str,
    driver: &str,
    queue: u32,
) -> Result<QueueSocket, XskError> {
    let bind_error = |mode: BindMode, reason: String| XskError::Bind {
        iface: iface.to_string(),
        queue,
        mode: mode.as_str(),
        reason,
    };
    let socket = match (config.zero_copy, config.generic_xdp) {
        (ZeroCopyArg::Off, _) => {
            bind(config, iface, queue, BindMode::Copy).map_err(|r| bind_error(BindMode::Copy, r))?
        }
        (ZeroCopyArg::Require, true) => {
            return Err(XskError::ZeroCopyUnavailable {
                iface: iface.into(),
                driver: driver.into(),
                queue,
                reason: "the XDP program runs in generic mode".into(),
            });
        }
        (ZeroCopyArg::Auto, true) => {
            bind(config, iface, queue, BindMode::Copy).map_err(|r| bind_error(BindMode::Copy, r))?
        }
        (zero_copy, false) => match bind(config, iface, queue, BindMode::ZeroCopy) {
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
                bind(config, iface, queue, BindMode::Copy)
                    .map_err(|r| bind_error(BindMode::Copy, r))?
            }
        },
    };
    // Hand the kernel a full fill ring now, before the program is attached:
    // a packet redirected to a socket with an empty fill ring is dropped.
    // The other frames stay free (for TX later).
    let mut socket = socket;
    let initial = (config.ring_size as usize).min(socket.free_frames.len());
    let fill_frames: Vec<FrameDesc> = socket.free_frames.drain(..initial).collect();
    // SAFETY: the frames come from this socket's own UMEM and are owned by no ring yet.
    if unsafe { socket.fill.produce(&fill_frames) } != fill_frames.len() {
        return Err(XskError::Bind {
            iface: iface.to_string(),
            queue,
            mode: socket.bind_mode.as_str(),
            reason: format!(
                "the fill ring refused the initial {} frames",
                fill_frames.len()
            ),
        });
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
