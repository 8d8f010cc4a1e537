//! HTTP/1.x read from a connection's reassembled streams: every request of
//! the client's (keep-alive, pipelining) and every response of the
//! server's, heads and the first [`BODY_LIMIT`] bytes of bodies framed by
//! `Content-Length` or chunked encoding (RFC 9112 §6).
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

/// Most body bytes kept per message for `http.request_body` and
/// `http.response_body` (Suricata's `request-body-limit` and
/// `response-body-limit`, which the differential test sets alike).
pub const BODY_LIMIT: usize = 64 * 1024;

/// A message head as the rules read it: the first line, the headers in
/// order, and the head as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpHead {
    /// The request or status line, without its line end.
    pub start_line: Vec<u8>,
    /// The version token (`HTTP/1.1`).
    pub protocol: Vec<u8>,
    /// Every header as sent: (name, value without surrounding blanks).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The header lines as sent, to the empty line inclusive
    /// (`http.header.raw`).
    pub raw: Vec<u8>,
    /// The headers normalised as Suricata's `http.header`: one
    /// `Name: value\r\n` per header, values trimmed, folded lines joined,
    /// without the cookies (`http.cookie` has them).
    pub normalised: Vec<u8>,
}

impl HttpHead {
    /// The first header of this name (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// Reads the header lines (after the first line); folded lines are
    /// joined to the one before. `whole`: also keep the head as sent and
    /// normalised (for the rules that read them). Returns the anomalies seen.
    fn read_headers<'a>(
        &mut self,
        lines: impl Iterator<Item = &'a [u8]>,
        whole: bool,
    ) -> Vec<&'static str> {
        let mut anomalies = Vec::new();
        for line in lines {
            if whole {
                self.raw.extend_from_slice(line);
                self.raw.extend_from_slice(b"\r\n");
            }
            if line.is_empty() {
                break;
            }
            if matches!(line[0], b' ' | b'\t') {
                if let Some((_, value)) = self.headers.last_mut() {
                    value.push(b' ');
                    value.extend_from_slice(line.trim_ascii());
                    anomalies.push("obs-fold");
                }
                continue;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                anomalies.push("header-without-colon");
                continue;
            };
            let name = &line[..colon];
            if name.last().is_some_and(u8::is_ascii_whitespace) {
                anomalies.push("space-before-colon");
            }
            self.headers
                .push((name.to_vec(), line[colon + 1..].trim_ascii().to_vec()));
        }
        for (name, value) in self.headers.iter().filter(|_| whole) {
            // as Suricata's: the cookies have their own buffer (http.cookie)
            let name = name.trim_ascii();
            if name.eq_ignore_ascii_case(b"cookie") || name.eq_ignore_ascii_case(b"set-cookie") {
                continue;
            }
            self.normalised.extend_from_slice(name);
            self.normalised.extend_from_slice(b": ");
            self.normalised.extend_from_slice(value);
            self.normalised.extend_from_slice(b"\r\n");
        }
        anomalies
    }
}

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
    /// The head, for the other `http.*` buffers.
    pub head: HttpHead,
}

/// How a message body is framed (RFC 9112 §6.3, §7.1), and where reading
/// it stands: requests and responses alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many body bytes left (Content-Length).
    Length(u64),
    /// Chunked: a chunk-size line next.
    ChunkSize,
    /// Chunked: this many chunk bytes, then the chunk's CRLF.
    ChunkData(u64),
    ChunkDataEnd,
    /// The trailer section after the last chunk, up to an empty line.
    Trailers,
}

/// One step through a body.
enum Step {
    /// `consumed` bytes read, of which the first `data` are body bytes;
    /// then `next`, or the next message's head when None.
    Read {
        consumed: usize,
        data: usize,
        next: Option<Framing>,
    },
    /// A line is not whole yet.
    More,
    /// The framing broke: not HTTP any more.
    Broken,
}

impl Framing {
    fn step(self, rest: &[u8]) -> Step {
        match self {
            Framing::Length(left) | Framing::ChunkData(left) => {
                let n = left.min(rest.len() as u64);
                let next = match (self, left == n) {
                    (Framing::Length(_), true) => None,
                    (Framing::Length(_), false) => Some(Framing::Length(left - n)),
                    (_, true) => Some(Framing::ChunkDataEnd),
                    (_, false) => Some(Framing::ChunkData(left - n)),
                };
                Step::Read {
                    consumed: n as usize,
                    data: n as usize,
                    next,
                }
            }
            Framing::ChunkSize | Framing::ChunkDataEnd | Framing::Trailers => {
                let Some(lf) = rest.iter().position(|b| *b == b'\n') else {
                    return if rest.len() > MAX_LINE {
                        Step::Broken
                    } else {
                        Step::More
                    };
                };
                let line = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
                let next = match self {
                    Framing::ChunkDataEnd => Some(Framing::ChunkSize),
                    Framing::Trailers if line.is_empty() => None,
                    Framing::Trailers => Some(Framing::Trailers),
                    _ => match chunk_size(line) {
                        Some(0) => Some(Framing::Trailers),
                        Some(n) => Some(Framing::ChunkData(n)),
                        None => return Step::Broken,
                    },
                };
                Step::Read {
                    consumed: lf + 1,
                    data: 0,
                    next,
                }
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
enum State {
    #[default]
    Head,
    /// Reading (or skipping) a body.
    Body(Framing),
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
    /// The body of the latest request so far (at most [`BODY_LIMIT`]
    /// bytes, de-chunked), and whether it grew since [`Self::take_body`].
    body: Vec<u8>,
    body_grew: bool,
    /// Keep bodies at all (some rule reads them).
    keep_bodies: bool,
    /// Keep each head as sent and normalised (some rule reads them).
    keep_heads: bool,
}

impl HttpRequests {
    /// A parser that keeps request bodies if `keep_bodies`, and the heads
    /// as sent and normalised if `keep_heads`.
    pub fn new(keep_bodies: bool, keep_heads: bool) -> Self {
        HttpRequests {
            keep_bodies,
            keep_heads,
            ..HttpRequests::default()
        }
    }

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
        self.buf.len() + self.body.len()
    }

    /// Bytes of the stream went by unseen: the framing is lost.
    pub fn gap(&mut self) {
        self.buf = Vec::new();
        self.state = State::Opaque;
    }

    /// Whether the latest request's body grew since the last call.
    pub fn body_grew(&mut self) -> bool {
        std::mem::take(&mut self.body_grew)
    }

    /// The latest request's body so far (at most [`BODY_LIMIT`] bytes).
    pub fn body(&self) -> &[u8] {
        &self.body
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
                State::Body(framing) => match framing.step(rest) {
                    Step::Read {
                        consumed,
                        data,
                        next,
                    } => {
                        if self.keep_bodies && data > 0 {
                            keep_body(&mut self.body, &mut self.body_grew, &rest[..data]);
                        }
                        pos += consumed;
                        self.state = next.map_or(State::Head, State::Body);
                    }
                    Step::More => break,
                    Step::Broken => {
                        self.state = State::Opaque;
                        break;
                    }
                },
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
                    match parse_head(&rest[..head_len], self.keep_heads) {
                        Some((mut request, next)) => {
                            self.state = next;
                            if too_long {
                                request.anomalies.push("head-too-long");
                                self.state = State::Opaque;
                            }
                            self.requests += 1;
                            self.body.clear();
                            self.body_grew = false;
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

/// Adds what fits of `data` to a message's kept body.
fn keep_body(body: &mut Vec<u8>, grew: &mut bool, data: &[u8]) {
    let room = BODY_LIMIT.saturating_sub(body.len());
    if room > 0 && !data.is_empty() {
        body.extend_from_slice(&data[..data.len().min(room)]);
        *grew = true;
    }
}

/// Takes decoded body bytes up to [`BODY_LIMIT`] in all, then refuses
/// more: a compression bomb stops there, whatever its ratio.
#[derive(Debug, Default)]
struct CappedSink {
    out: Vec<u8>,
    total: usize,
}

impl std::io::Write for CappedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = BODY_LIMIT.saturating_sub(self.total);
        if room == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let n = buf.len().min(room);
        self.out.extend_from_slice(&buf[..n]);
        self.total += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body's `Content-Encoding` being undone (gzip, or deflate
/// with or without its zlib wrapper), as Suricata's libhtp does for
/// `http.response_body` and `file.data`.
enum BodyDecoder {
    Gzip(flate2::write::GzDecoder<CappedSink>),
    Zlib(flate2::write::ZlibDecoder<CappedSink>),
    Deflate(flate2::write::DeflateDecoder<CappedSink>),
    /// The coding broke, or the limit was reached: nothing more is decoded.
    Done,
}

impl std::fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyDecoder::Gzip(_) => "Gzip",
            BodyDecoder::Zlib(_) => "Zlib",
            BodyDecoder::Deflate(_) => "Deflate",
            BodyDecoder::Done => "Done",
        })
    }
}

impl BodyDecoder {
    fn for_coding(coding: &[u8]) -> Option<BodyDecoder> {
        let last = coding.rsplit(|b| *b == b',').next()?.trim_ascii();
        if last.eq_ignore_ascii_case(b"gzip") || last.eq_ignore_ascii_case(b"x-gzip") {
            Some(BodyDecoder::Gzip(flate2::write::GzDecoder::new(
                CappedSink::default(),
            )))
        } else if last.eq_ignore_ascii_case(b"deflate") {
            Some(BodyDecoder::Zlib(flate2::write::ZlibDecoder::new(
                CappedSink::default(),
            )))
        } else {
            None
        }
    }

    /// Decodes `data`; returns what came out.
    fn decode(&mut self, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let result = match self {
            BodyDecoder::Gzip(d) => d
                .write_all(data)
                .map(|_| std::mem::take(&mut d.get_mut().out)),
            BodyDecoder::Zlib(d) => match d.write_all(data) {
                Ok(()) => Ok(std::mem::take(&mut d.get_mut().out)),
                // "deflate" sent without the zlib wrapper, as some servers do
                Err(_) if d.total_in() == 0 => {
                    let mut raw = flate2::write::DeflateDecoder::new(CappedSink::default());
                    let r = raw
                        .write_all(data)
                        .map(|_| std::mem::take(&mut raw.get_mut().out));
                    *self = BodyDecoder::Deflate(raw);
                    r
                }
                Err(e) => Err(e),
            },
            BodyDecoder::Deflate(d) => d
                .write_all(data)
                .map(|_| std::mem::take(&mut d.get_mut().out)),
            BodyDecoder::Done => return Vec::new(),
        };
        match result {
            Ok(out) => out,
            Err(_) => {
                // keep what came out before the error
                let out = match self {
                    BodyDecoder::Gzip(d) => std::mem::take(&mut d.get_mut().out),
                    BodyDecoder::Zlib(d) => std::mem::take(&mut d.get_mut().out),
                    BodyDecoder::Deflate(d) => std::mem::take(&mut d.get_mut().out),
                    BodyDecoder::Done => Vec::new(),
                };
                *self = BodyDecoder::Done;
                out
            }
        }
    }
}

/// One response as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (`200`) and reason phrase (`OK`), as sent.
    pub status: Vec<u8>,
    pub message: Vec<u8>,
    pub head: HttpHead,
}

#[derive(Clone, Debug, Default)]
enum ResponseState {
    #[default]
    Head,
    Body(Framing),
    /// No framing: the body runs to the end of the connection.
    UntilClose,
    /// Not HTTP any more (a tunnel, an upgrade, a gap).
    Opaque,
}

/// The response parser of one server direction: heads, and bodies framed
/// by the request they answer (RFC 9112 §6.3: no body for HEAD, 1xx, 204,
/// 304; a tunnel after a 2xx to CONNECT or a 101).
#[derive(Debug, Default)]
pub struct HttpResponses {
    state: ResponseState,
    buf: Vec<u8>,
    /// Methods of the requests not answered yet, oldest first.
    pending: std::collections::VecDeque<String>,
    body: Vec<u8>,
    body_grew: bool,
    /// The current body's content coding being undone.
    decoder: Option<Box<BodyDecoder>>,
    /// Keep bodies at all (some rule reads them).
    keep_bodies: bool,
    /// Responses read so far.
    pub responses: u32,
}

/// Requests remembered while their responses are due.
const MAX_PENDING_REQUESTS: usize = 64;

impl HttpResponses {
    /// A parser that keeps response bodies if `keep_bodies`.
    pub fn new(keep_bodies: bool) -> Self {
        HttpResponses {
            keep_bodies,
            ..HttpResponses::default()
        }
    }

    /// A request was sent: its response comes in turn.
    pub fn expect(&mut self, method: &str) {
        if self.pending.len() < MAX_PENDING_REQUESTS {
            self.pending.push_back(method.to_string());
        }
    }

    /// Bytes held: a head arriving, the latest body.
    pub fn pending(&self) -> usize {
        self.buf.len() + self.body.len()
    }

    /// Bytes went by unseen: the framing is lost.
    pub fn gap(&mut self) {
        self.buf = Vec::new();
        self.state = ResponseState::Opaque;
    }

    /// Whether the latest response's body grew since the last call.
    pub fn body_grew(&mut self) -> bool {
        std::mem::take(&mut self.body_grew)
    }

    /// The latest response's body so far (at most [`BODY_LIMIT`] bytes).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Body bytes as they come: decoded if the response says how.
    fn body_bytes(&mut self, data: &[u8]) {
        if !self.keep_bodies || self.body.len() >= BODY_LIMIT {
            return;
        }
        match self.decoder.as_mut() {
            Some(decoder) => {
                let decoded = decoder.decode(data);
                keep_body(&mut self.body, &mut self.body_grew, &decoded);
            }
            None => keep_body(&mut self.body, &mut self.body_grew, data),
        }
    }

    /// Reads the next bytes of the server's stream; each response whose
    /// head is now whole is pushed to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<HttpResponse>) {
        use ResponseState as S;
        if matches!(self.state, S::Opaque) {
            return;
        }
        if matches!(self.state, S::UntilClose) {
            self.body_bytes(data);
            return;
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        while pos < self.buf.len() {
            let rest = &self.buf[pos..];
            match self.state {
                S::Opaque => break,
                S::UntilClose => {
                    if self.keep_bodies {
                        let rest = rest.to_vec();
                        self.body_bytes(&rest);
                    }
                    pos = self.buf.len();
                }
                S::Body(framing) => match framing.step(rest) {
                    Step::Read {
                        consumed,
                        data,
                        next,
                    } => {
                        if self.keep_bodies && data > 0 {
                            let part = rest[..data].to_vec();
                            self.body_bytes(&part);
                        }
                        pos += consumed;
                        self.state = next.map_or(S::Head, S::Body);
                    }
                    Step::More => break,
                    Step::Broken => {
                        self.state = S::Opaque;
                        break;
                    }
                },
                S::Head => {
                    if matches!(rest[0], b'\r' | b'\n') {
                        pos += 1;
                        continue;
                    }
                    if !rest.starts_with(&b"HTTP/"[..rest.len().min(5)]) {
                        // not a response where one should start
                        self.state = S::Opaque;
                        break;
                    }
                    let Some(end) = head_end(rest) else {
                        if rest.len() >= MAX_HEAD {
                            self.state = S::Opaque;
                        }
                        break;
                    };
                    let head = &rest[..end];
                    let mut lines = head
                        .split(|b| *b == b'\n')
                        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
                    let first = lines.next().unwrap_or_default();
                    let mut parts = first.splitn(3, |b| *b == b' ');
                    let protocol = parts.next().unwrap_or_default().to_vec();
                    let status = parts.next().unwrap_or_default().to_vec();
                    let message = parts.next().unwrap_or_default().to_vec();
                    let mut r = HttpResponse {
                        status,
                        message,
                        head: HttpHead {
                            start_line: first.to_vec(),
                            protocol,
                            ..HttpHead::default()
                        },
                    };
                    r.head.read_headers(lines, true);
                    let code: u16 = std::str::from_utf8(&r.status)
                        .ok()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    // an interim response leaves the request waiting
                    let method = if (100..200).contains(&code) && code != 101 {
                        self.pending.front().cloned()
                    } else {
                        self.pending.pop_front()
                    };
                    let method = method.unwrap_or_default();
                    let header = |name: &str| r.head.header(name).map(<[u8]>::to_ascii_lowercase);
                    let chunked = header("transfer-encoding").is_some_and(|te| {
                        te.rsplit(|b| *b == b',')
                            .next()
                            .is_some_and(|last| last.trim_ascii() == b"chunked")
                    });
                    let length = header("content-length")
                        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u64>().ok());
                    self.state = if code == 101
                        || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&code))
                    {
                        S::Opaque
                    } else if (100..200).contains(&code)
                        || code == 204
                        || code == 304
                        || method.eq_ignore_ascii_case("HEAD")
                    {
                        S::Head
                    } else if chunked {
                        S::Body(Framing::ChunkSize)
                    } else {
                        match length {
                            Some(0) => S::Head,
                            Some(n) => S::Body(Framing::Length(n)),
                            None => S::UntilClose,
                        }
                    };
                    self.responses += 1;
                    self.body.clear();
                    self.body_grew = false;
                    self.decoder = r
                        .head
                        .header("content-encoding")
                        .and_then(BodyDecoder::for_coding)
                        .map(Box::new);
                    out.push(r);
                    pos += end;
                }
            }
        }
        if matches!(self.state, S::Opaque) {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..pos.min(self.buf.len()));
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
fn parse_head(head: &[u8], whole: bool) -> Option<(HttpRequest, State)> {
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let (method, target) = request_line(first)?;
    let mut r = HttpRequest {
        method: text(method),
        uri_raw: text(target),
        ..HttpRequest::default()
    };
    r.head.start_line = first.to_vec();
    r.head.protocol = first
        .rsplit(|b| *b == b' ' || *b == b'\t')
        .next()
        .unwrap_or_default()
        .to_vec();
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
    let anomalies = r.head.read_headers(lines, whole);
    r.anomalies.extend(anomalies);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut upgrade = false;
    let mut host_headers = 0;
    for (name, value) in &r.head.headers {
        // (header names compared in place: no copy per header)
        let mut lower = [0u8; 20];
        let name = name.trim_ascii();
        let key: &[u8] = if name.len() <= lower.len() {
            lower[..name.len()].copy_from_slice(name);
            lower[..name.len()].make_ascii_lowercase();
            &lower[..name.len()]
        } else {
            b""
        };
        match key {
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
        State::Body(Framing::ChunkSize)
    } else {
        match content_length {
            Some(n) if n > 0 => State::Body(Framing::Length(n)),
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

    /// Responses framed by the requests they answer; bodies kept, decoded.
    #[test]
    fn responses_are_framed_and_bodies_decoded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"<html><script>x</script></html>").unwrap();
        let gz = gz.finish().unwrap();
        let mut p = HttpResponses::new(true);
        for method in ["HEAD", "GET", "GET", "GET", "POST"] {
            p.expect(method);
        }
        let mut out = Vec::new();
        let mut stream = Vec::new();
        // HEAD: a Content-Length but no body
        stream.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
        // an interim response, then the real one with a chunked body
        stream.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.extend_from_slice(
            b"HTTP/1.1 404 Not Found\r\nServer: test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        stream.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        stream.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nSet-Cookie: a=b\r\n\r\n",
                gz.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(&gz);
        // one byte at a time: framing must not depend on segmentation
        let mut bodies = Vec::new();
        for b in &stream {
            p.feed(std::slice::from_ref(b), &mut out);
            if p.body_grew() {
                bodies.push((out.len(), p.body().to_vec()));
            }
        }
        let codes: Vec<&[u8]> = out.iter().map(|r| &r.status[..]).collect();
        assert_eq!(codes, [&b"200"[..], b"100", b"404", b"204", b"200"]);
        assert_eq!(out[2].head.header("server"), Some(&b"test"[..]));
        assert_eq!(out[2].message, b"Not Found");
        assert_eq!(
            bodies.first().map(|(n, b)| (*n, b.as_slice())),
            Some((3, &b"a"[..]))
        );
        assert_eq!(
            bodies.last().map(|(n, b)| (*n, b.as_slice())),
            Some((5, &b"<html><script>x</script></html>"[..]))
        );
        // the cookies are not in the normalised headers
        assert!(
            !out[4]
                .head
                .normalised
                .windows(10)
                .any(|w| w == b"Set-Cookie")
        );
        assert!(out[4].head.raw.ends_with(b"a=b\r\n\r\n"));
    }

    /// A compression bomb stops at the body limit.
    #[test]
    fn decoded_bodies_are_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'A'; 10 * BODY_LIMIT]).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < BODY_LIMIT / 10);
        let mut p = HttpResponses::new(true);
        p.expect("GET");
        let mut out = Vec::new();
        p.feed(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n",
            &mut out,
        );
        p.feed(&gz, &mut out);
        assert_eq!(p.body().len(), BODY_LIMIT);
        assert!(p.pending() <= BODY_LIMIT + 64);
    }

    #[test]
    fn request_heads_and_bodies_for_the_rules() {
        let mut p = HttpRequests::new(true, true);
        let mut out = Vec::new();
        p.feed(
            b"POST /login HTTP/1.0\r\nHost: a.test:8080\r\nCookie: s=1\r\nContent-Length: 7\r\n\r\nuser=me",
            &mut out,
        );
        let head = &out[0].head;
        assert_eq!(head.start_line, b"POST /login HTTP/1.0");
        assert_eq!(head.protocol, b"HTTP/1.0");
        assert_eq!(head.header("HOST"), Some(&b"a.test:8080"[..]));
        assert_eq!(
            head.normalised,
            b"Host: a.test:8080\r\nContent-Length: 7\r\n"
        );
        assert!(p.body_grew());
        assert_eq!(p.body(), b"user=me");
        assert!(!p.body_grew(), "taken");
    }
}
