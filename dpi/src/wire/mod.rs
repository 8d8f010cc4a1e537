//! Zero-copy, bounds-checked-once views of protocol headers, in the manner of
//! smoltcp: a `Packet<T: AsRef<[u8]>>` per layer with field offsets in a
//! private `field` module, `new_checked` for untrusted input, and accessors
//! that cannot panic once `new_checked` has succeeded.

pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

use std::fmt;

/// The protocol layer an error was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Ethernet,
    Vlan,
    Ipv4,
    Ipv6,
    Ipv6Ext,
    Tcp,
    Udp,
    Icmp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet",
            Layer::Vlan => "VLAN",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Ipv6Ext => "IPv6 extension header",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
            Layer::Icmp => "ICMP",
        })
    }
}

/// Why a header could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the header does.
    Truncated {
        layer: Layer,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// A field holds a value the layer does not allow (version, header length...).
    Malformed {
        layer: Layer,
        offset: usize,
        what: &'static str,
    },
}

impl Error {
    /// The same error with its offset moved by `base` (the header's position in the frame).
    pub fn at(self, base: usize) -> Error {
        match self {
            Error::Truncated {
                layer,
                offset,
                needed,
                available,
            } => Error::Truncated {
                layer,
                offset: offset + base,
                needed,
                available,
            },
            Error::Malformed {
                layer,
                offset,
                what,
            } => Error::Malformed {
                layer,
                offset: offset + base,
                what,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated {
                layer,
                offset,
                needed,
                available,
            } => write!(
                f,
                "{layer} header at offset {offset} truncated: needs {needed} bytes, {available} available"
            ),
            Error::Malformed {
                layer,
                offset,
                what,
            } => write!(f, "{layer} header at offset {offset}: {what}"),
        }
    }
}

impl std::error::Error for Error {}

type Field = std::ops::Range<usize>;

#[inline]
fn be16(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

#[inline]
fn be32(b: &[u8], f: Field) -> u32 {
    u32::from_be_bytes([b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3]])
}

#[inline]
fn need(layer: Layer, buf: &[u8], needed: usize) -> Result<(), Error> {
    if buf.len() < needed {
        Err(Error::Truncated {
            layer,
            offset: 0,
            needed,
            available: buf.len(),
        })
    } else {
        Ok(())
    }
}
