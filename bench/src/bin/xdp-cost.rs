//! Per-packet cost of the data plane's XDP program, by `BPF_PROG_TEST_RUN`
//! repetitions (the kernel times them), for several kinds of frame, each next
//! to a bare `XDP_PASS` program run on the same frame in the same invocation.
//! Rounds alternate between the two programs and the median round counts, so
//! a noisy neighbour hits both sides alike. Needs root.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use testbed::frames::{self, Ipv6Ext, L4, Packet, ip};
use xdp_redirect::{Action, LoadOptions, XdpRedirect, baseline};

/// Per-packet cost of the XDP program vs a bare XDP_PASS program.
#[derive(Parser, Debug)]
struct Args {
    /// Repetitions per test_run call.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Rounds per program and frame (median taken).
    #[arg(long, default_value_t = 7)]
    rounds: u32,
    /// Load the program without the receive-time stamp (to see its cost).
    #[arg(long)]
    no_stamp: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    frame: &'static str,
    bytes: usize,
    dp_xdp_ns: f64,
    baseline_ns: f64,
    ratio: f64,
    program_ns: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::require_root("xdp-cost (BPF_PROG_TEST_RUN)");
    let prog = XdpRedirect::load(&LoadOptions {
        stamp_meta: !args.no_stamp,
        ..LoadOptions::default()
    })
    .context("load dp_xdp")?;
    let base = baseline::Baseline::load().context("load the baseline programs")?;
    let mut verdicts = prog.verdict_map()?;
    // As in operation, where a worker has beaten: decided packets take
    // their last-seen time from the workers' clock slot.
    prog.heartbeat()?.beat(0);

    let udp4 = Packet::udp(ip("198.18.0.1"), 40000, ip("198.18.0.2"), 53).with_payload(&[0; 18]);
    let decided = Packet::udp(ip("198.18.0.1"), 40001, ip("198.18.0.2"), 53).with_payload(&[0; 18]);
    let decided_key = dpi::decode_ethernet(&decided.build())
        .context("decode")?
        .key;
    verdicts.set(&dataplane::key::to_kernel(&decided_key), Action::Pass)?;
    let mut v6_ext = Packet::tcp(
        ip("2001:db8::1"),
        40000,
        ip("2001:db8::2"),
        443,
        frames::TCP_ACK,
    );
    v6_ext.ipv6_ext = vec![Ipv6Ext::HopByHop, Ipv6Ext::DestOpts];
    let cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("IPv4 UDP 64 B, undecided (to user space)", udp4.build()),
        (
            "IPv4 UDP 64 B, verdict PASS (kernel bypass)",
            decided.build(),
        ),
        (
            "IPv4 TCP in QinQ, undecided",
            Packet::tcp(ip("198.18.0.1"), 1, ip("198.18.0.2"), 80, frames::TCP_SYN)
                .with_vlans(&[10, 20])
                .build(),
        ),
        ("IPv6 TCP + 2 ext headers, undecided", v6_ext.build()),
        (
            "IPv6 UDP 1400 B, undecided",
            Packet::udp(ip("2001:db8::1"), 1, ip("2001:db8::2"), 2)
                .with_payload(&[0; 1338])
                .build(),
        ),
        (
            "ARP (passed, not IP)",
            frames::arp_request([2, 0, 0, 0, 0, 1], [198, 18, 0, 1], [198, 18, 0, 2]),
        ),
        (
            "ICMP echo, undecided",
            Packet::new(
                ip("198.18.0.1"),
                ip("198.18.0.2"),
                L4::Echo {
                    id: 1,
                    seq: 1,
                    reply: false,
                },
            )
            .build(),
        ),
    ];

    let mut rows = Vec::new();
    for (name, frame) in cases {
        let mut ours = Vec::new();
        let mut bare = Vec::new();
        for _ in 0..args.rounds {
            ours.push(prog.test_run(&frame, args.repeat)?.duration.as_nanos() as f64);
            bare.push(
                base.test_run(baseline::Kind::PassAll, &frame, args.repeat)?
                    .duration
                    .as_nanos() as f64,
            );
        }
        let (dp, b) = (bench::median(&mut ours), bench::median(&mut bare));
        rows.push(Row {
            frame: name,
            bytes: frame.len(),
            dp_xdp_ns: dp,
            baseline_ns: b,
            ratio: dp / b.max(1.0),
            program_ns: dp - b,
        });
    }

    println!(
        "XDP program cost by BPF_PROG_TEST_RUN: median of {} rounds x {} repetitions, kernel {}",
        args.rounds,
        args.repeat,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!("baseline = a bare XDP_PASS program on the same frame, same run\n");
    println!("| frame | bytes | dp_xdp ns/pkt | baseline ns/pkt | ratio | program ns/pkt |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} |",
            r.frame, r.bytes, r.dp_xdp_ns, r.baseline_ns, r.ratio, r.program_ns
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
