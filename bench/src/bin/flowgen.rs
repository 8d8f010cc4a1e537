//! Bounded UDP and TCP flows from real sockets in the current network
//! namespace: UDP from one socket per flow, TCP as segments on one raw socket
//! per flow, round robin across flows, paced to a rate, stopped by a packet
//! count and a deadline. Run it in the generator namespace of the testbed:
//!
//!   ip netns exec dp-gen flowgen --dst-ip 198.18.0.2 --udp-flows 300 --rate 50000
//!
//! Addresses must be in 198.18.0.0/15 (the benchmarking range the testbed uses).

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::bail;
use clap::Parser;
use testbed::traffic::{FlowSpec, send_parallel};

/// Sends bounded UDP/TCP flows from real sockets.
#[derive(Parser, Debug)]
struct Args {
    /// Source address (must be configured on an interface here).
    #[arg(long, default_value = "198.18.0.1")]
    src_ip: Ipv4Addr,
    /// Destination address.
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// Destination port of every flow.
    #[arg(long, default_value_t = 9)]
    dst_port: u16,
    /// UDP flows (one socket each).
    #[arg(long, default_value_t = 256)]
    udp_flows: u16,
    /// TCP flows (one raw socket each; segments carry ACK|PSH).
    #[arg(long, default_value_t = 64)]
    tcp_flows: u16,
    /// Packets per flow.
    #[arg(long, default_value_t = 100)]
    packets_per_flow: u32,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Packets per second over all flows; 0 = as fast as the sockets go.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Packets per flow per turn, sent with one sendmmsg() (1 = strict round robin).
    #[arg(long, default_value_t = 1)]
    burst: u32,
    /// Sender threads (flows and rate are divided between them).
    #[arg(long, default_value_t = 1)]
    threads: u16,
    /// Stop after this many seconds, whatever is left.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// First source port.
    #[arg(long, default_value_t = 20_000)]
    src_port_base: u16,
    /// Write {"packets","seconds","pps",...} here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn in_benchmark_range(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 198 && (o[1] == 18 || o[1] == 19)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for ip in [args.src_ip, args.dst_ip] {
        if !in_benchmark_range(ip) {
            bail!(
                "{ip} is outside 198.18.0.0/15; flowgen only sends inside the benchmarking range"
            );
        }
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds");
    }
    let flows = u32::from(args.udp_flows) + u32::from(args.tcp_flows);
    if flows == 0 || u32::from(args.src_port_base) + flows > 65_536 {
        bail!("--udp-flows + --tcp-flows must be at least 1 and fit above --src-port-base");
    }
    let spec = FlowSpec {
        src: args.src_ip,
        dst: args.dst_ip,
        udp_flows: args.udp_flows,
        tcp_flows: args.tcp_flows,
        packets_per_flow: args.packets_per_flow,
        payload_len: args.payload,
        rate_pps: args.rate,
        src_port_base: args.src_port_base,
        dst_port: args.dst_port,
        max_duration: Duration::from_secs_f64(args.duration),
        burst: args.burst,
        payload: None,
    };
    let sent = send_parallel(&spec, args.threads)?;
    let secs = sent.elapsed.as_secs_f64().max(1e-9);
    println!(
        "flowgen: sent {} packets ({} UDP, {} TCP) in {} flows over {:.2} s = {:.0} pps",
        sent.packets(),
        sent.udp_packets,
        sent.tcp_packets,
        sent.flows,
        secs,
        sent.packets() as f64 / secs
    );
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "engine": "socket",
            "packets": sent.packets(),
            "udp_packets": sent.udp_packets,
            "tcp_packets": sent.tcp_packets,
            "flows": sent.flows,
            "seconds": secs,
            "pps": sent.packets() as f64 / secs,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
