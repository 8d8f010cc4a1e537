//! End-to-end tests of the load balancer (root): a client, the balancer and
//! three backends running a real HTTP and UDP server, on one L2 segment
//! (see `testbed::lb`), in both forwarding modes. Every connection is real
//! (Python sockets in the client namespace); shares and stickiness are read
//! from the backends' own answers.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{
    Netns, Process, Scratch,
    lb::{CLIENT4, LbTestbed, Return, VIP4, VIP6},
    wait_until,
};
use xdp_redirect::baseline::{Baseline, Kind};

const BIN: &str = env!("CARGO_BIN_EXE_dataplane");
const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers");
const INTERVAL_MS: u64 = 200;
const FALL: u64 = 2;

fn config(mode: &str, backends4: &[String], backends6: &[String]) -> String {
    let backend =
        |addr: &str, w: u32| format!("[[service.backend]]\naddr = \"{addr}\"\nweight = {w}\n");
    let mut s = format!(
        "mode = \"{mode}\"\n[health]\nkind = \"tcp\"\nport = 80\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = 150\nrise = 2\nfall = {FALL}\n"
    );
    s += &format!("[[service]]\nvip = \"{VIP4}\"\nport = 80\nproto = \"tcp\"\n");
    for (a, w) in backends4.iter().zip([5, 3, 2]) {
        s += &backend(a, w);
    }
    s += &format!("[[service]]\nvip = \"{VIP4}\"\nport = 5353\nproto = \"udp\"\n");
    for a in backends4 {
        s += &backend(a, 1);
    }
    s += &format!("[[service]]\nvip = \"{VIP6}\"\nport = 80\nproto = \"tcp\"\n");
    for a in backends6 {
        s += &backend(a, 1);
    }
    s
}

/// Runs the client script; returns its JSON document.
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

fn counts(doc: &Value) -> BTreeMap<String, u64> {
    doc["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn ctl(socket: &std::path::Path, words: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(words)
        .output()
        .expect("run dataplane ctl");
    assert!(
        out.status.success(),
        "ctl {words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl JSON")
}

/// Runs a ctl command that must fail; returns its error message.
fn ctl_err(socket: &std::path::Path, words: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(words)
        .output()
        .expect("run dataplane ctl");
    assert!(!out.status.success(), "ctl {words:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `n` keep-alive connections to the VIP held open by the client script
/// until [`release`] (each has made one request).
fn hold(tb: &LbTestbed, scratch: &Scratch, n: usize) -> (Process, std::path::PathBuf) {
    let go = scratch.path("go");
    let mut cmd = tb.client.command("python3");
    cmd.arg(format!("{PEERS}/lb_client.py"))
        .args(["hold", VIP4, "80", &n.to_string()])
        .arg(&go);
    let mut held = Process::spawn(cmd).expect("start the long connections");
    held.wait_for_line("held", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", held.output()));
    (held, go)
}

/// Lets the held connections make their second request; returns the
/// script's document (`same`, `moved`, `errors`, `before`).
fn release((mut held, go): (Process, std::path::PathBuf)) -> Value {
    std::fs::write(&go, "").unwrap();
    let status = held
        .wait_exit(Duration::from_secs(60))
        .expect("long connections end");
    assert!(status.success(), "{}", held.output());
    held.last_json().expect("hold JSON")
}

/// Share of `name` in `c`, in percent.
fn share(c: &BTreeMap<String, u64>, name: &str) -> f64 {
    let total: u64 = c.values().sum();
    100.0 * *c.get(name).unwrap_or(&0) as f64 / total.max(1) as f64
}

/// A balancer running on the LB testbed with real backends (and, in ipip
/// mode, their decapsulators); everything is stopped and removed on drop.
struct Running {
    tb: LbTestbed,
    scratch: Scratch,
    servers: Vec<Option<Process>>,
    _decaps: Vec<Process>,
    file: std::path::PathBuf,
    socket: std::path::PathBuf,
    dp: Process,
}

impl Running {
    /// Starts the backends and `dataplane --lb` with the file `make` writes
    /// from the backends' IPv4 and IPv6 addresses.
    /// `tag` names its scratch directory (tests run in parallel).
    fn start(tag: &str, mode: &str, make: impl Fn(&[String], &[String]) -> String) -> Running {
        Running::start_with(tag, mode, make, &[])
    }

    /// [`Running::start`] with more `dataplane` arguments; with any, the
    /// backends log each request they receive.
    fn start_with(
        tag: &str,
        mode: &str,
        make: impl Fn(&[String], &[String]) -> String,
        extra: &[String],
    ) -> Running {
        let ret = if mode == "ipip" {
            Return::Direct
        } else {
            Return::ViaBalancer
        };
        let tb = LbTestbed::up(2, ret, |iface| {
            let mut programs = Baseline::load().expect("load the baseline programs");
            programs
                .attach(Kind::PassAll, iface)
                .expect("attach XDP_PASS");
            programs
        })
        .expect("load balancer testbed");
        let scratch = Scratch::new(&format!("lb-{tag}-{mode}"));

        let mut servers = Vec::new();
        let mut decaps = Vec::new();
        for (i, ns) in tb.backends.iter().enumerate() {
            let mut cmd = ns.command("python3");
            cmd.arg(format!("{PEERS}/lb_backend.py"))
                .arg(format!("b{}", i + 1));
            if !extra.is_empty() {
                cmd.arg("--log");
            }
            if ret == Return::Direct {
                cmd.args(["--udp-bind", VIP4, "--udp-bind", VIP6]);
            } else {
                cmd.args(["--udp-bind", "0.0.0.0", "--udp-bind", "::"]);
            }
            let mut p = Process::spawn(cmd).expect("start a backend");
            p.wait_for_line("ready", Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("backend b{}: {e}\n{}", i + 1, p.output()));
            servers.push(Some(p));
            if ret == Return::Direct {
                let mut cmd = ns.command(BIN);
                cmd.args(["decap", "--iface", &tb.backend_if]);
                let mut d = Process::spawn(cmd).expect("start decap");
                d.wait_for_line("stripping", Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("decap: {e}\n{}", d.output()));
                decaps.push(d);
            }
        }

        let file = scratch.path("lb.toml");
        std::fs::write(&file, make(&tb.backends4, &tb.backends6)).unwrap();
        let socket = scratch.path("ctl.sock");
        let dp = Running::spawn(&tb, &file, &socket, extra);
        let running = Running {
            tb,
            scratch,
            servers,
            _decaps: decaps,
            file,
            socket,
            dp,
        };
        running.wait_for_neighbours();
        running
    }

    fn spawn(
        tb: &LbTestbed,
        file: &std::path::Path,
        socket: &std::path::Path,
        extra: &[String],
    ) -> Process {
        let mut cmd = tb.lb.command(BIN);
        cmd.args(["--iface", &tb.lb_if, "--lb"])
            .arg(file)
            .arg("--control")
            .arg(socket)
            .args(["--stats-interval", "1"])
            .args(extra)
            .env("RUST_LOG", "info");
        let mut dp = Process::spawn(cmd).expect("spawn dataplane --lb");
        dp.wait_for_line("load balancing on", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
        dp
    }

    /// The balancer's FIB lookups need the backends' MACs: its health
    /// probes resolve them.
    fn wait_for_neighbours(&self) {
        let tb = &self.tb;
        // the backends the file names
        let text = std::fs::read_to_string(&self.file).unwrap();
        let named = |b: &&String| text.contains(&format!("\"{b}\""));
        wait_until(
            "neighbour entries for every backend",
            Duration::from_secs(10),
            || {
                let out = tb.lb.ip(&["neigh", "show"]).ok()?
                    + &tb.lb.ip(&["-6", "neigh", "show"]).ok()?;
                tb.backends4
                    .iter()
                    .chain(&tb.backends6)
                    .filter(named)
                    .all(|b| {
                        out.lines()
                            .any(|l| l.starts_with(&format!("{b} ")) && l.contains("lladdr"))
                    })
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.dp.output()));
    }
}

fn scenario(mode: &str) {
    let Running {
        tb,
        scratch,
        mut servers,
        _decaps,
        file,
        socket,
        mut dp,
    } = Running::start("weights", mode, |b4, b6| config(mode, b4, b6));
    let neigh = tb.lb.ip(&["neigh", "show"]).unwrap();
    assert!(
        tb.backends4.iter().all(|b| neigh
            .lines()
            .any(|l| l.starts_with(&format!("{b} ")) && l.contains("managed"))),
        "the balancer keeps its backends' neighbour entries resolved: {neigh}"
    );

    // 1. weights 5:3:2: of 3000 new connections, each backend its share ±3 pp
    let doc = client(&tb.client, &["count", VIP4, "80", "3000"]);
    let c = counts(&doc);
    assert_eq!(
        doc["errors"],
        0,
        "{doc}\nbalancer: {}\nclient neighbours: {}",
        ctl(&socket, &["lb", "show"])["kernel"],
        tb.client.ip(&["neigh", "show"]).unwrap_or_default()
    );
    assert_eq!(c.values().sum::<u64>(), 3000);
    for (name, want) in [("b1", 50.0), ("b2", 30.0), ("b3", 20.0)] {
        let got = share(&c, name);
        assert!(
            (got - want).abs() <= 3.0,
            "{mode}: {name} got {got:.1} % of new connections, want {want} ± 3: {c:?}"
        );
    }
    eprintln!("{mode}: 3000 connections at 5:3:2 -> {c:?}");

    // 2. UDP and IPv6 services
    let doc = client(&tb.client, &["udp", VIP4, "5353", "300"]);
    let c = counts(&doc);
    assert_eq!(doc["errors"], 0, "UDP: {doc}\n{}", dp.output());
    assert!(
        c.len() == 3 && c.values().all(|&n| n >= 50),
        "UDP 1:1:1: {c:?}"
    );
    let doc = client(&tb.client, &["count", VIP6, "80", "300"]);
    let c = counts(&doc);
    assert_eq!(doc["errors"], 0, "IPv6: {doc}\n{}", dp.output());
    assert!(
        c.len() == 3 && c.values().all(|&n| n >= 50),
        "IPv6 1:1:1: {c:?}"
    );

    // 2b. a drained backend gets no new connection, not even from a source
    //     port whose old connection went to it (the SYN takes the table)
    let first = client(&tb.client, &["count", VIP4, "80", "200", "21000"]);
    assert_eq!(first["errors"], 0, "{first}");
    assert!(counts(&first).get("b1").is_some_and(|&n| n > 0), "{first}");
    ctl(&socket, &["lb", "drain", &tb.backends4[0]]);
    let again = client(&tb.client, &["count", VIP4, "80", "200", "21000"]);
    assert_eq!(again["errors"], 0, "{again}");
    assert_eq!(
        counts(&again).get("b1"),
        None,
        "{mode}: reconnections from the same ports after the drain: {again} (before: {first})"
    );
    let drained = ctl(&socket, &["lb", "show"]);
    assert_eq!(
        (
            &drained["services"][0]["backends"][0]["weight"],
            &drained["services"][0]["backends"][0]["drained"]
        ),
        (&Value::from(5), &Value::from(true)),
        "a drain keeps the configured weight: {drained}"
    );
    ctl(&socket, &["lb", "undrain", &tb.backends4[0]]);

    // 3. reweighting to 9:1:0 with 100 connections open moves new ones only
    let holding = hold(&tb, &scratch, 100);
    for (b, w) in tb.backends4.iter().zip(["9", "1", "0"]) {
        ctl(&socket, &["lb", "set-weight", b, w]);
    }
    let shown = ctl(&socket, &["lb", "show"]);
    let weights: Vec<u64> = shown["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [9, 1, 0], "{shown}");
    // a bad file changes nothing; a file with other weights is taken
    std::fs::write(
        &file,
        config(mode, &tb.backends4, &tb.backends6).replacen("weight = 5", "weight = 5000", 1),
    )
    .unwrap();
    let refused = ctl_err(&socket, &["lb", "reload"]);
    assert!(
        refused.contains("lb.toml:") && refused.contains("weight: 5000 is out of range"),
        "{refused}"
    );
    let unchanged = ctl(&socket, &["lb", "show"]);
    assert_eq!(
        unchanged["services"][0]["backends"][0]["weight"], 9,
        "{unchanged}"
    );
    std::fs::write(&file, config(mode, &tb.backends4, &tb.backends6)).unwrap();
    let reloaded = ctl(&socket, &["lb", "reload"]);
    // set-weight changed each backend in every service that has it: the
    // TCP service's table and the UDP one's are rebuilt
    assert_eq!(
        reloaded["changed"].as_array().map(Vec::len),
        Some(2),
        "back to the file's weights: {reloaded}"
    );
    for (b, w) in tb.backends4.iter().zip(["9", "1", "0"]) {
        ctl(&socket, &["lb", "set-weight", b, w]);
    }
    let after = client(&tb.client, &["count", VIP4, "80", "1000"]);
    let held = release(holding);
    assert_eq!(
        (
            held["same"].as_u64(),
            held["moved"].as_u64(),
            held["errors"].as_u64()
        ),
        (Some(100), Some(0), Some(0)),
        "every open connection completes on its original backend: {held}"
    );
    let c = counts(&after);
    assert_eq!(after["errors"], 0, "{after}");
    assert_eq!(
        share(&c, "b3"),
        0.0,
        "weight 0 gets no new connections: {c:?}"
    );
    assert!((share(&c, "b1") - 90.0).abs() <= 3.0, "9:1:0 -> {c:?}");
    eprintln!(
        "{mode}: held {}, then 1000 new at 9:1:0 -> {c:?}",
        held["before"]
    );

    // 4. a backend whose server stops gets no new connections once its
    //    checks fail `fall` times; the others carry on
    let killed = Instant::now();
    servers[0].take();
    let down_after = wait_until("b1 marked down", Duration::from_secs(10), || {
        let shown = ctl(&socket, &["lb", "show"]);
        (shown["services"][0]["backends"][0]["up"] == false).then(|| killed.elapsed())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    eprintln!(
        "{mode}: b1 down {down_after:?} after its server stopped (fall {FALL} x interval {INTERVAL_MS} ms)"
    );
    let doc = client(&tb.client, &["count", VIP4, "80", "300"]);
    let c = counts(&doc);
    assert_eq!(
        doc["errors"],
        0,
        "the others carry on: {doc}\n{}",
        dp.output()
    );
    assert_eq!(
        c.get("b2"),
        Some(&300),
        "all new connections on the one backend left with weight: {c:?}"
    );
    assert!(
        dp.output().contains("weights changed"),
        "changes are logged: {}",
        dp.output()
    );

    dp.interrupt(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    let out = dp.output();
    assert!(out.contains("load balancer stopped"), "{out}");
    let link = tb.lb.ip(&["-d", "link", "show", "dev", &tb.lb_if]).unwrap();
    assert!(!link.contains("prog/xdp"), "no XDP program left: {link}");
    let neigh =
        tb.lb.ip(&["neigh", "show"]).unwrap() + &tb.lb.ip(&["-6", "neigh", "show"]).unwrap();
    assert!(
        !neigh.contains("managed"),
        "the managed neighbour entries are gone: {neigh}"
    );
    let _ = (CLIENT4, scratch);
}

#[test]
fn ipip_mode_balances_by_weight_keeps_connections_and_drops_dead_backends() {
    scenario("ipip");
}

#[test]
fn nat_mode_balances_by_weight_keeps_connections_and_drops_dead_backends() {
    scenario("nat");
}

#[test]
fn a_bad_file_is_refused_with_key_and_line_before_anything_is_attached() {
    testbed::require_root("the load balancer's start-up checks");
    let tb = testbed::Testbed::up(1).expect("testbed");
    let scratch = Scratch::new("lb-bad");
    let file = scratch.path("lb.toml");
    std::fs::write(
        &file,
        format!(
            "[[service]]\nvip = \"{VIP4}\"\nport = 80\nproto = \"tcp\"\n[[service.backend]]\naddr = \"198.18.71.1\"\nweight = 5000\n"
        ),
    )
    .unwrap();
    let out = tb
        .dut
        .command(BIN)
        .args(["--iface", &tb.dut_if, "--lb"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("lb.toml:7: service[0].backend[0].weight: 5000 is out of range"),
        "{err}"
    );
    assert!(!tb.dut_has_xdp().unwrap(), "nothing attached");
}

/// The runtime API: services and backends come and go while the balancer
/// runs, through the same checks as the file; a removed backend keeps its
/// established connections; drain and undrain keep the weight; health
/// changes are logged with their reason; `lb save` writes what runs, and a
/// restart from that file runs the same.
#[test]
fn services_and_backends_change_at_run_time_and_are_saved_root() {
    testbed::require_root("the load balancer's runtime API");
    let Running {
        tb,
        scratch,
        mut servers,
        _decaps,
        file,
        socket,
        mut dp,
    } = Running::start("runtime", "ipip", |b4, _| {
        format!(
            "[health]\nkind = \"tcp\"\nport = 80\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = 150\nrise = 2\nfall = {FALL}\n\
             [[service]]\nvip = \"{VIP4}\"\nport = 80\nproto = \"tcp\"\n\
             [[service.backend]]\naddr = \"{}\"\nweight = 1\n\
             [[service.backend]]\naddr = \"{}\"\nweight = 1\n",
            b4[0], b4[1]
        )
    });
    let service = format!("tcp/{VIP4}:80");
    let (b1, b2, b3) = (&tb.backends4[0], &tb.backends4[1], &tb.backends4[2]);
    let show = || ctl(&socket, &["lb", "show"]);
    let backends_of = |doc: &Value| -> Vec<String> {
        doc["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["addr"].as_str().unwrap().to_string())
            .collect()
    };

    // add a backend: new connections reach it
    let added = ctl(&socket, &["lb", "add-backend", &service, b3, "2"]);
    assert_eq!(
        added["backends_added"][0],
        format!("{service} {b3}"),
        "{added}"
    );
    let doc = client(&tb.client, &["count", VIP4, "80", "400"]);
    assert_eq!(doc["errors"], 0, "{doc}\n{}", dp.output());
    let c = counts(&doc);
    assert!(
        (share(&c, "b3") - 50.0).abs() <= 8.0,
        "1:1:2 after the add: {c:?}"
    );

    // refused changes say why and change nothing
    for (words, why) in [
        (
            vec!["lb", "add-backend", "tcp/198.18.99.1:80", b3.as_str()],
            "no service tcp/198.18.99.1:80",
        ),
        (vec!["lb", "add-backend", &service, b3], "duplicate backend"),
        (
            vec!["lb", "add-backend", &service, "198.18.99.7", "5000"],
            "5000 is out of range",
        ),
        (
            vec!["lb", "set-weight", "198.18.99.7", "1"],
            "not a backend of any service",
        ),
        (vec!["lb", "remove-service", &service], "its last one"),
    ] {
        let err = ctl_err(&socket, &words);
        assert!(err.contains(why), "{words:?}: {err}");
    }
    assert_eq!(backends_of(&show()), [b1.clone(), b2.clone(), b3.clone()]);

    // remove a backend with connections open: they finish on it; new ones
    // go elsewhere
    let holding = hold(&tb, &scratch, 60);
    let removed = ctl(&socket, &["lb", "remove-backend", &service, b1]);
    assert_eq!(
        removed["backends_removed"][0],
        format!("{service} {b1}"),
        "{removed}"
    );
    let shown = show();
    assert_eq!(backends_of(&shown), [b2.clone(), b3.clone()]);
    assert_eq!(
        shown["retired_backends"], 1,
        "its slot kept for its connections: {shown}"
    );
    let after = client(&tb.client, &["count", VIP4, "80", "300"]);
    assert_eq!(after["errors"], 0, "{after}");
    assert_eq!(
        counts(&after).get("b1"),
        None,
        "no new connection to a removed backend: {after}"
    );
    let held = release(holding);
    assert!(
        held["before"]["b1"].as_u64().unwrap_or(0) > 0,
        "some held connections were on the removed backend: {held}"
    );
    assert_eq!(
        (
            held["same"].as_u64(),
            held["moved"].as_u64(),
            held["errors"].as_u64()
        ),
        (Some(60), Some(0), Some(0)),
        "every open connection finished on its backend, the removed one's too: {held}"
    );

    // drain and undrain keep the configured weight
    ctl(&socket, &["lb", "drain", b3]);
    let doc = client(&tb.client, &["count", VIP4, "80", "100"]);
    assert_eq!(counts(&doc).get("b3"), None, "drained: {doc}");
    let shown = show();
    assert_eq!(shown["services"][0]["backends"][1]["weight"], 2, "{shown}");
    ctl(&socket, &["lb", "undrain", b3]);
    let doc = client(&tb.client, &["count", VIP4, "80", "300"]);
    assert!(
        (share(&counts(&doc), "b3") - 66.7).abs() <= 8.0,
        "2 of 3 again after the undrain: {doc}"
    );

    // a new service, then gone
    ctl(
        &socket,
        &[
            "lb",
            "add-service",
            "udp",
            &format!("{VIP4}:5353"),
            &format!("{b2}=1"),
            &format!("{b3}=1"),
        ],
    );
    let doc = client(&tb.client, &["udp", VIP4, "5353", "100"]);
    assert_eq!(
        doc["errors"],
        0,
        "the new UDP service answers: {doc}\n{}",
        dp.output()
    );
    ctl(
        &socket,
        &["lb", "remove-service", &format!("udp/{VIP4}:5353")],
    );
    assert_eq!(show()["services"].as_array().unwrap().len(), 1);

    // a health change: one line with the old and new state and the reason
    servers[2].take();
    wait_until("the health change logged", Duration::from_secs(10), || {
        let out = dp.output();
        out.lines()
            .find(|l| l.contains("backend health changed") && l.contains(b3.as_str()))
            .map(str::to_string)
    })
    .map(|line| {
        assert!(
            line.contains("from=\"up\"")
                && line.contains("to=\"down\"")
                && line.contains("reason="),
            "{line}"
        )
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    assert!(
        show()["services"][0]["backends"][1]["health_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "lb show says why"
    );

    // the health check a BGP daemon runs: fails with the reason while no
    // backend carries the service
    let healthy = ctl(&socket, &["lb", "health"]);
    assert_eq!(healthy["healthy"], true, "{healthy}");
    ctl(&socket, &["lb", "drain", b2]);
    let err = ctl_err(&socket, &["lb", "health"]);
    assert!(
        err.contains(&format!("unhealthy: {service}: no backend up with weight")),
        "{err}"
    );
    ctl(&socket, &["lb", "undrain", b2]);

    // save, restart from the saved file: the same services and weights
    ctl(&socket, &["lb", "set-weight", b2, "4"]);
    let saved = ctl(&socket, &["lb", "save"]);
    assert_eq!(saved["saved"], true, "{saved}");
    let before = show();
    dp.interrupt(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    let mut dp = Running::spawn(&tb, &file, &socket, &[]);
    let again = show();
    assert_eq!(backends_of(&again), backends_of(&before), "{again}");
    // b3 is down in the first run, up (its health starts up) in the new one
    // until probed down again: compare once both agree on it
    let digest = wait_until(
        "the same table as before the restart",
        Duration::from_secs(10),
        || {
            let now = show();
            (now["digest"] == before["digest"]).then(|| now["digest"].clone())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {} vs {}", show()["digest"], before["digest"]));
    assert!(digest.as_str().is_some_and(|d| d.len() == 16), "{digest}");
    assert_eq!(again["services"][0]["backends"][0]["weight"], 4, "{again}");
    dp.interrupt(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
}

/// What a backend's load agent reads in these tests: one file per
/// backend, served by real agents. Network namespaces share one kernel,
/// so the machine's load average is the same for every backend here; a
/// per-backend figure has to come from somewhere per backend.
fn load_file(scratch: &Scratch, i: usize) -> std::path::PathBuf {
    scratch.path(&format!("load-b{}", i + 1))
}

/// `[load]` from each backend's agent: `source` and the rest of the
/// section, health probes as in the other tests.
fn load_config(b4: &[String], load: &str) -> String {
    let mut s = format!(
        "[health]\nkind = \"tcp\"\nport = 80\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = 150\nrise = 2\nfall = {FALL}\n\
         [load]\ninterval_ms = 300\n{load}\n\
         [[service]]\nvip = \"{VIP4}\"\nport = 80\nproto = \"tcp\"\n"
    );
    for a in b4 {
        s += &format!("[[service.backend]]\naddr = \"{a}\"\nweight = 1\n");
    }
    s
}

/// Raises one backend's load, sees its weight and its share of new
/// connections fall, lowers it, sees them recover; returns the time from
/// the write to the weight change.
fn load_moves_shares(run: &Running, set: &dyn Fn(usize, f64), agents: &[Process]) -> Duration {
    let agents = || {
        agents
            .iter()
            .map(Process::output)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let show = || ctl(&run.socket, &["lb", "show"]);
    let effective = |doc: &Value, i: usize| {
        doc["services"][0]["backends"][i]["effective_weight"]
            .as_u64()
            .unwrap()
    };
    for i in 0..3 {
        set(i, 0.0);
    }
    wait_until("every backend's load read", Duration::from_secs(15), || {
        let doc = show();
        (0..3)
            .all(|i| doc["services"][0]["backends"][i]["load"].as_f64() == Some(0.0))
            .then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}\nagents:\n{}",
            show(),
            run.dp.output(),
            agents()
        )
    });
    let written = Instant::now();
    set(0, 0.9);
    let reaction = wait_until("b1's weight to fall", Duration::from_secs(15), || {
        let doc = show();
        (effective(&doc, 0) * 5 < effective(&doc, 1)).then(|| written.elapsed())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", show(), run.dp.output()));
    let doc = client(&run.tb.client, &["count", VIP4, "80", "600"]);
    assert_eq!(doc["errors"], 0, "{doc}");
    let loaded = share(&counts(&doc), "b1");
    // weights 0.1 : 1 : 1 -> about 5 %
    assert!(loaded < 10.0, "a loaded backend's share falls: {doc}");
    set(0, 0.0);
    wait_until("b1's weight to recover", Duration::from_secs(15), || {
        let doc = show();
        (effective(&doc, 0) == effective(&doc, 1)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", show()));
    let doc = client(&run.tb.client, &["count", VIP4, "80", "600"]);
    let back = share(&counts(&doc), "b1");
    assert!((back - 33.3).abs() <= 6.0, "recovered: {doc}");
    eprintln!(
        "load 0.9 on b1: share {loaded:.1} %, back to {back:.1} %; weight changed {reaction:?} after the write"
    );
    reaction
}

/// A (load average, CPUs) reading an agent gave against the kernel's own.
fn check_against_the_kernel((load, cpus): (f64, u32)) {
    let kernel: f64 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let online = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(cpus, online, "the agent's CPU count");
    assert!(
        (load - kernel).abs() <= 0.5,
        "the agent's 1-minute load average {load} against the kernel's {kernel}"
    );
}

/// SNMP v2c from Debian's snmpd in each backend's namespace: the figure
/// is a configured OID (NET-SNMP-EXTEND-MIB, the agent's `extend` of the
/// backend's load file), and the UCD-SNMP-MIB load average per
/// HOST-RESOURCES-MIB processor by default.
#[test]
fn load_from_snmpd_moves_shares_root() {
    testbed::require_root("the SNMP load test");
    assert!(
        Command::new("snmpd").arg("-v").output().is_ok(),
        "this test needs Debian's snmpd: run scripts/install-deps.sh"
    );
    // nsExtendOutput1Line."bload"
    let oid = "1.3.6.1.4.1.8072.1.3.2.3.1.1.5.98.108.111.97.100";
    let run = Running::start("snmp", "ipip", |b4, _| {
        load_config(
            b4,
            &format!("source = \"snmp\"\noid = \"{oid}\"\nper_cpu = false\nfull = 1.0"),
        )
    });
    let mut agents = Vec::new();
    for (i, ns) in run.tb.backends.iter().enumerate() {
        std::fs::write(load_file(&run.scratch, i), "0\n").unwrap();
        let conf = run.scratch.path(&format!("snmpd-b{}.conf", i + 1));
        std::fs::write(
            &conf,
            format!(
                "agentaddress udp:{}:161\nrocommunity public default\nextend bload /bin/cat {}\n",
                run.tb.backends4[i],
                load_file(&run.scratch, i).display()
            ),
        )
        .unwrap();
        let state = run.scratch.path(&format!("snmpd-b{}", i + 1));
        std::fs::create_dir_all(&state).unwrap();
        let mut cmd = ns.command("snmpd");
        cmd.args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(state.join("pid"))
            .env("SNMP_PERSISTENT_DIR", &state)
            .env("MIBS", "");
        agents.push(Process::spawn(cmd).expect("start snmpd"));
    }
    // The default reading, UCD-SNMP-MIB's 1-minute load average per
    // HOST-RESOURCES-MIB processor, is the kernel's own (the namespaces
    // share it): compare with /proc/loadavg and the CPU count.
    let agent = std::net::SocketAddr::new(run.tb.backends4[0].parse().unwrap(), 161);
    let read = wait_until("snmpd answers", Duration::from_secs(10), || {
        run.tb.backends[0]
            .run_inside(move || {
                let timeout = Duration::from_secs(1);
                Some((
                    lb::monitor::snmp_get(agent, "public", lb::config::SNMP_LOAD1, timeout).ok()?,
                    lb::monitor::snmp_cpus(agent, "public", timeout).ok()?,
                ))
            })
            .ok()
            .flatten()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    check_against_the_kernel(read);
    let set =
        |i: usize, v: f64| std::fs::write(load_file(&run.scratch, i), format!("{v}\n")).unwrap();
    load_moves_shares(&run, &set, &agents);
    drop(agents);
}

/// Prometheus from Debian's prometheus-node-exporter in each backend's
/// namespace: a configured metric (its textfile collector serving the
/// backend's load file), and by default `node_load1` per CPU, checked
/// against the kernel's own load average under a bounded CPU burner.
#[test]
fn load_from_node_exporter_moves_shares_root() {
    testbed::require_root("the node_exporter load test");
    let exporter = "prometheus-node-exporter";
    assert!(
        Command::new(exporter).arg("--version").output().is_ok(),
        "this test needs Debian's prometheus-node-exporter: run scripts/install-deps.sh"
    );
    // (the test backends serve their own HTTP load figure on 9100)
    let run = Running::start("prom", "ipip", |b4, _| {
        load_config(
            b4,
            "source = \"prometheus\"\nport = 9101\nmetric = \"backend_load\"\nper_cpu = false\nfull = 1.0",
        )
    });
    let mut agents = Vec::new();
    for (i, ns) in run.tb.backends.iter().enumerate() {
        let dir = run.scratch.path(&format!("textfile-b{}", i + 1));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("load.prom"), "backend_load 0\n").unwrap();
        let mut cmd = ns.command(exporter);
        cmd.arg(format!("--web.listen-address={}:9101", run.tb.backends4[i]))
            .args([
                "--collector.disable-defaults",
                "--collector.loadavg",
                "--collector.cpu",
                "--collector.textfile",
            ])
            .arg(format!("--collector.textfile.directory={}", dir.display()));
        agents.push(Process::spawn(cmd).expect("start node_exporter"));
    }
    // The default reading, node_load1 per CPU, is the kernel's own.
    let exporter = std::net::SocketAddr::new(run.tb.backends4[0].parse().unwrap(), 9101);
    let read = wait_until("node_exporter answers", Duration::from_secs(10), || {
        run.tb.backends[0]
            .run_inside(move || {
                lb::monitor::prometheus_scrape(
                    exporter,
                    "/metrics",
                    "node_load1",
                    Duration::from_secs(1),
                )
                .ok()
            })
            .ok()
            .flatten()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    check_against_the_kernel(read);
    let set = |i: usize, v: f64| {
        let dir = run.scratch.path(&format!("textfile-b{}", i + 1));
        // written whole, then renamed: the exporter never reads half a file
        std::fs::write(dir.join("load.tmp"), format!("backend_load {v}\n")).unwrap();
        std::fs::rename(dir.join("load.tmp"), dir.join("load.prom")).unwrap();
    };
    load_moves_shares(&run, &set, &agents);
    drop(agents);
}

/// Inspect, then balance: the balancer's workers read each connection's
/// first data packets with the rules before the kernel balances the rest.
fn inspect_then_balance(mode: &str) {
    let files = Scratch::new(&format!("lb-inspect-rules-{mode}"));
    let rules = files.path("lb.rules");
    std::fs::write(
        &rules,
        "reject http any any -> any any (msg:\"blocked host\"; http.host; content:\"blocked.test\"; sid:1;)\n",
    )
    .unwrap();
    let flows = files.path("flows.jsonl");
    let run = Running::start_with(
        "inspect",
        mode,
        |b4, b6| {
            // the HTTP services inspect (IPv4 and IPv6); UDP is balanced as before
            config(mode, b4, b6).replace(
                "port = 80\nproto = \"tcp\"\n",
                "port = 80\nproto = \"tcp\"\ninspect = true\n",
            )
        },
        &[
            "--rules".into(),
            rules.display().to_string(),
            "--flow-log".into(),
            flows.display().to_string(),
        ],
    );
    let tb = &run.tb;
    let socket = &run.socket;

    // requests for the blocked host: reset at the balancer, never at a
    // backend, over IPv4 and IPv6
    for vip in [VIP4, VIP6] {
        let blocked = tb
            .client
            .command("python3")
            .env("LB_HOST", "blocked.test")
            .arg(format!("{PEERS}/lb_client.py"))
            // (the client gives up after 5 failures in a row)
            .args(["count", vip, "80", "5"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&blocked.stdout).expect("client JSON");
        assert_eq!(
            doc["errors"], 5,
            "{vip}: every blocked request fails: {doc}"
        );
        assert!(
            String::from_utf8_lossy(&blocked.stderr).contains("reset"),
            "{vip}: the client is reset (the rule says reject): {}",
            String::from_utf8_lossy(&blocked.stderr)
        );
    }

    // everything else is balanced by weight, 5:3:2
    let out = tb
        .client
        .command("python3")
        .arg(format!("{PEERS}/lb_client.py"))
        .args(["count", VIP4, "80", "1000"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(
        doc["errors"],
        0,
        "{doc}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        run.dp.output()
    );
    let c = counts(&doc);
    for (name, want) in [("b1", 50.0), ("b2", 30.0), ("b3", 20.0)] {
        let got = share(&c, name);
        assert!(
            (got - want).abs() <= 4.0,
            "{name}: {got:.1}% of {c:?}, want {want}%"
        );
    }
    // and over IPv6 (weights 1:1:1 there)
    let doc = client(&tb.client, &["count", VIP6, "80", "100"]);
    assert_eq!(doc["errors"], 0, "{doc}\n{}", run.dp.output());

    // the workers report once a second
    let stats = wait_until(
        "the workers' reports of every request",
        Duration::from_secs(10),
        || {
            let stats = ctl(socket, &["stats"]);
            (stats["inspection"]["user_packets"].as_u64()? >= 2210).then_some(stats)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:#}", ctl(socket, &["stats"])));
    let (inspected, kernel) = (&stats["inspection"], &stats["kernel"]);
    // `lb show` for people says which services are inspected, and how much
    let show = Command::new(BIN)
        .args(["ctl", "--socket"])
        .arg(socket)
        .args(["lb", "show"])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains(&format!(
            "inspected, then balanced: tcp/{VIP4}:80, tcp/[{VIP6}]:80; in user space: "
        )),
        "{show}"
    );
    assert!(
        inspected["dropped_flows"].as_u64().unwrap() == 10,
        "every blocked connection is dropped: {inspected}"
    );
    assert!(
        inspected["rejects_sent"].as_u64().unwrap() == 10,
        "and reset: {inspected}"
    );
    // user space saw each connection's request and FIN (10 blocked: their
    // request only), the kernel carried the rest: handshakes, ACKs
    assert!(
        kernel["to_user"].as_u64().unwrap() <= 2300,
        "only the first data packets went to user space: {kernel}"
    );
    assert!(kernel["lb_forwarded"].as_u64().unwrap() >= 4000, "{kernel}");

    let mut servers = run.servers;
    let mut logs = String::new();
    for p in servers.iter_mut().flatten() {
        logs += &p.output();
    }
    assert!(
        !logs.contains("blocked.test"),
        "no backend ever saw a blocked request:\n{logs}"
    );
    assert!(
        logs.matches(&format!("request {VIP4} /")).count() >= 1000,
        "the backends logged the allowed requests"
    );

    // the flow records name the backend and the verdict
    let mut dp = run.dp;
    dp.interrupt(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("the balancer stops: {e}"));
    let records = std::fs::read_to_string(&flows).unwrap();
    let records: Vec<Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dropped: Vec<&Value> = records.iter().filter(|r| r["verdict"] == "drop").collect();
    assert!(!dropped.is_empty(), "blocked flows are recorded");
    let backends: Vec<Value> = tb
        .backends4
        .iter()
        .chain(&tb.backends6)
        .map(|b| Value::from(b.as_str()))
        .collect();
    for r in &records {
        assert!(
            backends.contains(&r["backend"]),
            "a record names its backend: {r}"
        );
    }
    assert_eq!(dropped.len(), 10, "5 blocked flows over each family");
    for r in &dropped {
        assert_eq!(r["host"], "blocked.test", "{r}");
    }
    // an allowed connection stays inspected while a rule could still match
    // a later request on it (keep-alive): these ended undecided, after one
    // request and their FIN were read (a FIN can come apart from its flow's
    // record when the flow ended first: then a record of its own)
    let allowed: Vec<&Value> = records.iter().filter(|r| r["verdict"] != "drop").collect();
    let requests: Vec<&&Value> = allowed.iter().filter(|r| r["host"].is_string()).collect();
    assert!(
        requests.len() >= 1100,
        "{} allowed requests recorded",
        requests.len()
    );
    for r in &requests {
        assert!(r["host"] == VIP4 || r["host"] == format!("[{VIP6}]"), "{r}");
    }
    let read: u64 = allowed
        .iter()
        .filter_map(|r| r["user_packets"].as_u64())
        .sum();
    assert!(
        read >= 2 * 1100,
        "{read} packets of allowed flows read: each request and its FIN"
    );
}

#[test]
fn ipip_inspect_then_balance_stops_blocked_requests_at_the_balancer_root() {
    inspect_then_balance("ipip");
}

#[test]
fn nat_inspect_then_balance_stops_blocked_requests_at_the_balancer_root() {
    inspect_then_balance("nat");
}
