//! `lb.toml`: services, backends, weights, health checks and the load policy.
//!
//! Reading is all or nothing: the file is parsed and every rule checked
//! before a [`Config`] exists, so a bad file never reaches the kernel. Every
//! error names the key and the line (`lb.toml:14: service[0].backend[1].weight:
//! 2000 is out of range 0..=1000`).

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::table::Algorithm;

/// Highest weight a backend may have in the file. Load scaling multiplies
/// weights by up to [`crate::weights::SCALE`], which keeps table fills fast.
pub const MAX_WEIGHT: u32 = 1000;
/// Services one balancer serves (the kernel's service and table maps are
/// sized for this; see `DP_LB_MAX_SERVICES` in the ABI header).
pub const MAX_SERVICES: usize = 16;
/// Backends over all services (`DP_LB_MAX_BACKENDS`).
pub const MAX_BACKENDS: usize = 1024;

/// How packets reach the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// IP-in-IP (IPv4 in IPv4, IPv6 in IPv6) toward the backend, which
    /// decapsulates and answers the client directly (direct server return).
    #[default]
    Ipip,
    /// Destination rewritten to the backend; replies come back through the
    /// balancer, which rewrites their source back to the VIP.
    Nat,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ipip => "ipip",
            Mode::Nat => "nat",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What happens to established connections of a backend that fails its
/// health check or is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// They stay on it (Katran's behaviour: a flapping check does not break
    /// connections that still work).
    #[default]
    Keep,
    /// Their next packet is balanced again over the healthy backends (for
    /// TCP the new backend answers with a reset, so the client retries).
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connect to the backend's service port.
    #[default]
    Tcp,
    /// An HTTP GET of `path`; any 2xx or 3xx status is healthy.
    Http,
    /// No checks: every backend is up (static pools, benchmarks).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub kind: HealthKind,
    pub path: String,
    /// Port probed; `None` = the service port.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes before a down backend is up again.
    pub rise: u32,
    /// Consecutive failures before an up backend is down.
    pub fall: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            kind: HealthKind::Tcp,
            path: "/".into(),
            port: None,
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            rise: 2,
            fall: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadSource {
    /// `GET http://BACKEND:port/path` answers a figure 0.0 (idle) ..= 1.0 (saturated).
    Http,
    /// The health probe's response time, as a fraction of the probe timeout.
    ProbeTime,
    /// SNMP v2c GET of `oid` (default UCD-SNMP-MIB `laLoad.1`, the 1-minute
    /// load average) from the backend's agent (snmpd).
    Snmp,
    /// A metric (default `node_load1`) scraped from the backend's
    /// Prometheus exporter (node_exporter).
    Prometheus,
}

/// UCD-SNMP-MIB::laLoad.1: the 1-minute load average, as a string.
pub const SNMP_LOAD1: &str = "1.3.6.1.4.1.2021.10.1.3.1";

#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub source: LoadSource,
    pub port: u16,
    pub path: String,
    pub interval: Duration,
    /// SNMP: the v2c community, and the OID read (dotted).
    pub community: String,
    pub oid: String,
    /// Prometheus: the metric read.
    pub metric: String,
    /// SNMP and Prometheus: the reading is divided by the backend's CPU
    /// count (what it reports: HOST-RESOURCES-MIB processors,
    /// node_exporter's CPUs), so a load average equal to the CPUs is 1.0;
    /// else by `full`.
    pub per_cpu: bool,
    pub full: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: IpAddr,
    /// Weight from the file (0..=MAX_WEIGHT); 0: no new connections.
    pub weight: u32,
    /// Drained (`ctl lb drain`): no new connections, its weight kept for
    /// `lb undrain`.
    pub drained: bool,
    /// Line in the file, for messages.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
    pub backends: Vec<Backend>,
    /// Inspect, then balance: a connection's first data packets are
    /// inspected in user space (the run's rules and policy) before the
    /// kernel balances the rest of it alone.
    pub inspect: bool,
}

impl Service {
    /// `tcp/198.18.70.100:80`
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            self.proto.as_str(),
            SocketAddr::new(self.vip, self.port)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    /// Next-hop MAC for everything the balancer sends; `None`: the kernel's
    /// FIB and neighbour table decide (bpf_fib_lookup).
    pub gateway_mac: Option<[u8; 6]>,
    pub table: Algorithm,
    pub on_backend_down: OnDown,
    pub health: Health,
    pub load: Option<Load>,
    pub services: Vec<Service>,
}

/// A configuration the balancer cannot run, with where it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    /// TOML syntax, unknown keys, wrong types (toml's message has the line).
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    mode: Mode,
    gateway_mac: Option<Spanned<String>>,
    #[serde(default)]
    table: Algorithm,
    #[serde(default)]
    on_backend_down: OnDown,
    health: Option<RawHealth>,
    load: Option<RawLoad>,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default)]
    kind: HealthKind,
    path: Option<String>,
    port: Option<u16>,
    interval_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    source: LoadSource,
    port: Option<u16>,
    path: Option<String>,
    interval_ms: Option<Spanned<u64>>,
    community: Option<String>,
    oid: Option<Spanned<String>>,
    metric: Option<String>,
    per_cpu: Option<bool>,
    full: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    vip: Spanned<String>,
    port: Spanned<u16>,
    proto: Proto,
    #[serde(default)]
    inspect: bool,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    addr: Spanned<String>,
    weight: Spanned<u32>,
    #[serde(default)]
    drained: bool,
}

impl Config {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and checks `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let line = |span: std::ops::Range<usize>| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        };
        let invalid =
            |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
                file: file.to_string(),
                line: line(span),
                key,
                message,
            };
        let millis = |v: &Option<Spanned<u64>>, key: &str, default: Duration| match v {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 3_600_000 => Err(invalid(
                v.span(),
                key.to_string(),
                format!("{} is out of range 1..=3600000", v.get_ref()),
            )),
            Some(v) => Ok(Duration::from_millis(*v.get_ref())),
        };
        let count = |v: &Option<Spanned<u32>>, key: &str, default: u32| match v {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 100 => Err(invalid(
                v.span(),
                key.to_string(),
                format!("{} is out of range 1..=100", v.get_ref()),
            )),
            Some(v) => Ok(*v.get_ref()),
        };

        let mut health = Health::default();
        if let Some(h) = &raw.health {
            health.kind = h.kind;
            if let Some(p) = &h.path {
                health.path = p.clone();
            }
            health.port = h.port;
            health.interval = millis(&h.interval_ms, "health.interval_ms", health.interval)?;
            health.timeout = millis(&h.timeout_ms, "health.timeout_ms", health.timeout)?;
            health.rise = count(&h.rise, "health.rise", health.rise)?;
            health.fall = count(&h.fall, "health.fall", health.fall)?;
            if health.timeout > health.interval
                && let Some(t) = &h.timeout_ms
            {
                return Err(invalid(
                    t.span(),
                    "health.timeout_ms".into(),
                    format!(
                        "{} ms is longer than health.interval_ms ({} ms): probes would overlap",
                        health.timeout.as_millis(),
                        health.interval.as_millis()
                    ),
                ));
            }
            if !health.path.starts_with('/') {
                return Err(ConfigError::Invalid {
                    file: file.to_string(),
                    line: 0,
                    key: "health.path".into(),
                    message: format!("`{}` must start with `/`", health.path),
                });
            }
        }
        let load = match &raw.load {
            None => None,
            Some(l) => {
                let port = match (l.source, l.port) {
                    (LoadSource::Http, None) => {
                        return Err(ConfigError::Invalid {
                            file: file.to_string(),
                            line: 0,
                            key: "load.port".into(),
                            message: "source = \"http\" needs the port of the load endpoint".into(),
                        });
                    }
                    (LoadSource::Snmp, p) => p.unwrap_or(161),
                    (LoadSource::Prometheus, p) => p.unwrap_or(9100),
                    (_, p) => p.unwrap_or(0),
                };
                let oid = match &l.oid {
                    None => SNMP_LOAD1.to_string(),
                    Some(o) => {
                        let text = o.get_ref().trim_start_matches('.');
                        if text.split('.').count() < 2
                            || !text.split('.').all(|n| n.parse::<u32>().is_ok())
                        {
                            return Err(invalid(
                                o.span(),
                                "load.oid".into(),
                                format!("`{}` is not a dotted OID like {SNMP_LOAD1}", o.get_ref()),
                            ));
                        }
                        text.to_string()
                    }
                };
                let full = match &l.full {
                    None => 1.0,
                    Some(f) if f.get_ref().is_finite() && *f.get_ref() > 0.0 => *f.get_ref(),
                    Some(f) => {
                        return Err(invalid(
                            f.span(),
                            "load.full".into(),
                            format!("{} is not a positive number", f.get_ref()),
                        ));
                    }
                };
                let default_path = match l.source {
                    LoadSource::Prometheus => "/metrics",
                    _ => "/load",
                };
                Some(Load {
                    source: l.source,
                    port,
                    path: l.path.clone().unwrap_or_else(|| default_path.into()),
                    interval: millis(&l.interval_ms, "load.interval_ms", Duration::from_secs(1))?,
                    community: l.community.clone().unwrap_or_else(|| "public".into()),
                    oid,
                    metric: l.metric.clone().unwrap_or_else(|| "node_load1".into()),
                    // a load average means something per CPU; other figures
                    // are read against `full`
                    per_cpu: l.per_cpu.unwrap_or(l.full.is_none()),
                    full,
                })
            }
        };

        if raw.service.is_empty() {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                line: 1,
                key: "service".into(),
                message: "no [[service]]: nothing to balance".into(),
            });
        }
        if raw.service.len() > MAX_SERVICES {
            return Err(invalid(
                raw.service[MAX_SERVICES].vip.span(),
                format!("service[{MAX_SERVICES}]"),
                format!("more than {MAX_SERVICES} services"),
            ));
        }
        let mut services = Vec::new();
        let mut seen_services = HashSet::new();
        let mut total_backends = 0;
        for (si, s) in raw.service.iter().enumerate() {
            let key = |k: &str| format!("service[{si}].{k}");
            let vip: IpAddr = s.vip.get_ref().parse().map_err(|_| {
                invalid(
                    s.vip.span(),
                    key("vip"),
                    format!("`{}` is not an IPv4 or IPv6 address", s.vip.get_ref()),
                )
            })?;
            if vip.is_unspecified() || vip.is_multicast() {
                return Err(invalid(
                    s.vip.span(),
                    key("vip"),
                    format!("{vip} cannot be a service address"),
                ));
            }
            if *s.port.get_ref() == 0 {
                return Err(invalid(
                    s.port.span(),
                    key("port"),
                    "0 is not a port".into(),
                ));
            }
            if !seen_services.insert((vip, *s.port.get_ref(), s.proto)) {
                return Err(invalid(
                    s.vip.span(),
                    key("vip"),
                    format!(
                        "{} {}:{} is already a service above",
                        s.proto.as_str(),
                        vip,
                        s.port.get_ref()
                    ),
                ));
            }
            if s.backend.is_empty() {
                return Err(invalid(
                    s.vip.span(),
                    key("backend"),
                    "the service has no [[service.backend]]".into(),
                ));
            }
            let mut backends = Vec::new();
            let mut seen = HashSet::new();
            for (bi, b) in s.backend.iter().enumerate() {
                let key = |k: &str| format!("service[{si}].backend[{bi}].{k}");
                let addr: IpAddr = b.addr.get_ref().parse().map_err(|_| {
                    invalid(
                        b.addr.span(),
                        key("addr"),
                        format!("`{}` is not an IPv4 or IPv6 address", b.addr.get_ref()),
                    )
                })?;
                if addr.is_ipv4() != vip.is_ipv4() {
                    return Err(invalid(
                        b.addr.span(),
                        key("addr"),
                        format!(
                            "{addr} is not of the VIP's family ({vip}); IPv4 VIPs need IPv4 \
                             backends and IPv6 VIPs IPv6 backends"
                        ),
                    ));
                }
                if addr.is_unspecified() || addr.is_multicast() || addr == vip {
                    return Err(invalid(
                        b.addr.span(),
                        key("addr"),
                        format!("{addr} cannot be a backend"),
                    ));
                }
                if !seen.insert(addr) {
                    return Err(invalid(
                        b.addr.span(),
                        key("addr"),
                        format!("duplicate backend {addr} in this service"),
                    ));
                }
                let weight = *b.weight.get_ref();
                if weight > MAX_WEIGHT {
                    return Err(invalid(
                        b.weight.span(),
                        key("weight"),
                        format!("{weight} is out of range 0..={MAX_WEIGHT}"),
                    ));
                }
                backends.push(Backend {
                    addr,
                    weight,
                    drained: b.drained,
                    line: line(b.addr.span()),
                });
            }
            total_backends += backends.len();
            if total_backends > MAX_BACKENDS {
                return Err(invalid(
                    s.vip.span(),
                    key("backend"),
                    format!("more than {MAX_BACKENDS} backends over all services"),
                ));
            }
            services.push(Service {
                vip,
                port: *s.port.get_ref(),
                proto: s.proto,
                backends,
                inspect: s.inspect,
            });
        }
        let gateway_mac = match &raw.gateway_mac {
            None => None,
            Some(m) => Some(parse_mac(m.get_ref()).ok_or_else(|| {
                invalid(
                    m.span(),
                    "gateway_mac".into(),
                    format!("`{}` is not a MAC address (aa:bb:cc:dd:ee:ff)", m.get_ref()),
                )
            })?),
        };
        Ok(Config {
            mode: raw.mode,
            gateway_mac,
            table: raw.table,
            on_backend_down: raw.on_backend_down,
            health,
            load,
            services,
        })
    }
}

impl Config {
    /// The configuration as an lb file that [`Config::parse`] reads back to
    /// the same configuration (what `ctl lb save` writes; comments of the
    /// original file are not kept).
    pub fn to_toml(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "# written by `dataplane ctl lb save`: the balancer's running configuration\n",
        );
        let _ = writeln!(out, "mode = \"{}\"", self.mode.as_str());
        if let Some(m) = self.gateway_mac {
            let _ = writeln!(
                out,
                "gateway_mac = \"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\"",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
        }
        let _ = writeln!(out, "table = \"{}\"", self.table.as_str());
        let _ = writeln!(
            out,
            "on_backend_down = \"{}\"",
            match self.on_backend_down {
                OnDown::Keep => "keep",
                OnDown::Reset => "reset",
            }
        );
        let h = &self.health;
        let _ = writeln!(out, "\n[health]");
        let _ = writeln!(
            out,
            "kind = \"{}\"",
            match h.kind {
                HealthKind::Tcp => "tcp",
                HealthKind::Http => "http",
                HealthKind::None => "none",
            }
        );
        let _ = writeln!(out, "path = {}", quote(&h.path));
        if let Some(p) = h.port {
            let _ = writeln!(out, "port = {p}");
        }
        let _ = writeln!(out, "interval_ms = {}", h.interval.as_millis());
        let _ = writeln!(out, "timeout_ms = {}", h.timeout.as_millis());
        let _ = writeln!(out, "rise = {}\nfall = {}", h.rise, h.fall);
        if let Some(l) = &self.load {
            let _ = writeln!(out, "\n[load]");
            let _ = writeln!(
                out,
                "source = \"{}\"",
                match l.source {
                    LoadSource::Http => "http",
                    LoadSource::ProbeTime => "probe_time",
                    LoadSource::Snmp => "snmp",
                    LoadSource::Prometheus => "prometheus",
                }
            );
            if l.source != LoadSource::ProbeTime {
                let _ = writeln!(out, "port = {}", l.port);
            }
            let _ = writeln!(out, "path = {}", quote(&l.path));
            let _ = writeln!(out, "interval_ms = {}", l.interval.as_millis());
            let _ = writeln!(out, "community = {}", quote(&l.community));
            let _ = writeln!(out, "oid = \"{}\"", l.oid);
            let _ = writeln!(out, "metric = {}", quote(&l.metric));
            let _ = writeln!(out, "per_cpu = {}", l.per_cpu);
            let _ = writeln!(out, "full = {:?}", l.full);
        }
        for s in &self.services {
            let _ = writeln!(out, "\n[[service]]");
            let _ = writeln!(out, "vip = \"{}\"", s.vip);
            let _ = writeln!(out, "port = {}", s.port);
            let _ = writeln!(out, "proto = \"{}\"", s.proto.as_str());
            if s.inspect {
                let _ = writeln!(out, "inspect = true");
            }
            for b in &s.backends {
                let _ = writeln!(out, "[[service.backend]]");
                let _ = writeln!(out, "addr = \"{}\"", b.addr);
                let _ = writeln!(out, "weight = {}", b.weight);
                if b.drained {
                    let _ = writeln!(out, "drained = true");
                }
            }
        }
        out
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// `aa:bb:cc:dd:ee:ff`
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"mode = "ipip"
[health]
kind = "tcp"
interval_ms = 500
timeout_ms = 300
rise = 2
fall = 2
[load]
source = "http"
port = 9100
path = "/load"
interval_ms = 1000
[[service]]
vip = "198.18.70.100"
port = 80
proto = "tcp"
[[service.backend]]
addr = "198.18.71.1"
weight = 5
[[service.backend]]
addr = "198.18.71.2"
weight = 3
"#;

    #[test]
    fn the_example_of_the_issue_reads() {
        let c = Config::parse("lb.toml", GOOD).unwrap();
        assert_eq!(c.mode, Mode::Ipip);
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].backends[1].weight, 3);
        assert_eq!(c.services[0].backends[1].line, 21);
        assert_eq!(c.health.interval, Duration::from_millis(500));
        assert_eq!(c.load.as_ref().unwrap().port, 9100);
        assert_eq!(c.services[0].name(), "tcp/198.18.70.100:80");
    }

    fn err(text: &str) -> String {
        Config::parse("lb.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_key_and_line() {
        let e = err(&GOOD.replace("weight = 3", "weight = 2000"));
        assert_eq!(
            e,
            "lb.toml:22: service[0].backend[1].weight: 2000 is out of range 0..=1000"
        );
        let e = err(&GOOD.replace("198.18.71.2", "198.18.71.300"));
        assert!(
            e.starts_with("lb.toml:21: service[0].backend[1].addr:"),
            "{e}"
        );
        let e = err(&GOOD.replace("198.18.71.2", "198.18.71.1"));
        assert!(
            e.contains("lb.toml:21") && e.contains("duplicate backend"),
            "{e}"
        );
        let e = err(&GOOD.replace("rise = 2", "rise = 2\nrize = 3"));
        assert!(
            e.contains("line 7") && e.contains("unknown field `rize`"),
            "{e}"
        );
        let e = err(&GOOD.replace("198.18.71.2", "2001:2::2"));
        assert!(e.contains("not of the VIP's family"), "{e}");
        let e = err(&GOOD.replace("timeout_ms = 300", "timeout_ms = 900"));
        assert!(e.starts_with("lb.toml:5: health.timeout_ms"), "{e}");
        let e = err(&GOOD.replace("mode = \"ipip\"", "gateway_mac = \"02:00:00:00:00\""));
        assert!(e.starts_with("lb.toml:1: gateway_mac"), "{e}");
        let e = err(&GOOD.replace("mode = \"ipip\"", "mode = \"dsr\""));
        assert!(e.contains("line 1") && e.contains("ipip"), "{e}");
        let e = err(&format!(
            "{GOOD}{}",
            &GOOD[GOOD.find("[[service]]").unwrap()..]
        ));
        assert!(e.contains("already a service"), "{e}");
    }

    #[test]
    fn snmp_and_prometheus_load_sources_take_their_defaults_and_refuse_bad_oids() {
        let base = "[[service]]\nvip = \"198.18.70.100\"\nport = 80\nproto = \"tcp\"\n[[service.backend]]\naddr = \"198.18.71.1\"\nweight = 1\n";
        let c = Config::parse("t", &format!("[load]\nsource = \"snmp\"\n{base}")).unwrap();
        let l = c.load.clone().unwrap();
        assert_eq!(
            (l.port, l.community.as_str(), l.oid.as_str()),
            (161, "public", SNMP_LOAD1)
        );
        assert!(l.per_cpu, "a load average is read per CPU by default");
        let again = Config::parse("saved", &c.to_toml()).unwrap();
        assert_eq!(again.load, c.load);
        let c = Config::parse(
            "t",
            &format!("[load]\nsource = \"prometheus\"\nmetric = \"x\"\nfull = 4.0\n{base}"),
        )
        .unwrap();
        let l = c.load.unwrap();
        assert_eq!(
            (l.port, l.path.as_str(), l.metric.as_str()),
            (9100, "/metrics", "x")
        );
        assert!(!l.per_cpu, "with `full`, against it");
        assert_eq!(l.full, 4.0);
        let e = Config::parse(
            "t",
            &format!("[load]\nsource = \"snmp\"\noid = \"1.3.x\"\n{base}"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t:3: load.oid: `1.3.x` is not a dotted OID"),
            "{e}"
        );
        let e = Config::parse(
            "t",
            &format!("[load]\nsource = \"snmp\"\nfull = 0.0\n{base}"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("load.full: 0 is not a positive number"), "{e}");
    }
}
