//! Line-oriented protocols: HTTP, SSDP, SIP, RTSP, Syslog, SSH banners,
//! SMTP/POP3/IMAP/FTP control, Redis (RESP).

use super::{Dissect, Payload, Protocol, Scratch};

const HTTP_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"PATCH ",
    b"TRACE ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"MOVE ",
    b"COPY ",
    b"LOCK ",
    b"UNLOCK ",
    b"SEARCH ",
    b"REPORT ",
];

/// Case-insensitive search for a header `name:` at a line start (the first
/// line included: a request's headers may continue in a later segment);
/// returns its trimmed value.
pub(crate) fn header<'a>(data: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    data.split(|b| *b == b'\n').find_map(|line| {
        let value = line.get(name.len() + 1..)?;
        (line[..name.len()].eq_ignore_ascii_case(name) && line[name.len()] == b':')
            .then(|| value.trim_ascii())
    })
}

/// A host name as nDPI reports it: lower case, without a port.
pub(crate) fn host_name(raw: &[u8]) -> Option<String> {
    let host = if raw.first() == Some(&b'[') {
        // [v6addr]:port
        let end = raw
            .iter()
            .position(|b| *b == b']')
            .map_or(raw.len(), |e| e + 1);
        &raw[..end]
    } else {
        let end = raw.iter().position(|b| *b == b':').unwrap_or(raw.len());
        &raw[..end]
    };
    if host.is_empty() || !host.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(String::from_utf8_lossy(host).to_ascii_lowercase())
}

fn starts_with_any(data: &[u8], prefixes: &[&[u8]]) -> bool {
    prefixes.iter().any(|p| data.starts_with(p))
}

fn is_http_version(data: &[u8]) -> bool {
    data.starts_with(b"HTTP/1.") || data.starts_with(b"HTTP/2")
}

/// Most bytes of a request head gathered across segments before it is read.
pub const MAX_HEAD: usize = crate::http::MAX_HEAD;

/// Whether `d` begins a request line, or could once more bytes come (a
/// method split over segments).
fn could_start_request(d: &[u8]) -> bool {
    !d.is_empty()
        && HTTP_METHODS
            .iter()
            .any(|m| m.starts_with(&d[..d.len().min(m.len())]))
}

pub(crate) fn http(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let d = p.data;
    if p.from_client && (!s.http_head.is_empty() || could_start_request(d)) {
        // The request head is gathered until it is whole, however the
        // client splits it (a Host header cut inside the name, say), and
        // then read as one.
        let before = s.http_head.len();
        let room = MAX_HEAD.saturating_sub(before);
        s.http_head.extend_from_slice(&d[..d.len().min(room)]);
        // Read the head only when these bytes may have changed the answer:
        // the first line ended, the head ended, or it is full. A head sent
        // a byte at a time is then looked at a bounded number of times,
        // not once per byte.
        let new = &s.http_head[before.saturating_sub(3)..];
        let ended = new.windows(4).any(|w| w == b"\r\n\r\n") || s.http_head.len() >= MAX_HEAD;
        let first_line = !s.http_line_seen && s.http_head[before..].contains(&b'\n');
        s.http_line_seen |= first_line;
        if !ended && !first_line && before > 0 {
            return Dissect::More;
        }
        let head = std::mem::take(&mut s.http_head);
        return match request_head(&head, s) {
            Some(found) => found,
            None => {
                s.http_head = head;
                Dissect::More
            }
        };
    }
    if is_http_version(d)
        && d.len() >= 12
        && d[8] == b' '
        && d[9..12].iter().all(u8::is_ascii_digit)
    {
        return Dissect::Match(Protocol::Http, None);
    }
    // The first payload may be something else the client sends before the
    // request (rare); one more look, then give up.
    if p.index == 0 {
        Dissect::More
    } else {
        Dissect::No
    }
}

/// What a client's request head (as gathered so far) says: `None` while it
/// is not whole yet.
fn request_head(d: &[u8], s: &mut Scratch) -> Option<Dissect> {
    let whole = d.windows(4).any(|w| w == b"\r\n\r\n") || d.len() >= MAX_HEAD;
    if !starts_with_any(d, HTTP_METHODS) {
        // a method still arriving byte by byte, or not HTTP
        return (!could_start_request(d) || whole).then_some(Dissect::No);
    }
    let Some(line_end) = d.iter().position(|b| *b == b'\n') else {
        return whole.then_some(Dissect::No);
    };
    let line = &d[..line_end];
    if !line.windows(6).any(|w| w == b" HTTP/") {
        return Some(Dissect::No);
    }
    let mut parts = line.trim_ascii_end().split(|b| *b == b' ');
    let text = |b: &[u8]| Some(String::from_utf8_lossy(b).into_owned());
    s.info.http_method = parts.next().and_then(text);
    s.info.http_uri = parts.next().and_then(text);
    s.info.http_uri_raw = s.info.http_uri.clone();
    s.info.http_user_agent = header(d, b"user-agent").and_then(text);
    // A proxy request: CONNECT, or an absolute URI in the request line.
    let target = line.split(|b| *b == b' ').nth(1).unwrap_or(&[]);
    if d.starts_with(b"CONNECT ")
        || target.starts_with(b"http://")
        || target.starts_with(b"https://")
    {
        if !whole && header(d, b"host").is_none() {
            return None;
        }
        let host = header(d, b"host").and_then(host_name).or_else(|| {
            let rest = target.splitn(3, |b| *b == b'/').nth(2).unwrap_or(target);
            host_name(rest.split(|b| *b == b'/').next().unwrap_or(rest))
        });
        return Some(Dissect::Match(Protocol::HttpProxy, host));
    }
    if !whole {
        return None;
    }
    Some(Dissect::Match(
        Protocol::Http,
        header(d, b"host").and_then(host_name),
    ))
}

/// SSDP (UPnP Device Architecture 2.0 §1): HTTP over UDP: `M-SEARCH *`
/// and `NOTIFY *` requests, and the unicast answers to a search (`200 OK`
/// with the `ST` and `USN` headers only SSDP answers carry), from port
/// 1900 or not.
pub(crate) fn ssdp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    let request = [&b"M-SEARCH * HTTP/1."[..], b"NOTIFY * HTTP/1."]
        .iter()
        .any(|start| d.starts_with(start));
    let answer = (d.starts_with(b"HTTP/1.1 200") || d.starts_with(b"HTTP/1.0 200"))
        && (p.port(1900) || (header(d, b"st").is_some() && header(d, b"usn").is_some()));
    if request || answer {
        return Dissect::Match(Protocol::Ssdp, None);
    }
    Dissect::No
}

const SIP_METHODS: &[&[u8]] = &[
    b"INVITE ",
    b"REGISTER ",
    b"OPTIONS ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"SUBSCRIBE ",
    b"NOTIFY ",
    b"MESSAGE ",
    b"INFO ",
    b"PRACK ",
    b"UPDATE ",
    b"REFER ",
    b"PUBLISH ",
];

pub(crate) fn sip(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    let first_line = &d[..d.iter().position(|b| *b == b'\n').unwrap_or(d.len())];
    if d.starts_with(b"SIP/2.0 ")
        || (starts_with_any(d, SIP_METHODS) && first_line.windows(7).any(|w| w == b"SIP/2.0"))
    {
        return Dissect::Match(Protocol::Sip, None);
    }
    if p.index == 0 && p.port(5060) && d.len() < 8 {
        Dissect::More
    } else {
        Dissect::No
    }
}

pub(crate) fn rtsp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    let first_line = &d[..d.iter().position(|b| *b == b'\n').unwrap_or(d.len())];
    if d.starts_with(b"RTSP/1.0 ") || first_line.windows(9).any(|w| w == b" RTSP/1.0") {
        return Dissect::Match(Protocol::Rtsp, None);
    }
    if p.index < 2 {
        Dissect::More
    } else {
        Dissect::No
    }
}

/// RFC 3164/5424: `<PRI>` with PRI 0..=191 and then text.
pub(crate) fn syslog(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 5 || d[0] != b'<' {
        return Dissect::No;
    }
    let Some(close) = d[1..d.len().min(5)].iter().position(|b| *b == b'>') else {
        return Dissect::No;
    };
    let digits = &d[1..1 + close];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Dissect::No;
    }
    let pri: u32 = digits
        .iter()
        .fold(0, |acc, b| acc * 10 + u32::from(b - b'0'));
    if pri > 191
        || !d[2 + close..]
            .iter()
            .take(16)
            .all(|b| b.is_ascii() && (b.is_ascii_graphic() || *b == b' '))
    {
        return Dissect::No;
    }
    Dissect::Match(Protocol::Syslog, None)
}

pub(crate) fn ssh(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    if p.data.starts_with(b"SSH-2.0-")
        || p.data.starts_with(b"SSH-1.99-")
        || p.data.starts_with(b"SSH-1.5-")
    {
        return Dissect::Match(Protocol::Ssh, None);
    }
    if p.index < 2 {
        Dissect::More
    } else {
        Dissect::No
    }
}

/// SMTP, POP3, IMAP and FTP control: the server greets first; the client's
/// commands tell them apart when the greeting is ambiguous or missing.
pub(crate) fn mail_and_ftp(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    let upper = |n: usize| {
        d.iter()
            .take(n)
            .map(u8::to_ascii_uppercase)
            .collect::<Vec<u8>>()
    };
    if !p.from_client {
        if d.starts_with(b"+OK") {
            return Dissect::Match(Protocol::Pop3, None);
        }
        if d.starts_with(b"* OK") || d.starts_with(b"* PREAUTH") {
            return Dissect::Match(Protocol::Imap, None);
        }
        if d.len() >= 4 && (d.starts_with(b"220 ") || d.starts_with(b"220-")) {
            let text = upper(d.len().min(256));
            if text.windows(4).any(|w| w == b"SMTP")
                || text.windows(4).any(|w| w == b"MAIL")
                || p.port(25)
                || p.port(587)
            {
                return Dissect::Match(Protocol::Smtp, None);
            }
            if text.windows(3).any(|w| w == b"FTP") || p.port(21) {
                return Dissect::Match(Protocol::FtpControl, None);
            }
            return Dissect::More;
        }
    } else {
        let text = upper(8);
        if text.starts_with(b"EHLO ") || text.starts_with(b"HELO ") {
            return Dissect::Match(Protocol::Smtp, None);
        }
        if text.starts_with(b"USER ") && p.port(21)
            || text.starts_with(b"AUTH TLS")
            || text.starts_with(b"FEAT")
        {
            return Dissect::Match(Protocol::FtpControl, None);
        }
        if text.starts_with(b"CAPA") || text.starts_with(b"USER ") && p.port(110) {
            return Dissect::Match(Protocol::Pop3, None);
        }
        if d.len() > 4
            && d[0].is_ascii_alphanumeric()
            && text.windows(10.min(text.len())).count() > 0
        {
            let after_tag = d
                .iter()
                .position(|b| *b == b' ')
                .map(|i| &d[i + 1..])
                .unwrap_or(&[]);
            let cmd: Vec<u8> = after_tag
                .iter()
                .take(10)
                .map(u8::to_ascii_uppercase)
                .collect();
            if cmd.starts_with(b"CAPABILITY")
                || cmd.starts_with(b"LOGIN ")
                || cmd.starts_with(b"STARTTLS") && p.port(143)
            {
                return Dissect::Match(Protocol::Imap, None);
            }
        }
    }
    if p.index < 3 {
        Dissect::More
    } else {
        Dissect::No
    }
}

/// RESP: `*N\r\n$len\r\n...` arrays of bulk strings, or simple replies.
pub(crate) fn redis(p: &Payload<'_>, _: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() >= 4
        && d[0] == b'*'
        && d[1].is_ascii_digit()
        && let Some(crlf) = d.windows(2).position(|w| w == b"\r\n")
        && d.get(crlf + 2) == Some(&b'$')
        && d[1..crlf].iter().all(u8::is_ascii_digit)
    {
        return Dissect::Match(Protocol::Redis, None);
    }
    if (d.starts_with(b"+PONG\r\n") || d.starts_with(b"-ERR ") || d.starts_with(b"-NOAUTH"))
        && !p.from_client
    {
        return Dissect::Match(Protocol::Redis, None);
    }
    Dissect::No
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(data: &[u8], from_client: bool, dst_port: u16) -> Payload<'_> {
        Payload {
            data,
            from_client,
            src_port: 40000,
            dst_port,
            index: 0,
            l4: 6,
        }
    }

    #[test]
    fn http_request_with_host() {
        let req =
            b"GET /index.html HTTP/1.1\r\nUser-Agent: x\r\nHost: WWW.Example.com:8080\r\n\r\n";
        assert_eq!(
            http(&payload(req, true, 8080), &mut Scratch::default()),
            Dissect::Match(Protocol::Http, Some("www.example.com".into()))
        );
    }

    #[test]
    fn http_host_in_the_next_segment() {
        let mut s = Scratch::default();
        assert_eq!(
            http(
                &payload(b"POST /upload HTTP/1.1\r\nContent-Length: 5\r\n", true, 80),
                &mut s
            ),
            Dissect::More
        );
        let next = Payload {
            index: 1,
            ..payload(b"Host: a.b\r\n\r\nhello", true, 80)
        };
        assert_eq!(
            http(&next, &mut s),
            Dissect::Match(Protocol::Http, Some("a.b".into()))
        );
    }

    /// A request head split anywhere (inside the method, inside the Host
    /// header's name and value) is read whole: the host comes out entire.
    #[test]
    fn a_request_head_split_anywhere_gives_the_whole_host() {
        let req: &[u8] = b"GET / HTTP/1.1\r\nHost: blocked.test\r\nUser-Agent: x\r\n\r\n";
        let host_at = req.windows(5).position(|w| w == b"Host:").unwrap();
        for cuts in [
            vec![host_at + 9],
            vec![2, host_at + 3, host_at + 10, host_at + 12],
            vec![1, 2, 3],
        ] {
            let mut s = Scratch::default();
            let mut from = 0;
            let mut result = Dissect::More;
            for (index, to) in cuts.iter().copied().chain([req.len()]).enumerate() {
                let p = Payload {
                    index: index as u32,
                    ..payload(&req[from..to], true, 80)
                };
                result = http(&p, &mut s);
                from = to;
                if result != Dissect::More {
                    break;
                }
            }
            assert_eq!(
                result,
                Dissect::Match(Protocol::Http, Some("blocked.test".into())),
                "cut at {cuts:?}"
            );
        }
    }

    #[test]
    fn not_http() {
        assert_eq!(
            http(
                &Payload {
                    index: 1,
                    ..payload(b"\x16\x03\x01\x00", true, 80)
                },
                &mut Scratch::default()
            ),
            Dissect::No
        );
        let not_a_method = Payload {
            index: 1,
            ..payload(b"GETTING STARTED\r\nmore", true, 80)
        };
        assert_eq!(http(&not_a_method, &mut Scratch::default()), Dissect::No);
    }

    #[test]
    fn syslog_priority_range() {
        assert_eq!(
            syslog(
                &payload(b"<34>Oct 11 22:14:15 mymachine su: failed", true, 514),
                &mut Scratch::default()
            ),
            Dissect::Match(Protocol::Syslog, None)
        );
        assert_eq!(
            syslog(&payload(b"<999>x y", true, 514), &mut Scratch::default()),
            Dissect::No
        );
        assert_eq!(
            syslog(&payload(b"<a>xyz", true, 514), &mut Scratch::default()),
            Dissect::No
        );
    }

    #[test]
    fn mail_greetings() {
        let server = |d| Payload {
            from_client: false,
            ..payload(d, false, 40000)
        };
        assert_eq!(
            mail_and_ftp(
                &server(b"220 mx.example.com ESMTP Postfix\r\n"),
                &mut Scratch::default()
            ),
            Dissect::Match(Protocol::Smtp, None)
        );
        assert_eq!(
            mail_and_ftp(&server(b"+OK POP3 ready\r\n"), &mut Scratch::default()),
            Dissect::Match(Protocol::Pop3, None)
        );
        assert_eq!(
            mail_and_ftp(
                &server(b"* OK IMAP4rev1 ready\r\n"),
                &mut Scratch::default()
            ),
            Dissect::Match(Protocol::Imap, None)
        );
        assert_eq!(
            mail_and_ftp(
                &server(b"220 ProFTPD Server ready\r\n"),
                &mut Scratch::default()
            ),
            Dissect::Match(Protocol::FtpControl, None)
        );
    }
}
