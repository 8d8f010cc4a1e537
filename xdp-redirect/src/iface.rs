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

/// Number of RX queues the kernel has for the interface (`/sys/class/net/IF/queues/rx-*`).
/// Inside `ip netns exec`, /sys is remounted for that namespace, so this is right there too.
pub fn rx_queues(iface: &str) -> io::Result<u32> {
    let dir = format!("/sys/class/net/{iface}/queues");
    let mut count = 0;
    for entry in fs::read_dir(&dir)? {
        if entry?.file_name().to_string_lossy().starts_with("rx-") {
            count += 1;
        }
    }
    Ok(count)
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
    const SIOCETHTOOL: libc::c_ulong = 0x8946;

    if iface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: all-zero is a valid value for these plain-integer structs.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: a plain datagram socket used only for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ifr` points at `info`, both live until the call returns.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    let len = info
        .driver
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}
