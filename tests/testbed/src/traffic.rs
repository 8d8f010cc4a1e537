//! Bounded traffic from real sockets inside a namespace: UDP flows from
//! ordinary UDP sockets, TCP flows as crafted segments on raw sockets (one
//! socket per flow, so the kernel's per-flow TX queue choice spreads them
//! over the veth queues as a NIC's RSS would). Packets are sent round-robin
//! across flows, paced to a rate, and stop at a packet count and a deadline.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::{Netns, frames};

/// What to send.
#[derive(Clone, Debug)]
pub struct FlowSpec {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub udp_flows: u16,
    pub tcp_flows: u16,
    pub packets_per_flow: u32,
    pub payload_len: usize,
    /// Packets per second over all flows; 0 = as fast as possible.
    pub rate_pps: u64,
    /// First source port; flow `i` uses `src_port_base + i`.
    pub src_port_base: u16,
    pub dst_port: u16,
    /// Hard stop, whatever is left unsent.
    pub max_duration: Duration,
    /// Packets sent per flow per turn, in one sendmmsg() call (1 = strict round robin).
    pub burst: u32,
    /// Payload of every packet; None: `payload_len` bytes of filler.
    pub payload: Option<Vec<u8>>,
}

impl FlowSpec {
    /// `flows` UDP flows of `packets_per_flow` packets of 32 filler bytes
    /// each, from `src`, source ports from `src_port_base`, to `dst` port 9
    /// (discard), round robin at `rate_pps`, stopped after 20 s whatever is
    /// left. Change the other fields with struct update syntax.
    pub fn udp(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        flows: u16,
        packets_per_flow: u32,
        rate_pps: u64,
        src_port_base: u16,
    ) -> FlowSpec {
        FlowSpec {
            src,
            dst,
            udp_flows: flows,
            tcp_flows: 0,
            packets_per_flow,
            payload_len: 32,
            rate_pps,
            src_port_base,
            dst_port: 9,
            max_duration: Duration::from_secs(20),
            burst: 1,
            payload: None,
        }
    }
}

/// What was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub udp_packets: u64,
    pub tcp_packets: u64,
    pub flows: u32,
    pub elapsed: Duration,
}

impl Sent {
    pub fn packets(&self) -> u64 {
        self.udp_packets + self.tcp_packets
    }
}

/// One flow: a socket and the bytes it sends each time (the UDP payload, or
/// the whole TCP segment on a raw socket).
struct Flow {
    _udp: Option<UdpSocket>,
    raw: Option<OwnedFd>,
    bytes: Vec<u8>,
    dst: libc::sockaddr_in,
    tcp: bool,
}

impl Flow {
    fn fd(&self) -> i32 {
        match (&self._udp, &self.raw) {
            (Some(udp), _) => udp.as_raw_fd(),
            (None, Some(raw)) => raw.as_raw_fd(),
            (None, None) => unreachable!("a flow has a socket"),
        }
    }

    /// Sends `count` copies with one sendmmsg(); returns how many left.
    fn send(&self, count: usize) -> io::Result<usize> {
        let mut iov = libc::iovec {
            iov_base: self.bytes.as_ptr() as *mut libc::c_void,
            iov_len: self.bytes.len(),
        };
        // SAFETY: all-zero is a valid mmsghdr; the pointers set below stay
        // valid until sendmmsg returns.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..count).map(|_| unsafe { std::mem::zeroed() }).collect();
        for m in &mut msgs {
            m.msg_hdr.msg_name = (&self.dst as *const libc::sockaddr_in).cast_mut().cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds `count` initialised headers pointing at live buffers.
        let rc = unsafe { libc::sendmmsg(self.fd(), msgs.as_mut_ptr(), count as libc::c_uint, 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }
}

fn raw_tcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The TCP header and payload of a segment (the kernel adds the IP header).
fn tcp_segment(spec: &FlowSpec, sport: u16) -> Vec<u8> {
    let payload = spec
        .payload
        .clone()
        .unwrap_or_else(|| vec![b't'; spec.payload_len]);
    let frame = frames::Packet::tcp(
        spec.src.into(),
        sport,
        spec.dst.into(),
        spec.dst_port,
        frames::TCP_ACK | frames::TCP_PSH,
    )
    .with_payload(&payload)
    .build();
    frame[14 + 20..].to_vec()
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sends `spec` from inside `ns`. Returns what was actually sent.
pub fn send_flows(ns: &Netns, spec: FlowSpec) -> io::Result<Sent> {
    ns.run_inside(move || send_from_here(&spec))?
}

/// Sends `spec` split over `threads` threads (flows and rate divided between
/// them), from the calling thread's network namespace.
pub fn send_parallel(spec: &FlowSpec, threads: u16) -> io::Result<Sent> {
    let threads = threads.clamp(1, (spec.udp_flows + spec.tcp_flows).max(1));
    let mut parts = Vec::new();
    let mut port = spec.src_port_base;
    for t in 0..threads {
        let share = |n: u16| n / threads + u16::from(t < n % threads);
        let part = FlowSpec {
            udp_flows: share(spec.udp_flows),
            tcp_flows: share(spec.tcp_flows),
            rate_pps: spec.rate_pps / u64::from(threads),
            src_port_base: port,
            ..spec.clone()
        };
        port += part.udp_flows + part.tcp_flows;
        parts.push(part);
    }
    let results: Vec<io::Result<Sent>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| scope.spawn(move || send_from_here(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("sender panicked")))
            })
            .collect()
    });
    let mut total = Sent::default();
    for r in results {
        let r = r?;
        total.udp_packets += r.udp_packets;
        total.tcp_packets += r.tcp_packets;
        total.flows += r.flows;
        total.elapsed = total.elapsed.max(r.elapsed);
    }
    Ok(total)
}

/// Sends `spec` from the calling thread's network namespace.
pub fn send_from_here(spec: &FlowSpec) -> io::Result<Sent> {
    let mut flows = Vec::new();
    for i in 0..spec.udp_flows {
        let sock = UdpSocket::bind(SocketAddrV4::new(spec.src, spec.src_port_base + i))?;
        flows.push(Flow {
            _udp: Some(sock),
            raw: None,
            bytes: spec
                .payload
                .clone()
                .unwrap_or_else(|| vec![b'u'; spec.payload_len]),
            dst: sockaddr(spec.dst, spec.dst_port),
            tcp: false,
        });
    }
    for i in 0..spec.tcp_flows {
        let sport = spec.src_port_base + spec.udp_flows + i;
        flows.push(Flow {
            _udp: None,
            raw: Some(raw_tcp_socket()?),
            bytes: tcp_segment(spec, sport),
            dst: sockaddr(spec.dst, 0),
            tcp: true,
        });
    }
    let burst = spec.burst.max(1);
    let mut sent = Sent {
        flows: flows.len() as u32,
        ..Sent::default()
    };
    let start = Instant::now();
    let mut left = spec.packets_per_flow;
    'rounds: while left > 0 {
        let n = burst.min(left);
        for flow in &flows {
            let now = Instant::now();
            if now.duration_since(start) > spec.max_duration {
                break 'rounds;
            }
            if spec.rate_pps > 0 {
                // pace: packet k leaves no earlier than k / rate after the start
                let due =
                    start + Duration::from_secs_f64(sent.packets() as f64 / spec.rate_pps as f64);
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let mut done = 0;
            while done < n as usize {
                match flow.send(n as usize - done) {
                    Ok(k) => done += k,
                    // A full socket buffer at full speed: try again.
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) => return Err(e),
                }
            }
            if flow.tcp {
                sent.tcp_packets += n as u64;
            } else {
                sent.udp_packets += n as u64;
            }
        }
        left -= n;
    }
    sent.elapsed = start.elapsed();
    Ok(sent)
}

/// Sends whole Ethernet frames, as built, out of `iface` in `ns` (an
/// AF_PACKET socket: the frames reach the wire byte for byte, VLAN tags
/// and malformed headers included). Returns how many were sent.
pub fn send_frames(ns: &Netns, iface: &str, frames: Vec<Vec<u8>>) -> io::Result<usize> {
    let iface = iface.to_string();
    ns.run_inside(move || -> io::Result<usize> {
        let index = {
            let name = std::ffi::CString::new(iface.clone()).map_err(io::Error::other)?;
            // SAFETY: a valid NUL-terminated name for the duration of the call.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        };
        if index == 0 {
            return Err(io::Error::other(format!("no interface {iface}")));
        }
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_ll; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        let mut sent = 0;
        for frame in &frames {
            // SAFETY: `frame` and `addr` are valid for the sizes given.
            let rc = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            sent += 1;
        }
        Ok(sent)
    })?
}
