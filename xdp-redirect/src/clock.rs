//! The clocks the XDP program reads, read from user space: values from both
//! sides can be compared and subtracted.

fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes; both clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC nanoseconds, the clock of `bpf_ktime_get_ns()`.
#[inline]
pub fn monotonic_ns() -> u64 {
    now(libc::CLOCK_MONOTONIC)
}

/// CLOCK_MONOTONIC_COARSE nanoseconds, the clock of `bpf_ktime_get_coarse_ns()`.
#[inline]
pub fn coarse_monotonic_ns() -> u64 {
    now(libc::CLOCK_MONOTONIC_COARSE)
}
