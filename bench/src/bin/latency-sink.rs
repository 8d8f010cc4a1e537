//! `latency-sink`: one-way latency of frames stamped by `pktgen --latency`,
//! measured where they arrive. An XDP program on `--iface` reads each UDP
//! frame's stamp (sequence number and send time, CLOCK_MONOTONIC, the same
//! clock on one host), hands the latency to user space through a ring
//! buffer, and drops the frame (frames without a stamp go on to the stack,
//! so ARP and ping work while it runs). Prints HdrHistogram's percentile table and
//! writes the `.hgrm` file and an SVG plot.
//!
//!   ip netns exec dp-srv latency-sink --iface srv0 --duration 10 \
//!       --hgrm run.hgrm --plot run.svg
//!
//! Bounded: stops after --duration, on SIGINT/SIGTERM, or --idle seconds
//! without a sample once samples have arrived; then reports.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bench::latency;
use clap::Parser;
use xdp_redirect::baseline::{Baseline, Kind};

#[derive(Parser, Debug)]
#[command(about = "One-way latency sink for pktgen --latency")]
struct Args {
    /// Interface the stamped frames arrive on.
    #[arg(long, short = 'i')]
    iface: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Stop this many seconds after the last sample (once there was one).
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
    /// Write HdrHistogram's percentile distribution (microseconds) here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write an SVG plot of latency by percentile here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Name of this run on the plot.
    #[arg(long, default_value = "one-way latency")]
    label: String,
    /// Print a line when the program is attached (for scripts that wait on it).
    #[arg(long)]
    announce: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))?;
    }
    let mut sink = Baseline::load().context("load the latency sink program")?;
    let mut ring = sink.latency_samples()?;
    sink.attach(Kind::Latency, &args.iface)
        .with_context(|| format!("attach the latency sink to {}", args.iface))?;
    if args.announce {
        println!("latency-sink: listening on {}", args.iface);
    }
    let mut histogram = latency::new_histogram();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let idle = Duration::from_secs_f64(args.idle);
    let mut last_sample: Option<Instant> = None;
    loop {
        let mut got = 0;
        while let Some(item) = ring.next() {
            if let Ok(bytes) = <[u8; 8]>::try_from(&item[..]) {
                histogram.saturating_record(u64::from_ne_bytes(bytes).max(1));
                got += 1;
            }
        }
        let now = Instant::now();
        if got > 0 {
            last_sample = Some(now);
        }
        if now >= deadline
            || last_sample.is_some_and(|t| now - t >= idle)
            || stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (stamped, unstamped, lost) = sink.latency_counts()?;
    drop(sink); // detach
    println!(
        "latency-sink: {} sample(s) from {stamped} stamped frame(s) ({lost} lost to a full ring buffer), {unstamped} frame(s) without a stamp",
        histogram.len()
    );
    if histogram.is_empty() {
        anyhow::bail!(
            "no stamped frames arrived on {} (is pktgen running with --latency?)",
            args.iface
        );
    }
    println!("{}", latency::summary(&histogram, 1000.0, "us"));
    let text = latency::hgrm(&histogram, 1000.0);
    println!("\n{text}");
    if let Some(path) = &args.hgrm {
        std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        latency::plot(
            &[(args.label.clone(), latency::hgrm_points(&text))],
            "us",
            path,
        )?;
    }
    Ok(())
}
