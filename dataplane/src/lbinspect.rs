//! `--lb` with services that say `inspect = true`: the AF_XDP sockets and
//! pinned workers that read a balanced connection's first data packets.
//!
//! The XDP program balances the handshake as for any service; an undecided
//! connection's data packets come to the worker of their queue already
//! made ready for the backend (encapsulated, or rewritten in nat mode). The
//! worker runs them through the DPI engine (the run's rules and policy) and
//! sends each allowed one out of the interface it came in on, from the same
//! UMEM frame; the flow's verdict goes to the verdict map, where the XDP
//! program finds it: a dropped flow ends there, an allowed one is balanced
//! in the kernel alone from then on.

use std::{
    collections::BTreeMap,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};
use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};
use xdp_redirect::{Port, XdpRedirect};

use crate::{
    cli::RunArgs,
    flowlog::{FlowLog, JsonLog},
    preflight::Plan,
    stats::{QueueCounters, WorkerReport},
    worker::{Input, Worker, WorkerConfig, WorkerError, WorkerLinks, WorkerQuery},
    xsk,
};

/// The running workers of an inspecting balancer.
pub struct Inspection {
    stop: Arc<AtomicBool>,
    handles: Vec<(u32, JoinHandle<Result<(), WorkerError>>)>,
    reports: Receiver<WorkerReport>,
    /// The latest counters of each queue's worker, and when they came.
    latest: BTreeMap<u32, QueueCounters>,
    reported: BTreeMap<u32, std::time::Instant>,
    started: std::time::Instant,
    queries: Vec<Sender<WorkerQuery>>,
    engine: Option<Arc<dpi::policy::Engine>>,
    flow_log: Option<JsonLog>,
    /// `copy` or `zero-copy`.
    pub bind_mode: &'static str,
}

impl Inspection {
    /// Opens a socket per queue of `plan`, registers them with `program`
    /// (not attached yet) and starts the workers.
    pub fn start(
        args: &RunArgs,
        plan: &Plan,
        program: &mut XdpRedirect,
        engine: Arc<dpi::policy::Engine>,
    ) -> anyhow::Result<Inspection> {
        let (flow_log, flow_log_tx) = match &args.flow_log {
            Some(path) => {
                let (log, tx) = FlowLog::start(path)?;
                (Some(log), Some(tx))
            }
            None => (None, None),
        };
        let sockets = xsk::open_all(
            &args.xsk_config(),
            &args.iface,
            &plan.driver,
            plan.queues,
            None,
        )?;
        for socket in &sockets {
            program.register_socket(Port::Primary, socket.queue, socket.fd())?;
        }
        let bind_mode = sockets
            .first()
            .map_or(xsk::BindMode::Copy, |s| s.bind_mode)
            .as_str();
        let heartbeat = Arc::new(program.heartbeat()?);
        for queue in 0..plan.queues {
            heartbeat.beat(queue);
        }
        let config = WorkerConfig {
            batch: args.batch,
            sniff_limit: args.sniff_limit(),
            flow_table_size: NonZeroUsize::new(args.flow_table_size as usize)
                .context("--flow-table-size must be positive")?,
            report_every: Some(Duration::from_secs(1)),
            bridge: false,
            mirror: false,
            lb: true,
            timeouts: args.timeouts(),
        };
        // Only the client's side reaches the balancer, and RSS puts a
        // connection's packets on one queue, but not for certain (a sender
        // may re-hash its flow after a timeout, moving it to another queue
        // of a veth): as in the other modes, a frame of a flow another
        // worker owns goes to that worker, unless --trust-rss.
        let handoff = if plan.queues > 1 && !args.trust_rss {
            Some(
                crate::handoff::Handoffs::new(
                    plan.queues as usize,
                    args.ring_size as usize,
                    (args.ring_size * 2) as usize,
                )
                .context("create the workers' hand-off queues")?,
            )
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (report_tx, reports) = crossbeam_channel::unbounded();
        let mut handles = Vec::new();
        let mut queries = Vec::new();
        for ((queue, socket), core) in (0u32..).zip(sockets).zip(plan.cores.iter().copied()) {
            let (query_tx, query_rx) = crossbeam_channel::bounded(4);
            queries.push(query_tx);
            let worker = Worker::new(
                Input::Xsk(socket),
                queue,
                core,
                config,
                program.verdict_map()?,
                WorkerLinks {
                    reports: report_tx.clone(),
                    stop: Arc::clone(&stop),
                    engine: Some(Arc::clone(&engine)),
                    flow_log: flow_log_tx.clone(),
                    eve: None,
                    ipfix: None,
                    queries: query_rx,
                    heartbeat: Arc::clone(&heartbeat),
                    handoff: handoff.clone(),
                },
            );
            let handle = worker
                .spawn()
                .with_context(|| format!("spawn the worker of queue {queue}"))?;
            handles.push((queue, handle));
        }
        Ok(Inspection {
            stop,
            handles,
            reports,
            latest: BTreeMap::new(),
            reported: BTreeMap::new(),
            started: std::time::Instant::now(),
            queries,
            engine: Some(engine),
            flow_log,
            bind_mode,
        })
    }

    /// Takes the workers' reports; an error when one stopped on its own.
    pub fn poll(&mut self) -> anyhow::Result<()> {
        while let Ok(report) = self.reports.try_recv() {
            if report.last {
                bail!("the inspecting worker of queue {} stopped", report.queue);
            }
            self.latest.insert(report.queue, report.counters);
            self.reported
                .insert(report.queue, std::time::Instant::now());
        }
        Ok(())
    }

    /// Workers that have not reported for 3 s (they report every second).
    pub fn stalled(&self) -> Vec<String> {
        const STALE: Duration = Duration::from_secs(3);
        (0..self.handles.len() as u32)
            .filter(|q| {
                self.reported
                    .get(q)
                    .copied()
                    .unwrap_or(self.started)
                    .elapsed()
                    > STALE
            })
            .map(|q| format!("the inspecting worker of queue {q} has not reported for 3 s"))
            .collect()
    }

    /// Parses the rules and policy again and hands them to the workers; a
    /// bad file changes nothing.
    pub fn reload_rules(&mut self, args: &RunArgs) -> anyhow::Result<String> {
        crate::run::reload_rules(args, &mut self.engine, &self.queries)
    }

    /// What the workers did, summed over queues (for `lb show` and stats).
    pub fn json(&self) -> Value {
        let sum = |f: fn(&QueueCounters) -> u64| self.latest.values().map(f).sum::<u64>();
        json!({
            "queues": self.handles.len(),
            "bind_mode": self.bind_mode,
            "user_packets": sum(|c| c.rx_packets),
            "sent": sum(|c| c.tx_packets),
            "flows": sum(|c| c.flows_seen),
            "verdicts": sum(|c| c.verdicts_written),
            "dropped_flows": sum(|c| c.verdicts_drop),
            "rejects_sent": sum(|c| c.rejects_sent),
            "tx_ring_full": sum(|c| c.tx_ring_full),
            // frames of a flow that reached another queue than its worker's
            "handed_off": sum(|c| c.handed_off),
            "handoff_full": sum(|c| c.handoff_full),
            "after_verdict": sum(|c| c.after_verdict_packets),
        })
    }

    /// Stops the workers (after the program is detached: nothing new comes)
    /// and closes the flow log; returns the final counters.
    pub fn finish(mut self) -> anyhow::Result<Value> {
        self.stop.store(true, Ordering::Release);
        let mut failures = Vec::new();
        for (queue, handle) in std::mem::take(&mut self.handles) {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(_) => failures.push(format!("worker of queue {queue} panicked")),
            }
        }
        while let Ok(report) = self.reports.try_recv() {
            self.latest.insert(report.queue, report.counters);
        }
        let mut doc = self.json();
        doc["queues"] = json!(self.latest.len());
        if let Some(log) = self.flow_log.take() {
            let (records, lost) = log.finish()?;
            doc["flow_log_records"] = json!(records);
            doc["flow_log_lost"] = json!(lost);
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(doc)
    }
}
