//! Counters and latency histograms: what workers report, how the main
//! thread merges them, the `--stats-json` document and the human summary.

use std::{io::Write as _, path::Path};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::xsk::XskStatistics;

/// Highest latency a histogram tracks (60 s in ns); larger values are clamped.
pub const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;

/// A histogram of nanoseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("static bounds are valid")
}

/// Counters one worker keeps for its queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounters {
    /// Frames taken from the RX ring.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Flows first seen by this worker (re-seen after eviction counts again).
    pub flows_seen: u64,
    /// Flows currently in the worker's table.
    pub flows_active: u64,
    /// Flows evicted from the worker's table to make room.
    pub flows_evicted: u64,
    /// Load balancer: flows ended because a new connection (a SYN) came on
    /// their 5-tuple.
    pub flows_reused: u64,
    /// Verdicts written to the kernel map.
    pub verdicts_written: u64,
    /// Of those, DROP verdicts.
    pub verdicts_drop: u64,
    /// Verdict writes the kernel refused (logged).
    pub verdict_errors: u64,
    /// Frames that did not decode: inline, the frames the XDP program could
    /// not key either (it sends them here instead of bridging them); in the
    /// other modes any here means the two parsers disagree.
    pub decode_errors: u64,
    /// Inline: of those, frames dropped because no parser here could read
    /// them (malformed, or deeper than 8 VLAN tags or IPv6 extension
    /// headers): never bridged uninspected.
    pub undecodable_dropped: u64,
    /// Inline: resets and ICMP unreachables sent for `reject` rules, and
    /// those that found no free frame (the flow is dropped all the same).
    pub rejects_sent: u64,
    pub rejects_unsent: u64,
    /// Inline: TCP segments of inspected flows dropped because the host
    /// behind would discard them and the inspection left them out: a bad
    /// checksum, no ACK flag, data outside the receiver's window, or no room
    /// to hold an out-of-order segment (the sender retransmits it).
    pub segments_bad_checksum: u64,
    pub segments_no_ack: u64,
    pub segments_out_of_window: u64,
    pub segments_held_full: u64,
    /// Inline: IP datagrams reassembled from fragments and inspected.
    pub datagrams_reassembled: u64,
    /// Inline: fragments dropped: of a dropped flow's datagram, of a
    /// datagram whose fragments overlap or contradict each other, refused
    /// for want of room, given up after the timeout, or of a TCP flow
    /// another worker inspects.
    pub fragments_dropped: u64,
    /// Host mode: copies cut at the snap length (a longer packet: a jumbo
    /// frame, or a GSO super-packet the host sends); inspected as far as
    /// they go.
    pub cut_packets: u64,
    /// Packets of already-decided flows that still reached user space.
    pub after_verdict_packets: u64,
    /// Most packets of a single flow seen in user space.
    pub max_flow_packets: u64,
    /// RX batches processed.
    pub batches: u64,
    /// Allow verdicts not written because the flow already had a verdict in
    /// the kernel: the other direction of the flow reached another queue
    /// (asymmetric RSS) and its worker decided first. "Drop" always wins.
    pub verdict_conflicts: u64,
    /// Verdicts written again for decided flows whose packets came back to
    /// user space (their kernel entry had been evicted by the map's LRU).
    pub verdicts_rewritten: u64,
    /// Flows ended (idle timeout, close, eviction), each with a flow record.
    pub flows_ended: u64,
    /// Of those, flows of which only one direction reached this queue while
    /// another queue's worker decided the flow: a diagnostic for RSS that is
    /// not symmetric (configure a symmetric RSS key on the NIC).
    pub flows_split: u64,
    /// Flow records dropped because the flow log writer fell behind.
    pub flow_log_dropped: u64,
    /// Eve events dropped because the eve writer fell behind.
    pub eve_dropped: u64,
    /// IPFIX flow exports handed to the exporter (each gives a record per
    /// direction that carried packets).
    pub ipfix_exports: u64,
    /// IPFIX flow exports dropped because the exporter fell behind.
    pub ipfix_dropped: u64,
    /// AF_XDP modes: frames this worker received of flows another worker
    /// owns, handed to that worker (flow affinity in software).
    pub handed_off: u64,
    /// Frames other workers handed to this one (its flows).
    pub handed_in: u64,
    /// Frames that could not be handed over (the owner's inbox was full):
    /// dropped, like a full RX ring.
    pub handoff_full: u64,
    /// Bridge mode: frames the worker sent out of the other port.
    pub tx_packets: u64,
    /// Bridge mode: frames dropped because the other port's TX ring was full.
    pub tx_ring_full: u64,
}

/// A worker's periodic report to the main thread.
#[derive(Clone, Debug)]
pub struct WorkerReport {
    pub queue: u32,
    pub core: usize,
    pub counters: QueueCounters,
    pub xsk: XskStatistics,
    /// Per-packet processing time recorded since the previous report.
    pub processing_ns: Histogram<u64>,
    /// XDP receive to worker pickup, recorded since the previous report.
    pub kernel_to_user_ns: Histogram<u64>,
    /// The worker has stopped; this is its last report.
    pub last: bool,
}

/// Percentiles of a histogram, as tools read them.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean() as u64,
        }
    }
}

/// One queue in the stats document.
#[derive(Clone, Debug, Serialize)]
pub struct QueueStats {
    pub queue: u32,
    pub core: usize,
    #[serde(flatten)]
    pub counters: QueueCounters,
    pub xsk: XskStatistics,
    pub latency_ns: Percentiles,
}

/// Kernel counters in the stats document: the loader's own type.
pub type KernelStats = xdp_redirect::Counters;

/// The `--stats-json` document (`dataplane ctl stats` will serve the same).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatsDoc {
    pub iface: String,
    pub driver: String,
    pub xdp_mode: &'static str,
    pub bind_mode: &'static str,
    pub sniff_packets: String,
    /// Seconds since the workers started.
    pub uptime_s: f64,
    /// `false` while running, `true` in the document written at exit.
    pub stopped: bool,
    pub queues: Vec<QueueStats>,
    pub kernel: KernelStats,
    /// Per-packet user-space processing time (decode, flow table, decision).
    pub latency_ns: Percentiles,
    /// From the XDP program seeing a packet to a worker picking it up.
    pub kernel_to_user_ns: Percentiles,
    /// Flow records the flow log's file refused (a full disk, an I/O
    /// error); records dropped before the writer are `flow_log_dropped`.
    pub flow_log_lost: u64,
    /// Eve events its file refused; events dropped before the writer are
    /// `eve_dropped`.
    pub eve_lost: u64,
    /// IPFIX records whose message could not be sent.
    pub ipfix_lost: u64,
}

impl StatsDoc {
    /// Writes the document to `path` atomically (a reader never sees half a file).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, self)?;
            f.write_all(b"\n")?;
        }
        std::fs::rename(&tmp, path)
    }
}

/// Renders the human summary printed at exit.
pub fn summary(
    doc: &StatsDoc,
    processing: &Histogram<u64>,
    kernel_to_user: &Histogram<u64>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let total_rx: u64 = doc.queues.iter().map(|q| q.counters.rx_packets).sum();
    let _ = writeln!(
        s,
        "\ndataplane on {} (driver {}, XDP {}, AF_XDP {} mode), {} queue(s), {:.2} s, flows decided: {}",
        doc.iface,
        doc.driver,
        doc.xdp_mode,
        doc.bind_mode,
        doc.queues.len(),
        doc.uptime_s,
        doc.sniff_packets
    );
    let _ = writeln!(
        s,
        "\n{:>5} {:>4} {:>12} {:>14} {:>9} {:>9} {:>8} {:>10} {:>9} {:>10}",
        "queue",
        "core",
        "rx_packets",
        "rx_bytes",
        "pkts/s",
        "flows",
        "verdicts",
        "after_vrd",
        "xsk_lost",
        "p99_ns"
    );
    for q in &doc.queues {
        let c = &q.counters;
        let _ = writeln!(
            s,
            "{:>5} {:>4} {:>12} {:>14} {:>9.0} {:>9} {:>8} {:>10} {:>9} {:>10}",
            q.queue,
            q.core,
            c.rx_packets,
            c.rx_bytes,
            c.rx_packets as f64 / doc.uptime_s.max(1e-9),
            c.flows_seen,
            c.verdicts_written,
            c.after_verdict_packets,
            q.xsk.lost(),
            q.latency_ns.p99
        );
    }
    let k = &doc.kernel;
    let _ = writeln!(
        s,
        "{:>5} {:>4} {:>12} {:>14} {:>9.0}",
        "all",
        "",
        total_rx,
        doc.queues.iter().map(|q| q.counters.rx_bytes).sum::<u64>(),
        total_rx as f64 / doc.uptime_s.max(1e-9)
    );
    let _ = writeln!(
        s,
        "\nkernel (XDP): rx {}  to_user {}  bypass_pass {}  bypass_drop {}  bypass_forward {}  no_socket {}  parse_errors {}  non_ip {}  fragments {}  link_control {}  (bridged {})",
        k.rx,
        k.to_user,
        k.bypass_pass,
        k.bypass_drop,
        k.bypass_forward,
        k.no_socket,
        k.parse_errors,
        k.non_ip,
        k.fragments,
        k.link_control,
        k.bridged
    );
    if k.egress > 0 || k.copy_lost > 0 {
        let _ = writeln!(
            s,
            "host mode: copies lost (ring full) {}; sent by the host (TC egress) {}: to_user {}  copy_lost {}  bypass_pass {}  bypass_drop {}  other {}",
            k.copy_lost,
            k.egress,
            k.egress_to_user,
            k.egress_copy_lost,
            k.egress_bypass_pass,
            k.egress_bypass_drop,
            k.egress_other
        );
    }
    if k.rx > 0 {
        let _ = writeln!(
            s,
            "handled in kernel after a verdict: {:.1}% of IP packets",
            100.0 * (k.bypass_pass + k.bypass_drop + k.bypass_forward) as f64
                / (k.to_user + k.bypass_pass + k.bypass_drop + k.bypass_forward).max(1) as f64
        );
    }
    s.push_str(&histogram_table(
        "user-space processing time per packet",
        processing,
    ));
    s.push_str(&histogram_table(
        "XDP to worker latency per packet",
        kernel_to_user,
    ));
    s
}

/// A percentile table and a log-scale bar chart of a nanosecond histogram.
pub fn histogram_table(title: &str, h: &Histogram<u64>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\n{title} ({} samples)", h.len());
    if h.is_empty() {
        s.push_str("  (no samples)\n");
        return s;
    }
    let _ = writeln!(s, "  {:>10}  {:>12}", "percentile", "value");
    for q in [0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0] {
        let _ = writeln!(
            s,
            "  {:>9}%  {:>12}",
            q,
            format_ns(h.value_at_quantile(q / 100.0))
        );
    }
    let _ = writeln!(s, "  distribution:");
    let mut upper = 128u64;
    let mut lower = 0u64;
    let peak = {
        let mut peak = 0u64;
        let mut u = 128u64;
        let mut l = 0u64;
        while l <= h.max() {
            peak = peak.max(h.count_between(l, u.saturating_sub(1)));
            l = u;
            u = u.saturating_mul(2);
        }
        peak.max(1)
    };
    while lower <= h.max() {
        let count = h.count_between(lower, upper.saturating_sub(1));
        if count > 0 {
            let bar = "#".repeat(((count * 40).div_ceil(peak)) as usize);
            let _ = writeln!(
                s,
                "  {:>9} - {:<9} {:>10}  {}",
                format_ns(lower),
                format_ns(upper),
                count,
                bar
            );
        }
        lower = upper;
        upper = upper.saturating_mul(2);
    }
    s
}

/// `850ns`, `12.3us`, `4.1ms`, `2.00s`.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// HdrHistogram's percentile distribution text (`outputPercentileDistribution`
/// with 5 ticks per half distance), values divided by `scale` (1000.0 prints
/// microseconds from nanoseconds): the `.hgrm` format HdrHistogram's plotter
/// and `latency-plot` read.
pub fn hgrm(h: &Histogram<u64>, scale: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / scale;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:>12.3} {q:>14.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_table() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 100).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((49_900..=50_100).contains(&p.p50), "p50 {}", p.p50);
        assert!(p.max >= 100_000 && p.max <= 100_100);
        let table = histogram_table("t", &h);
        assert!(table.contains("99.9%"), "{table}");
        assert!(table.contains('#'));
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn ns_formatting() {
        assert_eq!(format_ns(850), "850ns");
        assert_eq!(format_ns(12_345), "12.3us");
        assert_eq!(format_ns(4_100_000), "4.1ms");
        assert_eq!(format_ns(2_000_000_000), "2.00s");
    }
}
