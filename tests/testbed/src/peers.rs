//! The real programs the end-to-end tests talk to and through: curl, ping,
//! the Python servers and DNS client in `tests/peers`, and openssl for a
//! certificate. Each runs inside a test namespace; none looks up a name
//! (curl gets `--resolve`, the servers skip their reverse lookup).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{Netns, Process, Scratch};

/// The folder of the peer scripts (`tests/peers`).
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../peers");

/// Fails with the fix when a tool the tests need is missing.
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool} >/dev/null")])
                .status()
                .is_ok_and(|s| s.success()),
            "`{tool}` is needed for this test; run scripts/install-deps.sh"
        );
    }
}

/// Runs `program ARGS` in `ns`: whether it succeeded, and what it printed.
pub fn run_in(ns: &Netns, program: &str, args: &[&str]) -> (bool, String) {
    let out = ns
        .command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// curl from `ns` to `url`, its host name resolved to `ip` (no lookup):
/// success, and the body size or curl's error.
pub fn curl(
    ns: &Netns,
    url: &str,
    host: &str,
    ip: Ipv4Addr,
    port: u16,
    max_time: u32,
) -> (bool, String) {
    let resolve = format!("{host}:{port}:{ip}");
    run_in(
        ns,
        "curl",
        &[
            "-sS",
            "-k",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "--max-time",
            &max_time.to_string(),
            "--resolve",
            &resolve,
            url,
        ],
    )
}

/// One DNS A query for `name` from `ns` to `server`, from source port
/// `sport`: the answer's address, or "timeout".
pub fn dns_query(ns: &Netns, server: Ipv4Addr, name: &str, sport: u16) -> String {
    let script = format!("{DIR}/dns_query.py");
    let (_, out) = run_in(
        ns,
        "python3",
        &[&script, &server.to_string(), name, &sport.to_string(), "2"],
    );
    out.trim().to_string()
}

/// `count` pings from `ns` to `ip`, 0.2 s apart: success (no loss) and ping's report.
pub fn ping(ns: &Netns, ip: Ipv4Addr, count: u32) -> (bool, String) {
    run_in(
        ns,
        "ping",
        &[
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            &ip.to_string(),
        ],
    )
}

/// A self-signed certificate and its key, made for this run in `scratch`.
pub fn self_signed_cert(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let (cert, key) = (scratch.path("cert.pem"), scratch.path("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl made the test certificate");
    (cert, key)
}

/// `tests/peers/servers.py` in `ns` on `ip`: HTTP (80), HTTPS (443) and
/// DNS (53), once every socket is bound. Killed on drop.
pub fn start_servers(ns: &Netns, ip: Ipv4Addr, cert: &Path, key: &Path) -> Process {
    let mut cmd = ns.command("python3");
    cmd.arg(format!("{DIR}/servers.py"))
        .arg(ip.to_string())
        .arg(cert)
        .arg(key);
    let mut servers = Process::spawn(cmd).expect("start the servers");
    servers
        .wait_for_line("ready", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("servers: {e}\n{}", servers.output()));
    servers
}

/// The records of a `--flow-log` file so far (none if it is not there yet).
pub fn flow_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("flow log line is JSON"))
        .collect()
}

/// A UDP socket on `port` in `ns` that reads and discards (so the host
/// answers no datagram with an ICMP port unreachable, which a host-mode
/// data plane would see as a flow of its own). Killed on drop.
pub fn udp_discard(ns: &Netns, port: u16) -> Process {
    let mut cmd = ns.command("python3");
    cmd.arg("-c").arg(format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', {port}))\nprint('ready', flush=True)\nwhile True:\n    s.recv(65536)\n"
    ));
    let mut p = Process::spawn(cmd).expect("spawn the UDP discard socket");
    p.wait_for_line("ready", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("UDP discard socket: {e}"));
    p
}
