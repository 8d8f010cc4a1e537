//! The packet generator behind `pktgen` and the bundled pktgen scripts.
//!
//! Frames come from a template (Ethernet, IPv4 or IPv6, UDP or TCP, 60 bytes
//! to the MTU, a payload that gives DPI work: HTTP, a TLS ClientHello with an
//! SNI, a DNS query) or from a pcap, over N flows (source ports vary). Three
//! engines:
//! - `xdp-live`: the in-kernel generator, `BPF_PROG_TEST_RUN` with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES` on `xdp_gen`, which rewrites the ports
//!   (and the latency stamp) and XDP_TX-es the frame out of the interface;
//! - `afxdp`: an AF_XDP socket's TX ring (xsk-rs), frames prebuilt in the UMEM;
//! - `afpacket`: a raw AF_PACKET socket with `PACKET_QDISC_BYPASS` and
//!   `sendmmsg`, the portable fallback.
//!
//! Every run is bounded by a count and a time; threads are pinned to cores.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use std::io::Write as _;

use anyhow::{Context as _, bail};
use serde::Serialize;
use testbed::frames::{L4, Packet};
use xdp_redirect::baseline::{Baseline, GenConfig, GenStamp};

/// Which generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// Pick the fastest that works here (printed).
    Auto,
    XdpLive,
    Afxdp,
    Afpacket,
}

/// What the payload looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadKind {
    /// Zero bytes.
    Udp,
    /// An HTTP/1.1 GET with a Host header.
    Http,
    /// A TLS ClientHello with an SNI.
    Tls,
    /// A DNS A query.
    Dns,
    /// The above in turn, one kind per thread (xdp-live) or per flow.
    Mix,
}

/// Transport of the template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to send.
#[derive(Clone, Debug)]
pub struct Spec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub transport: Transport,
    pub sport: u16,
    /// Destination port; None: the payload's own (80 HTTP, 443 TLS, 53 DNS, 9 otherwise).
    pub dport: Option<u16>,
    /// Frame size without FCS; at least what the headers and payload need.
    pub size: usize,
    pub flows: u32,
    /// xdp-live engine: every `short_every`-th frame belongs to a short
    /// flow, a new one every `short_len` such frames (0: long flows only).
    pub short_every: u32,
    pub short_len: u32,
    pub payload: PayloadKind,
    /// Host name put into HTTP/TLS/DNS payloads.
    pub host: String,
    /// Put a sequence number and send time (`struct dp_gen_stamp`) at the
    /// start of the payload, for one-way latency (UDP payload only).
    pub latency: bool,
}

/// A built template: the frame and where the generator rewrites it.
#[derive(Clone, Debug)]
pub struct Template {
    pub frame: Vec<u8>,
    /// Offset of the L4 source port.
    pub l4_off: usize,
    /// Offset of the L4 checksum (None: UDP over IPv4 without checksum).
    pub csum_off: Option<usize>,
    /// Offset of the latency stamp, if any.
    pub stamp_off: Option<usize>,
}

/// A DNS query for `name` (type A, recursion desired).
pub fn dns_query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

fn payload_bytes(kind: PayloadKind, host: &str) -> Vec<u8> {
    match kind {
        PayloadKind::Udp | PayloadKind::Mix => Vec::new(),
        PayloadKind::Http => format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dataplane-pktgen\r\nAccept: */*\r\n\r\n"
        )
        .into_bytes(),
        PayloadKind::Tls => testbed::frames::tls_client_hello(host),
        PayloadKind::Dns => dns_query(host, 0x4242),
    }
}

/// Ethernet + IP header length of a template.
fn l3_len(ip: IpAddr) -> usize {
    14 + if ip.is_ipv4() { 20 } else { 40 }
}

impl Spec {
    /// The payload kinds used, one per thread or flow (`mix` expands).
    pub fn kinds(&self) -> Vec<PayloadKind> {
        match self.payload {
            PayloadKind::Mix => vec![
                PayloadKind::Http,
                PayloadKind::Tls,
                PayloadKind::Dns,
                PayloadKind::Udp,
            ],
            other => vec![other],
        }
    }

    /// The destination port of frames carrying `kind`.
    pub fn dport_for(&self, kind: PayloadKind) -> u16 {
        self.dport.unwrap_or(match kind {
            PayloadKind::Http => 80,
            PayloadKind::Tls => 443,
            PayloadKind::Dns => 53,
            PayloadKind::Udp | PayloadKind::Mix => 9,
        })
    }

    /// The template frame for one payload kind and source port.
    pub fn template(&self, kind: PayloadKind, sport: u16) -> anyhow::Result<Template> {
        let dport = self.dport_for(kind);
        if self.src_ip.is_ipv4() != self.dst_ip.is_ipv4() {
            bail!("--src-ip and --dst-ip must be the same address family");
        }
        let l4_len = match self.transport {
            Transport::Udp => 8,
            Transport::Tcp => 20,
        };
        let payload_off = l3_len(self.src_ip) + l4_len;
        let mut payload = if self.latency {
            if self.transport != Transport::Udp {
                bail!("--latency stamps UDP payloads; use --proto udp");
            }
            vec![0u8; std::mem::size_of::<GenStamp>()]
        } else {
            Vec::new()
        };
        payload.extend_from_slice(&payload_bytes(kind, &self.host));
        let min = (payload_off + payload.len()).max(60);
        if self.size < min {
            bail!(
                "--size {} is too small for these headers and payload: at least {min} bytes",
                self.size
            );
        }
        if self.size > 9000 {
            bail!("--size {} is above any MTU this supports (9000)", self.size);
        }
        payload.resize(self.size - payload_off, 0);
        let l4 = match self.transport {
            Transport::Udp => L4::Udp { sport, dport },
            Transport::Tcp => L4::Tcp {
                sport,
                dport,
                flags: testbed::frames::TCP_ACK | testbed::frames::TCP_PSH,
            },
        };
        let frame = Packet::new(self.src_ip, self.dst_ip, l4)
            .with_macs(self.src_mac, self.dst_mac)
            .with_payload(&payload)
            .build();
        let l4_off = l3_len(self.src_ip);
        let csum_off = match self.transport {
            // UDP over IPv4 may go without a checksum; zero it so the
            // generator need not fix it (IPv6 requires one).
            Transport::Udp if self.src_ip.is_ipv4() => None,
            Transport::Udp => Some(l4_off + 6),
            Transport::Tcp => Some(l4_off + 16),
        };
        let mut frame = frame;
        if csum_off.is_none() {
            frame[l4_off + 6..l4_off + 8].fill(0);
        }
        Ok(Template {
            frame,
            l4_off,
            csum_off,
            stamp_off: self.latency.then_some(payload_off),
        })
    }

    /// Frames for the socket engines: one per flow (up to 4096), checksums right.
    pub fn frames(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let kinds = self.kinds();
        (0..self.flows.clamp(1, 4096))
            .map(|flow| {
                let kind = kinds[flow as usize % kinds.len()];
                Ok(self
                    .template(kind, self.sport.wrapping_add(flow as u16))?
                    .frame)
            })
            .collect()
    }
}

/// Limits of a run.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Frames in all (split between threads).
    pub count: u64,
    pub duration: Duration,
    /// Frames per second in all; 0 = as fast as possible.
    pub rate: u64,
    /// Frames per kernel batch (xdp-live) or per send call (the others).
    pub batch: u32,
}

/// Where to send.
#[derive(Clone, Debug)]
pub struct Target {
    pub iface: String,
    pub ifindex: u32,
    /// One thread per core.
    pub cores: Vec<usize>,
}

/// Per-thread result.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadResult {
    pub core: usize,
    pub packets: u64,
    pub bytes: u64,
}

/// The result of a run (`--json` writes it).
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub engine: Engine,
    pub packets: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub pps: f64,
    pub bps: f64,
    pub threads: Vec<ThreadResult>,
}

/// Pins the calling thread to `core`.
pub fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds
    // for cores below CPU_SETSIZE; the call affects only this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core % libc::CPU_SETSIZE as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Counters a sending thread updates and the reporter reads.
#[derive(Default)]
struct Progress {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// Paces a thread: how many frames it may send now.
struct Pacer {
    started: Instant,
    rate: u64,
    sent: u64,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer {
            started: Instant::now(),
            rate,
            sent: 0,
        }
    }

    /// Frames allowed now (at most `max`); sleeps a little when none are.
    fn allow(&mut self, max: u64) -> u64 {
        if self.rate == 0 {
            return max;
        }
        loop {
            let due = (self.started.elapsed().as_secs_f64() * self.rate as f64) as u64;
            let n = due.saturating_sub(self.sent).min(max);
            if n > 0 {
                return n;
            }
            thread::sleep(Duration::from_micros(200));
        }
    }

    fn sent(&mut self, n: u64) {
        self.sent += n;
    }
}

/// Kernel version >= (major, minor)?
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release.trim().split(['.', '-']);
    let maj: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let min: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (maj, min) >= (major, minor)
}

/// The engine `auto` stands for here, and why.
pub fn choose(engine: Engine, pcap: bool) -> (Engine, &'static str) {
    match engine {
        Engine::Auto if pcap => (
            Engine::Afxdp,
            "a pcap is replayed frame by frame through an AF_XDP socket",
        ),
        Engine::Auto if kernel_at_least(5, 18) => (
            Engine::XdpLive,
            "kernel >= 5.18 has BPF_PROG_TEST_RUN live frames (fastest)",
        ),
        Engine::Auto => (
            Engine::Afpacket,
            "no live-frames support in this kernel; AF_PACKET is the portable fallback",
        ),
        other => (other, "asked for"),
    }
}

/// Runs the generator; prints per-thread and total rates every second.
pub fn run(
    engine: Engine,
    spec: &Spec,
    pcap_frames: Option<Vec<Vec<u8>>>,
    target: &Target,
    bounds: Bounds,
    quiet: bool,
) -> anyhow::Result<RunResult> {
    if engine == Engine::Auto {
        bail!("resolve `auto` with pktgen::choose first");
    }
    if engine == Engine::XdpLive && pcap_frames.is_some() {
        bail!("--pcap replays through the afxdp or afpacket engine, not xdp-live");
    }
    let threads = target.cores.len().max(1);
    let per_thread_count = bounds.count.div_ceil(threads as u64);
    let per_thread_rate = bounds.rate.div_ceil(threads as u64);
    let deadline = Instant::now() + bounds.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = (0..threads).map(|_| Arc::default()).collect();
    let kinds = spec.kinds();
    let frames = match &pcap_frames {
        Some(frames) => frames.clone(),
        None if engine != Engine::XdpLive => spec.frames()?,
        None => Vec::new(),
    };
    // Every thread sets its engine up (program load, UMEM...), then all start
    // together; the clock starts then.
    let ready = Arc::new(std::sync::Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for (index, &core) in target.cores.iter().enumerate() {
        let ready = Arc::clone(&ready);
        let progress = Arc::clone(&progress[index]);
        let stop = Arc::clone(&stop);
        let target = target.clone();
        let frames = frames.clone();
        let template = if engine == Engine::XdpLive {
            Some(spec.template(kinds[index % kinds.len()], spec.sport)?)
        } else {
            None
        };
        let spec = spec.clone();
        let stamp_off = if spec.latency {
            spec.template(kinds[0], spec.sport)?.stamp_off
        } else {
            None
        };
        handles.push(
            thread::Builder::new()
                .name(format!("pktgen-{core}"))
                .spawn(move || -> anyhow::Result<()> {
                    pin(core);
                    let started = std::cell::Cell::new(false);
                    let job = Job {
                        ready: &ready,
                        started: &started,
                        batch: bounds.batch.clamp(1, 256),
                        queue: index as u32,
                        count: per_thread_count,
                        rate: per_thread_rate,
                        deadline,
                        stop: &stop,
                        progress: &progress,
                    };
                    let result = match engine {
                        Engine::XdpLive => {
                            xdp_live(&spec, template.expect("built above"), &target, &job)
                        }
                        Engine::Afpacket => afpacket(&frames, stamp_off, &target, &job),
                        Engine::Afxdp => afxdp(&frames, &target, &job),
                        Engine::Auto => unreachable!("resolved above"),
                    };
                    // a thread that failed before starting still lets the others go
                    job.start();
                    result
                })?,
        );
    }
    ready.wait();
    let started = Instant::now();
    // Report every second until every thread is done.
    let mut last = vec![(0u64, 0u64); threads];
    let mut next = Instant::now() + Duration::from_secs(1);
    while handles.iter().any(|h| !h.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next && !quiet {
            next += Duration::from_secs(1);
            let mut total = (0, 0);
            let mut line = String::new();
            for (i, p) in progress.iter().enumerate() {
                let now = (
                    p.packets.load(Ordering::Relaxed),
                    p.bytes.load(Ordering::Relaxed),
                );
                let delta = (now.0 - last[i].0, now.1 - last[i].1);
                last[i] = now;
                total.0 += delta.0;
                total.1 += delta.1;
                line.push_str(&format!(" core{}: {} pps", target.cores[i], delta.0));
            }
            println!(
                "{:>5.1}s total: {} pps, {:.1} Mbit/s |{line}",
                started.elapsed().as_secs_f64(),
                total.0,
                total.1 as f64 * 8.0 / 1e6
            );
        }
    }
    let mut failures = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(_) => failures.push("a sending thread panicked".into()),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    let seconds = started.elapsed().as_secs_f64();
    let threads: Vec<ThreadResult> = progress
        .iter()
        .zip(&target.cores)
        .map(|(p, &core)| ThreadResult {
            core,
            packets: p.packets.load(Ordering::Relaxed),
            bytes: p.bytes.load(Ordering::Relaxed),
        })
        .collect();
    let packets = threads.iter().map(|t| t.packets).sum();
    let bytes = threads.iter().map(|t| t.bytes).sum::<u64>();
    Ok(RunResult {
        engine,
        packets,
        bytes,
        seconds,
        pps: packets as f64 / seconds,
        bps: bytes as f64 * 8.0 / seconds,
        threads,
    })
}

/// One sending thread's share.
struct Job<'a> {
    ready: &'a std::sync::Barrier,
    started: &'a std::cell::Cell<bool>,
    batch: u32,
    queue: u32,
    count: u64,
    rate: u64,
    deadline: Instant,
    stop: &'a AtomicBool,
    progress: &'a Progress,
}

impl Job<'_> {
    /// Set up: wait for the other threads, then go (once).
    fn start(&self) {
        if !self.started.replace(true) {
            self.ready.wait();
        }
    }
    fn done(&self, sent: u64) -> bool {
        sent >= self.count || Instant::now() >= self.deadline || self.stop.load(Ordering::Relaxed)
    }
    fn add(&self, packets: u64, bytes: u64) {
        self.progress.packets.fetch_add(packets, Ordering::Relaxed);
        self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

fn xdp_live(spec: &Spec, template: Template, target: &Target, job: &Job<'_>) -> anyhow::Result<()> {
    let mut generator = Baseline::load().context("load the generator program")?;
    let config = GenConfig {
        long_flows: spec.flows.max(1),
        short_every: spec.short_every,
        short_len: spec.short_len.max(1),
        l4_off: template.l4_off as u16,
        csum_off: template.csum_off.unwrap_or(0) as u16,
        stamp_off: template.stamp_off.unwrap_or(0) as u16,
        sport_base: spec.sport,
        // the template's own destination port (it depends on the payload)
        dport: u16::from_be_bytes([
            template.frame[template.l4_off + 2],
            template.frame[template.l4_off + 3],
        ]),
        // up to the L4 checksum: receivers that rewrite headers in place
        // (NAT, encapsulation) must not change later frames
        header_len: (template.l4_off + 8).min(64) as u16,
        header: [0; 64],
        // short flows to the one service port, new source ports
        short_fixed_dport: 1,
        pad: 0,
    };
    job.start();
    let mut pacer = Pacer::new(job.rate);
    let mut sent = 0u64;
    // One BPF_PROG_TEST_RUN call per chunk. Each call sets up and tears
    // down a page pool (tens of ms here), so chunks are large: 4M frames
    // flat out (about half a second, the slack of the time bound), 100 ms
    // worth when paced (so paced runs come in 100 ms bursts: for latency
    // at a set rate, the afpacket engine paces per batch instead).
    let chunk = if job.rate == 0 {
        1u64 << 22
    } else {
        (job.rate / 10).clamp(1024, 1 << 22)
    };
    while !job.done(sent) {
        let n = pacer.allow(chunk.min(job.count - sent));
        generator
            .generate(&template.frame, target.ifindex, config, n as u32, job.batch)
            .with_context(|| format!("live-frames generator on {}", target.iface))?;
        sent += n;
        pacer.sent(n);
        job.add(n, n * template.frame.len() as u64);
    }
    Ok(())
}

fn afpacket(
    frames: &[Vec<u8>],
    stamp_off: Option<usize>,
    target: &Target,
    job: &Job<'_>,
) -> anyhow::Result<()> {
    if frames.is_empty() {
        bail!("no frames to send");
    }
    if stamp_off.is_some() && frames[0].get(12..14) != Some(&[0x08, 0x00]) {
        bail!("--latency with the afpacket engine stamps IPv4 UDP (checksum 0) only");
    }
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            (libc::ETH_P_ALL as u16).to_be().into(),
        )
    };
    if fd < 0 {
        bail!(
            "AF_PACKET socket: {} (needs CAP_NET_RAW)",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` is a fresh socket we own.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: valid option pointer and length for the call. Best effort: old
    // kernels lack QDISC_BYPASS, and sending still works without it.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // SAFETY: a zeroed sockaddr_ll is valid; we fill the fields bind needs.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = target.ifindex as i32;
    // SAFETY: `addr` is a valid sockaddr_ll of the length given.
    if unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    } != 0
    {
        bail!(
            "bind AF_PACKET to {}: {}",
            target.iface,
            std::io::Error::last_os_error()
        );
    }
    let batch = job.batch as usize;
    // Latency runs: each frame is copied into a slot and stamped just before
    // it is handed to the kernel.
    let mut stamped: Vec<Vec<u8>> = match stamp_off {
        Some(_) => vec![Vec::new(); batch],
        None => Vec::new(),
    };
    let mut seq = 0u64;
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(batch);
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(batch);
    job.start();
    let mut pacer = Pacer::new(job.rate);
    let mut sent = 0u64;
    let mut next = job.queue as usize;
    while !job.done(sent) {
        let n = pacer.allow((batch as u64).min(job.count - sent)) as usize;
        iovecs.clear();
        msgs.clear();
        let mut bytes = 0u64;
        let now = stamp_off.map(|_| xdp_redirect::clock::monotonic_ns());
        for i in 0..n {
            let mut frame: &[u8] = &frames[(next + i) % frames.len()];
            if let (Some(off), Some(now)) = (stamp_off, now) {
                let slot = &mut stamped[i];
                slot.clear();
                slot.extend_from_slice(frame);
                slot[off..off + 8].copy_from_slice(&seq.to_be_bytes());
                slot[off + 8..off + 16].copy_from_slice(&now.to_be_bytes());
                seq += 1;
                frame = slot;
            }
            bytes += frame.len() as u64;
            iovecs.push(libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            });
        }
        for iov in iovecs.iter_mut() {
            // SAFETY: a zeroed mmsghdr is valid; it points at one iovec that
            // outlives the sendmmsg call below.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        // SAFETY: `msgs` holds `n` valid headers whose buffers live until the call returns.
        let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == std::io::ErrorKind::WouldBlock
            {
                thread::yield_now();
                continue;
            }
            bail!("sendmmsg on {}: {e}", target.iface);
        }
        let done = rc as usize;
        let done_bytes = if done == n {
            bytes
        } else {
            iovecs[..done].iter().map(|v| v.iov_len as u64).sum()
        };
        next = (next + done) % frames.len();
        sent += done as u64;
        pacer.sent(done as u64);
        job.add(done as u64, done_bytes);
    }
    drop(owned);
    Ok(())
}

fn afxdp(frames: &[Vec<u8>], target: &Target, job: &Job<'_>) -> anyhow::Result<()> {
    use xsk_rs::{
        Socket, Umem,
        config::{
            BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
        },
    };
    if frames.is_empty() {
        bail!("no frames to send");
    }
    let max_len = frames.iter().map(Vec::len).max().unwrap_or(0);
    if max_len > 4096 - 256 {
        bail!("afxdp sends frames of up to 3840 bytes; use afpacket for {max_len}");
    }
    const RING: u32 = 2048;
    let umem_config = UmemConfig::builder()
        .frame_size(FrameSize::new(4096).map_err(|e| anyhow::anyhow!("{e}"))?)
        .fill_queue_size(QueueSize::new(RING).map_err(|e| anyhow::anyhow!("{e}"))?)
        .comp_queue_size(QueueSize::new(RING).map_err(|e| anyhow::anyhow!("{e}"))?)
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (umem, mut descs) = Umem::new(
        umem_config,
        std::num::NonZeroU32::new(RING * 2).expect("non-zero"),
        false,
    )
    .map_err(|e| anyhow::anyhow!("UMEM: {e}"))?;
    let socket_config = SocketConfig::builder()
        .tx_queue_size(QueueSize::new(RING).map_err(|e| anyhow::anyhow!("{e}"))?)
        .rx_queue_size(QueueSize::new(RING).map_err(|e| anyhow::anyhow!("{e}"))?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    let ifname: Interface = target
        .iface
        .parse()
        .map_err(|_| anyhow::anyhow!("bad interface name"))?;
    // SAFETY: a fresh UMEM shared with no other socket.
    let (mut tx, _rx, rings) = unsafe { Socket::new(socket_config, &umem, &ifname, job.queue) }
        .map_err(|e| {
            anyhow::anyhow!(
                "AF_XDP socket on {} queue {}: {e} (one thread per TX queue; check --threads)",
                target.iface,
                job.queue
            )
        })?;
    let (_fill, mut comp) = rings.context("no completion ring")?;
    // Write every frame once into the UMEM; descriptors cycle over them.
    let mut loaded = Vec::with_capacity(descs.len());
    for (i, desc) in descs.iter_mut().enumerate() {
        let frame = &frames[(job.queue as usize + i) % frames.len()];
        // SAFETY: the descriptor is ours and on no ring yet.
        let mut data = unsafe { umem.data_mut(desc) };
        data.cursor()
            .write_all(frame)
            .context("write a frame into the UMEM")?;
        loaded.push(*desc);
    }
    // The completion ring hands back addresses only (lengths zeroed): map
    // them back to the loaded descriptors.
    let by_addr: std::collections::HashMap<usize, xsk_rs::FrameDesc> =
        loaded.iter().map(|d| (d.addr(), *d)).collect();
    let mut free = loaded;
    let mut completed = vec![xsk_rs::FrameDesc::default(); RING as usize];
    job.start();
    let mut pacer = Pacer::new(job.rate);
    let mut sent = 0u64;
    let mut in_flight = 0usize;
    while !job.done(sent) {
        // SAFETY: `completed` receives descriptors of this UMEM.
        let n = unsafe { comp.consume(&mut completed) };
        free.extend(completed[..n].iter().map(|d| by_addr[&d.addr()]));
        in_flight -= n;
        let want = pacer.allow(u64::from(job.batch).min(job.count - sent)) as usize;
        let n = want.min(free.len());
        if n == 0 {
            tx.wakeup().context("kick the TX ring")?;
            continue;
        }
        let from = free.len() - n;
        // SAFETY: these descriptors hold frames of this UMEM and are on no ring.
        let produced = unsafe { tx.produce(&free[from..]) };
        if produced == 0 {
            tx.wakeup().context("kick the TX ring")?;
            continue;
        }
        let bytes: u64 = free[from..].iter().map(|d| d.lengths().data() as u64).sum();
        free.truncate(from);
        in_flight += produced;
        tx.wakeup().context("kick the TX ring")?;
        sent += produced as u64;
        pacer.sent(produced as u64);
        job.add(produced as u64, bytes);
    }
    // Let the kernel finish what is on the ring (bounded).
    let until = Instant::now() + Duration::from_millis(500);
    while in_flight > 0 && Instant::now() < until {
        let _ = tx.wakeup();
        // SAFETY: as above.
        let n = unsafe { comp.consume(&mut completed) };
        in_flight -= n;
    }
    Ok(())
}

/// Reads every frame of a pcap or pcapng file (Ethernet link type).
pub fn read_pcap(path: &PathBuf) -> anyhow::Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut frames = Vec::new();
    if let Ok(mut reader) = pcap_file::pcap::PcapReader::new(&data[..]) {
        while let Some(packet) = reader.next_packet() {
            let packet = packet.with_context(|| format!("{}: corrupt packet", path.display()))?;
            frames.push(packet.data.into_owned());
        }
    } else {
        let mut reader = pcap_file::pcapng::PcapNgReader::new(&data[..])
            .with_context(|| format!("{} is neither pcap nor pcapng", path.display()))?;
        while let Some(block) = reader.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) =
                block.with_context(|| format!("{}: corrupt block", path.display()))?
            {
                frames.push(p.data.into_owned());
            }
        }
    }
    if frames.is_empty() {
        bail!("{} has no packets", path.display());
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(transport: Transport, ip: &str, payload: PayloadKind) -> Spec {
        let v6 = ip.contains(':');
        Spec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: if v6 { "2001:db8::1" } else { "198.18.0.1" }
                .parse()
                .unwrap(),
            dst_ip: ip.parse().unwrap(),
            transport,
            sport: 1000,
            dport: None,
            size: 256,
            flows: 8,
            short_every: 0,
            short_len: 1,
            payload,
            host: "example.test".into(),
            latency: false,
        }
    }

    #[test]
    fn templates_decode_and_classify_as_what_they_carry() {
        let cases = [
            (Transport::Tcp, "198.18.0.2", PayloadKind::Http, "HTTP"),
            (Transport::Tcp, "2001:db8::2", PayloadKind::Tls, "TLS"),
            (Transport::Udp, "198.18.0.2", PayloadKind::Dns, "DNS"),
        ];
        for (transport, dst, kind, protocol) in cases {
            let s = spec(transport, dst, kind);
            let t = s.template(kind, 1000).unwrap();
            assert_eq!(t.frame.len(), 256);
            let decoded = dpi::decode_ethernet(&t.frame).unwrap();
            let payload = &t.frame[decoded.payload_offset..][..decoded.payload_len];
            let mut c = dpi::classify::FlowClassifier::new(decoded.key.proto, 10);
            c.on_packet(payload, true, 1000, s.dport_for(kind));
            let result = c.finish();
            assert_eq!(result.protocol.name(), protocol, "{kind:?}");
            assert_eq!(result.host.as_deref(), Some("example.test"), "{kind:?}");
        }
    }

    #[test]
    fn offsets_point_at_ports_and_checksum() {
        let t = spec(Transport::Udp, "2001:db8::2", PayloadKind::Udp)
            .template(PayloadKind::Udp, 4660)
            .unwrap();
        assert_eq!(t.l4_off, 54);
        assert_eq!(&t.frame[54..56], &4660u16.to_be_bytes());
        assert_eq!(t.csum_off, Some(60));
        let t4 = spec(Transport::Udp, "198.18.0.2", PayloadKind::Udp)
            .template(PayloadKind::Udp, 1)
            .unwrap();
        assert_eq!((t4.csum_off, &t4.frame[40..42]), (None, &[0u8, 0][..]));
    }

    #[test]
    fn too_small_a_size_is_refused_with_the_minimum() {
        let mut s = spec(Transport::Tcp, "198.18.0.2", PayloadKind::Tls);
        s.size = 64;
        let e = s.template(PayloadKind::Tls, 1).unwrap_err().to_string();
        assert!(e.contains("too small") && e.contains("at least"), "{e}");
    }
}
