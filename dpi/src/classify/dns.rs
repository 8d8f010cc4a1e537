//! DNS, mDNS and LLMNR (one wire format, told apart by port), with the first
//! question's name as the host. Only DNS-family ports are considered: random
//! bytes parse as a DNS header far too often to trust it elsewhere.

use super::{Dissect, Payload, Protocol, Scratch, tls::Reader};
use crate::flow::PROTO_TCP;

const MAX_NAME: usize = 255;

/// Reads a (possibly compressed) name starting at `pos` of `msg`, as nDPI
/// renders it (lower case, odd bytes as `?`), or `raw`: as sent, as
/// Suricata's `dns.query` (case kept; bytes past ASCII as their code points).
fn read_name(msg: &[u8], mut pos: usize, raw: bool) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos)?;
        match len {
            0 => {
                return Some((name, end.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let target = usize::from(l & 0x3f) << 8 | usize::from(*msg.get(pos + 1)?);
                end.get_or_insert(pos + 2);
                if target >= pos {
                    return None; // pointers must go backwards
                }
                pos = target;
            }
            l if l & 0xc0 == 0 => {
                let label = msg.get(pos + 1..pos + 1 + usize::from(l))?;
                if !name.is_empty() {
                    name.push('.');
                }
                // Rendered as nDPI renders names, so hosts compare: a byte
                // outside the host-name alphabet becomes '?', '*' becomes '_'.
                name.extend(label.iter().map(|b| match b {
                    _ if raw => char::from(*b),
                    b'*' => '_',
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') => {
                        char::from(b.to_ascii_lowercase())
                    }
                    _ => '?',
                }));
                if name.len() > MAX_NAME {
                    return None;
                }
                pos += 1 + usize::from(l);
            }
            _ => return None,
        }
    }
    None
}

/// Parses a DNS message; returns the first question's (or answer's) name,
/// `Some(None)` when the header is sound but the name is not (nDPI still calls
/// such a message DNS, flagged malformed).
pub(crate) fn parse(msg: &[u8]) -> Option<Option<String>> {
    parse_as(msg, false)
}

fn parse_as(msg: &[u8], raw: bool) -> Option<Option<String>> {
    let mut r = Reader::new(msg);
    let _id = r.u16()?;
    let flags = r.u16()?;
    let (qd, an, ns, ar) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
    let opcode = (flags >> 11) & 0xf;
    let rcode = flags & 0xf;
    let is_response = flags & 0x8000 != 0;
    if !matches!(opcode, 0 | 1 | 2 | 4 | 5)
        || rcode > 10
        || qd > 32
        || an > 512
        || ns > 512
        || ar > 512
    {
        return None;
    }
    if qd == 0 && !is_response || qd == 0 && an == 0 && ns == 0 && ar == 0 {
        return None;
    }
    // First question, else first answer (mDNS announcements have no question).
    let Some((name, after)) = read_name(msg, 12, raw) else {
        return Some(None);
    };
    let Some(rr) = msg.get(after..after + 4) else {
        return Some(None);
    };
    let class = u16::from_be_bytes([rr[2], rr[3]]) & 0x7fff;
    if !matches!(class, 1 | 3 | 4 | 254 | 255) {
        return Some(None);
    }
    Some((!name.is_empty()).then_some(name))
}

/// DNS over TCP: most bytes of the first message (after its two-byte length)
/// gathered across segments before it is read; a query is far shorter.
pub const MAX_TCP_MESSAGE: usize = 1024;

pub(crate) fn dns(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let protocol = if p.port(53) || (p.l4 == PROTO_TCP && p.port(5353)) {
        Protocol::Dns
    } else if p.port(5353) {
        Protocol::Mdns
    } else if p.port(5355) {
        Protocol::Llmnr
    } else {
        return Dissect::No;
    };
    let msg = if p.l4 == PROTO_TCP {
        // A two-byte length, then the message, split over segments as the
        // sender likes (the length alone in the first one, say): gathered
        // until the message is whole.
        let room = (2 + MAX_TCP_MESSAGE).saturating_sub(s.dns_tcp.len());
        s.dns_tcp
            .extend_from_slice(&p.data[..p.data.len().min(room)]);
        // Bounded by bytes, not segments: one-byte segments must not rule
        // DNS out before its message is whole.
        let b = &s.dns_tcp;
        if b.len() < 2 + 12 {
            return Dissect::More;
        }
        let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
        if len < 12 {
            return Dissect::No;
        }
        let have = b.len() - 2;
        if have < len && have < MAX_TCP_MESSAGE {
            return Dissect::More;
        }
        &b[2..2 + have.min(len)]
    } else {
        p.data
    };
    match parse(msg) {
        Some(host) => Dissect::Match(protocol, host),
        None => Dissect::No,
    }
}

/// The DNS messages of one direction of a TCP stream, each after its
/// two-byte length (RFC 1035 §4.2.2), however the segments split them. Only
/// the first [`MAX_TCP_MESSAGE`] bytes of a message are kept (its question
/// comes first); the rest is skipped.
#[derive(Clone, Debug, Default)]
pub struct TcpMessages {
    buf: Vec<u8>,
    /// Bytes of the current message still to skip.
    skip: usize,
}

impl TcpMessages {
    /// Bytes waiting for the rest of a message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Reads the next bytes of the stream; each message now whole (or its
    /// kept head) is pushed to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) {
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        self.buf.extend_from_slice(&data[skipped..]);
        let mut pos = 0;
        loop {
            let rest = &self.buf[pos..];
            if rest.len() < 2 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let kept = len.min(MAX_TCP_MESSAGE);
            if rest.len() < 2 + kept {
                break;
            }
            out.push(rest[2..2 + kept].to_vec());
            if rest.len() >= 2 + len {
                pos += 2 + len;
            } else {
                self.skip = 2 + len - rest.len();
                pos = self.buf.len();
            }
        }
        self.buf.drain(..pos);
    }
}

/// The first question's name of a DNS request, as sent (case kept, as
/// Suricata's `dns.query`); None if the message is a response or no DNS
/// message.
pub fn query_name(msg: &[u8]) -> Option<String> {
    let request = msg.get(2).is_some_and(|flags| flags & 0x80 == 0);
    if !request {
        return None;
    }
    parse_as(msg, true).flatten()
}

/// The response to a query already classified: its name replaces the query's.
pub(crate) fn response(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let msg = if p.l4 == PROTO_TCP {
        p.data.get(2..).unwrap_or(&[])
    } else {
        p.data
    };
    let is_response = msg.get(2).is_some_and(|b| b & 0x80 != 0);
    match parse(msg) {
        Some(host) if is_response => Dissect::Match(Protocol::Dns, host),
        _ => Dissect::More,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tcp_messages_are_read_however_the_stream_splits_them() {
        let query = |name: &str| {
            let m = testbed::frames::dns_query(name);
            let mut framed = (m.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&m);
            framed
        };
        // two queries, then one longer than what is kept
        let mut stream = [query("a.test"), query("blocked.test")].concat();
        let mut long = query("c.test");
        long.extend_from_slice(&[0; 2000]);
        let len = (long.len() - 2) as u16;
        long[..2].copy_from_slice(&len.to_be_bytes());
        stream.extend_from_slice(&long);
        stream.extend_from_slice(&query("d.test"));
        for size in [1, 3, 7, stream.len()] {
            let mut t = TcpMessages::default();
            let mut out = Vec::new();
            for piece in stream.chunks(size) {
                t.feed(piece, &mut out);
                assert!(t.buf.len() <= 2 + MAX_TCP_MESSAGE + size);
            }
            let names: Vec<_> = out.iter().map(|m| query_name(m)).collect();
            assert_eq!(
                names,
                [
                    Some("a.test"),
                    Some("blocked.test"),
                    Some("c.test"),
                    Some("d.test")
                ]
                .map(|n| n.map(String::from)),
                "in pieces of {size}"
            );
        }
    }

    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    fn payload(data: &[u8], dst_port: u16) -> Payload<'_> {
        Payload {
            data,
            from_client: true,
            src_port: 40000,
            dst_port,
            index: 0,
            l4: 17,
        }
    }

    #[test]
    fn query_names_by_port() {
        let q = query("WWW.example.com");
        assert_eq!(
            dns(&payload(&q, 53), &mut Scratch::default()),
            Dissect::Match(Protocol::Dns, Some("www.example.com".into()))
        );
        assert_eq!(
            dns(&payload(&q, 5353), &mut Scratch::default()),
            Dissect::Match(Protocol::Mdns, Some("www.example.com".into()))
        );
        assert_eq!(
            dns(&payload(&q, 5355), &mut Scratch::default()),
            Dissect::Match(Protocol::Llmnr, Some("www.example.com".into()))
        );
        assert_eq!(
            dns(&payload(&q, 9999), &mut Scratch::default()),
            Dissect::No
        );
    }

    /// DNS over TCP, however the sender splits it: the length prefix alone,
    /// then the message; or one byte at a time.
    #[test]
    fn tcp_messages_split_anywhere() {
        let q = query("split.example");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        for cuts in [
            vec![2],
            vec![1, 2, 3, 14],
            (1..framed.len()).collect::<Vec<_>>(),
        ] {
            let mut s = Scratch::default();
            let mut from = 0;
            let mut result = Dissect::More;
            for (index, to) in cuts.iter().copied().chain([framed.len()]).enumerate() {
                let p = Payload {
                    index: index as u32,
                    l4: 6,
                    ..payload(&framed[from..to], 53)
                };
                result = dns(&p, &mut s);
                from = to;
                if result != Dissect::More {
                    break;
                }
            }
            assert_eq!(
                result,
                Dissect::Match(Protocol::Dns, Some("split.example".into())),
                "cut at {cuts:?}"
            );
        }
    }

    #[test]
    fn pointer_loops_and_truncation_give_no_name() {
        let mut looped = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&looped), Some(None), "sound header, unusable name");
        let q = query("a.example");
        for len in 0..12 {
            assert_eq!(parse(&q[..len]), None, "{len}: no header");
        }
        for len in 12..q.len() {
            assert_eq!(parse(&q[..len]), Some(None), "{len}: truncated name");
        }
        let mut bad_opcode = query("a.example");
        bad_opcode[2] = 0x7 << 3;
        assert_eq!(parse(&bad_opcode), None);
    }
}
