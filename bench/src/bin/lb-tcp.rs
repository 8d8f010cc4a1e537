//! Real TCP through three balancers on the load balancer testbed (see
//! `testbed::lb`, nat topology: the backends' replies come back through the
//! balancer, as they must for a proxy): the XDP balancer in nat mode, an
//! nftables DNAT balancer (jhash over the 5-tuple, conntrack), and haproxy
//! in TCP mode, each with weights 5:3:2 over the same three Python backends.
//! Measures new connections per second (one GET each, from a Python client)
//! and the goodput of 50 MB downloads with curl. Both loads are bounded by
//! the client and the servers more than by any of the balancers on this
//! 2-core VM: the figures say how each balancer behaves under real TCP, the
//! packets/s comparison is `compare lb`. Needs root; haproxy and nftables
//! are skipped with a line when not installed.
//!
//! The XDP balancer runs twice per round: as is, and inspecting (`inspect =
//! true`, `bench/rules/typical.rules`): each connection's request (and FIN)
//! goes through a worker before the kernel balances the rest. Its kernel
//! counters give the packets/s the balancer handled and the share that went
//! through user space.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use bench::lbpeers::installed;
use clap::Parser;
use serde_json::{Value, json};
use testbed::{
    Process,
    lb::{LbTestbed, Return, VIP4},
};

#[derive(Parser, Debug)]
struct Args {
    /// New connections per round.
    #[arg(long, default_value_t = 2000)]
    connections: u32,
    /// 50 MB downloads per round.
    #[arg(long, default_value_t = 4)]
    downloads: u32,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long)]
    json: Option<PathBuf>,
}

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers");

const HAPROXY: &str = "global
  maxconn 4000
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend vip
  bind 198.18.70.100:80
  default_backend pool
backend pool
  balance roundrobin
  server b1 198.18.71.1:80 weight 5
  server b2 198.18.71.2:80 weight 3
  server b3 198.18.71.3:80 weight 2
";

/// (connections/s, Mbit/s) through whatever balances the VIP now.
fn measure(tb: &LbTestbed, args: &Args) -> anyhow::Result<(f64, f64)> {
    let started = std::time::Instant::now();
    let out = tb
        .client
        .command("python3")
        .arg(format!("{PEERS}/lb_client.py"))
        .args(["count", VIP4, "80", &args.connections.to_string()])
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    let doc: Value = serde_json::from_slice(&out.stdout).context("client JSON")?;
    if doc["errors"].as_u64() != Some(0) {
        bail!(
            "connections failed: {doc} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cps = f64::from(args.connections) / secs;
    let mut bits = 0.0;
    let mut time = 0.0;
    for _ in 0..args.downloads {
        let out = tb
            .client
            .command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "60",
                "-w",
                "%{size_download} %{time_total}",
            ])
            .arg(format!("http://{VIP4}/big"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut it = text.split_whitespace();
        let size: f64 = it
            .next()
            .and_then(|s| s.parse().ok())
            .context("curl size")?;
        let t: f64 = it
            .next()
            .and_then(|s| s.parse().ok())
            .context("curl time")?;
        if size < 50.0 * 1024.0 * 1024.0 {
            bail!("download cut short: {text}");
        }
        bits += size * 8.0;
        time += t;
    }
    Ok((cps, bits / time / 1e6))
}

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/typical.rules");

/// One measurement through `dataplane --lb FILE` (more arguments in
/// `extra`): (connections/s, Mbit/s, packets/s, share of packets through
/// user space in %).
fn measure_xdp(
    tb: &LbTestbed,
    args: &Args,
    file: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let stats = file.with_extension("stats.json");
    let mut cmd = bench::lbpeers::dataplane_lb(&tb.lb, "lb0", file)?;
    cmd.arg("--stats-json").arg(&stats).args(extra);
    let mut dp = Process::spawn(cmd)?;
    dp.wait_for_line("load balancing on", Duration::from_secs(20))
        .map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let measured = measure(tb, args);
    let secs = started.elapsed().as_secs_f64();
    dp.interrupt(Duration::from_secs(20))
        .map_err(anyhow::Error::msg)?;
    let (cps, mbps) = measured?;
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    let k = &doc["kernel"];
    let n = |v: &Value| v.as_u64().unwrap_or(0) as f64;
    let service = n(&k["lb_forwarded"]) + n(&k["to_user"]) + n(&k["bypass_drop"]);
    Ok(json!({
        "connections_per_s": cps,
        "mbit_per_s": mbps,
        "packets_per_s": service / secs,
        "user_space_pct": 100.0 * n(&k["to_user"]) / service.max(1.0),
        "inspection": doc["inspection"],
        // what could cost a connection a retransmission
        "kernel": {
            "failover": k["failover"],
            "no_socket": k["no_socket"],
            "lb_conn_lost": k["lb_conn_lost"],
            "lb_no_route": k["lb_no_route"],
        },
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::require_root("lb-tcp (namespaces, XDP)");
    let tb = LbTestbed::up(2, Return::ViaBalancer, |iface| {
        let mut p = xdp_redirect::baseline::Baseline::load().expect("load the baseline programs");
        p.attach(xdp_redirect::baseline::Kind::PassAll, iface)
            .expect("attach XDP_PASS");
        p
    })?;
    let mut servers = Vec::new();
    for (i, ns) in tb.backends.iter().enumerate() {
        let mut cmd = ns.command("python3");
        cmd.arg(format!("{PEERS}/lb_backend.py"))
            .arg(format!("b{}", i + 1));
        let mut p = Process::spawn(cmd)?;
        p.wait_for_line("ready", Duration::from_secs(20))
            .map_err(anyhow::Error::msg)?;
        servers.push(p);
    }
    let dir = std::env::temp_dir().join(format!("lb-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let xdp_file = dir.join("lb.toml");
    std::fs::write(&xdp_file, bench::lbpeers::xdp_config("nat", "tcp", 80))?;
    let inspect_file = dir.join("lb-inspect.toml");
    std::fs::write(
        &inspect_file,
        bench::lbpeers::xdp_config_inspected("nat", "tcp", 80),
    )?;
    let haproxy_file = dir.join("haproxy.cfg");
    std::fs::write(&haproxy_file, HAPROXY)?;
    let (have_nft, have_haproxy) = (installed("nft"), installed("haproxy"));
    let mut rounds = Vec::new();
    for _ in 0..args.rounds {
        let mut round = json!({});
        // the XDP balancer, then the same inspecting
        round["xdp"] = measure_xdp(&tb, &args, &xdp_file, &[])?;
        round["xdp-inspect"] = measure_xdp(&tb, &args, &inspect_file, &["--rules", RULES])?;
        if have_nft {
            bench::lbpeers::nft_load(
                tb.lb.command("nft"),
                &bench::lbpeers::nft_rules("lbtcp", "tcp", 80),
            )?;
            let measured = measure(&tb, &args);
            testbed::run(
                tb.lb
                    .command("nft")
                    .args(["delete", "table", "ip", "lbtcp"]),
            )?;
            let (cps, mbps) = measured?;
            round["nft"] = json!({"connections_per_s": cps, "mbit_per_s": mbps});
        }
        if have_haproxy {
            // a proxy accepts on the VIP itself
            tb.lb
                .ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;
            let mut cmd = tb.lb.command("haproxy");
            cmd.arg("-db").arg("-f").arg(&haproxy_file);
            let mut hp = Process::spawn(cmd)?;
            testbed::wait_until("haproxy listening", Duration::from_secs(10), || {
                let out = tb
                    .lb
                    .command("ss")
                    .args(["-Hltn", "sport", "=", ":80"])
                    .output()
                    .ok()?;
                (!out.stdout.is_empty()).then_some(())
            })
            .map_err(|e| anyhow::anyhow!("{e}: {}", hp.output()))?;
            let measured = measure(&tb, &args);
            hp.interrupt(Duration::from_secs(10)).ok();
            tb.lb
                .ip(&["addr", "del", &format!("{VIP4}/32"), "dev", "lo"])?;
            let (cps, mbps) = measured?;
            round["haproxy"] = json!({"connections_per_s": cps, "mbit_per_s": mbps});
        }
        rounds.push(round);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let median = |who: &str, what: &str| {
        let mut v: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r[who][what].as_f64())
            .collect();
        if v.is_empty() {
            None
        } else {
            Some(bench::median(&mut v))
        }
    };
    println!(
        "TCP through three balancers (nat topology, weights 5:3:2, {} connections and {} x 50 MB per round, median of {} rounds)\n",
        args.connections, args.downloads, args.rounds
    );
    println!("| balancer | new connections/s | download Mbit/s |\n|---|---:|---:|");
    for (who, name) in [
        ("xdp", "dataplane --lb (XDP, nat)"),
        (
            "xdp-inspect",
            "dataplane --lb --rules, inspect = true (typical.rules)",
        ),
        ("nft", "nftables DNAT (jhash, conntrack)"),
        ("haproxy", "haproxy 2.6, mode tcp"),
    ] {
        match (median(who, "connections_per_s"), median(who, "mbit_per_s")) {
            (Some(c), Some(m)) => println!("| {name} | {c:.0} | {m:.0} |"),
            _ => println!("| {name} | not installed | |"),
        }
    }
    for who in ["xdp", "xdp-inspect"] {
        if let (Some(pps), Some(user)) =
            (median(who, "packets_per_s"), median(who, "user_space_pct"))
        {
            println!(
                "{who}: {pps:.0} balancer packets/s over the whole round, {user:.1} % of them through user space"
            );
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"rounds": rounds}))?,
        )?;
    }
    drop(servers);
    Ok(())
}
