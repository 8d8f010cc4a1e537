//! Packets per second through the data plane's AF_XDP path (mirror mode)
//! on the veth testbed, with 1 and 4 queues, with every packet sent to user space (`--sniff-packets
//! unlimited`) and with dynamic sniffing (K = 8), all in one invocation under
//! the same offered load: UDP flows from real sockets in the generator
//! namespace, as fast as they go. Needs root and the release `dataplane`
//! binary next to this one (`cargo build --release -p dataplane -p bench`).
//!
//! On veth the sender's CPU also runs the receiving side's XDP program and
//! the copy into the UMEM, so on a 2-core machine generator and data plane
//! share both cores; read the figures as ratios within one run.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;
use testbed::{Process, Testbed, traffic};

#[derive(Parser, Debug)]
struct Args {
    /// Seconds of load per configuration.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// UDP flows offered.
    #[arg(long, default_value_t = 256)]
    flows: u16,
    /// UDP payload bytes (64 B gives 106 B frames).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Sender threads.
    #[arg(long, default_value_t = 2)]
    threads: u16,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    queues: u32,
    sniff: String,
    offered_pps: f64,
    /// Packets the XDP program saw (veth drops before XDP when its ring is full).
    xdp_rx_pps: f64,
    user_pps: f64,
    kernel_bypass_pps: f64,
    lost_in_rings: u64,
    no_socket: u64,
    sent: u64,
    user_packets: u64,
    bypass_packets: u64,
    p50_ns: u64,
    p99_ns: u64,
}

fn num(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

fn run_one(bin: &Path, args: &Args, queues: u32, sniff: &str) -> anyhow::Result<Row> {
    // A veth pair with exactly as many queues as are served: with fewer
    // sockets than queues, the other queues' packets would go to the stack.
    let tb = Testbed::up(queues)?;
    let stats = std::env::temp_dir().join(format!(
        "dp-throughput-{}-{queues}-{sniff}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&stats);
    let mut cmd = tb.dut.command(bin.to_str().context("binary path")?);
    // Mirror mode: the frames themselves go to the workers over AF_XDP (in
    // host mode the workers would get copies through ring buffers instead).
    cmd.args([
        "--mirror",
        "--iface",
        &tb.dut_if,
        "--queues",
        &queues.to_string(),
        "--sniff-packets",
        sniff,
    ])
    .args([
        "--stats-json",
        stats.to_str().context("path")?,
        "--stats-interval",
        "0.2",
    ]);
    let mut dp = Process::spawn(cmd)?;
    dp.wait_for_line("dataplane: running", Duration::from_secs(20))
        .map_err(anyhow::Error::msg)?;

    let spec = traffic::FlowSpec {
        src: tb.gen_ip,
        dst: tb.dut_ip,
        udp_flows: args.flows,
        tcp_flows: 0,
        packets_per_flow: u32::MAX,
        payload_len: args.payload,
        rate_pps: 0,
        src_port_base: 20_000,
        dst_port: 9,
        max_duration: Duration::from_secs_f64(args.duration),
        burst: 32,
        payload: None,
    };
    let threads = args.threads;
    let sent = tb
        .gen_ns
        .run_inside(move || traffic::send_parallel(&spec, threads))??;
    // Everything the program saw: to user space (received or lost in a ring),
    // or handled by a verdict, or without a socket.
    let accounted = |v: &Value| {
        v["queues"].as_array().map_or(0, |qs| {
            qs.iter()
                .map(|q| {
                    num(q, "/rx_packets") + num(q, "/xsk/rx_ring_full") + num(q, "/xsk/rx_dropped")
                })
                .sum::<u64>()
        }) + num(v, "/kernel/bypass_pass")
            + num(v, "/kernel/bypass_drop")
            + num(v, "/kernel/no_socket")
    };
    // Wait for the books to settle (the live stats are rewritten every 0.2 s).
    let _ = testbed::wait_until("the stats to settle", Duration::from_secs(10), || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&stats).ok()?).ok()?;
        let seen = num(&v, "/kernel/rx") - num(&v, "/kernel/non_ip");
        (seen > 0 && accounted(&v) >= seen).then_some(())
    });
    dp.interrupt(Duration::from_secs(15))
        .map_err(|e| anyhow::anyhow!("dataplane failed ({e})"))?;
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    let _ = std::fs::remove_file(&stats);
    let secs = sent.elapsed.as_secs_f64();
    let user: u64 = v["queues"]
        .as_array()
        .map_or(0, |qs| qs.iter().map(|q| num(q, "/rx_packets")).sum());
    let lost: u64 = v["queues"].as_array().map_or(0, |qs| {
        qs.iter()
            .map(|q| num(q, "/xsk/rx_ring_full") + num(q, "/xsk/rx_dropped"))
            .sum()
    });
    let bypass = num(&v, "/kernel/bypass_pass") + num(&v, "/kernel/bypass_drop");
    Ok(Row {
        queues,
        sniff: sniff.to_string(),
        offered_pps: sent.packets() as f64 / secs,
        xdp_rx_pps: num(&v, "/kernel/rx") as f64 / secs,
        user_pps: user as f64 / secs,
        kernel_bypass_pps: bypass as f64 / secs,
        lost_in_rings: lost,
        no_socket: num(&v, "/kernel/no_socket"),
        sent: sent.packets(),
        user_packets: user,
        bypass_packets: bypass,
        p50_ns: num(&v, "/latency_ns/p50"),
        p99_ns: num(&v, "/latency_ns/p99"),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::require_root("the throughput benchmark");
    let bin = std::env::current_exe()?.with_file_name("dataplane");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p dataplane -p bench)",
            bin.display()
        );
    }
    let mut rows = Vec::new();
    for (queues, sniff) in [(1, "unlimited"), (4, "unlimited"), (1, "8"), (4, "8")] {
        rows.push(run_one(&bin, &args, queues, sniff)?);
    }
    println!(
        "veth testbed, {} UDP flows, {} B payload ({} B frames), {} sender thread(s) with sendmmsg, {:.0} s per row, AF_XDP copy mode, {} cores",
        args.flows,
        args.payload,
        args.payload + 42,
        args.threads,
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "\n| queues | sniff packets | offered pps | XDP rx pps | user-space pps | kernel-bypass pps | lost in AF_XDP rings | no socket | p50 ns | p99 ns |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
            r.queues,
            r.sniff,
            r.offered_pps,
            r.xdp_rx_pps,
            r.user_pps,
            r.kernel_bypass_pps,
            r.lost_in_rings,
            r.no_socket,
            r.p50_ns,
            r.p99_ns
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
