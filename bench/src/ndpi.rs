//! Agreement with nDPI on its own test captures (`../shared/data/ndpi`):
//! each capture's `result/NAME.out` is what `ndpiReader -v 2` printed for it.
//! Flows are matched by transport and endpoints (either order; ICMP by
//! addresses only, since nDPI keys ICMP without the echo identifier).
//!
//! Disagreements read so far (`ndpi-agreement --show PROTO` lists them):
//! - The `fuzz-*` captures hold payloads corrupted on purpose. nDPI still names
//!   many of their flows (FTP_CONTROL, SIP, DNS) after its dissectors fail,
//!   from the port; we leave payload that no dissector recognises Unknown.
//!   Neither is wrong; we prefer not to claim.
//! - DNS hosts in the fuzzed captures: nDPI reports the response's name even
//!   when the response was corrupted differently from the query.
//! - `1kxun.pcap`, TCP/443: nDPI says TLS for flows whose payload is not TLS
//!   records at all (first bytes `80 02 00 02 ...`): nDPI's mistake.
//! - `alexa-app.pcapng`: a "TLS" alert record with version 0x0000; nDPI
//!   accepts it, we require a TLS version.
//! - JA4: nDPI 4.x takes the first two characters of the first ALPN value
//!   (`h3-29` -> `h3`, `http/1.1` -> `ht`) where FoxIO's spec takes the first
//!   and last (`h9`, `h1`), and marks some hellos without an SNI extension
//!   `d` (`KakaoTalk_chat.pcap`): nDPI's deviations from the spec. The hash
//!   parts agree on 99.2%.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Instant,
};

use std::num::NonZeroUsize;

use dataplane::inspect::{FlowRecord, Inspection};
use dpi::{Protocol, policy::Engine, table::Timeouts};
use serde::Serialize;

/// One flow line of an nDPI result file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NdpiFlow {
    pub l4: String,
    pub a: String,
    pub b: String,
    /// The master protocol (`TLS` of `TLS.Google`; `Google` of a lone `Google`).
    pub master: String,
    pub host: Option<String>,
    pub ja4: Option<String>,
}

/// Parses the flow lines of an `ndpiReader -v 2` output.
pub fn parse_result(text: &str) -> Vec<NdpiFlow> {
    let mut flows = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('\t') else {
            continue;
        };
        let mut parts = rest.splitn(2, '\t');
        let (Some(num), Some(body)) = (parts.next(), parts.next()) else {
            continue;
        };
        if num.parse::<u32>().is_err() {
            continue;
        }
        let mut words = body.split(' ');
        let (Some(l4), Some(a), Some(_arrow), Some(b)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(proto_at) = body.find("[proto: ") else {
            continue;
        };
        let proto = &body[proto_at + 8..];
        let Some(end) = proto.find(']') else { continue };
        let proto = &proto[..end];
        let name = proto.split_once('/').map_or(proto, |(_, name)| name);
        let master = name.split('.').next().unwrap_or(name).to_string();
        let host = body.find("[Hostname/SNI: ").and_then(|at| {
            let h = &body[at + 15..];
            h.find(']').map(|e| h[..e].to_string())
        });
        let ja4 = body.find("[JA4: ").and_then(|at| {
            let j = &body[at + 6..];
            j.find(']').map(|e| j[..e].to_string())
        });
        flows.push(NdpiFlow {
            l4: l4.to_string(),
            a: a.to_string(),
            b: b.to_string(),
            master,
            host,
            ja4,
        });
    }
    flows
}

fn addr_only(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(addr, _)| addr)
}

fn match_key(l4: &str, a: &str, b: &str) -> (String, String, String) {
    let icmp = l4.starts_with("ICMP");
    let (a, b) = if icmp {
        (addr_only(a), addr_only(b))
    } else {
        (a, b)
    };
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (l4.to_string(), lo.to_string(), hi.to_string())
}

/// Counts for one protocol.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProtocolRow {
    pub flows: u64,
    pub agree: u64,
    pub hosts_both: u64,
    pub hosts_agree: u64,
    /// What we said instead, when we disagreed.
    pub instead: BTreeMap<String, u64>,
}

/// The whole comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Agreement {
    pub captures: usize,
    pub unreadable: Vec<String>,
    pub ndpi_flows: u64,
    pub matched_flows: u64,
    /// Per nDPI master protocol in our list.
    pub protocols: BTreeMap<String, ProtocolRow>,
    /// nDPI said Unknown or a protocol outside our list...
    pub other_flows: u64,
    /// ...and we claimed a different protocol anyway (by DPI or by port).
    pub other_claimed: u64,
    pub other_claims: BTreeMap<String, u64>,
    pub packets: u64,
    pub seconds: f64,
    /// Flows where both give a JA4, and where they are equal.
    pub ja4_both: u64,
    pub ja4_agree: u64,
    /// ...and where the two hash parts (ciphers; extensions and signature
    /// algorithms) agree, the part that does not depend on how the ALPN and
    /// SNI characters are read (nDPI 4.x reads them differently from FoxIO's spec).
    pub ja4_hashes_agree: u64,
    /// Disagreements, as `file: l4 a <-> b: nDPI X, ours Y` (for reading them).
    pub disagreements: Vec<(String, String)>,
}

impl Agreement {
    pub fn listed_flows(&self) -> u64 {
        self.protocols.values().map(|r| r.flows).sum()
    }

    pub fn listed_agree(&self) -> u64 {
        self.protocols.values().map(|r| r.agree).sum()
    }

    pub fn hosts_both(&self) -> u64 {
        self.protocols.values().map(|r| r.hosts_both).sum()
    }

    pub fn hosts_agree(&self) -> u64 {
        self.protocols.values().map(|r| r.hosts_agree).sum()
    }

    /// Fraction of listed-protocol flows where we agree with nDPI.
    pub fn protocol_agreement(&self) -> f64 {
        self.listed_agree() as f64 / self.listed_flows().max(1) as f64
    }

    pub fn host_agreement(&self) -> f64 {
        self.hosts_agree() as f64 / self.hosts_both().max(1) as f64
    }

    pub fn false_claim_rate(&self) -> f64 {
        self.other_claimed as f64 / self.other_flows.max(1) as f64
    }

    /// A markdown report.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} captures ({} unreadable), {} nDPI flows, {} matched to ours, {} packets in {:.2} s\n",
            self.captures,
            self.unreadable.len(),
            self.ndpi_flows,
            self.matched_flows,
            self.packets,
            self.seconds
        );
        let _ = writeln!(
            s,
            "| nDPI protocol | flows | agree | % | hosts (both) | hosts agree | we said instead |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
        let mut rows: Vec<_> = self.protocols.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.flows));
        for (name, r) in rows {
            let mut instead: Vec<_> = r.instead.iter().collect();
            instead.sort_by(|a, b| b.1.cmp(a.1));
            let instead: Vec<String> = instead
                .iter()
                .take(4)
                .map(|(p, n)| format!("{p} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {:.1} | {} | {} | {} |",
                r.flows,
                r.agree,
                100.0 * r.agree as f64 / r.flows.max(1) as f64,
                r.hosts_both,
                r.hosts_agree,
                instead.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "\n**protocol agreement {:.1}%** ({} of {} flows nDPI puts in a listed protocol); **host agreement {:.1}%** ({} of {} where both give one); **claims on flows nDPI calls Unknown or something else: {:.1}%** ({} of {})",
            100.0 * self.protocol_agreement(),
            self.listed_agree(),
            self.listed_flows(),
            100.0 * self.host_agreement(),
            self.hosts_agree(),
            self.hosts_both(),
            100.0 * self.false_claim_rate(),
            self.other_claimed,
            self.other_flows
        );
        let _ = writeln!(
            s,
            "\nJA4 agreement {:.1}% ({} of {} flows where both compute one); the hash parts alone {:.1}% ({})",
            100.0 * self.ja4_agree as f64 / self.ja4_both.max(1) as f64,
            self.ja4_agree,
            self.ja4_both,
            100.0 * self.ja4_hashes_agree as f64 / self.ja4_both.max(1) as f64,
            self.ja4_hashes_agree
        );
        let mut claims: Vec<_> = self.other_claims.iter().collect();
        claims.sort_by(|a, b| b.1.cmp(a.1));
        let claims: Vec<String> = claims
            .iter()
            .take(12)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "\nthose claims (nDPI -> ours): {}", claims.join(", "));
        s
    }
}

/// Where the development set lives relative to the workspace root.
pub fn default_dataset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ndpi")
}

/// Runs the classifier over every capture of `dataset` and compares.
pub fn compare(dataset: &Path) -> std::io::Result<Agreement> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dataset.join("pcap"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut report = Agreement::default();
    let started = Instant::now();
    for pcap in names {
        let name = pcap
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(expected) =
            std::fs::read_to_string(dataset.join("result").join(format!("{name}.out")))
        else {
            continue;
        };
        report.captures += 1;
        let mut records = Vec::new();
        let engine = std::sync::Arc::new(Engine::default());
        let mut inspection = Inspection::new(
            engine,
            NonZeroUsize::new(1 << 20).expect("non-zero"),
            Timeouts::default(),
            |r| records.push(r),
        );
        if let Err(e) = inspection.read_file(&pcap) {
            report.unreadable.push(e.to_string());
        }
        let summary = inspection.finish(started.elapsed());
        report.packets += summary.packets;
        let ours: HashMap<(String, String, String), &FlowRecord> = records
            .iter()
            .map(|r| {
                let (client, server) = (r.client().to_string(), r.server().to_string());
                (match_key(&r.key.l4_name(), &client, &server), r)
            })
            .collect();
        for flow in parse_result(&expected) {
            report.ndpi_flows += 1;
            let Some(our) = ours.get(&match_key(&flow.l4, &flow.a, &flow.b)) else {
                continue;
            };
            report.matched_flows += 1;
            if let (Some(theirs), Some(mine)) = (&flow.ja4, &our.flow.label.ja4) {
                report.ja4_both += 1;
                if theirs.split_once('_').map(|x| x.1) == mine.split_once('_').map(|x| x.1) {
                    report.ja4_hashes_agree += 1;
                }
                if theirs == mine {
                    report.ja4_agree += 1;
                } else {
                    report.disagreements.push((
                        "JA4".into(),
                        format!(
                            "{name}: {} {} <-> {}: JA4 nDPI {theirs}, ours {mine}",
                            flow.l4, flow.a, flow.b
                        ),
                    ));
                }
            }
            let listed = Protocol::from_name(&flow.master).filter(|p| *p != Protocol::Unknown);
            match listed {
                Some(_) => {
                    let row = report.protocols.entry(flow.master.clone()).or_default();
                    row.flows += 1;
                    if our.flow.label.protocol == flow.master {
                        row.agree += 1;
                    } else {
                        *row.instead
                            .entry(our.flow.label.protocol.to_string())
                            .or_default() += 1;
                        report.disagreements.push((
                            flow.master.clone(),
                            format!(
                                "{name}: {} {} <-> {}: nDPI {}, ours {} ({})",
                                flow.l4,
                                flow.a,
                                flow.b,
                                flow.master,
                                our.flow.label.protocol,
                                our.flow.label.confidence
                            ),
                        ));
                    }
                    if let (Some(theirs), Some(mine)) = (&flow.host, &our.flow.label.host) {
                        row.hosts_both += 1;
                        if theirs.eq_ignore_ascii_case(mine) {
                            row.hosts_agree += 1;
                        } else {
                            report.disagreements.push((
                                flow.master.clone(),
                                format!(
                                    "{name}: {} {} <-> {}: host nDPI `{theirs}`, ours `{mine}`",
                                    flow.l4, flow.a, flow.b
                                ),
                            ));
                        }
                    }
                }
                None => {
                    report.other_flows += 1;
                    // Naming the same protocol nDPI named is no false claim.
                    if our.flow.label.protocol != Protocol::Unknown.name()
                        && our.flow.label.protocol != flow.master
                    {
                        report.disagreements.push((
                            flow.master.clone(),
                            format!(
                                "{name}: {} {} <-> {}: nDPI {}, ours {} ({})",
                                flow.l4,
                                flow.a,
                                flow.b,
                                flow.master,
                                our.flow.label.protocol,
                                our.flow.label.confidence
                            ),
                        ));
                        report.other_claimed += 1;
                        *report
                            .other_claims
                            .entry(format!("{} -> {}", flow.master, our.flow.label.protocol))
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flow_lines() {
        let text = "\t1\tUDP 82.178.113.245:47255 <-> 82.178.158.181:53 [VLAN: 785][proto: 5.142/DNS.WhatsApp][IP: 0/Unknown][Hostname/SNI: e7.whatsapp.net][DPI packets: 1]\n\
                    \t2\tTCP [2001:db8::1]:443 -> [2001:db8::2]:5000 [proto: 126/Google][IP: 126/Google]\n\
                    Unknown\t24\t6428\t14\n";
        let flows = parse_result(text);
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].master, "DNS");
        assert_eq!(flows[0].host.as_deref(), Some("e7.whatsapp.net"));
        assert_eq!(flows[1].master, "Google");
        assert_eq!(flows[1].a, "[2001:db8::1]:443");
        assert_eq!(
            match_key("TCP", "b:1", "a:2"),
            match_key("TCP", "a:2", "b:1")
        );
        assert_eq!(
            match_key("ICMP", "1.1.1.1:0", "2.2.2.2:0"),
            match_key("ICMP", "2.2.2.2:7", "1.1.1.1:7")
        );
    }
}
