//! The control plane of a running data plane: a Unix socket served by a mio
//! event loop on its own thread, and the Prometheus endpoint.
//!
//! Protocol: one command per line, one JSON object per reply line,
//! `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`:
//!
//! ```text
//! stats                                   the stats document, live
//! flows [N]                               top N flows by packets, user space and kernel
//! verdict set PROTO SRC:PORT DST:PORT pass|drop|forward
//! verdict clear PROTO SRC:PORT DST:PORT
//! rules reload                            parse the rules and policy again, swap if clean
//! latency reset                           start the latency histograms over
//! lb show | lb set-weight ... | lb drain ...
//! ```
//!
//! The control thread does no data plane work itself: it parses a command
//! and hands it to the main thread over a crossbeam channel, which owns the
//! merged stats and talks to the workers (over their own channels, checked
//! once per loop turn: no lock on the per-packet path).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use crossbeam_channel::{Receiver, Sender, bounded};
use mio::{
    Events, Interest, Poll, Token,
    net::{UnixListener, UnixStream},
};
use serde_json::{Value, json};

/// How long a command waits for the main thread.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest command line accepted.
const MAX_LINE: usize = 4096;

/// A flow named on the command line: `udp 198.18.0.1:5000 198.18.0.2:53`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowArg {
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FlowArg {
    /// The direction-independent key of this flow (VLAN 0).
    pub fn key(&self) -> dpi::FlowKey {
        dpi::FlowKey::new(self.src, self.dst, self.proto, 0).0
    }
}

/// What the main thread is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Stats,
    Flows {
        top: usize,
    },
    VerdictSet {
        flow: FlowArg,
        action: xdp_redirect::Action,
    },
    VerdictClear {
        flow: FlowArg,
    },
    RulesReload,
    LatencyReset,
    /// Prometheus text for the metrics endpoint.
    Metrics,
    Lb(String),
}

/// The control socket and the metrics endpoint a run asks for
/// (`--control`/`--no-control`, `--metrics`), both feeding one command
/// channel. Started before anything is attached, so a busy path or port
/// fails cleanly; dropping it stops both.
pub struct Servers {
    control: Option<ControlServer>,
    metrics: Option<MetricsServer>,
    commands: Receiver<Command>,
}

impl Servers {
    pub fn start(args: &crate::cli::RunArgs) -> anyhow::Result<Servers> {
        let (tx, commands) = bounded::<Command>(64);
        let control = if args.no_control {
            None
        } else {
            let path = args
                .control
                .clone()
                .unwrap_or_else(|| crate::cli::default_control_path(&args.iface));
            Some(ControlServer::start(&path, tx.clone())?)
        };
        let metrics = match args.metrics {
            Some(addr) => Some(MetricsServer::start(addr, tx.clone())?),
            None => None,
        };
        Ok(Servers {
            control,
            metrics,
            commands,
        })
    }

    /// The commands; a channel that never delivers when no server runs.
    pub fn commands(&self) -> Receiver<Command> {
        if self.control.is_some() || self.metrics.is_some() {
            self.commands.clone()
        } else {
            crossbeam_channel::never()
        }
    }
}

/// A request with where its answer goes.
pub struct Command {
    pub request: Request,
    pub reply: Sender<Result<Value, String>>,
}

fn parse_proto(text: &str) -> Result<u8, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" | "ipv6-icmp" => Ok(58),
        other => other.parse().map_err(|_| {
            format!("`{text}` is not a protocol (tcp, udp, icmp, icmpv6 or a number)")
        }),
    }
}

fn parse_flow(words: &[&str]) -> Result<FlowArg, String> {
    let [proto, src, dst] = words else {
        return Err("a flow is PROTO SRC:PORT DST:PORT (IPv6 as [ADDR]:PORT)".into());
    };
    let addr = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("`{s}` is not ADDR:PORT (IPv6 as [ADDR]:PORT)"))
    };
    let flow = FlowArg {
        proto: parse_proto(proto)?,
        src: addr(src)?,
        dst: addr(dst)?,
    };
    if flow.src.is_ipv4() != flow.dst.is_ipv4() {
        return Err("the two endpoints of a flow must be the same address family".into());
    }
    Ok(flow)
}

/// Parses one command line.
pub fn parse(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["stats"] => Ok(Request::Stats),
        ["flows"] => Ok(Request::Flows { top: 20 }),
        ["flows", n] => n
            .parse()
            .map(|top| Request::Flows { top })
            .map_err(|_| format!("`{n}` is not a number of flows")),
        ["verdict", "set", rest @ ..] if rest.len() == 4 => {
            let action = match rest[3] {
                "pass" | "allow" => xdp_redirect::Action::Pass,
                "drop" => xdp_redirect::Action::Drop,
                "forward" => xdp_redirect::Action::Forward,
                other => return Err(format!("`{other}` is not an action (pass, drop, forward)")),
            };
            Ok(Request::VerdictSet {
                flow: parse_flow(&rest[..3])?,
                action,
            })
        }
        ["verdict", "clear", rest @ ..] => Ok(Request::VerdictClear {
            flow: parse_flow(rest)?,
        }),
        ["rules", "reload"] => Ok(Request::RulesReload),
        ["latency", "reset"] => Ok(Request::LatencyReset),
        ["lb", ..] => Ok(Request::Lb(line.trim().to_string())),
        [] => Err("empty command".into()),
        _ => Err(format!(
            "unknown command `{}`; commands: stats, flows [N], verdict set|clear FLOW, rules reload, latency reset, lb ... (`dataplane ctl help` says more)",
            line.trim()
        )),
    }
}

/// Sends a request to the main thread and waits for the answer.
pub fn ask(commands: &Sender<Command>, request: Request) -> Result<Value, String> {
    let (tx, rx) = bounded(1);
    commands
        .send(Command { request, reply: tx })
        .map_err(|_| "the data plane is stopping".to_string())?;
    rx.recv_timeout(REPLY_TIMEOUT)
        .map_err(|_| "no answer from the data plane's main thread".to_string())?
}

/// The control socket's server thread.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (mode 0600, its directory created 0700 if missing;
    /// a stale socket file from a dead process is replaced, a live one is
    /// refused) and starts serving.
    pub fn start(path: &Path, commands: Sender<Command>) -> anyhow::Result<ControlServer> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--control: create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "--control {}: another data plane is serving this socket; give another path",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("--control: remove the stale {}", path.display()))?;
        }
        // Mode 0600 from the socket's first moment: binding and then
        // chmod'ing left a window in which anyone could connect and keep a
        // root-level connection.
        let mut listener = with_umask(0o177, || UnixListener::bind(path))
            .with_context(|| format!("--control: bind {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: geteuid has no preconditions.
        let owner = unsafe { libc::geteuid() };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("dp-control".into())
            .spawn(move || {
                if let Err(e) = serve(&mut listener, &commands, &thread_stop, owner) {
                    tracing::error!(error = %e, "control socket stopped");
                }
            })?;
        tracing::info!(path = %path.display(), "control socket listening");
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

const LISTENER: Token = Token(0);
/// Control connections served at once; more are told so and closed.
const MAX_CONNECTIONS: usize = 64;
/// Replies queued for a connection before its commands stop being read
/// (a client that sends without reading cannot grow memory without bound).
const MAX_OUTPUT: usize = 1 << 20;

/// Runs `f` with the process umask set to `mask`, then restores it.
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask has no preconditions; the old mask is restored below.
    let old = unsafe { libc::umask(mask) };
    let result = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    result
}

/// Only root and the data plane's own user may use the control socket
/// (checked on the connection, whatever the file's mode).
fn peer_allowed(stream: &UnixStream, owner: u32) -> Result<(), String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    if cred.uid() == 0 || cred.uid() == owner {
        Ok(())
    } else {
        Err(format!(
            "permission denied: uid {} is neither root nor the data plane's user",
            cred.uid()
        ))
    }
}

/// Logs an accept error at most once a second (EMFILE repeats on every try).
struct AcceptErrors {
    last: Option<std::time::Instant>,
}

impl AcceptErrors {
    fn log(&mut self, what: &str, error: &std::io::Error) {
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last = Some(std::time::Instant::now());
            tracing::warn!(%error, "{what}: cannot accept a connection now; retrying");
        }
    }
}

/// Accepts every connection waiting on a listener and hands each to
/// `admit`. An accept error other than "none waiting" (EMFILE...) is logged
/// (once a second) and returns true: try again on the next turn, since the
/// listener reports only new connections, not the ones still waiting.
fn accept_waiting<S>(
    mut accept: impl FnMut() -> std::io::Result<S>,
    errors: &mut AcceptErrors,
    what: &str,
    mut admit: impl FnMut(S) -> std::io::Result<()>,
) -> std::io::Result<bool> {
    loop {
        match accept() {
            Ok(stream) => admit(stream)?,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                errors.log(what, &e);
                return Ok(true);
            }
        }
    }
}

struct Connection {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    read_closed: bool,
}

fn serve(
    listener: &mut UnixListener,
    commands: &Sender<Command>,
    stop: &AtomicBool,
    owner: u32,
) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut connections: std::collections::HashMap<Token, Connection> = Default::default();
    let mut next = 1usize;
    let mut accept_pending = false;
    let mut errors = AcceptErrors { last: None };
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if accept_pending || events.iter().any(|e| e.token() == LISTENER) {
            accept_pending = accept_waiting(
                || listener.accept().map(|(stream, _)| stream),
                &mut errors,
                "control socket",
                |mut stream| {
                    let refused = peer_allowed(&stream, owner).err().or_else(|| {
                        (connections.len() >= MAX_CONNECTIONS)
                            .then(|| "too many control connections; try again".to_string())
                    });
                    if let Some(why) = refused {
                        let line = json!({"ok": false, "error": why}).to_string() + "\n";
                        let _ = stream.write(line.as_bytes());
                        return Ok(()); // dropped: closed
                    }
                    let token = Token(next);
                    next += 1;
                    poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    connections.insert(
                        token,
                        Connection {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            read_closed: false,
                        },
                    );
                    Ok(())
                },
            )?;
        }
        for event in events.iter() {
            let token = event.token();
            if token == LISTENER {
                continue;
            }
            let Some(conn) = connections.get_mut(&token) else {
                continue;
            };
            if !service(conn, commands)
                && let Some(mut conn) = connections.remove(&token)
            {
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
    Ok(())
}

/// Moves a connection forward: writes what is queued, answers complete
/// command lines while fewer than MAX_OUTPUT bytes of replies wait, and
/// reads more only then. Returns false when the connection is done.
fn service(conn: &mut Connection, commands: &Sender<Command>) -> bool {
    loop {
        while !conn.output.is_empty() {
            match conn.stream.write(&conn.output) {
                Ok(0) => return false,
                Ok(n) => {
                    conn.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let mut progressed = false;
        while conn.output.len() < MAX_OUTPUT {
            let Some(pos) = conn.input.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line: Vec<u8> = conn.input.drain(..=pos).collect();
            let reply = answer(&String::from_utf8_lossy(&line), commands);
            conn.output.extend_from_slice(reply.as_bytes());
            conn.output.push(b'\n');
            progressed = true;
        }
        if conn.input.len() > MAX_LINE && !conn.input.contains(&b'\n') {
            conn.output
                .extend_from_slice(b"{\"ok\":false,\"error\":\"command line too long\"}\n");
            conn.input.clear();
            progressed = true;
        }
        if conn.output.len() < MAX_OUTPUT && !conn.read_closed {
            let mut buf = [0u8; 4096];
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.read_closed = true,
                Ok(n) => {
                    conn.input.extend_from_slice(&buf[..n]);
                    progressed = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => progressed = true,
                Err(_) => return false,
            }
        }
        if !progressed {
            break;
        }
    }
    let waiting = conn.input.contains(&b'\n');
    !(conn.read_closed && conn.output.is_empty() && !waiting)
}

/// The reply line to one command line.
fn answer(line: &str, commands: &Sender<Command>) -> String {
    let result = parse(line).and_then(|request| ask(commands, request));
    match result {
        Ok(value) => json!({"ok": true, "result": value}).to_string(),
        Err(error) => json!({"ok": false, "error": error}).to_string(),
    }
}

/// `dataplane ctl`: sends one command and returns the reply's result.
pub fn client(socket: &Path, command: &str) -> anyhow::Result<Value> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to {} (is the data plane running, with this --control path? root only)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT * 2))?;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut reply = String::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        if reply.ends_with('\n') {
            break;
        }
    }
    let v: Value = serde_json::from_str(reply.trim())
        .with_context(|| format!("the data plane sent something that is not JSON: {reply}"))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        bail!("{}", v["error"].as_str().unwrap_or("failed"))
    }
}

/// A reply for people: the stats summary line, a flow table, or the JSON.
pub fn human(command: &[String], reply: &Value) -> String {
    match command.first().map(String::as_str) {
        Some("stats") => {
            let k = &reply["kernel"];
            let mut out = format!(
                "{} ({}, XDP {} mode, AF_XDP {}), up {:.0} s\nkernel: rx {} to_user {} bypass pass/drop/forward {}/{}/{}\n",
                reply["iface"].as_str().unwrap_or("?"),
                reply["driver"].as_str().unwrap_or("?"),
                reply["xdp_mode"].as_str().unwrap_or("?"),
                reply["bind_mode"].as_str().unwrap_or("?"),
                reply["uptime_s"].as_f64().unwrap_or(0.0),
                k["rx"],
                k["to_user"],
                k["bypass_pass"],
                k["bypass_drop"],
                k["bypass_forward"]
            );
            for q in reply["queues"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "queue {}: rx {} flows {} (active {}) verdicts {}\n",
                    q["queue"],
                    q["rx_packets"],
                    q["flows_seen"],
                    q["flows_active"],
                    q["verdicts_written"]
                ));
            }
            out.trim_end().to_string()
        }
        Some("flows") => {
            let mut out = String::from("user space (packets seen by the workers):\n");
            for f in reply["user"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  {} -> {} {} {} {} {} pkts, {}\n",
                    f["src"].as_str().unwrap_or("?"),
                    f["dst"].as_str().unwrap_or("?"),
                    f["l4"].as_str().unwrap_or("?"),
                    f["protocol"].as_str().unwrap_or("?"),
                    f["host"].as_str().unwrap_or("-"),
                    f["user_packets"],
                    f["verdict"].as_str().unwrap_or("?")
                ));
            }
            out.push_str("kernel (packets handled in XDP after the verdict):\n");
            for f in reply["kernel"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  {} <-> {} {} {} {} pkts\n",
                    f["a"].as_str().unwrap_or("?"),
                    f["b"].as_str().unwrap_or("?"),
                    f["l4"].as_str().unwrap_or("?"),
                    f["action"].as_str().unwrap_or("?"),
                    f["kernel_packets"]
                ));
            }
            out.trim_end().to_string()
        }
        Some("verdict") => match (command.get(1).map(String::as_str), command.get(2..5)) {
            (Some("set"), Some(flow)) => format!(
                "{} written for {} (both directions)",
                reply["written"].as_str().unwrap_or("?"),
                flow.join(" ")
            ),
            (Some("clear"), Some(flow)) => format!("verdict cleared for {}", flow.join(" ")),
            _ => compact(reply),
        },
        Some("latency") => "latency histograms reset".to_string(),
        Some("lb") => human_lb(command, reply),
        _ => compact(reply),
    }
}

/// A reply nothing above knows how to show: a string as it is, else JSON
/// on one line.
fn compact(reply: &Value) -> String {
    match reply {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `lb ...` replies for people: `lb show` as a table, changes as lines.
fn human_lb(command: &[String], reply: &Value) -> String {
    let num = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    match command.get(1).map(String::as_str) {
        None | Some("show") => {
            let mut out = format!(
                "{} ({} mode, {} table of {} slots, digest {})\n{:<24} {:<40} {:>6} {:>9} {:>8} {:>6} {:>12} {:>10} {:>9}  {}\n",
                reply["iface"].as_str().unwrap_or("?"),
                reply["mode"].as_str().unwrap_or("?"),
                reply["table"].as_str().unwrap_or("?"),
                num(&reply["table_size"]),
                reply["digest"].as_str().unwrap_or("-"),
                "service",
                "backend",
                "weight",
                "effective",
                "health",
                "slots",
                "packets",
                "new conns",
                "pkts/s",
                "last health change"
            );
            for s in reply["services"].as_array().into_iter().flatten() {
                for b in s["backends"].as_array().into_iter().flatten() {
                    let health = match (b["up"].as_bool(), b["drained"].as_bool()) {
                        (_, Some(true)) => "drained",
                        (Some(true), _) => "up",
                        _ => "down",
                    };
                    out.push_str(&format!(
                        "{:<24} {:<40} {:>6} {:>9} {:>8} {:>6} {:>12} {:>10} {:>9}  {}\n",
                        s["service"].as_str().unwrap_or("?"),
                        b["addr"].as_str().unwrap_or("?"),
                        num(&b["weight"]),
                        num(&b["effective_weight"]),
                        health,
                        num(&b["slots"]),
                        num(&b["packets"]),
                        num(&b["new_conns"]),
                        b["packets_per_s"]
                            .as_f64()
                            .map_or("-".to_string(), |r| format!("{r:.0}")),
                        b["health_reason"].as_str().unwrap_or("-")
                    ));
                }
            }
            let c = &reply["connections"];
            out.push_str(&format!(
                "connections: {} hits, {} new, {} lost; {} removed backend(s) still carrying connections",
                num(&c["hits"]),
                num(&c["misses"]),
                num(&c["lost"]),
                num(&reply["retired_backends"])
            ));
            let inspected: Vec<&str> = reply["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["inspect"] == true)
                .filter_map(|s| s["service"].as_str())
                .collect();
            let i = &reply["inspection"];
            if !inspected.is_empty() || i.is_object() {
                out.push_str(&format!(
                    "\ninspected, then balanced: {}; in user space: {} packets read, {} sent on, {} flows, {} dropped, {} resets",
                    if inspected.is_empty() {
                        "none".to_string()
                    } else {
                        inspected.join(", ")
                    },
                    num(&i["user_packets"]),
                    num(&i["sent"]),
                    num(&i["flows"]),
                    num(&i["dropped_flows"]),
                    num(&i["rejects_sent"])
                ));
            }
            out
        }
        Some("save") => format!(
            "running configuration written to {}",
            reply["file"].as_str().unwrap_or("?")
        ),
        Some("health") => format!(
            "healthy (tables {})",
            reply["digest"].as_str().unwrap_or("?")
        ),
        Some(_) => {
            let mut lines = Vec::new();
            if let Some(backend) = reply["backend"].as_str() {
                match reply["drained"].as_bool() {
                    Some(true) => lines.push(format!("{backend}: drained (weight kept)")),
                    Some(false) => lines.push(format!("{backend}: undrained")),
                    None => lines.push(format!("{backend}: weight {}", num(&reply["weight"]))),
                }
            }
            if let Some(file) = reply["file"].as_str() {
                lines.push(format!("{file} read again"));
            }
            for (key, what) in [
                ("services_added", "service added"),
                ("services_removed", "service removed"),
                ("backends_added", "backend added"),
                (
                    "backends_removed",
                    "backend removed (its connections stay until they end)",
                ),
            ] {
                for item in reply[key].as_array().into_iter().flatten() {
                    lines.push(format!("{what}: {}", item.as_str().unwrap_or("?")));
                }
            }
            let changed = reply["changed"].as_array().cloned().unwrap_or_default();
            if changed.is_empty() {
                lines.push("no table changed".into());
            }
            for c in &changed {
                lines.push(format!(
                    "  {}{}{}",
                    c["service"].as_str().unwrap_or("?"),
                    c["backend"].as_str().map_or(String::new(), |b| format!(
                        " {b} weight {}",
                        num(&c["weight"])
                    )),
                    c["moved_slots"]
                        .as_u64()
                        .map_or(String::new(), |m| format!(": {m} slots moved"))
                ));
            }
            lines.join("\n")
        }
    }
}

/// `dataplane ctl help`.
pub const HELP: &str = "\
commands (dataplane ctl [--socket PATH | -i IFACE] [--json] COMMAND):
  stats                                   the stats document: kernel counters, queues
  flows [N]                               the top N flows (default 20): workers' tables and the kernel map
  verdict set PROTO SRC:PORT DST:PORT pass|drop|forward
                                          write a verdict for a flow (both directions)
  verdict clear PROTO SRC:PORT DST:PORT   remove it
  rules reload                            parse the rules and policy again (as SIGHUP); a bad file changes nothing
  latency reset                           start the latency histograms over
  lb show                                 the balancer: services, backends, weights, health, slots, traffic
  lb set-weight [SERVICE] ADDR W          a backend's weight (in SERVICE, or every service that has it)
  lb drain [SERVICE] ADDR                 no new connections, established ones stay; the weight is kept
  lb undrain [SERVICE] ADDR               back to its weight
  lb add-service [--inspect] tcp|udp VIP:PORT ADDR[=W]...
                                          a new service (services are named like tcp/VIP:PORT);
                                          --inspect: its connections' first data packets are
                                          inspected by the rules before the kernel balances them
  lb remove-service SERVICE               its VIP goes back to the stack
  lb add-backend SERVICE ADDR [W]         a new backend (weight 1 by default)
  lb remove-backend SERVICE ADDR          no new connections; established ones stay until they end
                                          (with on_backend_down = \"reset\": balanced again)
  lb reload                               read the services file again and run it (not mode, table, gateway_mac)
  lb save                                 write the running services, backends and weights to the file
  lb health                               exit 0 if every service has a backend up with weight (for a
                                          BGP daemon's check: announce the VIPs only then), else 1 and why
  help                                    this list
--json (anywhere on the line) prints the reply as JSON instead of for people.";

/// The Prometheus endpoint: a small HTTP/1.1 server on its own thread
/// (one mio event loop, no thread per connection), bounded in connections,
/// request size and time, so idle or slow clients cannot exhaust threads,
/// file descriptors or memory. Answers `GET /metrics`, one request per
/// connection (`Connection: close`).
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

/// Metrics connections open at once; a new one past this replaces the
/// oldest (so idle clients cannot lock a scraper out).
const MAX_HTTP_CONNECTIONS: usize = 32;
/// Largest request head read; a longer one is answered 431.
const MAX_REQUEST_HEAD: usize = 8192;
/// A request must arrive, and its answer leave, within this time.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

struct HttpConnection {
    stream: mio::net::TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    answered: bool,
    since: std::time::Instant,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, commands: Sender<Command>) -> anyhow::Result<MetricsServer> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("dp-metrics".into())
            .spawn(move || {
                if let Err(e) = serve_metrics(&mut listener, &commands, &thread_stop) {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            })?;
        tracing::info!(%addr, "metrics endpoint listening (/metrics)");
        Ok(MetricsServer {
            stop,
            handle: Some(handle),
            addr,
        })
    }
}

fn serve_metrics(
    listener: &mut mio::net::TcpListener,
    commands: &Sender<Command>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut connections: std::collections::HashMap<Token, HttpConnection> = Default::default();
    let mut next = 1usize;
    let mut accept_pending = false;
    let mut errors = AcceptErrors { last: None };
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if accept_pending || events.iter().any(|e| e.token() == LISTENER) {
            accept_pending = accept_waiting(
                || listener.accept().map(|(stream, _)| stream),
                &mut errors,
                "metrics endpoint",
                |mut stream| {
                    if connections.len() >= MAX_HTTP_CONNECTIONS
                        && let Some(oldest) = connections
                            .iter()
                            .min_by_key(|(_, c)| c.since)
                            .map(|(token, _)| *token)
                        && let Some(mut old) = connections.remove(&oldest)
                    {
                        let _ = poll.registry().deregister(&mut old.stream);
                    }
                    let token = Token(next);
                    next += 1;
                    poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    connections.insert(
                        token,
                        HttpConnection {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            answered: false,
                            since: std::time::Instant::now(),
                        },
                    );
                    Ok(())
                },
            )?;
        }
        for event in events.iter() {
            let token = event.token();
            if token == LISTENER {
                continue;
            }
            let done = match connections.get_mut(&token) {
                Some(conn) => !http_service(conn, commands),
                None => false,
            };
            if done && let Some(mut conn) = connections.remove(&token) {
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
        // Slow or idle clients go (a slowloris holds nothing for long).
        connections.retain(|_, conn| {
            let keep = conn.since.elapsed() < HTTP_TIMEOUT;
            if !keep {
                let _ = poll.registry().deregister(&mut conn.stream);
            }
            keep
        });
    }
    Ok(())
}

/// Reads the request (at most MAX_REQUEST_HEAD bytes), answers it once,
/// writes the answer. Returns false when the connection is done.
fn http_service(conn: &mut HttpConnection, commands: &Sender<Command>) -> bool {
    while !conn.answered {
        let mut buf = [0u8; 2048];
        match conn.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => conn.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let (status, body) = match request.parse(&conn.input) {
            Ok(httparse::Status::Complete(_)) => {
                if request.method != Some("GET") {
                    (405, "only GET\n".to_string())
                } else if request
                    .path
                    .is_some_and(|p| p.split('?').next() == Some("/metrics"))
                {
                    match ask(commands, Request::Metrics) {
                        Ok(Value::String(text)) => (200, text),
                        Ok(other) => (500, other.to_string()),
                        Err(e) => (503, e),
                    }
                } else {
                    (404, "metrics are at /metrics\n".to_string())
                }
            }
            Ok(httparse::Status::Partial) if conn.input.len() > MAX_REQUEST_HEAD => {
                (431, "request head too large\n".to_string())
            }
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => (431, "too many headers\n".to_string()),
            Err(_) => (400, "bad request\n".to_string()),
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let content_type = if status == 200 {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        };
        conn.output = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        conn.answered = true;
        conn.input = Vec::new();
    }
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return false,
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    !conn.answered
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Receiver type the main loop selects on.
pub type Commands = Receiver<Command>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_text_for_people() {
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            human(
                &words("verdict set udp 198.18.0.1:5000 198.18.0.2:53 drop"),
                &serde_json::json!({"written": "drop"})
            ),
            "drop written for udp 198.18.0.1:5000 198.18.0.2:53 (both directions)"
        );
        assert_eq!(
            human(&words("latency reset"), &serde_json::json!({"reset": true})),
            "latency histograms reset"
        );
        let show = serde_json::json!({
            "iface": "lb0", "mode": "ipip", "table": "maglev", "table_size": 65537,
            "services": [{"service": "tcp 198.18.9.1:80", "backends": [
                {"addr": "198.18.9.10", "up": true, "weight": 5, "effective_weight": 500,
                 "slots": 32768, "packets": 10, "new_conns": 2}]}],
            "connections": {"hits": 8, "misses": 2, "lost": 0},
        });
        let text = human(&words("lb show"), &show);
        assert!(
            text.contains("lb0 (ipip mode, maglev table of 65537 slots, digest -)"),
            "{text}"
        );
        let row = text.lines().nth(2).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "tcp",
                "198.18.9.1:80",
                "198.18.9.10",
                "5",
                "500",
                "up",
                "32768",
                "10",
                "2",
                "-",
                "-"
            ],
            "{text}"
        );
        assert!(!text.contains('{'), "no JSON: {text}");
        let weight = serde_json::json!({"backend": "198.18.9.10", "weight": 0,
            "changed": [{"service": "tcp 198.18.9.1:80", "moved_slots": 32768}]});
        assert_eq!(
            human(&words("lb set-weight 198.18.9.10 0"), &weight),
            "198.18.9.10: weight 0\n  tcp 198.18.9.1:80: 32768 slots moved"
        );
        let removed = serde_json::json!({"backends_removed": ["tcp/198.18.9.1:80 198.18.9.10"],
            "changed": [{"service": "tcp/198.18.9.1:80", "moved_slots": 100}]});
        assert_eq!(
            human(
                &words("lb remove-backend tcp/198.18.9.1:80 198.18.9.10"),
                &removed
            ),
            "backend removed (its connections stay until they end): tcp/198.18.9.1:80 198.18.9.10\n  tcp/198.18.9.1:80: 100 slots moved"
        );
    }

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert_eq!(parse("stats\n"), Ok(Request::Stats));
        assert_eq!(parse("flows 5"), Ok(Request::Flows { top: 5 }));
        let set = parse("verdict set udp 198.18.0.1:5000 198.18.0.2:53 drop").unwrap();
        let Request::VerdictSet { flow, action } = set else {
            panic!("{set:?}")
        };
        assert_eq!((flow.proto, action), (17, xdp_redirect::Action::Drop));
        // both directions name the same flow
        let back = parse_flow(&["udp", "198.18.0.2:53", "198.18.0.1:5000"]).unwrap();
        assert_eq!(back.key(), flow.key());
        assert!(parse("verdict clear tcp [2001:db8::1]:80 [2001:db8::2]:4000").is_ok());
        for (bad, says) in [
            ("verdict set udp 1.2.3.4 1.2.3.5:1 drop", "ADDR:PORT"),
            (
                "verdict set udp 1.2.3.4:1 [::1]:2 drop",
                "same address family",
            ),
            (
                "verdict set sctpx 1.2.3.4:1 1.2.3.5:2 drop",
                "not a protocol",
            ),
            ("verdict set udp 1.2.3.4:1 1.2.3.5:2 maybe", "not an action"),
            ("flows many", "not a number"),
            ("reboot", "unknown command"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
