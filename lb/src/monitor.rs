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
    // a load figure or a health page: a few bytes; cap what we read
    let mut body = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(response.into_reader(), 4096),
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
