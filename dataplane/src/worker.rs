//! One worker per RX queue, pinned to its core: takes frames from the
//! socket's RX ring in batches, lends each frame in place to the decoder and
//! the flow table, writes the verdicts of decided flows to the kernel map
//! (once per batch), and recycles the frames to the fill ring.
//!
//! Nothing on the per-packet path takes a lock or allocates; stats go to the
//! main thread as periodic [`WorkerReport`]s over a crossbeam channel.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::Sender;
use hdrhistogram::Histogram;
use thiserror::Error;
use xdp_redirect::{Action, VerdictMap};
use xsk_rs::FrameDesc;

use crate::{
    key,
    sniff::{FlowTable, PacketCount, SniffDecider},
    stats::{QueueCounters, WorkerReport, new_histogram},
    xsk::QueueSocket,
};

/// How long a stopping worker waits for the RX ring to stay empty before it
/// exits (the program is detached first, so only frames in flight remain).
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// poll() timeout while idle: bounds how long a stop request waits.
const IDLE_POLL_MS: i32 = 100;

/// Per-worker settings.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    pub batch: u32,
    pub ring_size: u32,
    pub busy_poll: bool,
    pub sniff_limit: Option<u32>,
    pub flow_table_size: NonZeroUsize,
    /// Send a report this often (None: only the last one).
    pub report_every: Option<Duration>,
}

/// Why a worker stopped early.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("queue {queue}: poll on the AF_XDP socket failed: {source}")]
    Poll {
        queue: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Nanoseconds on CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns()` uses.
#[inline]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A worker, ready to run on its own thread.
pub struct Worker {
    socket: QueueSocket,
    core: usize,
    config: WorkerConfig,
    verdicts: VerdictMap,
    reports: Sender<WorkerReport>,
    stop: Arc<AtomicBool>,
    /// The DPI engine deciding flows; None: decide by packet count.
    engine: Option<Arc<dpi::policy::Engine>>,
}

struct State {
    table: FlowTable<SniffDecider>,
    counters: QueueCounters,
    processing_ns: Histogram<u64>,
    kernel_to_user_ns: Histogram<u64>,
    pending_verdicts: Vec<(xdp_redirect::FlowKey, Action)>,
    verdict_error_logged: bool,
}

impl Worker {
    pub fn new(
        socket: QueueSocket,
        core: usize,
        config: WorkerConfig,
        verdicts: VerdictMap,
        reports: Sender<WorkerReport>,
        stop: Arc<AtomicBool>,
        engine: Option<Arc<dpi::policy::Engine>>,
    ) -> Self {
        Worker {
            socket,
            core,
            config,
            verdicts,
            reports,
            stop,
            engine,
        }
    }

    /// Starts the worker thread, named `dp-q<queue>`.
    pub fn spawn(self) -> std::io::Result<thread::JoinHandle<Result<(), WorkerError>>> {
        thread::Builder::new()
            .name(format!("dp-q{}", self.socket.queue))
            .spawn(move || self.run())
    }

    fn run(mut self) -> Result<(), WorkerError> {
        let queue = self.socket.queue;
        if !core_affinity::set_for_current(core_affinity::CoreId { id: self.core }) {
            tracing::warn!(
                queue,
                core = self.core,
                "could not pin the worker to its core; running unpinned"
            );
        }
        let mut state = State {
            table: FlowTable::new(
                self.config.flow_table_size,
                SniffDecider {
                    count: PacketCount {
                        limit: self.config.sniff_limit,
                    },
                    engine: self.engine.clone(),
                },
            ),
            counters: QueueCounters::default(),
            processing_ns: new_histogram(),
            kernel_to_user_ns: new_histogram(),
            pending_verdicts: Vec::with_capacity(self.config.batch as usize),
            verdict_error_logged: false,
        };

        // The fill ring was primed when the socket was opened (xsk::open),
        // before the program was attached, so no early packet finds it empty.
        self.wake_fill_ring()?;

        let mut batch = vec![FrameDesc::default(); self.config.batch as usize];
        let mut next_report = self.config.report_every.map(|every| Instant::now() + every);
        let mut quiet_since: Option<Instant> = None;
        loop {
            // SAFETY: `batch` receives descriptors of this socket's UMEM.
            let n = unsafe { self.socket.rx.consume(&mut batch) };
            if n == 0 {
                if self.stop.load(Ordering::Acquire) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= DRAIN_QUIET {
                        break;
                    }
                } else {
                    quiet_since = None;
                }
                self.report_if_due(&mut state, &mut next_report);
                self.idle()?;
                continue;
            }
            quiet_since = None;
            self.process(&mut state, &batch[..n]);
            self.recycle(&batch[..n])?;
            self.report_if_due(&mut state, &mut next_report);
        }
        self.report(&mut state, true);
        Ok(())
    }

    /// Decodes and accounts each frame of a batch, then writes the batch's verdicts.
    fn process(&mut self, state: &mut State, descs: &[FrameDesc]) {
        let picked_up = monotonic_ns();
        let mut before = Instant::now();
        for desc in descs {
            // SAFETY: the descriptor came off this socket's RX ring, so the
            // frame belongs to this UMEM and the kernel will not touch it until
            // it goes back on the fill ring, after this loop.
            let data = unsafe { self.socket.umem.data(desc) };
            let frame: &[u8] = data.contents();
            self.note_kernel_stamp(state, frame, picked_up);
            state.counters.rx_packets += 1;
            state.counters.rx_bytes += frame.len() as u64;
            match dpi::decode_ethernet(frame) {
                Ok(decoded) => {
                    let seen = state.table.on_packet(&decoded, frame);
                    state.counters.flows_seen += u64::from(seen.new_flow);
                    state.counters.flows_evicted += u64::from(seen.evicted);
                    state.counters.after_verdict_packets += u64::from(seen.after_verdict);
                    state.counters.max_flow_packets = state
                        .counters
                        .max_flow_packets
                        .max(u64::from(seen.flow_packets));
                    if let Some(action) = seen.verdict {
                        state
                            .pending_verdicts
                            .push((key::to_kernel(&decoded.key), action));
                    }
                }
                Err(_) => state.counters.decode_errors += 1,
            }
            let now = Instant::now();
            state
                .processing_ns
                .saturating_record(now.duration_since(before).as_nanos() as u64);
            before = now;
        }
        state.counters.batches += 1;
        for (key, action) in state.pending_verdicts.drain(..) {
            match self.verdicts.set(&key, action) {
                Ok(()) => {
                    state.counters.verdicts_written += 1;
                    state.counters.verdicts_drop += u64::from(action == Action::Drop);
                }
                Err(error) => {
                    state.counters.verdict_errors += 1;
                    if !state.verdict_error_logged {
                        state.verdict_error_logged = true;
                        tracing::warn!(queue = self.socket.queue, %error, "verdict write failed (logged once per worker; counted in verdict_errors)");
                    }
                }
            }
        }
        state.counters.flows_active = state.table.len() as u64;
    }

    /// Records XDP-receive-to-pickup latency from the program's metadata.
    #[inline]
    fn note_kernel_stamp(&self, state: &mut State, frame: &[u8], picked_up: u64) {
        const META: usize = std::mem::size_of::<xdp_redirect::XdpMeta>();
        // SAFETY: the kernel places packet data XDP_PACKET_HEADROOM (256) bytes
        // into the UMEM chunk, and the program writes `struct dp_xdp_meta`
        // right before the data; those 8 bytes are inside the chunk we own
        // while the descriptor is out of the rings. Unaligned read, no write.
        let rx_ns = unsafe { frame.as_ptr().sub(META).cast::<u64>().read_unaligned() };
        if rx_ns != 0 && rx_ns <= picked_up {
            state.kernel_to_user_ns.saturating_record(picked_up - rx_ns);
        }
    }

    /// Gives frames back to the kernel through the fill ring.
    fn recycle(&mut self, descs: &[FrameDesc]) -> Result<(), WorkerError> {
        // Each frame came off the RX ring, which the kernel filled from the
        // fill ring, so the fill ring has room for all of them; retry only
        // covers the kernel not having published its consumer index yet.
        loop {
            // SAFETY: these descriptors belong to this UMEM and are out of every ring.
            if unsafe { self.socket.fill.produce(descs) } == descs.len() {
                break;
            }
            self.wake_fill_ring()?;
        }
        self.wake_fill_ring()
    }

    fn wake_fill_ring(&mut self) -> Result<(), WorkerError> {
        if self.socket.fill.needs_wakeup() {
            let queue = self.socket.queue;
            self.socket
                .fill
                .wakeup(self.socket.rx.fd_mut(), 0)
                .map_err(|source| WorkerError::Poll { queue, source })?;
        }
        Ok(())
    }

    /// Waits for frames: busy-polls the socket, or sleeps in poll().
    fn idle(&mut self) -> Result<(), WorkerError> {
        let queue = self.socket.queue;
        if self.config.busy_poll {
            // A non-blocking recvfrom drives the driver's NAPI loop in busy-poll mode.
            // SAFETY: a zero-length receive on our own socket fd.
            unsafe {
                libc::recvfrom(
                    self.socket.fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            Ok(())
        } else {
            self.socket
                .rx
                .poll(IDLE_POLL_MS)
                .map(|_| ())
                .map_err(|source| WorkerError::Poll { queue, source })
        }
    }

    /// Sends a periodic report when its time has come (checked once per batch or idle turn).
    fn report_if_due(&self, state: &mut State, next_report: &mut Option<Instant>) {
        if let Some(due) = *next_report {
            let now = Instant::now();
            if now >= due {
                self.report(state, false);
                *next_report = self.config.report_every.map(|every| now + every);
            }
        }
    }

    fn report(&self, state: &mut State, last: bool) {
        let xsk = self.socket.statistics().unwrap_or_default();
        let report = WorkerReport {
            queue: self.socket.queue,
            core: self.core,
            counters: state.counters,
            xsk,
            processing_ns: state.processing_ns.clone(),
            kernel_to_user_ns: state.kernel_to_user_ns.clone(),
            last,
        };
        state.processing_ns.reset();
        state.kernel_to_user_ns.reset();
        // The main thread outlives the workers; a send error means it is gone already.
        let _ = self.reports.send(report);
    }
}
