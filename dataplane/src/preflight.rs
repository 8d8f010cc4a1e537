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
    #[error("--duration must be positive, got {0}")]
    Duration(f64),
}

/// What the checks found out, for the rest of the start-up.
#[derive(Debug, Clone)]
pub struct Plan {
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
        && (d.is_nan() || d <= 0.0)
    {
        return Err(PreflightError::Duration(d));
    }
    Ok(())
}

/// Checks capabilities, interface, queue count, cores and numeric options.
pub fn check(args: &RunArgs) -> Result<Plan, PreflightError> {
    check_common(args)?;
    let ifindex = xdp_redirect::iface::index(&args.iface)?;
    let (rx_queues, driver) = check_port(args, &args.iface)?;
    let peer = match &args.peer {
        None => None,
        Some(peer) if peer == &args.iface => {
            return Err(PreflightError::PeerIsIface(peer.clone()));
        }
        Some(peer) => {
            let index = xdp_redirect::iface::index(peer)?;
            check_port(args, peer)?;
            Some(index)
        }
    };
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
            (0..args.queues as usize)
                .map(|q| list.0[q % list.0.len()])
                .collect()
        }
        None => (0..args.queues as usize)
            .map(|q| available[q % available.len()])
            .collect(),
    };
    Ok(Plan {
        ifindex,
        peer_ifindex: peer,
        driver,
        rx_queues,
        cores,
    })
}

/// Queue count, program limit and "no XDP program there yet" for one port;
/// returns its RX queue count and driver.
fn check_port(args: &RunArgs, iface: &str) -> Result<(u32, String), PreflightError> {
    let rx_queues =
        xdp_redirect::iface::rx_queues(iface).map_err(|source| PreflightError::Queues {
            iface: iface.to_string(),
            source,
        })?;
    if args.queues > rx_queues {
        return Err(PreflightError::TooManyQueues {
            iface: iface.to_string(),
            asked: args.queues,
            has: rx_queues,
        });
    }
    if args.queues > xdp_redirect::MAX_QUEUES {
        return Err(PreflightError::AboveProgramLimit {
            asked: args.queues,
            max: xdp_redirect::MAX_QUEUES,
        });
    }
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
