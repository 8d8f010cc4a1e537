//! Command line (clap derive). `dataplane --iface IF --queues N` runs the
//! data plane; subcommands are added as the tool grows.

use std::{path::PathBuf, str::FromStr};

use clap::{Parser, ValueEnum};

use crate::logging::LogFormat;

/// Hybrid XDP / AF_XDP network function data plane.
///
/// Attaches an XDP program to IFACE, shows the first packets of every flow to
/// pinned user-space workers that decide it (DPI, rules, or a packet count),
/// and once a flow is decided lets the kernel handle the rest of it. Three
/// modes, none of which takes traffic it should not:
///
///   host (default): IFACE is this machine's own interface. Every packet
///     reaches the host's stack as if the data plane were absent; the
///     workers get copies of undecided flows (both directions: a TC program
///     copies what the host sends). A "drop" verdict is enforced in the
///     kernel, both ways.
///
///   mirror (--mirror): IFACE is a SPAN/TAP port; its frames are copies
///     already. The workers read them in place (AF_XDP, zero copy where the
///     driver has it); nothing is forwarded.
///
///   inline (--peer IF2): an IPS bridge between IFACE and IF2. Undecided
///     frames are inspected in place (AF_XDP) and sent on by descriptor;
///     decided flows are forwarded or dropped in XDP.
///
/// Ctrl-C (SIGINT) or SIGTERM stops it, detaches the program and prints a
/// summary.
#[derive(Debug, Parser)]
#[command(
    name = "dataplane",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Running the data plane: `dataplane --iface IF [OPTIONS]`.
    #[command(flatten)]
    pub run: Option<RunArgs>,

    /// Log line format on stderr (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Read the options of the run from this TOML file (see
    /// dist/dataplane.toml); flags on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// The command line, with `--config FILE` read in (its flags first, so
    /// that the command line's win); a bad file is an error naming its
    /// file, line and key.
    pub fn from_args(
        args: impl IntoIterator<Item = std::ffi::OsString>,
    ) -> Result<Cli, crate::config::ConfigError> {
        let args = crate::config::expand(args.into_iter().collect(), check_setting)?;
        Ok(<Cli as clap::Parser>::parse_from(args))
    }
}

/// Checks one setting of a configuration file with the parser of the flag
/// it stands for; returns that parser's complaint.
pub fn check_setting(setting: &crate::config::Setting) -> Result<(), String> {
    let mut args: Vec<&str> = vec!["dataplane"];
    if setting.flag != "--iface" {
        args.extend(["--iface", "placeholder"]);
    }
    args.push(setting.flag);
    if let Some(value) = &setting.value {
        args.push(value);
    }
    match <Cli as clap::Parser>::try_parse_from(args) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
    }
}

/// What to do besides running the data plane.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Classify the flows of pcap/pcapng captures offline, with the same DPI
    /// engine the workers use; one line per flow, then a summary.
    Inspect {
        /// Capture files (pcap, microsecond or nanosecond, or pcapng).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// table: aligned columns; json: one JSON object per flow (JSON Lines),
        /// the summary as JSON on stderr.
        #[arg(long, value_enum, default_value_t = crate::inspect::Format::Table)]
        format: crate::inspect::Format,
        /// Flows tracked at once; when full, the least recently seen flow is
        /// ended (reason "evicted") to make room, so memory stays bounded.
        #[arg(long, default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(1..))]
        max_flows: u32,
        /// Also write events in Suricata's eve.json format to PATH
        /// (`alert` as rules fire, `flow` as flows end; capture time).
        #[arg(long, value_name = "PATH")]
        eve: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// On a load-balancer backend (ipip mode): strip the balancer's outer
    /// IPv4/IPv6 header in XDP so the stack gets the client's packet to the
    /// VIP (put the VIP on `lo`). Runs until Ctrl-C, then detaches.
    Decap {
        /// Interface the balancer's packets arrive on.
        #[arg(long, short = 'i', value_name = "IFACE")]
        iface: String,
        #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
        xdp_mode: XdpModeArg,
        /// Replace an XDP program that is already attached.
        #[arg(long)]
        force: bool,
        /// Stop by itself after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
    },
    /// Talk to a running data plane over its control socket: stats, flows
    /// [N], verdict set|clear PROTO SRC:PORT DST:PORT [pass|drop|forward],
    /// rules reload, latency reset, lb ...
    Ctl {
        /// The data plane's control socket (its --control).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The interface of the data plane to talk to (finds
        /// /run/dataplane/IFACE.sock) when --socket is not given.
        #[arg(long, short = 'i', value_name = "IFACE")]
        iface: Option<String>,
        /// Print the reply as JSON instead of for people.
        #[arg(long)]
        json: bool,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// Where a data plane on `iface` puts its control socket by default.
pub fn default_control_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("/run/dataplane/{iface}.sock"))
}

/// Rules and policy (shared by `inspect` and the workers).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Signature rules in Suricata's syntax.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Address and port variables for the rules ($HOME_NET...), TOML with
    /// [address-groups] and [port-groups].
    #[arg(long, value_name = "FILE")]
    pub vars: Option<PathBuf>,
    /// Skip rules with unsupported keywords (with a warning each) instead of refusing the file.
    #[arg(long)]
    pub lenient: bool,
    /// Verdict policy (TOML): protocol/host wildcard -> allow|drop, default,
    /// stream depth, inspection limits.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Decide a flow by the policy after this many packets in user space,
    /// whatever else (overrides the policy's max_user_packets). Off by
    /// default: flows go to the kernel on a verdict, once encrypted, at the
    /// stream depth, or when no rule can match them any more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_user_packets: Option<u32>,
}

impl EngineArgs {
    /// Loads rules and policy, reporting what was loaded on stderr. Errors
    /// list every bad line; nothing is used unless everything parses.
    pub fn load(&self) -> anyhow::Result<dpi::policy::Engine> {
        let vars = match &self.vars {
            Some(path) => dpi::rules::Vars::load(path)?,
            None => dpi::rules::Vars::default(),
        };
        let rules = match &self.rules {
            Some(path) => {
                let set =
                    dpi::rules::RuleSet::load(path, &vars, self.lenient).map_err(|errors| {
                        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                        anyhow::anyhow!(
                            "{} error(s) in the rules, none loaded:\n  {}",
                            errors.len(),
                            lines.join("\n  ")
                        )
                    })?;
                crate::logging::say_err(&format!(
                    "rules: {} loaded from {} ({} skipped)",
                    set.len(),
                    path.display(),
                    set.warnings.len()
                ));
                // One line per unsupported thing, not one per rule.
                for (what, lines) in &set.skipped {
                    let shown: Vec<String> = lines.iter().take(8).map(usize::to_string).collect();
                    let more = if lines.len() > 8 { ", ..." } else { "" };
                    crate::logging::say_err(&format!(
                        "rules: skipped {} rule(s) for {what} unsupported (lines {}{more})",
                        lines.len(),
                        shown.join(", ")
                    ));
                }
                Some(set)
            }
            None => None,
        };
        let policy = match &self.policy {
            Some(path) => {
                let p = dpi::policy::Policy::load(path)?;
                crate::logging::say_err(&format!(
                    "policy: {} entries from {}, stream depth {} bytes, default {}",
                    p.entries(),
                    path.display(),
                    p.stream_depth,
                    p.default.name()
                ));
                p
            }
            None => dpi::policy::Policy::default(),
        };
        let mut policy = policy;
        if let Some(cap) = self.max_user_packets {
            policy.max_user_packets = Some(cap);
        }
        Ok(dpi::policy::Engine::new(rules, policy))
    }
}

/// Options of a data plane run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Network interface to attach to (e.g. eth1).
    #[arg(long, short = 'i', value_name = "IFACE")]
    pub iface: String,

    /// Load balancer mode: balance the services of this TOML file (VIPs,
    /// backends, weights, health checks, load policy) in XDP; traffic for
    /// anything else goes to the stack. With --rules/--policy, services
    /// that say `inspect = true` have their connections' first data
    /// packets inspected before the kernel balances the rest (and
    /// --flow-log records them). See README "Load balancer".
    #[arg(long, value_name = "FILE", conflicts_with_all = ["peer", "pin", "mirror", "eve", "ipfix"])]
    pub lb: Option<PathBuf>,

    /// Inline (IPS) mode: a bridge; everything entering --iface leaves this
    /// interface and the reverse, unless dropped. Without it (and without
    /// --mirror), host mode.
    #[arg(long, value_name = "IFACE2")]
    pub peer: Option<String>,

    /// Pin the verdict and counter maps and the program's links in this
    /// bpffs directory (mounted if it is not one, where the mount outlives
    /// the process; under `ip netns exec` mount it first): the program stays
    /// attached when the data plane exits or dies, and the next start with
    /// the same --pin takes over its verdicts and replaces the program
    /// atomically. Remove the directory's link-* files to detach.
    #[arg(long, value_name = "DIR")]
    pub pin: Option<PathBuf>,

    /// What undecided flows get when user space cannot take them (no
    /// socket: the process is gone, or the queue is not served; or a worker
    /// missed its heartbeat for --failure-grace-ms): pass them on (fail
    /// open) or drop them (fail closed). Default: drop in inline mode (an
    /// IPS fails closed), pass otherwise.
    #[arg(long, value_enum)]
    pub on_failure: Option<OnFailure>,

    /// Inline and mirror modes: the NIC's RSS is symmetric (and, inline,
    /// both ports hash alike), so the two directions of a flow always reach
    /// one queue: skip the software hand-off of frames to their flow's
    /// worker. Without symmetric RSS this splits flows (each worker sees one
    /// direction: no flow:established, no responses): the hand-off costs a
    /// hash per frame when nothing needs handing over, so leave it on unless
    /// measured otherwise.
    #[arg(long)]
    pub trust_rss: bool,

    /// Serve fewer RX queues than the interface has (--queues below its
    /// queue count, inline and mirror modes): the other queues' undecided
    /// traffic gets the --on-failure action, and a warning at start names
    /// them. Without it, that is refused.
    #[arg(long)]
    pub allow_unserved_queues: bool,

    /// A worker that has not looped for this long is taken for dead (0 = never).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub failure_grace_ms: u64,

    /// Control socket (mode 0600) for `dataplane ctl`; default
    /// /run/dataplane/IFACE.sock.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// No control socket.
    #[arg(long, conflicts_with = "control")]
    pub no_control: bool,

    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Mirror mode: --iface is a SPAN/TAP port whose frames are copies, read
    /// in place (AF_XDP); decided flows are discarded in XDP instead of
    /// handed to the host's stack (counted as bypass_drop). Not with --peer.
    #[arg(long, conflicts_with = "peer")]
    pub mirror: bool,

    /// Append a JSON Lines record for each flow that ends (Suricata eve `flow` style).
    #[arg(long, value_name = "PATH")]
    pub flow_log: Option<PathBuf>,

    /// Append events in Suricata's eve.json format: `alert` when a rule
    /// fires, `drop` when a flow is dropped, `flow` when a flow ends.
    #[arg(long, value_name = "PATH")]
    pub eve: Option<PathBuf>,

    /// Export flows over IPFIX (RFC 7011, UDP) to this collector: a record
    /// per direction when a flow ends, and every --ipfix-active-timeout
    /// for flows that last.
    #[arg(long, value_name = "HOST:PORT")]
    pub ipfix: Option<String>,

    /// With --ipfix: a flow still running is exported this often (seconds).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", value_parser = parse_timeout)]
    pub ipfix_active_timeout: f64,

    /// Idle timeout of TCP flows (seconds).
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout_tcp: f64,

    /// Idle timeout of TCP flows after a FIN or RST (seconds).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout_tcp_closing: f64,

    /// Idle timeout of UDP flows (seconds).
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout_udp: f64,

    /// Idle timeout of ICMP and other flows (seconds).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout_other: f64,

    /// Workers. Inline and mirror modes: RX queues to serve from queue 0 up,
    /// one AF_XDP socket and one worker each. Host mode: workers sharing the
    /// flows (every queue is always served). Default: the interface's RX
    /// queue count.
    #[arg(long, short = 'q', value_parser = clap::value_parser!(u32).range(1..=256))]
    pub queues: Option<u32>,

    /// Cores to pin workers to, in queue order (e.g. "2,3" or "2-5"). Default: one
    /// core per queue starting at core 0, wrapping when there are fewer cores than queues.
    #[arg(long, value_name = "LIST", value_parser = parse_core_list)]
    pub cores: Option<CoreList>,

    /// XDP attach mode. auto = native, else generic with a warning naming the driver.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,

    /// AF_XDP zero copy. auto = zero copy where the driver supports it, else copy mode
    /// (logged); require = fail if not available; off = always copy mode.
    #[arg(long, value_enum, default_value_t = ZeroCopyArg::Auto)]
    pub zero_copy: ZeroCopyArg,

    /// Entries in each AF_XDP ring (RX, TX, fill, completion); a power of two.
    #[arg(long, default_value_t = 2048, value_parser = parse_power_of_two)]
    pub ring_size: u32,

    /// UMEM frame size in bytes: 2048 or 4096.
    #[arg(long, default_value_t = 4096, value_parser = parse_frame_size)]
    pub frame_size: u32,

    /// Most frames a worker takes from its RX ring at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,

    /// Busy-poll the sockets (SO_PREFER_BUSY_POLL) instead of sleeping in poll():
    /// lower latency, a fully used core per worker.
    #[arg(long)]
    pub busy_poll: bool,

    /// Packets of a flow user space sees before it writes a PASS verdict and the
    /// kernel takes over the rest of the flow; "unlimited" keeps every packet in user space.
    #[arg(long, default_value = "8", value_name = "K|unlimited")]
    pub sniff_packets: SniffLimit,

    /// Flows each worker tracks (LRU: the least recently seen flow is evicted when full).
    #[arg(long, default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(1..))]
    pub flow_table_size: u32,

    /// Capacity of each of the kernel's verdict maps, IPv4 and IPv6 (LRU hashes).
    #[arg(long, default_value_t = xdp_redirect::VERDICT_ENTRIES_DEFAULT, value_parser = clap::value_parser!(u32).range(1..))]
    pub verdict_map_size: u32,

    /// Write the stats as JSON to this file when stopping (and every --stats-interval while running).
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,

    /// At exit, write the per-packet processing and XDP-to-worker histograms
    /// as HdrHistogram `.hgrm` files (microseconds): PREFIX-processing.hgrm
    /// and PREFIX-kernel-to-user.hgrm (plot them with `latency-plot`).
    #[arg(long, value_name = "PREFIX")]
    pub latency_hgrm: Option<PathBuf>,

    /// Seconds between stats refreshes (JSON file and a status log line); 0 = only at exit.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub stats_interval: f64,

    /// Stop by itself after this many seconds, as on Ctrl-C.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Replace an XDP program that is already attached to the interface.
    #[arg(long)]
    pub force: bool,

    /// Decide flows with the DPI engine (classification, rules, policy)
    /// instead of after --sniff-packets packets; implied by --rules or --policy.
    #[arg(long)]
    pub dpi: bool,

    // The next four repeat `EngineArgs` on purpose: flattening it here made
    // clap report no run options at all (the top level holds an optional
    // `RunArgs`), so `RunArgs::engine` builds one from these fields.
    /// Signature rules in Suricata's syntax (implies --dpi).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Address and port variables for the rules (TOML).
    #[arg(long, value_name = "FILE")]
    pub vars: Option<PathBuf>,
    /// Skip rules with unsupported keywords, with a warning each.
    #[arg(long)]
    pub lenient: bool,
    /// Verdict policy (TOML; implies --dpi).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Decide a flow by the policy after this many packets in user space,
    /// whatever else (see `inspect --help`; implies --dpi).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_user_packets: Option<u32>,
}

/// What the data plane is to the traffic of its interface(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The machine's own interface: passive, copies, the stack keeps every packet.
    Host,
    /// A SPAN/TAP port: its frames are copies, read in place, nothing forwarded.
    Mirror,
    /// An IPS bridge between `--iface` and `--peer`.
    Inline,
}

impl Mode {
    /// How the startup line names it.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Host => {
                "host mode: passive, the host's stack gets every packet, workers get copies"
            }
            Mode::Mirror => "mirror mode: SPAN/TAP port, frames read in place, nothing forwarded",
            Mode::Inline => "inline mode: IPS bridge, frames inspected in place and forwarded",
        }
    }
}

impl RunArgs {
    /// The mode the flags ask for.
    pub fn mode(&self) -> Mode {
        if self.peer.is_some() {
            Mode::Inline
        } else if self.mirror {
            Mode::Mirror
        } else {
            Mode::Host
        }
    }

    /// `--on-failure`, or the mode's default (inline fails closed).
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure.unwrap_or(match self.mode() {
            Mode::Inline => OnFailure::Drop,
            Mode::Host | Mode::Mirror => OnFailure::Pass,
        })
    }

    /// Packets a flow may take in user space before the kernel carries it
    /// (without DPI); None: no limit.
    pub fn sniff_limit(&self) -> Option<u32> {
        match self.sniff_packets {
            SniffLimit::Packets(k) => Some(k),
            SniffLimit::Unlimited => None,
        }
    }

    /// The AF_XDP sockets' settings.
    pub fn xsk_config(&self) -> crate::xsk::XskConfig {
        crate::xsk::XskConfig {
            ring_size: self.ring_size,
            frame_size: self.frame_size,
            zero_copy: self.zero_copy,
            // Generic XDP cannot feed a zero-copy socket; when the mode is
            // auto we find out which one we get only at attach time, so
            // ask the driver up front.
            generic_xdp: self.xdp_mode == XdpModeArg::Generic,
            busy_poll: self.busy_poll,
            batch: self.batch,
        }
    }

    /// The idle timeouts.
    pub fn timeouts(&self) -> dpi::table::Timeouts {
        let secs = std::time::Duration::from_secs_f64;
        dpi::table::Timeouts {
            tcp: secs(self.timeout_tcp),
            tcp_closing: secs(self.timeout_tcp_closing),
            udp: secs(self.timeout_udp),
            other: secs(self.timeout_other),
        }
    }

    /// The rules and policy options as `inspect` takes them.
    pub fn engine(&self) -> EngineArgs {
        EngineArgs {
            rules: self.rules.clone(),
            vars: self.vars.clone(),
            lenient: self.lenient,
            policy: self.policy.clone(),
            max_user_packets: self.max_user_packets,
        }
    }
}

/// `--on-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFailure {
    /// Fail open: to the stack (monitor) or across the bridge.
    Pass,
    /// Fail closed.
    Drop,
}

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Native,
    Generic,
    Auto,
}

impl From<XdpModeArg> for xdp_redirect::AttachMode {
    fn from(mode: XdpModeArg) -> Self {
        match mode {
            XdpModeArg::Native => xdp_redirect::AttachMode::Native,
            XdpModeArg::Generic => xdp_redirect::AttachMode::Generic,
            XdpModeArg::Auto => xdp_redirect::AttachMode::Auto,
        }
    }
}

/// `--zero-copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ZeroCopyArg {
    Auto,
    Require,
    Off,
}

/// `--sniff-packets`: how many packets of a flow user space sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SniffLimit {
    Packets(u32),
    Unlimited,
}

impl FromStr for SniffLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(SniffLimit::Unlimited);
        }
        match s.parse::<u32>() {
            Ok(0) => Err("must be at least 1 (the first packet always reaches user space)".into()),
            Ok(k) => Ok(SniffLimit::Packets(k)),
            Err(_) => Err(format!("`{s}` is neither a packet count nor \"unlimited\"")),
        }
    }
}

impl std::fmt::Display for SniffLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SniffLimit::Packets(k) => write!(f, "{k}"),
            SniffLimit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A parsed `--cores` list, in queue order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

fn parse_core_list(s: &str) -> Result<CoreList, String> {
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |_| format!("`{part}` is not a core number or range like 2-5");
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (
                    lo.trim().parse().map_err(bad)?,
                    hi.trim().parse().map_err(bad)?,
                );
                if lo > hi {
                    return Err(format!("range `{part}` runs backwards"));
                }
                cores.extend(lo..=hi);
            }
            None => cores.push(part.parse().map_err(bad)?),
        }
    }
    if cores.is_empty() {
        return Err("empty core list".into());
    }
    Ok(CoreList(cores))
}

fn parse_power_of_two(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(64..=65536).contains(&n) || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two between 64 and 65536"));
    }
    Ok(n)
}

fn parse_frame_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ (2048 | 4096)) => Ok(n),
        _ => Err(format!(
            "`{s}`: the frame size must be 2048 or 4096 (an aligned UMEM needs a power of two, at least 2048, at most a page)"
        )),
    }
}

/// A timeout in seconds: positive, finite, at most a year.
fn parse_timeout(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 365.0 * 86_400.0) {
        return Err(format!(
            "`{text}`: a timeout must be more than 0 and at most a year (in seconds)"
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_and_ranges() {
        assert_eq!(
            parse_core_list("0,2-4, 7").unwrap(),
            CoreList(vec![0, 2, 3, 4, 7])
        );
        assert!(parse_core_list("4-2").is_err());
        assert!(parse_core_list("x").is_err());
        assert!(parse_core_list("").is_err());
    }

    #[test]
    fn sniff_limit_values() {
        assert_eq!("8".parse::<SniffLimit>().unwrap(), SniffLimit::Packets(8));
        assert_eq!(
            "Unlimited".parse::<SniffLimit>().unwrap(),
            SniffLimit::Unlimited
        );
        assert!("0".parse::<SniffLimit>().is_err());
        assert!("many".parse::<SniffLimit>().is_err());
    }

    #[test]
    fn cli_defaults_and_validation() {
        let cli = Cli::try_parse_from(["dataplane", "--iface", "eth1", "--queues", "4"]).unwrap();
        let run = cli.run.unwrap();
        assert_eq!(run.queues, Some(4));
        assert_eq!(
            run.mode(),
            Mode::Host,
            "host mode unless --mirror or --peer"
        );
        assert_eq!(run.on_failure(), OnFailure::Pass);
        assert_eq!(run.sniff_packets, SniffLimit::Packets(8));
        assert_eq!(run.xdp_mode, XdpModeArg::Auto);
        assert!(!run.dpi && run.rules.is_none());
        let cli = Cli::try_parse_from([
            "dataplane",
            "--iface",
            "eth1",
            "--rules",
            "r.rules",
            "--policy",
            "p.toml",
        ])
        .unwrap();
        assert!(cli.run.unwrap().engine().policy.is_some());
        let cli = Cli::try_parse_from(["dataplane", "--iface", "eth1", "--max-user-packets", "5"])
            .unwrap();
        let engine = cli.run.unwrap().engine().load().unwrap();
        assert_eq!(engine.policy.max_user_packets, Some(5));
        assert!(
            Cli::try_parse_from(["dataplane", "--iface", "eth1", "--max-user-packets", "0"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["dataplane", "--iface", "eth1", "--ring-size", "1000"]).is_err()
        );
        assert!(Cli::try_parse_from(["dataplane", "--iface", "eth1", "--queues", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["dataplane", "--iface", "eth1", "--frame-size", "3000"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["dataplane"]).is_err(),
            "--iface is required"
        );
    }

    #[test]
    fn modes_and_their_failure_defaults() {
        let run = |args: &[&str]| {
            let mut all = vec!["dataplane", "--iface", "eth1"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().run.unwrap()
        };
        let inline = run(&["--peer", "eth2"]);
        assert_eq!(inline.mode(), Mode::Inline);
        assert_eq!(inline.on_failure(), OnFailure::Drop, "an IPS fails closed");
        assert_eq!(
            run(&["--peer", "eth2", "--on-failure", "pass"]).on_failure(),
            OnFailure::Pass
        );
        let mirror = run(&["--mirror"]);
        assert_eq!(
            (mirror.mode(), mirror.on_failure()),
            (Mode::Mirror, OnFailure::Pass)
        );
        assert_eq!(run(&[]).queues, None, "default: every RX queue");
    }

    /// `dataplane --config PATH EXTRA...`.
    fn with_config(
        path: &std::path::Path,
        extra: &[&str],
    ) -> Result<Cli, crate::config::ConfigError> {
        let mut args = vec!["dataplane", "--config", path.to_str().unwrap()];
        args.extend(extra);
        Cli::from_args(args.into_iter().map(std::ffi::OsString::from))
    }

    fn parse(args: &[&str]) -> String {
        let cli = <Cli as clap::Parser>::parse_from(args);
        format!("{:?} {:?} {:?}", cli.run, cli.command, cli.log_format)
    }

    /// `sections` as a file read with `--config`, against the same as flags.
    fn round_trip(text: &str, flags: &[&str]) {
        let dir = std::env::temp_dir().join(format!(
            "dp-roundtrip-{}-{}",
            std::process::id(),
            flags.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dataplane.toml");
        std::fs::write(&path, text).unwrap();
        let from_file = with_config(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        let from_file = format!(
            "{:?} {:?} {:?}",
            from_file.run, from_file.command, from_file.log_format
        );
        let mut args = vec!["dataplane"];
        args.extend(flags);
        let expected = parse(&args).replace("/ROOT", dir.to_str().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(from_file, expected);
        // and not what the defaults give
        assert_ne!(from_file, parse(&["dataplane", "--iface", "eth9"]));
    }

    #[test]
    fn config_interface_and_workers_round_trip() {
        round_trip(
            "[interface]\niface = \"eth9\"\npeer = \"eth8\"\nxdp_mode = \"generic\"\nforce = true\n\
             [workers]\nqueues = 3\ncores = \"1-3\"\nbatch = 32\nbusy_poll = true\n\
             flow_table_size = 1000\ntrust_rss = true\nallow_unserved_queues = true\n",
            &[
                "--iface",
                "eth9",
                "--peer",
                "eth8",
                "--xdp-mode",
                "generic",
                "--force",
                "--queues",
                "3",
                "--cores",
                "1-3",
                "--batch",
                "32",
                "--busy-poll",
                "--flow-table-size",
                "1000",
                "--trust-rss",
                "--allow-unserved-queues",
            ],
        );
        round_trip(
            "[interface]\niface = \"eth9\"\nmirror = true\n",
            &["--iface", "eth9", "--mirror"],
        );
    }

    #[test]
    fn config_af_xdp_inspection_and_timeouts_round_trip() {
        round_trip(
            "[interface]\niface = \"eth9\"\n\
             [af_xdp]\nzero_copy = \"off\"\nring_size = 512\nframe_size = 2048\n\
             [inspection]\ndpi = true\nrules = \"a.rules\"\nvars = \"v.toml\"\nlenient = true\n\
             policy = \"p.toml\"\nmax_user_packets = 9\nsniff_packets = \"unlimited\"\n\
             [timeouts]\ntcp = 60\ntcp_closing = 5.5\nudp = 30\nother = 10\n",
            &[
                "--iface",
                "eth9",
                "--zero-copy",
                "off",
                "--ring-size",
                "512",
                "--frame-size",
                "2048",
                "--dpi",
                "--rules",
                "/ROOT/a.rules",
                "--vars",
                "/ROOT/v.toml",
                "--lenient",
                "--policy",
                "/ROOT/p.toml",
                "--max-user-packets",
                "9",
                "--sniff-packets",
                "unlimited",
                "--timeout-tcp",
                "60",
                "--timeout-tcp-closing",
                "5.5",
                "--timeout-udp",
                "30",
                "--timeout-other",
                "10",
            ],
        );
    }

    #[test]
    fn config_kernel_outputs_balancer_and_run_round_trip() {
        round_trip(
            "[interface]\niface = \"eth9\"\n\
             [kernel]\nverdict_map_size = 4096\npin = \"/sys/fs/bpf/dp\"\non_failure = \"drop\"\n\
             failure_grace_ms = 250\n\
             [outputs]\neve = \"eve.json\"\nflow_log = \"/var/log/f.jsonl\"\nipfix = \"198.18.0.9:4739\"\n\
             ipfix_active_timeout = 30\nstats_json = \"s.json\"\nstats_interval = 0.5\n\
             latency_hgrm = \"lat\"\nmetrics = \"127.0.0.1:9464\"\nno_control = true\nlog_format = \"json\"\n\
             [run]\nduration = 5\n",
            &[
                "--iface",
                "eth9",
                "--verdict-map-size",
                "4096",
                "--pin",
                "/sys/fs/bpf/dp",
                "--on-failure",
                "drop",
                "--failure-grace-ms",
                "250",
                "--eve",
                "/ROOT/eve.json",
                "--flow-log",
                "/var/log/f.jsonl",
                "--ipfix",
                "198.18.0.9:4739",
                "--ipfix-active-timeout",
                "30",
                "--stats-json",
                "/ROOT/s.json",
                "--stats-interval",
                "0.5",
                "--latency-hgrm",
                "/ROOT/lat",
                "--metrics",
                "127.0.0.1:9464",
                "--no-control",
                "--log-format",
                "json",
                "--duration",
                "5",
            ],
        );
        round_trip(
            "[interface]\niface = \"eth9\"\n[outputs]\ncontrol = \"/run/x.sock\"\n\
             [balancer]\nservices = \"lb.toml\"\n",
            &[
                "--iface",
                "eth9",
                "--control",
                "/run/x.sock",
                "--lb",
                "/ROOT/lb.toml",
            ],
        );
    }

    #[test]
    fn the_config_file_knows_every_flag_of_a_run() {
        let command = <Cli as clap::CommandFactory>::command();
        let known: Vec<&str> = crate::config::all_flags().iter().map(|(_, f)| *f).collect();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            if matches!(long, "help" | "version" | "config") {
                continue;
            }
            assert!(
                known.contains(&format!("--{long}").as_str()),
                "--{long} has no key in the configuration file"
            );
        }
    }

    #[test]
    fn flags_override_the_file_and_bad_values_name_file_line_and_key() {
        let dir = std::env::temp_dir().join(format!("dp-override-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dp.toml");
        std::fs::write(
            &path,
            "[interface]\niface = \"eth9\"\n[workers]\nqueues = 4\n",
        )
        .unwrap();
        let cli = with_config(&path, &["--queues", "2"]).unwrap();
        assert_eq!(cli.run.unwrap().queues, Some(2), "the flag wins");
        std::fs::write(
            &path,
            "[interface]\niface = \"eth9\"\n\n[workers]\nqueues = 0\n",
        )
        .unwrap();
        let e = with_config(&path, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:5: workers.queues: ", path.display())) && e.contains("'0'"),
            "{e}"
        );
        std::fs::write(&path, "[af_xdp]\nring_size = 1000\n").unwrap();
        let e = with_config(&path, &[]).unwrap_err().to_string();
        assert!(
            e.contains(":2: af_xdp.ring_size: ") && e.contains("power of two"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_shipped_example_is_a_valid_configuration() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/dataplane.toml");
        let cli = with_config(&example, &[]).unwrap_or_else(|e| panic!("{e}"));
        let run = cli.run.expect("a run");
        assert_eq!(run.iface, "eth1");
        assert!(run.rules.unwrap().ends_with("dist/rules/local.rules"));
        assert_eq!(cli.log_format, LogFormat::Json);
    }
}
