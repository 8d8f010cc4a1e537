//! Per-packet cost of the load balancer's forwarding path by
//! `BPF_PROG_TEST_RUN`, next to the bare steering programs on the same frame
//! in the same invocation: `xdp_xsk_all` (redirect every frame to its
//! queue's AF_XDP socket, no parsing) and the data plane's own steering
//! (parse, verdict lookup, redirect to user space).
//!
//! Each sample is one test_run with `repeat = 1`: forwarding rewrites the
//! frame (ipip grows it, nat changes its destination), so repetitions of
//! one run would measure a different packet from the second on. The kernel
//! times the program alone (two clock reads around it, the same for every
//! program); the median of many samples counts. Next hops come from a
//! configured gateway MAC (test_run has no interface for a FIB lookup; the
//! throughput benchmark, `compare lb`, uses the FIB). Needs root.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use testbed::frames::{self, Packet, ip};
use xdp_redirect::{
    LoadOptions, XdpRedirect, baseline,
    lb::{self, LbOptions, Mode},
};

#[derive(Parser, Debug)]
struct Args {
    /// Samples (single test_runs) per program and frame.
    #[arg(long, default_value_t = 20_000)]
    samples: u32,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    case: String,
    balancer_ns: f64,
    bare_steering_ns: f64,
    dataplane_steering_ns: f64,
    bare_pass_ns: f64,
    ratio_vs_bare_steering: f64,
    ratio_vs_dataplane_steering: f64,
}

fn load(mode: Mode) -> anyhow::Result<XdpRedirect> {
    let prog = XdpRedirect::load(&LoadOptions {
        stamp_meta: false,
        lb: Some(LbOptions {
            nat: mode == Mode::Nat,
            gateway: Some([0x02, 0, 0, 0, 0, 0x99]),
        }),
        ..LoadOptions::default()
    })
    .context("load dp_xdp in load balancer mode")?;
    // as `dataplane --lb` runs it: its loop keeps the program's clock going
    prog.heartbeat()?.tick();
    let mut maps = prog.lb_maps()?;
    for i in 0..3u32 {
        maps.set_backend(
            i,
            ip(&format!("198.18.71.{}", i + 1)),
            ip("198.18.71.254"),
            false,
        )?;
        maps.set_backend(
            3 + i,
            ip(&format!("2001:2::71:{}", i + 1)),
            ip("2001:2::71:fe"),
            false,
        )?;
    }
    let table = |first: u32| -> Vec<u32> {
        ::lb::Table::build(
            ::lb::Algorithm::Maglev,
            &(0..3)
                .map(|i| ::lb::table::Entry {
                    id: vec![i],
                    weight: [5, 3, 2][i as usize],
                })
                .collect::<Vec<_>>(),
            ::lb::table::DEFAULT_SIZE,
        )
        .slots()
        .iter()
        .map(|s| first + s)
        .collect()
    };
    maps.install(
        &lb::service_key(ip("198.18.70.100"), 80, 6),
        0,
        mode,
        lb::ServiceFlags::default(),
        &table(0),
    )?;
    maps.install(
        &lb::service_key(ip("2001:2::70:100"), 53, 17),
        1,
        mode,
        lb::ServiceFlags::default(),
        &table(3),
    )?;
    Ok(prog)
}

/// Median ns of `samples` single runs; `frame(i)` gives the i-th frame.
fn median_ns(samples: u32, mut run: impl FnMut(u32) -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let mut v = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        v.push(run(i)?);
    }
    Ok(bench::median(&mut v))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::require_root("lb-cost (BPF_PROG_TEST_RUN)");
    let ipip = load(Mode::Ipip)?;
    let nat = load(Mode::Nat)?;
    let steering = XdpRedirect::load(&LoadOptions {
        stamp_meta: false,
        ..LoadOptions::default()
    })?;
    let base = baseline::Baseline::load()?;
    let client = ip("198.18.70.7");
    let tcp = |sport: u16, flags: u8| {
        Packet::tcp(client, sport, ip("198.18.70.100"), 80, flags)
            .with_payload(&[0; 6])
            .build()
    };
    let udp6 = |sport: u16| {
        Packet::udp(ip("2001:2::70:7"), sport, ip("2001:2::70:100"), 53)
            .with_payload(&[0; 18])
            .build()
    };
    type Case<'a> = (&'a str, &'a XdpRedirect, Box<dyn Fn(u32) -> Vec<u8> + 'a>);
    let cases: Vec<Case> = vec![
        (
            "ipip, IPv4 TCP, established connection",
            &ipip,
            Box::new(|_| tcp(40000, frames::TCP_ACK)),
        ),
        (
            "ipip, IPv4 TCP SYN, new connection",
            &ipip,
            Box::new(|i| tcp(1024 + (i % 60000) as u16, frames::TCP_SYN)),
        ),
        (
            "ipip, IPv6 UDP, established",
            &ipip,
            Box::new(|_| udp6(40000)),
        ),
        (
            "nat, IPv4 TCP, established connection",
            &nat,
            Box::new(|_| tcp(40001, frames::TCP_ACK)),
        ),
    ];
    let mut rows = Vec::new();
    for (name, prog, frame) in &cases {
        // the established cases: the connection exists before timing
        let _ = prog.test_run_frame(&frame(0))?;
        let balancer = median_ns(args.samples, |i| {
            Ok(prog.test_run_frame(&frame(i))?.0.duration.as_nanos() as f64)
        })?;
        let time = |kind| {
            median_ns(args.samples, |i| {
                Ok(base.test_run(kind, &frame(i), 1)?.duration.as_nanos() as f64)
            })
        };
        let bare_steering = time(baseline::Kind::XskAll)?;
        let bare_pass = time(baseline::Kind::PassAll)?;
        let dp_steering = median_ns(args.samples, |i| {
            Ok(steering.test_run(&frame(i), 1)?.duration.as_nanos() as f64)
        })?;
        rows.push(Row {
            case: name.to_string(),
            balancer_ns: balancer,
            bare_steering_ns: bare_steering,
            dataplane_steering_ns: dp_steering,
            bare_pass_ns: bare_pass,
            ratio_vs_bare_steering: balancer / bare_steering.max(1.0),
            ratio_vs_dataplane_steering: balancer / dp_steering.max(1.0),
        });
    }
    println!(
        "Load balancer forwarding cost by BPF_PROG_TEST_RUN: median of {} single runs per program and frame, kernel {}",
        args.samples,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "bare steering = xdp_xsk_all (redirect to the queue's AF_XDP socket, no parsing); dataplane steering = dp_xdp without --lb (parse, verdict lookup, redirect)\n"
    );
    println!(
        "| case | balancer ns | bare steering ns | ratio | dataplane steering ns | ratio | bare XDP_PASS ns |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} |",
            r.case,
            r.balancer_ns,
            r.bare_steering_ns,
            r.ratio_vs_bare_steering,
            r.dataplane_steering_ns,
            r.ratio_vs_dataplane_steering,
            r.bare_pass_ns
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
