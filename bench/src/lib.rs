//! Packet generators, latency sink, histogram reports and comparison runs; not started yet, see issue 6.
