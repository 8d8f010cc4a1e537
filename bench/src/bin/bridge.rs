//! Inline bridge throughput: the data plane with dynamic sniffing against
//! the same data plane with every packet in user space (`--sniff-packets
//! unlimited`) and against a bare XDP bridge (a program that only redirects
//! between the two ports), all measured in one run on the three-namespace
//! testbed (client — [br0, br1] — server).
//!
//! Traffic comes from the in-kernel generator (`BPF_PROG_TEST_RUN` with live
//! frames, XDP_TX out of the client's veth) with a mix of a few long flows
//! and many short ones; the server's veth end counts what arrives in XDP and
//! drops it. Throughput = frames delivered / time until the count settles.
//! Needs root and the release `dataplane` binary next to this one
//! (`cargo build --release -p dataplane -p bench`).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::Serialize;
use testbed::{InlineTestbed, Process};
use xdp_redirect::baseline::{Baseline, GenConfig, Kind};

#[derive(Parser, Debug)]
#[command(
    about = "Inline bridge throughput: dynamic sniffing vs every packet in user space vs a bare XDP bridge"
)]
struct Args {
    /// Frame size in bytes without FCS (60 to 1514).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u16).range(60..=1514))]
    size: u16,
    /// Frames per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    packets: u32,
    /// Repetitions of each mode (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Long flows that carry most packets.
    #[arg(long, default_value_t = 16)]
    long_flows: u32,
    /// Every N-th packet belongs to a new short flow...
    #[arg(long, default_value_t = 16)]
    short_every: u32,
    /// ...of this many packets.
    #[arg(long, default_value_t = 4)]
    short_len: u32,
    /// Queues on each veth and for the data plane.
    #[arg(long, default_value_t = 2)]
    queues: u32,
    /// Cores of the generator threads, one thread each (the kernel's receive
    /// path of the generated frames runs there too; on veth, the core picks
    /// the receive queue).
    #[arg(long, default_value = "0,1", value_delimiter = ',')]
    gen_cores: Vec<usize>,
    /// Cores of the data plane's workers (its --cores).
    #[arg(long, default_value = "0,1")]
    worker_cores: String,
    /// Extra arguments for both data plane runs (e.g. "--rx-coalesce-us=0").
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    dataplane_args: Vec<String>,
    /// Write the raw figures here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Another `dataplane` binary (an earlier build) for the `baseline`
    /// mode: dynamic sniffing (DPI) as the `dynamic` mode, same arguments,
    /// in the same rounds (before/after in one run).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The modes to run in each round (all three by default; fewer to
    /// profile one with `perf record`, or to compare two more often). A
    /// ratio is printed when both of its modes ran.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bare,dynamic,unlimited,trust-rss"
    )]
    modes: Vec<Mode>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The bare XDP bridge.
    Bare,
    /// The data plane with dynamic sniffing.
    Dynamic,
    /// The data plane with every packet through a worker.
    Unlimited,
    /// Dynamic sniffing without the hand-off of frames to their flow's
    /// worker (`--trust-rss`): what the hand-off costs.
    TrustRss,
    /// Dynamic sniffing with the `--baseline` binary.
    Baseline,
}

#[derive(Serialize, Debug, Clone)]
struct Run {
    mode: &'static str,
    offered_pps: f64,
    delivered_pps: f64,
    delivered: u64,
    user_packets: Option<u64>,
}

/// An Ethernet/IPv4/UDP frame of `size` bytes (without FCS), UDP checksum 0
/// (the generator rewrites the ports).
fn template(src_mac: [u8; 6], dst_mac: [u8; 6], size: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(size.into());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total_len: u16 = size - 14;
    let mut ip = [
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 1, 1, 198, 18, 1, 2,
    ];
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let udp_len = total_len - 20;
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(size.into(), 0xab);
    f
}

fn mac(tb_ns: &testbed::Netns, iface: &str) -> anyhow::Result<[u8; 6]> {
    let out = tb_ns.ip(&["-br", "link", "show", "dev", iface])?;
    let text = out.split_whitespace().nth(2).context("no MAC")?;
    let mut m = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(m)
}

struct Bench {
    tb: InlineTestbed,
    gen_cores: Vec<usize>,
    frame: Vec<u8>,
    mix: GenConfig,
    /// One generator per core (its own program instance and maps).
    generators: Vec<Baseline>,
    sink: Baseline,
    client_ifindex: u32,
}

impl Bench {
    /// Sends `packets` frames and waits for the sink's count to settle.
    fn measure(&mut self, mode: &'static str, packets: u32) -> anyhow::Result<Run> {
        let (before, _) = self.sink.sink_counts()?;
        let (frame, mix, ifindex) = (self.frame.clone(), self.mix, self.client_ifindex);
        let per_thread = packets / self.gen_cores.len() as u32;
        let started = Instant::now();
        let threads: Vec<_> = self
            .generators
            .drain(..)
            .zip(self.gen_cores.clone())
            .map(|(mut generator, core)| {
                let frame = frame.clone();
                self.tb.client.spawn_inside(move || {
                    bench::pktgen::pin(core);
                    let sent = generator.generate(&frame, ifindex, mix, per_thread, 256);
                    (generator, sent)
                })
            })
            .collect();
        let mut gen_time = Duration::ZERO;
        for thread in threads {
            let (generator, sent) = thread
                .join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
            self.generators.push(generator);
            gen_time = gen_time.max(sent?);
        }
        let packets = per_thread * self.gen_cores.len() as u32;
        // Settled: no new frame for 200 ms (user space drains its rings).
        let mut last = before;
        let mut last_change = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let (now, _) = self.sink.sink_counts()?;
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= Duration::from_millis(200) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{mode}: the sink never settled");
            }
        }
        let elapsed = last_change.duration_since(started).max(gen_time);
        let delivered = last - before;
        eprintln!(
            "{mode}: gen {:.1} ms, until last frame {:.1} ms, per gen time {:.0} pps",
            gen_time.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3,
            delivered as f64 / gen_time.as_secs_f64()
        );
        Ok(Run {
            mode,
            offered_pps: f64::from(packets) / gen_time.as_secs_f64(),
            delivered_pps: delivered as f64 / elapsed.as_secs_f64(),
            delivered,
            user_packets: None,
        })
    }
}

fn dataplane(
    tb: &InlineTestbed,
    bin: &std::path::Path,
    cores: &str,
    extra: &[&str],
    more: &[String],
    stats: &PathBuf,
) -> anyhow::Result<Process> {
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p dataplane -p bench)",
            bin.display()
        );
    }
    let mut cmd = tb.dut.command(bin.to_str().context("path")?);
    cmd.args(["--iface", &tb.dut_client_if, "--peer", &tb.dut_server_if])
        .args(["--queues", &tb.queues.to_string()])
        .arg("--stats-json")
        .arg(stats)
        .args(["--stats-interval", "0", "--cores", cores, "--no-control"])
        .args(extra)
        .args(more);
    let mut dp = Process::spawn(cmd)?;
    dp.wait_for_line("dataplane: running", Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("{e}\n{}", dp.output()))?;
    Ok(dp)
}

fn stop(mut dp: Process, stats: &PathBuf) -> anyhow::Result<u64> {
    dp.interrupt(Duration::from_secs(20))
        .map_err(|e| anyhow::anyhow!("dataplane failed ({e})"))?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(stats)?)?;
    let _ = std::fs::remove_file(stats);
    Ok(v["queues"]
        .as_array()
        .context("queues")?
        .iter()
        .filter_map(|q| q["rx_packets"].as_u64())
        .sum())
}

fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.delivered_pps.total_cmp(&b.delivered_pps));
    runs[runs.len() / 2].clone()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::require_root("the bridge benchmark");
    let tb = InlineTestbed::up(args.queues)?;
    let src_mac = mac(&tb.client, &tb.client_if)?;
    let dst_mac = mac(&tb.server, &tb.server_if)?;
    let client_if = tb.client_if.clone();
    let threads = args.gen_cores.len();
    let (generators, client_ifindex) = tb.client.run_inside(move || -> anyhow::Result<_> {
        Ok((
            (0..threads)
                .map(|_| Baseline::load())
                .collect::<Result<Vec<_>, _>>()?,
            xdp_redirect::iface::index(&client_if)?,
        ))
    })??;
    let server_if = tb.server_if.clone();
    let sink = tb.server.run_inside(move || -> anyhow::Result<Baseline> {
        let mut b = Baseline::load()?;
        b.attach(Kind::Sink, &server_if)?;
        Ok(b)
    })??;
    let mut bench = Bench {
        frame: template(src_mac, dst_mac, args.size),
        mix: GenConfig {
            long_flows: args.long_flows,
            short_every: args.short_every,
            short_len: args.short_len,
            l4_off: 34, // Ethernet + IPv4 without options
            csum_off: 0,
            stamp_off: 0,
            sport_base: 1000,
            dport: 9,
            header_len: 0,
            header: [0; 64],
            short_fixed_dport: 0,
            pad: 0,
        },
        generators,
        gen_cores: args.gen_cores.clone(),
        sink,
        client_ifindex,
        tb,
    };
    let stats = std::env::temp_dir().join(format!("bridge-bench-{}.json", std::process::id()));

    // Rounds of the three modes back to back, so each ratio compares runs
    // minutes apart at most on this shared, noisy machine; the medians of
    // the per-round ratios are reported.
    if args.modes.contains(&Mode::Baseline) && args.baseline.is_none() {
        bail!("the baseline mode needs --baseline PATH (an earlier dataplane build)");
    }
    let ours = std::env::current_exe()?.with_file_name("dataplane");
    let modes: [(Mode, &'static str, Option<&[&str]>); 5] = [
        (Mode::Bare, "bare XDP bridge", None),
        (
            Mode::Dynamic,
            "dataplane, dynamic sniffing (DPI)",
            Some(&["--dpi"][..]),
        ),
        (
            Mode::Unlimited,
            "dataplane, every packet in user space",
            Some(&["--sniff-packets", "unlimited"][..]),
        ),
        (
            Mode::TrustRss,
            "dataplane, dynamic sniffing (DPI), no hand-off (--trust-rss)",
            Some(&["--dpi", "--trust-rss"][..]),
        ),
        (
            Mode::Baseline,
            "baseline build, dynamic sniffing (DPI)",
            Some(&["--dpi"][..]),
        ),
    ];
    let modes: Vec<_> = modes
        .into_iter()
        .filter(|(kind, _, _)| args.modes.contains(kind))
        .collect();
    let mut rounds: Vec<Vec<Run>> = Vec::new();
    for round in 0..args.reps {
        let mut runs = Vec::new();
        for &(kind, mode, extra) in &modes {
            let run = match extra {
                None => {
                    let bridge = bench::bare_bridge(&bench.tb)?;
                    let run = bench.measure(mode, args.packets)?;
                    drop(bridge);
                    run
                }
                Some(extra) => {
                    let bin = match (kind, &args.baseline) {
                        (Mode::Baseline, Some(b)) => b.clone(),
                        _ => ours.clone(),
                    };
                    let dp = dataplane(
                        &bench.tb,
                        &bin,
                        &args.worker_cores,
                        extra,
                        &args.dataplane_args,
                        &stats,
                    )?;
                    let mut run = bench.measure(mode, args.packets)?;
                    run.user_packets = Some(stop(dp, &stats)?);
                    run
                }
            };
            eprintln!(
                "round {}: {mode}: {:.0} pps delivered",
                round + 1,
                run.delivered_pps
            );
            runs.push(run);
        }
        rounds.push(runs);
    }
    // the position of each mode in a round, if it ran
    let at = |kind: Mode| modes.iter().position(|(k, _, _)| *k == kind);
    // the median over rounds of (a / b), when both ran
    let ratio = |a: Option<usize>, b: Option<usize>| -> Option<(f64, Vec<f64>)> {
        let (a, b) = (a?, b?);
        let per_round: Vec<f64> = rounds
            .iter()
            .map(|r| r[a].delivered_pps / r[b].delivered_pps)
            .collect();
        // a sorted copy: the per-round list keeps round order
        let median = bench::median(&mut per_round.clone());
        Some((median, per_round))
    };
    let dynamic = at(Mode::Dynamic);
    let dynamic_vs_unlimited = ratio(dynamic, at(Mode::Unlimited));
    let dynamic_vs_bare = ratio(dynamic, at(Mode::Bare));
    let dynamic_vs_trust_rss = ratio(dynamic, at(Mode::TrustRss));
    let dynamic_vs_baseline = ratio(dynamic, at(Mode::Baseline));
    let results: Vec<Run> = (0..modes.len())
        .map(|i| median_run(rounds.iter().map(|r| r[i].clone()).collect()))
        .collect();
    println!(
        "\n{}-byte UDP frames (+4 B FCS on a wire), {} long flows + a new {}-packet flow every {} packets, {} queue(s), generator on cores {:?}, workers on cores {}, copy-mode AF_XDP on veth, median of {} rounds\n",
        args.size,
        args.long_flows,
        args.short_len,
        args.short_every,
        args.queues,
        args.gen_cores,
        args.worker_cores,
        args.reps
    );
    println!("| mode | offered (pps) | delivered (pps) | packets in user space |");
    println!("|---|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.0} | {} |",
            r.mode,
            r.offered_pps,
            r.delivered_pps,
            r.user_packets.map_or("-".to_string(), |u| format!(
                "{u} ({:.1}%)",
                100.0 * u as f64 / r.delivered.max(1) as f64
            ))
        );
    }
    println!();
    for (name, goal, r) in [
        (
            "dynamic / every-packet-in-user-space",
            5.0,
            &dynamic_vs_unlimited,
        ),
        ("dynamic / bare XDP bridge", 0.8, &dynamic_vs_bare),
    ] {
        if let Some((median, per_round)) = r {
            println!("{name} = {median:.2}x (goal >= {goal}; per round {per_round:.2?})");
        }
    }
    if let Some((median, per_round)) = &dynamic_vs_trust_rss {
        println!(
            "dynamic / dynamic without hand-off = {median:.2}x (the hand-off's cost; per round {per_round:.2?})"
        );
    }
    if let Some((median, per_round)) = &dynamic_vs_baseline {
        println!("dynamic / baseline build = {median:.2}x (per round {per_round:.2?})");
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({
                "packets": args.packets,
                "size": args.size,
                "mix": {"long_flows": args.long_flows, "short_every": args.short_every, "short_len": args.short_len},
                "queues": args.queues,
                "runs": results,
                "rounds": rounds,
                "ratio_dynamic_vs_unlimited": dynamic_vs_unlimited.map(|r| r.0),
                "ratio_dynamic_vs_bare": dynamic_vs_bare.map(|r| r.0),
                "ratio_dynamic_vs_trust_rss": dynamic_vs_trust_rss.map(|r| r.0),
                "ratio_dynamic_vs_baseline": dynamic_vs_baseline.map(|r| r.0),
                "dataplane_args": args.dataplane_args,
            }))?,
        )?;
    }
    Ok(())
}
