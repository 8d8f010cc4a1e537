//! `xdp-baseline`: holds one of the baseline XDP programs on an interface
//! for as long as a comparison run needs it, then prints what it counted as
//! JSON on stdout. The references the data plane is measured against:
//! - `sink`: count and drop every frame (the kernel ceiling, with a count);
//! - `drop`: drop every frame, no count;
//! - `bridge`: send every frame out of `--peer` and the reverse;
//! - `xsk-drop`: every frame to an AF_XDP socket on its queue, where a bare
//!   loop counts and recycles it (the user-space ceiling).
//!
//! Runs until SIGINT/SIGTERM or `--duration`. Prints "xdp-baseline: attached"
//! once the program is in place.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use xdp_redirect::baseline::{Baseline, Kind};

#[derive(Parser, Debug)]
#[command(about = "Hold a baseline XDP program on an interface and report what it counted")]
struct Args {
    #[arg(long, short = 'i')]
    iface: String,
    #[arg(long, value_enum)]
    kind: BaselineKind,
    /// The other port (bridge).
    #[arg(long)]
    peer: Option<String>,
    /// RX queues served (xsk-drop).
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BaselineKind {
    Sink,
    Drop,
    /// XDP_PASS (the stack handles everything; veth needs a program to take XDP_TX frames).
    Pass,
    /// XDP_TX with the MACs swapped (one-armed forwarding ceiling).
    Tx,
    Bridge,
    XskDrop,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut programs = Baseline::load()?;
    let received = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    match args.kind {
        BaselineKind::Sink => programs.attach(Kind::Sink, &args.iface)?,
        BaselineKind::Drop => programs.attach(Kind::DropAll, &args.iface)?,
        BaselineKind::Pass => programs.attach(Kind::PassAll, &args.iface)?,
        BaselineKind::Tx => programs.attach(Kind::TxAll, &args.iface)?,
        BaselineKind::Bridge => {
            let peer = args.peer.as_deref().context("--kind bridge needs --peer")?;
            programs.set_bridge(
                xdp_redirect::iface::index(&args.iface)?,
                xdp_redirect::iface::index(peer)?,
            )?;
            programs.attach(Kind::Bridge, &args.iface)?;
            programs.attach(Kind::Bridge, peer)?;
        }
        BaselineKind::XskDrop => {
            for queue in 0..args.queues {
                let socket = xsk::RxDrop::open(&args.iface, queue)?;
                programs.register_socket(queue, socket.fd())?;
                let stop = Arc::clone(&stop);
                let received = Arc::clone(&received);
                workers.push(std::thread::spawn(move || {
                    bench::pktgen::pin(queue as usize);
                    socket.run(&stop, &received)
                }));
            }
            programs.attach(Kind::XskAll, &args.iface)?;
        }
    }
    println!("xdp-baseline: attached");
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("receive loop panicked"))??;
    }
    let (packets, bytes) = match args.kind {
        BaselineKind::Sink => programs.sink_counts()?,
        BaselineKind::XskDrop => (received.load(Ordering::Relaxed), 0),
        _ => (0, 0),
    };
    drop(programs);
    println!(
        "{}",
        serde_json::json!({"packets": packets, "bytes": bytes})
    );
    Ok(())
}

/// The bare AF_XDP receive-and-drop loop.
mod xsk {
    use super::*;
    use std::os::fd::{AsRawFd, RawFd};
    use xsk_rs::{
        FillQueue, FrameDesc, RxQueue, Socket, Umem,
        config::{
            BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
        },
    };

    const RING: u32 = 2048;

    pub struct RxDrop {
        _umem: Umem,
        fill: FillQueue,
        rx: RxQueue,
        descs: Vec<FrameDesc>,
    }

    fn q(n: u32) -> anyhow::Result<QueueSize> {
        QueueSize::new(n).map_err(|e| anyhow::anyhow!("{e}"))
    }

    impl RxDrop {
        pub fn open(iface: &str, queue: u32) -> anyhow::Result<RxDrop> {
            let umem_config = UmemConfig::builder()
                .frame_size(FrameSize::new(4096).map_err(|e| anyhow::anyhow!("{e}"))?)
                .fill_queue_size(q(RING)?)
                .comp_queue_size(q(RING)?)
                .build()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let (umem, descs) = Umem::new(
                umem_config,
                std::num::NonZeroU32::new(RING * 2).expect("non-zero"),
                false,
            )
            .map_err(|e| anyhow::anyhow!("UMEM: {e}"))?;
            let config = SocketConfig::builder()
                .rx_queue_size(q(RING)?)
                .tx_queue_size(q(RING)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            let ifname: Interface = iface.parse().map_err(|_| anyhow::anyhow!("bad name"))?;
            // SAFETY: a fresh UMEM shared with no other socket.
            let (_tx, rx, rings) = unsafe { Socket::new(config, &umem, &ifname, queue) }
                .map_err(|e| anyhow::anyhow!("AF_XDP socket on {iface} queue {queue}: {e}"))?;
            let (mut fill, _comp) = rings.context("no fill ring")?;
            // SAFETY: the frames are this UMEM's and on no ring yet.
            if unsafe { fill.produce(&descs[..RING as usize]) } != RING as usize {
                bail!("the fill ring refused its initial frames");
            }
            Ok(RxDrop {
                _umem: umem,
                fill,
                rx,
                descs,
            })
        }

        pub fn fd(&self) -> RawFd {
            self.rx.fd().as_raw_fd()
        }

        pub fn run(mut self, stop: &AtomicBool, received: &AtomicU64) -> anyhow::Result<()> {
            let mut batch = vec![FrameDesc::default(); 64];
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `batch` receives descriptors of this UMEM.
                let n = unsafe { self.rx.consume(&mut batch) };
                if n == 0 {
                    if self.fill.needs_wakeup() {
                        self.fill.wakeup(self.rx.fd_mut(), 10)?;
                    } else {
                        let _ = self.rx.poll(10)?;
                    }
                    continue;
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
                // SAFETY: the frames came off this socket's RX ring.
                while unsafe { self.fill.produce(&batch[..n]) } != n {
                    self.fill.wakeup(self.rx.fd_mut(), 0)?;
                }
            }
            let _ = &self.descs;
            Ok(())
        }
    }
}
