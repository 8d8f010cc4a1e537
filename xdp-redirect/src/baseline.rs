//! Baseline XDP programs for benchmarks (`src/bpf/dp_baseline.c`): drop
//! everything, pass everything, or redirect everything to the AF_XDP socket
//! of its queue without parsing. Never used by the data plane itself.

use std::os::fd::AsRawFd;

use aya::{
    Ebpf,
    maps::XskMap,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};

use crate::{Error, TestRunOutcome};

/// The compiled baseline object, embedded at build time.
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dp_baseline.o"));

/// Which baseline program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `XDP_DROP` for every packet: the kernel ceiling.
    DropAll,
    /// `XDP_PASS` for every packet.
    PassAll,
    /// `XDP_TX` of every frame with its MACs swapped: one-armed forwarding's ceiling.
    TxAll,
    /// Redirect every packet to the socket of its queue: the user-space ceiling.
    XskAll,
    /// Send every frame out of the other port (see [`Baseline::set_bridge`]).
    Bridge,
    /// Count and drop (see [`Baseline::sink_counts`]).
    Sink,
    /// In-kernel generator (see [`Baseline::generate`]).
    Gen,
    /// One-way latency sink (see [`Baseline::latency_samples`]).
    Latency,
}

/// Configuration of [`Baseline::generate`]: flow mix, where the ports,
/// checksum and stamp are (`struct dp_gen_config` in dp_abi.h).
pub use crate::abi::dp_gen_config as GenConfig;
/// The stamp [`GenConfig::stamp_off`] asks for (`struct dp_gen_stamp`).
pub use crate::abi::dp_gen_stamp as GenStamp;

impl Kind {
    pub fn program_name(self) -> &'static str {
        match self {
            Kind::DropAll => "xdp_drop_all",
            Kind::PassAll => "xdp_pass_all",
            Kind::TxAll => "xdp_tx_all",
            Kind::XskAll => "xdp_xsk_all",
            Kind::Bridge => "xdp_bridge",
            Kind::Sink => "xdp_sink",
            Kind::Gen => "xdp_gen",
            Kind::Latency => "xdp_latency",
        }
    }
}

/// The loaded baseline programs.
#[derive(Debug)]
pub struct Baseline {
    ebpf: Ebpf,
    link: Option<(Kind, XdpLinkId)>,
}

impl Baseline {
    /// Loads every program (verified, not attached).
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(BASELINE_OBJECT).map_err(Box::new)?;
        for kind in [
            Kind::DropAll,
            Kind::PassAll,
            Kind::TxAll,
            Kind::XskAll,
            Kind::Bridge,
            Kind::Sink,
            Kind::Gen,
            Kind::Latency,
        ] {
            program_mut(&mut ebpf, kind)?
                .load()
                .map_err(|source| Error::Program {
                    what: format!("load {}", kind.program_name()),
                    source: Box::new(source),
                })?;
        }
        Ok(Baseline { ebpf, link: None })
    }

    /// `BPF_PROG_TEST_RUN` of one program on `frame`.
    pub fn test_run(&self, kind: Kind, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, Error> {
        crate::run_test(
            crate::program_named(&self.ebpf, kind.program_name())?,
            frame,
            repeat,
        )
        .map(|(outcome, _)| outcome)
    }

    /// Attaches one program in native mode (detached on drop).
    pub fn attach(&mut self, kind: Kind, iface: &str) -> Result<(), Error> {
        let link = program_mut(&mut self.ebpf, kind)?
            .attach(iface, XdpMode::Driver)
            .map_err(|source| Error::Attach {
                iface: iface.to_string(),
                mode: crate::AttachMode::Native,
                driver: crate::iface::driver(iface).unwrap_or_default(),
                source: Box::new(source),
            })?;
        self.link = Some((kind, link));
        Ok(())
    }

    /// Puts a socket in the bare XSKMAP slot of `queue` (for [`Kind::XskAll`]).
    pub fn register_socket(&mut self, queue: u32, socket: impl AsRawFd) -> Result<(), Error> {
        let map = self.ebpf.map_mut("bare_xsks").ok_or(Error::Missing {
            kind: "map",
            name: "bare_xsks",
        })?;
        let mut xsks = XskMap::try_from(map)
            .map_err(|source| crate::map_error("bare_xsks", "open", source))?;
        xsks.set(queue, socket, 0)
            .map_err(|source| crate::map_error("bare_xsks", "register a socket", source))
    }
}

impl Baseline {
    /// Makes [`Kind::Bridge`] send what enters `a` out of `b` and the reverse.
    pub fn set_bridge(&mut self, a: u32, b: u32) -> Result<(), Error> {
        let map = self.ebpf.map_mut("bare_peers").ok_or(Error::Missing {
            kind: "map",
            name: "bare_peers",
        })?;
        let mut peers = aya::maps::DevMapHash::try_from(map)
            .map_err(|source| crate::map_error("bare_peers", "open", source))?;
        for (from, to) in [(a, b), (b, a)] {
            peers
                .insert(from, to, None, 0)
                .map_err(|source| Error::Bridge {
                    what: format!("map `bare_peers`: {from} -> {to}"),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Sends `count` copies of `frame` out of interface `ifindex` with the
    /// in-kernel generator (`BPF_PROG_TEST_RUN` with live frames; the
    /// calling thread must be in the interface's network namespace), ports
    /// (and stamp) rewritten per `config`, `batch` frames (1 to 256) per
    /// kernel batch: larger is faster, smaller queues frames for less time
    /// before they leave. Returns how long the kernel took.
    pub fn generate(
        &mut self,
        frame: &[u8],
        ifindex: u32,
        config: GenConfig,
        count: u32,
        batch: u32,
    ) -> Result<std::time::Duration, Error> {
        // the headers to restore on every frame come from the template itself
        let mut config = config;
        let restore = usize::from(config.header_len)
            .min(config.header.len())
            .min(frame.len());
        config.header = [0; 64];
        config.header[..restore].copy_from_slice(&frame[..restore]);
        config.header_len = restore as u16;
        let map = self.ebpf.map_mut("gen_config").ok_or(Error::Missing {
            kind: "map",
            name: "gen_config",
        })?;
        let mut array: aya::maps::Array<_, GenConfig> = aya::maps::Array::try_from(map)
            .map_err(|source| crate::map_error("gen_config", "open", source))?;
        array
            .set(0, config, 0)
            .map_err(|source| crate::map_error("gen_config", "set", source))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        use aya::programs::TestRun as _;
        let program = crate::program_named(&self.ebpf, Kind::Gen.program_name())?;
        let started = std::time::Instant::now();
        program
            .test_run(aya::programs::TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: count.max(1),
                attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(batch.clamp(1, 256)),
                ..aya::programs::TestRunOptions::default()
            })
            .map_err(|source| Error::Program {
                what: "BPF_PROG_TEST_RUN with live frames".into(),
                source: Box::new(source),
            })?;
        Ok(started.elapsed())
    }

    /// The ring buffer of one-way latencies (ns, one `u64` each) that
    /// [`Kind::Latency`] fills; take it once.
    pub fn latency_samples(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>, Error> {
        let map = self
            .ebpf
            .take_map("latency_samples")
            .ok_or(Error::Missing {
                kind: "map",
                name: "latency_samples",
            })?;
        aya::maps::RingBuf::try_from(map)
            .map_err(|source| crate::map_error("latency_samples", "open", source))
    }

    /// [`Kind::Latency`]'s counters: (stamped frames, frames without a stamp,
    /// samples lost to a full ring buffer).
    pub fn latency_counts(&self) -> Result<(u64, u64, u64), Error> {
        let map = self.ebpf.map("latency_counters").ok_or(Error::Missing {
            kind: "map",
            name: "latency_counters",
        })?;
        let [stamped, unstamped, lost] = crate::percpu_sums(map, "latency_counters")?;
        Ok((stamped, unstamped, lost))
    }

    /// Frames and bytes [`Kind::Sink`] has counted, summed over CPUs.
    pub fn sink_counts(&self) -> Result<(u64, u64), Error> {
        let map = self.ebpf.map("sink_counters").ok_or(Error::Missing {
            kind: "map",
            name: "sink_counters",
        })?;
        let [packets, bytes] = crate::percpu_sums(map, "sink_counters")?;
        Ok((packets, bytes))
    }
}

fn program_mut(ebpf: &mut Ebpf, kind: Kind) -> Result<&mut Xdp, Error> {
    crate::program_named_mut(ebpf, kind.program_name())
}
