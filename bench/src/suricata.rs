//! The rules engine against Suricata: the same rules over the same captures,
//! compared per (flow, sid). Suricata 7 reads each capture offline (`-r`,
//! checksums ignored as ours are offline) and logs its alerts to eve.json;
//! `dataplane inspect`'s engine reads the capture with the same rules. A
//! flow is the unordered pair of endpoints and the transport (ICMP without
//! ports), so the direction of an alert does not matter, only whether the
//! rule fired on the flow.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, bail};
use dataplane::inspect::Inspection;
use dpi::{
    policy::{Engine, Policy},
    rules::{RuleSet, Vars},
    table::Timeouts,
};

/// A flow as both sides can name it: transport, then the two endpoints in order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId {
    pub l4: u8,
    pub a: (IpAddr, u16),
    pub b: (IpAddr, u16),
}

impl FlowId {
    pub fn new(l4: u8, x: (IpAddr, u16), y: (IpAddr, u16)) -> FlowId {
        // ICMP has no ports: its flows are the two addresses.
        let (x, y) = if matches!(l4, 1 | 58) {
            ((x.0, 0), (y.0, 0))
        } else {
            (x, y)
        };
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        FlowId { l4, a, b }
    }
}

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = dpi::engine::l4_name(self.l4);
        let ep = |(ip, port): (IpAddr, u16)| match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        };
        write!(f, "{name} {} <-> {}", ep(self.a), ep(self.b))
    }
}

/// One alert of one side: which capture, which flow, which rule.
pub type Alert = (String, FlowId, u32);

/// The two sides' alerts and where they differ.
#[derive(Debug, Default)]
pub struct Differential {
    pub captures: usize,
    pub rules: usize,
    pub suricata: BTreeSet<Alert>,
    pub ours: BTreeSet<Alert>,
    pub suricata_version: String,
    pub seconds_suricata: f64,
    pub seconds_ours: f64,
}

impl Differential {
    pub fn both(&self) -> usize {
        self.suricata.intersection(&self.ours).count()
    }

    pub fn only_suricata(&self) -> Vec<&Alert> {
        self.suricata.difference(&self.ours).collect()
    }

    pub fn only_ours(&self) -> Vec<&Alert> {
        self.ours.difference(&self.suricata).collect()
    }

    /// Alerts both raised over alerts either raised.
    pub fn agreement(&self) -> f64 {
        let union = self.suricata.union(&self.ours).count();
        if union == 0 {
            return 1.0;
        }
        self.both() as f64 / union as f64
    }

    /// A report: the figure, then each differing alert, grouped by rule.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Rules against Suricata {}\n\n{} captures, {} rules: Suricata raised {} (flow, sid) alerts, \
             dataplane {}; {} agree: **{:.1} %** of the union.\n",
            self.suricata_version,
            self.captures,
            self.rules,
            self.suricata.len(),
            self.ours.len(),
            self.both(),
            100.0 * self.agreement()
        );
        let mut by_sid: BTreeMap<u32, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for (capture, flow, sid) in self.only_suricata() {
            by_sid
                .entry(*sid)
                .or_default()
                .0
                .push(format!("{capture}: {flow}"));
        }
        for (capture, flow, sid) in self.only_ours() {
            by_sid
                .entry(*sid)
                .or_default()
                .1
                .push(format!("{capture}: {flow}"));
        }
        if !by_sid.is_empty() {
            out.push_str("\n## Differences by rule\n");
        }
        for (sid, (theirs, ours)) in by_sid {
            out.push_str(&format!("\n- sid {sid}\n"));
            for f in theirs {
                out.push_str(&format!("  - only Suricata: {f}\n"));
            }
            for f in ours {
                out.push_str(&format!("  - only dataplane: {f}\n"));
            }
        }
        out
    }
}

/// The captures of a directory (pcap and pcapng), sorted by name.
pub fn captures_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    Ok(files)
}

/// Where the fixed differential set lives.
pub fn default_set() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("differential");
    (root.join("captures"), root.join("differential.rules"))
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs both over every capture with the rules in `rules_file`; `work` is
/// a scratch directory for Suricata's logs.
pub fn compare(
    captures: &[PathBuf],
    rules_file: &Path,
    work: &Path,
) -> anyhow::Result<Differential> {
    let mut diff = Differential {
        captures: captures.len(),
        ..Differential::default()
    };
    let version = Command::new("suricata")
        .arg("-V")
        .output()
        .context("run suricata -V: is Suricata installed? (scripts/install-deps.sh installs it)")?;
    diff.suricata_version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("?")
        .to_string();

    let rules = RuleSet::load(rules_file, &Vars::default(), false).map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    diff.rules = rules.len();
    let engine = Arc::new(Engine::new(Some(rules), Policy::default()));

    for capture in captures {
        let name = name_of(capture);
        let started = Instant::now();
        for (flow, sid) in suricata_alerts(capture, rules_file, &work.join(&name))? {
            diff.suricata.insert((name.clone(), flow, sid));
        }
        diff.seconds_suricata += started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut alerts = Vec::new();
        let mut inspection = Inspection::new(
            engine.clone(),
            NonZeroUsize::new(1 << 20).expect("non-zero"),
            Timeouts::default(),
            |r| {
                let f = &r.flow;
                let id = FlowId::new(r.key.proto, (f.src, f.sport), (f.dst, f.dport));
                for sid in &f.label.sids {
                    alerts.push((id.clone(), *sid));
                }
            },
        );
        inspection
            .read_file(capture)
            .with_context(|| format!("inspect {}", capture.display()))?;
        inspection.finish(started.elapsed());
        diff.seconds_ours += started.elapsed().as_secs_f64();
        for (flow, sid) in alerts {
            diff.ours.insert((name.clone(), flow, sid));
        }
    }
    Ok(diff)
}

/// Suricata's configuration for reading captures: alerts to eve.json, the
/// app-layer parsers the rules use on their usual ports and by probing,
/// and the data plane's own stream policy: the stream inspected to the same
/// depth (1 MiB), flows picked up mid-way (`midstream`) or seen one way
/// (`async-oneside`), and TLS left alone
/// once encrypted (`encryption-handling: bypass`, what the data plane does
/// by handing such flows to the kernel).
fn suricata_yaml(dir: &Path) -> String {
    format!(
        r#"%YAML 1.1
---
vars:
  address-groups:
    HOME_NET: "any"
    EXTERNAL_NET: "any"
  port-groups:
    HTTP_PORTS: "80"
default-log-dir: {dir}
# every alert of a packet is logged (the default keeps 15)
packet-alert-max: 255
outputs:
  - eve-log:
      enabled: yes
      filetype: regular
      filename: eve.json
      types:
        - alert
stream:
  checksum-validation: no
  midstream: true
  async-oneside: true
  bypass: yes
  reassembly:
    depth: 1mb
app-layer:
  protocols:
    http:
      enabled: yes
      libhtp:
        default-config:
          request-body-limit: 64kb
          response-body-limit: 64kb
    tls:
      enabled: yes
      detection-ports:
        dp: 443
      encryption-handling: bypass
      ja3-fingerprints: yes
    dns:
      tcp:
        enabled: yes
        detection-ports:
          dp: 53
      udp:
        enabled: yes
        detection-ports:
          dp: 53
    smtp:
      enabled: yes
    quic:
      enabled: yes
    ssh:
      enabled: yes
logging:
  default-log-level: info
  outputs:
    - console:
        enabled: yes
"#,
        dir = dir.display()
    )
}

/// Runs Suricata over one capture and reads its alerts back.
fn suricata_alerts(
    capture: &Path,
    rules_file: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<(FlowId, u32)>> {
    std::fs::create_dir_all(dir)?;
    let yaml = dir.join("suricata.yaml");
    std::fs::write(&yaml, suricata_yaml(dir))?;
    let eve = dir.join("eve.json");
    let _ = std::fs::remove_file(&eve);
    let out = Command::new("suricata")
        .arg("-c")
        .arg(&yaml)
        .arg("-S")
        .arg(rules_file)
        .arg("-r")
        .arg(capture)
        .arg("-l")
        .arg(dir)
        .args(["-k", "none", "--runmode", "single"])
        .output()
        .context("run suricata")?;
    if !out.status.success() {
        bail!(
            "suricata failed on {}: {}",
            capture.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every rule must have loaded, or a missing alert would only mean
    // Suricata refused the rule.
    // (the console log goes to standard output)
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = log
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("rules successfully loaded, ")?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .with_context(|| format!("suricata did not say how many rules it loaded:\n{log}"))?;
    if failed > 0 {
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("Error"))
            .collect();
        bail!(
            "suricata refused {failed} rules of {}:\n{}",
            rules_file.display(),
            errors.join("\n")
        );
    }
    let text = std::fs::read_to_string(&eve).unwrap_or_default();
    let mut alerts = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: not JSON: {line}", eve.display()))?;
        if v["event_type"] != "alert" {
            continue;
        }
        let ip = |k: &str| -> anyhow::Result<IpAddr> {
            v[k].as_str()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("eve alert without {k}: {line}"))
        };
        let port = |k: &str| v[k].as_u64().unwrap_or(0) as u16;
        let l4 = match v["proto"].as_str().unwrap_or("") {
            p if p.eq_ignore_ascii_case("tcp") => 6,
            p if p.eq_ignore_ascii_case("udp") => 17,
            p if p.eq_ignore_ascii_case("icmp") => 1,
            p if p.eq_ignore_ascii_case("ipv6-icmp") => 58,
            p if p.eq_ignore_ascii_case("igmp") => 2,
            p => p.parse().unwrap_or(0),
        };
        let sid = v["alert"]["signature_id"]
            .as_u64()
            .with_context(|| format!("eve alert without a signature_id: {line}"))?;
        alerts.push((
            FlowId::new(
                l4,
                (ip("src_ip")?, port("src_port")),
                (ip("dest_ip")?, port("dest_port")),
            ),
            sid as u32,
        ));
    }
    Ok(alerts)
}
