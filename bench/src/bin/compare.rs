//! `compare`: side-by-side comparison runs, one command each, on the veth
//! testbeds, as ratios measured in the same run. Prints a markdown table and
//! saves the raw numbers as JSON (`--json`). Peers that are not installed
//! are skipped with a line saying how to install them. `--smoke` shrinks
//! every run to seconds (CI runs it).
//!
//!   compare kernel    dataplane bypass vs a bare XDP_DROP (and vs a bare bridge)
//!   compare user      dataplane workers vs a bare AF_XDP receive-and-drop loop
//!   compare dpi       dataplane inspect vs ndpiReader (and Suricata) on one capture
//!   compare lb        the XDP balancer vs nftables DNAT vs haproxy
//!   compare latency   p50/p99/p99.9 of the kernel and user-space paths at
//!                     10 %, 50 % and 90 % of the measured maximum rate
//!   compare ips       the inline bridge vs Suricata 7 in AF_PACKET IPS mode
//!                     (and a bare XDP bridge), the same rules: TCP download
//!                     speed, 64 B UDP frames/s, latency and ping under load
//!   compare generators  pktgen's three engines against each other
//!   compare all       every one of the above
//!
//! Needs root and the release binaries next to this one
//! (`cargo build --release -p dataplane -p bench`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use testbed::{InlineTestbed, Netns, Process, Testbed};

#[derive(Parser, Debug)]
#[command(about = "Comparison runs on the veth testbed, as ratios measured in the same run")]
struct Args {
    #[command(subcommand)]
    what: What,
    /// Seconds-long runs (CI): fewer frames, one round.
    #[arg(long, global = true)]
    smoke: bool,
    /// Rounds per comparison (median of the per-round ratios).
    #[arg(long, global = true, default_value_t = 3)]
    rounds: usize,
    /// Write the raw numbers here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Generators,
    Kernel,
    User,
    Dpi,
    Lb,
    Latency,
    Ips,
    All,
}

use bench::lbpeers::{installed, sibling_bin as bin};

fn median(mut v: Vec<f64>) -> f64 {
    bench::median(&mut v)
}

fn mac(ns: &Netns, iface: &str) -> anyhow::Result<String> {
    Ok(ns
        .command("cat")
        .arg(format!("/sys/class/net/{iface}/address"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?)
}

/// Runs pktgen in `ns`; returns its JSON result.
fn pktgen(ns: &Netns, extra: &[String]) -> anyhow::Result<Value> {
    let json = std::env::temp_dir().join(format!("compare-pktgen-{}.json", std::process::id()));
    let out = ns
        .command(&bin("pktgen")?)
        .args(extra)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .output()?;
    if !out.status.success() {
        bail!(
            "pktgen failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let _ = std::fs::remove_file(&json);
    Ok(v)
}

/// A program held on an interface by a child process, stopped with SIGINT;
/// returns what it printed last (JSON for xdp-baseline).
struct Held(Process);

impl Held {
    fn start(mut cmd: Command, ready: &str) -> anyhow::Result<Held> {
        let mut p = Process::spawn({
            cmd.env("RUST_LOG", "warn");
            cmd
        })?;
        p.wait_for_line(ready, Duration::from_secs(20))
            .map_err(|e| anyhow::anyhow!("{e}\n{}", p.output()))?;
        Ok(Held(p))
    }
    fn stop(mut self) -> anyhow::Result<String> {
        self.0
            .interrupt(Duration::from_secs(20))
            .map_err(anyhow::Error::msg)?;
        Ok(self.0.output())
    }
}

fn last_json(output: &str) -> anyhow::Result<Value> {
    output
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .context("no JSON line in the output")
}

fn stats_file(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("compare-{tag}-{}.json", std::process::id()))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let v = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let _ = std::fs::remove_file(path);
    Ok(v)
}

fn sum_queues(v: &Value, field: &str) -> u64 {
    v["queues"]
        .as_array()
        .map(|q| q.iter().filter_map(|q| q[field].as_u64()).sum())
        .unwrap_or(0)
}

struct Sizes {
    frames: u64,
    rounds: usize,
}

fn sizes(args: &Args) -> Sizes {
    if args.smoke {
        Sizes {
            frames: 200_000,
            rounds: 1,
        }
    } else {
        Sizes {
            frames: 4_000_000,
            rounds: args.rounds.max(1),
        }
    }
}

/// pktgen's engines on the two-namespace testbed, into a counting XDP sink:
/// frames per second each engine sends (2 threads, 64 B, 64 flows).
fn generators(args: &Args) -> anyhow::Result<Value> {
    let s = sizes(args);
    let tb = Testbed::up(2)?;
    let dst_mac = mac(&tb.dut, &tb.dut_if)?;
    let mut rounds = Vec::new();
    for _ in 0..s.rounds {
        let mut round = json!({});
        for engine in ["xdp-live", "afxdp", "afpacket"] {
            let mut cmd = tb.dut.command(&bin("xdp-baseline")?);
            cmd.args(["--iface", "dut0", "--kind", "sink"]);
            let held = Held::start(cmd, "xdp-baseline: attached")?;
            // the socket engines are much slower: a quarter of the frames
            let count = if engine == "xdp-live" {
                s.frames
            } else {
                s.frames / 4
            };
            let sent = pktgen(
                &tb.gen_ns,
                &[
                    "--iface",
                    "gen0",
                    "--dst-ip",
                    "198.18.0.2",
                    "--dst-mac",
                    &dst_mac,
                    "--threads",
                    "2",
                    "--flows",
                    "64",
                    "--engine",
                    engine,
                    "--batch",
                    "64",
                    "--count",
                    &count.to_string(),
                ]
                .map(String::from),
            )?;
            let counted = last_json(&held.stop()?)?["packets"].as_u64().unwrap_or(0);
            round[engine] = json!({"sent_pps": sent["pps"], "sent": sent["packets"],
                "arrived": counted, "seconds": sent["seconds"]});
        }
        rounds.push(round);
    }
    drop(tb);
    let pps = |engine: &str| {
        median(
            rounds
                .iter()
                .map(|r| r[engine]["sent_pps"].as_f64().unwrap_or(0.0))
                .collect(),
        )
    };
    let ratio = median(
        rounds
            .iter()
            .map(|r| {
                r["xdp-live"]["sent_pps"].as_f64().unwrap_or(0.0)
                    / r["afpacket"]["sent_pps"].as_f64().unwrap_or(1.0)
            })
            .collect(),
    );
    println!(
        "\n### Generators (pktgen, 2 threads, 64 B UDP, 64 flows, into a counting XDP sink on veth)\n"
    );
    println!("| engine | frames/s sent | vs AF_PACKET |\n|---|---:|---:|");
    for engine in ["xdp-live", "afxdp", "afpacket"] {
        println!(
            "| {engine} | {:.0} | {:.2} |",
            pps(engine),
            pps(engine) / pps("afpacket").max(1.0)
        );
    }
    println!("\nin-kernel generator / AF_PACKET (median of per-round ratios): {ratio:.1}x");
    Ok(json!({"rounds": rounds, "xdp_live_vs_afpacket": ratio}))
}

/// Arguments of pktgen on the two-namespace testbed: 2 threads, 64 flows,
/// the in-kernel generator.
fn testbed_gen_args(dst_mac: &str, batch: u32, count: u64) -> Vec<String> {
    [
        "--iface",
        "gen0",
        "--dst-ip",
        "198.18.0.2",
        "--dst-mac",
        dst_mac,
        "--threads",
        "2",
        "--flows",
        "64",
        "--engine",
        "xdp-live",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--batch".into(),
        batch.to_string(),
        "--count".into(),
        count.to_string(),
    ])
    .collect()
}

/// The median over rounds of a number, or of the ratio of two.
fn round_median(rounds: &[Value], key: &str) -> f64 {
    median(
        rounds
            .iter()
            .map(|r| r[key].as_f64().unwrap_or(0.0))
            .collect(),
    )
}

fn round_ratio(rounds: &[Value], num: &str, den: &str) -> f64 {
    median(
        rounds
            .iter()
            .map(|r| r[num].as_f64().unwrap_or(0.0) / r[den].as_f64().unwrap_or(1.0).max(1e-9))
            .collect(),
    )
}

/// One round of "reference program against the data plane" on the
/// two-namespace testbed: the same pktgen run against each; returns the
/// reference's frames per second (what it counted) and the data plane's
/// final stats with its frames per second as `count` reads them.
fn reference_vs_dataplane(
    tb: &Testbed,
    reference: &[&str],
    dataplane: &[&str],
    gen_args: &[String],
    count: impl Fn(&Value) -> u64,
) -> anyhow::Result<(f64, f64, Value)> {
    let mut cmd = tb.dut.command(&bin("xdp-baseline")?);
    cmd.args(["--iface", "dut0"]).args(reference);
    let held = Held::start(cmd, "xdp-baseline: attached")?;
    let sent = pktgen(&tb.gen_ns, gen_args)?;
    std::thread::sleep(Duration::from_millis(200)); // rings drain
    let seconds = sent["seconds"].as_f64().unwrap_or(1.0);
    let reference = last_json(&held.stop()?)?["packets"].as_u64().unwrap_or(0) as f64 / seconds;

    let stats = stats_file("dataplane");
    let mut cmd = tb.dut.command(&bin("dataplane")?);
    cmd.args(["--iface", "dut0", "--queues", "2", "--no-control"])
        .args(dataplane)
        .arg("--stats-json")
        .arg(&stats)
        .args(["--stats-interval", "0"]);
    let held = Held::start(cmd, "dataplane: running")?;
    let sent = pktgen(&tb.gen_ns, gen_args)?;
    std::thread::sleep(Duration::from_millis(200));
    held.stop()?;
    let v = read_json(&stats)?;
    let dp = count(&v) as f64 / sent["seconds"].as_f64().unwrap_or(1.0);
    Ok((reference, dp, v))
}

/// Kernel path on the two-namespace testbed: the data plane dropping every
/// flow in XDP after its first packet (a drop rule) against a bare XDP_DROP
/// that counts; plus the inline bridge against a bare XDP bridge (`bridge`).
fn kernel(args: &Args) -> anyhow::Result<Value> {
    let s = sizes(args);
    let tb = Testbed::up(2)?;
    let gen_args = testbed_gen_args(&mac(&tb.dut, &tb.dut_if)?, 256, s.frames);
    let rules = std::env::temp_dir().join(format!("compare-drop-{}.rules", std::process::id()));
    std::fs::write(
        &rules,
        "drop udp any any -> any any (msg:\"drop all\"; sid:1;)\n",
    )?;
    let rules_arg = rules.to_string_lossy().into_owned();
    let mut rounds = Vec::new();
    for _ in 0..s.rounds {
        let (bare, dp, v) = reference_vs_dataplane(
            &tb,
            &["--kind", "sink"],
            &["--rules", &rules_arg],
            &gen_args,
            |v| v["kernel"]["rx"].as_u64().unwrap_or(0),
        )?;
        rounds.push(
            json!({"bare_xdp_drop_pps": bare, "dataplane_bypass_drop_pps": dp,
            "in_kernel": v["kernel"]["bypass_drop"], "to_user": v["kernel"]["to_user"]}),
        );
    }
    let _ = std::fs::remove_file(&rules);
    drop(tb);
    let ratio = round_ratio(&rounds, "dataplane_bypass_drop_pps", "bare_xdp_drop_pps");
    let bare = round_median(&rounds, "bare_xdp_drop_pps");
    let dp = round_median(&rounds, "dataplane_bypass_drop_pps");
    println!(
        "\n### Kernel path: drop in XDP (64 B UDP, 64 flows per core, 2 generator threads, in-kernel generator)\n"
    );
    println!("| program | frames/s | ratio |\n|---|---:|---:|");
    println!("| bare XDP_DROP (counting) | {bare:.0} | 1.00 |");
    println!("| dataplane, drop verdicts in XDP | {dp:.0} | {ratio:.2} |");

    // The bridge comparison has its own benchmark; run it short.
    let bridge_json = stats_file("bridge");
    let packets = if args.smoke { "200000" } else { "2000000" };
    let reps = s.rounds.to_string();
    let out = Command::new(bin("bridge")?)
        .args([
            "--packets",
            packets,
            "--reps",
            &reps,
            "--short-every",
            "0",
            "--json",
        ])
        .arg(&bridge_json)
        .output()?;
    if !out.status.success() {
        bail!("bridge: {}", String::from_utf8_lossy(&out.stderr));
    }
    let bridge = read_json(&bridge_json)?;
    println!(
        "\nInline bridge, only long flows (`bridge --short-every 0`): dataplane / bare XDP bridge = {:.2}",
        bridge["ratio_dynamic_vs_bare"].as_f64().unwrap_or(0.0)
    );
    Ok(json!({"drop": {"rounds": rounds, "ratio": ratio}, "bridge": bridge}))
}

/// User-space path: every packet to user space, the data plane's workers
/// against a bare AF_XDP receive-and-drop loop: in mirror mode (AF_XDP, the
/// frames themselves) and in host mode (the kernel copies each packet into
/// a worker's ring buffer and passes the original to the stack).
fn user(args: &Args) -> anyhow::Result<Value> {
    let s = sizes(args);
    let tb = Testbed::up(2)?;
    let gen_args = testbed_gen_args(&mac(&tb.dut, &tb.dut_if)?, 64, s.frames / 4);
    let mut rounds = Vec::new();
    for _ in 0..s.rounds {
        let mut round = json!({});
        for (mode, flags) in [
            ("mirror", &["--mirror", "--sniff-packets", "unlimited"][..]),
            ("host", &["--sniff-packets", "unlimited"][..]),
        ] {
            let (bare, dp, _) = reference_vs_dataplane(
                &tb,
                &["--kind", "xsk-drop", "--queues", "2"],
                flags,
                &gen_args,
                |v| sum_queues(v, "rx_packets"),
            )?;
            round[format!("bare_af_xdp_pps_{mode}_run")] = json!(bare);
            round[format!("dataplane_{mode}_pps")] = json!(dp);
            round[format!("ratio_{mode}")] = json!(dp / bare.max(1.0));
        }
        rounds.push(round);
    }
    drop(tb);
    let ratio_mirror = round_median(&rounds, "ratio_mirror");
    let ratio_host = round_median(&rounds, "ratio_host");
    let bare = round_median(&rounds, "bare_af_xdp_pps_mirror_run");
    let mirror = round_median(&rounds, "dataplane_mirror_pps");
    let host = round_median(&rounds, "dataplane_host_pps");
    println!(
        "\n### User-space path: every packet to user space (64 B UDP, 2 queues/workers, veth)\n"
    );
    println!(
        "| receiver | frames/s received | ratio to the bare loop of its round |\n|---|---:|---:|"
    );
    println!("| bare AF_XDP receive-and-drop loop (copy mode) | {bare:.0} | 1.00 |");
    println!(
        "| dataplane --mirror: AF_XDP, frames in place (decode, flow table, stats) | {mirror:.0} | {ratio_mirror:.2} |"
    );
    println!(
        "| dataplane host mode: ring-buffer copies, originals to the stack | {host:.0} | {ratio_host:.2} |"
    );
    Ok(json!({"rounds": rounds, "ratio": ratio_mirror, "ratio_host": ratio_host}))
}

/// DPI: dataplane inspect vs ndpiReader (and Suricata) on one capture.
fn dpi(args: &Args) -> anyhow::Result<Value> {
    println!("\n### DPI on one capture\n");
    let mut result = json!({});
    if installed("ndpiReader") {
        let out_json = stats_file("ndpi");
        let repeat = if args.smoke { "1" } else { "40" };
        let rounds = if args.smoke { "1" } else { "3" };
        let out = Command::new(bin("ndpi-speed")?)
            .args(["--repeat", repeat, "--rounds", rounds, "--json"])
            .arg(&out_json)
            .output()?;
        if out.status.success() {
            println!("{}", String::from_utf8_lossy(&out.stdout));
            result["ndpi"] = read_json(&out_json)?;
        } else {
            println!(
                "nDPI comparison failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        println!("- ndpiReader: not installed, skipped (apt-get install libndpi-bin)");
    }
    if installed("suricata") {
        println!(
            "- Suricata: installed, but this comparison is not written yet (see bench/README.md)"
        );
    } else {
        println!(
            "- Suricata: not installed, skipped (Debian 13 or bookworm-backports: apt-get install suricata)"
        );
    }
    Ok(result)
}

/// The dut of the two-namespace testbed as a one-armed balancer: the VIP's
/// backends (198.18.71.1-3) are reached back through dut0, and their MAC is
/// the generator's, so whatever the balancer forwards lands in gen0's
/// counting sink. Forwarding on (dut's own namespace): both the kernel's
/// DNAT and the XDP balancer's FIB lookups need it.
fn lb_dut(tb: &Testbed) -> anyhow::Result<()> {
    let gen_mac = mac(&tb.gen_ns, &tb.gen_if)?;
    tb.dut.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    tb.dut.sysctl("net.ipv4.conf.dut0.forwarding", "1")?;
    tb.dut
        .ip(&["route", "add", "198.18.71.0/24", "dev", "dut0"])?;
    for b in 1..=3 {
        tb.dut.ip(&[
            "neigh",
            "add",
            &format!("198.18.71.{b}"),
            "lladdr",
            &gen_mac,
            "dev",
            "dut0",
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// Packets/s through the XDP balancer against an nftables DNAT balancer on
/// the same testbed, generator and flows, counted where they come out.
fn lb(args: &Args) -> anyhow::Result<Value> {
    println!(
        "\n### Load balancer: packets/s forwarded (64 B UDP to the VIP, 2 generator threads x 64 flows, in-kernel generator; one-armed: in and out of dut0)\n"
    );
    let s = sizes(args);
    let tb = Testbed::up(2)?;
    lb_dut(&tb)?;
    let file = std::env::temp_dir().join(format!("compare-lb-{}.toml", std::process::id()));
    std::fs::write(&file, bench::lbpeers::xdp_config("ipip", "udp", 9))?;
    // inspect, then balance: the same service, its flows' first datagrams
    // through a worker with the typical rules
    let inspect_file = file.with_extension("inspect.toml");
    std::fs::write(
        &inspect_file,
        bench::lbpeers::xdp_config_inspected("ipip", "udp", 9),
    )?;
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/typical.rules");
    let dut_mac = mac(&tb.dut, &tb.dut_if)?;
    let mut long_args = testbed_gen_args(&dut_mac, 64, s.frames);
    long_args[3] = "198.18.70.100".into(); // --dst-ip: the VIP
    // the short-flow mix: every 4th frame is of a new 2-frame flow; 400,000
    // frames, so that each of the 50,000 short flows is new (a 5-tuple to
    // one service port varies by source port only)
    let mut mix_args = testbed_gen_args(&dut_mac, 64, 400_000);
    mix_args[3] = "198.18.70.100".into();
    mix_args.extend(["--short-every", "4", "--short-len", "2"].map(String::from));
    let have_nft = installed("nft");
    if !have_nft {
        println!("- nftables: not installed, skipped (apt-get install nftables)");
    }
    // pktgen, with gen0's sink counting what the balancer sent back
    let through_with = |gen_args: &[String]| -> anyhow::Result<(f64, u64)> {
        let mut cmd = tb.gen_ns.command(&bin("xdp-baseline")?);
        cmd.args(["--iface", "gen0", "--kind", "sink"]);
        let sink = Held::start(cmd, "xdp-baseline: attached")?;
        let sent = pktgen(&tb.gen_ns, gen_args)?;
        std::thread::sleep(Duration::from_millis(200)); // in flight
        let got = last_json(&sink.stop()?)?["packets"].as_u64().unwrap_or(0);
        let seconds = sent["seconds"].as_f64().unwrap_or(1.0);
        let pps = got as f64 / seconds;
        Ok((pps, sent["packets"].as_u64().unwrap_or(0)))
    };
    let through = || through_with(&long_args);
    // `dataplane --lb FILE` on dut0, with more arguments
    let balancer = |file: &std::path::Path, extra: &[&std::ffi::OsStr]| -> anyhow::Result<Held> {
        let mut cmd = bench::lbpeers::dataplane_lb(&tb.dut, "dut0", file)?;
        cmd.args(extra);
        Held::start(cmd, "load balancing on")
    };
    let mut rounds = Vec::new();
    for _ in 0..s.rounds {
        let mut round = json!({});
        let dp = balancer(&file, &[])?;
        let (pps, sent) = through()?;
        let (mix_pps, _) = through_with(&mix_args)?;
        dp.stop()?;
        round["xdp_pps"] = json!(pps);
        round["xdp_mix_pps"] = json!(mix_pps);
        round["sent"] = json!(sent);
        // the same, inspecting
        let stats = file.with_extension("stats.json");
        let dp = balancer(
            &inspect_file,
            &[
                "--rules".as_ref(),
                rules.as_ref(),
                "--stats-json".as_ref(),
                stats.as_os_str(),
            ],
        )?;
        let (pps, _) = through()?;
        let (mix_pps, _) = through_with(&mix_args)?;
        dp.stop()?;
        round["inspect_pps"] = json!(pps);
        round["inspect_mix_pps"] = json!(mix_pps);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
        let k = &doc["kernel"];
        let n = |v: &Value| v.as_u64().unwrap_or(0) as f64;
        round["inspect_user_share"] =
            json!(n(&k["to_user"]) / (n(&k["to_user"]) + n(&k["lb_forwarded"])).max(1.0));
        round["inspection"] = doc["inspection"].clone();
        let _ = std::fs::remove_file(&stats);
        // the testbed's ceiling: a program that only sends frames back
        let mut cmd = tb.dut.command(&bin("xdp-baseline")?);
        cmd.args(["--iface", "dut0", "--kind", "tx"]);
        let tx = Held::start(cmd, "xdp-baseline: attached")?;
        let (pps, _) = through()?;
        tx.stop()?;
        round["bare_xdp_tx_pps"] = json!(pps);
        if have_nft {
            bench::lbpeers::nft_load(
                tb.dut.command("nft"),
                &bench::lbpeers::nft_rules("lbbench", "udp", 9),
            )?;
            // veth takes frames the generator sends with XDP only into a
            // port with an XDP program: XDP_PASS, then the stack's DNAT
            let mut cmd = tb.dut.command(&bin("xdp-baseline")?);
            cmd.args(["--iface", "dut0", "--kind", "pass"]);
            let pass = Held::start(cmd, "xdp-baseline: attached")?;
            let (pps, _) = through()?;
            pass.stop()?;
            testbed::run(
                tb.dut
                    .command("nft")
                    .args(["delete", "table", "ip", "lbbench"]),
            )?;
            round["nft_pps"] = json!(pps);
        }
        rounds.push(round);
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&inspect_file);
    drop(tb);
    let xdp = round_median(&rounds, "xdp_pps");
    let ceiling = round_median(&rounds, "bare_xdp_tx_pps");
    let of_ceiling = round_ratio(&rounds, "xdp_pps", "bare_xdp_tx_pps");
    println!("| balancer | packets/s forwarded | ratio |\n|---|---:|---:|");
    let mut result = json!({"rounds": rounds, "xdp_pps": xdp, "bare_xdp_tx_pps": ceiling, "xdp_vs_bare_tx": of_ceiling});
    if have_nft {
        let nft = round_median(&rounds, "nft_pps");
        let ratio = round_ratio(&rounds, "xdp_pps", "nft_pps");
        println!(
            "| nftables DNAT (jhash over the 5-tuple, mod 10, 5:3:2), conntrack | {nft:.0} | 1.00 |"
        );
        println!("| dataplane --lb (XDP, ipip, Maglev 5:3:2) | {xdp:.0} | {ratio:.2} |");
        println!(
            "| ceiling: bare XDP_TX, MACs swapped, no balancing | {ceiling:.0} | {:.2} |",
            ceiling / nft.max(1.0)
        );
        result["nft_pps"] = json!(nft);
        result["xdp_vs_nft"] = json!(ratio);
    } else {
        println!("| dataplane --lb (XDP, ipip, Maglev 5:3:2) | {xdp:.0} | |");
        println!("| ceiling: bare XDP_TX, MACs swapped, no balancing | {ceiling:.0} | |");
    }
    println!("\ndataplane --lb / bare XDP_TX (median of per-round ratios): {of_ceiling:.2}");
    println!(
        "\nInspect, then balance (the same service with inspect = true and bench/rules/typical.rules; both packets and datagrams of both runs of each round):\n"
    );
    println!("| traffic | balancing only | inspect = true | ratio |\n|---|---:|---:|---:|");
    for (name, plain, inspected) in [
        ("128 long flows", "xdp_pps", "inspect_pps"),
        (
            "mix: 1 frame in 4 in new 2-frame flows (400,000 frames)",
            "xdp_mix_pps",
            "inspect_mix_pps",
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} |",
            round_median(&rounds, plain),
            round_median(&rounds, inspected),
            round_ratio(&rounds, inspected, plain)
        );
        result[inspected] = json!(round_median(&rounds, inspected));
        result[plain] = json!(round_median(&rounds, plain));
    }
    println!(
        "\nshare of the inspecting runs' service packets that went through user space: {:.1} %",
        100.0 * round_median(&rounds, "inspect_user_share")
    );
    if installed("haproxy") {
        println!(
            "\n- haproxy: installed, but a TCP proxy terminates connections and cannot be loaded with packets; see bench/README.md"
        );
    } else {
        println!(
            "\n- haproxy: not installed (apt-get install haproxy); a TCP proxy terminates connections and is not measured in packets/s here"
        );
    }
    Ok(result)
}

/// Latency through the inline bridge at 10/50/90 % of each path's maximum
/// rate: the kernel path (flows forwarded in XDP after their first packet)
/// and the user-space path (every packet through a worker). The generator is
/// AF_PACKET, stamping each frame just before `sendmmsg`: with the in-kernel
/// generator feeding the bridge, worker wake-ups were delayed by up to ~20 ms
/// (an interaction of live frames with the workers' copy-mode TX on veth,
/// not seen with socket traffic), which would measure the generator.
/// Stamped 64 B UDP frames from the client end of the inline testbed to
/// the server's latency sink (pktgen's AF_PACKET engine, one thread on core
/// 1, 16 flows): `count` frames at `rate` per second (0: as fast as it can).
fn latency_load(tb: &InlineTestbed, dst_mac: &str, rate: u64, count: u64) -> anyhow::Result<Value> {
    let mut a: Vec<String> = [
        "--iface",
        "cli0",
        "--dst-ip",
        "198.18.1.2",
        "--dst-mac",
        dst_mac,
        "--threads",
        "1",
        "--first-cpu",
        "1",
        "--flows",
        "16",
        "--engine",
        "afpacket",
        "--batch",
        "16",
        "--latency",
    ]
    .map(String::from)
    .to_vec();
    a.extend([
        "--rate".into(),
        rate.to_string(),
        "--count".into(),
        count.to_string(),
    ]);
    pktgen(&tb.client, &a)
}

/// The latency sink on the server end of the inline testbed, writing its
/// histogram to `dir/<tag>.hgrm`; stopped (and read) with [`Held::stop`].
fn latency_sink(tb: &InlineTestbed, dir: &Path, tag: &str) -> anyhow::Result<Held> {
    let mut cmd = tb.server.command(&bin("latency-sink")?);
    cmd.args([
        "--iface",
        "srv0",
        "--duration",
        "60",
        "--idle",
        "1",
        "--announce",
    ])
    .arg("--hgrm")
    .arg(dir.join(format!("{tag}.hgrm")));
    Held::start(cmd, "latency-sink: listening")
}

/// How many stamped frames a stopped latency sink says arrived.
fn sink_delivered(output: &str) -> f64 {
    output
        .lines()
        .find_map(|l| {
            l.strip_prefix("latency-sink: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn latency(args: &Args) -> anyhow::Result<Value> {
    let tb = InlineTestbed::up(2)?;
    // the client end needs nothing: XDP_TX from the generator enters br0,
    // which runs the data plane; the server end runs the latency sink
    let dst_mac = mac(&tb.server, &tb.server_if)?;
    let frames: u64 = if args.smoke { 50_000 } else { 1_000_000 };
    let dir = std::env::temp_dir().join(format!("compare-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut result = json!({});
    let mut table = Vec::new();
    let mut plotted = Vec::new();
    for (path, extra) in [
        ("kernel", &["--sniff-packets", "1"][..]),
        ("user", &["--sniff-packets", "unlimited"][..]),
    ] {
        let mut cmd = tb.dut.command(&bin("dataplane")?);
        // Workers on core 0, the generator on core 1: on veth the
        // generator's core picks the receive queue, and a worker sharing
        // its core would measure the scheduler, not the data plane.
        cmd.args([
            "--iface", "br0", "--peer", "br1", "--queues", "2", "--cores", "0",
        ])
        .args(extra)
        .args(["--stats-interval", "0", "--no-control"])
        .arg("--latency-hgrm")
        .arg(dir.join(format!("dataplane-{path}")));
        let dp = Held::start(cmd, "dataplane: running")?;
        let send = |rate: u64, count: u64| latency_load(&tb, &dst_mac, rate, count);
        let sink = |tag: &str| latency_sink(&tb, &dir, tag);
        // Maximum rate: what arrives when sending as fast as possible.
        let s = sink(&format!("{path}-max"))?;
        let sent = send(0, frames)?;
        let out = s.stop()?;
        let delivered = sink_delivered(&out);
        let max_rate = delivered / sent["seconds"].as_f64().unwrap_or(1.0);
        eprintln!(
            "latency, {path} path: {delivered} of {} frames arrived at full speed ({max_rate:.0} pps)",
            sent["packets"]
        );
        result[path] = json!({"max_pps": max_rate});
        for pct in [10u64, 50, 90] {
            let rate = (max_rate * pct as f64 / 100.0).max(1000.0) as u64;
            let tag = format!("{path}-{pct}");
            let s = sink(&tag)?;
            let count = (rate * 2).min(frames); // about 2 s
            send(rate, count)?;
            s.stop()?;
            let points = bench::latency::read_hgrm(&dir.join(format!("{tag}.hgrm")))?;
            let at = |q: f64| {
                points
                    .iter()
                    .find(|(p, _)| *p >= q)
                    .map_or(f64::NAN, |&(_, v)| v)
            };
            let (p50, p99, p999) = (at(0.5), at(0.99), at(0.999));
            table.push(format!(
                "| {path} | {pct} % ({rate} pps) | {p50:.1} | {p99:.1} | {p999:.1} |"
            ));
            result[path][format!("at_{pct}")] =
                json!({"rate": rate, "p50_us": p50, "p99_us": p99, "p999_us": p999});
            plotted.push((format!("{path} path, {pct} %"), points));
        }
        dp.stop()?;
    }
    drop(tb);
    println!(
        "\n### Latency through the inline bridge (one-way, µs; 64 B UDP, 16 flows, AF_PACKET generator on core 1 stamping at sendmmsg in batches of 16, workers on core 0)\n"
    );
    println!("| path | load | p50 | p99 | p99.9 |\n|---|---|---:|---:|---:|");
    for row in &table {
        println!("{row}");
    }
    let plot = dir.join("latency.svg");
    bench::latency::plot(&plotted, "us", &plot)?;
    println!(
        "\n.hgrm files and the plot: {} (latency.svg)",
        dir.display()
    );
    result["files"] = json!(dir);
    Ok(result)
}

/// Suricata's configuration for the IPS comparison: AF_PACKET IPS mode
/// between the bridge's two ports (copy-mode ips, one worker thread per
/// port, as the data plane's two queues), the app-layer parsers the rules
/// need, logs in `dir`.
fn suricata_yaml(dir: &Path) -> String {
    format!(
        r#"%YAML 1.1
---
vars:
  address-groups:
    HOME_NET: "[198.18.0.0/15]"
    EXTERNAL_NET: "any"
  port-groups:
    HTTP_PORTS: "80"
default-log-dir: {dir}
outputs:
  - fast:
      enabled: yes
      filename: fast.log
af-packet:
  - interface: br0
    threads: 1
    copy-mode: ips
    copy-iface: br1
    cluster-id: 98
    cluster-type: cluster_flow
  - interface: br1
    threads: 1
    copy-mode: ips
    copy-iface: br0
    cluster-id: 97
    cluster-type: cluster_flow
app-layer:
  protocols:
    http:
      enabled: yes
    tls:
      enabled: yes
      detection-ports:
        dp: 443
    dns:
      tcp:
        enabled: yes
        detection-ports:
          dp: 53
      udp:
        enabled: yes
        detection-ports:
          dp: 53
logging:
  default-log-level: notice
  outputs:
    - console:
        enabled: yes
"#,
        dir = dir.display()
    )
}

/// What the IPS comparison runs as the device under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ips {
    Bare,
    Dataplane,
    Suricata,
}

impl Ips {
    fn name(self) -> &'static str {
        match self {
            Ips::Bare => "bare XDP bridge (no inspection)",
            Ips::Dataplane => "dataplane inline (--peer), typical.rules",
            Ips::Suricata => "Suricata 7 AF_PACKET IPS, typical.rules",
        }
    }
}

/// Percentile `q` (0..1) of `values`.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// The inline bridge against Suricata in IPS mode on the three-namespace
/// testbed, with the same rules (bench/rules/typical.rules), each round
/// running the three devices in turn: a 10 MB HTTP download through the
/// bridge (curl to Python's http.server), 64 B UDP at full speed (pktgen's
/// AF_PACKET engine into the latency sink), then a fixed 50 kpps of it with
/// one-way latency and ping RTTs under that load.
fn ips(args: &Args) -> anyhow::Result<Value> {
    use xdp_redirect::baseline::{Baseline, Kind};
    if !installed("suricata") {
        eprintln!(
            "- Suricata: not installed, skipped (Debian bookworm-backports: scripts/install-deps.sh --bench)"
        );
        return Ok(json!({"skipped": "suricata not installed"}));
    }
    let tb = InlineTestbed::up(2)?;
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/typical.rules");
    let dir = std::env::temp_dir().join(format!("compare-ips-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let scratch = testbed::Scratch::new("compare-ips");
    let (cert, key) = testbed::peers::self_signed_cert(&scratch);
    let servers = testbed::peers::start_servers(&tb.server, tb.server_ip, &cert, &key);
    let pass = |ns: &Netns, iface: &str| -> anyhow::Result<Baseline> {
        let iface = iface.to_string();
        ns.run_inside(move || -> anyhow::Result<Baseline> {
            let mut b = Baseline::load()?;
            b.attach(Kind::PassAll, &iface)?;
            Ok(b)
        })?
    };
    // veth delivers XDP redirects only to a peer with an XDP program
    let _client_pass = pass(&tb.client, &tb.client_if)?;
    let dst_mac = mac(&tb.server, &tb.server_if)?;
    let frames: u64 = if args.smoke { 100_000 } else { 1_000_000 };
    let rounds = if args.smoke { 1 } else { args.rounds.max(1) };
    let send = |rate: u64, count: u64| latency_load(&tb, &dst_mac, rate, count);
    let sink = |tag: &str| latency_sink(&tb, &dir, tag);
    let mut rows: Vec<Value> = Vec::new();
    for round in 0..rounds {
        for device in [Ips::Bare, Ips::Dataplane, Ips::Suricata] {
            let tag = format!("{device:?}-{round}").to_lowercase();
            let server_pass = pass(&tb.server, &tb.server_if)?;
            let held: Option<Held>;
            let _bridge: Option<Baseline>;
            match device {
                Ips::Bare => {
                    _bridge = Some(bench::bare_bridge(&tb)?);
                    held = None;
                }
                Ips::Dataplane => {
                    _bridge = None;
                    let mut cmd = tb.dut.command(&bin("dataplane")?);
                    cmd.args(["--iface", "br0", "--peer", "br1", "--queues", "2"])
                        .args(["--no-control", "--stats-interval", "0"])
                        .arg("--rules")
                        .arg(&rules);
                    held = Some(Held::start(cmd, "dataplane: running")?);
                }
                Ips::Suricata => {
                    _bridge = None;
                    let sdir = dir.join(&tag);
                    std::fs::create_dir_all(&sdir)?;
                    let yaml = sdir.join("suricata.yaml");
                    std::fs::write(&yaml, suricata_yaml(&sdir))?;
                    let mut cmd = tb.dut.command("suricata");
                    cmd.arg("-c")
                        .arg(&yaml)
                        .args(["--af-packet", "--runmode", "workers", "-k", "none"])
                        .arg("-S")
                        .arg(&rules)
                        .arg("-l")
                        .arg(&sdir)
                        .arg("--pidfile")
                        .arg(sdir.join("suricata.pid"));
                    held = Some(Held::start(cmd, "Engine started")?);
                }
            }
            // TCP: one 10 MB download (the first one warms ARP up).
            let url = "http://allowed.test/big";
            testbed::peers::curl(&tb.client, url, "allowed.test", tb.server_ip, 80, 30);
            let (ok, speed) = testbed::peers::run_in(
                &tb.client,
                "curl",
                &[
                    "-sS",
                    "--noproxy",
                    "*",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{speed_download}",
                    "--max-time",
                    "60",
                    "--resolve",
                    "allowed.test:80:198.18.1.2",
                    url,
                ],
            );
            let tcp_mbps = if ok {
                speed.trim().parse::<f64>().unwrap_or(0.0) * 8.0 / 1e6
            } else {
                0.0
            };
            // Both IPSes enforce the rules: the blocked site does not load.
            let blocked_loads = testbed::peers::curl(
                &tb.client,
                "http://blocked.test/",
                "blocked.test",
                tb.server_ip,
                80,
                3,
            )
            .0;
            drop(server_pass);
            // UDP at full speed.
            let s = sink(&format!("{tag}-max"))?;
            let sent = send(0, frames)?;
            let out = s.stop()?;
            let delivered = sink_delivered(&out);
            let udp_pps = delivered / sent["seconds"].as_f64().unwrap_or(1.0);
            // A fixed 50 kpps for 3 s: one-way latency of the load, and ping.
            let s = sink(&format!("{tag}-load"))?;
            let ping = {
                let mut cmd = tb.client.command("ping");
                cmd.args(["-n", "-c", "100", "-i", "0.02", "198.18.1.2"]);
                Process::spawn(cmd)?
            };
            send(50_000, 150_000)?;
            let mut ping = ping;
            let _ = ping.wait_exit(Duration::from_secs(15));
            s.stop()?;
            let mut rtts: Vec<f64> = ping
                .output()
                .lines()
                .filter_map(|l| {
                    l.split("time=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .collect();
            let points = bench::latency::read_hgrm(&dir.join(format!("{tag}-load.hgrm")))?;
            let at = |q: f64| {
                points
                    .iter()
                    .find(|(p, _)| *p >= q)
                    .map_or(f64::NAN, |&(_, v)| v)
            };
            let row = json!({
                "device": device.name(),
                "round": round + 1,
                "tcp_mbit_s": tcp_mbps,
                "blocked_site_loaded": blocked_loads,
                "udp_pps": udp_pps,
                "load_p50_us": at(0.5),
                "load_p99_us": at(0.99),
                "ping_replies": rtts.len(),
                "ping_p50_ms": percentile(&mut rtts, 0.5),
                "ping_p99_ms": percentile(&mut rtts, 0.99),
            });
            eprintln!("ips: {row}");
            rows.push(row);
            if let Some(held) = held {
                held.stop()?;
            }
        }
    }
    drop(servers);
    let med = |device: Ips, key: &str| {
        median(
            rows.iter()
                .filter(|r| r["device"] == device.name())
                .map(|r| r[key].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    println!(
        "\n### Inline IPS: dataplane vs Suricata 7 (AF_PACKET IPS), same rules, 2-core VM, veth, median of {rounds} round(s)\n"
    );
    println!(
        "| device | TCP download (Mbit/s) | 64 B UDP delivered (frames/s) | one-way p50 / p99 at 50 kpps (µs) | ping p50 / p99 under that load (ms) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut summary = json!({"rows": rows});
    for device in [Ips::Bare, Ips::Dataplane, Ips::Suricata] {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} / {:.1} | {:.3} / {:.3} |",
            device.name(),
            med(device, "tcp_mbit_s"),
            med(device, "udp_pps"),
            med(device, "load_p50_us"),
            med(device, "load_p99_us"),
            med(device, "ping_p50_ms"),
            med(device, "ping_p99_ms"),
        );
    }
    for key in ["tcp_mbit_s", "udp_pps"] {
        let r = med(Ips::Dataplane, key) / med(Ips::Suricata, key);
        println!("dataplane / Suricata, {key}: {r:.2}x");
        summary[format!("ratio_{key}")] = json!(r);
    }
    for key in ["load_p99_us", "ping_p99_ms"] {
        let r = med(Ips::Suricata, key) / med(Ips::Dataplane, key);
        println!(
            "Suricata / dataplane, {key} (lower is better for the dataplane when > 1): {r:.2}x"
        );
        summary[format!("ratio_{key}")] = json!(r);
    }
    Ok(summary)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::require_root("the comparison runs");
    let mut out = json!({"date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "smoke": args.smoke});
    let all = args.what == What::All;
    if all || args.what == What::Generators {
        out["generators"] = generators(&args)?;
    }
    if all || args.what == What::Kernel {
        out["kernel"] = kernel(&args)?;
    }
    if all || args.what == What::User {
        out["user"] = user(&args)?;
    }
    if all || args.what == What::Dpi {
        out["dpi"] = dpi(&args)?;
    }
    if all || args.what == What::Lb {
        out["lb"] = lb(&args)?;
    }
    if all || args.what == What::Latency {
        out["latency"] = latency(&args)?;
    }
    if all || args.what == What::Ips {
        out["ips"] = ips(&args)?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
