//! Facts about a network interface that the loader and the binary check
//! before touching it: its index, its driver, how many RX queues it has.

use std::{ffi::CString, fs, io};

use crate::Error;

/// The interface index, or [`Error::UnknownInterface`].
pub fn index(iface: &str) -> Result<u32, Error> {
    let name = CString::new(iface).map_err(|_| Error::UnknownInterface(iface.to_string()))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(Error::UnknownInterface(iface.to_string()))
    } else {
        Ok(index)
    }
}

/// Number of RX queues the interface receives on: the channel counts the
/// driver reports (`ethtool -l`: rx + combined), or where it reports none,
/// the queues the kernel has for it (`/sys/class/net/IF/queues/rx-*`).
pub fn rx_queues(iface: &str) -> io::Result<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    // SAFETY: `channels` is the struct ETHTOOL_GCHANNELS fills, alive for the call.
    match unsafe { ethtool(iface, (&mut channels as *mut EthtoolChannels).cast()) } {
        Ok(()) if channels.rx_count + channels.combined_count > 0 => {
            Ok(channels.rx_count + channels.combined_count)
        }
        _ => rx_queues_in_sysfs(iface),
    }
}

/// The RX queues the kernel has for the interface, from sysfs. Inside `ip
/// netns exec`, /sys is remounted for that namespace, so this is right there too.
fn rx_queues_in_sysfs(iface: &str) -> io::Result<u32> {
    let dir = format!("/sys/class/net/{iface}/queues");
    let mut count = 0;
    for entry in fs::read_dir(&dir)? {
        if entry?.file_name().to_string_lossy().starts_with("rx-") {
            count += 1;
        }
    }
    Ok(count)
}

/// An interface's RSS configuration (`ethtool -x`): hash function, input
/// transformation, key and indirection table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rss {
    /// `ETH_RSS_HASH_*` bits (1 = Toeplitz, 2 = XOR, 4 = CRC32).
    pub hfunc: u8,
    /// `RXH_XFRM_*` bits (1 = symmetric-xor, 2 = symmetric-or-xor).
    pub input_xfrm: u8,
    pub key: Vec<u8>,
    pub indirection: Vec<u32>,
}

impl Rss {
    /// Whether the hash gives both directions of a flow the same queue: an
    /// input transformation that makes it so (`ethtool -X IF xfrm
    /// symmetric-xor`), or a Toeplitz key that repeats every 16 bits (such
    /// as 6d:5a:6d:5a..., Woo and Park's symmetric key), which swaps
    /// source and destination addresses and ports without changing the hash.
    pub fn is_symmetric(&self) -> bool {
        const ETH_RSS_HASH_TOP: u8 = 1;
        const RXH_XFRM_SYM: u8 = 0b11;
        if self.input_xfrm & RXH_XFRM_SYM != 0 {
            return true;
        }
        self.hfunc & ETH_RSS_HASH_TOP != 0
            && self.key.len() >= 4
            && self
                .key
                .iter()
                .enumerate()
                .all(|(i, b)| *b == self.key[i % 2])
    }
}

/// The interface's RSS configuration, if the driver reports one (veth
/// does not: its receive queue is the sender's choice).
pub fn rss(iface: &str) -> io::Result<Rss> {
    const ETHTOOL_GRSSH: u32 = 0x0000_0046;
    const HEADER: usize = 24; // cmd, rss_context, indir_size, key_size, hfunc, input_xfrm, 2 + 4 reserved
    let mut head = [0u32; HEADER / 4];
    head[0] = ETHTOOL_GRSSH;
    // SAFETY: a struct ethtool_rxfh with no table room (sizes 0 ask for the sizes).
    unsafe { ethtool(iface, head.as_mut_ptr().cast())? };
    let (indir_size, key_size) = (head[2] as usize, head[3] as usize);
    if indir_size > 1 << 16 || key_size > 1 << 10 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "RSS table sizes out of range",
        ));
    }
    let words = HEADER / 4 + indir_size + key_size.div_ceil(4);
    let mut buf = vec![0u32; words];
    buf[0] = ETHTOOL_GRSSH;
    buf[2] = indir_size as u32;
    buf[3] = key_size as u32;
    // SAFETY: a struct ethtool_rxfh followed by room for the sizes it names.
    unsafe { ethtool(iface, buf.as_mut_ptr().cast())? };
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let indirection = buf[HEADER / 4..HEADER / 4 + indir_size].to_vec();
    let key_at = HEADER + indir_size * 4;
    Ok(Rss {
        hfunc: bytes[16],
        input_xfrm: bytes[17],
        key: bytes[key_at..key_at + key_size].to_vec(),
        indirection,
    })
}

/// Runs the SIOCETHTOOL ioctl on `iface` with `data` as its argument.
///
/// # Safety
/// `data` must point at the struct the command in its first word expects,
/// with the room that command writes into.
unsafe fn ethtool(iface: &str, data: *mut libc::c_void) -> io::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    if iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.cast();
    // SAFETY: a plain datagram socket used only for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ifr` points at `data`, which the caller keeps valid.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if rc < 0 { Err(err) } else { Ok(()) }
}

/// The driver name as `ethtool -i` reports it (`veth`, `ice`, `mlx5_core`...).
pub fn driver(iface: &str) -> io::Result<String> {
    #[repr(C)]
    struct EthtoolDrvinfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    // SAFETY: all-zero is a valid value for this plain-integer struct.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: `info` is the struct ETHTOOL_GDRVINFO fills, alive for the call.
    unsafe { ethtool(iface, (&mut info as *mut EthtoolDrvinfo).cast())? };
    let len = info
        .driver
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toeplitz(key: &[u8]) -> Rss {
        Rss {
            hfunc: 1,
            input_xfrm: 0,
            key: key.to_vec(),
            indirection: vec![0, 1],
        }
    }

    #[test]
    fn symmetric_rss_is_told_apart() {
        assert!(toeplitz(&[0x6d, 0x5a].repeat(20)).is_symmetric());
        // the Microsoft default key: not symmetric
        let ms = [
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
            0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
        ];
        assert!(!toeplitz(&ms).is_symmetric());
        assert!(
            Rss {
                input_xfrm: 1,
                ..toeplitz(&ms)
            }
            .is_symmetric(),
            "symmetric-xor makes any key symmetric"
        );
        assert!(
            !Rss {
                hfunc: 4,
                ..toeplitz(&[0x6d, 0x5a].repeat(20))
            }
            .is_symmetric(),
            "a repeating key says nothing about CRC32"
        );
        assert!(!toeplitz(&[]).is_symmetric());
    }
}
