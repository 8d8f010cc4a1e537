//! Checks made before anything is touched, so bad input fails with a clear
//! message and leaves the interface as it was.

use thiserror::Error;

use crate::cli::RunArgs;

/// Why the data plane will not start.
#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(
        "missing capabilities {missing}: dataplane needs CAP_BPF (or CAP_SYS_ADMIN), CAP_NET_ADMIN and \
         CAP_NET_RAW to load XDP and open AF_XDP sockets; run it as root (sudo)"
    )]
    Capabilities { missing: String },
    #[error(transparent)]
    Interface(#[from] xdp_redirect::Error),
    #[error("cannot read the RX queues of `{iface}`: {source}")]
    Queues {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--queues {asked} but `{iface}` has {has} RX queue(s); lower --queues, or raise the NIC's channel \
         count (e.g. `ethtool -L {iface} combined {asked}`)"
    )]
    TooManyQueues { iface: String, asked: u32, has: u32 },
    #[error(
        "--queues {queues} leaves RX queue(s) {unserved} of `{iface}` (it has {has}) without a worker: \
         their undecided traffic would go uninspected (--on-failure pass) or be dropped; serve them all \
         (leave --queues out: it defaults to the RX queue count), lower the NIC's channel count \
         (`ethtool -L {iface} combined {queues}`), or pass --allow-unserved-queues"
    )]
    Unserved {
        iface: String,
        queues: u32,
        has: u32,
        unserved: String,
    },
    #[error(
        "--zero-copy require: host mode copies packets (the originals go to the host's stack), so there \
         is no zero copy to require; zero copy is for --mirror and --peer (inline)"
    )]
    ZeroCopyInHostMode,
    #[error("--peer {0} is the --iface interface itself; a bridge needs two different interfaces")]
    PeerIsIface(String),
    #[error("--queues {asked} is more than the {max} queues the XDP program can serve")]
    AboveProgramLimit { asked: u32, max: u32 },
    #[error("--cores names core {core}, but this machine's usable cores are {available:?}")]
    UnknownCore { core: usize, available: Vec<usize> },
    #[error("cannot list this machine's cores (sched_getaffinity failed)")]
    NoCores,
    #[error("--stats-interval must be 0 or positive, got {0}")]
    StatsInterval(f64),
    #[error("--duration must be a positive, finite number of seconds, got {0}")]
    Duration(f64),
    #[error("{flag} {}: cannot write there ({source}); give a path in a writable directory", path.display())]
    Unwritable {
        flag: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the checks found out, for the rest of the start-up.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Workers (and, in the AF_XDP modes, the queues 0..queues they serve).
    pub queues: u32,
    /// AF_XDP modes with --allow-unserved-queues: each port's queues no
    /// worker serves (for the warning at start).
    pub unserved: Vec<(String, std::ops::Range<u32>)>,
    pub ifindex: u32,
    /// Bridge mode: the `--peer` interface's index.
    pub peer_ifindex: Option<u32>,
    pub driver: String,
    pub rx_queues: u32,
    /// Core of each queue, in queue order.
    pub cores: Vec<usize>,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process (`CapEff` in /proc/self/status).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Creates `probe` (removed again unless it was there before) to show that
/// `path` (named by `flag` in the error) can be written.
fn check_writable(
    flag: &'static str,
    path: &std::path::Path,
    probe: &std::path::Path,
) -> Result<(), PreflightError> {
    let existed = probe.exists();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(probe)
        .map_err(|source| PreflightError::Unwritable {
            flag,
            path: path.to_path_buf(),
            source,
        })?;
    if !existed {
        let _ = std::fs::remove_file(probe);
    }
    Ok(())
}

/// Checks what the load balancer needs: capabilities, numeric options, the
/// interface, and no XDP program already on it (unless --force).
pub fn check_lb(args: &RunArgs) -> Result<(), PreflightError> {
    check_common(args)?;
    xdp_redirect::iface::index(&args.iface)?;
    if !args.force
        && let Some(existing) = xdp_redirect::attached_program(&args.iface)?
    {
        return Err(xdp_redirect::Error::AlreadyAttached {
            iface: args.iface.clone(),
            existing,
        }
        .into());
    }
    Ok(())
}

/// Capabilities and numeric options.
fn check_common(args: &RunArgs) -> Result<(), PreflightError> {
    if let Some(caps) = effective_caps() {
        let has = |cap: u32| caps & (1u64 << cap) != 0;
        let mut missing = Vec::new();
        if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_NET_ADMIN) {
            missing.push("CAP_NET_ADMIN");
        }
        if !has(CAP_NET_RAW) {
            missing.push("CAP_NET_RAW");
        }
        if !missing.is_empty() {
            return Err(PreflightError::Capabilities {
                missing: missing.join(", "),
            });
        }
    }
    if args.stats_interval.is_nan() || args.stats_interval < 0.0 {
        return Err(PreflightError::StatsInterval(args.stats_interval));
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(PreflightError::Duration(d));
    }
    // Output files are written while running or at exit: find out now,
    // before anything is attached, that they can be.
    if let Some(path) = &args.stats_json {
        check_writable("--stats-json", path, &path.with_extension("json.tmp"))?;
    }
    if let Some(prefix) = &args.latency_hgrm {
        let probe = std::path::PathBuf::from(format!("{}-processing.hgrm", prefix.display()));
        check_writable("--latency-hgrm", prefix, &probe)?;
    }
    Ok(())
}

/// Checks capabilities, interface, queue count, cores and numeric options.
pub fn check(args: &RunArgs) -> Result<Plan, PreflightError> {
    check_common(args)?;
    if args.mode() == crate::cli::Mode::Host && args.zero_copy == crate::cli::ZeroCopyArg::Require {
        return Err(PreflightError::ZeroCopyInHostMode);
    }
    let ifindex = xdp_redirect::iface::index(&args.iface)?;
    let (rx_queues, driver) = check_port(args, &args.iface)?;
    let mut ports = vec![(args.iface.clone(), rx_queues)];
    let peer = match &args.peer {
        None => None,
        Some(peer) if peer == &args.iface => {
            return Err(PreflightError::PeerIsIface(peer.clone()));
        }
        Some(peer) => {
            let index = xdp_redirect::iface::index(peer)?;
            let (peer_queues, _) = check_port(args, peer)?;
            ports.push((peer.clone(), peer_queues));
            Some(index)
        }
    };
    // Every queue served unless asked otherwise: the fewest any port has
    // (a bridge serves queue q on both ports).
    let fewest = ports.iter().map(|(_, n)| *n).min().unwrap_or(1).max(1);
    let queues = args
        .queues
        .unwrap_or_else(|| fewest.min(xdp_redirect::MAX_QUEUES));
    if queues > xdp_redirect::MAX_QUEUES {
        return Err(PreflightError::AboveProgramLimit {
            asked: queues,
            max: xdp_redirect::MAX_QUEUES,
        });
    }
    if let Some((iface, has)) = ports.iter().find(|(_, has)| queues > *has) {
        return Err(PreflightError::TooManyQueues {
            iface: iface.clone(),
            asked: queues,
            has: *has,
        });
    }
    // Host mode serves every queue whatever the worker count (the program
    // picks a worker by flow); the AF_XDP modes serve queues 0..queues.
    let mut unserved = Vec::new();
    if args.mode() != crate::cli::Mode::Host {
        for (iface, has) in &ports {
            if queues < *has {
                if !args.allow_unserved_queues {
                    return Err(PreflightError::Unserved {
                        iface: iface.clone(),
                        queues,
                        has: *has,
                        unserved: format!("{queues}-{}", has - 1),
                    });
                }
                unserved.push((iface.clone(), queues..*has));
            }
        }
    }
    let available: Vec<usize> = core_affinity::get_core_ids()
        .ok_or(PreflightError::NoCores)?
        .iter()
        .map(|c| c.id)
        .collect();
    if available.is_empty() {
        return Err(PreflightError::NoCores);
    }
    let cores = match &args.cores {
        Some(list) => {
            if let Some(core) = list.0.iter().find(|c| !available.contains(c)) {
                return Err(PreflightError::UnknownCore {
                    core: *core,
                    available,
                });
            }
            (0..queues as usize)
                .map(|q| list.0[q % list.0.len()])
                .collect()
        }
        None => (0..queues as usize)
            .map(|q| available[q % available.len()])
            .collect(),
    };
    Ok(Plan {
        queues,
        unserved,
        ifindex,
        peer_ifindex: peer,
        driver,
        rx_queues,
        cores,
    })
}

/// "No XDP program there yet" for one port; returns its RX queue count and
/// driver.
fn check_port(args: &RunArgs, iface: &str) -> Result<(u32, String), PreflightError> {
    let rx_queues =
        xdp_redirect::iface::rx_queues(iface).map_err(|source| PreflightError::Queues {
            iface: iface.to_string(),
            source,
        })?;
    let driver = xdp_redirect::iface::driver(iface).unwrap_or_else(|_| "unknown".into());
    // Checked here, before any socket is bound: another data plane on this
    // interface also holds its queues, and binding would fail less clearly.
    let ours_pinned = args
        .pin
        .as_ref()
        .is_some_and(|dir| xdp_redirect::pin::link_path(dir, iface).exists());
    if !args.force
        && !ours_pinned
        && let Some(existing) = xdp_redirect::attached_program(iface)?
    {
        return Err(xdp_redirect::Error::AlreadyAttached {
            iface: iface.to_string(),
            existing,
        }
        .into());
    }
    Ok((rx_queues, driver))
}
