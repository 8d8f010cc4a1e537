//! End-to-end tests of the data plane core (root, network namespaces, real
//! traffic from real sockets over a 4-queue veth pair). Each test builds its
//! own testbed, which is removed on every exit path, panics included.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use testbed::{Process, Testbed, traffic};

const BIN: &str = env!("CARGO_BIN_EXE_dataplane");
const K: u64 = 8;

/// Starts the data plane on the testbed's DUT and waits until it runs.
fn start(tb: &Testbed, extra: &[&str]) -> Process {
    let mut dp = spawn(tb, extra);
    dp.wait_for_line("dataplane: running", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    dp
}

/// Starts the data plane on the testbed's DUT.
fn spawn(tb: &Testbed, extra: &[&str]) -> Process {
    let mut cmd = tb.dut.command(BIN);
    cmd.args(["--iface", &tb.dut_if])
        .args(extra)
        .env("RUST_LOG", "info");
    // Tests run in parallel with the same interface names in different
    // namespaces: only the control test uses a (private) control socket.
    if !extra.contains(&"--control") {
        cmd.arg("--no-control");
    }
    Process::spawn(cmd).expect("spawn dataplane")
}

fn stats_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dataplane-e2e-{tag}-{}.json", std::process::id()))
}

fn read_stats(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("stats has no number at {path}: {v}"))
}

fn queue_sum(v: &Value, field: &str) -> u64 {
    v["queues"]
        .as_array()
        .expect("queues array")
        .iter()
        .map(|q| q[field].as_u64().expect("number"))
        .sum()
}

/// Stops the data plane with SIGINT, asserts it exits cleanly, and returns
/// its final stats document (the file is removed).
fn stop_and_read_stats(dp: &mut Process, stats: &Path) -> Value {
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    let v = read_stats(stats).expect("final stats JSON");
    let _ = std::fs::remove_file(stats);
    v
}

/// Packets user space or the kernel's verdict path accounted for.
fn accounted(v: &Value) -> u64 {
    queue_sum(v, "rx_packets") + u(v, "/kernel/bypass_pass") + u(v, "/kernel/bypass_drop")
}

/// The AF_XDP path's books (mirror mode: the frames themselves go to the
/// workers, decided flows are discarded in XDP).
#[test]
fn four_queues_account_for_every_packet_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(4).expect("testbed");
    let stats = stats_path("account");
    let _ = std::fs::remove_file(&stats);
    let mut dp = start(
        &tb,
        &[
            "--mirror",
            "--queues",
            "4",
            "--sniff-packets",
            &K.to_string(),
            "--stats-json",
            stats.to_str().unwrap(),
            "--stats-interval",
            "0.1",
        ],
    );
    assert!(tb.dut_has_xdp().unwrap(), "program attached while running");

    // A few hundred flows, round robin, paced so that consecutive packets of
    // one flow are far apart (30 ms) compared to a worker's batch turnaround.
    let spec = traffic::FlowSpec {
        tcp_flows: 100,
        payload_len: 64,
        ..traffic::FlowSpec::udp(tb.gen_ip, tb.dut_ip, 200, 20, 10_000, 20_000)
    };
    let flows = u64::from(spec.udp_flows + spec.tcp_flows);
    let sent = traffic::send_flows(&tb.gen_ns, spec.clone()).expect("send traffic");
    assert_eq!(
        sent.packets(),
        flows * u64::from(spec.packets_per_flow),
        "generator sent everything within its time bound"
    );

    // Await the live stats catching up with what was sent.
    testbed::wait_until(
        "the live stats to account for every packet",
        Duration::from_secs(15),
        || read_stats(&stats).filter(|v| accounted(v) >= sent.packets()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nlast stats: {:?}\noutput:\n{}",
            read_stats(&stats),
            dp.output()
        )
    });

    let v = stop_and_read_stats(&mut dp, &stats);
    assert!(
        !tb.dut_has_xdp().unwrap(),
        "no XDP program may remain attached after exit"
    );
    assert!(
        dp.output().contains("percentile"),
        "summary with latency percentiles:\n{}",
        dp.output()
    );
    assert_eq!(v["stopped"], Value::Bool(true));
    assert_eq!(v["xdp_mode"], "native");
    assert_eq!(v["bind_mode"], "copy", "veth only does copy mode");
    let user_rx = queue_sum(&v, "rx_packets");
    let lost: u64 = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| u(q, "/xsk/rx_ring_full") + u(q, "/xsk/rx_dropped"))
        .sum();
    let ctx = format!("stats: {v:#}");

    // Every packet sent is accounted for, exactly once.
    assert_eq!(
        user_rx + lost + u(&v, "/kernel/bypass_pass") + u(&v, "/kernel/bypass_drop"),
        sent.packets(),
        "{ctx}"
    );
    assert_eq!(
        u(&v, "/kernel/to_user"),
        user_rx + lost,
        "redirected = received by workers + lost in rings; {ctx}"
    );
    assert_eq!(
        lost, 0,
        "no frames lost in the AF_XDP rings at 10 kpps; {ctx}"
    );
    assert_eq!(u(&v, "/kernel/parse_errors"), 0, "{ctx}");
    assert_eq!(u(&v, "/kernel/no_socket"), 0, "{ctx}");
    assert!(
        u(&v, "/kernel/non_ip") >= 1,
        "the ARP exchange went through XDP to the stack; {ctx}"
    );

    // Dynamic sniffing: each flow reached user space exactly K times, then the kernel took over.
    assert_eq!(queue_sum(&v, "flows_seen"), flows, "{ctx}");
    assert_eq!(
        queue_sum(&v, "verdicts_written"),
        flows,
        "one verdict per flow; {ctx}"
    );
    // Packets in flight while a verdict is being written still reach user
    // space; they are counted apart (see dpi_verdicts_are_enforced_in_the_kernel).
    let late = queue_sum(&v, "after_verdict_packets");
    assert!(late <= flows, "late packets are the exception; {ctx}");
    for q in v["queues"].as_array().unwrap() {
        assert!(
            u(q, "/max_flow_packets") <= K + late,
            "queue {} saw a flow more than K times; {ctx}",
            q["queue"]
        );
    }
    assert_eq!(user_rx - late, flows * K, "{ctx}");
    assert_eq!(
        u(&v, "/kernel/bypass_drop") + late,
        sent.packets() - flows * K,
        "a mirror port's decided flows are discarded in XDP; {ctx}"
    );
    assert_eq!(u(&v, "/kernel/bypass_pass"), 0, "{ctx}");

    // RSS-like spreading: flows landed on more than one queue.
    let busy_queues = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| u(q, "/rx_packets") > 0)
        .count();
    assert!(
        busy_queues > 1,
        "flows spread over {busy_queues} queue(s); {ctx}"
    );
    assert_eq!(
        u(&v, "/latency_ns/count"),
        user_rx,
        "one processing-time sample per packet; {ctx}"
    );

    // ARP still resolves through the program.
    let neigh = tb
        .gen_ns
        .ip(&["neigh", "show", &tb.dut_ip.to_string()])
        .unwrap();
    assert!(
        neigh.contains("lladdr"),
        "generator resolved the DUT's MAC: {neigh}"
    );
}

#[test]
fn second_dataplane_on_same_interface_is_refused_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(2).expect("testbed");
    let mut first = start(&tb, &["--queues", "2"]);

    let mut second = spawn(&tb, &["--queues", "2"]);
    let status = second.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(
        !status.success(),
        "second instance must fail:\n{}",
        second.output()
    );
    assert!(
        second
            .output()
            .contains("already has an XDP program attached")
            && second.output().contains("--force"),
        "says why and what to do:\n{}",
        second.output()
    );
    assert!(
        tb.dut_has_xdp().unwrap(),
        "the first instance's program is untouched"
    );

    first.signal(libc::SIGTERM).unwrap();
    let status = first.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(
        status.success(),
        "first instance exits cleanly:\n{}",
        first.output()
    );
    assert!(!tb.dut_has_xdp().unwrap());
}

#[test]
fn bad_input_fails_clearly_and_attaches_nothing_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(4).expect("testbed");
    let cases: [(&[&str], &str); 12] = [
        (&["--iface", "nosuch0"], "interface `nosuch0` not found"),
        (
            &["--iface", "dut0", "--peer", "nosuch1"],
            "interface `nosuch1` not found",
        ),
        (
            &["--iface", "dut0", "--peer", "dut0"],
            "a bridge needs two different interfaces",
        ),
        (
            &["--iface", "dut0", "--peer", "dut0", "--mirror"],
            "cannot be used with",
        ),
        (&["--iface", "dut0", "--queues", "8"], "has 4 RX queue(s)"),
        (
            &["--iface", "dut0", "--mirror", "--zero-copy", "require"],
            "does not support AF_XDP zero copy",
        ),
        (
            &["--iface", "dut0", "--zero-copy", "require"],
            "host mode copies packets",
        ),
        // Fewer queues than the NIC has: the rest would go uninspected.
        (
            &["--iface", "dut0", "--mirror", "--queues", "2"],
            "leaves RX queue(s) 2-3 of `dut0` (it has 4) without a worker",
        ),
        (
            &["--iface", "dut0", "--duration", "inf"],
            "--duration must be",
        ),
        (
            &[
                "--iface",
                "dut0",
                "--stats-json",
                "/nonexistent-dir/stats.json",
            ],
            "--stats-json /nonexistent-dir/stats.json: cannot write",
        ),
        (
            &["--iface", "dut0", "--latency-hgrm", "/nonexistent-dir/lat"],
            "--latency-hgrm /nonexistent-dir/lat: cannot write",
        ),
        (&["--iface", "dut0", "--cores", "4096"], "names core 4096"),
    ];
    for (args, expected) in cases {
        let mut cmd = tb.dut.command(BIN);
        cmd.args(args);
        let mut p = Process::spawn(cmd).unwrap();
        let status = p.wait_exit(Duration::from_secs(20)).unwrap();
        assert!(!status.success(), "{args:?} must fail");
        assert!(
            p.output().contains(expected),
            "{args:?}: expected `{expected}` in:\n{}",
            p.output()
        );
        assert!(
            !tb.dut_has_xdp().unwrap(),
            "{args:?} left a program attached"
        );
    }

    // Not root: refused before anything is loaded, saying what is missing.
    let mut cmd = tb.dut.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        BIN,
        "--iface",
        "dut0",
    ]);
    let mut p = Process::spawn(cmd).unwrap();
    let status = p.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success(), "an unprivileged run must fail");
    assert!(
        p.output().contains("missing capabilities") && p.output().contains("CAP_BPF"),
        "says which: {}",
        p.output()
    );
    assert!(!tb.dut_has_xdp().unwrap());
}

#[test]
fn ipv6_neighbour_discovery_keeps_working_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(2).expect("testbed");
    let stats = stats_path("nd");
    let mut dp = start(
        &tb,
        &[
            "--queues",
            "2",
            "--stats-json",
            stats.to_str().unwrap(),
            "--stats-interval",
            "0.1",
        ],
    );
    let dut_ll = tb
        .enable_ipv6_link_local()
        .expect("IPv6 link-local on the testbed");

    // A datagram to the DUT's link-local address makes the generator's kernel
    // resolve it with a neighbour solicitation, which must reach the DUT's
    // stack through the XDP program and be answered.
    let gen_if = tb.gen_if.clone();
    tb.gen_ns
        .run_inside(move || {
            let scope = xdp_redirect::iface::index(&gen_if).expect("gen0 index");
            let sock = std::net::UdpSocket::bind("[::]:0").expect("bind");
            sock.send_to(b"nd", std::net::SocketAddrV6::new(dut_ll, 9, 0, scope))
                .expect("send");
        })
        .unwrap();
    let dut_mac = tb
        .dut_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    testbed::wait_until(
        "the generator to resolve the DUT over IPv6",
        Duration::from_secs(10),
        || {
            let neigh = tb
                .gen_ns
                .ip(&["-6", "neigh", "show", "dev", &tb.gen_if])
                .ok()?;
            neigh
                .lines()
                .any(|l| l.starts_with(&dut_ll.to_string()) && l.contains(&dut_mac))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            tb.gen_ns.ip(&["-6", "neigh"]).unwrap_or_default()
        )
    });

    let v = stop_and_read_stats(&mut dp, &stats);
    assert!(
        u(&v, "/kernel/link_control") >= 2,
        "solicitation (and MLD/RS chatter) passed in XDP: {v:#}"
    );
}

#[test]
fn dpi_verdicts_are_enforced_in_the_kernel_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(4).expect("testbed");
    let dir = std::env::temp_dir();
    let rules = dir.join(format!("dataplane-e2e-{}.rules", std::process::id()));
    std::fs::write(
        &rules,
        "drop udp any any -> any 9 (msg:\"blocked payload\"; content:\"blockme\"; sid:100;)\n",
    )
    .unwrap();
    let stats = stats_path("dpi");
    let _ = std::fs::remove_file(&stats);
    let _discard = testbed::peers::udp_discard(&tb.dut, 9);
    let _discard19 = testbed::peers::udp_discard(&tb.dut, 19);
    let mut dp = start(
        &tb,
        &[
            "--queues",
            "4",
            "--rules",
            rules.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
            "--stats-interval",
            "0.1",
        ],
    );

    // 50 flows the rule drops, and 50 to another port, which no rule can
    // match (handed to the kernel as soon as they are classified: Unknown,
    // allowed by default), each decided on its first packet; the other 9
    // packets of each stay in XDP.
    let spec = |base: u16, port: u16, payload: &[u8]| traffic::FlowSpec {
        payload_len: 0,
        payload: Some(payload.to_vec()),
        dst_port: port,
        ..traffic::FlowSpec::udp(tb.gen_ip, tb.dut_ip, 50, 10, 5_000, base)
    };
    let blocked = traffic::send_flows(&tb.gen_ns, spec(30_000, 9, b"please blockme now")).unwrap();
    let allowed = traffic::send_flows(&tb.gen_ns, spec(31_000, 19, b"hello there")).unwrap();
    let sent = blocked.packets() + allowed.packets();
    assert_eq!(sent, 1000);
    testbed::wait_until(
        "the live stats to account for every packet",
        Duration::from_secs(15),
        || read_stats(&stats).filter(|v| accounted(v) >= sent),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nlast stats: {:?}\noutput:\n{}",
            read_stats(&stats),
            dp.output()
        )
    });
    let v = stop_and_read_stats(&mut dp, &stats);
    assert!(
        dp.output().contains("rules: 1 loaded"),
        "says what it loaded:\n{}",
        dp.output()
    );
    let _ = std::fs::remove_file(&rules);
    let ctx = format!("stats: {v:#}");
    // A flow's next packet can reach user space before its verdict lands in
    // the map (the worker writes verdicts at the end of each RX batch and may
    // be descheduled on a loaded 2-core machine). Those packets are counted
    // as `after_verdict_packets`; everything else must be exact.
    let late = queue_sum(&v, "after_verdict_packets");
    assert_eq!(
        queue_sum(&v, "rx_packets") - late,
        100,
        "exactly the first packet of each flow was inspected; {ctx}"
    );
    assert!(late <= 100, "late packets are the exception; {ctx}");
    assert_eq!(queue_sum(&v, "verdicts_written"), 100, "{ctx}");
    assert_eq!(queue_sum(&v, "verdicts_drop"), 50, "{ctx}");
    let (drop, pass) = (u(&v, "/kernel/bypass_drop"), u(&v, "/kernel/bypass_pass"));
    assert_eq!(
        drop + pass + late,
        100 * 9,
        "after the first packet, every packet was handled by its verdict; {ctx}"
    );
    assert!(
        drop <= 50 * 9 && drop + late >= 50 * 9,
        "blocked flows dropped in XDP after the first packet; {ctx}"
    );
    assert!(
        pass <= 50 * 9 && pass + late >= 50 * 9,
        "allowed flows passed in XDP after the first packet; {ctx}"
    );
}

#[test]
fn mirror_port_discards_decided_flows_in_xdp_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(2).expect("testbed");
    let stats = stats_path("mirror");
    let _ = std::fs::remove_file(&stats);
    let mut dp = start(
        &tb,
        &[
            "--queues",
            "2",
            "--mirror",
            "--sniff-packets",
            "1",
            "--stats-json",
            stats.to_str().unwrap(),
            "--stats-interval",
            "0.1",
        ],
    );
    assert!(dp.output().contains("mirror mode"), "{}", dp.output());
    let spec = traffic::FlowSpec::udp(tb.gen_ip, tb.dut_ip, 20, 5, 2_000, 33_000);
    let sent = traffic::send_flows(&tb.gen_ns, spec).unwrap().packets();
    assert_eq!(sent, 100);
    testbed::wait_until(
        "the live stats to account for every packet",
        Duration::from_secs(15),
        || read_stats(&stats).filter(|v| accounted(v) >= sent),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    let v = stop_and_read_stats(&mut dp, &stats);
    let ctx = format!("stats: {v:#}");
    let late = queue_sum(&v, "after_verdict_packets");
    assert_eq!(
        queue_sum(&v, "rx_packets") - late,
        20,
        "first packets; {ctx}"
    );
    assert_eq!(
        u(&v, "/kernel/bypass_drop") + late,
        80,
        "allowed flows are discarded in XDP on a mirror port; {ctx}"
    );
    assert_eq!(
        u(&v, "/kernel/bypass_pass"),
        0,
        "nothing handed to the stack; {ctx}"
    );
    assert_eq!(
        queue_sum(&v, "verdicts_drop"),
        0,
        "no flow was dropped by policy; {ctx}"
    );
}

/// Runs `dataplane ctl --socket SOCKET ARGS... --json`; the reply as JSON, or the error text.
fn ctl(socket: &Path, args: &[&str]) -> Result<Value, String> {
    let out = std::process::Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        // anywhere on the line
        .arg("--json")
        .output()
        .expect("run dataplane ctl");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("ctl --json prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn control_socket_metrics_and_reload_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(2).expect("testbed");
    let scratch = testbed::Scratch::new("ctl");
    let socket = scratch.path("ctl.sock");
    let rules = scratch.path("site.rules");
    std::fs::write(
        &rules,
        "drop udp any any -> any 9 (msg:\"blocked payload\"; content:\"blockme\"; sid:7;)\n",
    )
    .unwrap();
    let _discard = testbed::peers::udp_discard(&tb.dut, 9);
    let mut dp = start(
        &tb,
        &[
            "--queues",
            "2",
            "--rules",
            rules.to_str().unwrap(),
            "--control",
            socket.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:19464",
            "--stats-interval",
            "0.1",
        ],
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the control socket is root-only");

    let spec = |base: u16, payload: &[u8]| traffic::FlowSpec {
        payload_len: 0,
        payload: Some(payload.to_vec()),
        ..traffic::FlowSpec::udp(tb.gen_ip, tb.dut_ip, 10, 4, 2_000, base)
    };
    let mut sent = traffic::send_flows(&tb.gen_ns, spec(34_000, b"hello"))
        .unwrap()
        .packets();
    sent += traffic::send_flows(&tb.gen_ns, spec(35_000, b"blockme"))
        .unwrap()
        .packets();

    // ctl stats matches the counters once the workers have reported them all.
    let stats = testbed::wait_until(
        "ctl stats to account for the traffic",
        Duration::from_secs(15),
        || {
            ctl(&socket, &["stats"])
                .ok()
                .filter(|v| accounted(v) >= sent)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    assert_eq!(stats["iface"], "dut0");
    assert_eq!(
        u(&stats, "/kernel/to_user") + u(&stats, "/kernel/egress_to_user"),
        queue_sum(&stats, "rx_packets"),
        "host mode: the workers got a copy of every undecided packet, both ways; {stats:#}"
    );

    // The metrics endpoint parses as Prometheus text and agrees with ctl.
    let out = tb
        .dut
        .command("curl")
        .args(["-sS", "--max-time", "5", "http://127.0.0.1:19464/metrics"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, label: (&str, &str)| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name}{label:?} in\n{text}"))
    };
    let stats_now = ctl(&socket, &["stats"]).unwrap();
    let number = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    };
    let rx = scrape
        .samples
        .iter()
        .find(|s| s.metric == "dataplane_kernel_rx_packets_total")
        .map(number)
        .unwrap_or_else(|| panic!("no dataplane_kernel_rx_packets_total in\n{text}"));
    assert_eq!(
        rx as u64,
        u(&stats_now, "/kernel/rx"),
        "metrics and ctl report the same kernel counters"
    );
    let outcomes: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "dataplane_kernel_packets_total")
        .map(number)
        .sum();
    assert_eq!(
        outcomes, rx,
        "summing the outcome family gives every packet once (no total among its parts):\n{text}"
    );
    assert_eq!(
        value("dataplane_verdicts_total", ("action", "drop")),
        10.0,
        "{text}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "dataplane_processing_seconds"
                && matches!(s.value, prometheus_parse::Value::Histogram(_))),
        "latency as a Prometheus histogram:\n{text}"
    );

    // ctl flows: both the workers' tables and the kernel map.
    let flows = ctl(&socket, &["flows", "5"]).unwrap();
    assert_eq!(flows["user"].as_array().unwrap().len(), 5, "{flows:#}");
    assert!(!flows["kernel"].as_array().unwrap().is_empty(), "{flows:#}");

    // A verdict set by hand is enforced in XDP, both directions.
    let flow = ["udp", "198.18.0.1:36000", "198.18.0.2:9"];
    ctl(
        &socket,
        &["verdict", "set", flow[0], flow[1], flow[2], "drop"],
    )
    .unwrap();
    let before = u(&ctl(&socket, &["stats"]).unwrap(), "/kernel/bypass_drop");
    let mut one = spec(36_000, b"hello");
    one.udp_flows = 1;
    traffic::send_flows(&tb.gen_ns, one).unwrap();
    testbed::wait_until(
        "the hand-set verdict to drop 4 packets",
        Duration::from_secs(10),
        || {
            let now = u(&ctl(&socket, &["stats"]).ok()?, "/kernel/bypass_drop");
            (now == before + 4).then_some(())
        },
    )
    .unwrap();
    let e = ctl(
        &socket,
        &[
            "verdict",
            "set",
            "udp",
            "198.18.0.1",
            "198.18.0.2:9",
            "drop",
        ],
    )
    .unwrap_err();
    assert!(e.contains("ADDR:PORT"), "{e}");

    // A bad rules file on reload changes nothing and names the line.
    std::fs::write(
        &rules,
        "drop udp any any -> any 9 (msg:\"ok\"; content:\"blockme\"; sid:7;)\ndrop udp any any -> any 9 (msg:\"bad\"; nosuchkeyword; sid:8;)\n",
    )
    .unwrap();
    let e = ctl(&socket, &["rules", "reload"]).unwrap_err();
    assert!(
        e.contains(":2") && e.contains("nosuchkeyword"),
        "names file and line: {e}"
    );
    assert!(e.contains("old rules keep running"), "{e}");
    // Packets of a flow in flight while its verdict is written still reach
    // user space (`after_verdict_packets`); every other one is dropped.
    let handled = |v: &Value| u(v, "/kernel/bypass_drop") + queue_sum(v, "after_verdict_packets");
    let before = handled(&ctl(&socket, &["stats"]).unwrap());
    traffic::send_flows(&tb.gen_ns, spec(37_000, b"blockme")).unwrap();
    testbed::wait_until(
        "the old rules to still drop",
        Duration::from_secs(10),
        || {
            let v = ctl(&socket, &["stats"]).ok()?;
            (queue_sum(&v, "verdicts_drop") >= 20 && handled(&v) >= before + 30).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    // A good file reloads (also on SIGHUP).
    std::fs::write(
        &rules,
        "pass udp any any -> any 9 (msg:\"all fine\"; sid:9;)\n",
    )
    .unwrap();
    let ok = ctl(&socket, &["rules", "reload"]).unwrap();
    assert!(ok.as_str().unwrap().starts_with("1 rule(s)"), "{ok}");
    dp.signal(libc::SIGHUP).unwrap();
    dp.wait_for_line("SIGHUP: rules reloaded", Duration::from_secs(10))
        .unwrap();
    assert!(
        ctl(&socket, &["lb", "show"])
            .unwrap_err()
            .contains("no load balancer")
    );

    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    assert!(!socket.exists(), "the socket is removed at exit");
}

/// The XDP program id on the DUT interface of `tb`, from the kernel.
fn xdp_prog_id(tb: &Testbed) -> Option<u32> {
    let out = tb.dut.ip(&["-d", "link", "show", "dev", &tb.dut_if]).ok()?;
    let rest = &out[out.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// `--force` replaces the program on this namespace's interface only: a
/// bpf_link's info names an interface index but no namespace, and two
/// namespaces' interfaces can share an index.
#[test]
fn force_replaces_only_this_namespaces_program_root() {
    testbed::require_root("the data plane end-to-end test");
    let here = Testbed::up(2).expect("testbed");
    let there = Testbed::up(2).expect("second testbed");
    let index = |tb: &Testbed| {
        tb.dut
            .command("cat")
            .arg(format!("/sys/class/net/{}/ifindex", tb.dut_if))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap()
    };
    assert_eq!(
        index(&here),
        index(&there),
        "this test needs two namespaces whose interfaces share an index"
    );
    // A data plane on one namespace's interface (its link made first) ...
    let mut other = start(&there, &["--queues", "2"]);
    let other_prog = xdp_prog_id(&there).expect("a program there");
    // ... and somebody else's program, on a link, on the twin interface here.
    let iface = here.dut_if.clone();
    let _theirs = here
        .dut
        .run_inside(move || {
            let mut programs = xdp_redirect::baseline::Baseline::load().expect("load");
            programs
                .attach(xdp_redirect::baseline::Kind::PassAll, &iface)
                .expect("attach XDP_PASS");
            programs
        })
        .unwrap();
    let theirs = xdp_prog_id(&here).expect("their program");

    let mut refused = spawn(&here, &["--queues", "2"]);
    assert!(
        !refused
            .wait_exit(Duration::from_secs(20))
            .unwrap()
            .success()
    );
    assert!(
        refused
            .output()
            .contains(&format!("program id {theirs} `xdp_pass_all`")),
        "names the program on this interface:\n{}",
        refused.output()
    );
    let mut ours = start(&here, &["--queues", "2", "--force"]);
    let now_here = xdp_prog_id(&here).expect("a program here");
    assert_ne!(now_here, theirs, "--force replaced the program here");
    assert_eq!(
        xdp_prog_id(&there),
        Some(other_prog),
        "the other namespace's program is untouched\n{}",
        ours.output()
    );
    ours.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    other
        .interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("the other data plane {e}"));
}

/// Serving fewer queues than the NIC has is a choice that is said out loud:
/// refused by default (see bad_input_fails_clearly_and_attaches_nothing_root),
/// and with --allow-unserved-queues a warning names the queues, whose
/// undecided traffic gets the --on-failure action (counted as no_socket).
#[test]
fn unserved_queues_are_named_and_get_the_failure_action_root() {
    testbed::require_root("the data plane end-to-end test");
    let tb = Testbed::up(2).expect("testbed");
    let stats = stats_path("unserved");
    let _ = std::fs::remove_file(&stats);
    let mut dp = start(
        &tb,
        &[
            "--mirror",
            "--queues",
            "1",
            "--allow-unserved-queues",
            "--stats-json",
            stats.to_str().unwrap(),
            "--stats-interval",
            "0.1",
        ],
    );
    dp.wait_for_line("RX queues 1-1 have no worker", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dp.output().contains("passed on uninspected"),
        "{}",
        dp.output()
    );
    let spec = traffic::FlowSpec::udp(tb.gen_ip, tb.dut_ip, 64, 2, 5_000, 36_000);
    let sent = traffic::send_flows(&tb.gen_ns, spec).unwrap().packets();
    testbed::wait_until(
        "every packet accounted for",
        Duration::from_secs(15),
        || read_stats(&stats).filter(|v| accounted(v) + u(v, "/kernel/no_socket") >= sent),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    let v = stop_and_read_stats(&mut dp, &stats);
    assert!(
        u(&v, "/kernel/no_socket") > 0 && queue_sum(&v, "rx_packets") > 0,
        "both queues carried flows, one of them unserved: {v:#}"
    );
}

/// A TCP conversation's frames from `client` to `server`: the handshake,
/// then each `(from_client, payload)` with the sequence numbers a real
/// stack would use.
fn tcp_conversation(
    client: (&str, u16),
    server: (&str, u16),
    exchanges: &[(bool, &[u8])],
) -> Vec<Vec<u8>> {
    use testbed::frames::{Packet, TCP_ACK, TCP_PSH, TCP_SYN, ip};
    let (c, s) = ((ip(client.0), client.1), (ip(server.0), server.1));
    let (mut cseq, mut sseq) = (100u32, 5000u32);
    let mut frames = vec![
        Packet::tcp(c.0, c.1, s.0, s.1, TCP_SYN)
            .with_seq(cseq - 1, 0)
            .build(),
        Packet::tcp(s.0, s.1, c.0, c.1, TCP_SYN | TCP_ACK)
            .with_seq(sseq - 1, cseq)
            .build(),
        Packet::tcp(c.0, c.1, s.0, s.1, TCP_ACK)
            .with_seq(cseq, sseq)
            .build(),
    ];
    for (from_client, payload) in exchanges {
        let frame = if *from_client {
            let p = Packet::tcp(c.0, c.1, s.0, s.1, TCP_ACK | TCP_PSH).with_seq(cseq, sseq);
            cseq += payload.len() as u32;
            p
        } else {
            let p = Packet::tcp(s.0, s.1, c.0, c.1, TCP_ACK | TCP_PSH).with_seq(sseq, cseq);
            sseq += payload.len() as u32;
            p
        };
        frames.push(frame.with_payload(payload).build());
    }
    frames
}

/// One engine: the same packets give the same flow records live (host
/// mode, two workers, verdicts enforced in XDP) and offline (`dataplane
/// inspect` on a capture of them). The capture is made here: HTTP with a
/// keep-alive second request, a blocked HTTP request, TLS, DNS and an
/// unknown UDP flow, addressed so that the DUT's stack ignores them.
#[test]
fn live_and_offline_give_the_same_flow_records_root() {
    use testbed::frames::{Packet, ip};
    testbed::require_root("the live/offline agreement test");
    let tb = Testbed::up(2).expect("testbed");
    let dir = testbed::Scratch::new("replay");
    let rules = dir.path("replay.rules");
    std::fs::write(
        &rules,
        "drop http any any -> any any (msg:\"blocked\"; http.host; content:\"blocked.test\"; sid:1;)\n\
         alert dns any any -> any any (msg:\"a name\"; dns.query; content:\"allowed\"; sid:2;)\n",
    )
    .unwrap();
    let (a, b) = ("198.18.7.1", "198.18.7.2");
    let mut flows: Vec<Vec<Vec<u8>>> = vec![
        tcp_conversation(
            (a, 40001),
            (b, 80),
            &[
                (true, b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
                (false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                (true, b"GET /b HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
                (false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            ],
        ),
        tcp_conversation(
            (a, 40002),
            (b, 80),
            &[
                (true, b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n"),
                (false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                (true, b"GET /again HTTP/1.1\r\nHost: blocked.test\r\n\r\n"),
            ],
        ),
        tcp_conversation(
            (a, 40003),
            (b, 443),
            &[
                (true, &testbed::frames::tls_client_hello("good.test")),
                (false, &[22, 3, 3, 0, 2, 2, 0]),
                (false, &[23, 3, 3, 0, 4, 1, 2, 3, 4]),
                (true, &[23, 3, 3, 0, 4, 5, 6, 7, 8]),
            ],
        ),
    ];
    let query = testbed::frames::dns_query("allowed.test");
    let mut answer = query.clone();
    answer[2] = 0x81;
    answer[3] = 0x80;
    flows.push(vec![
        Packet::udp(ip(a), 40004, ip(b), 53)
            .with_payload(&query)
            .build(),
        Packet::udp(ip(b), 53, ip(a), 40004)
            .with_payload(&answer)
            .build(),
    ]);
    flows.push(
        (0..3)
            .map(|i| {
                Packet::udp(ip(a), 40005, ip(b), 9999)
                    .with_payload(&[0xde, 0xad, 0xbe, 0xef, i])
                    .build()
            })
            .collect(),
    );
    // The TLS flow's last two packets come after its verdict is in the
    // kernel (the second phase below), so that the kernel carries them.
    let tls_tail: Vec<Vec<u8>> = {
        let tls = &mut flows[2];
        tls.split_off(tls.len() - 2)
    };
    let first: Vec<Vec<u8>> = flows.concat();
    let frames: Vec<Vec<u8>> = [first.clone(), tls_tail.clone()].concat();

    // The capture, for the offline run.
    let pcap = dir.path("replay.pcap");
    {
        use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
        let file = std::fs::File::create(&pcap).unwrap();
        let mut writer = PcapWriter::with_header(file, PcapHeader::default()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let ts = Duration::from_millis(1_000 + i as u64);
            writer
                .write_packet(&PcapPacket::new(ts, f.len() as u32, f))
                .unwrap();
        }
    }

    // Live: the same frames into the DUT's interface.
    let flow_log = dir.path("flows.jsonl");
    let eve_live = dir.path("eve-live.json");
    let eve_offline = dir.path("eve-offline.json");
    let stats = dir.path("stats.json");
    let rules_arg = rules.to_str().unwrap().to_string();
    let flow_log_arg = flow_log.to_str().unwrap().to_string();
    let eve_arg = eve_live.to_str().unwrap().to_string();
    let stats_arg = stats.to_str().unwrap().to_string();
    let socket = dir.path("control.sock");
    let mut dp = start(
        &tb,
        &[
            "--queues",
            "2",
            "--rules",
            &rules_arg,
            "--flow-log",
            &flow_log_arg,
            "--eve",
            &eve_arg,
            "--stats-json",
            &stats_arg,
            "--stats-interval",
            "0.1",
            "--control",
            socket.to_str().unwrap(),
        ],
    );
    let sent = traffic::send_frames(&tb.gen_ns, &tb.gen_if, first.clone()).unwrap();
    assert_eq!(sent, first.len());
    testbed::wait_until(
        "the TLS flow's verdict in the kernel",
        Duration::from_secs(15),
        || {
            let flows = ctl(&socket, &["flows", "50"]).ok()?;
            flows["kernel"]
                .as_array()?
                .iter()
                .any(|f| f["b"].as_str().is_some_and(|b| b.ends_with(":443")))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    let sent = sent + traffic::send_frames(&tb.gen_ns, &tb.gen_if, tls_tail.clone()).unwrap();
    assert_eq!(sent, frames.len());
    testbed::wait_until(
        "every frame to be seen by a worker or a verdict in XDP",
        Duration::from_secs(15),
        || read_stats(&stats).filter(|v| accounted(v) >= sent as u64),
    )
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", read_stats(&stats), dp.output()));
    // The drop rule's alert and the drop are in the eve log while the data
    // plane runs and the flow is still open (not at its end).
    testbed::wait_until(
        "the blocked request's alert and drop events in the eve log",
        Duration::from_secs(10),
        || {
            let events = eve_events(&eve_live);
            let alert = events.iter().any(|e| {
                e["event_type"] == "alert"
                    && e["alert"]["signature_id"] == 1
                    && e["alert"]["action"] == "blocked"
                    && e["alert"]["signature"] == "blocked"
                    && e["http"]["hostname"] == "blocked.test"
            });
            let dropped = events
                .iter()
                .any(|e| e["event_type"] == "drop" && e["src_port"] == 40002);
            let no_flow_yet = !events.iter().any(|e| e["event_type"] == "flow");
            (alert && dropped && no_flow_yet).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{:#?}\n{}", eve_events(&eve_live), dp.output()));
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    let live = testbed::peers::flow_records(&flow_log);

    // Offline.
    let out = std::process::Command::new(BIN)
        .args([
            "inspect", "--format", "json", "--rules", &rules_arg, "--eve",
        ])
        .arg(&eve_offline)
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    assert_eq!(offline.len(), 5, "{offline:#?}");
    // The same from standard input (`-`), and with an unreadable file in
    // the list: it is reported, the others are read, the exit says so.
    let piped = std::process::Command::new(BIN)
        .args(["inspect", "--format", "json", "--rules", &rules_arg, "-"])
        .stdin(std::fs::File::open(&pcap).unwrap())
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(piped.stdout, out.stdout, "stdin reads as the file");
    let junk = dir.path("junk.pcap");
    std::fs::write(&junk, b"not a capture at all").unwrap();
    let mixed = std::process::Command::new(BIN)
        .args(["inspect", "--format", "json"])
        .arg(&junk)
        .arg(&pcap)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert!(!mixed.status.success(), "an unreadable file fails the run");
    assert!(
        stderr.contains("junk.pcap") && stderr.contains("not a pcap"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&mixed.stdout).lines().count(),
        5,
        "the readable file was read: {stderr}"
    );
    assert_eq!(live.len(), 5, "live: {live:#?}\n{}", dp.output());
    let id = |r: &Value| {
        format!(
            "{} {}:{} -> {}:{}",
            r["l4"], r["src"], r["sport"], r["dst"], r["dport"]
        )
    };
    for off in &offline {
        let on = live
            .iter()
            .find(|r| id(r) == id(off))
            .unwrap_or_else(|| panic!("no live record of {}: {live:#?}", id(off)));
        for field in [
            "protocol",
            "confidence",
            "host",
            "ja4",
            "dpi_packets",
            "sids",
            "verdict",
            "decided_by",
            "http_requests",
            "reason",
        ] {
            assert_eq!(
                on[field],
                off[field],
                "{field} of {}:\nlive {on:#}\noffline {off:#}",
                id(off)
            );
        }
        assert_eq!(
            u(on, "/user_packets") + u(on, "/kernel_packets"),
            u(off, "/packets"),
            "packets of {}: live {on:#}",
            id(off)
        );
        assert_eq!(
            u(on, "/user_bytes") + u(on, "/kernel_bytes"),
            u(off, "/bytes"),
            "bytes of {}: live {on:#}",
            id(off)
        );
    }
    let decided = |by: &str| offline.iter().filter(|r| r["decided_by"] == by).count();
    assert_eq!(
        (decided("rule"), decided("no-rules")),
        (1, 2),
        "{offline:#?}"
    );

    // Eve: the same flows, counted by direction, live (user space and the
    // kernel's per-direction counters) and offline (every packet); the
    // same alerts.
    let (live_eve, offline_eve) = (eve_events(&eve_live), eve_events(&eve_offline));
    let flows_of = |events: &[Value]| -> Vec<Value> {
        let mut flows: Vec<Value> = events
            .iter()
            .filter(|e| e["event_type"] == "flow")
            .cloned()
            .collect();
        flows.sort_by_key(|e| e["src_port"].as_u64());
        flows
    };
    let (live_flows, offline_flows) = (flows_of(&live_eve), flows_of(&offline_eve));
    assert_eq!(live_flows.len(), 5, "{live_eve:#?}");
    assert_eq!(offline_flows.len(), 5, "{offline_eve:#?}");
    for (on, off) in live_flows.iter().zip(&offline_flows) {
        for field in [
            "src_ip",
            "src_port",
            "dest_ip",
            "dest_port",
            "proto",
            "app_proto",
        ] {
            assert_eq!(on[field], off[field], "{field}: {on:#}\n{off:#}");
        }
        for field in [
            "pkts_toserver",
            "pkts_toclient",
            "bytes_toserver",
            "bytes_toclient",
        ] {
            assert_eq!(
                on["flow"][field], off["flow"][field],
                "{field}, live (user space + kernel) against the capture: {on:#}\n{off:#}"
            );
        }
    }
    // The TLS flow went to the kernel once encrypted: its rest is counted
    // there, by direction.
    let tls = live_flows.iter().find(|e| e["dest_port"] == 443).unwrap();
    assert_eq!(tls["flow"]["state"], "bypassed", "{tls:#}");
    assert_eq!(tls["flow"]["bypass"], "capture", "{tls:#}");
    assert!(
        u(tls, "/flow/bypassed/pkts_toserver") >= 1 && u(tls, "/flow/bypassed/pkts_toclient") >= 1,
        "the kernel counted both directions: {tls:#}"
    );
    let alerts = |events: &[Value]| -> Vec<(u64, u64)> {
        let mut a: Vec<(u64, u64)> = events
            .iter()
            .filter(|e| e["event_type"] == "alert")
            // the flow by its client's port
            .map(|e| (u(e, "/flow/src_port"), u(e, "/alert/signature_id")))
            .collect();
        a.sort();
        a.dedup();
        a
    };
    assert_eq!(alerts(&live_eve), alerts(&offline_eve));
    assert_eq!(alerts(&live_eve), vec![(40002, 1), (40004, 2)]);
    // Offline nothing is enforced: the drop rule's alert is "allowed".
    assert!(
        offline_eve
            .iter()
            .all(|e| e["alert"]["action"] != "blocked")
    );
}

/// The events of an eve log (an empty list while it does not exist).
fn eve_events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// IPFIX export read back by a real collector: Debian's `nfcapd` receives
/// in the DUT's namespace (on its own loopback), `nfdump` reads the file
/// back, and its flows, packets and bytes are those of the flow log: two
/// records (one per direction) per flow, and for a flow that outlives the
/// active timeout, a record per direction and stretch that add up.
#[test]
fn ipfix_export_is_read_back_by_nfdump_root() {
    use testbed::frames::{Packet, ip};
    testbed::require_root("the IPFIX export test");
    for tool in ["nfcapd", "nfdump"] {
        assert!(
            std::process::Command::new(tool)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "this test needs Debian's nfdump package ({tool}): run scripts/install-deps.sh"
        );
    }
    let tb = Testbed::up(2).expect("testbed");
    let dir = testbed::Scratch::new("ipfix");
    let flows_dir = dir.path("nfcapd");
    std::fs::create_dir_all(&flows_dir).unwrap();
    let port = "19995";
    let mut collector = tb.dut.command("nfcapd");
    collector
        .args(["-b", "127.0.0.1", "-p", port, "-t", "3600", "-w"])
        .arg(&flows_dir);
    let mut nfcapd = Process::spawn(collector).expect("spawn nfcapd");

    let (a, b) = ("198.18.8.1", "198.18.8.2");
    let mut first: Vec<Vec<u8>> = tcp_conversation(
        (a, 41001),
        (b, 80),
        &[
            (true, b"GET / HTTP/1.1\r\nHost: one.test\r\n\r\n"),
            (false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ],
    );
    first.extend((0..4).map(|i| {
        let p = if i == 2 {
            Packet::udp(ip(b), 9999, ip(a), 41002)
        } else {
            Packet::udp(ip(a), 41002, ip(b), 9999)
        };
        p.with_payload(&[1, 2, 3, i]).build()
    }));
    // the long flow: two packets now, three after an active timeout
    let long = |i: u8| {
        let (src, sport, dst, dport) = if i.is_multiple_of(2) {
            (a, 41003, b, 7777)
        } else {
            (b, 7777, a, 41003)
        };
        Packet::udp(ip(src), sport, ip(dst), dport)
            .with_payload(&[9; 20][..10 + usize::from(i)])
            .build()
    };
    first.extend([long(0), long(1)]);
    let second: Vec<Vec<u8>> = (2..5).map(long).collect();

    let stats = dir.path("stats.json");
    let flow_log = dir.path("flows.jsonl");
    let target = format!("127.0.0.1:{port}");
    let mut dp = start(
        &tb,
        &[
            "--queues",
            "2",
            "--dpi",
            "--ipfix",
            &target,
            "--ipfix-active-timeout",
            "1",
            "--flow-log",
            flow_log.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
            "--stats-interval",
            "0.1",
        ],
    );
    let sent = traffic::send_frames(&tb.gen_ns, &tb.gen_if, first.clone()).unwrap();
    assert_eq!(sent, first.len());
    // The active timeout passes: the running flows are exported once.
    testbed::wait_until(
        "the active timeout's exports of the three running flows",
        Duration::from_secs(15),
        || read_stats(&stats).filter(|v| queue_sum(v, "ipfix_exports") >= 3),
    )
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", read_stats(&stats), dp.output()));
    let sent = sent + traffic::send_frames(&tb.gen_ns, &tb.gen_if, second.clone()).unwrap();
    testbed::wait_until(
        "every frame to be seen by a worker or a verdict in XDP",
        Duration::from_secs(15),
        || read_stats(&stats).filter(|v| accounted(v) >= sent as u64),
    )
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", read_stats(&stats), dp.output()));
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    assert!(
        dp.output().contains("IPFIX: ") && !dp.output().contains("could not be sent"),
        "{}",
        dp.output()
    );
    // nfcapd writes its file when stopped
    nfcapd
        .interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("nfcapd {e}\n{}", nfcapd.output()));
    let out = std::process::Command::new("nfdump")
        .arg("-R")
        .arg(&flows_dir)
        .args(["-o", "csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // nfdump 1.7's csv: a header line naming the columns, then the flows
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("a csv header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (sa, da, sp, dp_, pr, ipkt, ibyt) = (
        col("sa"),
        col("da"),
        col("sp"),
        col("dp"),
        col("pr"),
        col("ipkt"),
        col("ibyt"),
    );
    // per direction: (src, sport, dst, dport) -> (records, packets, bytes)
    type Direction = (String, u64, String, u64);
    let mut seen: std::collections::BTreeMap<Direction, (u64, u64, u64)> = Default::default();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() || !f[0].starts_with(|c: char| c.is_ascii_digit()) {
            continue; // the summary after the flows
        }
        let n = |i: usize| {
            f[i].trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{line}"))
        };
        assert!(matches!(f[pr].trim(), "TCP" | "UDP" | "6" | "17"), "{line}");
        let e = seen
            .entry((f[sa].trim().into(), n(sp), f[da].trim().into(), n(dp_)))
            .or_default();
        *e = (e.0 + 1, e.1 + n(ipkt), e.2 + n(ibyt));
    }
    let records = testbed::peers::flow_records(&flow_log);
    assert_eq!(records.len(), 3, "{records:#?}");
    for r in &records {
        let (src, sport) = (r["src"].as_str().unwrap().to_string(), u(r, "/sport"));
        let (dst, dport) = (r["dst"].as_str().unwrap().to_string(), u(r, "/dport"));
        let fwd = seen.get(&(src.clone(), sport, dst.clone(), dport)).copied();
        let rev = seen.get(&(dst.clone(), dport, src.clone(), sport)).copied();
        let (fwd, rev) = (fwd.unwrap_or_default(), rev.unwrap_or_default());
        assert_eq!(
            fwd.1 + rev.1,
            u(r, "/user_packets") + u(r, "/kernel_packets"),
            "packets of {r}: nfdump {seen:?}"
        );
        assert_eq!(
            fwd.2 + rev.2,
            u(r, "/user_bytes") + u(r, "/kernel_bytes"),
            "bytes of {r}: nfdump {seen:?}"
        );
        assert!(fwd.1 > 0 && rev.1 > 0, "both directions: {seen:?}");
        if dport == 7777 {
            assert_eq!(
                (fwd.0, rev.0),
                (2, 2),
                "two stretches of the long flow: {seen:?}"
            );
            assert_eq!((fwd.1, rev.1), (3, 2), "{seen:?}");
        }
    }
}

/// `--log-format json`: everything the data plane writes, on both streams,
/// is JSON lines (the running line, what was loaded, the status lines, the
/// summary), without colour codes.
#[test]
fn json_logs_are_only_json_lines_root() {
    testbed::require_root("the JSON log test");
    let tb = Testbed::up(2).expect("testbed");
    let dir = testbed::Scratch::new("jsonlog");
    let rules = dir.path("one.rules");
    std::fs::write(
        &rules,
        "alert udp any any -> any any (msg:\"m\"; content:\"x\"; sid:1;)\n",
    )
    .unwrap();
    let mut dp = spawn(
        &tb,
        &[
            "--queues",
            "2",
            "--log-format",
            "json",
            "--rules",
            rules.to_str().unwrap(),
            "--stats-interval",
            "0.2",
            "--duration",
            "1",
        ],
    );
    let status = dp.wait_exit(Duration::from_secs(30)).unwrap();
    let output = dp.output();
    assert!(status.success(), "{output}");
    let events: Vec<Value> = output
        .lines()
        .map(|l| {
            assert!(!l.contains('\u{1b}'), "no colour codes: {l}");
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
        })
        .collect();
    let said = |needle: &str| {
        events.iter().any(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        })
    };
    for needle in [
        "rules: 1 loaded",
        "dataplane: running",
        "status",
        "user-space processing time",
    ] {
        assert!(said(needle), "`{needle}` in a JSON event:\n{output}");
    }
}
