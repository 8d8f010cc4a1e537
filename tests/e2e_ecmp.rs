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
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use testbed::{
    Netns, Process, Scratch,
    ecmp::{BALANCER_AS, EcmpTestbed, ROUTER, ROUTER_AS, VIP},
    wait_until,
};
use xdp_redirect::baseline::{Baseline, Kind};

const BIN: &str = env!("CARGO_BIN_EXE_dataplane");
const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers");
const BIRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/bird");
/// How often each instance's health check runs (dataplane-bird-health).
const HEALTH_EVERY_S: &str = "0.2";
const CONNECTIONS: usize = 3000;
const LONG_LIVED: usize = 300;

/// A shipped template with its @KEY@ values filled in.
fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(format!("{BIRD}/{template}")).unwrap();
    for (key, value) in values {
        text = text.replace(&format!("@{key}@"), value);
    }
    assert!(
        !text.contains('@'),
        "every value of {template} filled in:\n{text}"
    );
    text
}

fn bird(ns: &Netns, conf: &Path, socket: &Path) -> Process {
    let mut cmd = ns.command("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(conf)
        .arg("-s")
        .arg(socket)
        .arg("-P")
        .arg(conf.with_extension("pid"));
    let mut p = Process::spawn(cmd).expect("start bird");
    p.wait_for_line("Started", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("bird: {e}\n{}", p.output()));
    p
}

fn ctl(socket: &Path, words: &[&str]) -> Result<Value, String> {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(words)
        .output()
        .expect("run dataplane ctl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("ctl JSON"))
}

/// One balancer instance: the data plane, its BGP speaker and the check
/// between them.
struct Instance {
    ns_index: usize,
    socket: PathBuf,
    dp: Option<Process>,
    _health: Process,
    _bird: Process,
}

impl Instance {
    fn start(tb: &EcmpTestbed, i: usize, scratch: &Scratch, lb_file: &Path) -> Instance {
        let ns = &tb.balancers[i];
        let socket = scratch.path(&format!("lb{}.sock", i + 1));
        let dp = Some(Instance::dataplane(ns, lb_file, &socket));
        let conf = scratch.path(&format!("bird-lb{}.conf", i + 1));
        std::fs::write(
            &conf,
            render(
                "balancer.conf",
                &[
                    ("ROUTER_ID", tb.balancers4[i].clone()),
                    ("LOCAL_AS", BALANCER_AS.to_string()),
                    ("PEER", ROUTER.to_string()),
                    ("PEER_AS", ROUTER_AS.to_string()),
                    ("VIP_ROUTES", format!("\troute {VIP}/32 blackhole;")),
                ],
            ),
        )
        .unwrap();
        let bird_socket = scratch.path(&format!("bird-lb{}.ctl", i + 1));
        let bird = bird(ns, &conf, &bird_socket);
        let mut cmd = ns.command("sh");
        cmd.arg(format!("{BIRD}/dataplane-bird-health"))
            .arg(&socket)
            .arg(&bird_socket)
            .arg(HEALTH_EVERY_S)
            .env("DATAPLANE", BIN);
        let health = Process::spawn(cmd).expect("start the health check");
        Instance {
            ns_index: i,
            socket,
            dp,
            _health: health,
            _bird: bird,
        }
    }

    fn dataplane(ns: &Netns, lb_file: &Path, socket: &Path) -> Process {
        let mut cmd = ns.command(BIN);
        cmd.args(["--iface", "lb0", "--lb"])
            .arg(lb_file)
            .arg("--control")
            .arg(socket)
            .args(["--stats-interval", "1"])
            .env("RUST_LOG", "info");
        let mut dp = Process::spawn(cmd).expect("spawn dataplane --lb");
        dp.wait_for_line("load balancing on", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
        dp
    }

    fn show(&self) -> Value {
        ctl(&self.socket, &["lb", "show"]).unwrap_or_else(|e| panic!("lb show: {e}"))
    }

    fn digest(&self) -> String {
        self.show()["services"][0]["table_digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// (new connections, mid-connection misses: flows that came to this
    /// instance without a SYN) so far.
    fn connections(&self) -> (u64, u64) {
        let doc = self.show();
        (
            doc["services"][0]["new_conns"].as_u64().unwrap(),
            doc["connections"]["lost"].as_u64().unwrap(),
        )
    }
}

fn client(ns: &Netns, args: &[&str]) -> Value {
    let out = ns
        .command("python3")
        .arg(format!("{PEERS}/lb_client.py"))
        .args(args)
        .output()
        .expect("run lb_client.py");
    assert!(
        out.status.success(),
        "lb_client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

fn next_hops(tb: &EcmpTestbed, n: usize, within: Duration) -> Duration {
    let started = Instant::now();
    wait_until(
        &format!("{n} next hop(s) for the VIP on the router"),
        within,
        || (tb.vip_next_hops().ok()?.len() == n).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}",
            tb.vip_next_hops(),
            tb.router.ip(&["route"]).unwrap_or_default()
        )
    });
    started.elapsed()
}

#[test]
fn instances_behind_ecmp_share_flows_and_survive_one_dying_root() {
    let tb = EcmpTestbed::up(|iface| {
        let mut programs = Baseline::load().expect("load the baseline programs");
        programs
            .attach(Kind::PassAll, iface)
            .expect("attach XDP_PASS");
        programs
    })
    .expect("ECMP testbed");
    let scratch = Scratch::new("ecmp");

    let mut servers = Vec::new();
    for (i, ns) in tb.backends.iter().enumerate() {
        let mut cmd = ns.command("python3");
        cmd.arg(format!("{PEERS}/lb_backend.py"))
            .arg(format!("b{}", i + 1))
            .args(["--udp-bind", VIP]);
        let mut p = Process::spawn(cmd).expect("start a backend");
        p.wait_for_line("ready", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("backend b{}: {e}\n{}", i + 1, p.output()));
        servers.push(p);
        let mut cmd = ns.command(BIN);
        cmd.args(["decap", "--iface", "eth0"]);
        let mut d = Process::spawn(cmd).expect("start decap");
        d.wait_for_line("stripping", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("decap: {e}\n{}", d.output()));
        servers.push(d);
    }

    // the router's BGP speaker: one session per instance, ECMP into the kernel
    let neighbors: String = tb
        .balancers4
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "protocol bgp lb{} from balancers {{ neighbor {a} as {BALANCER_AS}; }}\n",
                i + 1
            )
        })
        .collect();
    let router_conf = scratch.path("bird-router.conf");
    std::fs::write(
        &router_conf,
        render(
            "router.conf",
            &[
                ("ROUTER_ID", ROUTER.to_string()),
                ("LOCAL_AS", ROUTER_AS.to_string()),
                ("PEER_AS", BALANCER_AS.to_string()),
                ("VIP_PREFIX", "198.18.70.0/24".to_string()),
                ("NEIGHBORS", neighbors),
            ],
        ),
    )
    .unwrap();
    let _router_bird = bird(&tb.router, &router_conf, &scratch.path("bird-router.ctl"));

    // the same lb file on every instance
    let lb_file = scratch.path("lb.toml");
    let mut text = format!(
        "mode = \"ipip\"\n[health]\nkind = \"tcp\"\nport = 80\ninterval_ms = 200\ntimeout_ms = 150\nrise = 2\nfall = 2\n[[service]]\nvip = \"{VIP}\"\nport = 80\nproto = \"tcp\"\n"
    );
    for (addr, weight) in tb.backends4.iter().zip([5, 3, 2]) {
        text += &format!("[[service.backend]]\naddr = \"{addr}\"\nweight = {weight}\n");
    }
    std::fs::write(&lb_file, text).unwrap();
    let mut instances: Vec<Instance> = (0..3)
        .map(|i| Instance::start(&tb, i, &scratch, &lb_file))
        .collect();
    let announced = next_hops(&tb, 3, Duration::from_secs(30));
    eprintln!("ecmp: the VIP has 3 next hops {announced:?} after the instances started");

    // the same table everywhere
    let digests: Vec<String> = instances.iter().map(Instance::digest).collect();
    assert!(
        digests.iter().all(|d| d == &digests[0]),
        "the instances' tables differ: {digests:?}"
    );

    // new connections: spread over the instances, balanced by weight
    let before: Vec<(u64, u64)> = instances.iter().map(Instance::connections).collect();
    let doc = client(&tb.client, &["count", VIP, "80", &CONNECTIONS.to_string()]);
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
    let after: Vec<(u64, u64)> = instances.iter().map(Instance::connections).collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let share = 100.0 * (a.0 - b.0) as f64 / CONNECTIONS as f64;
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
    let mut cmd = tb.client.command("python3");
    cmd.arg(format!("{PEERS}/lb_client.py")).args([
        "steady",
        VIP,
        "80",
        &LONG_LIVED.to_string(),
        "30",
    ]);
    let mut steady = Process::spawn(cmd).expect("start the long-lived connections");
    steady
        .wait_for_line("connected", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", steady.output()));
    let victim = 1;
    let carried = instances[victim].show()["services"][0]["packets"]
        .as_u64()
        .unwrap();
    wait_until(
        "the long-lived connections' requests through the victim",
        Duration::from_secs(10),
        || {
            let now = instances[victim].show()["services"][0]["packets"].as_u64()?;
            (now >= carried + LONG_LIVED as u64).then_some(())
        },
    )
    .unwrap();
    let lost_before: Vec<u64> = instances.iter().map(|i| i.connections().1).collect();
    let killed_at = SystemTime::now();
    let mut dp = instances[victim].dp.take().unwrap();
    dp.signal(libc::SIGKILL).unwrap();
    let _ = dp.wait_exit(Duration::from_secs(10));
    let withdrawn = next_hops(&tb, 2, Duration::from_secs(10));
    eprintln!(
        "ecmp: instance {} killed; its route withdrawn after {withdrawn:?}",
        victim + 1
    );
    assert!(
        withdrawn <= Duration::from_secs(2),
        "withdrawn after {withdrawn:?}"
    );
    // the instance stays dead a while: its flows run on the others
    let survivors_moved = wait_until(
        "flows of the dead instance on the others",
        Duration::from_secs(15),
        || {
            let moved: u64 = instances
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .map(|(i, inst)| inst.connections().1 - lost_before[i])
                .sum();
            (moved >= (LONG_LIVED / 6) as u64).then_some(moved)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", steady.output()));
    std::thread::sleep(Duration::from_secs(3));
    let moved_on_kill: u64 = instances
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(i, inst)| inst.connections().1 - lost_before[i])
        .sum();
    eprintln!(
        "ecmp: {moved_on_kill} long-lived connections came to the surviving instances mid-connection ({survivors_moved} within the first look)"
    );

    // it joins again
    let ns = &tb.balancers[instances[victim].ns_index];
    instances[victim].dp = Some(Instance::dataplane(ns, &lb_file, &instances[victim].socket));
    let rejoined = next_hops(&tb, 3, Duration::from_secs(10));
    eprintln!(
        "ecmp: instance {} back, announced after {rejoined:?}",
        victim + 1
    );
    let digests: Vec<String> = instances.iter().map(Instance::digest).collect();
    assert!(
        digests.iter().all(|d| d == &digests[0]),
        "the tables differ after the restart: {digests:?}"
    );

    let status = steady
        .wait_exit(Duration::from_secs(90))
        .expect("the long-lived connections end");
    assert!(status.success(), "{}", steady.output());
    let doc: Value = serde_json::from_str(
        steady
            .output()
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .expect("steady JSON"),
    )
    .unwrap();
    let moved_on_join = instances[victim].connections().1;
    let stall_end = doc["stall_end"].as_f64().unwrap();
    let killed = killed_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    eprintln!(
        "ecmp: {LONG_LIVED} long-lived connections: {} kept their backend, {} moved, {} failed; longest stall {:.2} s (ended {:.2} s after the kill), {} stalled over 1 s; {moved_on_join} came to the rejoined instance mid-connection",
        doc["same"],
        doc["moved"],
        doc["errors"],
        doc["max_stall_s"].as_f64().unwrap(),
        stall_end - killed,
        doc["stalled_over_1s"]
    );
    assert_eq!(doc["errors"], 0, "{doc}\n{}", steady.output());
    assert_eq!(doc["moved"], 0, "{doc}");
    assert_eq!(doc["same"], LONG_LIVED, "{doc}");
    assert!(
        moved_on_join >= (LONG_LIVED / 10) as u64,
        "ECMP moved {moved_on_join} flows to the rejoined instance"
    );
    drop(servers);
}
