//! End-to-end test of the inline bridge (root, three network namespaces):
//! client — [dut: br0, br1] — server, the data plane bridging br0 and br1
//! with DPI, real programs on both ends: curl in the client namespace,
//! Python's http.server (HTTP and HTTPS with a self-signed certificate) and a
//! DNS responder in the server namespace, ping and ARP through the bridge.
//! Everything is removed on every exit path, panics included.

use std::{path::Path, time::Duration};

use serde_json::Value;
use testbed::{
    InlineTestbed, Netns, Process, Scratch, number as u,
    peers::{self, flow_records},
    rawtcp,
};
use xdp_redirect::baseline::{Baseline, Kind};

const BIN: &str = env!("CARGO_BIN_EXE_dataplane");
/// Bytes of each direction inspected before the kernel takes a flow that
/// rules could still match (the policy's default `stream_depth`).
const DEPTH: u64 = 1 << 20;
const BIG: u64 = 10 * 1024 * 1024;

const RULES: &str = r#"
drop http any any -> any any (msg:"blocked site"; http.host; content:"blocked.test"; sid:1001;)
drop tls any any -> any any (msg:"evil SNI"; tls.sni; content:"evil.test"; sid:1002;)
drop dns any any -> any any (msg:"blocked name"; dns.query; content:"blocked.test"; sid:1003;)
"#;

/// veth delivers frames redirected in XDP only to a peer that runs XDP
/// itself (DESIGN.md), so the client and server ends get an XDP_PASS program
/// (the stack still sees everything). Detached when the returned value drops.
fn attach_pass(ns: &Netns, iface: &str) -> Baseline {
    let iface = iface.to_string();
    ns.run_inside(move || {
        let mut programs = Baseline::load().expect("load the baseline programs");
        programs
            .attach(Kind::PassAll, &iface)
            .expect("attach XDP_PASS");
        programs
    })
    .expect("enter the namespace")
}

/// Starts the data plane bridging the DUT's two ports on `queues` queues
/// with `rules` (no control socket) and the `extra` flags, and waits until
/// it runs.
fn start_bridge(
    tb: &InlineTestbed,
    queues: u32,
    rules: &Path,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> Process {
    let mut cmd = tb.dut.command(BIN);
    cmd.args(["--iface", &tb.dut_client_if, "--peer", &tb.dut_server_if])
        .args(["--queues", &queues.to_string(), "--no-control"])
        .arg("--rules")
        .arg(rules);
    for arg in extra {
        cmd.arg(arg);
    }
    cmd.env("RUST_LOG", "info");
    let mut dp = Process::spawn(cmd).expect("spawn dataplane");
    dp.wait_for_line("dataplane: running", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    dp
}

fn curl(tb: &InlineTestbed, url: &str, host: &str, port: u16, max_time: u32) -> (bool, String) {
    peers::curl(&tb.client, url, host, tb.server_ip, port, max_time)
}

fn dns_query(tb: &InlineTestbed, name: &str, sport: u16) -> String {
    peers::dns_query(&tb.client, tb.server_ip, name, sport)
}

fn ping(tb: &InlineTestbed) -> (bool, String) {
    peers::ping(&tb.client, tb.server_ip, 3)
}

#[test]
fn inline_bridge_enforces_dpi_verdicts_on_real_traffic_root() {
    testbed::require_root("the inline bridge end-to-end test");
    peers::require_tools(&["curl", "python3", "openssl", "ping"]);
    let tb = InlineTestbed::up(4).expect("inline testbed");
    let scratch = Scratch::new("inline");
    let _client_xdp = attach_pass(&tb.client, &tb.client_if);
    let _server_xdp = attach_pass(&tb.server, &tb.server_if);

    let (cert, key) = peers::self_signed_cert(&scratch);
    let servers = peers::start_servers(&tb.server, tb.server_ip, &cert, &key);

    let rules = scratch.path("inline.rules");
    std::fs::write(&rules, RULES).unwrap();
    let flow_log = scratch.path("flows.jsonl");
    let stats = scratch.path("stats.json");
    let mut dp = {
        let mut cmd = tb.dut.command(BIN);
        cmd.args(["--iface", &tb.dut_client_if, "--peer", &tb.dut_server_if])
            .args(["--queues", &tb.queues.to_string()])
            .arg("--rules")
            .arg(&rules)
            .arg("--flow-log")
            .arg(&flow_log)
            .arg("--stats-json")
            .arg(&stats)
            .args(["--stats-interval", "0.2"])
            .arg("--control")
            .arg(scratch.path("ctl.sock"))
            .args(["--timeout-udp", "1", "--timeout-other", "1"])
            // The blocked connections never close (their FIN waits behind
            // the dropped request), so they end by the TCP idle timeout.
            .args(["--timeout-tcp", "2", "--timeout-tcp-closing", "1"])
            .env("RUST_LOG", "info");
        Process::spawn(cmd).expect("spawn dataplane")
    };
    dp.wait_for_line("dataplane: running", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    // on stderr, read apart from stdout's "running" line
    dp.wait_for_line("rules: 3 loaded", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("prints what it loaded: {e}"));
    assert!(dp.output().contains("inline mode"), "{}", dp.output());
    // no --pin: it says plainly that a crash takes the bridge down
    dp.wait_for_line("inline mode without --pin", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));

    // Ping and ARP across the bridge (ARP is bridged by XDP unparsed).
    let (ok, out) = ping(&tb);
    assert!(ok, "ping through the bridge: {out}\n{}", dp.output());

    // The allowed 10 MB download completes; the blocked site does not.
    let (ok, out) = curl(&tb, "http://allowed.test/big", "allowed.test", 80, 60);
    assert!(
        ok && out.trim() == BIG.to_string(),
        "allowed download: {out}\n{}",
        dp.output()
    );
    let (ok, out) = curl(&tb, "http://blocked.test/", "blocked.test", 80, 3);
    assert!(!ok, "blocked.test must not load: {out}");

    // TLS: the SNI decides.
    let (ok, out) = curl(&tb, "https://good.test/", "good.test", 443, 10);
    assert!(ok && out.trim() == "3", "HTTPS to good.test: {out}");
    let (ok, out) = curl(&tb, "https://evil.test/", "evil.test", 443, 3);
    assert!(!ok, "HTTPS to evil.test must fail: {out}");

    // DNS (UDP): the blocked name's query is dropped.
    assert_eq!(
        dns_query(&tb, "allowed.test", 40053),
        tb.server_ip.to_string()
    );
    assert_eq!(dns_query(&tb, "blocked.test", 40054), "timeout");

    // Ping still works after all that.
    let (ok, out) = ping(&tb);
    assert!(ok, "ping through the bridge afterwards: {out}");

    // Idle expiry: the DNS flow ends after its 1 s timeout (its kernel entry
    // is removed), and the same 5-tuple is inspected again when it returns.
    let is_dns_flow = |r: &Value| r["sport"] == 40053 && r["dport"] == 53;
    testbed::wait_until("the idle DNS flow to end", Duration::from_secs(10), || {
        flow_records(&flow_log).into_iter().find(|r| is_dns_flow(r))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    assert_eq!(
        dns_query(&tb, "allowed.test", 40053),
        tb.server_ip.to_string()
    );
    let dns_records = testbed::wait_until(
        "the returning DNS flow to end too",
        Duration::from_secs(10),
        || {
            let found: Vec<Value> = flow_records(&flow_log)
                .into_iter()
                .filter(|r| is_dns_flow(r))
                .collect();
            (found.len() >= 2).then_some(found)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    for record in &dns_records {
        assert_eq!(record["reason"], "timeout", "{record}");
        // A DNS rule could match any later query of the flow: every packet
        // of it is inspected, none handed to the kernel.
        assert_eq!(record["verdict"], "undecided", "{record}");
        assert_eq!(u(record, "user_packets"), 2, "query and answer: {record}");
        assert_eq!(record["host"], "allowed.test", "{record}");
        assert!(
            u(record, "user_packets") >= 1,
            "inspected again in user space: {record}"
        );
    }

    // The download's flow record: user space saw about the stream depth of
    // it, the kernel forwarded the rest.
    let download = testbed::wait_until(
        "the download's flow record (FIN, then the closing timeout)",
        Duration::from_secs(15),
        || {
            flow_records(&flow_log)
                .into_iter()
                .find(|r| r["host"] == "allowed.test" && r["protocol"] == "HTTP")
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nrecords: {:#?}\nstats: {}\n{}",
            flow_records(&flow_log),
            std::fs::read_to_string(&stats).unwrap_or_default(),
            dp.output()
        )
    });
    // An HTTP rule could match a later request of the connection, so it is
    // inspected until the response passes the stream depth; then the
    // kernel carries the rest.
    assert_eq!(download["verdict"], "allow", "{download}");
    assert_eq!(download["decided_by"], "depth", "{download}");
    assert_eq!(download["kernel_action"], "forward", "{download}");
    assert_eq!(download["reason"], "closed", "{download}");
    // (plus what was in flight while the verdict was written: on a loaded
    // 2-core machine, up to a TCP window)
    assert!(
        u(&download, "user_bytes") <= 2 * DEPTH,
        "user space saw about the depth: {download}"
    );
    assert!(
        u(&download, "kernel_bytes") >= BIG - DEPTH,
        "the kernel carried the rest of the 10 MB: {download}"
    );

    // Every blocked flow is logged as dropped, with what it was.
    let records = flow_records(&flow_log);
    for (host, protocol) in [
        ("blocked.test", "HTTP"),
        ("evil.test", "TLS"),
        ("blocked.test", "DNS"),
    ] {
        let blocked = testbed::wait_until(
            &format!("the {protocol} flow to {host} to end"),
            Duration::from_secs(15),
            || {
                flow_records(&flow_log)
                    .into_iter()
                    .find(|r| r["host"] == host && r["protocol"] == protocol)
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nrecords: {records:#?}\nstats: {}",
                std::fs::read_to_string(&stats).unwrap_or_default()
            )
        });
        assert_eq!(blocked["verdict"], "drop", "{blocked}");
        assert!(u(&blocked, "user_packets") >= 1, "{blocked}");
        assert_eq!(blocked["kernel_action"], "drop", "{blocked}");
    }

    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let kernel = &v["kernel"];
    assert!(
        u(kernel, "bypass_forward") >= (BIG - DEPTH) / 1500,
        "the download past the depth went through XDP: {v:#}"
    );
    assert!(u(kernel, "bypass_drop") >= 1, "{v:#}");
    assert!(u(kernel, "bridged") >= 2, "ARP was bridged in XDP: {v:#}");
    assert_eq!(u(kernel, "rx"), {
        let k = kernel;
        u(k, "to_user")
            + u(k, "no_socket")
            + u(k, "bypass_pass")
            + u(k, "bypass_drop")
            + u(k, "bypass_forward")
            + u(k, "parse_errors")
            + u(k, "non_ip")
            + u(k, "fragments")
            + u(k, "link_control")
    });
    let queues = v["queues"].as_array().unwrap();
    let tx: u64 = queues.iter().map(|q| u(q, "tx_packets")).sum();
    let user: u64 = queues.iter().map(|q| u(q, "rx_packets")).sum();
    assert!(
        tx >= 1 && tx <= user,
        "undecided frames forwarded by the workers: {v:#}"
    );
    assert!(
        dp.output().contains("flow log:"),
        "says where the flow records went:\n{}",
        dp.output()
    );
    drop(servers);
}

/// Flow affinity in software: on veth each direction of a flow reaches the
/// bridge on the queue its sender picked, so the two directions of most
/// flows arrive at different workers. Every frame must still be inspected
/// by its flow's worker: a rule that needs both directions
/// (`flow:established`) blocks every request, a rule on the response
/// direction (`flow:to_client`, which a worker that sees the SYN/ACK first
/// takes for the client's side) fires on every flow, and no flow is split.
#[test]
fn inline_both_directions_meet_one_worker_on_four_queues_root() {
    testbed::require_root("the inline flow affinity test");
    peers::require_tools(&["curl", "python3", "openssl"]);
    let tb = InlineTestbed::up(4).expect("inline testbed");
    let scratch = Scratch::new("affinity");
    let _client_xdp = attach_pass(&tb.client, &tb.client_if);
    let _server_xdp = attach_pass(&tb.server, &tb.server_if);
    let (cert, key) = peers::self_signed_cert(&scratch);
    let _servers = peers::start_servers(&tb.server, tb.server_ip, &cert, &key);
    let rules = scratch.path("affinity.rules");
    std::fs::write(
        &rules,
        "drop http any any -> any any (msg:\"evil\"; flow:established,to_server; http.host; content:\"evil.test\"; sid:1;)\n\
         alert tcp any 80 -> any any (msg:\"the server answers\"; flow:to_client; sid:2;)\n",
    )
    .unwrap();
    let flow_log = scratch.path("flows.jsonl");
    let stats = scratch.path("stats.json");
    let mut dp = start_bridge(
        &tb,
        4,
        &rules,
        &[&"--flow-log", &flow_log, &"--stats-json", &stats],
    );

    // 100 blocked requests, 20 at a time (each waits out its 2 s timeout).
    let through: usize = std::thread::scope(|scope| {
        let tb = &tb;
        let threads: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(move || {
                    (0..5)
                        .filter(|_| curl(tb, "http://evil.test/", "evil.test", 80, 2).0)
                        .count()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(
        through,
        0,
        "requests to evil.test that got through\n{}",
        dp.output()
    );
    for i in 0..30 {
        let (ok, out) = curl(&tb, "http://allowed.test/", "allowed.test", 80, 5);
        assert!(
            ok && out == "3",
            "allowed request {i}: {out}\n{}",
            dp.output()
        );
    }
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    let records = flow_records(&flow_log);
    let allowed: Vec<&Value> = records
        .iter()
        .filter(|r| r["host"] == "allowed.test")
        .collect();
    assert_eq!(allowed.len(), 30, "{records:#?}");
    for r in &allowed {
        assert!(
            r["sids"]
                .as_array()
                .is_some_and(|s| s.contains(&Value::from(2))),
            "the response-direction rule fired on this flow: {r}"
        );
    }
    // The default timeouts: every flow ends at shutdown, one record each.
    let blocked: Vec<&Value> = records
        .iter()
        .filter(|r| r["host"] == "evil.test")
        .collect();
    assert!(
        blocked.iter().all(|r| r["verdict"] == "drop"),
        "{blocked:#?}"
    );
    assert_eq!(blocked.len(), 100, "{records:#?}");
    assert!(records.iter().all(|r| r["split"] == false), "{records:#?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let queues = v["queues"].as_array().unwrap();
    let sum = |field: &str| queues.iter().map(|q| u(q, field)).sum::<u64>();
    assert_eq!(sum("flows_split"), 0, "{v:#}");
    assert!(
        sum("handed_off") > 0,
        "the directions did arrive on different queues: {v:#}"
    );
    assert_eq!(
        sum("handed_off"),
        sum("handed_in") + sum("handoff_full"),
        "{v:#}"
    );
    assert_eq!(sum("handoff_full"), 0, "{v:#}");
}

/// A dropped TCP flow keeps its verdict while its client keeps
/// retransmitting: a FIN (the client giving up) does not put a dropped flow
/// on the short closing timeout, since the server never saw the connection
/// close. Otherwise the entry went, a retransmitted request was inspected
/// again mid-stream (no handshake seen, so `flow:established` rules could
/// not match), allowed, and delivered to the server.
#[test]
fn a_dropped_flow_stays_dropped_while_its_client_retransmits_root() {
    testbed::require_root("the inline retransmission test");
    peers::require_tools(&["curl", "python3", "openssl"]);
    let tb = InlineTestbed::up(2).expect("inline testbed");
    let scratch = Scratch::new("retransmit");
    let _client_xdp = attach_pass(&tb.client, &tb.client_if);
    let _server_xdp = attach_pass(&tb.server, &tb.server_if);
    let (cert, key) = peers::self_signed_cert(&scratch);
    let servers = peers::start_servers(&tb.server, tb.server_ip, &cert, &key);
    let rules = scratch.path("retransmit.rules");
    std::fs::write(
        &rules,
        "drop http any any -> any any (msg:\"blocked\"; flow:established,to_server; http.host; content:\"blocked.test\"; sid:1;)\n",
    )
    .unwrap();
    // idle gaps between retransmissions stay under 10 s here
    let mut dp = start_bridge(
        &tb,
        2,
        &rules,
        &[&"--timeout-tcp", &"10", &"--timeout-tcp-closing", &"1"],
    );
    // The client sends the request and half-closes (its FIN queued behind
    // the request), then waits: its kernel retransmits request and FIN
    // (0.2, 0.4, 0.8, 1.6, 3.2, 6.4 s apart), well past the closing timeout.
    let script = format!(
        "import socket, time\ns = socket.create_connection(('{}', 80), timeout=5)\n\
         s.sendall(b'GET /secret HTTP/1.1\\r\\nHost: blocked.test\\r\\n\\r\\n')\n\
         s.shutdown(socket.SHUT_WR)\ntime.sleep(14)\n",
        tb.server_ip
    );
    let (ok, out) = peers::run_in(&tb.client, "python3", &["-c", &script]);
    assert!(ok, "the client ran: {out}");
    let served = servers.output();
    assert!(
        !served.contains("/secret"),
        "the server received the blocked request:\n{served}\n{}",
        dp.output()
    );
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
}

/// `reject` inline: the blocked request never reaches the server, the
/// client's connection is reset at once (not left to time out), the server
/// is reset too (`rejectboth`), and a rejected DNS query is answered with
/// ICMP port unreachable, which the client's socket reports as refused
/// (though a responder listens there). The answers are counted.
#[test]
fn reject_rules_reset_tcp_and_refuse_udp_root() {
    testbed::require_root("the inline reject test");
    peers::require_tools(&["curl", "python3", "openssl"]);
    let tb = InlineTestbed::up(2).expect("inline testbed");
    let scratch = Scratch::new("reject");
    let _client_xdp = attach_pass(&tb.client, &tb.client_if);
    let _server_xdp = attach_pass(&tb.server, &tb.server_if);
    let (cert, key) = peers::self_signed_cert(&scratch);
    let servers = peers::start_servers(&tb.server, tb.server_ip, &cert, &key);
    let rules = scratch.path("reject.rules");
    std::fs::write(
        &rules,
        concat!(
            "rejectboth http any any -> any any (msg:\"rejected\"; http.host; content:\"blocked.test\"; sid:1;)\n",
            "reject udp any any -> any 53 (msg:\"rejected name\"; content:\"|07|blocked|04|test\"; sid:2;)\n",
        ),
    )
    .unwrap();
    let stats_path = scratch.path("stats.json");
    let mut dp = start_bridge(
        &tb,
        2,
        &rules,
        &[&"--stats-json", &stats_path, &"--stats-interval", &"0.2"],
    );
    // An allowed request first: the bridge works.
    let (ok, out) = curl(&tb, "http://allowed.test/", "allowed.test", 80, 10);
    assert!(ok, "allowed request: {out}\n{}", dp.output());
    // The client waits up to 10 s for an answer; a reset ends that at once.
    let script = format!(
        "import socket, time\nstart = time.monotonic()\n\
         s = socket.create_connection(('{ip}', 80), timeout=10)\n\
         s.sendall(b'GET /secret HTTP/1.1\\r\\nHost: blocked.test\\r\\n\\r\\n')\n\
         try:\n    data = s.recv(100)\n    print('tcp: answered' if data else 'tcp: closed')\n\
         except ConnectionResetError:\n    print('tcp: reset after %.1f s' % (time.monotonic() - start))\n\
         except socket.timeout:\n    print('tcp: timeout')\n\
         q = b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x07blocked\\x04test\\x00\\x00\\x01\\x00\\x01'\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.settimeout(5)\nu.connect(('{ip}', 53))\nu.send(q)\n\
         try:\n    u.recv(512)\n    print('udp: answered')\n\
         except ConnectionRefusedError:\n    print('udp: refused')\n\
         except socket.timeout:\n    print('udp: timeout')\n",
        ip = tb.server_ip
    );
    let (ok, out) = peers::run_in(&tb.client, "python3", &["-c", &script]);
    assert!(ok, "the client ran: {out}");
    let reset_after: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("tcp: reset after "))
        .and_then(|rest| rest.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("the client was not reset: {out}\n{}", dp.output()));
    assert!(reset_after < 3.0, "reset after {reset_after} s");
    assert!(out.contains("udp: refused"), "{out}\n{}", dp.output());
    let served = servers.output();
    assert!(
        !served.contains("/secret"),
        "the server received the rejected request:\n{served}"
    );
    // one reset to each end, one unreachable
    let v = testbed::wait_until("the answers to be counted", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&stats_path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let sent: u64 = v["queues"]
            .as_array()?
            .iter()
            .filter_map(|q| q["rejects_sent"].as_u64())
            .sum();
        (sent >= 3).then_some(v)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    let unsent: u64 = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["rejects_unsent"].as_u64())
        .sum();
    assert_eq!(unsent, 0);
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
}

/// Protocols read from the specifications, on traffic of the real software:
/// OpenLDAP's slapd answering ldapsearch (a bind and searches), MIT
/// Kerberos' KDC answering kinit over UDP and over TCP, FreeTDS' tsql
/// opening a SQL Server session (its PRELOGIN; the listener says nothing).
/// Through the inline bridge, the flow log names each flow.
#[test]
fn real_ldap_kerberos_and_tds_peers_are_named_root() {
    testbed::require_root("the LDAP and Kerberos test");
    peers::require_tools(&[
        "slapd",
        "ldapsearch",
        "krb5kdc",
        "kinit",
        "kdb5_util",
        "kadmin.local",
        "tsql",
        "python3",
    ]);
    let tb = InlineTestbed::up(2).expect("inline testbed");
    let scratch = Scratch::new("ldapkrb");
    let _client_xdp = attach_pass(&tb.client, &tb.client_if);
    let _server_xdp = attach_pass(&tb.server, &tb.server_if);
    let ip = tb.server_ip.to_string();

    // slapd: an empty directory is enough for a bind and searches
    let db = scratch.path("ldap-db");
    std::fs::create_dir_all(&db).unwrap();
    let slapd_conf = scratch.path("slapd.conf");
    std::fs::write(
        &slapd_conf,
        format!(
            "include /etc/ldap/schema/core.schema\npidfile {pid}\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             database mdb\nsuffix \"dc=example,dc=test\"\nrootdn \"cn=admin,dc=example,dc=test\"\nrootpw secret\ndirectory {db}\n",
            pid = scratch.path("slapd.pid").display(),
            db = db.display()
        ),
    )
    .unwrap();
    let mut slapd = tb.server.command("slapd");
    slapd
        .args(["-d", "256", "-f"])
        .arg(&slapd_conf)
        .args(["-h", &format!("ldap://{ip}:389/")]);
    let mut slapd = Process::spawn(slapd).expect("spawn slapd");
    slapd
        .wait_for_line("slapd starting", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", slapd.output()));

    // an MIT KDC with one principal and its keytab
    let realm = "EXAMPLE.TEST";
    let krb5_conf = |tcp: bool| {
        let path = scratch.path(if tcp {
            "krb5-tcp.conf"
        } else {
            "krb5-udp.conf"
        });
        std::fs::write(
            &path,
            format!(
                "[libdefaults]\ndefault_realm = {realm}\ndns_lookup_kdc = false\ndns_lookup_realm = false\n\
                 rdns = false\ndns_canonicalize_hostname = false\nudp_preference_limit = {}\n\
                 [realms]\n{realm} = {{\n kdc = {ip}\n}}\n",
                if tcp { 1 } else { 1465 }
            ),
        )
        .unwrap();
        path
    };
    let (udp_conf, tcp_conf) = (krb5_conf(false), krb5_conf(true));
    let kdc_conf = scratch.path("kdc.conf");
    std::fs::write(
        &kdc_conf,
        format!(
            "[kdcdefaults]\nkdc_ports = 88\nkdc_tcp_ports = 88\n[realms]\n{realm} = {{\n database_name = {db}\n \
             key_stash_file = {stash}\n acl_file = {acl}\n}}\n[logging]\nkdc = STDERR\n",
            db = scratch.path("principal").display(),
            stash = scratch.path("stash").display(),
            acl = scratch.path("kadm5.acl").display()
        ),
    )
    .unwrap();
    let keytab = scratch.path("user.keytab");
    let krb = |program: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env("KRB5_CONFIG", &udp_conf)
            .env("KRB5_KDC_PROFILE", &kdc_conf);
        testbed::run(&mut cmd).unwrap_or_else(|e| panic!("{program}: {e}"));
    };
    krb(
        "kdb5_util",
        &["create", "-s", "-r", realm, "-P", "master-secret"],
    );
    krb("kadmin.local", &["-q", "addprinc -randkey user"]);
    krb(
        "kadmin.local",
        &["-q", &format!("ktadd -k {} user", keytab.display())],
    );
    let mut kdc = tb.server.command("krb5kdc");
    kdc.arg("-n")
        .env("KRB5_CONFIG", &udp_conf)
        .env("KRB5_KDC_PROFILE", &kdc_conf);
    let mut kdc = Process::spawn(kdc).expect("spawn krb5kdc");
    kdc.wait_for_line("commencing operation", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", kdc.output()));

    // a listener that takes the SQL client's connection and reads
    let mut listener = tb.server.command("python3");
    listener.arg("-c").arg(format!(
        "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ip}', 1433))\ns.listen(4)\nprint('ready', flush=True)\nwhile True:\n    c, _ = s.accept()\n    c.recv(4096)\n"
    ));
    let mut listener = Process::spawn(listener).expect("spawn the TDS listener");
    listener
        .wait_for_line("ready", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("TDS listener: {e}"));

    let rules = scratch.path("none.rules");
    std::fs::write(
        &rules,
        "alert tcp any any -> any 1 (msg:\"unused\"; sid:1;)\n",
    )
    .unwrap();
    let log = scratch.path("flows.jsonl");
    let mut dp = start_bridge(&tb, 2, &rules, &[&"--flow-log", &log]);

    let (ok, out) = peers::run_in(
        &tb.client,
        "ldapsearch",
        &[
            "-x",
            "-H",
            &format!("ldap://{ip}"),
            "-b",
            "",
            "-s",
            "base",
            "namingContexts",
        ],
    );
    assert!(ok, "ldapsearch rootDSE: {out}\n{}", slapd.output());
    let (_, out) = peers::run_in(
        &tb.client,
        "ldapsearch",
        &[
            "-x",
            "-H",
            &format!("ldap://{ip}"),
            "-D",
            "cn=admin,dc=example,dc=test",
            "-w",
            "secret",
            "-b",
            "dc=example,dc=test",
        ],
    );
    assert!(out.contains("result:"), "ldapsearch with a bind: {out}");
    for conf in [&udp_conf, &tcp_conf] {
        let mut kinit = tb.client.command("kinit");
        kinit
            .args(["-k", "-t"])
            .arg(&keytab)
            .arg(format!("user@{realm}"))
            .env("KRB5_CONFIG", conf)
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", scratch.path("ccache").display()),
            );
        testbed::run(&mut kinit)
            .unwrap_or_else(|e| panic!("kinit ({}): {e}\n{}", conf.display(), kdc.output()));
    }
    // tsql gives up on the silent listener; its PRELOGIN went out first
    let mut tsql = tb.client.command("timeout");
    tsql.args(["5", "tsql", "-H", &ip, "-p", "1433", "-U", "sa", "-P", "x"])
        .env("TDSVER", "7.4");
    let _ = tsql.output();
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    drop(listener);
    let records = flow_records(&log);
    let named = |l4: &str, port: u64| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["l4"] == l4 && (u(r, "dport") == port || u(r, "sport") == port))
            .map(|r| {
                // by their content, not guessed from the port
                format!(
                    "{}/{}",
                    r["protocol"].as_str().unwrap_or(""),
                    r["confidence"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let (ldap, krb_udp, krb_tcp) = (named("tcp", 389), named("udp", 88), named("tcp", 88));
    let tds = named("tcp", 1433);
    assert!(
        !tds.is_empty() && tds.iter().all(|p| p == "TDS/DPI"),
        "TDS: {tds:?}"
    );
    assert!(
        ldap.len() >= 2 && ldap.iter().all(|p| p == "LDAP/DPI"),
        "LDAP flows: {ldap:?}\n{records:#?}"
    );
    assert!(
        !krb_udp.is_empty() && krb_udp.iter().all(|p| p == "Kerberos/DPI"),
        "Kerberos/UDP: {krb_udp:?}"
    );
    assert!(
        !krb_tcp.is_empty() && krb_tcp.iter().all(|p| p == "Kerberos/DPI"),
        "Kerberos/TCP: {krb_tcp:?}"
    );
    drop(kdc);
    drop(slapd);
}

/// What the XDP program cannot key never goes around inspection inline:
/// three VLAN tags, five IPv6 destination options and malformed IP reach
/// the workers, which read the first two (user space walks deeper) and
/// forward or drop them by their content, and drop the last.
#[test]
fn frames_the_program_cannot_key_are_inspected_or_dropped_not_bridged_root() {
    testbed::require_root("the inline unparsed-frames test");
    let tb = InlineTestbed::up(2).expect("inline testbed");
    let scratch = Scratch::new("unparsed");
    let _client_xdp = attach_pass(&tb.client, &tb.client_if);
    // The server end counts what arrives (a sink that drops: nothing here
    // needs the server's stack).
    let server_if = tb.server_if.clone();
    let sink = tb
        .server
        .run_inside(move || {
            let mut b = Baseline::load().expect("load the baseline programs");
            b.attach(Kind::Sink, &server_if).expect("attach the sink");
            b
        })
        .unwrap();
    let rules = scratch.path("unparsed.rules");
    std::fs::write(
        &rules,
        "drop udp any any -> any any (msg:\"blocked payload\"; content:\"blockme\"; sid:1;)\n",
    )
    .unwrap();
    let stats = scratch.path("stats.json");
    let mut dp = start_bridge(&tb, 2, &rules, &[&"--stats-json", &stats]);

    use testbed::frames::{Ipv6Ext, Packet, ip};
    let udp = |sport: u16, payload: &[u8]| {
        Packet::udp(ip("198.18.1.1"), sport, ip("198.18.1.2"), 9)
            .with_vlans(&[10, 20, 30])
            .with_payload(payload)
    };
    let udp6 = |sport: u16, payload: &[u8]| {
        let mut p =
            Packet::udp(ip("2001:db8::1"), sport, ip("2001:db8::2"), 9).with_payload(payload);
        p.ipv6_ext = vec![Ipv6Ext::DestOpts; 5];
        p
    };
    let mut malformed = udp(7000, b"hello").build();
    malformed[14 + 12] = 0x44; // the IPv4 header behind the three tags claims IHL 4
    let frames = vec![
        udp(6000, b"hello").build(),
        udp6(6001, b"hello").build(),
        udp(6002, b"please blockme").build(),
        udp6(6003, b"please blockme").build(),
        malformed,
    ];
    let sent = testbed::traffic::send_frames(&tb.client, &tb.client_if, frames).unwrap();
    assert_eq!(sent, 5);
    testbed::wait_until(
        "the two allowed frames at the server end",
        Duration::from_secs(10),
        || (sink.sink_counts().ok()?.0 >= 2).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sink.sink_counts().unwrap().0,
        2,
        "only the two allowed frames crossed the bridge"
    );
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let queues = v["queues"].as_array().unwrap();
    let sum = |field: &str| queues.iter().map(|q| u(q, field)).sum::<u64>();
    assert_eq!(u(&v["kernel"], "unparsed_to_user"), 5, "{v:#}");
    assert_eq!(
        u(&v["kernel"], "bridged"),
        0,
        "nothing bridged uninspected: {v:#}"
    );
    assert_eq!(
        sum("verdicts_drop"),
        2,
        "the blocked payloads, read past the tags: {v:#}"
    );
    assert_eq!(sum("undecodable_dropped"), 1, "the malformed one: {v:#}");
}

/// What an evasion attempt sends: crafted segments over a genuine
/// handshake, or writes on a real socket.
enum Plan {
    Raw(Vec<rawtcp::Seg>),
    Socket(Vec<Vec<u8>>),
}

/// One attempt to get the message `forbidden` to the server whole past a
/// `drop` rule (or, for a control, `expected` must arrive). An IPS acts on
/// the byte that completes a match, so bytes before it may reach the server;
/// what it guarantees is that the message is never completed there (the
/// segment that completes it is dropped, and every later one).
struct Attempt {
    name: &'static str,
    port: u16,
    plan: Plan,
    forbidden: Vec<u8>,
    expected: Option<&'static [u8]>,
}

const EVASION_RULES: &str = r#"
drop http any any -> any any (msg:"blocked site"; http.host; content:"blocked.test"; sid:1;)
drop tcp any any -> any 8080 (msg:"signature"; content:"attack-signature"; sid:2;)
drop tls any any -> any any (msg:"evil SNI"; tls.sni; content:"evil.test"; sid:3;)
drop dns any any -> any any (msg:"blocked name"; dns.query; content:"blocked.test"; sid:4;)
drop http any any -> any any (msg:"traversal"; content:"../"; content:"../"; distance:0; content:"../"; distance:0; content:"../"; distance:0; content:"GET"; distance:0; within:3; sid:5;)
"#;

fn seg(offset: usize, data: &[u8]) -> rawtcp::Seg {
    rawtcp::Seg::data(offset as i64, data)
}

/// `data` in segments of `size` bytes, in order.
fn pieces(data: &[u8], size: usize) -> Vec<rawtcp::Seg> {
    data.chunks(size)
        .enumerate()
        .map(|(i, c)| seg(i * size, c))
        .collect()
}

/// A DNS query for `name` (type A) over TCP: the 2-byte length, then the message.
fn dns_tcp_query(name: &str) -> (Vec<u8>, Vec<u8>) {
    let m = testbed::frames::dns_query(name);
    ((m.len() as u16).to_be_bytes().to_vec(), m)
}

fn evasion_attempts() -> Vec<Attempt> {
    const BLOCKED: &[u8] = b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n";
    const GOOD: &[u8] = b"GET / HTTP/1.1\r\nHost: good.test\r\n\r\n";
    let raw = |name, port, segs, forbidden: &[u8]| Attempt {
        name,
        port,
        plan: Plan::Raw(segs),
        forbidden: forbidden.to_vec(),
        expected: None,
    };
    // The last write is the blocked request.
    let socket = |name, writes: &[&[u8]]| Attempt {
        name,
        port: 80,
        plan: Plan::Socket(writes.iter().map(|w| w.to_vec()).collect()),
        forbidden: writes.last().expect("a write").to_vec(),
        expected: None,
    };
    let host = BLOCKED;
    let mut bad_checksum = seg(0, GOOD);
    bad_checksum.bad_checksum = true;
    let mut no_ack = seg(0, GOOD);
    no_ack.flags = rawtcp::PSH;
    let mut urgent = seg(0, b"GET / HTTP/1.1\r\nHost: blockeXd.test\r\n\r\n");
    urgent.flags |= rawtcp::URG;
    urgent.urgent = 30; // the byte before offset 30: the 'X'
    let hello = testbed::frames::tls_client_hello("evil.test");
    let hs = &hello[5..];
    let mut tiny = vec![22, 3, 1, 0, 1, hs[0]];
    tiny.extend_from_slice(&[22, 3, 1]);
    tiny.extend_from_slice(&((hs.len() - 1) as u16).to_be_bytes());
    tiny.extend_from_slice(&hs[1..]);
    let (prefix, query) = dns_tcp_query("blocked.test");
    let (allowed_prefix, allowed_query) = dns_tcp_query("allowed.test");
    let mut reversed: Vec<rawtcp::Seg> = pieces(BLOCKED, 4);
    reversed.reverse();
    let traversal = format!(
        "GET /{} HTTP/1.1\r\nHost: good.test\r\n\r\n",
        "../".repeat(150)
    );
    vec![
        // Controls: allowed traffic arrives, so an empty log proves nothing.
        Attempt {
            expected: Some(b"good.test"),
            ..raw("control: raw client", 80, vec![seg(0, GOOD)], BLOCKED)
        },
        Attempt {
            expected: Some(b"good.test"),
            forbidden: BLOCKED.to_vec(),
            ..socket("control: socket client", &[GOOD])
        },
        // Segmentation
        raw(
            "host split in 3 segments",
            80,
            vec![
                seg(0, &BLOCKED[..25]),
                seg(25, &BLOCKED[25..32]),
                seg(32, &BLOCKED[32..]),
            ],
            host,
        ),
        raw("1-byte segments", 80, pieces(BLOCKED, 1), host),
        raw("segments in reverse order", 80, reversed, host),
        raw(
            "payload signature over 2 segments",
            8080,
            vec![seg(0, b"xxxx attack-"), seg(12, b"signature yyyy")],
            b"attack-signature",
        ),
        // TLS
        raw(
            "TLS record header split",
            443,
            vec![seg(0, &hello[..3]), seg(3, &hello[3..])],
            &hello,
        ),
        raw("TLS 1-byte first record", 443, pieces(&tiny, 6), &tiny),
        // IP fragments
        Attempt {
            expected: Some(b"good.test"),
            ..raw(
                "control: a request in 16-byte IP fragments",
                80,
                vec![rawtcp::Seg {
                    fragment: Some(16),
                    ..seg(0, GOOD)
                }],
                BLOCKED,
            )
        },
        raw(
            "a blocked request in 16-byte IP fragments",
            80,
            vec![rawtcp::Seg {
                fragment: Some(16),
                ..seg(0, BLOCKED)
            }],
            host,
        ),
        raw(
            "the dropped request again, in 8-byte fragments",
            80,
            vec![
                seg(0, BLOCKED),
                rawtcp::Seg {
                    fragment: Some(8),
                    ..seg(0, BLOCKED)
                },
            ],
            host,
        ),
        // Insertion
        raw(
            "decoy with a bad checksum",
            80,
            vec![bad_checksum, seg(0, BLOCKED)],
            host,
        ),
        raw("decoy without ACK", 80, vec![no_ack, seg(0, BLOCKED)], host),
        raw(
            "decoy out of window",
            80,
            vec![
                seg(0, &BLOCKED[..22]),
                seg(1 << 30, b"good.test\r\n\r\n"),
                seg(22, &BLOCKED[22..]),
            ],
            host,
        ),
        raw(
            "longer overlap at the same sequence number",
            80,
            vec![
                seg(16, b"Host: good.test\r\n\r\n"),
                seg(16, b"Host: blocked.test\r\n\r\n"),
                seg(0, b"GET / HTTP/1.1\r\n"),
            ],
            host,
        ),
        raw(
            "30 empty ACKs first",
            80,
            std::iter::repeat_n(
                rawtcp::Seg {
                    flags: rawtcp::ACK,
                    ..seg(0, b"")
                },
                30,
            )
            .chain([seg(0, BLOCKED)])
            .collect(),
            host,
        ),
        // Semantics
        socket("second request on keep-alive", &[GOOD, BLOCKED]),
        Attempt {
            forbidden: BLOCKED.to_vec(),
            ..socket("pipelined requests", &[&[GOOD, BLOCKED].concat()])
        },
        socket(
            "absolute URI",
            &[b"GET http://blocked.test/ HTTP/1.1\r\nHost: good.test\r\n\r\n"],
        ),
        Attempt {
            forbidden: BLOCKED.to_vec(),
            ..socket("leading CRLF", &[&[b"\r\n\r\n", BLOCKED].concat()])
        },
        socket(
            "duplicate Host",
            &[b"GET / HTTP/1.1\r\nHost: good.test\r\nHost: blocked.test\r\n\r\n"],
        ),
        socket(
            "space before the colon",
            &[b"GET / HTTP/1.1\r\nHost : blocked.test\r\n\r\n"],
        ),
        raw("urgent byte inside the name", 80, vec![urgent], host),
        // DNS over TCP
        raw(
            "DNS length prefix alone",
            53,
            vec![seg(0, &prefix), seg(2, &query)],
            &query,
        ),
        raw(
            "a second DNS query on the connection",
            53,
            vec![seg(
                0,
                &[
                    allowed_prefix.clone(),
                    allowed_query.clone(),
                    prefix.clone(),
                    query.clone(),
                ]
                .concat(),
            )],
            &query,
        ),
        // Rule cost: fails closed, and the worker goes on.
        socket(
            "150 ../ against 5 relative contents",
            &[traversal.as_bytes()],
        ),
    ]
}

/// Every evasion class of issue 13 against a real server behind the bridge:
/// each attempt is a connection the server accepted (a real handshake),
/// after which the client splits, reorders, overlaps, decoys or bends the
/// request for a blocked site. The server records what its kernel let it
/// read on each connection; nothing blocked may be in it. Controls show
/// that allowed requests do arrive.
#[test]
fn evasion_attempts_against_drop_rules_never_reach_the_server_root() {
    testbed::require_root("the inline evasion test");
    peers::require_tools(&["python3", "nft"]);
    let tb = InlineTestbed::up(2).expect("inline testbed");
    let scratch = Scratch::new("evasion");
    let _client_xdp = attach_pass(&tb.client, &tb.client_if);
    let _server_xdp = attach_pass(&tb.server, &tb.server_if);
    rawtcp::block_kernel_resets(&tb.client).expect("nft in the client namespace");
    let log = scratch.path("received.jsonl");
    let mut recorder = tb.server.command("python3");
    recorder
        .arg(format!("{}/recorder.py", peers::DIR))
        .arg(tb.server_ip.to_string())
        .arg(&log)
        .args(["80", "8080", "443", "53"]);
    let mut recorder = Process::spawn(recorder).expect("start the recorder");
    recorder
        .wait_for_line("ready", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("recorder: {e}\n{}", recorder.output()));
    let rules = scratch.path("evasion.rules");
    std::fs::write(&rules, EVASION_RULES).unwrap();
    let stats = scratch.path("stats.json");
    let flow_log = scratch.path("flows.jsonl");
    let mut dp = start_bridge(
        &tb,
        2,
        &rules,
        &[&"--stats-json", &stats, &"--flow-log", &flow_log],
    );

    let attempts = evasion_attempts();
    let (client_ip, server_ip) = (tb.client_ip, tb.server_ip);
    for (i, attempt) in attempts.iter().enumerate() {
        let sport = 41000 + i as u16;
        let src = std::net::SocketAddrV4::new(client_ip, sport);
        let dst = std::net::SocketAddrV4::new(server_ip, attempt.port);
        let name = attempt.name;
        match &attempt.plan {
            Plan::Raw(segs) => {
                let segs = segs.clone();
                let log = log.clone();
                tb.client
                    .run_inside(move || -> std::io::Result<()> {
                        let mut c = rawtcp::RawTcp::connect(src, dst)?;
                        // The server has the connection before the attack
                        // starts (else its last ACK could race the attack
                        // and be dropped with it).
                        testbed::wait_until(
                            "the server to accept the connection",
                            Duration::from_secs(5),
                            || {
                                recorded(&log)
                                    .iter()
                                    .any(|r| r["event"] == "accept" && r["sport"] == sport)
                                    .then_some(())
                            },
                        )
                        .map_err(std::io::Error::other)?;
                        for s in &segs {
                            c.send(s)?;
                        }
                        Ok(())
                    })
                    .expect("enter the client namespace")
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            Plan::Socket(writes) => {
                let writes = writes.clone();
                tb.client
                    .run_inside(move || socket_client(src, dst, &writes))
                    .expect("enter the client namespace")
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    // Each connection is logged when its client goes quiet.
    let received = testbed::wait_until(
        "the server to log every connection",
        Duration::from_secs(20),
        || {
            let records: Vec<Value> = recorded(&log)
                .into_iter()
                .filter(|r| r["event"] == "close")
                .collect();
            let all =
                (0..attempts.len()).all(|i| records.iter().any(|r| r["sport"] == 41000 + i as u64));
            all.then_some(records)
        },
    )
    .unwrap_or_else(|e| {
        let records = recorded(&log);
        let missing: Vec<&str> = (0..attempts.len())
            .filter(|i| {
                !records
                    .iter()
                    .any(|r| r["event"] == "close" && r["sport"] == 41000 + *i as u64)
            })
            .map(|i| attempts[i].name)
            .collect();
        panic!(
            "{e}: no record of {missing:?}\n{}\n{}",
            recorder.output(),
            dp.output()
        )
    });
    let mut failures = Vec::new();
    for (i, attempt) in attempts.iter().enumerate() {
        let data: String = received
            .iter()
            .filter(|r| r["sport"] == 41000 + i as u64)
            .filter_map(|r| r["data"].as_str())
            .collect();
        let bytes: Vec<u8> = data.chars().map(|c| c as u32 as u8).collect();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        if has(&attempt.forbidden) {
            failures.push(format!("{}: the server received {data:?}", attempt.name));
        }
        if let Some(expected) = attempt.expected
            && !has(expected)
        {
            failures.push(format!(
                "{}: the allowed request did not arrive ({data:?})",
                attempt.name
            ));
        }
    }
    // The workers are alive after all that: allowed traffic still flows.
    let check = std::net::SocketAddrV4::new(server_ip, 80);
    let src = std::net::SocketAddrV4::new(client_ip, 42999);
    let answer = tb
        .client
        .run_inside(move || {
            socket_client(
                src,
                check,
                &[b"GET / HTTP/1.1\r\nHost: good.test\r\n\r\n".to_vec()],
            )
        })
        .expect("enter the client namespace");
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    assert!(
        failures.is_empty(),
        "evasions that worked:\n{}\n{}",
        failures.join("\n"),
        dp.output()
    );
    assert!(
        answer
            .as_ref()
            .is_ok_and(|a| a.starts_with(b"HTTP/1.1 200")),
        "allowed traffic after the attempts: {answer:?}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let sum = |key: &str| -> u64 {
        v["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| u(q, key))
            .sum()
    };
    for key in [
        "segments_bad_checksum",
        "segments_no_ack",
        "segments_out_of_window",
        "datagrams_reassembled",
    ] {
        assert!(sum(key) >= 1, "{key} counted: {v:#}");
    }
    // The flow records say what decided each blocked flow.
    let flows = flow_records(&flow_log);
    let by = |decided: &str| flows.iter().filter(|r| r["decided_by"] == decided).count();
    assert!(by("rule") >= 15, "flows dropped by a rule: {flows:#?}");
    assert_eq!(by("rule-limit"), 1, "{flows:#?}");
}

/// The recorder's log so far; a line still being written is left out.
fn recorded(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Opens a connection, writes each of `writes` (reading what comes back
/// after each when the server answers), and returns what it read.
fn socket_client(
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    writes: &[Vec<u8>],
) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Write as _};
    let mut s = rawtcp::connect_from(src, dst)?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut got = Vec::new();
    for w in writes {
        s.write_all(w)?;
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
