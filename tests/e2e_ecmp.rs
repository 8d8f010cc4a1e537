//! End-to-end test of scale-out behind ECMP (root): three `dataplane --lb`
//! instances (ipip, direct server return) announce the same VIP over BGP
//! (BIRD 2, the templates in `dist/bird/`) to a router that spreads flows
//! over them by L4 hash (see `testbed::ecmp`). Every connection is real; the
//! backends say who answered.
//!
//! Proven here: new connections spread over the instances and follow the
//! weights whichever instance carried them; the instances' tables are the
//! same (digests); when one instance is killed its route is withdrawn and
//! every connection it carried continues on another instance, to the same
//! backend; when it comes back, the flows ECMP moves to it keep their
//! backends too.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use serde_json::Value;
use testbed::{
    ecmp::{EcmpRun, Paths, VIP},
    wait_until,
};
use xdp_redirect::baseline::{Baseline, Kind};

const CONNECTIONS: usize = 3000;
const LONG_LIVED: usize = 300;

fn paths() -> Paths {
    Paths {
        dataplane: env!("CARGO_BIN_EXE_dataplane").to_string(),
        peers: concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers").to_string(),
        bird: concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/bird").to_string(),
    }
}

/// The digests of every running instance's table, all equal.
fn same_tables(run: &EcmpRun, when: &str) {
    let digests: Vec<String> = (0..run.instances.len())
        .filter(|i| run.instances[*i].dp.is_some())
        .map(|i| run.digest(i).unwrap())
        .collect();
    assert!(
        digests.iter().all(|d| d == &digests[0]),
        "{when}: the instances' tables differ: {digests:?}"
    );
}

/// Flows that came to the instances other than `except` mid-connection
/// since `before`.
fn moved_to_others(run: &EcmpRun, except: usize, before: &[u64]) -> u64 {
    (0..run.instances.len())
        .filter(|i| *i != except)
        .map(|i| run.connections(i).unwrap().1 - before[i])
        .sum()
}

#[test]
fn instances_behind_ecmp_share_flows_and_survive_one_dying_root() {
    let mut run = EcmpRun::start(paths(), "ecmp", [5, 3, 2], "0.2", |iface| {
        let mut programs = Baseline::load().expect("load the baseline programs");
        programs
            .attach(Kind::PassAll, iface)
            .expect("attach XDP_PASS");
        programs
    })
    .expect("the ECMP testbed with three instances announcing the VIP");
    same_tables(&run, "at the start");

    // new connections: spread over the instances, balanced by weight
    let before: Vec<u64> = (0..3).map(|i| run.connections(i).unwrap().0).collect();
    let doc = run
        .client(&["count", VIP, "80", &CONNECTIONS.to_string()])
        .unwrap();
    assert_eq!(doc["errors"], 0, "{doc}");
    let counts: BTreeMap<String, u64> = doc["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    for (name, want) in [("b1", 50.0), ("b2", 30.0), ("b3", 20.0)] {
        let got = 100.0 * counts.get(name).copied().unwrap_or(0) as f64 / CONNECTIONS as f64;
        eprintln!(
            "ecmp: backend {name}: {got:.1} % of {CONNECTIONS} new connections (weight share {want} %)"
        );
        assert!(
            (got - want).abs() <= 3.0,
            "{name}: {got:.1} %, want {want} ± 3: {counts:?}"
        );
    }
    for (i, b) in before.iter().enumerate() {
        let share = 100.0 * (run.connections(i).unwrap().0 - b) as f64 / CONNECTIONS as f64;
        eprintln!(
            "ecmp: instance {}: {share:.1} % of the new connections",
            i + 1
        );
        assert!(
            (15.0..=52.0).contains(&share),
            "ECMP gives instance {} {share:.1} % of the connections",
            i + 1
        );
    }

    // long-lived connections through an instance's death and return
    let mut steady = run.steady(LONG_LIVED, 30, 0.5).unwrap();
    let victim = 1;
    let carried = run.packets(victim).unwrap();
    wait_until(
        "the long-lived connections' requests through the victim",
        Duration::from_secs(10),
        || (run.packets(victim).ok()? >= carried + LONG_LIVED as u64).then_some(()),
    )
    .unwrap();
    let lost_before: Vec<u64> = (0..3).map(|i| run.connections(i).unwrap().1).collect();
    let killed_at = SystemTime::now();
    run.kill(victim).unwrap();
    let withdrawn = run.wait_next_hops(2, Duration::from_secs(10)).unwrap();
    eprintln!(
        "ecmp: instance {} killed (SIGKILL); its route withdrawn after {withdrawn:?}",
        victim + 1
    );
    assert!(
        withdrawn <= Duration::from_secs(2),
        "withdrawn after {withdrawn:?}"
    );
    // its flows go on through the others
    wait_until(
        "flows of the dead instance on the others",
        Duration::from_secs(15),
        || (moved_to_others(&run, victim, &lost_before) >= (LONG_LIVED / 6) as u64).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", steady.output()));
    // (and the instance stays dead a while, the others carrying them)
    std::thread::sleep(Duration::from_secs(3));
    let moved_on_kill = moved_to_others(&run, victim, &lost_before);
    same_tables(&run, "one instance down");

    // it joins again
    run.restart(victim).unwrap();
    let rejoined = run.wait_next_hops(3, Duration::from_secs(10)).unwrap();
    eprintln!(
        "ecmp: instance {} back, announced after {rejoined:?}",
        victim + 1
    );
    same_tables(&run, "after the restart");

    let status = steady
        .wait_exit(Duration::from_secs(90))
        .expect("the long-lived connections end");
    assert!(status.success(), "{}", steady.output());
    let doc: Value = steady.last_json().expect("steady JSON");
    let moved_on_join = run.connections(victim).unwrap().1;
    let killed = killed_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    eprintln!(
        "ecmp: {LONG_LIVED} long-lived connections: {} kept their backend, {} moved, {} failed; \
         longest stall {:.2} s (ended {:.2} s after the kill), {} stalled over 1 s; \
         {moved_on_kill} went on through the other instances, {moved_on_join} came to the rejoined one",
        doc["same"],
        doc["moved"],
        doc["errors"],
        doc["max_stall_s"].as_f64().unwrap(),
        doc["stall_end"].as_f64().unwrap() - killed,
        doc["stalled_over_1s"]
    );
    assert_eq!(doc["errors"], 0, "{doc}\n{}", steady.output());
    assert_eq!(doc["moved"], 0, "{doc}");
    assert_eq!(doc["same"], LONG_LIVED, "{doc}");
    assert!(
        moved_on_kill >= (LONG_LIVED / 6) as u64,
        "{moved_on_kill} flows moved off the dead instance"
    );
    assert!(
        moved_on_join >= (LONG_LIVED / 10) as u64,
        "ECMP moved {moved_on_join} flows to the rejoined instance"
    );
}
