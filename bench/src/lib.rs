//! Benchmarks and load generation for the data plane. Nothing here is needed
//! at run time.
//!
//! Binaries:
//! - `xdp-cost`: per-packet cost of the XDP program by `BPF_PROG_TEST_RUN`,
//!   as a ratio to a bare `XDP_PASS` program measured in the same run.
//! - `flowgen`: bounded UDP/TCP flows from real sockets (used by the demo and
//!   the throughput runs on the veth testbed).
//! - `throughput`: the data plane with 1 and 4 queues on the veth testbed.
//! - `ndpi-agreement`: the DPI engine against nDPI's results on its own captures.
//! - `bridge`: the inline bridge against a bare XDP bridge and against
//!   every packet in user space.
//! - `pktgen`: the packet generator (in-kernel live frames, AF_XDP, AF_PACKET).
//! - `suricata-agreement`: the rules engine against Suricata 7, same rules,
//!   same captures, compared per (flow, sid).

pub mod latency;
pub mod lbpeers;
pub mod pktgen;
pub mod suricata;

/// The median of a non-empty slice of measurements.
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Runs `cmd` to completion (its stdio as the caller set it up) and returns
/// the wall time in seconds and the child's own peak RSS in KiB, read with
/// `wait4` so other children do not blur it. Fails unless it exits 0.
pub fn run_child(cmd: &mut std::process::Command) -> anyhow::Result<(f64, i64)> {
    use anyhow::{Context as _, bail};
    let started = std::time::Instant::now();
    let child = cmd.spawn().with_context(|| format!("run {cmd:?}"))?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 reaps our own child by PID and
    // fills its resource usage (the child handle is not waited on again).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    if rc < 0 {
        bail!("wait4 on {cmd:?}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed: wait status {status}");
    }
    Ok((secs, usage.ru_maxrss))
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}

pub mod ndpi;

/// The baseline of the inline comparisons: a bare XDP bridge (a program
/// that only redirects frames between the DUT's two ports), attached until
/// the returned value drops.
pub fn bare_bridge(
    tb: &testbed::InlineTestbed,
) -> anyhow::Result<xdp_redirect::baseline::Baseline> {
    use xdp_redirect::baseline::{Baseline, Kind};
    let (a, b) = (tb.dut_client_if.clone(), tb.dut_server_if.clone());
    tb.dut.run_inside(move || -> anyhow::Result<Baseline> {
        let mut prog = Baseline::load()?;
        let (ia, ib) = (
            xdp_redirect::iface::index(&a)?,
            xdp_redirect::iface::index(&b)?,
        );
        prog.set_bridge(ia, ib)?;
        prog.attach(Kind::Bridge, &a)?;
        prog.attach(Kind::Bridge, &b)?;
        Ok(prog)
    })?
}
