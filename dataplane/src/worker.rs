//! One worker per RX queue, pinned to its core: takes frames from the
//! socket's RX ring in batches, lends each frame in place to the decoder and
//! the flow table, writes the verdicts of decided flows to the kernel map
//! (once per batch), and gives the frames back: to the fill ring (monitor
//! mode), or to the other port's TX ring (bridge mode, same UMEM, no copy)
//! unless the flow is dropped. It also ends idle flows: their kernel entry is
//! removed and a flow record goes to the flow log.
//!
//! Nothing on the per-packet path takes a lock or allocates; stats go to the
//! main thread as periodic [`WorkerReport`]s over a crossbeam channel.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{Sender, TrySendError};
use hdrhistogram::Histogram;
use thiserror::Error;
use xdp_redirect::clock::monotonic_ns;
use xdp_redirect::{Action, VerdictMap, abi::dp_verdict_flags::DP_VERDICT_F_CLOSING};
use xsk_rs::FrameDesc;

use crate::{
    flowlog::{EndReason, FlowLogSender, FlowRecord, FlowTimeouts, WallClock, l4_name},
    key,
    sniff::{FlowState, FlowTable, PacketCount, SniffDecider},
    stats::{QueueCounters, WorkerReport, new_histogram},
    xsk::QueueSocket,
};

/// How long a stopping worker waits for the RX rings to stay empty before it
/// exits (the program is detached first, so only frames in flight remain).
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// Longest a stopping worker keeps draining while frames still arrive.
const DRAIN_MAX: Duration = Duration::from_secs(1);
/// poll() timeout while idle: bounds how long a stop request waits.
const IDLE_POLL_MS: i32 = 100;
/// How often a worker looks for flows past their idle timeout.
const SWEEP_EVERY_NS: u64 = 100_000_000;
/// Most flows ended in one sweep, so a mass expiry cannot stall the RX path.
const SWEEP_BUDGET: usize = 4096;

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
    /// Inline bridge: frames go out of the other port.
    pub bridge: bool,
    /// Monitor mode on a mirror (SPAN) port: allowed flows are discarded in
    /// XDP instead of handed to the stack.
    pub mirror: bool,
    pub timeouts: FlowTimeouts,
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

/// Verdicts to write at the end of an RX batch, grouped so that each group
/// is one `BPF_MAP_UPDATE_BATCH` syscall.
#[derive(Default)]
struct PendingVerdicts {
    /// Flows just decided "drop": overwrite whatever is there.
    drop: Vec<xdp_redirect::FlowKey>,
    /// Flows just decided "allow": never replace an existing verdict.
    allow: Vec<xdp_redirect::FlowKey>,
    /// Decided flows whose packets came back long after the verdict: put the
    /// entry back if the map's LRU evicted it (no-op if it is there).
    restore_drop: Vec<xdp_redirect::FlowKey>,
    restore_allow: Vec<xdp_redirect::FlowKey>,
}

/// The two ports of a queue: the `--iface` socket and, in bridge mode, the
/// `--peer` socket (sharing the UMEM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Primary = 0,
    Peer = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Primary => Side::Peer,
            Side::Peer => Side::Primary,
        }
    }
}

/// What the main thread can ask a worker, checked once per loop turn.
pub enum WorkerQuery {
    /// The `top` flows by user-space packets, as JSON objects.
    TopFlows {
        top: usize,
        reply: Sender<Vec<serde_json::Value>>,
    },
    /// Decide flows with this engine from now on (rules reload).
    Engine(Arc<dpi::policy::Engine>),
}

/// What a worker shares with the rest of the process.
pub struct WorkerLinks {
    /// Periodic reports to the main thread.
    pub reports: Sender<WorkerReport>,
    /// Set by the main thread to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// The DPI engine deciding flows; None: decide by packet count.
    pub engine: Option<Arc<dpi::policy::Engine>>,
    /// Where ended flows go, with `--flow-log`.
    pub flow_log: Option<FlowLogSender>,
    /// Questions from the main thread (control socket).
    pub queries: crossbeam_channel::Receiver<WorkerQuery>,
    /// Where the worker shows the XDP program it is alive.
    pub heartbeat: Arc<xdp_redirect::pin::Heartbeat>,
}

/// A worker, ready to run on its own thread.
pub struct Worker {
    socket: QueueSocket,
    core: usize,
    config: WorkerConfig,
    verdicts: VerdictMap,
    reports: Sender<WorkerReport>,
    stop: Arc<AtomicBool>,
    engine: Option<Arc<dpi::policy::Engine>>,
    flow_log: Option<FlowLogSender>,
    queries: crossbeam_channel::Receiver<WorkerQuery>,
    heartbeat: Arc<xdp_redirect::pin::Heartbeat>,
}

/// How a flow ended, for its record.
#[derive(Clone, Copy, Debug)]
struct Ending {
    reason: EndReason,
    /// CLOCK_MONOTONIC ns of the flow's last packet (or the eviction).
    end_ns: u64,
    /// Only one direction reached this queue (see `FlowRecord::split`).
    split: bool,
}

struct State {
    table: FlowTable<SniffDecider>,
    counters: QueueCounters,
    processing_ns: Histogram<u64>,
    kernel_to_user_ns: Histogram<u64>,
    /// Verdict writes of this batch, by kind and action.
    pending: PendingVerdicts,
    verdict_error_logged: bool,
    /// Frames owned by the worker, on no ring.
    free: Vec<FrameDesc>,
    /// Frames on each port's fill ring or being filled by the kernel.
    in_fill: [u32; 2],
    /// Frames to send out of each port (bridge mode).
    to_tx: [Vec<FrameDesc>; 2],
    /// Scratch for completion-ring reads.
    completed: Vec<FrameDesc>,
    /// Idle checks: (due, flow); a flow's current one matches its `FlowState::check_ns`.
    expiry: BinaryHeap<Reverse<(u64, dpi::FlowKey)>>,
    next_sweep_ns: u64,
    clock: WallClock,
}

impl Worker {
    pub fn new(
        socket: QueueSocket,
        core: usize,
        config: WorkerConfig,
        verdicts: VerdictMap,
        links: WorkerLinks,
    ) -> Self {
        Worker {
            socket,
            core,
            config,
            verdicts,
            reports: links.reports,
            stop: links.stop,
            engine: links.engine,
            flow_log: links.flow_log,
            queries: links.queries,
            heartbeat: links.heartbeat,
        }
    }

    /// Starts the worker thread, named `dp-q<queue>`.
    pub fn spawn(self) -> std::io::Result<thread::JoinHandle<Result<(), WorkerError>>> {
        thread::Builder::new()
            .name(format!("dp-q{}", self.socket.queue))
            .spawn(move || self.run())
    }

    fn sides(&self) -> &'static [Side] {
        if self.socket.peer.is_some() {
            &[Side::Primary, Side::Peer]
        } else {
            &[Side::Primary]
        }
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
        let now = monotonic_ns();
        let ring = self.config.ring_size;
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
            pending: PendingVerdicts::default(),
            verdict_error_logged: false,
            free: std::mem::take(&mut self.socket.free_frames),
            // xsk::open primed every fill ring with ring_size frames
            in_fill: [ring, if self.socket.peer.is_some() { ring } else { 0 }],
            to_tx: [
                Vec::with_capacity(self.config.batch as usize),
                Vec::with_capacity(self.config.batch as usize),
            ],
            completed: vec![FrameDesc::default(); ring as usize],
            expiry: BinaryHeap::new(),
            next_sweep_ns: now + SWEEP_EVERY_NS,
            clock: WallClock::new(now),
        };
        for &side in self.sides() {
            self.wake_fill_ring(side)?;
        }

        let mut batch = vec![FrameDesc::default(); self.config.batch as usize];
        let mut next_report = self.config.report_every.map(|every| Instant::now() + every);
        let mut quiet_since: Option<Instant> = None;
        let mut stopping_since: Option<Instant> = None;
        loop {
            self.heartbeat.beat(queue);
            let mut received = 0;
            for &side in self.sides() {
                let rx = match side {
                    Side::Primary => &mut self.socket.rx,
                    Side::Peer => &mut self.socket.peer.as_mut().expect("bridge").rx,
                };
                // SAFETY: `batch` receives descriptors of this socket's UMEM.
                let n = unsafe { rx.consume(&mut batch) };
                if n > 0 {
                    received += n;
                    self.process(&mut state, side, &batch[..n]);
                }
            }
            if self.config.bridge {
                self.transmit(&mut state)?;
                self.reap_completions(&mut state);
            }
            self.refill(&mut state)?;
            let now = monotonic_ns();
            if now >= state.next_sweep_ns {
                self.expire(&mut state, now);
                state.next_sweep_ns = now + SWEEP_EVERY_NS;
            }
            self.report_if_due(&mut state, &mut next_report);
            while let Ok(query) = self.queries.try_recv() {
                self.answer(&mut state, query);
            }
            // Traffic may keep coming after a stop (a pinned program stays
            // attached): drain for a bounded time only.
            if self.stop.load(Ordering::Acquire)
                && stopping_since.get_or_insert_with(Instant::now).elapsed() >= DRAIN_MAX
            {
                break;
            }
            if received > 0 {
                quiet_since = None;
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= DRAIN_QUIET {
                    break;
                }
            } else {
                quiet_since = None;
            }
            self.idle(&state)?;
        }
        self.flush_flows(&mut state);
        self.report(&mut state, true);
        Ok(())
    }

    /// Answers a question from the main thread.
    fn answer(&mut self, state: &mut State, query: WorkerQuery) {
        match query {
            WorkerQuery::TopFlows { top, reply } => {
                let flows = state
                    .table
                    .top(top)
                    .into_iter()
                    .map(|(key, flow)| {
                        let (client, server) = if flow.client_is_a {
                            (key.a(), key.b())
                        } else {
                            (key.b(), key.a())
                        };
                        let label = flow.label.as_deref();
                        serde_json::json!({
                            "src": client.to_string(),
                            "dst": server.to_string(),
                            "l4": l4_name(key.proto),
                            "protocol": label.map_or("Unknown", |l| l.protocol),
                            "host": label.and_then(|l| l.host.clone()),
                            "verdict": match flow.decided {
                                None => "undecided",
                                Some(Action::Drop) => "drop",
                                Some(_) => "allow",
                            },
                            "user_packets": flow.packets,
                            "user_bytes": flow.bytes,
                            "queue": self.socket.queue,
                        })
                    })
                    .collect();
                let _ = reply.send(flows);
            }
            WorkerQuery::Engine(engine) => {
                state.table.decider_mut().engine = Some(engine);
            }
        }
    }

    /// The kernel action for a user-space decision in this mode.
    fn kernel_action(&self, action: Action) -> Action {
        match action {
            Action::Pass if self.config.bridge => Action::Forward,
            // a mirror port's frames are copies: nothing to hand on
            Action::Pass if self.config.mirror => Action::Drop,
            other => other,
        }
    }

    /// Decodes and accounts each frame of a batch from `side`, then writes the
    /// batch's verdicts. Frames to forward go on the other port's TX list,
    /// the rest back to the free list.
    fn process(&mut self, state: &mut State, side: Side, descs: &[FrameDesc]) {
        let picked_up = monotonic_ns();
        let mut before = Instant::now();
        state.in_fill[side as usize] -= descs.len() as u32;
        for desc in descs {
            // SAFETY: the descriptor came off one of this UMEM's RX rings, so
            // the frame is ours until we put it on a fill or TX ring, after
            // this loop.
            let data = unsafe { self.socket.umem.data(desc) };
            let frame: &[u8] = data.contents();
            self.note_kernel_stamp(state, frame, picked_up);
            state.counters.rx_packets += 1;
            state.counters.rx_bytes += frame.len() as u64;
            let forward = match dpi::decode_ethernet(frame) {
                Ok(decoded) => {
                    let seen = state.table.on_packet(&decoded, frame, picked_up);
                    state.counters.flows_seen += u64::from(seen.new_flow);
                    state.counters.max_flow_packets = state
                        .counters
                        .max_flow_packets
                        .max(u64::from(seen.flow_packets));
                    if seen.new_flow {
                        let due = picked_up + self.config.timeouts.check_after(decoded.key.proto);
                        if let Some(flow) = state.table.get_mut(&decoded.key) {
                            flow.check_ns = due;
                        }
                        state.expiry.push(Reverse((due, decoded.key)));
                    }
                    if let Some((key, flow)) = seen.evicted {
                        state.counters.flows_evicted += 1;
                        let kernel = self.kernel_entry_for_record(&key, &flow);
                        let ending = Ending {
                            reason: EndReason::Evicted,
                            end_ns: picked_up,
                            split: false,
                        };
                        self.end_flow(state, key, flow, kernel, ending);
                    }
                    if let Some(action) = seen.verdict {
                        let list = match action {
                            Action::Drop => &mut state.pending.drop,
                            _ => &mut state.pending.allow,
                        };
                        list.push(key::to_kernel(&decoded.key));
                        action != Action::Drop
                    } else if let Some(action) = seen.after_verdict {
                        // In flight while the verdict was written, or the
                        // kernel entry was evicted (then `restore`).
                        state.counters.after_verdict_packets += 1;
                        if seen.restore {
                            let list = match action {
                                Action::Drop => &mut state.pending.restore_drop,
                                _ => &mut state.pending.restore_allow,
                            };
                            list.push(key::to_kernel(&decoded.key));
                        }
                        action != Action::Drop
                    } else {
                        true
                    }
                }
                Err(_) => {
                    state.counters.decode_errors += 1;
                    true
                }
            };
            if self.config.bridge && forward {
                state.to_tx[side.other() as usize].push(*desc);
            } else {
                state.free.push(*desc);
            }
            let now = Instant::now();
            state
                .processing_ns
                .saturating_record(now.duration_since(before).as_nanos() as u64);
            before = now;
        }
        state.counters.batches += 1;
        self.write_verdicts(state);
        state.counters.flows_active = state.table.len() as u64;
    }

    /// Writes the batch's verdicts: "drop" overwrites, all of the batch's
    /// drops in one syscall; "allow" never replaces an existing verdict (so
    /// drop wins when two workers see the two directions of a flow), one
    /// `BPF_NOEXIST` write per decided flow, as the kernel's batch update
    /// has no per-element flags; restores only fill a missing entry.
    fn write_verdicts(&mut self, state: &mut State) {
        let queue = self.socket.queue;
        let failed = |state: &mut State, n: u64, error: xdp_redirect::Error| {
            state.counters.verdict_errors += n;
            if !state.verdict_error_logged {
                state.verdict_error_logged = true;
                tracing::warn!(queue, %error, "verdict write failed (logged once per worker; counted in verdict_errors)");
            }
        };
        if !state.pending.drop.is_empty() {
            match self.verdicts.set_batch(&state.pending.drop, Action::Drop) {
                Ok(n) => {
                    state.counters.verdicts_written += n as u64;
                    state.counters.verdicts_drop += n as u64;
                }
                Err(error) => failed(state, state.pending.drop.len() as u64, error),
            }
            state.pending.drop.clear();
        }
        let allow = self.kernel_action(Action::Pass);
        let mut pending = std::mem::take(&mut state.pending);
        let groups = [
            (&mut pending.allow, allow, false),
            (&mut pending.restore_drop, Action::Drop, true),
            (&mut pending.restore_allow, allow, true),
        ];
        for (keys, action, restore) in groups {
            for key in keys.drain(..) {
                match (self.verdicts.set_if_absent(&key, action), restore) {
                    (Ok(written), true) => state.counters.verdicts_rewritten += u64::from(written),
                    (Ok(true), false) => state.counters.verdicts_written += 1,
                    (Ok(false), false) => state.counters.verdict_conflicts += 1,
                    (Err(error), _) => failed(state, 1, error),
                }
            }
        }
        state.pending = pending;
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

    /// Puts the frames to forward on the TX rings and kicks the kernel.
    /// A full TX ring drops the frames (counted): the bridge never waits.
    fn transmit(&mut self, state: &mut State) -> Result<(), WorkerError> {
        for side in [Side::Primary, Side::Peer] {
            let frames = &mut state.to_tx[side as usize];
            if frames.is_empty() {
                continue;
            }
            let tx = match side {
                Side::Primary => &mut self.socket.tx,
                Side::Peer => &mut self.socket.peer.as_mut().expect("bridge").tx,
            };
            // SAFETY: the frames belong to this UMEM (shared by both sockets)
            // and are on no ring; each is on one list only.
            let mut sent = unsafe { tx.produce(frames) };
            if sent == 0 {
                // The ring may be full of frames the kernel has not sent yet.
                let _ = tx.wakeup();
                // SAFETY: as above.
                sent = unsafe { tx.produce(frames) };
            }
            if sent == 0 {
                state.counters.tx_ring_full += frames.len() as u64;
                state.free.append(frames);
                continue;
            }
            state.counters.tx_packets += sent as u64;
            // Copy mode sends at most 32 frames per sendto (TX_BATCH_SIZE).
            let kicks = sent.div_ceil(32);
            let queue = self.socket.queue;
            for _ in 0..kicks {
                tx.wakeup()
                    .map_err(|source| WorkerError::Poll { queue, source })?;
            }
            frames.clear();
        }
        Ok(())
    }

    /// Frames the kernel has sent come back to the free list.
    fn reap_completions(&mut self, state: &mut State) {
        let State {
            completed, free, ..
        } = state;
        // SAFETY: `completed` receives descriptors of this UMEM.
        let n = unsafe { self.socket.comp.consume(completed) };
        free.extend_from_slice(&completed[..n]);
        if let Some(peer) = &mut self.socket.peer {
            // SAFETY: as above; the peer shares this UMEM.
            let n = unsafe { peer.comp.consume(completed) };
            free.extend_from_slice(&completed[..n]);
        }
    }

    /// Tops the fill rings up from the free list.
    fn refill(&mut self, state: &mut State) -> Result<(), WorkerError> {
        for &side in self.sides() {
            let room = self.config.ring_size - state.in_fill[side as usize];
            let n = (room as usize).min(state.free.len());
            if n > 0 {
                let from = state.free.len() - n;
                let fill = match side {
                    Side::Primary => &mut self.socket.fill,
                    Side::Peer => &mut self.socket.peer.as_mut().expect("bridge").fill,
                };
                // SAFETY: these descriptors belong to this UMEM and are out
                // of every ring; `in_fill` bounds them to the ring's free room.
                if unsafe { fill.produce(&state.free[from..]) } == n {
                    state.free.truncate(from);
                    state.in_fill[side as usize] += n as u32;
                }
            }
            self.wake_fill_ring(side)?;
        }
        Ok(())
    }

    fn wake_fill_ring(&mut self, side: Side) -> Result<(), WorkerError> {
        let (fill, rx) = match side {
            Side::Primary => (&mut self.socket.fill, &mut self.socket.rx),
            Side::Peer => {
                let peer = self.socket.peer.as_mut().expect("bridge");
                (&mut peer.fill, &mut peer.rx)
            }
        };
        if fill.needs_wakeup() {
            let queue = self.socket.queue;
            fill.wakeup(rx.fd_mut(), 0)
                .map_err(|source| WorkerError::Poll { queue, source })?;
        }
        Ok(())
    }

    /// Waits for frames: busy-polls the socket(s), or sleeps in poll(). In
    /// bridge mode with frames still on a TX ring, only yields briefly, so
    /// completions come back soon.
    fn idle(&mut self, state: &State) -> Result<(), WorkerError> {
        let queue = self.socket.queue;
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut both = [pollfd(self.socket.fd()), pollfd(-1)];
        let fds = match &self.socket.peer {
            Some(peer) => {
                both[1] = pollfd(peer.fd());
                &mut both[..]
            }
            None => &mut both[..1],
        };
        if self.config.busy_poll {
            for pfd in fds.iter() {
                // A non-blocking recvfrom drives the driver's NAPI loop in busy-poll mode.
                // SAFETY: a zero-length receive on our own socket fd.
                unsafe {
                    libc::recvfrom(
                        pfd.fd,
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
        let owned = state.free.len() + (state.in_fill[0] + state.in_fill[1]) as usize;
        let total = self.config.ring_size as usize * 2 * fds.len();
        let frames_out = self.config.bridge && owned < total;
        let timeout = if frames_out { 1 } else { IDLE_POLL_MS };
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            let source = std::io::Error::last_os_error();
            if source.kind() != std::io::ErrorKind::Interrupted {
                return Err(WorkerError::Poll { queue, source });
            }
        }
        Ok(())
    }

    /// Ends the flows whose idle check is due and that are idle past their
    /// timeout: the kernel entry goes (its counters into the flow record),
    /// and the flow's next packet is inspected again as a new flow. Flows
    /// still active are checked again when they could next expire.
    fn expire(&mut self, state: &mut State, now: u64) {
        let mut ended = 0;
        while let Some(&Reverse((due, key))) = state.expiry.peek() {
            if due > now || ended >= SWEEP_BUDGET {
                break;
            }
            state.expiry.pop();
            let Some(flow) = state.table.get(&key) else {
                continue; // already gone (evicted)
            };
            if flow.check_ns != due {
                continue; // superseded by a later check
            }
            let kkey = key::to_kernel(&key);
            let kernel = self.verdicts.get(&kkey).ok().flatten();
            // An undecided flow with a kernel verdict: its other direction
            // reached another queue, whose worker decided it and owns the
            // kernel entry (asymmetric RSS). Only this half ends here.
            let split = flow.decided.is_none() && kernel.is_some();
            // A split half closes with the flow (the flag is per flow), but
            // its idle time is its own.
            let closing =
                flow.closing || kernel.is_some_and(|k| k.flags & DP_VERDICT_F_CLOSING != 0);
            let kernel = if split { None } else { kernel };
            let last = flow.last_ns.max(kernel.map_or(0, |k| k.last_seen_ns));
            let idle_until = last + self.config.timeouts.for_flow(key.proto, closing);
            if idle_until > now {
                let next = idle_until.min(last + self.config.timeouts.check_after(key.proto));
                let next = next.max(now + 1);
                if let Some(flow) = state.table.get_mut(&key) {
                    flow.check_ns = next;
                }
                state.expiry.push(Reverse((next, key)));
                continue;
            }
            // Read the counters once more right before removing: packets
            // between the check and the delete still count.
            let kernel = if flow.decided.is_some() {
                let last_read = self.verdicts.get(&kkey).ok().flatten().or(kernel);
                if let Err(error) = self.verdicts.remove(&kkey) {
                    tracing::warn!(queue = self.socket.queue, %error, "cannot remove an expired verdict");
                }
                last_read
            } else {
                None
            };
            state.counters.flows_split += u64::from(split);
            let flow = state.table.remove(&key).expect("present: checked above");
            let reason = if closing {
                EndReason::Closed
            } else {
                EndReason::Timeout
            };
            let ending = Ending {
                reason,
                end_ns: last,
                split,
            };
            self.end_flow(state, key, flow, kernel, ending);
            ended += 1;
        }
        state.counters.flows_active = state.table.len() as u64;
    }

    /// The kernel entry of an ending decided flow, for its record: read only
    /// when there is a flow log to write it to (an eviction happens on the
    /// per-packet path, and a lookup is a syscall).
    fn kernel_entry_for_record(
        &self,
        key: &dpi::FlowKey,
        flow: &FlowState,
    ) -> Option<xdp_redirect::Verdict> {
        if self.flow_log.is_none() || flow.decided.is_none() {
            return None;
        }
        self.verdicts.get(&key::to_kernel(key)).ok().flatten()
    }

    /// Ends every flow still in the table (the data plane is stopping).
    fn flush_flows(&mut self, state: &mut State) {
        let now = monotonic_ns();
        for key in state.table.keys() {
            let Some(flow) = state.table.remove(&key) else {
                continue;
            };
            let kernel = self.kernel_entry_for_record(&key, &flow);
            let end = flow
                .last_ns
                .max(kernel.map_or(0, |k| k.last_seen_ns))
                .min(now);
            let ending = Ending {
                reason: EndReason::Shutdown,
                end_ns: end,
                split: false,
            };
            self.end_flow(state, key, flow, kernel, ending);
        }
        state.counters.flows_active = 0;
    }

    /// Counts an ended flow and sends its record to the flow log.
    fn end_flow(
        &self,
        state: &mut State,
        key: dpi::FlowKey,
        flow: FlowState,
        kernel: Option<xdp_redirect::Verdict>,
        ending: Ending,
    ) {
        state.counters.flows_ended += 1;
        let Some(log) = &self.flow_log else {
            return;
        };
        let (client, server) = if flow.client_is_a {
            (key.a(), key.b())
        } else {
            (key.b(), key.a())
        };
        let label = flow.label.as_deref();
        let record = FlowRecord {
            event_type: "flow",
            start: state.clock.rfc3339(flow.first_ns),
            end: state.clock.rfc3339(ending.end_ns.max(flow.first_ns)),
            src: client.ip(),
            sport: client.port(),
            dst: server.ip(),
            dport: server.port(),
            l4: l4_name(key.proto),
            vlan: key.vlan,
            protocol: label.map_or("Unknown", |l| l.protocol),
            host: label.and_then(|l| l.host.clone()),
            sids: label.map(|l| l.sids.clone()).unwrap_or_default(),
            verdict: match flow.decided {
                None => "undecided",
                Some(Action::Drop) => "drop",
                Some(_) => "allow",
            },
            kernel_action: flow.decided.map(|a| self.kernel_action(a).as_str()),
            decided_by: label
                .and_then(|l| l.decided_by)
                .or(flow.decided.map(|_| "packet-count")),
            user_packets: u64::from(flow.packets),
            user_bytes: flow.bytes,
            kernel_packets: kernel.map_or(0, |k| k.packets),
            kernel_bytes: kernel.map_or(0, |k| k.bytes),
            reason: ending.reason,
            queue: self.socket.queue,
            split: ending.split,
        };
        if let Err(TrySendError::Full(_)) = log.try_send(record) {
            state.counters.flow_log_dropped += 1;
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
