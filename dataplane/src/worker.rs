//! One worker per queue (AF_XDP modes) or per ring (host mode), pinned to its
//! core: takes packets in batches, lends each in place to the decoder and
//! the flow table, writes the verdicts of decided flows to the kernel map
//! (once per batch), and gives AF_XDP frames back: to the fill ring (mirror
//! mode), or to the other port's TX ring (bridge mode, same UMEM, no copy)
//! unless the flow is dropped. In host mode the packets are copies the
//! kernel made into the worker's ring buffer (the originals went to the
//! stack). It also ends idle flows: their kernel entry is removed and a
//! flow record goes to the flow log.
//!
//! Nothing on the per-packet path takes a lock or allocates; stats go to the
//! main thread as periodic [`WorkerReport`]s over a crossbeam channel.

use dpi::reject::Toward;
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
use dpi::defrag::{Defrag, DefragConfig, Outcome as DefragOutcome};
use dpi::engine::{
    Expiry, FlowState, FlowTable, InspectDecider, KernelEntry, PacketCount, PendingVerdicts, Seen,
    VerdictStore, expiry,
};
use dpi::policy::Verdict;
use hdrhistogram::Histogram;
use thiserror::Error;
use xdp_redirect::clock::monotonic_ns;
use xdp_redirect::host::HostRing;
use xdp_redirect::{Action, VerdictMap};
use xsk_rs::FrameDesc;

use crate::{
    flowlog::{EndReason, FlowLogSender, FlowRecord, WallClock, l4_name},
    handoff::{self, Handoffs, Parcel},
    key::KernelVerdicts,
    stats::{QueueCounters, WorkerReport, new_histogram},
    xsk::{QueueSocket, poll_readable},
};

/// How long a stopping worker waits for its input to stay empty before it
/// exits (the program is detached first, so only packets in flight remain).
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// Longest a stopping worker keeps draining while packets still arrive.
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
    pub sniff_limit: Option<u32>,
    pub flow_table_size: NonZeroUsize,
    /// Send a report this often (None: only the last one).
    pub report_every: Option<Duration>,
    /// Inline bridge: frames go out of the other port.
    pub bridge: bool,
    /// Monitor mode on a mirror (SPAN) port: allowed flows are discarded in
    /// XDP instead of handed to the stack.
    pub mirror: bool,
    /// Load balancer with inspection: frames come ready for their backend
    /// (encapsulated or rewritten by XDP) and, unless their flow is
    /// dropped, go out of the port they came in on; the balancer in XDP
    /// carries a flow once its verdict is written.
    pub lb: bool,
    pub timeouts: dpi::table::Timeouts,
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

/// Where a worker's packets come from.
pub enum Input {
    /// The AF_XDP socket(s) of a queue (inline and mirror modes): the
    /// frames themselves, lent in place.
    Xsk(QueueSocket),
    /// Host mode: the worker's ring of copies (the packets went to the stack).
    Host(HostRing),
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
    /// Where eve events go, with `--eve`, and what they share.
    pub eve: Option<(Sender<crate::eve::Event>, crate::eve::EveContext)>,
    /// Where flow exports go, with `--ipfix`, and the active timeout.
    pub ipfix: Option<(crate::ipfix::IpfixSender, Duration)>,
    /// Questions from the main thread (control socket).
    pub queries: crossbeam_channel::Receiver<WorkerQuery>,
    /// Where the worker shows the XDP program it is alive.
    pub heartbeat: Arc<xdp_redirect::pin::Heartbeat>,
    /// AF_XDP modes with several workers: frames go to their flow's worker.
    pub handoff: Option<Arc<Handoffs>>,
}

/// A worker, ready to run on its own thread: its input, and the flows it
/// decides.
pub struct Worker {
    input: Input,
    flows: Flows,
    handoff: Option<Arc<Handoffs>>,
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

/// The worker's side of `--ipfix`.
struct Ipfix {
    tx: crate::ipfix::IpfixSender,
    active_timeout_ns: u64,
    /// When flows running past the active timeout are next looked for.
    next_active_ns: u64,
    /// What was exported so far of flows still running: (flow start,
    /// packets and bytes to server and to client, when).
    exported: std::collections::HashMap<dpi::FlowKey, Exported>,
}

#[derive(Clone, Copy, Debug)]
struct Exported {
    first_ns: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    at_ns: u64,
}

/// Everything a worker knows and decides about its flows, apart from where
/// the packets come from: the flow table, the counters and histograms, the
/// verdicts to write, idle timers, and its links to the rest of the process.
struct Flows {
    /// The queue (AF_XDP) or ring (host mode) this worker serves.
    queue: u32,
    core: usize,
    config: WorkerConfig,
    verdicts: KernelVerdicts,
    reports: Sender<WorkerReport>,
    stop: Arc<AtomicBool>,
    flow_log: Option<FlowLogSender>,
    eve: Option<(Sender<crate::eve::Event>, crate::eve::EveContext)>,
    ipfix: Option<Ipfix>,
    queries: crossbeam_channel::Receiver<WorkerQuery>,
    heartbeat: Arc<xdp_redirect::pin::Heartbeat>,
    table: FlowTable<InspectDecider>,
    counters: QueueCounters,
    processing_ns: Histogram<u64>,
    kernel_to_user_ns: Histogram<u64>,
    /// Verdict writes of this batch, by kind and action.
    pending: PendingVerdicts,
    /// Inline: the answers of a `reject` rule to the packet being judged.
    replies: Vec<(Vec<u8>, Toward)>,
    verdict_error_logged: bool,
    /// Idle checks: (due, flow); a flow's current one matches its `FlowState::check_ns`.
    expiry: BinaryHeap<Reverse<(u64, dpi::FlowKey)>>,
    next_sweep_ns: u64,
    clock: WallClock,
    /// Inline: fragments held (their frames and ports) until their
    /// datagram is whole.
    defrag: Defrag<(FrameDesc, usize)>,
}

impl Worker {
    /// A worker for `input`, whose queue (or ring) number is `queue`.
    pub fn new(
        input: Input,
        queue: u32,
        core: usize,
        config: WorkerConfig,
        verdicts: VerdictMap,
        links: WorkerLinks,
    ) -> Self {
        let now = monotonic_ns();
        let collect_alerts = links.eve.is_some();
        let allow = if config.bridge {
            Action::Forward
        } else if config.mirror {
            // a mirror port's frames are copies: nothing to hand on
            Action::Drop
        } else {
            Action::Pass
        };
        let flows = Flows {
            queue,
            core,
            config,
            verdicts: KernelVerdicts {
                map: verdicts,
                allow,
            },
            reports: links.reports,
            stop: links.stop,
            flow_log: links.flow_log,
            eve: links.eve,
            ipfix: links.ipfix.map(|(tx, active)| Ipfix {
                tx,
                active_timeout_ns: active.as_nanos() as u64,
                next_active_ns: now + active_sweep_ns(active),
                exported: std::collections::HashMap::new(),
            }),
            queries: links.queries,
            heartbeat: links.heartbeat,
            table: FlowTable::new(config.flow_table_size, {
                let mut decider = InspectDecider::new(
                    PacketCount {
                        limit: config.sniff_limit,
                    },
                    links.engine,
                    config.bridge,
                );
                decider.collect_alerts = collect_alerts;
                decider
            }),
            counters: QueueCounters::default(),
            processing_ns: new_histogram(),
            kernel_to_user_ns: new_histogram(),
            pending: PendingVerdicts::default(),
            replies: Vec::new(),
            verdict_error_logged: false,
            expiry: BinaryHeap::new(),
            next_sweep_ns: now + SWEEP_EVERY_NS,
            clock: WallClock::new(now),
            defrag: Defrag::new(DefragConfig::default()),
        };
        Worker {
            input,
            flows,
            handoff: links.handoff,
        }
    }

    /// Starts the worker thread, named `dp-q<queue>`.
    pub fn spawn(self) -> std::io::Result<thread::JoinHandle<Result<(), WorkerError>>> {
        thread::Builder::new()
            .name(format!("dp-q{}", self.flows.queue))
            .spawn(move || self.run())
    }

    fn run(self) -> Result<(), WorkerError> {
        let Worker {
            mut input,
            mut flows,
            handoff,
        } = self;
        let handoff = handoff.as_deref();
        let queue = flows.queue;
        let poll_error = |source| WorkerError::Poll { queue, source };
        if !core_affinity::set_for_current(core_affinity::CoreId { id: flows.core }) {
            tracing::warn!(
                queue,
                core = flows.core,
                "could not pin the worker to its core; running unpinned"
            );
        }
        if let Input::Xsk(socket) = &mut input {
            socket.flush().map_err(poll_error)?;
        }
        let mut batch = vec![FrameDesc::default(); flows.config.batch as usize];
        let mut next_report = flows
            .config
            .report_every
            .map(|every| Instant::now() + every);
        let mut quiet_since: Option<Instant> = None;
        let mut stopping_since: Option<Instant> = None;
        loop {
            flows.heartbeat.beat(queue);
            let received = match &mut input {
                Input::Xsk(socket) => flows
                    .xsk_turn(socket, &mut batch, handoff)
                    .map_err(poll_error)?,
                Input::Host(ring) => flows.host_turn(ring),
            };
            let now = monotonic_ns();
            if now >= flows.next_sweep_ns {
                flows.expire(now);
                flows.next_sweep_ns = now + SWEEP_EVERY_NS;
            }
            if flows
                .ipfix
                .as_ref()
                .is_some_and(|i| now >= i.next_active_ns)
            {
                flows.export_active(now);
            }
            flows.report_if_due(&input, &mut next_report);
            while let Ok(query) = flows.queries.try_recv() {
                flows.answer(query);
            }
            // Traffic may keep coming after a stop (a pinned program stays
            // attached): drain for a bounded time only.
            let stop = flows.stop.load(Ordering::Acquire);
            if stop && stopping_since.get_or_insert_with(Instant::now).elapsed() >= DRAIN_MAX {
                break;
            }
            if received > 0 {
                quiet_since = None;
                continue;
            }
            if stop {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= DRAIN_QUIET {
                    break;
                }
            } else {
                quiet_since = None;
            }
            let me = queue as usize;
            if handoff.is_none_or(|h| h.may_sleep(me)) {
                match &mut input {
                    Input::Xsk(socket) => socket.wait(IDLE_POLL_MS, handoff.map(|h| h.wake_fd(me))),
                    Input::Host(ring) => poll_readable(&[ring.fd()], IDLE_POLL_MS),
                }
                .map_err(poll_error)?;
            }
            if let Some(h) = handoff {
                h.awake(me);
            }
        }
        flows.flush_flows();
        flows.report(&input, true);
        Ok(())
    }
}

impl Flows {
    /// One turn on AF_XDP sockets: frames of this worker's flows that other
    /// workers handed over, then each port's received frames, are inspected
    /// in place and forwarded out of the other port (bridge mode) or
    /// released; a received frame of another worker's flow is handed to it.
    /// Then the rings are flushed and other workers' frames given back.
    /// Returns the frames taken.
    fn xsk_turn(
        &mut self,
        socket: &mut QueueSocket,
        batch: &mut [FrameDesc],
        handoff: Option<&Handoffs>,
    ) -> std::io::Result<usize> {
        let me = self.queue as usize;
        let mut received = 0;
        if let Some(h) = handoff {
            while let Some(desc) = h.returned(me) {
                socket.release(desc);
            }
            let picked_up = monotonic_ns();
            let mut before = Instant::now();
            let mut taken = 0;
            while taken < batch.len() {
                let Some(parcel) = h.receive(me) else {
                    break;
                };
                taken += 1;
                // SAFETY: the sender took the descriptor from its `receive`
                // and gave it up with the parcel; it is ours until routed.
                let frame = unsafe { socket.frame(&parcel.desc) };
                let decoded = self.decode(frame);
                if self.config.bridge && decoded == Err(dpi::DecodeError::Fragment) {
                    self.fragment(
                        socket,
                        parcel.desc,
                        usize::from(parcel.port),
                        picked_up,
                        None,
                    );
                    continue;
                }
                let forward = self.inspect(frame, frame.len(), decoded, picked_up);
                self.route(socket, parcel.desc, usize::from(parcel.port), forward);
                before = self.record_processing(before);
            }
            if taken > 0 {
                received += taken;
                self.counters.handed_in += taken as u64;
                self.end_batch();
            }
        }
        for port in 0..socket.ports() {
            let n = socket.receive(port, batch);
            if n == 0 {
                continue;
            }
            received += n;
            let picked_up = monotonic_ns();
            let mut before = Instant::now();
            for desc in &batch[..n] {
                // SAFETY: `desc` just came from `receive` and is routed or
                // handed over only after the frame's last use below.
                let frame = unsafe { socket.frame(desc) };
                self.note_kernel_stamp(read_meta_stamp(frame), picked_up);
                let decoded = self.decode(frame);
                if self.config.bridge && decoded == Err(dpi::DecodeError::Fragment) {
                    self.fragment(socket, *desc, port, picked_up, handoff);
                    before = self.record_processing(before);
                    continue;
                }
                if let (Some(h), Ok(d)) = (handoff, &decoded) {
                    let owner = handoff::owner(&d.key, h.workers());
                    if owner != me {
                        self.hand_over(socket, h, owner, *desc, port);
                        continue;
                    }
                }
                let forward = self.inspect(frame, frame.len(), decoded, picked_up);
                self.route(socket, *desc, port, forward);
                before = self.record_processing(before);
            }
            self.end_batch();
        }
        if self.defrag.held() > 0 {
            for (desc, _) in self.defrag.expire(monotonic_ns()) {
                self.counters.fragments_dropped += 1;
                socket.release(desc);
            }
        }
        let flushed = socket.flush()?;
        self.counters.tx_packets += flushed.sent;
        self.counters.tx_ring_full += flushed.ring_full;
        if let Some(h) = handoff {
            for (owner, desc) in socket.take_foreign() {
                h.give_back(owner, desc);
            }
        }
        Ok(received)
    }

    /// Inline: one IP fragment. Held until its datagram is whole; then the
    /// datagram is inspected as one packet and every fragment forwarded as
    /// sent, or all dropped. A datagram of a flow another worker owns goes
    /// to that worker fragment by fragment (it reassembles them again and
    /// inspects the datagram with the rest of the flow).
    fn fragment(
        &mut self,
        socket: &mut QueueSocket,
        desc: FrameDesc,
        port: usize,
        now: u64,
        handoff: Option<&Handoffs>,
    ) {
        // SAFETY: `desc` came from `receive` (or a hand-over) and is held,
        // routed or released only after the frame's last use here.
        let frame = unsafe { socket.frame(&desc) };
        let Some(fragment) = dpi::defrag::parse_fragment(frame) else {
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += frame.len() as u64;
            self.counters.decode_errors += 1;
            self.counters.undecodable_dropped += 1;
            socket.release(desc);
            return;
        };
        let (datagram, tokens) = match self.defrag.add(&fragment, (desc, port), now) {
            DefragOutcome::Held => return,
            DefragOutcome::Refused(token, _) => (None, vec![token]),
            DefragOutcome::Discarded(tokens, _) => (None, tokens),
            DefragOutcome::Complete(datagram, tokens) => (Some(datagram), tokens),
        };
        let decoded = datagram.as_ref().map(|d| decode(d, d.len()));
        if let (Some(h), Some(Ok(d))) = (handoff, &decoded) {
            let owner = handoff::owner(&d.key, h.workers());
            if owner != self.queue as usize {
                for (desc, port) in tokens {
                    self.hand_over(socket, h, owner, desc, port);
                }
                return;
            }
        }
        // The fragments count as received here, where they are routed.
        for (desc, _) in &tokens {
            // SAFETY: as above; each held frame is still ours.
            self.counters.rx_bytes += unsafe { socket.frame(desc) }.len() as u64;
        }
        self.counters.rx_packets += tokens.len() as u64;
        let forward = match (datagram, decoded) {
            (Some(datagram), Some(decoded)) => {
                self.counters.datagrams_reassembled += 1;
                self.judge(&datagram, datagram.len(), decoded, now)
            }
            _ => false,
        };
        if !forward {
            self.counters.fragments_dropped += tokens.len() as u64;
        }
        for (desc, port) in tokens {
            self.route(socket, desc, port, forward);
        }
    }

    /// Hands a frame that came in on `port` to the worker that owns its
    /// flow; if that worker's inbox is full, the frame is dropped (like a
    /// full RX ring) and counted.
    fn hand_over(
        &mut self,
        socket: &mut QueueSocket,
        h: &Handoffs,
        owner: usize,
        desc: FrameDesc,
        port: usize,
    ) {
        let parcel = Parcel {
            desc,
            port: port as u8,
        };
        match h.send(owner, parcel) {
            Ok(()) => self.counters.handed_off += 1,
            Err(parcel) => {
                self.counters.handoff_full += 1;
                socket.release(parcel.desc);
            }
        }
    }

    /// Where an inspected frame that came in on `port` goes: out of the
    /// other port (bridge mode, flow not dropped), or back to the free list.
    fn route(&mut self, socket: &mut QueueSocket, desc: FrameDesc, port: usize, forward: bool) {
        if self.config.bridge && forward {
            socket.forward(desc, 1 - port);
        } else if self.config.lb && forward {
            socket.forward(desc, port);
        } else {
            socket.release(desc);
        }
        // What a `reject` rule answers: back out of the port the packet
        // came in on, or on toward its destination.
        for (frame, toward) in self.replies.drain(..) {
            let out = match toward {
                Toward::Sender => port,
                Toward::Receiver => 1 - port,
            };
            if socket.send_new(&frame, out) {
                self.counters.rejects_sent += 1;
            } else {
                self.counters.rejects_unsent += 1;
            }
        }
    }

    /// One turn on the host mode ring: up to a batch of copies, each
    /// inspected in place in the ring and then released. Returns the
    /// copies taken.
    fn host_turn(&mut self, ring: &mut HostRing) -> usize {
        let picked_up = monotonic_ns();
        let mut before = Instant::now();
        let mut received = 0;
        while received < self.config.batch as usize {
            let Some(packet) = ring.take() else {
                break;
            };
            received += 1;
            self.note_kernel_stamp(packet.rx_ns(), picked_up);
            let (data, len) = (packet.data(), packet.len() as usize);
            self.inspect(data, len, decode(data, len), picked_up);
            drop(packet);
            before = self.record_processing(before);
        }
        if received > 0 {
            self.end_batch();
        }
        received
    }

    /// Decodes a frame of an AF_XDP socket: load balancer frames come
    /// encapsulated for their backend (ipip), and are read as the client's
    /// packet inside.
    fn decode(&self, frame: &[u8]) -> Result<dpi::Decoded, dpi::DecodeError> {
        let outer = decode(frame, frame.len())?;
        if self.config.lb
            && let Some(inner) = dpi::tunnel::ip_in_ip(frame, &outer)
        {
            return Ok(inner);
        }
        Ok(outer)
    }

    /// Records one packet's processing time; returns now.
    fn record_processing(&mut self, before: Instant) -> Instant {
        let now = Instant::now();
        self.processing_ns
            .saturating_record(now.duration_since(before).as_nanos() as u64);
        now
    }

    /// Accounts one packet (`frame` is what user space has of it, `wire_len`
    /// its length, `decoded` what [`decode`] made of it), asks the flow
    /// table, and queues the verdict to write. Returns whether the packet may
    /// go on (false: its flow is dropped, or inline, it cannot be read).
    fn inspect(
        &mut self,
        frame: &[u8],
        wire_len: usize,
        decoded: Result<dpi::Decoded, dpi::DecodeError>,
        picked_up: u64,
    ) -> bool {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += wire_len as u64;
        self.counters.cut_packets += u64::from(wire_len > frame.len());
        self.judge(frame, wire_len, decoded, picked_up)
    }

    /// [`Flows::inspect`] without counting the frame as received (a
    /// datagram reassembled from fragments already counted).
    fn judge(
        &mut self,
        frame: &[u8],
        wire_len: usize,
        decoded: Result<dpi::Decoded, dpi::DecodeError>,
        picked_up: u64,
    ) -> bool {
        let Ok(decoded) = decoded else {
            self.counters.decode_errors += 1;
            // Inline, what no parser here can read (the XDP program sends
            // such frames here rather than bridging them) is not let
            // around inspection: dropped, and counted.
            self.counters.undecodable_dropped += u64::from(self.config.bridge);
            return !self.config.bridge;
        };
        if self.config.lb {
            self.lb_new_connection(&decoded.key, frame, picked_up);
        }
        let mut seen = self.table.on_packet(&decoded, frame, wire_len, picked_up);
        if self.eve.is_some() {
            self.eve_packet(&decoded, frame, &seen, picked_up);
        }
        self.counters.flows_seen += u64::from(seen.new_flow);
        self.counters.max_flow_packets = self
            .counters
            .max_flow_packets
            .max(u64::from(seen.flow_packets));
        if seen.new_flow {
            let due = picked_up + self.config.timeouts.check_after(decoded.key.proto);
            if let Some(flow) = self.table.get_mut(&decoded.key) {
                flow.check_ns = due;
            }
            self.expiry.push(Reverse((due, decoded.key)));
        }
        if let Some(anomaly) = seen.discard
            && self.config.bridge
        {
            use dpi::stream::Anomaly;
            let c = &mut self.counters;
            *match anomaly {
                Anomaly::BadChecksum => &mut c.segments_bad_checksum,
                Anomaly::NoAck => &mut c.segments_no_ack,
                Anomaly::OutOfWindow => &mut c.segments_out_of_window,
                Anomaly::HeldFull => &mut c.segments_held_full,
            } += 1;
        }
        if let Some((key, flow)) = seen.evicted.take() {
            self.counters.flows_evicted += 1;
            let kernel = self.kernel_entry_for_record(&key, &flow);
            let ending = Ending {
                reason: EndReason::Evicted,
                end_ns: picked_up,
                split: false,
            };
            self.end_flow(key, flow, kernel, ending);
        }
        if seen.after_verdict.is_some() {
            // In flight while the verdict was written, or the kernel entry
            // was evicted (then `restore`).
            self.counters.after_verdict_packets += 1;
        }
        if let Some(kind) = seen.reject
            && self.config.bridge
        {
            self.replies = dpi::reject::frames(frame, &decoded, kind);
        }
        if self.config.lb {
            if seen.new_flow
                && let Some(flow) = self.table.get_mut(&decoded.key)
            {
                flow.backend = crate::lbframe::backend(frame, &decoded);
            }
            if let Some(kind) = seen.reject {
                self.replies = crate::lbframe::rejects(frame, &decoded, kind, read_lb_meta(frame));
            }
        }
        if seen.verdict.is_some() || seen.after_verdict.is_some() {
            self.pending.note(&decoded.key, &seen)
        } else {
            // Inline, a segment the host would discard goes no further.
            !(self.config.bridge && seen.discard.is_some())
        }
    }

    /// Load balancer: the first packet of a connection a SYN opened
    /// (`DP_LB_META_F_NEW`, whose SYN removed the kernel's verdict of an
    /// earlier connection on the same 5-tuple) ends the flow held under
    /// that key, so the new connection is judged from its own first packet,
    /// not by the old one's verdict.
    fn lb_new_connection(&mut self, key: &dpi::FlowKey, frame: &[u8], now: u64) {
        let meta = read_lb_meta(frame);
        if meta.flags & xdp_redirect::abi::dp_lb_meta_flags::DP_LB_META_F_NEW as u16 == 0 {
            return;
        }
        let Some(flow) = self.table.remove(key) else {
            return;
        };
        self.counters.flows_reused += 1;
        let ending = Ending {
            reason: EndReason::Closed,
            end_ns: flow.last_ns.max(flow.first_ns).min(now),
            split: false,
        };
        // (its kernel entry went with the SYN: no kernel share to add)
        self.end_flow(*key, flow, None, ending);
    }

    /// The eve events of a packet just judged: the alerts it raised, and a
    /// `drop` event if it made the flow dropped (where drops are enforced).
    fn eve_packet(&mut self, decoded: &dpi::Decoded, frame: &[u8], seen: &Seen, now_ns: u64) {
        let alerts = std::mem::take(&mut self.table.decider_mut().alerts);
        let transactions = std::mem::take(&mut self.table.decider_mut().transactions);
        let Some((tx, ctx)) = &self.eve else {
            return;
        };
        let Some(flow) = self.table.get(&decoded.key) else {
            return;
        };
        let key = &decoded.key;
        let mut events: Vec<crate::eve::Event> = transactions
            .iter()
            .map(|t| crate::eve::transaction(ctx, key, flow, decoded.from_a, now_ns, t))
            .collect();
        events.extend(
            alerts
                .iter()
                .filter_map(|a| crate::eve::alert(ctx, key, flow, decoded.from_a, now_ns, a)),
        );
        if seen.verdict == Some(Verdict::Drop) && ctx.enforcing {
            let decided_by = flow.label.as_ref().and_then(|l| l.decided_by);
            events.push(crate::eve::drop(
                ctx, flow, decoded, frame, now_ns, decided_by,
            ));
        }
        for event in events {
            if let Err(TrySendError::Full(_)) = tx.try_send(event) {
                self.counters.eve_dropped += 1;
            }
        }
    }

    /// After a batch: its verdicts go to the kernel.
    fn end_batch(&mut self) {
        self.counters.batches += 1;
        self.write_verdicts();
        self.counters.flows_active = self.table.len() as u64;
    }

    /// Answers a question from the main thread.
    fn answer(&mut self, query: WorkerQuery) {
        match query {
            WorkerQuery::TopFlows { top, reply } => {
                let queue = self.queue;
                let flows = self
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
                            "verdict": flow.decided.map_or("undecided", Verdict::name),
                            "user_packets": flow.packets,
                            "user_bytes": flow.bytes,
                            "queue": queue,
                        })
                    })
                    .collect();
                let _ = reply.send(flows);
            }
            WorkerQuery::Engine(engine) => {
                self.table.decider_mut().engine = Some(engine);
            }
        }
    }

    /// The kernel action for a user-space decision in this mode.
    fn kernel_action(&self, verdict: Verdict) -> Action {
        match verdict {
            Verdict::Drop => Action::Drop,
            _ => self.verdicts.allow,
        }
    }

    /// Writes the batch's verdicts (see [`PendingVerdicts::write`]): drops
    /// in one `BPF_MAP_UPDATE_BATCH`, each "allow" with `BPF_NOEXIST` (the
    /// kernel's batch update has no per-element flags) so that a drop
    /// always wins, restores only where the entry is gone.
    fn write_verdicts(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let report = self.pending.write(&mut self.verdicts);
        let c = &mut self.counters;
        c.verdicts_written += report.written;
        c.verdicts_drop += report.drops;
        c.verdict_conflicts += report.conflicts;
        c.verdicts_rewritten += report.rewritten;
        c.verdict_errors += report.errors;
        if let Some(error) = report.first_error
            && !self.verdict_error_logged
        {
            self.verdict_error_logged = true;
            tracing::warn!(queue = self.queue, %error, "verdict write failed (logged once per worker; counted in verdict_errors)");
        }
    }

    /// Records XDP-receive-to-pickup latency (`rx_ns` 0: not stamped).
    #[inline]
    fn note_kernel_stamp(&mut self, rx_ns: u64, picked_up: u64) {
        if rx_ns != 0 && rx_ns <= picked_up {
            self.kernel_to_user_ns.saturating_record(picked_up - rx_ns);
        }
    }

    /// Ends the flows whose idle check is due and that are idle past their
    /// timeout: the kernel entry goes (its counters into the flow record),
    /// and the flow's next packet is inspected again as a new flow. Flows
    /// still active are checked again when they could next expire.
    fn expire(&mut self, now: u64) {
        let mut ended = 0;
        while let Some(&Reverse((due, key))) = self.expiry.peek() {
            if due > now || ended >= SWEEP_BUDGET {
                break;
            }
            self.expiry.pop();
            let Some(flow) = self.table.get(&key) else {
                continue; // already gone (evicted)
            };
            if flow.check_ns != due {
                continue; // superseded by a later check
            }
            let kernel = self.verdicts.get(&key).ok().flatten();
            let (reason, split, last) =
                match expiry(&key, flow, kernel.as_ref(), &self.config.timeouts, now) {
                    Expiry::CheckAt(next) => {
                        if let Some(flow) = self.table.get_mut(&key) {
                            flow.check_ns = next;
                        }
                        self.expiry.push(Reverse((next, key)));
                        continue;
                    }
                    Expiry::End {
                        reason,
                        split,
                        end_ns,
                    } => (reason, split, end_ns),
                };
            // Read the counters once more right before removing: packets
            // between the check and the delete still count.
            let kernel = if flow.decided.is_some() {
                let last_read = self.verdicts.get(&key).ok().flatten().or(kernel);
                if let Err(error) = self.verdicts.remove(&key) {
                    tracing::warn!(queue = self.queue, %error, "cannot remove an expired verdict");
                }
                last_read
            } else {
                None
            };
            self.counters.flows_split += u64::from(split);
            let flow = self.table.remove(&key).expect("present: checked above");
            let ending = Ending {
                reason,
                end_ns: last,
                split,
            };
            self.end_flow(key, flow, kernel, ending);
            ended += 1;
        }
        self.counters.flows_active = self.table.len() as u64;
    }

    /// The kernel entry of an ending decided flow, for its record: read only
    /// when there is a flow log to write it to (an eviction happens on the
    /// per-packet path, and a lookup is a syscall).
    fn kernel_entry_for_record(&self, key: &dpi::FlowKey, flow: &FlowState) -> Option<KernelEntry> {
        if (self.flow_log.is_none() && self.eve.is_none() && self.ipfix.is_none())
            || flow.decided.is_none()
        {
            return None;
        }
        self.verdicts.get(key).ok().flatten()
    }

    /// Ends every flow still in the table (the data plane is stopping).
    fn flush_flows(&mut self) {
        let now = monotonic_ns();
        for key in self.table.keys() {
            let Some(flow) = self.table.remove(&key) else {
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
            self.end_flow(key, flow, kernel, ending);
        }
        self.counters.flows_active = 0;
    }

    /// Counts an ended flow and sends its record to the flow log.
    fn end_flow(
        &mut self,
        key: dpi::FlowKey,
        flow: FlowState,
        kernel: Option<KernelEntry>,
        ending: Ending,
    ) {
        self.counters.flows_ended += 1;
        if self.ipfix.is_some() {
            let reason = crate::ipfix::Reason::from(ending.reason);
            self.export(&key, &flow, kernel.as_ref(), ending.end_ns, reason);
        }
        if let Some((tx, ctx)) = &self.eve {
            let event = crate::eve::flow(
                ctx,
                &key,
                &flow,
                kernel.as_ref(),
                ending.reason,
                ending.end_ns,
            );
            if let Err(TrySendError::Full(_)) = tx.try_send(event) {
                self.counters.eve_dropped += 1;
            }
        }
        let Some(log) = &self.flow_log else {
            return;
        };
        let mut flow = flow;
        if flow.decided.is_some() && flow.label.as_ref().is_none_or(|l| l.decided_by.is_none()) {
            let mut label = flow.label.take().map(|l| *l).unwrap_or_default();
            label.decided_by = Some("packet-count");
            flow.label = Some(Box::new(label));
        }
        let record = FlowRecord {
            event_type: "flow",
            start: self.clock.rfc3339(flow.first_ns),
            end: self.clock.rfc3339(ending.end_ns.max(flow.first_ns)),
            flow: flow.summary(&key),
            kernel_action: flow.decided.map(|a| self.kernel_action(a).as_str()),
            user_packets: u64::from(flow.packets),
            user_bytes: flow.bytes,
            kernel_packets: kernel.map_or(0, |k| k.packets()),
            kernel_bytes: kernel.map_or(0, |k| k.bytes()),
            reason: ending.reason,
            queue: self.queue,
            split: ending.split,
            backend: flow.backend,
        };
        if let Err(TrySendError::Full(_)) = log.try_send(record) {
            self.counters.flow_log_dropped += 1;
        }
    }

    /// Exports what `flow` carried since its last export (all of it if
    /// none), `kernel` being its verdict entry, up to `end_ns`.
    fn export(
        &mut self,
        key: &dpi::FlowKey,
        flow: &FlowState,
        kernel: Option<&KernelEntry>,
        end_ns: u64,
        reason: crate::ipfix::Reason,
    ) {
        let Some(ipfix) = self.ipfix.as_mut() else {
            return;
        };
        let (packets, bytes) = flow.with_kernel(kernel);
        let before = match reason {
            crate::ipfix::Reason::Active => ipfix.exported.get(key).copied(),
            _ => ipfix.exported.remove(key),
        }
        .filter(|e| e.first_ns == flow.first_ns);
        let (from_ns, delta_p, delta_b) = match before {
            Some(e) => (
                e.at_ns,
                [0, 1].map(|i| packets[i].saturating_sub(e.packets[i])),
                [0, 1].map(|i| bytes[i].saturating_sub(e.bytes[i])),
            ),
            None => (flow.first_ns, packets, bytes),
        };
        if reason == crate::ipfix::Reason::Active {
            ipfix.exported.insert(
                *key,
                Exported {
                    first_ns: flow.first_ns,
                    packets,
                    bytes,
                    at_ns: end_ns,
                },
            );
        }
        if delta_p == [0, 0] {
            return;
        }
        let export = crate::ipfix::FlowExport {
            key: *key,
            client_is_a: flow.client_is_a,
            packets: delta_p,
            bytes: delta_b,
            start_ms: crate::ipfix::epoch_ms(self.clock.at(from_ns)),
            end_ms: crate::ipfix::epoch_ms(self.clock.at(end_ns.max(from_ns))),
            reason,
            application: flow.label.as_ref().map_or("Unknown", |l| l.protocol),
        };
        match ipfix.tx.try_send(export) {
            Ok(()) => self.counters.ipfix_exports += 1,
            Err(TrySendError::Full(_)) => self.counters.ipfix_dropped += 1,
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// IPFIX: exports the flows that ran past the active timeout since
    /// their start or their last export.
    fn export_active(&mut self, now: u64) {
        let Some(ipfix) = self.ipfix.as_mut() else {
            return;
        };
        ipfix.next_active_ns = now + active_sweep_ns(Duration::from_nanos(ipfix.active_timeout_ns));
        let timeout = ipfix.active_timeout_ns;
        let due: Vec<dpi::FlowKey> = self
            .table
            .iter()
            .filter(|(key, flow)| {
                let since = ipfix
                    .exported
                    .get(*key)
                    .filter(|e| e.first_ns == flow.first_ns)
                    .map_or(flow.first_ns, |e| e.at_ns);
                now.saturating_sub(since) >= timeout
            })
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let Some(flow) = self.table.get(&key).cloned() else {
                continue;
            };
            let kernel = if flow.decided.is_some() {
                self.verdicts.get(&key).ok().flatten()
            } else {
                None
            };
            self.export(
                &key,
                &flow,
                kernel.as_ref(),
                now,
                crate::ipfix::Reason::Active,
            );
        }
    }

    /// Sends a periodic report when its time has come (checked once per batch or idle turn).
    fn report_if_due(&mut self, input: &Input, next_report: &mut Option<Instant>) {
        if let Some(due) = *next_report {
            let now = Instant::now();
            if now >= due {
                self.report(input, false);
                *next_report = self.config.report_every.map(|every| now + every);
            }
        }
    }

    fn report(&mut self, input: &Input, last: bool) {
        let xsk = match input {
            Input::Xsk(socket) => socket.statistics().unwrap_or_default(),
            Input::Host(_) => Default::default(),
        };
        let report = WorkerReport {
            queue: self.queue,
            core: self.core,
            counters: self.counters,
            xsk,
            processing_ns: self.processing_ns.clone(),
            kernel_to_user_ns: self.kernel_to_user_ns.clone(),
            last,
        };
        self.processing_ns.reset();
        self.kernel_to_user_ns.reset();
        // The main thread outlives the workers; a send error means it is gone already.
        let _ = self.reports.send(report);
    }
}

/// How often flows past the IPFIX active timeout are looked for: a tenth
/// of it, at least once a second (a look walks the flow table).
fn active_sweep_ns(active: Duration) -> u64 {
    (active.as_nanos() as u64 / 10).max(1_000_000_000)
}

/// Decodes a packet of which user space has `frame` and whose length is
/// `wire_len` (longer when the copy was cut at the snap length).
fn decode(frame: &[u8], wire_len: usize) -> Result<dpi::Decoded, dpi::DecodeError> {
    if wire_len > frame.len() {
        dpi::decode_ethernet_cut(frame)
    } else {
        dpi::decode_ethernet(frame)
    }
}

/// Load balancer: what the XDP program put in front of a frame
/// (`struct dp_lb_meta`, before `struct dp_xdp_meta`) before rewriting it
/// for the backend: the MAC it came from and the VIP.
fn read_lb_meta(frame: &[u8]) -> xdp_redirect::LbMeta {
    const META: usize =
        std::mem::size_of::<xdp_redirect::XdpMeta>() + std::mem::size_of::<xdp_redirect::LbMeta>();
    // SAFETY: as in `read_meta_stamp`: 32 bytes before the data, inside the
    // chunk's headroom that we own while the descriptor is out of the rings.
    unsafe {
        frame
            .as_ptr()
            .sub(META)
            .cast::<xdp_redirect::LbMeta>()
            .read_unaligned()
    }
}

/// The receive time the XDP program put in front of a frame it redirected
/// (`struct dp_xdp_meta`), 0 if none.
#[inline]
fn read_meta_stamp(frame: &[u8]) -> u64 {
    const META: usize = std::mem::size_of::<xdp_redirect::XdpMeta>();
    // SAFETY: the kernel places packet data XDP_PACKET_HEADROOM (256) bytes
    // into the UMEM chunk, and the program writes `struct dp_xdp_meta`
    // right before the data; those 8 bytes are inside the chunk we own
    // while the descriptor is out of the rings. Unaligned read, no write.
    unsafe { frame.as_ptr().sub(META).cast::<u64>().read_unaligned() }
}
