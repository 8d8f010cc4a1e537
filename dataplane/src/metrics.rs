//! Prometheus (OpenMetrics text) rendering of the stats, with the
//! `prometheus-client` crate: per-queue and kernel counters, verdicts by
//! action, flows, and the latency histograms as Prometheus histograms.

use hdrhistogram::Histogram;
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, text::encode},
    metrics::{MetricType, counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::stats::StatsDoc;

type Labels = Vec<(String, String)>;
/// A per-queue counter: name, help, and how to read it from a queue's stats.
type QueueCounter = (
    &'static str,
    &'static str,
    fn(&crate::stats::QueueStats) -> u64,
);

/// An hdrhistogram of nanoseconds shown as a Prometheus histogram in
/// seconds, with exponential buckets from 1 µs to ~1 s.
#[derive(Debug)]
struct HdrSeconds(Histogram<u64>);

impl EncodeMetric for HdrSeconds {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let mut buckets = Vec::new();
        let mut below = 0u64;
        let mut bound_ns = 1_000u64;
        while bound_ns <= 1_000_000_000 {
            let upto = if h.is_empty() {
                0
            } else {
                h.count_between(0, bound_ns)
            };
            buckets.push((bound_ns as f64 / 1e9, upto - below));
            below = upto;
            bound_ns *= 2;
        }
        buckets.push((f64::MAX, h.len() - below));
        let sum = h.mean() * h.len() as f64 / 1e9;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum,
            h.len(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

/// A counter without labels, registered with its value.
fn plain_counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn label(key: &str, value: impl ToString) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// The metrics text for a stats document and the merged histograms.
pub fn render(
    doc: &StatsDoc,
    processing: &Histogram<u64>,
    kernel_to_user: &Histogram<u64>,
) -> String {
    let mut registry = Registry::with_prefix("dataplane");

    let per_queue: [QueueCounter; 31] = [
        (
            "queue_rx_packets",
            "Frames taken from the queue's RX ring(s)",
            |q| q.counters.rx_packets,
        ),
        (
            "queue_rx_bytes",
            "Bytes taken from the queue's RX ring(s)",
            |q| q.counters.rx_bytes,
        ),
        ("queue_flows_seen", "Flows first seen by the worker", |q| {
            q.counters.flows_seen
        }),
        (
            "queue_flows_evicted",
            "Flows evicted from the worker's full table",
            |q| q.counters.flows_evicted,
        ),
        (
            "queue_flows_reused",
            "Load balancer: flows ended by a new connection on their 5-tuple",
            |q| q.counters.flows_reused,
        ),
        (
            "queue_flows_ended",
            "Flows ended (timeout, close, eviction)",
            |q| q.counters.flows_ended,
        ),
        (
            "queue_flows_split",
            "Flows whose other direction reached another queue",
            |q| q.counters.flows_split,
        ),
        (
            "queue_verdicts_written",
            "Verdicts written to the kernel map",
            |q| q.counters.verdicts_written,
        ),
        (
            "queue_verdict_errors",
            "Verdict writes the kernel refused",
            |q| q.counters.verdict_errors,
        ),
        (
            "queue_verdict_conflicts",
            "Allow verdicts not written: the flow had a verdict",
            |q| q.counters.verdict_conflicts,
        ),
        (
            "queue_after_verdict_packets",
            "Packets of decided flows that still reached user space",
            |q| q.counters.after_verdict_packets,
        ),
        (
            "queue_decode_errors",
            "Frames user space could not decode",
            |q| q.counters.decode_errors,
        ),
        (
            "queue_undecodable_dropped",
            "Inline: frames dropped because no parser could read them",
            |q| q.counters.undecodable_dropped,
        ),
        (
            "queue_rejects_sent",
            "Inline: TCP resets and ICMP unreachables sent for reject rules",
            |q| q.counters.rejects_sent,
        ),
        (
            "queue_rejects_unsent",
            "Inline: reject answers not sent for want of a free frame",
            |q| q.counters.rejects_unsent,
        ),
        (
            "queue_segments_bad_checksum",
            "Inline: TCP segments dropped for a bad checksum (the host would discard them)",
            |q| q.counters.segments_bad_checksum,
        ),
        (
            "queue_segments_no_ack",
            "Inline: TCP segments dropped for lacking the ACK flag (the host would discard them)",
            |q| q.counters.segments_no_ack,
        ),
        (
            "queue_segments_out_of_window",
            "Inline: TCP segments dropped for starting outside the receiver's window",
            |q| q.counters.segments_out_of_window,
        ),
        (
            "queue_segments_held_full",
            "Inline: out-of-order TCP segments dropped for want of reassembly memory",
            |q| q.counters.segments_held_full,
        ),
        (
            "queue_datagrams_reassembled",
            "Inline: IP datagrams reassembled from fragments and inspected",
            |q| q.counters.datagrams_reassembled,
        ),
        (
            "queue_fragments_dropped",
            "Inline: IP fragments dropped (dropped flow, overlap, no room, timeout)",
            |q| q.counters.fragments_dropped,
        ),
        (
            "queue_flow_log_dropped",
            "Flow records dropped because the flow log writer fell behind",
            |q| q.counters.flow_log_dropped,
        ),
        (
            "queue_eve_dropped",
            "Eve events dropped because the eve writer fell behind",
            |q| q.counters.eve_dropped,
        ),
        (
            "queue_ipfix_exports",
            "IPFIX flow exports handed to the exporter",
            |q| q.counters.ipfix_exports,
        ),
        (
            "queue_ipfix_dropped",
            "IPFIX flow exports dropped because the exporter fell behind",
            |q| q.counters.ipfix_dropped,
        ),
        (
            "queue_handed_off",
            "Frames of another worker's flows handed to it",
            |q| q.counters.handed_off,
        ),
        (
            "queue_handoff_full",
            "Frames dropped because their flow's worker had a full inbox",
            |q| q.counters.handoff_full,
        ),
        (
            "queue_cut_packets",
            "Host mode: copies cut at the snap length",
            |q| q.counters.cut_packets,
        ),
        (
            "queue_tx_packets",
            "Bridge mode: frames the worker sent out of the other port",
            |q| q.counters.tx_packets,
        ),
        (
            "queue_tx_ring_full",
            "Bridge mode: frames dropped on a full TX ring",
            |q| q.counters.tx_ring_full,
        ),
        (
            "queue_xsk_lost",
            "Frames redirected to the socket that never reached its RX ring",
            |q| q.xsk.lost(),
        ),
    ];
    for (name, help, get) in per_queue {
        let family = counter_family(&mut registry, name, help);
        for q in &doc.queues {
            family
                .get_or_create(&label("queue", q.queue))
                .inc_by(get(q));
        }
    }
    let active = Family::<Labels, Gauge>::default();
    registry.register(
        "queue_flows_active",
        "Flows in the worker's table now",
        active.clone(),
    );
    for q in &doc.queues {
        active
            .get_or_create(&label("queue", q.queue))
            .set(q.counters.flows_active as i64);
    }

    // The kernel's counters, from their one list (`xdp_redirect::Counters`):
    // totals in their own families, so that summing a family of outcomes
    // never counts a packet twice.
    let rows = doc.kernel.rows();
    let total = |kind| {
        rows.iter()
            .find(|(_, k, _, _)| *k == kind)
            .map_or(0, |(_, _, _, v)| *v)
    };
    use xdp_redirect::CounterKind;
    plain_counter(
        &mut registry,
        "kernel_rx_packets",
        "Every packet the XDP program saw (the sum of dataplane_kernel_packets_total)",
        total(CounterKind::Total),
    );
    let outcomes = counter_family(
        &mut registry,
        "kernel_packets",
        "Packets the XDP program handled, by outcome: each packet has exactly one",
    );
    plain_counter(
        &mut registry,
        "kernel_egress_packets",
        "Host mode: every packet the host sent, seen by the TC program (the sum of dataplane_kernel_egress_outcome_packets_total)",
        total(CounterKind::EgressTotal),
    );
    let egress = counter_family(
        &mut registry,
        "kernel_egress_outcome_packets",
        "Host mode: packets the host sent, by outcome: each has exactly one",
    );
    for (name, kind, help, value) in &rows {
        match kind {
            CounterKind::Outcome => {
                outcomes
                    .get_or_create(&label("outcome", name))
                    .inc_by(*value);
            }
            CounterKind::EgressOutcome => {
                egress
                    .get_or_create(&label("outcome", name.trim_start_matches("egress_")))
                    .inc_by(*value);
            }
            CounterKind::Extra => {
                plain_counter(&mut registry, &format!("kernel_{name}"), help, *value);
            }
            CounterKind::Total | CounterKind::EgressTotal => {}
        }
    }
    plain_counter(
        &mut registry,
        "flow_log_lost_records",
        "Flow records the flow log's file refused (a full disk, an I/O error)",
        doc.flow_log_lost,
    );
    plain_counter(
        &mut registry,
        "eve_lost_events",
        "Eve events the eve file refused (a full disk, an I/O error)",
        doc.eve_lost,
    );
    plain_counter(
        &mut registry,
        "ipfix_lost_records",
        "IPFIX records whose message could not be sent",
        doc.ipfix_lost,
    );

    let verdicts = counter_family(&mut registry, "verdicts", "Verdicts written, by action");
    let drop: u64 = doc.queues.iter().map(|q| q.counters.verdicts_drop).sum();
    let written: u64 = doc.queues.iter().map(|q| q.counters.verdicts_written).sum();
    verdicts
        .get_or_create(&label("action", "drop"))
        .inc_by(drop);
    verdicts
        .get_or_create(&label("action", "allow"))
        .inc_by(written.saturating_sub(drop));

    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(doc.uptime_s);
    registry.register(
        "uptime_seconds",
        "Seconds since the data plane started",
        uptime,
    );

    registry.register(
        "processing_seconds",
        "User-space processing time per packet (decode, flow table, decision)",
        HdrSeconds(processing.clone()),
    );
    registry.register(
        "kernel_to_user_seconds",
        "Time from the XDP program seeing a packet to a worker picking it up",
        HdrSeconds(kernel_to_user.clone()),
    );

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

/// The metrics text of a load balancer, from its `lb show` document: per
/// service and per backend packets, bytes and new connections, each
/// backend's health and effective weight, and connection-table lookups.
pub fn render_lb(doc: &serde_json::Value) -> String {
    let mut registry = Registry::default();
    let r = &mut registry;
    let svc_packets = counter_family(
        r,
        "dataplane_lb_service_packets",
        "Packets forwarded per service",
    );
    let svc_bytes = counter_family(
        r,
        "dataplane_lb_service_bytes",
        "Bytes forwarded per service",
    );
    let svc_conns = counter_family(
        r,
        "dataplane_lb_service_connections",
        "New connections per service",
    );
    let be_packets = counter_family(
        r,
        "dataplane_lb_backend_packets",
        "Packets forwarded per backend",
    );
    let be_bytes = counter_family(
        r,
        "dataplane_lb_backend_bytes",
        "Bytes forwarded per backend",
    );
    let be_conns = counter_family(
        r,
        "dataplane_lb_backend_connections",
        "New connections per backend",
    );
    let be_up = Family::<Labels, Gauge>::default();
    r.register(
        "dataplane_lb_backend_up",
        "1 if the backend passes its health check",
        be_up.clone(),
    );
    let be_weight = Family::<Labels, Gauge>::default();
    r.register(
        "dataplane_lb_backend_weight",
        "Effective weight in the live table",
        be_weight.clone(),
    );
    let lookups = counter_family(
        r,
        "dataplane_lb_connection_table_lookups",
        "Connection table lookups: hit, or miss (a new connection)",
    );

    let info = Family::<Labels, Gauge>::default();
    r.register(
        "dataplane_lb_table_info",
        "The live table's digest per service (1): equal on instances that balance alike",
        info.clone(),
    );
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    for service in doc["services"].as_array().into_iter().flatten() {
        let name = service["service"].as_str().unwrap_or("?");
        let l = label("service", name);
        let mut with_digest = l.clone();
        with_digest.push((
            "digest".to_string(),
            service["table_digest"].as_str().unwrap_or("").to_string(),
        ));
        info.get_or_create(&with_digest).set(1);
        svc_packets.get_or_create(&l).inc_by(n(&service["packets"]));
        svc_bytes.get_or_create(&l).inc_by(n(&service["bytes"]));
        svc_conns.get_or_create(&l).inc_by(n(&service["new_conns"]));
        for backend in service["backends"].as_array().into_iter().flatten() {
            let mut l = label("service", name);
            l.push((
                "backend".into(),
                backend["addr"].as_str().unwrap_or("?").into(),
            ));
            be_packets.get_or_create(&l).inc_by(n(&backend["packets"]));
            be_bytes.get_or_create(&l).inc_by(n(&backend["bytes"]));
            be_conns.get_or_create(&l).inc_by(n(&backend["new_conns"]));
            be_up
                .get_or_create(&l)
                .set(i64::from(backend["up"] == true));
            be_weight
                .get_or_create(&l)
                .set(n(&backend["effective_weight"]) as i64);
        }
    }
    for (result, key) in [("hit", "hits"), ("miss", "misses")] {
        lookups
            .get_or_create(&label("result", result))
            .inc_by(n(&doc["connections"][key]));
    }
    // a part of the misses: its own metric, so the lookups sum right
    plain_counter(
        r,
        "dataplane_lb_connections_lost",
        "Of the misses: TCP packets without SYN whose connection had lost its entry",
        n(&doc["connections"]["lost"]),
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balancer_document_becomes_per_backend_metrics() {
        let doc = serde_json::json!({
            "services": [{
                "service": "tcp/198.18.70.100:80", "table_digest": "0123456789abcdef",
                "packets": 10, "bytes": 640, "new_conns": 2,
                "backends": [{"addr": "198.18.71.1", "up": false, "effective_weight": 0,
                              "packets": 7, "bytes": 448, "new_conns": 1}],
            }],
            "connections": {"hits": 8, "misses": 2, "lost": 1},
        });
        let text = render_lb(&doc);
        for line in [
            "dataplane_lb_service_packets_total{service=\"tcp/198.18.70.100:80\"} 10",
            "dataplane_lb_backend_bytes_total{service=\"tcp/198.18.70.100:80\",backend=\"198.18.71.1\"} 448",
            "dataplane_lb_backend_up{service=\"tcp/198.18.70.100:80\",backend=\"198.18.71.1\"} 0",
            "dataplane_lb_connection_table_lookups_total{result=\"miss\"} 2",
            "dataplane_lb_connections_lost_total 1",
            "dataplane_lb_table_info{service=\"tcp/198.18.70.100:80\",digest=\"0123456789abcdef\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("result=\"lost\""), "{text}");
    }

    #[test]
    fn kernel_totals_stay_out_of_the_families_of_their_parts() {
        let mut doc = StatsDoc::default();
        doc.kernel.rx = 10;
        doc.kernel.to_user = 4;
        doc.kernel.bypass_pass = 5;
        doc.kernel.lb_forwarded = 1;
        doc.kernel.bridged = 3;
        doc.kernel.egress = 2;
        doc.kernel.egress_to_user = 2;
        let text = render(
            &doc,
            &Histogram::new(3).unwrap(),
            &Histogram::new(3).unwrap(),
        );
        let sum = |family: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum()
        };
        assert!(
            text.contains("dataplane_kernel_rx_packets_total 10"),
            "{text}"
        );
        assert_eq!(sum("dataplane_kernel_packets_total"), 10, "{text}");
        assert!(
            text.contains("dataplane_kernel_egress_packets_total 2"),
            "{text}"
        );
        assert_eq!(
            sum("dataplane_kernel_egress_outcome_packets_total"),
            2,
            "{text}"
        );
        assert!(
            text.contains("dataplane_kernel_packets_total{outcome=\"lb_forwarded\"} 1"),
            "every outcome, the balancer's too: {text}"
        );
        assert!(text.contains("dataplane_kernel_bridged_total 3"), "{text}");
    }
}
