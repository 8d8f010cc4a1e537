//! `pktgen`: a bounded packet generator with three engines (see
//! `bench::pktgen`). Run it in the namespace of the interface it sends from:
//!
//!   ip netns exec dp-gen pktgen --iface gen0 --dst-ip 198.18.0.2 \
//!       --dst-mac 02:.. --count 10000000 --threads 2 --payload mix
//!
//! Prints the engine it chose and why, per-thread and total rates every
//! second, and a summary; `--json` writes the result.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use bench::pktgen::{self, Bounds, Engine, PayloadKind, Spec, Target, Transport};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Bounded packet generator: in-kernel live frames, AF_XDP TX, or AF_PACKET")]
struct Args {
    /// Interface to send from.
    #[arg(long, short = 'i')]
    iface: String,
    /// Destination IP address (IPv4 or IPv6).
    #[arg(long, short = 'd')]
    dst_ip: IpAddr,
    /// Destination MAC address (aa:bb:cc:dd:ee:ff).
    #[arg(long, short = 'm', value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Source IP address; default 198.18.0.1 (or 2001:db8::1 for IPv6).
    #[arg(long)]
    src_ip: Option<IpAddr>,
    /// Source MAC address; default the interface's.
    #[arg(long, value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Frame size in bytes, without the 4-byte FCS (60 to the MTU).
    #[arg(long, short = 's', default_value_t = 60)]
    size: usize,
    /// Transport.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    proto: Transport,
    /// Flows (distinct source ports from --sport up).
    #[arg(long, short = 'f', default_value_t = 1)]
    flows: u32,
    /// xdp-live engine: every Nth frame belongs to a short flow (a new
    /// source port every --short-len such frames), the rest to the --flows
    /// long ones; 0: long flows only.
    #[arg(long, default_value_t = 0)]
    short_every: u32,
    /// Frames of each short flow.
    #[arg(long, default_value_t = 1)]
    short_len: u32,
    /// First source port.
    #[arg(long, default_value_t = 1024)]
    sport: u16,
    /// Destination port; default the payload's own (80 HTTP, 443 TLS, 53 DNS, 9 otherwise).
    #[arg(long)]
    dport: Option<u16>,
    /// Frames to send in all.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    count: u64,
    /// Stop after this many seconds, whatever is left.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Frames per second in all; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Sending threads, pinned to cores from --first-cpu.
    #[arg(long, short = 't', default_value_t = 1)]
    threads: usize,
    /// First core to pin a thread to.
    #[arg(long, default_value_t = 0)]
    first_cpu: usize,
    /// Frames per kernel batch (xdp-live) or per send call (afxdp,
    /// afpacket), 1 to 256: smaller queues frames for less time (latency
    /// runs), larger is faster.
    #[arg(long, short = 'b', default_value_t = 64)]
    batch: u32,
    /// Engine; auto picks the fastest available and says why.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    engine: Engine,
    /// Payload, so DPI has work to do.
    #[arg(long, value_enum, default_value_t = PayloadKind::Udp)]
    payload: PayloadKind,
    /// Host name in HTTP, TLS and DNS payloads.
    #[arg(long, default_value = "example.test")]
    host: String,
    /// Replay this pcap/pcapng instead of a template (afxdp or afpacket).
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Stamp a sequence number and the send time (CLOCK_MONOTONIC) at the
    /// start of each UDP payload, for `latency-sink` (xdp-live: stamped by
    /// the kernel program; afpacket: IPv4, stamped just before sendmmsg).
    #[arg(long)]
    latency: bool,
    /// Write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No per-second lines.
    #[arg(long)]
    quiet: bool,
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("`{text}` is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("`{text}` is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    let ifindex = xdp_redirect::iface::index(&args.iface)?;
    let src_mac = match args.src_mac {
        Some(mac) => mac,
        None => {
            let path = format!("/sys/class/net/{}/address", args.iface);
            parse_mac(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("read {path}"))?
                    .trim(),
            )
            .map_err(anyhow::Error::msg)?
        }
    };
    let src_ip = args.src_ip.unwrap_or_else(|| {
        if args.dst_ip.is_ipv4() {
            "198.18.0.1".parse().expect("literal")
        } else {
            "2001:db8::1".parse().expect("literal")
        }
    });
    let spec = Spec {
        src_mac,
        dst_mac: args.dst_mac,
        src_ip,
        dst_ip: args.dst_ip,
        transport: args.proto,
        sport: args.sport,
        dport: args.dport,
        size: args.size,
        flows: args.flows.max(1),
        short_every: args.short_every,
        short_len: args.short_len,
        payload: args.payload,
        host: args.host.clone(),
        latency: args.latency,
    };
    let pcap = args.pcap.as_ref().map(pktgen::read_pcap).transpose()?;
    let (engine, why) = pktgen::choose(args.engine, pcap.is_some());
    if args.latency && engine == Engine::Afxdp {
        bail!("--latency needs the xdp-live or afpacket engine (afxdp sends frames written once)");
    }
    let cores = (0..args.threads).map(|t| args.first_cpu + t).collect();
    println!(
        "pktgen: engine {} ({why}); {} thread(s) from core {}, {} frame(s) of {} B, {} flow(s), payload {:?}",
        serde_json::to_value(engine)?.as_str().unwrap_or("?"),
        args.threads,
        args.first_cpu,
        args.count,
        args.size,
        spec.flows,
        args.payload
    );
    let result = pktgen::run(
        engine,
        &spec,
        pcap,
        &Target {
            iface: args.iface.clone(),
            ifindex,
            cores,
        },
        Bounds {
            count: args.count,
            duration: Duration::from_secs_f64(args.duration),
            rate: args.rate,
            batch: args.batch,
        },
        args.quiet,
    )?;
    println!(
        "pktgen: sent {} frames in {:.3} s: {:.0} pps, {:.1} Mbit/s",
        result.packets,
        result.seconds,
        result.pps,
        result.bps / 1e6
    );
    for t in &result.threads {
        println!("  core {}: {} frames", t.core, t.packets);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
