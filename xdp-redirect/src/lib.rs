//! `xdp-redirect`: the data plane's XDP program and its typed loader.
//!
//! Owns the one XDP program (C in `src/bpf/`, built by clang from `build.rs`
//! and embedded in this crate), the kernel/user ABI generated from
//! `src/bpf/dp_abi.h` ([`abi`]), and a loader over aya 0.14 that attaches the
//! program in an explicit mode (with a logged fallback), refuses to replace
//! somebody else's program unless told to, and hands out typed map handles.
//!
//! Contracts:
//! - The program contains no policy: a flow is acted on in the kernel only
//!   when user space has written a verdict for it ([`VerdictMap`]).
//! - Dropping an [`XdpRedirect`] detaches the program from the interface.
//! - Nothing here re-declares an ABI type by hand; all come from [`abi`].

pub mod abi;
mod attached;
pub mod baseline;
pub mod clock;
pub mod decap;
pub mod host;
pub mod iface;
pub mod lb;
pub mod pin;

use std::os::fd::{AsFd as _, AsRawFd};

use aya::{
    Ebpf, EbpfLoader,
    maps::{DevMap, HashMap, Map, MapData, MapError, PerCpuArray, XskMap},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use thiserror::Error;

pub use abi::{
    dp_flow_key as FlowKey, dp_flow_key4 as FlowKey4, dp_lb_meta as LbMeta, dp_verdict as Verdict,
    dp_xdp_meta as XdpMeta,
};
pub use attached::AttachedProgram;

/// The compiled XDP object, embedded at build time.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dp_xdp.o"));

/// Name of the program (the C function) in the object.
pub const PROGRAM_NAME: &str = abi::c_name(abi::DP_PROG_NAME);
/// Name of the host mode's TC egress program in the object.
pub const PROGRAM_EGRESS_NAME: &str = abi::c_name(abi::DP_PROG_EGRESS_NAME);
/// Name of the XSKMAP indexed by RX queue.
pub const MAP_XSKS: &str = abi::c_name(abi::DP_MAP_XSKS);
/// Name of the LRU flow verdict map of IPv6 flows.
pub const MAP_VERDICTS: &str = abi::c_name(abi::DP_MAP_VERDICTS);
/// Name of the LRU flow verdict map of IPv4 flows (16-byte keys).
pub const MAP_VERDICTS4: &str = abi::c_name(abi::DP_MAP_VERDICTS4);
/// Name of the per-CPU counter array.
pub const MAP_COUNTERS: &str = abi::c_name(abi::DP_MAP_COUNTERS);
/// Name of the bridge DEVMAP (ingress side -> egress interface).
pub const MAP_PEERS: &str = abi::c_name(abi::DP_MAP_PEERS);
/// Name of the mmapable worker heartbeat array.
pub const MAP_HEARTBEAT: &str = abi::c_name(abi::DP_MAP_HEARTBEAT);
/// Highest number of RX queues the program can redirect from.
pub const MAX_QUEUES: u32 = abi::dp_limits::DP_MAX_QUEUES;
/// Default capacity of each verdict map (IPv4 and IPv6).
pub const VERDICT_ENTRIES_DEFAULT: u32 = abi::dp_limits::DP_VERDICT_ENTRIES_DEFAULT;

/// Errors of the loader. Each names the interface or map involved.
#[derive(Debug, Error)]
pub enum Error {
    /// The kernel refused the object (verifier, missing BTF, no permission...).
    #[error(
        "loading the XDP program failed: {0} (are you root, or do you have CAP_BPF and CAP_NET_ADMIN?)"
    )]
    Load(#[from] Box<aya::EbpfError>),
    /// The embedded object lacks something this crate expects: a build bug.
    #[error("the embedded XDP object has no {kind} named `{name}` (build bug)")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    /// A program operation failed.
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("map `{map}`: {what}: {source}")]
    Map {
        map: &'static str,
        what: String,
        #[source]
        source: Box<MapError>,
    },
    /// No interface of that name in this network namespace.
    #[error("interface `{0}` not found in this network namespace (see `ip link show`)")]
    UnknownInterface(String),
    /// Somebody else's XDP program is on the interface.
    #[error(
        "interface `{iface}` already has an XDP program attached ({existing}); \
         stop whatever attached it, or pass --force to replace it"
    )]
    AlreadyAttached {
        iface: String,
        existing: AttachedProgram,
    },
    /// Native mode was required and the driver does not do it.
    #[error(
        "attaching XDP to `{iface}` in {mode} mode failed: {source} (driver `{driver}`); \
         try --xdp-mode generic (slower) or --xdp-mode auto"
    )]
    Attach {
        iface: String,
        mode: AttachMode,
        driver: String,
        #[source]
        source: Box<ProgramError>,
    },
    /// Querying or detaching an existing program failed.
    #[error("interface `{iface}`: {what}: {source}")]
    Netlink {
        iface: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The pin directory cannot be used.
    #[error("--pin {}: {what}: {source}", dir.display())]
    Pin {
        dir: std::path::PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A map syscall made through libbpf failed.
    #[error("map `{map}`: {what}: {source}")]
    Syscall {
        map: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Setting up the bridge ports failed.
    #[error("{what}: {source}")]
    Bridge {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An action code outside `enum dp_action`.
    #[error("unknown verdict action code {0}")]
    UnknownAction(u32),
}

/// How the program is attached, as asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) mode only.
    Native,
    /// Generic (skb) mode only: works everywhere, costs an skb per packet.
    Generic,
    /// Native, falling back to generic with a warning naming the driver.
    Auto,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Auto => "auto",
        })
    }
}

/// The mode the program actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl AttachedMode {
    /// The name tools read (`"native"` / `"generic"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }
}

/// What the kernel does with a decided flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Hand to the kernel stack in XDP, never to user space again.
    Pass,
    /// Drop in XDP.
    Drop,
    /// Bridge mode: send out of the other port in XDP.
    Forward,
}

impl Action {
    /// The ABI code of this action.
    pub fn code(self) -> u32 {
        match self {
            Action::Pass => abi::dp_action::DP_ACTION_PASS,
            Action::Drop => abi::dp_action::DP_ACTION_DROP,
            Action::Forward => abi::dp_action::DP_ACTION_FORWARD,
        }
    }

    /// The action for an ABI code; `None` for `DP_ACTION_NONE`.
    pub fn from_code(code: u32) -> Result<Option<Action>, Error> {
        match code {
            abi::dp_action::DP_ACTION_NONE => Ok(None),
            abi::dp_action::DP_ACTION_PASS => Ok(Some(Action::Pass)),
            abi::dp_action::DP_ACTION_DROP => Ok(Some(Action::Drop)),
            abi::dp_action::DP_ACTION_FORWARD => Ok(Some(Action::Forward)),
            other => Err(Error::UnknownAction(other)),
        }
    }

    /// Lower-case name (`"pass"`, `"drop"`, `"forward"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Forward => "forward",
        }
    }
}

/// What a kernel counter counts, which decides where it goes in the
/// metrics: every packet the program sees is counted once in `rx` and once
/// in exactly one outcome (likewise `egress` and the egress outcomes); the
/// rest count events beside that (not packets' fates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Every packet received (`rx`).
    Total,
    /// One fate of a received packet: the outcomes sum to `rx`.
    Outcome,
    /// Every packet the host sent (`egress`, host mode).
    EgressTotal,
    /// One fate of a sent packet: these sum to `egress`.
    EgressOutcome,
    /// Something else the program counts (not part of the sums).
    Extra,
}

/// Declares [`Counters`] from one list: each field, the `enum dp_counter`
/// index it is read from, its kind and its doc. The struct (and so the
/// stats document, which serialises it), `from_array`, `since`, the sums
/// of outcomes and the metrics rows ([`Counters::rows`]) all follow from
/// this one list.
macro_rules! kernel_counters {
    ($($(#[doc = $doc:literal])* $field:ident = $index:ident: $kind:ident,)*) => {
        /// Kernel-side counters, summed over CPUs. See `enum dp_counter`.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl Counters {
            fn from_array(values: &[u64; abi::dp_counter::DP_CNT_MAX as usize]) -> Self {
                Counters {
                    $($field: values[abi::dp_counter::$index as usize],)*
                }
            }

            /// Counter-wise difference `self - earlier` (saturating).
            pub fn since(&self, earlier: &Counters) -> Counters {
                Counters {
                    $($field: self.$field.saturating_sub(earlier.$field),)*
                }
            }

            /// Every counter: (name, kind, first line of its doc, value).
            pub fn rows(&self) -> Vec<(&'static str, CounterKind, &'static str, u64)> {
                vec![$((
                    stringify!($field),
                    CounterKind::$kind,
                    first_doc_line(&[$($doc),*]),
                    self.$field,
                ),)*]
            }
        }
    };
}

/// The first line of a doc comment (empty if none), trimmed.
fn first_doc_line(lines: &[&'static str]) -> &'static str {
    lines.first().map_or("", |l| l.trim())
}

kernel_counters! {
    /// Every packet the XDP program saw.
    rx = DP_CNT_RX: Total,
    /// Redirected to the AF_XDP socket of its queue; host mode: passed to
    /// the stack and copied to the flow's worker.
    to_user = DP_CNT_TO_USER: Outcome,
    /// Undecided, but no socket on its queue: the failure action.
    no_socket = DP_CNT_NO_SOCKET: Outcome,
    /// Decided pass: handed to the stack in the kernel.
    bypass_pass = DP_CNT_BYPASS_PASS: Outcome,
    /// Decided drop: dropped in the kernel.
    bypass_drop = DP_CNT_BYPASS_DROP: Outcome,
    /// Truncated or malformed headers: the stack's (or, inline, user space's) to judge.
    parse_errors = DP_CNT_PARSE_ERRORS: Outcome,
    /// Not IPv4 or IPv6 (ARP, LLDP...), or three VLAN tags or more.
    non_ip = DP_CNT_NON_IP: Outcome,
    /// IP fragments: passed to the stack to reassemble (inline: to user space).
    fragments = DP_CNT_FRAGMENTS: Outcome,
    /// ICMPv6 neighbour discovery and MLD: passed, like ARP.
    link_control = DP_CNT_LINK_CONTROL: Outcome,
    /// Decided forward (inline): sent to the peer port in the kernel.
    bypass_forward = DP_CNT_BYPASS_FORWARD: Outcome,
    /// Bridge mode: unparsed frames (already counted by their reason) sent to the peer port.
    bridged = DP_CNT_BRIDGED: Extra,
    /// Undecided, but the queue's worker missed its heartbeat: the failure action.
    failover = DP_CNT_FAILOVER: Outcome,
    /// Load balancer: service packets sent to their backend.
    lb_forwarded = DP_CNT_LB_FORWARDED: Outcome,
    /// Load balancer, nat mode: replies rewritten to come from the VIP.
    lb_replies = DP_CNT_LB_REPLIES: Outcome,
    /// Load balancer: service packets handed to the stack untouched (IP
    /// options, VLAN tag, no route to the backend).
    lb_passed = DP_CNT_LB_PASSED: Outcome,
    /// Load balancer: service packets dropped because no backend has weight.
    lb_no_backend = DP_CNT_LB_NO_BACKEND: Outcome,
    /// Load balancer: packets not for a service, handed to the stack.
    lb_other = DP_CNT_LB_OTHER: Outcome,
    /// Load balancer: packets of known connections (not an outcome).
    lb_conn_hits = DP_CNT_LB_CONN_HITS: Extra,
    /// Load balancer: new connections (not an outcome).
    lb_conn_misses = DP_CNT_LB_CONN_MISSES: Extra,
    /// Load balancer: TCP packets without SYN that found no connection entry.
    lb_conn_lost = DP_CNT_LB_CONN_LOST: Extra,
    /// Load balancer: of `lb_passed`, no route or neighbour to the backend.
    lb_no_route = DP_CNT_LB_NO_ROUTE: Extra,
    /// Host mode: undecided, passed to the stack without a copy (the
    /// worker's ring was full).
    copy_lost = DP_CNT_COPY_LOST: Outcome,
    /// Host mode: packets the host sent (TC egress); not part of `rx`.
    egress = DP_CNT_EGRESS: EgressTotal,
    /// Host mode, egress: undecided, sent and copied to the flow's worker.
    egress_to_user = DP_CNT_EGRESS_TO_USER: EgressOutcome,
    /// Host mode, egress: undecided, sent without a copy (ring full).
    egress_copy_lost = DP_CNT_EGRESS_COPY_LOST: EgressOutcome,
    /// Host mode, egress: decided allow, sent.
    egress_bypass_pass = DP_CNT_EGRESS_BYPASS_PASS: EgressOutcome,
    /// Host mode, egress: decided drop, dropped.
    egress_bypass_drop = DP_CNT_EGRESS_BYPASS_DROP: EgressOutcome,
    /// Host mode, egress: not parsed (not IP, fragments, ...), sent.
    egress_other = DP_CNT_EGRESS_OTHER: EgressOutcome,
    /// Bridge mode: frames the program could not key (deep VLAN stacks or
    /// IPv6 chains, malformed IP), sent to user space instead of bridged
    /// uninspected (not an outcome).
    unparsed_to_user = DP_CNT_UNPARSED_TO_USER: Extra,
    /// Load balancer, a service with inspection: undecided packets whose
    /// backend is reached through another interface than the one they came
    /// in on (the AF_XDP socket sends only there): dropped.
    lb_inspect_egress = DP_CNT_LB_INSPECT_EGRESS: Outcome,
}

impl Counters {
    /// Sum of the outcome counters; equals `rx` (every packet has exactly one outcome).
    pub fn outcomes(&self) -> u64 {
        self.sum_of(CounterKind::Outcome)
    }

    /// Sum of the egress outcome counters; equals `egress`.
    pub fn egress_outcomes(&self) -> u64 {
        self.sum_of(CounterKind::EgressOutcome)
    }

    fn sum_of(&self, kind: CounterKind) -> u64 {
        self.rows()
            .iter()
            .filter(|(_, k, _, _)| *k == kind)
            .map(|(_, _, _, v)| v)
            .sum()
    }
}

/// Load-time options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Capacity of each verdict map, IPv4 and IPv6 (LRU: the least recently
    /// used flow is evicted when full, and goes back to user space if it
    /// returns).
    pub verdict_entries: u32,
    /// Put `struct dp_xdp_meta` (receive time) in front of frames sent to user space.
    pub stamp_meta: bool,
    /// Bridge mode between two interfaces (attach the program to both).
    pub bridge: Option<BridgePorts>,
    /// Pin (or reuse) the verdict and counter maps, and the links, in this
    /// bpffs directory, so they outlive the process (see [`pin`]).
    pub pin_dir: Option<std::path::PathBuf>,
    /// What happens to undecided flows when user space cannot take them.
    pub failure: FailurePolicy,
    /// Load balancer mode: service packets are balanced in the kernel,
    /// everything else goes to the stack (see `dp_lb.h`).
    pub lb: Option<lb::LbOptions>,
    /// Host mode with this many worker rings: undecided packets go to the
    /// stack and a copy to the flow's ring (see [`host`]), never to an
    /// AF_XDP socket.
    pub host: Option<u32>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            verdict_entries: VERDICT_ENTRIES_DEFAULT,
            stamp_meta: true,
            bridge: None,
            pin_dir: None,
            failure: FailurePolicy::default(),
            lb: None,
            host: None,
        }
    }
}

/// Fail-open or fail-closed: what undecided flows get when their queue has
/// no socket (no process) or its worker stopped beating for `grace`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailurePolicy {
    /// None: heartbeats are not checked.
    pub grace: Option<std::time::Duration>,
    /// Drop (fail closed) instead of passing on (fail open).
    pub drop: bool,
}

/// The two ports of an inline bridge, by interface index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgePorts {
    /// The `--iface` interface (side 0).
    pub primary: u32,
    /// The `--peer` interface (side 1).
    pub peer: u32,
}

/// Which port a socket serves (its XSKMAP slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    /// The `--iface` interface.
    Primary,
    /// The bridge peer.
    Peer,
}

impl Port {
    /// XSKMAP slot of this port's socket on `queue` (see `DP_MAX_PORTS`).
    pub fn xsk_slot(self, queue: u32) -> u32 {
        match self {
            Port::Primary => queue,
            Port::Peer => MAX_QUEUES + queue,
        }
    }
}

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Copy, Debug)]
pub struct TestRunOutcome {
    /// The XDP action returned (`XDP_PASS` = 2, `XDP_DROP` = 1, `XDP_REDIRECT` = 4...).
    pub action: u32,
    /// Average time per repetition as measured by the kernel.
    pub duration: std::time::Duration,
}

/// XDP action codes (`enum xdp_action` in linux/bpf.h).
pub mod xdp_action {
    pub const ABORTED: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const TX: u32 = 3;
    pub const REDIRECT: u32 = 4;
}

/// The XDP program attached to `iface`, if any (ours or anybody's).
pub fn attached_program(iface: &str) -> Result<Option<AttachedProgram>, Error> {
    attached::query(iface, iface::index(iface)?)
}

/// The loaded program, its maps, and (once attached) its link.
#[derive(Debug)]
pub struct XdpRedirect {
    ebpf: Ebpf,
    /// Every interface the program is attached to (two in bridge mode).
    attached: Vec<(String, XdpLinkId, AttachedMode)>,
    /// With pinning, links are pinned here and left attached at exit.
    pin_dir: Option<std::path::PathBuf>,
    /// Host mode: the TC egress program's links (TCX: they go with this
    /// process, never pinned).
    egress: Vec<(String, SchedClassifierLinkId)>,
}

impl XdpRedirect {
    /// Loads (verifies) the embedded program. Nothing is attached yet.
    pub fn load(options: &LoadOptions) -> Result<Self, Error> {
        let stamp: u32 = options.stamp_meta.into();
        let bridge: u32 = options.bridge.is_some().into();
        let side1: u32 = options.bridge.map_or(0, |ports| ports.peer);
        let grace: u64 = options
            .failure
            .grace
            .map_or(0, |g| g.as_nanos().clamp(1, u128::from(u64::MAX)) as u64);
        let fail_drop: u32 = options.failure.drop.into();
        let host_on: u32 = options.host.is_some().into();
        let host_rings: u32 = options.host.unwrap_or(1).clamp(1, MAX_QUEUES);
        let lb_on: u32 = options.lb.is_some().into();
        let lb_nat: u32 = options.lb.is_some_and(|l| l.nat).into();
        let mut lb_gateway = [0u8; 8];
        if let Some(mac) = options.lb.and_then(|l| l.gateway) {
            lb_gateway[..6].copy_from_slice(&mac);
            lb_gateway[6] = 1;
        }
        let pins = match &options.pin_dir {
            Some(dir) => {
                pin::ensure_bpffs(dir)?;
                Some((
                    dir.join(MAP_VERDICTS4),
                    dir.join(MAP_VERDICTS),
                    dir.join(MAP_COUNTERS),
                ))
            }
            None => None,
        };
        // pins of a version whose verdicts counted both directions in one
        // number: read, unpinned, and written back below into new maps
        let v1_verdicts = match &pins {
            Some((verdicts4, verdicts, _)) => pin::take_v1_verdicts(verdicts4, verdicts)?,
            None => Vec::new(),
        };
        // pins of a version that kept IPv4 flows in `verdicts` too: that
        // map is there, `verdicts4` is not (yet)
        let older_layout = pins
            .as_ref()
            .is_some_and(|(verdicts4, verdicts, _)| verdicts.exists() && !verdicts4.exists());
        // counters pinned by a version with fewer of them: the program would
        // count into missing slots; they start over (logged)
        if let Some((_, _, counters)) = &pins
            && let Ok(pinned) = MapData::from_pin(counters)
            && pinned
                .info()
                .is_ok_and(|info| info.max_entries() != abi::dp_counter::DP_CNT_MAX)
        {
            std::fs::remove_file(counters).map_err(|source| Error::Pin {
                dir: counters.clone(),
                what: "replace the pinned counters of an older layout".into(),
                source,
            })?;
            tracing::info!(pin = %counters.display(), "pinned counters of an older layout: they start over");
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_VERDICTS4, options.verdict_entries)
            .map_max_entries(MAP_VERDICTS, options.verdict_entries)
            .override_global(abi::c_name(abi::DP_GLOBAL_STAMP_META), &stamp, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_BRIDGE), &bridge, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_SIDE1_IFINDEX), &side1, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_FAILURE_GRACE), &grace, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_FAILURE_DROP), &fail_drop, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_HOST), &host_on, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_HOST_RINGS), &host_rings, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_LB), &lb_on, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_LB_NAT), &lb_nat, true)
            .override_global(abi::c_name(abi::DP_GLOBAL_LB_GATEWAY), &lb_gateway, true);
        if let Some((verdicts4, verdicts, counters)) = &pins {
            loader
                .map_pin_path(MAP_VERDICTS4, verdicts4.as_path())
                .map_pin_path(MAP_VERDICTS, verdicts.as_path())
                .map_pin_path(MAP_COUNTERS, counters.as_path());
        }
        let mut ebpf = loader.load(PROGRAM_OBJECT).map_err(Box::new)?;
        let program = program_mut(&mut ebpf)?;
        program.load().map_err(|source| Error::Program {
            what: "verifying the XDP program".into(),
            source: Box::new(source),
        })?;
        if let Some(ports) = options.bridge {
            let map = ebpf.map_mut(MAP_PEERS).ok_or(Error::Missing {
                kind: "map",
                name: MAP_PEERS,
            })?;
            let mut peers =
                DevMap::try_from(map).map_err(|source| map_error(MAP_PEERS, "open", source))?;
            // side 0 (primary) sends to the peer, side 1 (peer) to the primary
            for (side, target) in [(0, ports.peer), (1, ports.primary)] {
                peers
                    .set(side, target, None, 0)
                    .map_err(|source| Error::Bridge {
                        what: format!(
                            "map `{MAP_PEERS}`: set interface {target} as egress of side {side}"
                        ),
                        source: Box::new(source),
                    })?;
            }
        }
        let loaded = XdpRedirect {
            ebpf,
            attached: Vec::new(),
            pin_dir: options.pin_dir.clone(),
            egress: Vec::new(),
        };
        if !v1_verdicts.is_empty() {
            let mut map = loaded.verdict_map()?;
            for (key, old) in &v1_verdicts {
                // which direction the packets went is not known: they are
                // counted as endpoint A's
                let value = Verdict {
                    action: old.action,
                    flags: old.flags,
                    packets: [old.packets, 0],
                    bytes: [old.bytes, 0],
                    last_seen_ns: old.last_seen_ns,
                };
                map.restore(key, value)?;
            }
            tracing::info!(
                entries = v1_verdicts.len(),
                "pinned verdicts of an older layout (one count for both directions) carried into new maps"
            );
        }
        if older_layout {
            let moved = loaded.verdict_map()?.move_ipv4_out_of_long_map()?;
            if moved > 0 {
                tracing::info!(
                    moved,
                    "pinned IPv4 verdicts moved from `{MAP_VERDICTS}` to `{MAP_VERDICTS4}`"
                );
            }
        }
        Ok(loaded)
    }

    /// Attaches to `iface` (call once per port in bridge mode). Refuses if
    /// another XDP program is attached there, unless `force`, in which case
    /// that program is detached first.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        force: bool,
    ) -> Result<AttachedMode, Error> {
        let ifindex = iface::index(iface)?;
        let link_pin = self.pin_dir.as_ref().map(|dir| pin::link_path(dir, iface));
        if let Some(path) = link_pin.as_ref().filter(|p| p.exists()) {
            return self.replace_pinned(iface, ifindex, path);
        }
        if let Some(existing) = attached::query(iface, ifindex)? {
            if !force {
                return Err(Error::AlreadyAttached {
                    iface: iface.to_string(),
                    existing,
                });
            }
            tracing::warn!(iface, %existing, "--force: detaching the XDP program already attached");
            attached::detach(iface, ifindex, &existing)?;
        }
        let driver = iface::driver(iface).unwrap_or_else(|_| "unknown".to_string());
        let program = program_mut(&mut self.ebpf)?;
        let (link, got) = match mode {
            AttachMode::Native => (
                attach_in(program, iface, &driver, AttachMode::Native)?,
                AttachedMode::Native,
            ),
            AttachMode::Generic => (
                attach_in(program, iface, &driver, AttachMode::Generic)?,
                AttachedMode::Generic,
            ),
            AttachMode::Auto => match attach_in(program, iface, &driver, AttachMode::Native) {
                Ok(link) => (link, AttachedMode::Native),
                Err(native_error) => {
                    tracing::warn!(
                        iface, driver, error = %native_error,
                        "driver does not support native XDP; falling back to generic (skb) mode, \
                         which is much slower and reports wrong RX queue indexes on some drivers"
                    );
                    (
                        attach_in(program, iface, &driver, AttachMode::Generic)?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        let link = match &link_pin {
            Some(path) => self.pin_link(iface, link, path)?,
            None => link,
        };
        self.attached.push((iface.to_string(), link, got));
        tracing::info!(iface, mode = got.as_str(), driver, "XDP program attached");
        Ok(got)
    }

    /// Pins a fresh link so that it outlives the process.
    fn pin_link(
        &mut self,
        iface: &str,
        link: XdpLinkId,
        path: &std::path::Path,
    ) -> Result<XdpLinkId, Error> {
        let program = program_mut(&mut self.ebpf)?;
        let owned = program.take_link(link).map_err(|source| Error::Program {
            what: format!("take the link of `{iface}` to pin it"),
            source: Box::new(source),
        })?;
        let fd_link: aya::programs::links::FdLink =
            owned.try_into().map_err(|source| Error::Bridge {
                what: format!(
                    "`{iface}`: the kernel attached XDP without a bpf_link, which cannot be pinned"
                ),
                source: Box::new(source),
            })?;
        let pinned = fd_link.pin(path).map_err(|source| Error::Bridge {
            what: format!("pin the link of `{iface}` at {}", path.display()),
            source: Box::new(source),
        })?;
        // Hand the link back to the program (re-attaching the same program:
        // a no-op update); the pin keeps it alive when the program and this
        // process go away.
        hold_pinned_link(program, pinned, iface, path)
    }

    /// Replaces the program behind a pinned link with this one, atomically
    /// (`bpf_link_update`): the interface never runs without a program.
    fn replace_pinned(
        &mut self,
        iface: &str,
        ifindex: u32,
        path: &std::path::Path,
    ) -> Result<AttachedMode, Error> {
        let mode = match attached::query(iface, ifindex)?.map(|p| p.mode) {
            Some("generic") => AttachedMode::Generic,
            _ => AttachedMode::Native,
        };
        let pinned =
            aya::programs::links::PinnedLink::from_pin(path).map_err(|source| Error::Bridge {
                what: format!("open the pinned link {}", path.display()),
                source: Box::new(source),
            })?;
        let link = hold_pinned_link(program_mut(&mut self.ebpf)?, pinned, iface, path)?;
        self.attached.push((iface.to_string(), link, mode));
        tracing::info!(iface, pin = %path.display(), "XDP program replaced atomically behind the pinned link");
        Ok(mode)
    }

    /// Host mode: runs `dp_tc_egress` on what `iface` sends (TCX), so the
    /// workers see both directions of the host's flows. The link goes with
    /// this process (a crash leaves no egress program behind).
    pub fn attach_egress(&mut self, iface: &str) -> Result<(), Error> {
        let program = egress_program(&mut self.ebpf)?;
        if program.fd().is_err() {
            program.load().map_err(|source| Error::Program {
                what: "verifying the TC egress program".into(),
                source: Box::new(source),
            })?;
        }
        let link = program
            .attach(iface, TcAttachType::Egress)
            .map_err(|source| Error::Program {
                what: format!("attach the TC egress program to `{iface}`"),
                source: Box::new(source),
            })?;
        self.egress.push((iface.to_string(), link));
        tracing::info!(
            iface,
            "TC egress program attached (host mode: what the host sends is seen too)"
        );
        Ok(())
    }

    /// Host mode: makes one ring buffer per worker and puts them where the
    /// programs find them (load with [`LoadOptions::host`] set to `count`).
    pub fn host_rings(&self, count: u32) -> Result<Vec<host::HostRing>, Error> {
        host::make_rings(&self.ebpf, count)
    }

    /// Detaches from every interface (also done on drop). With pinning, the
    /// program stays attached through its pinned links; remove the pin
    /// directory's `link-*` files to detach it for good. The egress program
    /// (host mode) is always detached.
    pub fn detach(&mut self) -> Result<(), Error> {
        while let Some((iface, link)) = self.egress.pop() {
            egress_program(&mut self.ebpf)?
                .detach(link)
                .map_err(|source| Error::Program {
                    what: format!("detaching the TC egress program from `{iface}`"),
                    source: Box::new(source),
                })?;
            tracing::info!(iface, "TC egress program detached");
        }
        if let Some(dir) = &self.pin_dir {
            for (iface, _, _) in self.attached.drain(..) {
                tracing::info!(iface, pin = %dir.display(), "XDP program left attached (pinned); the next start takes over");
            }
            return Ok(());
        }
        while let Some((iface, link, _)) = self.attached.pop() {
            program_mut(&mut self.ebpf)?
                .detach(link)
                .map_err(|source| Error::Program {
                    what: format!("detaching from `{iface}`"),
                    source: Box::new(source),
                })?;
            tracing::info!(iface, "XDP program detached");
        }
        Ok(())
    }

    /// Puts an AF_XDP socket in the XSKMAP slot of `port`'s `queue`.
    pub fn register_socket(
        &mut self,
        port: Port,
        queue: u32,
        socket: impl AsRawFd,
    ) -> Result<(), Error> {
        let map = self.ebpf.map_mut(MAP_XSKS).ok_or(Error::Missing {
            kind: "map",
            name: MAP_XSKS,
        })?;
        let mut xsks =
            XskMap::try_from(map).map_err(|source| map_error(MAP_XSKS, "open", source))?;
        xsks.set(port.xsk_slot(queue), socket, 0).map_err(|source| {
            map_error(
                MAP_XSKS,
                &format!("register the socket of queue {queue}"),
                source,
            )
        })
    }

    /// A handle on the verdict maps that a worker thread can own.
    pub fn verdict_map(&self) -> Result<VerdictMap, Error> {
        VerdictMap::new(
            owned_map(&self.ebpf, MAP_VERDICTS4)?,
            owned_map(&self.ebpf, MAP_VERDICTS)?,
        )
    }

    /// The heartbeat array, mapped into this process: workers write it
    /// without syscalls, the program reads it.
    pub fn heartbeat(&self) -> Result<pin::Heartbeat, Error> {
        let map = self.ebpf.map(MAP_HEARTBEAT).ok_or(Error::Missing {
            kind: "map",
            name: MAP_HEARTBEAT,
        })?;
        let data = match map {
            Map::Array(data) => data,
            _ => {
                return Err(Error::Missing {
                    kind: "array map",
                    name: MAP_HEARTBEAT,
                });
            }
        };
        pin::Heartbeat::map(data.fd().as_fd(), MAX_QUEUES as usize)
    }

    /// Handles on the load balancer's maps (load with [`LoadOptions::lb`]).
    pub fn lb_maps(&self) -> Result<lb::LbMaps, Error> {
        lb::LbMaps::open(&self.ebpf)
    }

    /// Reads the kernel counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let map = self.ebpf.map(MAP_COUNTERS).ok_or(Error::Missing {
            kind: "map",
            name: MAP_COUNTERS,
        })?;
        Ok(Counters::from_array(&percpu_sums(map, MAP_COUNTERS)?))
    }

    /// Runs the program once per repetition on `frame` with `BPF_PROG_TEST_RUN`
    /// (no interface needed). Map side effects are real.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, Error> {
        run_test(program_named(&self.ebpf, PROGRAM_NAME)?, frame, repeat).map(|(o, _)| o)
    }

    /// One `BPF_PROG_TEST_RUN` on `frame`, with the frame as the program left it.
    pub fn test_run_frame(&self, frame: &[u8]) -> Result<(TestRunOutcome, Vec<u8>), Error> {
        run_test(program_named(&self.ebpf, PROGRAM_NAME)?, frame, 1)
    }
}

/// The XDP program `name` of a loaded object.
pub(crate) fn program_named<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, Error> {
    ebpf.program(name)
        .ok_or(Error::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| Error::Program {
            what: format!("open program `{name}`"),
            source: Box::new(source),
        })
}

/// The XDP program `name` of a loaded object, mutably (load, attach).
pub(crate) fn program_named_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Xdp, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| Error::Program {
            what: format!("open program `{name}`"),
            source: Box::new(source),
        })
}

/// The host mode's TC egress program of a loaded object.
fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(PROGRAM_EGRESS_NAME)
        .ok_or(Error::Missing {
            kind: "program",
            name: PROGRAM_EGRESS_NAME,
        })?
        .try_into()
        .map_err(|source| Error::Program {
            what: format!("open program `{PROGRAM_EGRESS_NAME}`"),
            source: Box::new(source),
        })
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    program_named_mut(ebpf, PROGRAM_NAME)
}

/// `BPF_PROG_TEST_RUN` of `program` on `frame`, `repeat` times; the outcome
/// and the frame as the (last) run left it.
pub(crate) fn run_test(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
) -> Result<(TestRunOutcome, Vec<u8>), Error> {
    // The kernel wants room for the program to grow the packet; give it the
    // same size back as output so a rewrite would be visible.
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: repeat.max(1),
            ..TestRunOptions::default()
        })
        .map_err(|source| Error::Program {
            what: "BPF_PROG_TEST_RUN".into(),
            source: Box::new(source),
        })?;
    out.truncate(result.data_size_out as usize);
    Ok((
        TestRunOutcome {
            action: result.return_value,
            duration: result.duration,
        },
        out,
    ))
}

pub(crate) fn attach_in(
    program: &mut Xdp,
    iface: &str,
    driver: &str,
    mode: AttachMode,
) -> Result<XdpLinkId, Error> {
    let xdp_mode = match mode {
        AttachMode::Native | AttachMode::Auto => XdpMode::Driver,
        AttachMode::Generic => XdpMode::Skb,
    };
    program
        .attach(iface, xdp_mode)
        .map_err(|source| match source {
            ProgramError::UnknownInterface { name } => Error::UnknownInterface(name),
            source => Error::Attach {
                iface: iface.to_string(),
                mode,
                driver: driver.to_string(),
                source: Box::new(source),
            },
        })
}

/// Puts `program` behind a pinned link (`bpf_link_update`, atomic) and
/// gives the program the link to hold.
fn hold_pinned_link(
    program: &mut Xdp,
    pinned: aya::programs::links::PinnedLink,
    iface: &str,
    path: &std::path::Path,
) -> Result<XdpLinkId, Error> {
    let fd_link: aya::programs::links::FdLink = pinned.into();
    let xdp_link =
        aya::programs::xdp::XdpLink::try_from(fd_link).map_err(|source| Error::Bridge {
            what: format!("{} is not an XDP link", path.display()),
            source: Box::new(source),
        })?;
    program
        .attach_to_link(xdp_link)
        .map_err(|source| Error::Program {
            what: format!("put the program behind the pinned link of `{iface}`"),
            source: Box::new(source),
        })
}

/// Every slot of a per-CPU `u64` array map, summed over CPUs.
pub(crate) fn percpu_sums<const N: usize>(
    map: &Map,
    name: &'static str,
) -> Result<[u64; N], Error> {
    let array: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(|source| map_error(name, "open", source))?;
    let mut sums = [0u64; N];
    for (index, sum) in sums.iter_mut().enumerate() {
        *sum = array
            .get(&(index as u32), 0)
            .map_err(|source| map_error(name, &format!("read slot {index}"), source))?
            .iter()
            .sum();
    }
    Ok(sums)
}

/// Map `name` of a loaded object on a duplicated fd, so the handle can be
/// owned (by a worker thread, by the balancer) apart from the object.
pub(crate) fn owned_map(ebpf: &Ebpf, name: &'static str) -> Result<MapData, Error> {
    let map = ebpf.map(name).ok_or(Error::Missing { kind: "map", name })?;
    let data = match map {
        Map::HashMap(d) | Map::LruHashMap(d) | Map::Array(d) | Map::PerCpuArray(d) => d,
        _ => {
            return Err(Error::Missing {
                kind: "hash or array map",
                name,
            });
        }
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| map_error(name, "duplicate the map fd", MapError::from(e)))?;
    MapData::from_fd(fd).map_err(|source| map_error(name, "open", source))
}

pub(crate) fn map_error(map: &'static str, what: &str, source: MapError) -> Error {
    Error::Map {
        map,
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// A worker's handle on the kernel verdict maps (owned, duplicated fds, so
/// each thread has its own and none takes a lock). IPv4 flows live in
/// `verdicts4` under a [`FlowKey4`], IPv6 flows in `verdicts`; callers
/// speak [`FlowKey`] for both and never see the split.
#[derive(Debug)]
pub struct VerdictMap {
    v4: HashMap<MapData, FlowKey4, Verdict>,
    v6: HashMap<MapData, FlowKey, Verdict>,
}

/// A new entry for `action`, counters at zero.
fn fresh_verdict(action: Action) -> Verdict {
    Verdict {
        action: action.code(),
        ..Verdict::default()
    }
}

impl VerdictMap {
    /// Opens the IPv4 and IPv6 verdict maps behind `v4` and `v6`.
    pub fn new(v4: MapData, v6: MapData) -> Result<Self, Error> {
        Ok(Self {
            v4: HashMap::try_from(Map::LruHashMap(v4))
                .map_err(|source| map_error(MAP_VERDICTS4, "open", source))?,
            v6: HashMap::try_from(Map::LruHashMap(v6))
                .map_err(|source| map_error(MAP_VERDICTS, "open", source))?,
        })
    }

    /// Writes (or overwrites) the verdict of a flow; its kernel counters restart at zero.
    pub fn set(&mut self, key: &FlowKey, action: Action) -> Result<(), Error> {
        let value = fresh_verdict(action);
        match key.to_v4() {
            Some(key4) => self
                .v4
                .insert(key4, value, 0)
                .map_err(|source| map_error(MAP_VERDICTS4, "write a verdict", source)),
            None => self
                .v6
                .insert(key, value, 0)
                .map_err(|source| map_error(MAP_VERDICTS, "write a verdict", source)),
        }
    }

    /// Writes a verdict unless the flow already has one (`BPF_NOEXIST`);
    /// returns whether it was written. Lets "drop" win over "allow" when two
    /// workers see the two directions of one flow.
    pub fn set_if_absent(&mut self, key: &FlowKey, action: Action) -> Result<bool, Error> {
        const BPF_NOEXIST: u64 = 1;
        let value = fresh_verdict(action);
        let (name, result) = match key.to_v4() {
            Some(key4) => (MAP_VERDICTS4, self.v4.insert(key4, value, BPF_NOEXIST)),
            None => (MAP_VERDICTS, self.v6.insert(key, value, BPF_NOEXIST)),
        };
        match result {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(source) => Err(map_error(name, "write a verdict", source)),
        }
    }

    /// Writes (overwrites) one `action` for many flows with one
    /// `BPF_MAP_UPDATE_BATCH` per map that has any; returns how many were
    /// written. The kernel's batch update takes no per-element
    /// `BPF_NOEXIST`, so "only if absent" writes go through
    /// [`VerdictMap::set_if_absent`].
    pub fn set_batch(&mut self, keys: &[FlowKey], action: Action) -> Result<usize, Error> {
        use aya::maps::IterableMap as _;
        let value = fresh_verdict(action);
        let (mut keys4, mut keys6) = (Vec::new(), Vec::new());
        for key in keys {
            match key.to_v4() {
                Some(key4) => keys4.push(key4),
                None => keys6.push(*key),
            }
        }
        Ok(update_batch(self.v4.map(), MAP_VERDICTS4, &keys4, value)?
            + update_batch(self.v6.map(), MAP_VERDICTS, &keys6, value)?)
    }

    /// The kernel's entry for a flow, if any.
    pub fn get(&self, key: &FlowKey) -> Result<Option<Verdict>, Error> {
        let (name, result) = match key.to_v4() {
            Some(key4) => (MAP_VERDICTS4, self.v4.get(&key4, 0)),
            None => (MAP_VERDICTS, self.v6.get(key, 0)),
        };
        match result {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_error(name, "read a verdict", source)),
        }
    }

    /// Removes a flow's verdict (the flow goes back to user space).
    pub fn remove(&mut self, key: &FlowKey) -> Result<(), Error> {
        let (name, result) = match key.to_v4() {
            Some(key4) => (MAP_VERDICTS4, self.v4.remove(&key4)),
            None => (MAP_VERDICTS, self.v6.remove(key)),
        };
        match result {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_error(name, "remove a verdict", source)),
        }
    }

    /// Writes `value` as it is (counters included) under `key`, into the
    /// map of its address family.
    pub fn restore(&mut self, key: &FlowKey, value: Verdict) -> Result<(), Error> {
        match key.to_v4() {
            Some(key4) => self
                .v4
                .insert(key4, value, 0)
                .map_err(|source| map_error(MAP_VERDICTS4, "restore a verdict", source)),
            None => self
                .v6
                .insert(key, value, 0)
                .map_err(|source| map_error(MAP_VERDICTS, "restore a verdict", source)),
        }
    }

    /// Moves IPv4 entries found in the IPv6 map (pinned by a version that
    /// kept every flow there, where the program no longer looks for them)
    /// into the IPv4 map, counters and all; returns how many moved.
    pub fn move_ipv4_out_of_long_map(&mut self) -> Result<usize, Error> {
        let strays: Vec<(FlowKey, Verdict)> = self
            .v6
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, _)| key.to_v4().is_some())
            .collect();
        for (key, value) in &strays {
            let key4 = key.to_v4().expect("filtered on IPv4");
            self.v4
                .insert(key4, *value, 0)
                .map_err(|source| map_error(MAP_VERDICTS4, "move a pinned verdict", source))?;
            match self.v6.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(map_error(MAP_VERDICTS, "move a pinned verdict", source));
                }
            }
        }
        Ok(strays.len())
    }

    /// All entries, IPv4 then IPv6 (a snapshot walk; entries may change
    /// while walking).
    pub fn entries(&self) -> impl Iterator<Item = Result<(FlowKey, Verdict), Error>> + '_ {
        let v4 = self.v4.iter().map(|entry| {
            entry
                .map(|(key4, value)| (FlowKey::from_v4(&key4), value))
                .map_err(|source| map_error(MAP_VERDICTS4, "walk", source))
        });
        let v6 = self
            .v6
            .iter()
            .map(|entry| entry.map_err(|source| map_error(MAP_VERDICTS, "walk", source)));
        v4.chain(v6)
    }
}

/// One `BPF_MAP_UPDATE_BATCH` of `value` under every key of `keys` into
/// `map` (named `name` in errors); returns how many were written.
fn update_batch<K: aya::Pod>(
    map: &MapData,
    name: &'static str,
    keys: &[K],
    value: Verdict,
) -> Result<usize, Error> {
    if keys.is_empty() {
        return Ok(0);
    }
    let fd = map.fd().as_fd().as_raw_fd();
    let values = vec![value; keys.len()];
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags: 0,
        flags: 0,
    };
    let mut count = keys.len() as u32;
    // SAFETY: `keys` and `values` hold `count` elements with the map's key
    // and value layouts (the ABI types, checked by the map's open); `count`
    // and `opts` are valid for the call.
    let rc = unsafe {
        libbpf_sys::bpf_map_update_batch(
            fd,
            keys.as_ptr().cast(),
            values.as_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    if rc != 0 {
        return Err(Error::Syscall {
            map: name,
            what: format!("write {} verdict(s) in a batch", keys.len()),
            source: std::io::Error::from_raw_os_error(-rc),
        });
    }
    Ok(count as usize)
}
