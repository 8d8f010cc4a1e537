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

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}

pub mod ndpi;
