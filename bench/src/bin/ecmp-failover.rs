//! Failover behind ECMP (root): the ECMP testbed (`testbed::ecmp`: a router
//! running BIRD with L4 multipath hashing, three `dataplane --lb` instances
//! in ipip mode announcing the VIP with BIRD and `dist/bird/`'s health
//! check, three decapsulating backends) under steady load from long-lived
//! connections, one instance killed with SIGKILL and started again, round
//! after round. Reports per round: the time from the kill to the route's
//! withdrawal on the router, the longest a connection went without an
//! answer beyond its pause and when that ended after the kill, the
//! connections lost (failed, or answered by another backend), and the
//! flows ECMP moved to the other instances and back to the rejoined one.
//!
//! `--hold` keeps the testbed up after the rounds, with its namespaces and
//! daemons, until Enter is pressed (`scripts/testbed.sh ecmp`).

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use testbed::ecmp::{EcmpRun, Paths};
use xdp_redirect::baseline::{Baseline, Kind};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Long-lived connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Pause between two requests on one connection, seconds.
    #[arg(long, default_value_t = 0.1)]
    every: f64,
    /// Seconds the killed instance stays down.
    #[arg(long, default_value_t = 4)]
    down: u64,
    /// Keep the testbed up after the rounds until Enter is pressed.
    #[arg(long)]
    hold: bool,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn round(run: &mut EcmpRun, args: &Args, victim: usize) -> anyhow::Result<Value> {
    let seconds = (args.down + 6) as u32;
    let mut steady = run.steady(args.connections, seconds, args.every)?;
    // a second of steady load first
    std::thread::sleep(Duration::from_secs(1));
    let lost_before: Vec<u64> = (0..3)
        .map(|i| run.connections(i).map(|c| c.1))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let killed_at = SystemTime::now();
    run.kill(victim)?;
    let withdrawn = run.wait_next_hops(2, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(args.down));
    let moved_off: u64 = (0..3)
        .filter(|i| *i != victim)
        .map(|i| run.connections(i).map(|c| c.1 - lost_before[i]))
        .sum::<Result<u64, _>>()
        .map_err(anyhow::Error::msg)?;
    run.restart(victim)?;
    let rejoined = run.wait_next_hops(3, Duration::from_secs(10))?;
    let status = steady.wait_exit(Duration::from_secs(u64::from(seconds) + 60))?;
    if !status.success() {
        bail!("the steady client failed: {}", steady.output());
    }
    let doc: Value = steady.last_json().context("the steady client's JSON")?;
    let moved_back = run.connections(victim).map_err(anyhow::Error::msg)?.1;
    Ok(json!({
        "victim": victim + 1,
        "withdrawn_ms": ms(withdrawn),
        "rejoined_announced_ms": ms(rejoined),
        "max_stall_ms": doc["max_stall_s"].as_f64().unwrap_or(0.0) * 1000.0,
        "stall_end_after_kill_ms": (doc["stall_end"].as_f64().unwrap_or(0.0) - epoch(killed_at)) * 1000.0,
        "stalled_over_1s": doc["stalled_over_1s"],
        "lost": doc["errors"].as_u64().unwrap_or(0) + doc["moved"].as_u64().unwrap_or(0),
        "kept": doc["same"],
        "moved_off_dead_instance": moved_off,
        "moved_to_rejoined_instance": moved_back,
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    testbed::require_root("ecmp-failover (namespaces, XDP, BGP)");
    anyhow::ensure!(
        bench::lbpeers::installed("bird"),
        "BIRD 2 is not installed (scripts/install-deps.sh, or apt-get install bird2)"
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let paths = Paths {
        dataplane: bench::lbpeers::sibling_bin("dataplane")?,
        peers: format!("{root}/tests/peers"),
        bird: format!("{root}/dist/bird"),
    };
    let mut run = EcmpRun::start(paths, "ecmp-failover", [5, 3, 2], "0.2", |iface| {
        let mut p = Baseline::load().expect("load the baseline programs");
        p.attach(Kind::PassAll, iface).expect("attach XDP_PASS");
        p
    })?;
    println!(
        "ECMP failover: {} long-lived connections (a request every {} s each), SIGKILL of one of 3 instances, {} s down, then back; health checked every 0.2 s\n",
        args.connections, args.every, args.down
    );
    println!(
        "| round | instance | withdrawn after ms | longest stall ms | it ended, ms after the kill | lost | moved off | moved back |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut rounds = Vec::new();
    for r in 0..args.rounds {
        let victim = r as usize % 3;
        let v = round(&mut run, &args, victim)?;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            r + 1,
            v["victim"],
            v["withdrawn_ms"].as_f64().unwrap_or(0.0),
            v["max_stall_ms"].as_f64().unwrap_or(0.0),
            v["stall_end_after_kill_ms"].as_f64().unwrap_or(0.0),
            v["lost"],
            v["moved_off_dead_instance"],
            v["moved_to_rejoined_instance"]
        );
        rounds.push(v);
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"rounds": rounds}))?,
        )?;
    }
    if args.hold {
        println!(
            "\nthe testbed is up: namespaces {} (router), {} (client), {:?} (instances), {:?} (backends)",
            run.tb.router.name(),
            run.tb.client.name(),
            run.tb
                .balancers
                .iter()
                .map(|n| n.name())
                .collect::<Vec<_>>(),
            run.tb.backends.iter().map(|n| n.name()).collect::<Vec<_>>()
        );
        println!(
            "  ip -n {} route show 198.18.70.100      the ECMP route\n  birdc -s {} show protocols\n  dataplane ctl --socket {} lb show\npress Enter to tear it down",
            run.tb.router.name(),
            run.scratch.path("bird-router.ctl").display(),
            run.instances[0].socket.display()
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    Ok(())
}
