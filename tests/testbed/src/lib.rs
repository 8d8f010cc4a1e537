//! Testbeds for the end-to-end tests: network namespaces joined by
//! multiqueue veth pairs, addressed from 198.18.0.0/15 (RFC 2544) with no
//! route out, and removed on every exit path (the guards' `Drop` runs on
//! panic too). Also the test frame builder ([`frames`]) and bounded traffic
//! senders ([`traffic`]).
//!
//! Everything here needs root; [`require_root`] fails loudly otherwise.

pub mod ecmp;
pub mod frames;
pub mod lb;
pub mod peers;
pub mod rawtcp;
pub mod traffic;

use std::{
    io::{self, BufRead, BufReader, Read},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// Panics with a message saying why, unless running as root.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (network namespaces, veth, XDP, AF_XDP); run it as root, e.g. `sudo -E scripts/test.sh`"
    );
}

/// Runs a command, failing with its stderr when it does not succeed.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

fn unique_suffix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory for one test (`$TMPDIR/dataplane-TAG-PID`), emptied
/// when made and removed on drop, panics included.
#[derive(Debug)]
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dataplane-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace this process created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `PREFIX-PID-N`, with loopback up.
    pub fn new(prefix: &str) -> io::Result<Netns> {
        let name = format!("{prefix}-{}", unique_suffix());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Writes a sysctl of this namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(self
            .command("sh")
            .args(["-c", &format!("echo {value} > {path}")]))?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it opens
    /// stay in the namespace.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        self.spawn_inside(f)
            .join()
            .map_err(|_| io::Error::other("namespace thread panicked"))?
    }

    /// Starts `f` on a new thread that enters this namespace first.
    pub fn spawn_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<io::Result<T>> {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || -> io::Result<T> {
            let file = std::fs::File::open(&path)?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a valid namespace fd affects only this thread,
            // which is ours and ends when `f` returns.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Generator and device-under-test namespaces joined by a veth pair with
/// `queues` TX and RX queues on each end.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: the namespaces go last.
    pub gen_if: String,
    pub dut_if: String,
    pub gen_ip: std::net::Ipv4Addr,
    pub dut_ip: std::net::Ipv4Addr,
    pub gen_mac: [u8; 6],
    pub dut_mac: [u8; 6],
    pub queues: u32,
    pub dut: Netns,
    pub gen_ns: Netns,
}

impl Testbed {
    /// Builds the testbed: `gen0` 198.18.0.1/24 in the generator namespace,
    /// `dut0` 198.18.0.2/24 in the device-under-test namespace, no routes
    /// beyond the link, IPv6 off (no autoconfiguration chatter to count),
    /// TX checksum offload off on both ends (veth would otherwise send
    /// partial checksums).
    pub fn up(queues: u32) -> io::Result<Testbed> {
        require_root("the veth testbed");
        let gen_ns = Netns::new("dpgen")?;
        let dut = Netns::new("dpdut")?;
        veth_pair(&gen_ns, "gen0", &dut, "dut0", queues)?;
        link_up(&gen_ns, "gen0", Some("198.18.0.1/24"))?;
        link_up(&dut, "dut0", Some("198.18.0.2/24"))?;
        let gen_mac = mac_of(&gen_ns, "gen0")?;
        let dut_mac = mac_of(&dut, "dut0")?;
        Ok(Testbed {
            gen_if: "gen0".into(),
            dut_if: "dut0".into(),
            gen_ip: "198.18.0.1".parse().expect("literal"),
            dut_ip: "198.18.0.2".parse().expect("literal"),
            gen_mac,
            dut_mac,
            queues,
            dut,
            gen_ns,
        })
    }

    /// Turns IPv6 on for the link (link-local addresses only, no duplicate
    /// address detection delay) and returns the DUT's link-local address.
    pub fn enable_ipv6_link_local(&self) -> io::Result<std::net::Ipv6Addr> {
        for (ns, ifname) in [(&self.gen_ns, &self.gen_if), (&self.dut, &self.dut_if)] {
            ns.sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0")?;
            ns.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "0")?;
        }
        let dut_if = self.dut_if.clone();
        let dut = &self.dut;
        wait_until(
            "a link-local address on the DUT",
            Duration::from_secs(5),
            || {
                let out = dut
                    .ip(&["-6", "-o", "addr", "show", "dev", &dut_if, "scope", "link"])
                    .ok()?;
                let addr = out
                    .split_whitespace()
                    .skip_while(|w| *w != "inet6")
                    .nth(1)?;
                addr.split('/').next()?.parse().ok()
            },
        )
        .map_err(io::Error::other)
    }

    /// True if an XDP program is attached to the DUT interface.
    pub fn dut_has_xdp(&self) -> io::Result<bool> {
        let out = self.dut.ip(&["-d", "link", "show", "dev", &self.dut_if])?;
        Ok(out.contains(" xdp") || out.contains("prog/xdp"))
    }
}

/// Three namespaces for an inline bridge: `client` — [`dut`: `br0`, `br1`]
/// — `server`. The client (`cli0`, 198.18.1.1/24) and the server (`srv0`,
/// 198.18.1.2/24) share one subnet, so they reach each other only if the
/// DUT bridges frames between its two ports, which have no addresses.
/// No routes beyond the link, IPv6 off, TX checksum offload off.
#[derive(Debug)]
pub struct InlineTestbed {
    // Field order is drop order: the namespaces go last.
    pub client_if: String,
    pub server_if: String,
    /// The DUT's port facing the client, and the one facing the server.
    pub dut_client_if: String,
    pub dut_server_if: String,
    pub client_ip: std::net::Ipv4Addr,
    pub server_ip: std::net::Ipv4Addr,
    pub queues: u32,
    pub dut: Netns,
    pub client: Netns,
    pub server: Netns,
}

impl InlineTestbed {
    pub fn up(queues: u32) -> io::Result<InlineTestbed> {
        require_root("the inline bridge testbed");
        let client = Netns::new("dpcli")?;
        let dut = Netns::new("dpbr")?;
        let server = Netns::new("dpsrv")?;
        veth_pair(&client, "cli0", &dut, "br0", queues)?;
        veth_pair(&server, "srv0", &dut, "br1", queues)?;
        link_up(&client, "cli0", Some("198.18.1.1/24"))?;
        link_up(&server, "srv0", Some("198.18.1.2/24"))?;
        link_up(&dut, "br0", None)?;
        link_up(&dut, "br1", None)?;
        Ok(InlineTestbed {
            client_if: "cli0".into(),
            server_if: "srv0".into(),
            dut_client_if: "br0".into(),
            dut_server_if: "br1".into(),
            client_ip: "198.18.1.1".parse().expect("literal"),
            server_ip: "198.18.1.2".parse().expect("literal"),
            queues,
            dut,
            client,
            server,
        })
    }
}

/// A veth pair `a` (in `ns_a`) <-> `b` (in `ns_b`), `queues` TX and RX
/// queues on each end.
fn veth_pair(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str, queues: u32) -> io::Result<()> {
    let q = queues.to_string();
    ns_a.ip(&[
        "link",
        "add",
        a,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        ns_b.name(),
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ])?;
    Ok(())
}

/// Brings a testbed link up: IPv6 off (no autoconfiguration chatter to
/// count), the address if any, TX checksum offload off (veth would hand
/// partial checksums to the receiver).
fn link_up(ns: &Netns, ifname: &str, addr: Option<&str>) -> io::Result<()> {
    ns.sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1")?;
    if let Some(addr) = addr {
        ns.ip(&["addr", "add", addr, "dev", ifname])?;
    }
    run(ns.command("ethtool").args(["-K", ifname, "tx", "off"]))?;
    ns.ip(&["link", "set", ifname, "up"])?;
    Ok(())
}

fn mac_of(ns: &Netns, ifname: &str) -> io::Result<[u8; 6]> {
    let out = ns.ip(&["-br", "link", "show", "dev", ifname])?;
    let text = out
        .split_whitespace()
        .nth(2)
        .ok_or_else(|| io::Error::other(format!("no MAC in `{out}`")))?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16)
            .map_err(|e| io::Error::other(format!("MAC `{text}`: {e}")))?;
    }
    Ok(mac)
}

/// A child process this test started; killed (by PID) and reaped on drop.
/// Its stdout and stderr are collected line by line.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: mpsc::Receiver<()>,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> io::Result<Process> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, new_line) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped"));
        for stream in [out, err] {
            let lines = Arc::clone(&lines);
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().expect("no panics while held").push(line);
                    let _ = tx.send(());
                }
            });
        }
        Ok(Process {
            child,
            lines,
            new_line,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().expect("no panics while held").join("\n")
    }

    /// Waits until a printed line contains `needle`, the process exits, or `timeout` passes.
    /// The last line of its output that is a JSON document (what the test
    /// peers print at the end), parsed.
    pub fn last_json(&self) -> Option<serde_json::Value> {
        self.output()
            .lines()
            .rev()
            .filter(|l| l.starts_with('{'))
            .find_map(|l| serde_json::from_str(l).ok())
    }

    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .expect("no panics while held")
                .iter()
                .find(|l| l.contains(needle))
            {
                return Ok(line.clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // drain what the reader threads still hold
                while self
                    .new_line
                    .recv_timeout(Duration::from_millis(100))
                    .is_ok()
                {}
                if let Some(line) = self
                    .lines
                    .lock()
                    .expect("no panics while held")
                    .iter()
                    .find(|l| l.contains(needle))
                {
                    return Ok(line.clone());
                }
                return Err(format!(
                    "process exited ({status}) before printing `{needle}`:\n{}",
                    self.output()
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no `{needle}` within {timeout:?}:\n{}",
                    self.output()
                ));
            }
            let _ = self
                .new_line
                .recv_timeout(left.min(Duration::from_millis(200)));
        }
    }

    /// Sends `signal` to the process (by PID).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: kill on the PID of a child we have not reaped yet.
        if unsafe { libc::kill(self.child.id() as i32, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops the process with SIGINT and waits up to `timeout` for a
    /// successful exit; the error names the exit status and carries
    /// everything the process printed.
    pub fn interrupt(&mut self, timeout: Duration) -> Result<(), String> {
        self.signal(libc::SIGINT)
            .map_err(|e| format!("SIGINT: {e}"))?;
        let status = self
            .wait_exit(timeout)
            .map_err(|e| format!("{e}:\n{}", self.output()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("exit {status}:\n{}", self.output()))
        }
    }

    /// Waits for exit, up to `timeout`; then collects the rest of the output.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                while self
                    .new_line
                    .recv_timeout(Duration::from_millis(100))
                    .is_ok()
                {}
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("still running after {timeout:?}"),
                ));
            }
            let _ = self.new_line.recv_timeout(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The number under `key` in a JSON object (a stats document, a flow
/// record); panics naming the key and the document if there is none.
pub fn number(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
