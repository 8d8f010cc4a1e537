//! The control plane under abuse and faults (root, network namespaces): the
//! control socket against other users, floods of unread commands and file
//! descriptor exhaustion; the metrics endpoint against idle, slow and huge
//! requests; the flow log on a full disk. Each test builds its own testbed,
//! removed on every exit path.

use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{Process, Scratch, Testbed, peers, traffic};

const BIN: &str = env!("CARGO_BIN_EXE_dataplane");

/// Starts the data plane on the DUT through `sh -c` (for its umask and
/// limits), and waits until it runs.
fn start(tb: &Testbed, shell_prefix: &str, args: &[&str]) -> Process {
    let mut line = format!("{shell_prefix} exec {BIN} --iface {}", tb.dut_if);
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    let mut cmd = tb.dut.command("sh");
    cmd.args(["-c", &line]).env("RUST_LOG", "info");
    let mut dp = Process::spawn(cmd).expect("spawn dataplane");
    dp.wait_for_line("dataplane: running", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    dp
}

/// One command on the control socket, the reply line.
fn ask(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    while !reply.ends_with(b"\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads")
}

#[test]
fn control_socket_admits_only_root_and_survives_floods_and_fd_exhaustion_root() {
    testbed::require_root("the control socket abuse test");
    let tb = Testbed::up(2).expect("testbed");
    let scratch = Scratch::new("ctl-abuse");
    std::fs::set_permissions(scratch.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = scratch.path("ctl.sock");
    // A permissive umask: the socket must still be 0600 from its first moment.
    let mut dp = start(&tb, "umask 000;", &["--control", socket.to_str().unwrap()]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is root-only");

    // Another user who gets to the socket (its mode opened up by hand) is
    // turned away by the credentials the kernel gives for the connection.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = format!(
        // the refusal may come (and the socket close) before the command
        // is sent: a broken pipe on sending is fine, the reply is still there
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(5)\ns.connect('{}')\n\
         try:\n    s.sendall(b'stats\\n')\nexcept OSError:\n    pass\nprint(s.recv(4096).decode())\n",
        socket.display()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .expect("run setpriv");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("permission denied: uid 65534"),
        "nobody is refused: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("\"ok\":true"), "{said}");

    // 100,000 pipelined commands whose replies are never read: memory stays
    // bounded (the commands stop being read once replies pile up).
    let rss_before = testbed::rss_kib(dp.pid());
    let mut flood = UnixStream::connect(&socket).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let commands = "stats\n".repeat(100_000);
    let _ = flood.write_all(commands.as_bytes()); // times out once the server stops reading
    let grown = testbed::rss_kib(dp.pid()).saturating_sub(rss_before);
    assert!(grown < 20 * 1024, "RSS grew by {grown} KiB under the flood");
    let reply = ask(&socket, "stats").expect("another client is served meanwhile");
    assert!(reply.contains("\"ok\":true"), "{reply}");
    drop(flood);

    // Out of file descriptors: accepting fails (EMFILE) while connections
    // wait; the control thread keeps going and serves again once fds are back.
    let pid = dp.pid().to_string();
    let limit = open_fds(dp.pid()) + 3;
    let prlimit = |n: usize| {
        let status = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .expect("run prlimit");
        assert!(status.success(), "prlimit");
    };
    prlimit(limit);
    let held: Vec<UnixStream> = (0..20)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    assert!(held.len() >= 10, "connections wait in the backlog");
    testbed::wait_until(
        "the accept error to be logged",
        Duration::from_secs(5),
        || {
            dp.output()
                .contains("cannot accept a connection now")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    drop(held);
    prlimit(1024);
    let reply = testbed::wait_until(
        "the control socket to serve again",
        Duration::from_secs(10),
        || {
            ask(&socket, "stats")
                .ok()
                .filter(|r| r.contains("\"ok\":true"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    assert!(reply.contains("\"iface\":\"dut0\""), "{reply}");
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
}

#[test]
fn metrics_endpoint_is_bounded_in_connections_size_and_time_root() {
    testbed::require_root("the metrics abuse test");
    let tb = Testbed::up(2).expect("testbed");
    let mut dp = start(
        &tb,
        "ulimit -n 1024;",
        &["--no-control", "--metrics", "127.0.0.1:19465"],
    );
    let pid = dp.pid();
    // 600 slowloris connections, each a request that never ends.
    let idle = tb
        .dut
        .run_inside(|| {
            (0..600)
                .filter_map(|_| {
                    let mut s = std::net::TcpStream::connect("127.0.0.1:19465").ok()?;
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
                    Some(s)
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert!(idle.len() >= 500, "connected {}", idle.len());
    assert!(
        threads(pid) < 40,
        "no thread per connection: {} threads",
        threads(pid)
    );
    let scrape = || {
        let out = tb
            .dut
            .command("curl")
            .args(["-sS", "--max-time", "5", "http://127.0.0.1:19465/metrics"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = scrape();
    assert!(
        ok && text.contains("dataplane_kernel_packets_total"),
        "{text}\n{}",
        dp.output()
    );

    // A 32 MB header is refused without being held in memory.
    let rss_before = testbed::rss_kib(pid);
    let status = tb
        .dut
        .run_inside(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:19465").unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ");
            let chunk = vec![b'a'; 1 << 20];
            for _ in 0..32 {
                if s.write_all(&chunk).is_err() {
                    break; // closed on us: fine
                }
            }
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            String::from_utf8_lossy(&reply)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap();
    assert!(
        status.is_empty() || status.contains("431"),
        "a huge head is refused: {status}"
    );
    let grown = testbed::rss_kib(pid).saturating_sub(rss_before);
    assert!(
        grown < 10 * 1024,
        "RSS grew by {grown} KiB for one huge header"
    );
    drop(idle);
    let started = Instant::now();
    let (ok, _) = scrape();
    assert!(ok, "still serving after all that\n{}", dp.output());
    assert!(started.elapsed() < Duration::from_secs(5));
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
}

fn stats(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn queue_sum(v: &Value, field: &str) -> u64 {
    v["queues"]
        .as_array()
        .map_or(0, |qs| qs.iter().filter_map(|q| q[field].as_u64()).sum())
}

/// Complete lines of the flow log (and whether it ends in half a line).
fn log_lines(path: &Path) -> (usize, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("a flow log line is not a record ({e}): {line}"));
    }
    (
        text.lines().count(),
        !text.is_empty() && !text.ends_with('\n'),
    )
}

#[test]
fn flow_log_on_a_full_disk_counts_what_it_loses_and_resumes_root() {
    testbed::require_root("the full disk test");
    let tb = Testbed::up(2).expect("testbed");
    let scratch = Scratch::new("full-disk");
    let fs = scratch.path("fs");
    std::fs::create_dir_all(&fs).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&fs)
        .status()
        .unwrap();
    assert!(status.success(), "mount a small tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&fs);
    // Leave room for a handful of records only.
    let filler = fs.join("filler");
    std::fs::write(&filler, vec![0u8; 256 * 1024 - 4096]).ok();
    let log = fs.join("flows.jsonl");
    let stats_path = scratch.path("stats.json");
    let _discard = peers::udp_discard(&tb.dut, 9);
    let mut dp = start(
        &tb,
        "",
        &[
            "--no-control",
            "--flow-log",
            log.to_str().unwrap(),
            "--stats-json",
            stats_path.to_str().unwrap(),
            "--stats-interval",
            "0.2",
            "--timeout-udp",
            "1",
        ],
    );
    let ended = |at_least: u64| {
        testbed::wait_until("the flows to end", Duration::from_secs(15), || {
            stats(&stats_path).filter(|v| queue_sum(v, "flows_ended") >= at_least)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()))
    };
    let spec = |base| traffic::FlowSpec::udp(tb.gen_ip, tb.dut_ip, 100, 2, 2_000, base);
    traffic::send_flows(&tb.gen_ns, spec(20_000)).unwrap();
    let v = ended(100);
    let (written, partial) = log_lines(&log);
    assert!(!partial, "never half a record");
    assert!(
        written < 100,
        "the disk was too small for 100 records: {written}"
    );
    testbed::wait_until("the losses to be counted", Duration::from_secs(5), || {
        stats(&stats_path).filter(|v| v["flow_log_lost"].as_u64() == Some(100 - written as u64))
    })
    .unwrap_or_else(|e| panic!("{e}: {v:#}\n{}", dp.output()));
    assert!(
        dp.output().contains("flow log: cannot write"),
        "{}",
        dp.output()
    );

    // Space comes back: the writer goes on.
    std::fs::remove_file(&filler).unwrap();
    traffic::send_flows(&tb.gen_ns, spec(21_000)).unwrap();
    ended(200);
    testbed::wait_until(
        "records to be written again",
        Duration::from_secs(5),
        || (log_lines(&log).0 >= written + 100).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dp.output()));
    dp.interrupt(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("dataplane {e}"));
    let v = stats(&stats_path).unwrap();
    let (lines, partial) = log_lines(&log);
    assert!(!partial);
    assert_eq!(
        lines as u64 + v["flow_log_lost"].as_u64().unwrap() + queue_sum(&v, "flow_log_dropped"),
        queue_sum(&v, "flows_ended"),
        "every ended flow is written or counted: {v:#}"
    );
    assert!(
        dp.output().contains("flow log: writing again"),
        "{}",
        dp.output()
    );
}
