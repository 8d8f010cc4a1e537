//! HTTP/1.x requests read from a client's reassembled stream: every request
//! of a connection (keep-alive, pipelining), with the bodies between them
//! skipped by `Content-Length` or chunked framing (RFC 9112 §6).
//!
//! Where servers read a request differently, the request is read every way
//! a server behind the IPS might read it and each reading counts, so a rule
//! on the host sees whichever the target acts on, and the ambiguity is
//! flagged ([`HttpRequest::anomalies`]):
//! - an absolute URI's host (`GET http://a/ HTTP/1.1` with `Host: b`): both
//!   hosts; the URI is read as its path (RFC 9112 §3.2.2);
//! - a repeated Host header: every value;
//! - a header name with whitespace before the colon (`Host : x`, which
//!   RFC 9112 §5.1 says to reject and some servers accept): read as the name;
//! - a folded header line (obs-fold, §5.2): joined to the previous value;
//! - empty lines before the request line (§2.2): skipped;
//! - both `Content-Length` and chunked `Transfer-Encoding` (§6.3): chunked.

/// Longest request head read; a longer one is read up to here and flagged.
pub const MAX_HEAD: usize = 64 * 1024;

/// Longest chunk-size or trailer line kept while it arrives.
const MAX_LINE: usize = 1024;

/// One request as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent.
    pub uri_raw: String,
    /// The target as a server reads it (Suricata's normalised `http.uri`):
    /// an absolute URI's path, percent-encoding decoded, `.` and `..`
    /// segments resolved, repeated `/` compressed.
    pub uri: String,
    /// Every host a server might take this request to be for, lower-case,
    /// without a port: Host header values and the absolute URI's host.
    pub hosts: Vec<String>,
    pub user_agent: Option<String>,
    /// Ambiguities and violations found (`duplicate-host`...).
    pub anomalies: Vec<&'static str>,
}

#[derive(Clone, Debug, Default)]
enum State {
    #[default]
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Chunked body: reading a chunk-size line.
    ChunkSize,
    /// Chunked body: this many chunk bytes, then CRLF.
    ChunkData(u64),
    ChunkDataEnd,
    /// Trailer section after the last chunk, up to an empty line.
    Trailers,
    /// Discarding the rest of a line that cannot be a request line.
    SkipLine,
    /// Not HTTP any more (CONNECT tunnel, an upgrade, a gap): nothing read.
    Opaque,
}

/// The request parser of one client direction.
#[derive(Clone, Debug, Default)]
pub struct HttpRequests {
    state: State,
    /// Bytes not consumed yet (a head or a line waiting for its end).
    buf: Vec<u8>,
    /// How far into `buf` the search for the head's end has looked.
    scanned: usize,
    /// The head's first line was seen whole and is a request line.
    line_checked: bool,
    /// Lines skipped where a request line should have been.
    pub junk_lines: u32,
    /// Requests read so far.
    pub requests: u32,
}

impl HttpRequests {
    /// True once the stream stopped being HTTP requests.
    pub fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Whether the stream is HTTP requests as far as it went: requests were
    /// read and it did not turn into something else.
    pub fn is_http(&self) -> bool {
        self.requests > 0 && !self.is_opaque()
    }

    /// Bytes waiting for the end of a head or line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of the stream went by unseen: the framing is lost.
    pub fn gap(&mut self) {
        self.buf = Vec::new();
        self.state = State::Opaque;
    }

    /// Reads the next bytes of the client's stream; each request whose head
    /// is now whole is pushed to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<HttpRequest>) {
        if self.is_opaque() {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        while pos < self.buf.len() {
            let rest = &self.buf[pos..];
            match self.state {
                State::Opaque => break,
                State::Body(left) | State::ChunkData(left) => {
                    let n = left.min(rest.len() as u64);
                    pos += n as usize;
                    self.state = match (&self.state, left == n) {
                        (State::Body(_), true) => State::Head,
                        (State::Body(_), false) => State::Body(left - n),
                        (_, true) => State::ChunkDataEnd,
                        (_, false) => State::ChunkData(left - n),
                    };
                }
                State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    let Some(lf) = rest.iter().position(|b| *b == b'\n') else {
                        if rest.len() > MAX_LINE {
                            self.state = State::Opaque;
                        }
                        break;
                    };
                    let line = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
                    self.state = match self.state {
                        State::ChunkDataEnd => State::ChunkSize,
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => chunk_size(line).map_or(State::Opaque, |n| {
                            if n == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(n)
                            }
                        }),
                    };
                    pos += lf + 1;
                }
                State::SkipLine => match rest.iter().position(|b| *b == b'\n') {
                    Some(lf) => {
                        pos += lf + 1;
                        self.state = State::Head;
                    }
                    None => pos = self.buf.len(),
                },
                State::Head => {
                    // Empty lines before a request line are skipped.
                    if matches!(rest[0], b'\r' | b'\n') {
                        pos += 1;
                        continue;
                    }
                    // What cannot start a request line is skipped to the
                    // end of its line as it comes, never gathered.
                    if !could_start_request_line(rest) {
                        self.junk_lines += 1;
                        self.scanned = 0;
                        self.line_checked = false;
                        self.state = State::SkipLine;
                        continue;
                    }
                    // A first line that is no request line is skipped. (Each
                    // byte is looked at once: what was scanned before has no
                    // line end.)
                    if !self.line_checked {
                        let from = self.scanned.min(rest.len());
                        if let Some(lf) = rest[from..].iter().position(|b| *b == b'\n') {
                            let lf = from + lf;
                            if request_line(&rest[..lf]).is_none() {
                                self.junk_lines += 1;
                                self.scanned = 0;
                                pos += lf + 1;
                                continue;
                            }
                            self.line_checked = true;
                        }
                    }
                    let from = self.scanned.saturating_sub(3);
                    let end = head_end(&rest[from..]).map(|e| from + e);
                    let (head_len, too_long) = match end {
                        Some(e) => (e, false),
                        None if rest.len() >= MAX_HEAD => (MAX_HEAD, true),
                        None => {
                            self.scanned = rest.len();
                            break;
                        }
                    };
                    self.scanned = 0;
                    self.line_checked = false;
                    match parse_head(&rest[..head_len]) {
                        Some((mut request, next)) => {
                            self.state = next;
                            if too_long {
                                request.anomalies.push("head-too-long");
                                self.state = State::Opaque;
                            }
                            self.requests += 1;
                            out.push(request);
                        }
                        // A request line too long to end within the limit.
                        None => self.state = State::Opaque,
                    }
                    pos += head_len;
                }
            }
        }
        if self.is_opaque() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..pos);
        }
    }
}

/// Length of a head up to and including its empty line (CRLF CRLF, or the
/// bare LF LF servers also accept).
fn head_end(d: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < d.len() {
        if d[i] == b'\n' {
            let rest = &d[i + 1..];
            if rest.starts_with(b"\r\n") {
                return Some(i + 3);
            }
            if rest.starts_with(b"\n") {
                return Some(i + 2);
            }
        }
        i += 1;
    }
    None
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|b| *b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `Host` value (or an authority) as a host name: lower-case, without
/// userinfo or port.
fn host_of(authority: &[u8]) -> String {
    let a = authority.trim_ascii();
    let a = match a.iter().rposition(|b| *b == b'@') {
        Some(at) => &a[at + 1..],
        None => a,
    };
    let a = if a.first() == Some(&b'[') {
        // [v6]:port
        match a.iter().position(|b| *b == b']') {
            Some(end) => &a[..=end],
            None => a,
        }
    } else {
        match a.iter().rposition(|b| *b == b':') {
            Some(colon) if a[colon + 1..].iter().all(u8::is_ascii_digit) => &a[..colon],
            _ => a,
        }
    };
    text(a).to_ascii_lowercase()
}

/// Whether `d` can be the start of a request line: a method token (upper
/// case letters, as every registered method is) ended by a space, or still
/// arriving.
fn could_start_request_line(d: &[u8]) -> bool {
    const LONGEST_METHOD: usize = 20;
    // Only the first bytes matter: a long run without a space is no method.
    match d.iter().take(LONGEST_METHOD + 1).position(|b| *b == b' ') {
        Some(0) => false,
        Some(end) => end <= LONGEST_METHOD && d[..end].iter().all(u8::is_ascii_uppercase),
        None => d.len() < LONGEST_METHOD && d.iter().all(u8::is_ascii_uppercase),
    }
}

/// A request target as servers read it: percent-encoding decoded (RFC 3986
/// §2.1; a `%` not followed by two hex digits stays), then in the path `.`
/// and `..` segments removed (§5.2.4) and runs of `/` compressed, as
/// Suricata's normalised `http.uri` (libhtp). Returns the result and
/// whether it differs from the input.
fn normalise_uri(target: &[u8]) -> (String, bool) {
    let mut decoded = Vec::with_capacity(target.len());
    let mut i = 0;
    while i < target.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (target[i], target.get(i + 1), target.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let split = decoded
        .iter()
        .position(|b| *b == b'?')
        .unwrap_or(decoded.len());
    let (path, query) = decoded.split_at(split);
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    if path.first() == Some(&b'/') || segments.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(&segments.join(&b'/'));
    if path.len() > 1 && path.ends_with(b"/") && !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    let changed = out != target;
    (text(&out), changed)
}

/// Method and target of a request line (`METHOD SP target SP HTTP/x`).
fn request_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|p| !p.is_empty());
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (version.starts_with(b"HTTP/") && method.iter().all(u8::is_ascii_graphic))
        .then_some((method, target))
}

/// Reads one request head; None if it is not an HTTP request. Also says
/// how the body that follows is framed.
fn parse_head(head: &[u8]) -> Option<(HttpRequest, State)> {
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let (method, target) = request_line(lines.next()?)?;
    let mut r = HttpRequest {
        method: text(method),
        uri_raw: text(target),
        ..HttpRequest::default()
    };
    r.uri = r.uri_raw.clone();
    let lower = target.to_ascii_lowercase();
    for scheme in [&b"http://"[..], b"https://"] {
        if let Some(rest) = lower.strip_prefix(scheme) {
            let rest = &target[target.len() - rest.len()..];
            let end = rest
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            r.hosts.push(host_of(&rest[..end]));
            r.uri = match &rest[end..] {
                [] => "/".into(),
                [b'?', ..] => format!("/{}", text(&rest[end..])),
                path => text(path),
            };
            r.anomalies.push("absolute-uri");
        }
    }
    let (normalised, changed) = normalise_uri(r.uri.as_bytes());
    if changed {
        r.anomalies.push("uri-normalised");
        r.uri = normalised;
    }
    // Headers, with folded lines joined to the one before.
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some((_, value)) = headers.last_mut() {
                value.push(b' ');
                value.extend_from_slice(line.trim_ascii());
                r.anomalies.push("obs-fold");
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            r.anomalies.push("header-without-colon");
            continue;
        };
        let name = &line[..colon];
        if name.last().is_some_and(u8::is_ascii_whitespace) {
            r.anomalies.push("space-before-colon");
        }
        headers.push((
            name.trim_ascii().to_ascii_lowercase(),
            line[colon + 1..].trim_ascii().to_vec(),
        ));
    }
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut upgrade = false;
    let mut host_headers = 0;
    for (name, value) in &headers {
        match name.as_slice() {
            b"host" => {
                host_headers += 1;
                let host = host_of(value);
                if !r.hosts.contains(&host) {
                    if !r.hosts.is_empty() && !r.anomalies.contains(&"host-mismatch") {
                        r.anomalies.push("host-mismatch");
                    }
                    r.hosts.push(host);
                }
            }
            b"user-agent" if r.user_agent.is_none() => r.user_agent = Some(text(value)),
            b"content-length" => {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                match (content_length, n) {
                    (_, None) => r.anomalies.push("bad-content-length"),
                    (Some(old), Some(n)) if old != n => {
                        r.anomalies.push("conflicting-content-length");
                        content_length = Some(old.max(n));
                    }
                    _ => content_length = n,
                }
            }
            b"transfer-encoding" => {
                chunked = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            b"upgrade" => upgrade = true,
            _ => {}
        }
    }
    if host_headers > 1 {
        r.anomalies.push("duplicate-host");
    }
    let next = if r.method.eq_ignore_ascii_case("CONNECT") || upgrade {
        // A tunnel or another protocol follows (if the server agrees).
        State::Opaque
    } else if chunked {
        if content_length.is_some() {
            r.anomalies.push("content-length-and-chunked");
        }
        State::ChunkSize
    } else {
        match content_length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head,
        }
    };
    Some((r, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(chunks: &[&[u8]]) -> Vec<HttpRequest> {
        let mut p = HttpRequests::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        out
    }

    fn hosts(chunks: &[&[u8]]) -> Vec<Vec<String>> {
        requests(chunks).into_iter().map(|r| r.hosts).collect()
    }

    #[test]
    fn keep_alive_and_pipelined_requests_are_all_read() {
        let two =
            b"GET /a HTTP/1.1\r\nHost: one.test\r\n\r\nGET /b HTTP/1.1\r\nHost: two.test\r\n\r\n";
        assert_eq!(hosts(&[two]), [["one.test"], ["two.test"]]);
        // the same split one byte at a time
        let bytes: Vec<&[u8]> = two.chunks(1).collect();
        assert_eq!(hosts(&bytes), [["one.test"], ["two.test"]]);
        let r = requests(&[two]);
        assert_eq!((r[1].method.as_str(), r[1].uri.as_str()), ("GET", "/b"));
    }

    #[test]
    fn bodies_are_skipped_by_their_framing() {
        let body = b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 37\r\n\r\nGET / HTTP/1.1\r\nHost: hidden.test\r\n\r\n\
                     GET / HTTP/1.1\r\nHost: b.test\r\n\r\n";
        // the 37 body bytes look like a request but are a body
        assert_eq!(hosts(&[body]), [["a.test"], ["b.test"]]);
        let chunked = b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nHost: b.test\r\n\r\n";
        let split: Vec<&[u8]> = chunked.chunks(7).collect();
        assert_eq!(hosts(&split), [["a.test"], ["b.test"]]);
        // both framings: chunked wins (RFC 9112 §6.3), and it is flagged
        let both = b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: b.test\r\n\r\n";
        let r = requests(&[both]);
        assert_eq!(r.len(), 2);
        assert!(r[0].anomalies.contains(&"content-length-and-chunked"));
    }

    #[test]
    fn ambiguous_requests_count_every_reading() {
        let r =
            &requests(&[b"GET http://Evil.test:8080/p?q=1 HTTP/1.1\r\nHost: good.test\r\n\r\n"])[0];
        assert_eq!(r.hosts, ["evil.test", "good.test"]);
        assert_eq!(
            (r.uri.as_str(), r.uri_raw.as_str()),
            ("/p?q=1", "http://Evil.test:8080/p?q=1")
        );
        assert!(r.anomalies.contains(&"absolute-uri") && r.anomalies.contains(&"host-mismatch"));
        let r = &requests(&[b"GET / HTTP/1.1\r\nHost: good.test\r\nHost: evil.test\r\n\r\n"])[0];
        assert_eq!(r.hosts, ["good.test", "evil.test"]);
        assert!(r.anomalies.contains(&"duplicate-host"));
        let r = &requests(&[b"\r\n\r\nGET / HTTP/1.1\r\nHost : evil.test\r\n\r\n"])[0];
        assert_eq!(r.hosts, ["evil.test"]);
        assert!(r.anomalies.contains(&"space-before-colon"));
        let r = &requests(&[b"GET / HTTP/1.1\r\nHost:\r\n evil.test\r\nUser-Agent: x\r\n\r\n"])[0];
        assert_eq!(r.hosts, ["evil.test"]);
        assert_eq!(r.user_agent.as_deref(), Some("x"));
        let r = &requests(&[b"GET / HTTP/1.1\nHost: [2001:db8::1]:80\n\n"])[0];
        assert_eq!(r.hosts, ["[2001:db8::1]"]);
    }

    #[test]
    fn uris_are_read_as_servers_read_them() {
        for (raw, normalised) in [
            ("/index.html", "/index.html"),
            ("/%61dmin", "/admin"),
            ("/a/../admin/", "/admin/"),
            ("/a/./b//c", "/a/b/c"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a%2F..%2Fadmin?x=%41", "/admin?x=A"),
            ("/50%zz", "/50%zz"),
            ("*", "*"),
        ] {
            assert_eq!(normalise_uri(raw.as_bytes()).0, normalised, "{raw}");
        }
        let r = &requests(&[b"GET /%61dmin HTTP/1.1\r\nHost: a.test\r\n\r\n"])[0];
        assert_eq!((r.uri.as_str(), r.uri_raw.as_str()), ("/admin", "/%61dmin"));
        assert!(r.anomalies.contains(&"uri-normalised"));
    }

    #[test]
    fn junk_lines_are_skipped_and_tunnels_end_the_parse() {
        let mut p = HttpRequests::default();
        let mut out = Vec::new();
        p.feed(
            b"\x16\x03\x01\x00\x05hello\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
            &mut out,
        );
        assert_eq!((out.len(), p.junk_lines), (1, 1));
        // a tunnel: what follows CONNECT is not read
        let r = requests(&[b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\nGET / HTTP/1.1\r\nHost: b.test\r\n\r\n"]);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn what_is_not_a_request_is_not_gathered() {
        let mut p = HttpRequests::default();
        let mut out = Vec::new();
        for _ in 0..100 {
            p.feed(&[0x17; 1000], &mut out);
            assert_eq!(p.pending(), 0, "binary data is skipped as it comes");
        }
        // a line end, then a request: read
        p.feed(b"\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hosts, ["a.test"]);
    }

    /// A long request line arriving a byte at a time is looked at once per
    /// byte, not once per byte per byte.
    #[test]
    fn a_head_in_tiny_pieces_is_read_whole() {
        let mut p = HttpRequests::default();
        let mut out = Vec::new();
        let uri = "a".repeat(30_000);
        let req = format!("GET /{uri} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        for b in req.as_bytes() {
            p.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].uri.len(), 30_001);
    }

    #[test]
    fn heads_are_bounded() {
        let mut p = HttpRequests::default();
        let mut out = Vec::new();
        p.feed(b"GET / HTTP/1.1\r\nHost: a.test\r\nX: ", &mut out);
        for _ in 0..100 {
            p.feed(&[b'a'; 1024], &mut out);
            assert!(p.pending() <= MAX_HEAD);
        }
        assert_eq!(out.len(), 1);
        assert!(out[0].anomalies.contains(&"head-too-long"));
        assert_eq!(out[0].hosts, ["a.test"]);
    }
}
