//! Finding and (with `--force`) removing an XDP program that is already on an
//! interface. aya 0.14 has no API for somebody else's attachment, so this uses
//! libbpf's `bpf_xdp_query`, `bpf_xdp_detach` and the link iterator. This is
//! the only module with `unsafe` besides the generated ABI.

use std::{fmt, io, mem, os::raw::c_int};

use libbpf_sys as sys;

use crate::Error;

/// An XDP program found on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// Kernel program id (`bpftool prog show id N`).
    pub prog_id: u32,
    /// Program name, if the kernel knows it.
    pub name: String,
    /// `native`, `generic`, `offload` or `multi`.
    pub mode: &'static str,
    /// Id of the bpf_link holding it, if it was attached through a link
    /// (otherwise it was attached over netlink, e.g. by `ip link set xdp`).
    pub link_id: Option<u32>,
    /// More than one XDP link holds this program on an interface with this
    /// index (the same program on a namespace's twin of the interface): a
    /// link's info names no namespace, so which one is ours is unknown.
    pub link_ambiguous: bool,
}

impl fmt::Display for AttachedProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "program id {} `{}` in {} mode",
            self.prog_id, self.name, self.mode
        )?;
        if let Some(link) = self.link_id {
            write!(f, ", held by bpf_link id {link}")?;
        }
        Ok(())
    }
}

/// What XDP program, if any, is attached to `ifindex`.
pub(crate) fn query(iface: &str, ifindex: u32) -> Result<Option<AttachedProgram>, Error> {
    let mut opts = sys::bpf_xdp_query_opts {
        sz: mem::size_of::<sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: `opts` is a valid, sized `bpf_xdp_query_opts` that outlives the call.
    let rc = unsafe { sys::bpf_xdp_query(ifindex as c_int, 0, &mut opts) };
    if rc < 0 {
        return Err(Error::Netlink {
            iface: iface.into(),
            what: "query attached XDP program",
            source: io::Error::from_raw_os_error(-rc),
        });
    }
    let mode = match u32::from(opts.attach_mode) {
        sys::XDP_ATTACHED_NONE => return Ok(None),
        sys::XDP_ATTACHED_DRV => "native",
        sys::XDP_ATTACHED_SKB => "generic",
        sys::XDP_ATTACHED_HW => "offload",
        _ => "multi",
    };
    let prog_id = [
        opts.prog_id,
        opts.drv_prog_id,
        opts.skb_prog_id,
        opts.hw_prog_id,
    ]
    .into_iter()
    .find(|id| *id != 0)
    .unwrap_or(0);
    let links = xdp_links_holding(ifindex, prog_id);
    Ok(Some(AttachedProgram {
        prog_id,
        name: prog_name(prog_id),
        mode,
        link_id: (links.len() == 1).then(|| links[0]),
        link_ambiguous: links.len() > 1,
    }))
}

/// Removes `existing` from the interface: through its link if it has one,
/// over netlink otherwise.
pub(crate) fn detach(iface: &str, ifindex: u32, existing: &AttachedProgram) -> Result<(), Error> {
    if existing.link_ambiguous {
        return Err(Error::Netlink {
            iface: iface.into(),
            what: "detach the existing XDP program",
            source: io::Error::other(format!(
                "{existing} is held by several bpf_links on interfaces with this index in different \
                 network namespaces, and a link does not say which namespace it is in; detach it \
                 where it was attached (remove its pinned link, or stop the program that holds it)"
            )),
        });
    }
    let rc = match existing.link_id {
        Some(link_id) => {
            // SAFETY: plain syscall wrappers on ids/fds; the fd is closed below.
            let fd = unsafe { sys::bpf_link_get_fd_by_id(link_id) };
            if fd < 0 {
                fd
            } else {
                // SAFETY: `fd` is a link fd we own.
                let rc = unsafe { sys::bpf_link_detach(fd) };
                // SAFETY: closing the fd we opened above.
                unsafe { libc::close(fd) };
                rc
            }
        }
        None => {
            let flags = match existing.mode {
                "native" => sys::XDP_FLAGS_DRV_MODE,
                "generic" => sys::XDP_FLAGS_SKB_MODE,
                "offload" => sys::XDP_FLAGS_HW_MODE,
                _ => 0,
            };
            // SAFETY: a null opts pointer is allowed by libbpf.
            unsafe { sys::bpf_xdp_detach(ifindex as c_int, flags, std::ptr::null()) }
        }
    };
    if rc < 0 {
        return Err(Error::Netlink {
            iface: iface.into(),
            what: "detach the existing XDP program",
            source: io::Error::from_raw_os_error(-rc),
        });
    }
    Ok(())
}

fn prog_name(prog_id: u32) -> String {
    // SAFETY: syscall wrapper; the fd is checked and closed.
    let fd = unsafe { sys::bpf_prog_get_fd_by_id(prog_id) };
    if fd < 0 {
        return "?".into();
    }
    // SAFETY: zeroed `bpf_prog_info` is a valid initial value (all integers).
    let mut info: sys::bpf_prog_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: `info` and `len` are valid for writes and sized as told.
    let rc = unsafe { sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    // SAFETY: closing the fd we opened above.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return "?".into();
    }
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&name).into_owned()
}

/// The ids of the XDP bpf_links that hold program `prog_id` on an
/// interface with index `ifindex`. Interface indexes are per network
/// namespace and a link's info names none, so matching the index alone
/// finds links in other namespaces too; the program id the interface here
/// reports narrows it to the links of that program, which (unless one
/// program is attached in several namespaces) is exactly ours.
fn xdp_links_holding(ifindex: u32, prog_id: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is valid for writes.
        if unsafe { sys::bpf_link_get_next_id(id, &mut next) } < 0 {
            return found;
        }
        id = next;
        // SAFETY: syscall wrapper; the fd is checked and closed.
        let fd = unsafe { sys::bpf_link_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: zeroed `bpf_link_info` is a valid initial value (integers and a union of integers).
        let mut info: sys::bpf_link_info = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<sys::bpf_link_info>() as u32;
        // SAFETY: `info` and `len` are valid for writes and sized as told.
        let rc = unsafe { sys::bpf_link_get_info_by_fd(fd, &mut info, &mut len) };
        // SAFETY: closing the fd we opened above.
        unsafe { libc::close(fd) };
        if rc == 0 && info.type_ == sys::BPF_LINK_TYPE_XDP && info.prog_id == prog_id {
            // SAFETY: the union member matches the link type checked above.
            let link_ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
            if link_ifindex == ifindex {
                found.push(id);
            }
        }
    }
}
