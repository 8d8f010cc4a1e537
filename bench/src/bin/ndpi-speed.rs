//! Classification speed: `dataplane inspect` against `ndpiReader -i` (nDPI,
//! Debian's libndpi-bin) on the same large capture, in the same run.
//!
//! The capture is built from the Ethernet captures of the nDPI development
//! set, repeated `--repeat` times; each repetition XORs its number into the
//! IPv4 source address, so its flows are new flows, not continuations. Both
//! tools then read that file, in alternating rounds; the median wall time per
//! tool gives packets per second. Peak RSS of each is reported too.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter},
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;

#[derive(Parser, Debug)]
struct Args {
    /// nDPI dataset folder (pcap/ inside).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Times the set is repeated in the merged capture.
    #[arg(long, default_value_t = 40)]
    repeat: u32,
    /// Rounds per tool (median kept).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Where to write the merged capture.
    #[arg(long, default_value = "/tmp/dataplane-ndpi-speed.pcap")]
    capture: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Another `dataplane` binary (an earlier build) to time in the same
    /// rounds: before/after in one run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Rules for every `dataplane inspect` run (the same for the baseline).
    #[arg(long)]
    rules: Option<PathBuf>,
}

#[derive(Serialize)]
struct Result {
    packets: u64,
    bytes: u64,
    dataplane_seconds: f64,
    ndpi_seconds: f64,
    dataplane_pps: f64,
    ndpi_pps: f64,
    ratio: f64,
    dataplane_max_rss_kib: i64,
    ndpi_max_rss_kib: i64,
    /// The `--baseline` binary, if one was given.
    baseline_seconds: Option<f64>,
    baseline_pps: Option<f64>,
    /// Our packets/s over the baseline's.
    vs_baseline: Option<f64>,
}

/// Ethernet frames of every capture in `dir`.
fn ethernet_frames(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut frames = Vec::new();
    for path in names {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            let Ok(mut ng) = PcapNgReader::new(&bytes[..]) else {
                continue;
            };
            let mut links = Vec::new();
            while let Some(Ok(block)) = ng.next_block() {
                match block {
                    Block::InterfaceDescription(i) => links.push(i.linktype),
                    Block::EnhancedPacket(p)
                        if links.get(p.interface_id as usize) == Some(&DataLink::ETHERNET) =>
                    {
                        frames.push(p.data.into_owned())
                    }
                    _ => {}
                }
            }
        } else if let Ok(mut pcap) = PcapReader::new(&bytes[..]) {
            if pcap.header().datalink != DataLink::ETHERNET {
                continue;
            }
            while let Some(Ok(p)) = pcap.next_packet() {
                frames.push(p.data.into_owned());
            }
        }
    }
    Ok(frames)
}

fn write_capture(path: &Path, frames: &[Vec<u8>], repeat: u32) -> anyhow::Result<(u64, u64)> {
    let file =
        BufWriter::new(File::create(path).with_context(|| format!("create {}", path.display()))?);
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        snaplen: 65_535,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(file, header)?;
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut frame = Vec::with_capacity(2048);
    for rep in 0..repeat {
        for (i, original) in frames.iter().enumerate() {
            frame.clear();
            frame.extend_from_slice(original);
            // IPv4 without VLAN: make each repetition's flows distinct.
            if frame.len() >= 34 && frame[12..14] == [0x08, 0x00] {
                frame[14 + 12 + 1] ^= (rep & 0xff) as u8;
                frame[14 + 12 + 2] ^= (rep >> 8) as u8;
            }
            let ts = Duration::from_micros(u64::from(rep) * 1_000_000_000 + i as u64);
            writer.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))?;
            packets += 1;
            bytes += frame.len() as u64;
        }
    }
    Ok((packets, bytes))
}

/// Runs a command with output discarded; returns wall time and its peak RSS (KiB).
fn timed(cmd: &mut Command) -> anyhow::Result<(f64, i64)> {
    bench::run_child(cmd.stdout(Stdio::null()).stderr(Stdio::null()))
}

fn median(mut v: Vec<f64>) -> f64 {
    bench::median(&mut v)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dataset = args
        .dataset
        .clone()
        .unwrap_or_else(bench::ndpi::default_dataset);
    let ndpi = Command::new("ndpiReader")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let with_ndpi = ndpi.is_ok();
    if !with_ndpi && args.baseline.is_none() {
        bail!(
            "ndpiReader not found: install it with `apt-get install libndpi-bin` (or give --baseline to time two dataplane builds only)"
        );
    }
    if !with_ndpi {
        eprintln!("ndpi-speed: ndpiReader not installed: timing dataplane against --baseline only");
    }
    let dataplane = std::env::current_exe()?.with_file_name("dataplane");
    if !dataplane.exists() {
        bail!(
            "{} not found: cargo build --release -p dataplane -p bench",
            dataplane.display()
        );
    }
    let frames = ethernet_frames(&dataset.join("pcap"))?;
    let (packets, bytes) = write_capture(&args.capture, &frames, args.repeat)?;
    eprintln!(
        "ndpi-speed: {} packets ({} MB) in {}",
        packets,
        bytes / 1_000_000,
        args.capture.display()
    );

    let inspect = |binary: &Path| {
        let mut cmd = Command::new(binary);
        cmd.args(["inspect", "--format", "json"]);
        if let Some(rules) = &args.rules {
            cmd.arg("--rules").arg(rules);
        }
        cmd.arg(&args.capture);
        cmd
    };
    // Alternate the tools round by round, so drift on a shared machine hits both.
    let (mut ours, mut theirs, mut before) = (Vec::new(), Vec::new(), Vec::new());
    let (mut our_rss, mut ndpi_rss) = (0, 0);
    for _ in 0..args.rounds {
        if with_ndpi {
            let (t, rss) = timed(
                Command::new("ndpiReader")
                    .arg("-i")
                    .arg(&args.capture)
                    .arg("-q"),
            )?;
            theirs.push(t);
            ndpi_rss = ndpi_rss.max(rss);
        }
        let (t, rss) = timed(&mut inspect(&dataplane))?;
        ours.push(t);
        our_rss = our_rss.max(rss);
        if let Some(baseline) = &args.baseline {
            before.push(timed(&mut inspect(baseline))?.0);
        }
    }
    let d = median(ours);
    let n = if theirs.is_empty() {
        f64::NAN
    } else {
        median(theirs)
    };
    let b = (!before.is_empty()).then(|| median(before));
    let result = Result {
        packets,
        bytes,
        dataplane_seconds: d,
        ndpi_seconds: n,
        dataplane_pps: packets as f64 / d,
        ndpi_pps: packets as f64 / n,
        ratio: n / d,
        dataplane_max_rss_kib: our_rss.max(0),
        ndpi_max_rss_kib: ndpi_rss,
        baseline_seconds: b,
        baseline_pps: b.map(|b| packets as f64 / b),
        vs_baseline: b.map(|b| b / d),
    };
    println!(
        "same capture, same run: {} packets, {} bytes, median of {} rounds each (wall time, output discarded)\n",
        packets, bytes, args.rounds
    );
    println!("| tool | seconds | packets/s | peak RSS |");
    println!("|---|---:|---:|---:|");
    println!(
        "| dataplane inspect | {:.2} | {:.0} | {} MiB |",
        d,
        result.dataplane_pps,
        result.dataplane_max_rss_kib / 1024
    );
    if with_ndpi {
        println!(
            "| ndpiReader -i (nDPI 4.2) | {:.2} | {:.0} | {} MiB |",
            n,
            result.ndpi_pps,
            result.ndpi_max_rss_kib / 1024
        );
    }
    if let (Some(b), Some(pps), Some(path)) = (b, result.baseline_pps, &args.baseline) {
        println!(
            "| {} inspect (baseline) | {:.2} | {:.0} | |",
            path.display(),
            b,
            pps
        );
    }
    if with_ndpi {
        println!("\nspeed ratio: {:.2}x", result.ratio);
    }
    if let Some(v) = result.vs_baseline {
        println!("against the baseline binary: {v:.2}x");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}
