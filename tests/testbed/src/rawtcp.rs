//! A TCP client that writes its segments by hand, for the evasion tests: it
//! opens a real connection to a real server (the handshake is genuine) and
//! then sends whatever segments a test crafts: split, reordered,
//! overlapping, with a bad checksum, without ACK, out of window, with an
//! urgent pointer. It runs on a thread inside the client namespace, over a
//! raw IPv4 socket; the namespace's own stack must not answer the server
//! with resets ([`block_kernel_resets`]).

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::{Netns, frames::checksum, run};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// Drops the TCP resets the namespace's stack would send for connections
/// it does not know (the raw client's): an nftables table in that
/// namespace only, gone with it.
pub fn block_kernel_resets(ns: &Netns) -> io::Result<()> {
    // Only first fragments and whole packets have a TCP header to match
    // (nft reads "tcp flags" at the same offset of any fragment).
    let script = "table ip rawtcp {\n  chain out {\n    type filter hook output priority 0;\n    ip frag-off & 0x1fff == 0 tcp flags & rst == rst drop\n  }\n}\n";
    let mut cmd = ns.command("nft");
    cmd.args(["-f", "-"]);
    cmd.stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // Sanity: the table is there.
    run(ns.command("nft").args(["list", "table", "ip", "rawtcp"]))?;
    Ok(())
}

/// One crafted segment; `offset` is from the first byte of the client's
/// stream (the byte after the SYN).
#[derive(Clone, Debug)]
pub struct Seg {
    pub offset: i64,
    pub flags: u8,
    pub payload: Vec<u8>,
    pub urgent: u16,
    pub bad_checksum: bool,
    /// Send it as IPv4 fragments carrying this many bytes each (a
    /// multiple of 8).
    pub fragment: Option<usize>,
}

impl Seg {
    /// Data at `offset`, with ACK and PSH.
    pub fn data(offset: i64, payload: &[u8]) -> Seg {
        Seg {
            offset,
            flags: ACK | PSH,
            payload: payload.to_vec(),
            urgent: 0,
            bad_checksum: false,
            fragment: None,
        }
    }
}

/// A connection whose client side this process writes by hand.
pub struct RawTcp {
    sock: OwnedFd,
    /// IPPROTO_RAW (the header included): for fragments.
    ip_sock: OwnedFd,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// Sequence number of the client's stream offset 0.
    base: u32,
    /// What the client acknowledges of the server.
    rcv_nxt: u32,
}

impl RawTcp {
    /// Opens a connection from `src` to `dst` (a genuine handshake). Call
    /// on a thread inside the client namespace.
    pub fn connect(src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<RawTcp> {
        // SAFETY: socket() has no memory preconditions; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor this function owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: as above.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor this function owns.
        let ip_sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let isn = 0x1000_0000u32.wrapping_add(u32::from(src.port()) << 12);
        let mut c = RawTcp {
            sock,
            ip_sock,
            src,
            dst,
            base: isn.wrapping_add(1),
            rcv_nxt: 0,
        };
        c.send_raw(isn, 0, SYN)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (flags, seq, _ack) = c.recv_segment(deadline)?;
            if flags & (SYN | ACK) == SYN | ACK {
                c.rcv_nxt = seq.wrapping_add(1);
                break;
            }
            if flags & RST != 0 {
                return Err(io::Error::other("the server reset the connection"));
            }
        }
        c.send_raw(c.base, c.rcv_nxt, ACK)?;
        Ok(c)
    }

    /// Sends one crafted segment.
    pub fn send(&mut self, seg: &Seg) -> io::Result<()> {
        let seq = self.base.wrapping_add(seg.offset as u32);
        let ack = if seg.flags & ACK != 0 {
            self.rcv_nxt
        } else {
            0
        };
        let bytes = self.segment(
            seq,
            ack,
            seg.flags,
            64240,
            seg.urgent,
            &seg.payload,
            seg.bad_checksum,
        );
        match seg.fragment {
            None => self.send_to(&self.sock, &bytes),
            Some(size) => {
                assert!(
                    size > 0 && size % 8 == 0,
                    "fragments carry multiples of 8 bytes"
                );
                let id = self.src.port();
                for (i, part) in bytes.chunks(size).enumerate() {
                    let more = (i + 1) * size < bytes.len();
                    let frag = ((i * size / 8) as u16) | if more { 0x2000 } else { 0 };
                    let mut ip = vec![0x45, 0];
                    ip.extend_from_slice(&((20 + part.len()) as u16).to_be_bytes());
                    ip.extend_from_slice(&id.to_be_bytes());
                    ip.extend_from_slice(&frag.to_be_bytes());
                    ip.extend_from_slice(&[64, 6, 0, 0]);
                    ip.extend_from_slice(&self.src.ip().octets());
                    ip.extend_from_slice(&self.dst.ip().octets());
                    let sum = checksum(&ip, 0);
                    ip[10..12].copy_from_slice(&sum.to_be_bytes());
                    ip.extend_from_slice(part);
                    self.send_to(&self.ip_sock, &ip)?;
                }
                Ok(())
            }
        }
    }

    /// A segment without payload (the handshake).
    fn send_raw(&self, seq: u32, ack: u32, flags: u8) -> io::Result<()> {
        let bytes = self.segment(seq, ack, flags, 64240, 0, &[], false);
        self.send_to(&self.sock, &bytes)
    }

    /// A TCP segment's bytes (header and payload), checksum included.
    #[allow(clippy::too_many_arguments)]
    fn segment(
        &self,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        urgent: u16,
        payload: &[u8],
        bad_checksum: bool,
    ) -> Vec<u8> {
        let mut seg = Vec::with_capacity(20 + payload.len());
        seg.extend_from_slice(&self.src.port().to_be_bytes());
        seg.extend_from_slice(&self.dst.port().to_be_bytes());
        seg.extend_from_slice(&seq.to_be_bytes());
        seg.extend_from_slice(&ack.to_be_bytes());
        seg.push(5 << 4);
        seg.push(flags);
        seg.extend_from_slice(&window.to_be_bytes());
        seg.extend_from_slice(&[0, 0]);
        seg.extend_from_slice(&urgent.to_be_bytes());
        seg.extend_from_slice(payload);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src.ip().octets());
        pseudo.extend_from_slice(&self.dst.ip().octets());
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&seg);
        let mut sum = checksum(&pseudo, 0);
        if bad_checksum {
            sum ^= 0x5a5a;
        }
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        seg
    }

    /// Sends `bytes` to the server's address on `sock`.
    fn send_to(&self, sock: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*self.dst.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `bytes` and `to` outlive the call; the lengths are theirs.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next segment from the server to this connection: flags, seq, ack.
    fn recv_segment(&self, deadline: Instant) -> io::Result<(u8, u32, u32)> {
        let mut buf = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from {}", self.dst),
                ));
            }
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if ready < 0 {
                return Err(io::Error::last_os_error());
            }
            if ready == 0 {
                continue;
            }
            // SAFETY: `buf` is writable for its whole length.
            let n =
                unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let p = &buf[..n as usize];
            let ihl = usize::from(p.first().copied().unwrap_or(0) & 0x0f) * 4;
            let Some(t) = p.get(ihl..ihl + 20) else {
                continue;
            };
            let from = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let sport = u16::from_be_bytes([t[0], t[1]]);
            let dport = u16::from_be_bytes([t[2], t[3]]);
            if from != *self.dst.ip() || sport != self.dst.port() || dport != self.src.port() {
                continue;
            }
            let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            return Ok((t[13], seq, ack));
        }
    }
}

/// A kernel TCP connection from the given source address and port (which
/// `std` cannot choose), so a test can find the connection in a server's
/// log by its port. Call on a thread inside the client namespace.
pub fn connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<std::net::TcpStream> {
    let addr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: socket() has no memory preconditions; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor this function owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let one: libc::c_int = 1;
    // SAFETY: `one` and the addresses outlive each call; lengths are theirs.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if libc::bind(
            sock.as_raw_fd(),
            (&addr(src) as *const libc::sockaddr_in).cast(),
            len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::connect(
            sock.as_raw_fd(),
            (&addr(dst) as *const libc::sockaddr_in).cast(),
            len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(std::net::TcpStream::from(sock))
}
