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
    /// Packets per second over all flows.
    pub rate_pps: u64,
    /// First source port; flow `i` uses `src_port_base + i`.
    pub src_port_base: u16,
    pub dst_port: u16,
    /// Hard stop, whatever is left unsent.
    pub max_duration: Duration,
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

enum Flow {
    Udp(UdpSocket, SocketAddrV4),
    Tcp(OwnedFd, Vec<u8>, libc::sockaddr_in),
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
    let payload = vec![b't'; spec.payload_len];
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

/// Sends `spec` from inside `ns`. Returns what was actually sent.
pub fn send_flows(ns: &Netns, spec: FlowSpec) -> io::Result<Sent> {
    ns.run_inside(move || send_from_here(&spec))?
}

/// Sends `spec` from the calling thread's network namespace.
pub fn send_from_here(spec: &FlowSpec) -> io::Result<Sent> {
    let mut flows = Vec::new();
    for i in 0..spec.udp_flows {
        let sock = UdpSocket::bind(SocketAddrV4::new(spec.src, spec.src_port_base + i))?;
        flows.push(Flow::Udp(sock, SocketAddrV4::new(spec.dst, spec.dst_port)));
    }
    for i in 0..spec.tcp_flows {
        let sport = spec.src_port_base + spec.udp_flows + i;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(spec.dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        flows.push(Flow::Tcp(raw_tcp_socket()?, tcp_segment(spec, sport), addr));
    }
    let payload = vec![b'u'; spec.payload_len];
    let mut sent = Sent {
        flows: flows.len() as u32,
        ..Sent::default()
    };
    let start = Instant::now();
    'rounds: for _ in 0..spec.packets_per_flow {
        for flow in &flows {
            let total = sent.packets();
            // pace: packet n leaves no earlier than n / rate after the start
            let due = start + Duration::from_secs_f64(total as f64 / spec.rate_pps.max(1) as f64);
            let now = Instant::now();
            if now.duration_since(start) > spec.max_duration {
                break 'rounds;
            }
            if due > now {
                std::thread::sleep(due - now);
            }
            match flow {
                Flow::Udp(sock, dst) => {
                    sock.send_to(&payload, dst)?;
                    sent.udp_packets += 1;
                }
                Flow::Tcp(fd, segment, addr) => {
                    // SAFETY: `segment` and `addr` are valid for the lengths given.
                    let rc = unsafe {
                        libc::sendto(
                            fd.as_raw_fd(),
                            segment.as_ptr().cast(),
                            segment.len(),
                            0,
                            (addr as *const libc::sockaddr_in).cast(),
                            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        )
                    };
                    if rc < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    sent.tcp_packets += 1;
                }
            }
        }
    }
    sent.elapsed = start.elapsed();
    Ok(sent)
}
