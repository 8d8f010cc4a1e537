//! Memory of `dataplane inspect` under a flood of distinct flows: captures
//! with 100,000 and 1,000,000 single-packet UDP flows (198.18.0.0/15
//! addresses), each run with the same `--max-flows`; the peak RSS of the two
//! runs should be the same (flat), since ended flows leave the table.

use std::{fs::File, io::BufWriter, path::Path, process::Command, time::Duration};

use clap::Parser;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use testbed::frames::Packet;

#[derive(Parser, Debug)]
struct Args {
    /// --max-flows given to inspect.
    #[arg(long, default_value_t = 65_536)]
    max_flows: u32,
}

fn write_flows(path: &Path, flows: u32) -> anyhow::Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header)?;
    for i in 0..flows {
        let src = std::net::Ipv4Addr::new(
            198,
            18 + ((i >> 24) & 1) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
        );
        let frame = Packet::udp(
            src.into(),
            1024 + (i & 0xff) as u16,
            "198.19.255.1".parse()?,
            53,
        )
        .with_payload(b"flood")
        .build();
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(u64::from(i)),
            frame.len() as u32,
            &frame,
        ))?;
    }
    Ok(())
}

/// Peak RSS (KiB) of a command, by wait4.
fn peak_rss(cmd: &mut Command) -> anyhow::Result<i64> {
    Ok(bench::run_child(cmd.stdout(std::process::Stdio::null()))?.1)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?.with_file_name("dataplane");
    let dir = std::env::temp_dir();
    println!("| flows in capture | --max-flows | peak RSS |");
    println!("|---:|---:|---:|");
    for flows in [100_000u32, 1_000_000] {
        let path = dir.join(format!("dataplane-flood-{flows}.pcap"));
        write_flows(&path, flows)?;
        let rss = peak_rss(
            Command::new(&bin)
                .args([
                    "inspect",
                    "--format",
                    "json",
                    "--max-flows",
                    &args.max_flows.to_string(),
                ])
                .arg(&path),
        )?;
        println!("| {flows} | {} | {} MiB |", args.max_flows, rss / 1024);
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}
