//! Probes backends: health (TCP connect, or HTTP GET) and load (an HTTP
//! endpoint answering 0.0..=1.0, or the probe's response time). One thread
//! per distinct backend address and port, so a slow or dead backend never
//! delays the probes of the others; results go to the caller as
//! [`Event`]s over a channel.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{
    balancer::Event,
    config::{Config, HealthKind, LoadSource},
};

/// Running probe threads; dropping it stops them (each within one interval).
pub struct Monitor {
    stop: Vec<mpsc::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.clear(); // disconnects: every thread sees it at its next wait
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One health probe: Ok(response time) or Err(why).
pub fn probe_health(
    kind: HealthKind,
    target: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    match kind {
        HealthKind::Tcp => {
            TcpStream::connect_timeout(&target, timeout).map_err(|e| e.to_string())?;
        }
        HealthKind::Http => {
            let status = http_get(target, path, timeout)?.0;
            if !(200..400).contains(&status) {
                return Err(format!("HTTP status {status}"));
            }
        }
        HealthKind::None => {}
    }
    Ok(start.elapsed())
}

fn url(target: SocketAddr, path: &str) -> String {
    match target.ip() {
        IpAddr::V4(a) => format!("http://{a}:{}{path}", target.port()),
        IpAddr::V6(a) => format!("http://[{a}]:{}{path}", target.port()),
    }
}

fn http_get(target: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    // a load figure or a health page: a few bytes; cap what we read
    http_get_limited(target, path, timeout, 4096)
}

fn http_get_limited(
    target: SocketAddr,
    path: &str,
    timeout: Duration,
    limit: u64,
) -> Result<(u16, String), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .build();
    let response = match agent.get(&url(target, path)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let mut body = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(response.into_reader(), limit),
        &mut body,
    )
    .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Reads a load figure: the body must be one number in 0.0..=1.0.
pub fn probe_load(target: SocketAddr, path: &str, timeout: Duration) -> Result<f64, String> {
    let (status, body) = http_get(target, path, timeout)?;
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    let v: f64 = body
        .trim()
        .parse()
        .map_err(|_| format!("body `{}` is not a number", body.trim()))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("load {v} is outside 0.0..=1.0"));
    }
    Ok(v)
}

/// A number an SNMP agent answered: integers of every SNMP kind, or a
/// string holding a number (UCD-SNMP-MIB's `laLoad` is "0.52").
fn snmp_number(value: &snmp2::Value<'_>) -> Option<f64> {
    use snmp2::Value;
    match value {
        Value::Integer(n) => Some(*n as f64),
        Value::Counter32(n) | Value::Unsigned32(n) | Value::Timeticks(n) => Some(f64::from(*n)),
        Value::Counter64(n) => Some(*n as f64),
        Value::OctetString(text) => std::str::from_utf8(text).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// How long an SNMP agent's processor count is used before it is read again.
const CPU_COUNT_TTL: Duration = Duration::from_secs(60);

/// HOST-RESOURCES-MIB::hrDeviceType: one row per device, its type an OID.
const HR_DEVICE_TYPE: &[u64] = &[1, 3, 6, 1, 2, 1, 25, 3, 2, 1, 2];
/// HOST-RESOURCES-TYPES::hrDeviceProcessor.
const HR_DEVICE_PROCESSOR: &[u64] = &[1, 3, 6, 1, 2, 1, 25, 3, 1, 3];

fn parse_oid(dotted: &str) -> Result<Vec<u64>, String> {
    dotted
        .trim_start_matches('.')
        .split('.')
        .map(|n| {
            n.parse()
                .map_err(|_| format!("`{dotted}` is not a dotted OID"))
        })
        .collect()
}

/// Reads `oid` from the SNMP v2c agent at `target` with `community`.
pub fn snmp_get(
    target: SocketAddr,
    community: &str,
    oid: &str,
    timeout: Duration,
) -> Result<f64, String> {
    let arcs = parse_oid(oid)?;
    let oid = snmp2::Oid::from(&arcs).map_err(|e| format!("OID {oid}: {e:?}"))?;
    let mut session = snmp2::SyncSession::new_v2c(target, community.as_bytes(), Some(timeout), 0)
        .map_err(|e| format!("SNMP to {target}: {e}"))?;
    let mut response = session
        .get(&oid)
        .map_err(|e| format!("SNMP GET {oid} from {target}: {e:?}"))?;
    let (_, value) = response
        .varbinds
        .next()
        .ok_or_else(|| format!("SNMP GET {oid} from {target}: no value"))?;
    snmp_number(&value)
        .ok_or_else(|| format!("SNMP {oid} from {target}: {value:?} is not a number"))
}

/// The processors the agent at `target` reports: the rows of
/// HOST-RESOURCES-MIB::hrDeviceTable whose type is hrDeviceProcessor
/// (walked with GETNEXT; at most 4096 rows).
pub fn snmp_cpus(target: SocketAddr, community: &str, timeout: Duration) -> Result<u32, String> {
    let mut session = snmp2::SyncSession::new_v2c(target, community.as_bytes(), Some(timeout), 0)
        .map_err(|e| format!("SNMP to {target}: {e}"))?;
    let mut at: Vec<u64> = HR_DEVICE_TYPE.to_vec();
    let mut cpus = 0;
    for _ in 0..4096 {
        let oid = snmp2::Oid::from(&at).map_err(|e| format!("{e:?}"))?;
        let mut response = session
            .getnext(&oid)
            .map_err(|e| format!("SNMP GETNEXT from {target}: {e:?}"))?;
        let Some((next, value)) = response.varbinds.next() else {
            break;
        };
        let arcs: Vec<u64> = match next.iter() {
            Some(arcs) => arcs.collect(),
            None => break,
        };
        if !arcs.starts_with(HR_DEVICE_TYPE) || arcs <= at {
            break;
        }
        if let snmp2::Value::ObjectIdentifier(kind) = value
            && kind
                .iter()
                .is_some_and(|k| k.eq(HR_DEVICE_PROCESSOR.iter().copied()))
        {
            cpus += 1;
        }
        at = arcs;
    }
    if cpus == 0 {
        return Err(format!(
            "the agent at {target} reports no processor (HOST-RESOURCES-MIB)"
        ));
    }
    Ok(cpus)
}

/// Reads `metric` (its first sample) and the CPU count (the distinct
/// `cpu` labels of `node_cpu_seconds_total`) from a Prometheus exporter.
pub fn prometheus_scrape(
    target: SocketAddr,
    path: &str,
    metric: &str,
    timeout: Duration,
) -> Result<(f64, u32), String> {
    let (status, body) = http_get_limited(target, path, timeout, 8 << 20)?;
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("not Prometheus text: {e}"))?;
    let value = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric)
        .and_then(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| format!("no metric {metric} at {}", url(target, path)))?;
    let cpus: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "node_cpu_seconds_total")
        .filter_map(|s| s.labels.get("cpu"))
        .collect();
    Ok((value, cpus.len() as u32))
}

/// A load figure 0.0..=1.0 from a reading: per CPU, or against `full`.
pub fn load_figure(reading: f64, cpus: Option<u32>, full: f64) -> Option<f64> {
    let divisor = match cpus {
        Some(0) => return None,
        Some(n) => f64::from(n),
        None => full,
    };
    let figure = reading / divisor;
    figure.is_finite().then(|| figure.clamp(0.0, 1.0))
}

impl Monitor {
    /// Whether no probe runs (health kind "none" and no load source): then
    /// no event ever comes, and that is not a failure.
    pub fn is_idle(&self) -> bool {
        self.threads.is_empty()
    }

    /// Starts probing every backend of `config`. Results come as events on
    /// `events`; probe failures are also logged at debug level.
    /// Probe results carry `generation` (see [`crate::Balancer::generation`]).
    pub fn start(config: &Config, generation: u64, events: mpsc::Sender<Event>) -> Monitor {
        let mut monitor = Monitor {
            stop: Vec::new(),
            threads: Vec::new(),
        };
        let health = config.health.clone();
        let load = config.load.clone();
        if health.kind == HealthKind::None && load.is_none() {
            return monitor; // nothing to probe
        }
        for (si, s) in config.services.iter().enumerate() {
            for (bi, b) in s.backends.iter().enumerate() {
                let (stop_tx, stop_rx) = mpsc::channel::<()>();
                let events = events.clone();
                let health = health.clone();
                let load = load.clone();
                let target = SocketAddr::new(b.addr, health.port.unwrap_or(s.port));
                let proto = s.proto;
                let name = format!("probe-{}", b.addr);
                let spawned = thread::Builder::new().name(name).spawn(move || {
                    let mut next_load = Instant::now();
                    // the agent's processor count (a walk of its device
                    // table), read again once a minute, not every probe
                    let mut cpus_known: Option<(u32, Instant)> = None;
                    loop {
                        // UDP services are probed by TCP (or HTTP) on the same
                        // port only when told to with health.port; a UDP
                        // service without it is assumed healthy.
                        let probed = if health.kind == HealthKind::None
                            || (proto == crate::config::Proto::Udp && health.port.is_none())
                        {
                            None
                        } else {
                            Some(probe_health(
                                health.kind,
                                target,
                                &health.path,
                                health.timeout,
                            ))
                        };
                        if let Some(result) = &probed {
                            if let Err(e) = result {
                                tracing::debug!(backend = %target, "health probe failed: {e}");
                            }
                            if events
                                .send(Event::Probe {
                                    generation,
                                    service: si,
                                    backend: bi,
                                    result: result.as_ref().map(|_| ()).map_err(Clone::clone),
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        if let Some(l) = &load
                            && Instant::now() >= next_load
                        {
                            next_load = Instant::now() + l.interval;
                            let figure = match l.source {
                                LoadSource::Http => probe_load(
                                    SocketAddr::new(target.ip(), l.port),
                                    &l.path,
                                    health.timeout,
                                )
                                .map_err(|e| {
                                    tracing::debug!(backend = %target, "load probe failed: {e}");
                                })
                                .ok(),
                                LoadSource::ProbeTime => match &probed {
                                    Some(Ok(rtt)) => {
                                        Some(rtt.as_secs_f64() / health.timeout.as_secs_f64())
                                    }
                                    _ => None,
                                },
                                LoadSource::Snmp => {
                                    let agent = SocketAddr::new(target.ip(), l.port);
                                    let read = snmp_get(agent, &l.community, &l.oid, health.timeout)
                                        .and_then(|v| {
                                            let cpus = match cpus_known {
                                                _ if !l.per_cpu => None,
                                                Some((n, at)) if at.elapsed() < CPU_COUNT_TTL => Some(n),
                                                _ => {
                                                    let n = snmp_cpus(agent, &l.community, health.timeout)?;
                                                    cpus_known = Some((n, Instant::now()));
                                                    Some(n)
                                                }
                                            };
                                            Ok(load_figure(v, cpus, l.full))
                                        });
                                    read.unwrap_or_else(|e| {
                                        tracing::debug!(backend = %target, "SNMP load probe failed: {e}");
                                        None
                                    })
                                }
                                LoadSource::Prometheus => {
                                    let exporter = SocketAddr::new(target.ip(), l.port);
                                    match prometheus_scrape(exporter, &l.path, &l.metric, health.timeout) {
                                        Ok((v, cpus)) => {
                                            load_figure(v, l.per_cpu.then_some(cpus), l.full)
                                        }
                                        Err(e) => {
                                            tracing::debug!(backend = %target, "Prometheus load probe failed: {e}");
                                            None
                                        }
                                    }
                                }
                            };
                            let event = Event::Load {
                                generation,
                                service: si,
                                backend: bi,
                                load: figure,
                            };
                            if events.send(event).is_err() {
                                return;
                            }
                        }
                        match stop_rx.recv_timeout(health.interval) {
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                    }
                });
                match spawned {
                    Ok(t) => {
                        monitor.stop.push(stop_tx);
                        monitor.threads.push(t);
                    }
                    Err(e) => {
                        tracing::error!(backend = %target, "cannot start a probe thread: {e}")
                    }
                }
            }
        }
        monitor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write as _, net::TcpListener};

    #[test]
    fn tcp_probe_of_a_closed_port_fails_and_of_a_listener_succeeds() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(probe_health(HealthKind::Tcp, addr, "/", Duration::from_millis(300)).is_ok());
        drop(l);
        assert!(probe_health(HealthKind::Tcp, addr, "/", Duration::from_millis(300)).is_err());
    }

    #[test]
    fn load_endpoint_answers_are_checked() {
        for (body, ok) in [("0.25\n", Some(0.25)), ("abc", None), ("1.5", None)] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let server = thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
            let got = probe_load(addr, "/load", Duration::from_secs(2));
            server.join().unwrap();
            assert_eq!(got.ok(), ok, "{body}");
        }
    }
}
