//! Start-up, the main loop and shutdown of a data plane run.
//!
//! Order matters: check everything, load the program, open every socket and
//! put it in the XSKMAP, and only then attach the program, so a failure at any
//! step leaves nothing on the interface. Shutdown detaches the program first
//! (new packets go to the stack), lets the workers drain what is in flight,
//! then reads the kernel counters, so the books balance.

use std::{
    collections::BTreeMap,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use crossbeam_channel::select;
use hdrhistogram::Histogram;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use xdp_redirect::Port;

use crate::{
    cli::{Cli, Command, Mode, RunArgs},
    control,
    flowlog::{FlowLog, JsonLog},
    preflight,
    stats::{self, KernelStats, Percentiles, QueueStats, StatsDoc, WorkerReport},
    worker::{Input, Worker, WorkerConfig, WorkerLinks},
    xsk::{self, BindMode},
};

/// Runs what the command line asks: a subcommand, or the data plane until
/// SIGINT/SIGTERM or `--duration`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match (cli.command, cli.run) {
        (
            Some(Command::Inspect {
                files,
                format,
                max_flows,
                eve,
                engine,
            }),
            _,
        ) => {
            let engine = engine.load()?;
            let max_flows =
                NonZeroUsize::new(max_flows as usize).context("--max-flows must be positive")?;
            crate::inspect::run(&files, format, max_flows, Arc::new(engine), eve.as_deref())
        }
        (
            Some(Command::Ctl {
                socket,
                iface,
                json,
                command,
            }),
            _,
        ) => {
            // `--json` anywhere on the line, before or after the command
            let json = json || command.iter().any(|w| w == "--json");
            let command: Vec<String> = command.into_iter().filter(|w| w != "--json").collect();
            if command.iter().map(String::as_str).eq(["help"]) {
                println!("{}", crate::control::HELP);
                return Ok(());
            }
            let socket = match (socket, iface) {
                (Some(path), _) => path,
                (None, Some(iface)) => crate::cli::default_control_path(&iface),
                (None, None) => bail!("give --socket PATH or --iface IFACE to find the data plane"),
            };
            let reply = crate::control::client(&socket, &command.join(" "))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                println!("{}", crate::control::human(&command, &reply));
            }
            Ok(())
        }
        (
            Some(Command::Decap {
                iface,
                xdp_mode,
                force,
                duration,
            }),
            _,
        ) => run_decap(&iface, xdp_mode, force, duration),
        (None, Some(run)) => match &run.lb {
            Some(file) => crate::lbrun::run(&run, file),
            None => run_dataplane(&run),
        },
        (None, None) => bail!(
            "nothing to do: give --iface IF to run the data plane, or a subcommand (see --help)"
        ),
    }
}

/// `dataplane decap`: the backend side of ipip mode.
fn run_decap(
    iface: &str,
    mode: crate::cli::XdpModeArg,
    force: bool,
    duration: Option<f64>,
) -> anyhow::Result<()> {
    let decap = xdp_redirect::decap::Decap::attach(iface, mode.into(), force)?;
    crate::logging::say(&format!(
        "dataplane decap: stripping the balancer's outer headers on {iface}; Ctrl-C to stop"
    ));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("install signal handlers")?;
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
    while signals.pending().next().is_none() && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = decap.counters()?;
    drop(decap);
    crate::logging::say(&format!(
        "dataplane decap: {} packets decapsulated, {} passed untouched",
        c.decapsulated, c.passed
    ));
    Ok(())
}

struct Merged {
    reports: BTreeMap<u32, WorkerReport>,
    processing: Histogram<u64>,
    kernel_to_user: Histogram<u64>,
    processing_by_queue: BTreeMap<u32, Histogram<u64>>,
}

impl Merged {
    fn new() -> Self {
        Merged {
            reports: BTreeMap::new(),
            processing: stats::new_histogram(),
            kernel_to_user: stats::new_histogram(),
            processing_by_queue: BTreeMap::new(),
        }
    }

    fn add(&mut self, report: WorkerReport) {
        // Histograms share bounds, so adding cannot fail.
        let _ = self.processing.add(&report.processing_ns);
        let _ = self.kernel_to_user.add(&report.kernel_to_user_ns);
        let _ = self
            .processing_by_queue
            .entry(report.queue)
            .or_insert_with(stats::new_histogram)
            .add(&report.processing_ns);
        self.reports.insert(report.queue, report);
    }

    fn reset_latency(&mut self) {
        self.processing.reset();
        self.kernel_to_user.reset();
        for h in self.processing_by_queue.values_mut() {
            h.reset();
        }
    }
}

/// Parses the rules and policy again; only if everything parses, hands the
/// new engine to every worker. Without DPI at start-up there is nothing to reload.
pub(crate) fn reload_rules(
    args: &RunArgs,
    engine: &mut Option<Arc<dpi::policy::Engine>>,
    queries: &[crossbeam_channel::Sender<crate::worker::WorkerQuery>],
) -> anyhow::Result<String> {
    if engine.is_none() {
        bail!("no DPI engine at start-up (start with --rules, --policy or --dpi to reload rules)");
    }
    let fresh = Arc::new(args.engine().load()?);
    for q in queries {
        // a worker that has stopped has nothing to swap
        let _ = q.send(crate::worker::WorkerQuery::Engine(Arc::clone(&fresh)));
    }
    let summary = format!(
        "{} rule(s), {} policy entr(ies)",
        fresh.rules.as_ref().map_or(0, |r| r.len()),
        fresh.policy.entries()
    );
    *engine = Some(fresh);
    Ok(summary)
}

/// The top flows by packets: each worker's table (user space) and the
/// kernel verdict map.
fn top_flows(
    top: usize,
    queries: &[crossbeam_channel::Sender<crate::worker::WorkerQuery>],
    verdicts: &xdp_redirect::VerdictMap,
) -> serde_json::Value {
    let mut user = Vec::new();
    let replies: Vec<_> = queries
        .iter()
        .filter_map(|q| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            q.send(crate::worker::WorkerQuery::TopFlows { top, reply: tx })
                .ok()
                .map(|()| rx)
        })
        .collect();
    for rx in replies {
        if let Ok(flows) = rx.recv_timeout(Duration::from_secs(2)) {
            user.extend(flows);
        }
    }
    user.sort_by_key(|f| std::cmp::Reverse(f["user_packets"].as_u64().unwrap_or(0)));
    user.truncate(top);
    let mut kernel: Vec<serde_json::Value> = verdicts
        .entries()
        .filter_map(Result::ok)
        .map(|(key, v)| {
            let addr = |bytes: [u8; 16], port: u16| -> String {
                let port = u16::from_be(port);
                if key.family == xdp_redirect::abi::dp_family::DP_FAMILY_IPV4 as u8 {
                    format!("{}.{}.{}.{}:{port}", bytes[0], bytes[1], bytes[2], bytes[3])
                } else {
                    format!("[{}]:{port}", std::net::Ipv6Addr::from(bytes))
                }
            };
            serde_json::json!({
                "a": addr(key.addr_a, key.port_a),
                "b": addr(key.addr_b, key.port_b),
                "l4": crate::flowlog::l4_name(key.proto),
                "vlan": key.vlan,
                "action": xdp_redirect::Action::from_code(v.action).ok().flatten().map(|a| a.as_str()),
                "kernel_packets": v.packets.iter().sum::<u64>(),
                "kernel_bytes": v.bytes.iter().sum::<u64>(),
                "closing": v.flags & xdp_redirect::abi::dp_verdict_flags::DP_VERDICT_F_CLOSING != 0,
            })
        })
        .collect();
    kernel.sort_by_key(|f| std::cmp::Reverse(f["kernel_packets"].as_u64().unwrap_or(0)));
    kernel.truncate(top);
    serde_json::json!({"user": user, "kernel": kernel})
}

fn run_dataplane(args: &RunArgs) -> anyhow::Result<()> {
    let plan = preflight::check(args)?;
    // Rules and policy parse fully before anything is attached.
    let use_dpi = args.dpi
        || args.rules.is_some()
        || args.policy.is_some()
        || args.max_user_packets.is_some();
    let engine = if use_dpi {
        Some(Arc::new(args.engine().load()?))
    } else {
        None
    };
    let decision = match &engine {
        Some(_) => "by DPI (classification, rules, policy)".to_string(),
        None => format!("after {} packet(s)", args.sniff_packets),
    };
    let sniff_limit = args.sniff_limit();

    let mode = args.mode();
    let on_failure = args.on_failure();
    let bridge = plan.peer_ifindex.map(|peer| xdp_redirect::BridgePorts {
        primary: plan.ifindex,
        peer,
    });
    let mut program = xdp_redirect::XdpRedirect::load(&xdp_redirect::LoadOptions {
        verdict_entries: args.verdict_map_size,
        stamp_meta: mode != Mode::Host,
        bridge,
        pin_dir: args.pin.clone(),
        failure: xdp_redirect::FailurePolicy {
            grace: (args.failure_grace_ms > 0)
                .then(|| Duration::from_millis(args.failure_grace_ms)),
            drop: on_failure == crate::cli::OnFailure::Drop,
        },
        lb: None,
        host: (mode == Mode::Host).then_some(plan.queues),
    })?;
    // Every served queue starts alive: the program checks heartbeats from
    // the moment it is attached.
    let heartbeat = Arc::new(program.heartbeat()?);
    for queue in 0..plan.queues {
        heartbeat.beat(queue);
    }
    // Opened before anything is attached: a bad path fails cleanly.
    let flow_log = match &args.flow_log {
        Some(path) => Some(FlowLog::start(path)?),
        None => None,
    };
    let (flow_log, flow_log_tx) = match flow_log {
        Some((log, tx)) => (Some(log), Some(tx)),
        None => (None, None),
    };
    let (eve_log, eve_tx) = match &args.eve {
        Some(path) => {
            let (log, tx) = JsonLog::start_named::<crate::eve::Event>(path, "--eve", "eve log")?;
            (Some(log), Some(tx))
        }
        None => (None, None),
    };
    let (ipfix, ipfix_tx) = match &args.ipfix {
        Some(target) => {
            let (exporter, tx) = crate::ipfix::Exporter::start(target)?;
            (Some(exporter), Some(tx))
        }
        None => (None, None),
    };
    let eve_context = crate::eve::EveContext {
        // inline, packets come in on either port
        in_iface: bridge.is_none().then(|| args.iface.clone()),
        // a mirror port's copies are only reported on
        enforcing: mode != Mode::Mirror,
        clock: crate::flowlog::WallClock::new(xdp_redirect::clock::monotonic_ns()),
    };

    // Where each worker's packets come from: its ring of copies (host
    // mode), or its queue's AF_XDP socket(s), all on one UMEM.
    let (inputs, bind_mode): (Vec<Input>, &'static str) = if mode == Mode::Host {
        let rings = program.host_rings(plan.queues)?;
        (rings.into_iter().map(Input::Host).collect(), "ringbuf")
    } else {
        let sockets = xsk::open_all(
            &args.xsk_config(),
            &args.iface,
            &plan.driver,
            plan.queues,
            args.peer.as_deref(),
        )?;
        for socket in &sockets {
            program.register_socket(Port::Primary, socket.queue, socket.fd())?;
            if let Some(fd) = socket.peer_fd() {
                program.register_socket(Port::Peer, socket.queue, fd)?;
            }
        }
        let bind_mode = sockets.first().map_or(BindMode::Copy, |s| s.bind_mode);
        (
            sockets.into_iter().map(Input::Xsk).collect(),
            bind_mode.as_str(),
        )
    };

    // The control socket and the metrics endpoint come up before anything is
    // attached, so a busy path or port fails cleanly.
    let servers = control::Servers::start(args)?;
    let mut ctl_verdicts = program.verdict_map()?;

    let xdp_mode = program.attach(&args.iface, args.xdp_mode.into(), args.force)?;
    if let Some(peer) = &args.peer {
        // Same mode on both ports; on failure `program` detaches the first on drop.
        let peer_mode = program.attach(peer, args.xdp_mode.into(), args.force)?;
        if peer_mode != xdp_mode {
            tracing::warn!(
                iface = %args.iface, peer = %peer,
                "the two bridge ports run XDP in different modes ({} and {})",
                xdp_mode.as_str(),
                peer_mode.as_str()
            );
        }
    }
    if mode == Mode::Host {
        program.attach_egress(&args.iface)?;
    }
    if mode == Mode::Inline && args.pin.is_none() {
        tracing::warn!(
            "inline mode without --pin: if this process dies, the XDP program goes with it and \
             the two ports stop bridging until the next start (--on-failure cannot apply); give \
             --pin DIR on a bpffs that outlives the process (e.g. /sys/fs/bpf/dataplane) to keep \
             the program, the decided flows and the failure action through a crash"
        );
    }
    for (iface, queues) in &plan.unserved {
        tracing::warn!(
            iface = %iface,
            "--allow-unserved-queues: RX queues {}-{} have no worker; their undecided traffic is {}",
            queues.start,
            queues.end - 1,
            match on_failure {
                crate::cli::OnFailure::Pass => "passed on uninspected (--on-failure pass)",
                crate::cli::OnFailure::Drop => "dropped (--on-failure drop)",
            }
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (report_tx, report_rx) = crossbeam_channel::unbounded::<WorkerReport>();
    let report_every =
        (args.stats_interval > 0.0).then(|| Duration::from_secs_f64(args.stats_interval));
    let worker_config = WorkerConfig {
        batch: args.batch,
        sniff_limit,
        flow_table_size: NonZeroUsize::new(args.flow_table_size as usize)
            .context("--flow-table-size must be positive")?,
        report_every,
        bridge: mode == Mode::Inline,
        mirror: mode == Mode::Mirror,
        lb: false,
        timeouts: args.timeouts(),
    };
    // AF_XDP modes: a frame of a flow another worker owns goes to that
    // worker (host mode needs none: the kernel picks the ring by flow),
    // unless the NICs' RSS already brings both directions of every flow to
    // one queue (then nothing would ever be handed over).
    let symmetric_rss = mode != Mode::Host
        && plan.queues > 1
        && !args.trust_rss
        && {
            let ports: Vec<&str> = std::iter::once(args.iface.as_str())
                .chain(args.peer.as_deref())
                .collect();
            let rss: Vec<_> = ports
                .iter()
                .map(|p| xdp_redirect::iface::rss(p).ok())
                .collect();
            let agree = rss
                .iter()
                .all(|r| r.as_ref().is_some_and(|r| r.is_symmetric()))
                && rss.windows(2).all(|w| w[0] == w[1]);
            if agree {
                tracing::info!(
                    ports = ?ports,
                    "symmetric RSS (and, inline, the same on both ports): both directions of a flow reach one queue; no hand-off between workers"
                );
            } else {
                tracing::info!(
                    ports = ?ports,
                    "RSS not known to be symmetric: frames of a flow that reach another queue are handed to the flow's worker"
                );
            }
            agree
        };
    let handoff = if mode != Mode::Host && plan.queues > 1 && !args.trust_rss && !symmetric_rss {
        let ports = if bridge.is_some() { 2 } else { 1 };
        Some(
            crate::handoff::Handoffs::new(
                plan.queues as usize,
                args.ring_size as usize,
                (args.ring_size * 2 * ports) as usize,
            )
            .context("create the workers' hand-off queues")?,
        )
    } else {
        None
    };
    let mut handles = Vec::with_capacity(inputs.len());
    let mut queries = Vec::with_capacity(inputs.len());
    for ((queue, input), core) in (0u32..).zip(inputs).zip(plan.cores.iter().copied()) {
        let (query_tx, query_rx) = crossbeam_channel::bounded(4);
        queries.push(query_tx);
        let worker = Worker::new(
            input,
            queue,
            core,
            worker_config,
            program.verdict_map()?,
            WorkerLinks {
                reports: report_tx.clone(),
                stop: Arc::clone(&stop),
                engine: engine.clone(),
                flow_log: flow_log_tx.clone(),
                eve: eve_tx.clone().map(|tx| (tx, eve_context.clone())),
                ipfix: ipfix_tx
                    .clone()
                    .map(|tx| (tx, Duration::from_secs_f64(args.ipfix_active_timeout))),
                queries: query_rx,
                heartbeat: Arc::clone(&heartbeat),
                handoff: handoff.clone(),
            },
        );
        handles.push((
            queue,
            worker
                .spawn()
                .with_context(|| format!("spawn the worker of queue {queue}"))?,
        ));
    }
    drop(report_tx);
    drop(flow_log_tx);
    drop(eve_tx);
    drop(ipfix_tx);

    // Signal handlers before the "running" line: whoever waits for that
    // line may stop us at once.
    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<i32>(4);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("install signal handlers")?;
    let signals_handle = signals.handle();
    std::thread::Builder::new()
        .name("dp-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_tx.send(signal).is_err() {
                    break;
                }
            }
        })?;
    let started = Instant::now();
    let ports = match &args.peer {
        Some(peer) => format!("{} <-> {}", args.iface, peer),
        None => args.iface.clone(),
    };
    let input = match mode {
        Mode::Host => "copies through ring buffers".to_string(),
        _ => format!("AF_XDP {bind_mode} mode"),
    };
    crate::logging::say(&format!(
        "dataplane: running on {} ({}): {} worker(s) on cores {:?}, XDP {} mode, {}, deciding flows {}; Ctrl-C to stop",
        ports,
        mode.describe(),
        plan.queues,
        plan.cores,
        xdp_mode.as_str(),
        input,
        decision
    ));
    crate::notify::notify("READY=1");

    let mut ctl_rx = servers.commands();
    let mut engine = engine;
    let mut stalls = vec![false; plan.queues as usize];

    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let tick = report_every.unwrap_or(Duration::from_secs(3600));
    let mut merged = Merged::new();
    let mut next_write = Instant::now() + tick;
    let describe = |merged: &Merged, stopped: bool, kernel: KernelStats| StatsDoc {
        iface: args.iface.clone(),
        driver: plan.driver.clone(),
        xdp_mode: xdp_mode.as_str(),
        bind_mode,
        sniff_packets: if use_dpi {
            "dpi".to_string()
        } else {
            args.sniff_packets.to_string()
        },
        uptime_s: started.elapsed().as_secs_f64(),
        stopped,
        queues: merged
            .reports
            .values()
            .map(|r| QueueStats {
                queue: r.queue,
                core: r.core,
                counters: r.counters,
                xsk: r.xsk,
                latency_ns: merged
                    .processing_by_queue
                    .get(&r.queue)
                    .map(Percentiles::of)
                    .unwrap_or_default(),
            })
            .collect(),
        kernel,
        latency_ns: Percentiles::of(&merged.processing),
        kernel_to_user_ns: Percentiles::of(&merged.kernel_to_user),
        flow_log_lost: flow_log.as_ref().map_or(0, |log| log.lost()),
        eve_lost: eve_log.as_ref().map_or(0, |log| log.lost()),
        ipfix_lost: ipfix.as_ref().map_or(0, |e| e.lost()),
    };

    let reason = loop {
        let until_deadline = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if until_deadline == Some(Duration::ZERO) {
            break "duration reached".to_string();
        }
        let wait = until_deadline
            .map_or(tick, |d| d.min(tick))
            .min(next_write.saturating_duration_since(Instant::now()))
            .min(Duration::from_millis(500)); // stall checks below
        select! {
            recv(signal_rx) -> signal => match signal {
                Ok(SIGHUP) => {
                    crate::notify::reloading();
                    match reload_rules(args, &mut engine, &queries) {
                        Ok(summary) => tracing::info!(%summary, "SIGHUP: rules reloaded"),
                        Err(error) => tracing::error!(%error, "SIGHUP: rules not reloaded; the old ones keep running"),
                    }
                    crate::notify::notify("READY=1");
                }
                signal => break format!("signal {}", signal.unwrap_or(0)),
            },
            recv(ctl_rx) -> command => match command {
                Ok(command) => {
                    let result = match &command.request {
                        control::Request::Stats => {
                            let doc = describe(&merged, false, program.counters().unwrap_or_default());
                            serde_json::to_value(&doc).map_err(|e| e.to_string())
                        }
                        control::Request::Metrics => {
                            let doc = describe(&merged, false, program.counters().unwrap_or_default());
                            Ok(serde_json::Value::String(crate::metrics::render(
                                &doc,
                                &merged.processing,
                                &merged.kernel_to_user,
                            )))
                        }
                        control::Request::Flows { top } => {
                            Ok(top_flows(*top, &queries, &ctl_verdicts))
                        }
                        control::Request::VerdictSet { flow, action } => ctl_verdicts
                            .set(&crate::key::to_kernel(&flow.key()), *action)
                            .map(|()| serde_json::json!({"written": action.as_str()}))
                            .map_err(|e| e.to_string()),
                        control::Request::VerdictClear { flow } => ctl_verdicts
                            .remove(&crate::key::to_kernel(&flow.key()))
                            .map(|()| serde_json::json!({"cleared": true}))
                            .map_err(|e| e.to_string()),
                        control::Request::RulesReload => reload_rules(args, &mut engine, &queries)
                            .map(serde_json::Value::String)
                            .map_err(|e| format!("{e:#}; the old rules keep running")),
                        control::Request::LatencyReset => {
                            merged.reset_latency();
                            Ok(serde_json::json!({"reset": true}))
                        }
                        control::Request::Lb(_) => Err(
                            "this data plane runs no load balancer (start it with --lb FILE)"
                                .to_string(),
                        ),
                    };
                    let _ = command.reply.send(result);
                }
                Err(_) => ctl_rx = crossbeam_channel::never(),
            },
            recv(report_rx) -> report => match report {
                Ok(report) => {
                    if report.last {
                        break format!("worker of queue {} stopped unexpectedly", report.queue);
                    }
                    merged.add(report);
                }
                Err(_) => break "all workers stopped".to_string(),
            },
            default(wait) => {}
        }
        // A worker that stopped looping: one line when it stalls, one when
        // it recovers (the XDP program fails over on its own).
        if args.failure_grace_ms > 0 {
            let now = xdp_redirect::clock::coarse_monotonic_ns();
            for queue in 0..plan.queues {
                let stalled =
                    now.saturating_sub(heartbeat.last(queue)) > args.failure_grace_ms * 1_000_000;
                if stalled != stalls[queue as usize] {
                    stalls[queue as usize] = stalled;
                    if stalled {
                        tracing::error!(
                            queue,
                            grace_ms = args.failure_grace_ms,
                            ?on_failure,
                            "worker stalled: its queue's undecided traffic gets the failure action"
                        );
                    } else {
                        tracing::warn!(queue, "worker recovered");
                    }
                }
            }
        }
        if report_every.is_some() && Instant::now() >= next_write {
            next_write = Instant::now() + tick;
            let kernel = program.counters().unwrap_or_default();
            let doc = describe(&merged, false, kernel);
            if let Some(path) = &args.stats_json
                && let Err(e) = doc.write(path)
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the stats file");
            }
            let rx: u64 = doc.queues.iter().map(|q| q.counters.rx_packets).sum();
            let active: u64 = doc.queues.iter().map(|q| q.counters.flows_active).sum();
            tracing::info!(
                user_rx = rx,
                kernel_rx = kernel.rx,
                bypass = kernel.bypass_pass + kernel.bypass_drop + kernel.bypass_forward,
                flows_active = active,
                "status"
            );
        }
    };
    tracing::info!(%reason, "stopping");
    crate::notify::notify("STOPPING=1");
    drop(servers);
    signals_handle.close();

    // 1. No new packets to user space; 2. workers drain what is in flight.
    program.detach().context("detach the XDP program")?;
    stop.store(true, Ordering::Release);
    let mut failures = Vec::new();
    for (queue, handle) in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push(format!("worker of queue {queue} panicked")),
        }
    }
    while let Ok(report) = report_rx.try_recv() {
        merged.add(report);
    }
    // 3. The maps outlive the detach: the counters are final now.
    let kernel: KernelStats = program.counters()?;
    let mut doc = describe(&merged, true, kernel);
    // 4. Every sender is gone: the flow log's writer finishes, and its
    //    count of lost records is final too.
    let flow_log_result = flow_log.map(FlowLog::finish);
    if let Some(Ok((_, lost))) = &flow_log_result {
        doc.flow_log_lost = *lost;
    }
    let ipfix_result = ipfix.map(crate::ipfix::Exporter::finish);
    if let Some(Ok((_, lost))) = &ipfix_result {
        doc.ipfix_lost = *lost;
    }
    let eve_result = eve_log.map(JsonLog::finish);
    if let Some(Ok((_, lost))) = &eve_result {
        doc.eve_lost = *lost;
    }
    if let Some(path) = &args.stats_json {
        doc.write(path)
            .with_context(|| format!("write the stats to {}", path.display()))?;
    }
    crate::logging::say(&stats::summary(
        &doc,
        &merged.processing,
        &merged.kernel_to_user,
    ));
    if let Some(prefix) = &args.latency_hgrm {
        for (name, histogram) in [
            ("processing", &merged.processing),
            ("kernel-to-user", &merged.kernel_to_user),
        ] {
            let path = format!("{}-{name}.hgrm", prefix.display());
            if let Err(e) = std::fs::write(&path, stats::hgrm(histogram, 1000.0)) {
                failures.push(format!("write {path}: {e}"));
            }
        }
    }
    if let (Some(result), Some(target)) = (ipfix_result, &args.ipfix) {
        match result {
            Ok((records, 0)) => {
                crate::logging::say(&format!("IPFIX: {records} record(s) sent to {target}"))
            }
            Ok((records, lost)) => crate::logging::say(&format!(
                "IPFIX: {records} record(s) sent to {target}, {lost} lost (could not be sent)"
            )),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    for (what, result, path) in [
        ("flow log", flow_log_result, &args.flow_log),
        ("eve log", eve_result, &args.eve),
    ] {
        let (Some(result), Some(path)) = (result, path) else {
            continue;
        };
        match result {
            Ok((records, 0)) => crate::logging::say(&format!(
                "{what}: {records} record(s) appended to {}",
                path.display()
            )),
            Ok((records, lost)) => crate::logging::say(&format!(
                "{what}: {records} record(s) appended to {}, {lost} lost (the file refused them)",
                path.display()
            )),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    drop(program);
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}
