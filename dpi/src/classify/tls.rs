//! TLS and DTLS: record and handshake headers, and the ClientHello fields a
//! classifier wants (SNI, ALPN, offered versions). The ClientHello parser is
//! shared with QUIC, whose Initial packets carry one in CRYPTO frames.

use super::{Dissect, Payload, Protocol, Scratch};

/// Most ClientHello bytes buffered from a client whose hello spans segments.
pub(crate) const MAX_HELLO: usize = 16 * 1024 + 5;

/// The parts of a ClientHello the classifier uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    /// Highest version offered (supported_versions, else legacy_version).
    pub version: u16,
    /// Cipher suites, extension types and signature algorithms, in order
    /// (GREASE values included; JA4 leaves them out).
    pub ciphers: Vec<u16>,
    pub extensions: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
    /// First ALPN value as raw bytes (JA4 looks at its first and last byte).
    pub first_alpn: Option<Vec<u8>>,
    /// The SNI as sent (Suricata's `tls.sni` is case-sensitive).
    pub sni_raw: Option<String>,
    /// For JA3: the hello's own version field, the supported groups and
    /// the EC point formats.
    pub legacy_version: u16,
    pub groups: Vec<u16>,
    pub point_formats: Vec<u8>,
}

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// JA3's text (Salesforce, BSD-3): fields in decimal, lists joined by
/// `-` without GREASE values, fields by `,`.
pub fn ja3_text(version: u16, lists: &[&[u16]]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(128);
    let _ = write!(out, "{version}");
    for list in lists {
        out.push(',');
        for (i, v) in list.iter().filter(|v| !is_grease(**v)).enumerate() {
            if i > 0 {
                out.push('-');
            }
            let _ = write!(out, "{v}");
        }
    }
    out
}

/// The MD5 of a JA3 or JA3S text, in lower-case hex.
pub fn ja3_hash(text: &str) -> String {
    use md5::{Digest, Md5};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in Md5::digest(text.as_bytes()) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

impl ClientHello {
    /// The JA3 text: version, ciphers, extensions, groups, point formats.
    pub fn ja3(&self) -> String {
        let formats: Vec<u16> = self.point_formats.iter().map(|f| u16::from(*f)).collect();
        ja3_text(
            self.legacy_version,
            &[&self.ciphers, &self.extensions, &self.groups, &formats],
        )
    }

    /// The JA4 fingerprint (FoxIO, BSD-3) of this hello; `transport` is
    /// `'t'` for TCP, `'q'` for QUIC, `'d'` for DTLS.
    pub fn ja4(&self, transport: char) -> String {
        use sha2::{Digest, Sha256};
        let version = match self.version {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            0x0300 => "s3",
            0x0002 => "s2",
            0xfeff => "d1",
            0xfefd => "d2",
            0xfefc => "d3",
            _ => "00",
        };
        let ciphers: Vec<u16> = self
            .ciphers
            .iter()
            .copied()
            .filter(|c| !is_grease(*c))
            .collect();
        let extensions: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|e| !is_grease(*e))
            .collect();
        let alpn = match self.first_alpn.as_deref() {
            Some([first, .., last]) | Some([first @ last])
                if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() =>
            {
                format!("{}{}", char::from(*first), char::from(*last))
            }
            Some(bytes @ [_, ..]) => {
                let hex = |b: u8| format!("{b:02x}");
                let (first, last) = (hex(bytes[0]), hex(bytes[bytes.len() - 1]));
                format!("{}{}", &first[..1], &last[1..])
            }
            _ => "00".to_string(),
        };
        // 'd': an SNI extension naming a domain; 'i': none, or an IP literal.
        let domain = self.extensions.contains(&0)
            && self
                .sni
                .as_deref()
                .is_none_or(|s| s.parse::<std::net::IpAddr>().is_err());
        let a = format!(
            "{transport}{version}{}{:02}{:02}{alpn}",
            if domain { 'd' } else { 'i' },
            ciphers.len().min(99),
            extensions.len().min(99)
        );
        let truncated_hash = |text: String| -> String {
            if text.is_empty() {
                return "000000000000".into();
            }
            let digest = Sha256::digest(text.as_bytes());
            digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
        };
        let joined = |mut v: Vec<u16>, sort: bool| {
            if sort {
                v.sort_unstable();
            }
            v.iter()
                .map(|x| format!("{x:04x}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let b = truncated_hash(joined(ciphers, true));
        let ext_sorted = joined(
            extensions
                .into_iter()
                .filter(|e| *e != 0x0000 && *e != 0x0010)
                .collect(),
            true,
        );
        let sigs = joined(self.signature_algorithms.clone(), false);
        let c = if ext_sorted.is_empty() {
            "000000000000".to_string()
        } else if sigs.is_empty() {
            truncated_hash(ext_sorted)
        } else {
            truncated_hash(format!("{ext_sorted}_{sigs}"))
        };
        format!("{a}_{b}_{c}")
    }
}

/// The server's side of a TLS handshake, as the rules read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// The negotiated version: supported_versions' choice, else the
    /// ServerHello's version field.
    pub version: Option<u16>,
    /// JA3S text (version, cipher, extensions) of the ServerHello.
    pub ja3s: Option<String>,
    pub ja3s_hash: Option<String>,
    /// Subject and issuer of the server's certificate, formatted as
    /// Suricata formats them (x509-parser's `C=.., O=.., CN=..`).
    pub cert_subject: Option<String>,
    pub cert_issuer: Option<String>,
}

/// Most handshake bytes gathered from a server (a certificate chain fits).
const MAX_SERVER_HANDSHAKE: usize = 64 * 1024;

/// Reads the server's TLS records until its part of the handshake is over
/// (ServerHelloDone, a ChangeCipherSpec, encrypted data, a TLS 1.3
/// ServerHello, an alert, or something that is not TLS).
#[derive(Clone, Debug, Default)]
pub struct ServerHandshake {
    records: Vec<u8>,
    messages: Vec<u8>,
    pub info: ServerInfo,
    done: bool,
    grew: bool,
}

impl ServerHandshake {
    /// Nothing more will be read (the rest is encrypted, or not TLS).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Whether `info` changed since the last call.
    pub fn grew(&mut self) -> bool {
        std::mem::take(&mut self.grew)
    }

    /// Bytes held while records and messages arrive.
    pub fn pending(&self) -> usize {
        self.records.len() + self.messages.len()
    }

    /// The next bytes of the server's stream.
    pub fn feed(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        self.records.extend_from_slice(data);
        let mut pos = 0;
        while !self.done && self.records.len() - pos >= 5 {
            let header = &self.records[pos..pos + 5];
            let (kind, major) = (header[0], header[1]);
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if major != 3 || len > (1 << 14) + 2048 {
                self.finish();
                break;
            }
            if self.records.len() - pos < 5 + len {
                break;
            }
            let fragment = self.records[pos + 5..pos + 5 + len].to_vec();
            pos += 5 + len;
            match kind {
                22 => {
                    self.messages.extend_from_slice(&fragment);
                    self.read_messages();
                }
                // a warning (unrecognized_name, say) leaves the handshake going
                21 if fragment.first() == Some(&1) && fragment.get(1) != Some(&0) => {}
                // ChangeCipherSpec, a fatal alert, application data: over
                _ => self.finish(),
            }
        }
        if self.done {
            self.records = Vec::new();
        } else {
            self.records.drain(..pos);
            if self.pending() > MAX_SERVER_HANDSHAKE {
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.records = Vec::new();
        self.messages = Vec::new();
    }

    fn read_messages(&mut self) {
        let mut pos = 0;
        while self.messages.len() - pos >= 4 {
            let m = &self.messages[pos..];
            let len = usize::from(m[1]) << 16 | usize::from(m[2]) << 8 | usize::from(m[3]);
            if m.len() < 4 + len {
                break;
            }
            let body = m[4..4 + len].to_vec();
            pos += 4 + len;
            match m[0] {
                2 => {
                    self.server_hello(&body);
                    if self.info.version == Some(0x0304) {
                        // TLS 1.3: the rest of the handshake is encrypted
                        self.finish();
                        return;
                    }
                }
                11 => self.certificate(&body),
                14 => {
                    self.finish();
                    return;
                }
                _ => {}
            }
        }
        self.messages.drain(..pos);
    }

    fn server_hello(&mut self, body: &[u8]) {
        let mut r = Reader::new(body);
        let Some(version) = r.u16() else { return };
        let (Some(_), Some(sid)) = (r.bytes(32), r.u8()) else {
            return;
        };
        let (Some(_), Some(cipher), Some(_)) = (r.bytes(usize::from(sid)), r.u16(), r.u8()) else {
            return;
        };
        let mut extensions = Vec::new();
        let mut negotiated = version;
        if let Some(ext_len) = r.u16() {
            let mut ext = Reader::new(r.bytes(usize::from(ext_len)).unwrap_or_else(|| r.rest()));
            while let (Some(kind), Some(len)) = (ext.u16(), ext.u16()) {
                let Some(data) = ext.bytes(usize::from(len)) else {
                    break;
                };
                extensions.push(kind);
                if kind == 43 && data.len() == 2 {
                    negotiated = u16::from_be_bytes([data[0], data[1]]);
                }
            }
        }
        let text = ja3_text(version, &[&[cipher], &extensions]);
        self.info.ja3s_hash = Some(ja3_hash(&text));
        self.info.ja3s = Some(text);
        self.info.version = Some(negotiated);
        self.grew = true;
    }

    fn certificate(&mut self, body: &[u8]) {
        // certificate_list<3>, then each certificate<3>: the first is the server's
        let Some(der) = body.get(3..).and_then(|list| {
            let len = usize::from(*list.first()?) << 16
                | usize::from(*list.get(1)?) << 8
                | usize::from(*list.get(2)?);
            list.get(3..3 + len)
        }) else {
            return;
        };
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            self.info.cert_subject = Some(cert.subject().to_string());
            self.info.cert_issuer = Some(cert.issuer().to_string());
            self.grew = true;
        }
    }
}

/// A bounds-checked reader over a byte slice.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let v = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.data[self.pos.min(self.data.len())..]
    }
}

/// Parses a ClientHello body (after the 4-byte handshake header; for DTLS
/// `dtls` skips the cookie).
pub fn parse_client_hello(body: &[u8], dtls: bool) -> Option<ClientHello> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16()?;
    r.bytes(32)?; // random
    let sid = r.u8()?;
    r.bytes(usize::from(sid))?;
    if dtls {
        let cookie = r.u8()?;
        r.bytes(usize::from(cookie))?;
    }
    let suites = r.u16()?;
    let ciphers: Vec<u16> = r
        .bytes(usize::from(suites))?
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let compression = r.u8()?;
    r.bytes(usize::from(compression))?;
    let mut hello = ClientHello {
        version: legacy_version,
        legacy_version,
        ciphers,
        ..ClientHello::default()
    };
    let Some(ext_len) = r.u16() else {
        return Some(hello);
    };
    let ext_data = r.bytes(usize::from(ext_len)).unwrap_or_else(|| r.rest());
    let mut ext = Reader::new(ext_data);
    while let (Some(kind), Some(len)) = (ext.u16(), ext.u16()) {
        let Some(data) = ext.bytes(usize::from(len)) else {
            break;
        };
        hello.extensions.push(kind);
        let mut e = Reader::new(data);
        match kind {
            0 => {
                // server_name: list length, then (type, length, name)*
                e.u16();
                while let (Some(name_type), Some(name_len)) = (e.u8(), e.u16()) {
                    let Some(name) = e.bytes(usize::from(name_len)) else {
                        break;
                    };
                    if name_type == 0
                        && !name.is_empty()
                        && name.iter().all(|b| b.is_ascii_graphic())
                    {
                        let name = String::from_utf8_lossy(name);
                        hello.sni = Some(name.to_ascii_lowercase());
                        hello.sni_raw = Some(name.into_owned());
                        break;
                    }
                }
            }
            16 => {
                e.u16();
                while let Some(n) = e.u8() {
                    let Some(proto) = e.bytes(usize::from(n)) else {
                        break;
                    };
                    if hello.first_alpn.is_none() {
                        hello.first_alpn = Some(proto.to_vec());
                    }
                    hello.alpn.push(String::from_utf8_lossy(proto).into_owned());
                }
            }
            10 => {
                let n = usize::from(e.u16().unwrap_or(0)) / 2;
                for _ in 0..n {
                    let Some(v) = e.u16() else { break };
                    hello.groups.push(v);
                }
            }
            11 => {
                let n = e.u8().unwrap_or(0);
                if let Some(formats) = e.bytes(usize::from(n)) {
                    hello.point_formats = formats.to_vec();
                }
            }
            13 => {
                let n = usize::from(e.u16().unwrap_or(0)) / 2;
                for _ in 0..n {
                    let Some(v) = e.u16() else { break };
                    hello.signature_algorithms.push(v);
                }
            }
            43 => {
                let n = e.u8().unwrap_or(0) / 2;
                for _ in 0..n {
                    match e.u16() {
                        // skip GREASE values (0x?a?a)
                        Some(v) if v & 0x0f0f == 0x0a0a => {}
                        Some(v) if v > hello.version || hello.version == legacy_version => {
                            hello.version = v
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

fn tls_version(v: u16) -> bool {
    (0x0300..=0x0304).contains(&v)
}

pub(crate) fn tls(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    // A ClientHello spanning several segments: keep adding the client's bytes.
    if !s.tls_hello.is_empty() {
        if !p.from_client {
            return Dissect::More;
        }
        let room = MAX_HELLO.saturating_sub(s.tls_hello.len());
        s.tls_hello
            .extend_from_slice(&p.data[..p.data.len().min(room)]);
        let buffered = std::mem::take(&mut s.tls_hello);
        return match client_hello_record(&buffered) {
            Some(Ok(hello)) => matched_hello(s, hello),
            Some(Err(())) => Dissect::Match(Protocol::Tls, None),
            None if buffered.len() < MAX_HELLO => {
                s.tls_hello = buffered;
                Dissect::More
            }
            None => Dissect::Match(Protocol::Tls, None),
        };
    }
    let d = p.data;
    // The client's first bytes may not even hold a whole record header (a
    // sender can split it over segments): keep them while they could be
    // the start of a handshake record.
    if d.len() < 6 && p.index == 0 && p.from_client && could_start_handshake(d) {
        s.tls_hello.extend_from_slice(d);
        return Dissect::More;
    }
    if d.len() < 5 || !tls_version(u16::from_be_bytes([d[1], d[2]])) {
        return if p.index == 0 && d.len() < 5 {
            Dissect::More
        } else {
            Dissect::No
        };
    }
    match d[0] {
        22 => {
            let handshake_type = d.get(5).copied();
            match handshake_type {
                Some(1) if p.from_client => match client_hello_record(d) {
                    Some(Ok(hello)) => matched_hello(s, hello),
                    Some(Err(())) => Dissect::No,
                    None => {
                        s.tls_hello.extend_from_slice(&d[..d.len().min(MAX_HELLO)]);
                        Dissect::More
                    }
                },
                Some(2) => Dissect::Match(Protocol::Tls, None),
                _ => Dissect::No,
            }
        }
        // Change cipher spec, alert or application data: a flow caught mid-way.
        20 | 21 | 23 if u16::from_be_bytes([d[3], d[4]]) <= 16_384 + 2048 => {
            Dissect::Match(Protocol::Tls, None)
        }
        _ => Dissect::No,
    }
}

/// A TLS match from a ClientHello: SNI as host, ALPN and version kept.
/// Whether `d` (fewer bytes than a record header and a handshake type)
/// could begin a TLS handshake record carrying a ClientHello.
fn could_start_handshake(d: &[u8]) -> bool {
    let expect = [Some(22), Some(3), None, None, None, Some(1)];
    !d.is_empty()
        && d.iter()
            .zip(expect)
            .all(|(byte, want)| want.is_none_or(|w| *byte == w))
        && d.get(2).is_none_or(|minor| *minor <= 4)
}

fn matched_hello(s: &mut Scratch, hello: ClientHello) -> Dissect {
    s.info.ja4 = Some(hello.ja4('t'));
    let ja3 = hello.ja3();
    s.info.ja3_hash = Some(ja3_hash(&ja3));
    s.info.ja3 = Some(ja3);
    s.info.sni_raw = hello.sni_raw.clone();
    s.info.alpn = hello.alpn;
    s.info.tls_version = Some(hello.version);
    Dissect::Match(Protocol::Tls, hello.sni)
}

/// Parses a record holding a ClientHello: `None` if more bytes are needed,
/// `Some(Err)` if it is not one.
fn client_hello_record(d: &[u8]) -> Option<Result<ClientHello, ()>> {
    if d.len() < 6 {
        return None;
    }
    if d[0] != 22 || d[5] != 1 {
        return Some(Err(()));
    }
    // The hello may span several records, the first with as little as one
    // byte of it (its length then in the next record); gather the
    // handshake fragments in order, then read the handshake header.
    let mut handshake = Vec::new();
    let mut rest = d;
    while rest.len() >= 5 && rest[0] == 22 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let end = (5 + len).min(rest.len());
        handshake.extend_from_slice(&rest[5..end]);
        if end < 5 + len {
            break;
        }
        rest = &rest[end..];
    }
    if handshake.len() < 4 {
        return None;
    }
    let hs_len = usize::from(handshake[1]) << 16
        | usize::from(handshake[2]) << 8
        | usize::from(handshake[3]);
    if handshake.len() < 4 + hs_len {
        return None;
    }
    parse_client_hello(&handshake[4..4 + hs_len], false)
        .map(Ok)
        .or(Some(Err(())))
}

fn dtls_version(v: u16) -> bool {
    matches!(v, 0xfeff | 0xfefd | 0xfefc | 0x0100)
}

pub(crate) fn dtls(p: &Payload<'_>, s: &mut Scratch) -> Dissect {
    let d = p.data;
    if d.len() < 13 || !(20..=25).contains(&d[0]) || !dtls_version(u16::from_be_bytes([d[1], d[2]]))
    {
        return Dissect::No;
    }
    let len = usize::from(u16::from_be_bytes([d[11], d[12]]));
    if len > d.len() - 13 + 4096 {
        return Dissect::No;
    }
    if d[0] == 22 && d.len() >= 25 && d[13] == 1 {
        // The record length bounds the hello; a length shorter than the
        // handshake header leaves no hello to read (found by fuzzing).
        let body = d.get(25..d.len().min(13 + len)).unwrap_or(&[]);
        let sni = parse_client_hello(body, true).and_then(|h| {
            s.info.ja4 = Some(h.ja4('d'));
            h.sni
        });
        return Dissect::Match(Protocol::Dtls, sni);
    }
    Dissect::Match(Protocol::Dtls, None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use testbed::frames::tls_client_hello as client_hello;

    fn payload(data: &[u8], index: u32) -> Payload<'_> {
        Payload {
            data,
            from_client: true,
            src_port: 40000,
            dst_port: 443,
            index,
            l4: 6,
        }
    }

    #[test]
    fn sni_alpn_and_version() {
        let rec = client_hello("Example.COM");
        let hello = parse_client_hello(&rec[9..], false).unwrap();
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, vec!["h2".to_string()]);
        assert_eq!(hello.version, 0x0304);
        assert_eq!(
            tls(&payload(&rec, 0), &mut Scratch::default()),
            Dissect::Match(Protocol::Tls, Some("example.com".into()))
        );
    }

    #[test]
    fn ja3_of_the_test_hello() {
        let rec = client_hello("Example.com");
        let hello = parse_client_hello(&rec[9..], false).unwrap();
        // legacy 0x0303, cipher 0x1301, extensions sni, alpn, supported_versions
        assert_eq!(hello.ja3(), "771,4865,0-16-43,,");
        assert_eq!(ja3_hash(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hello.sni_raw.as_deref(), Some("Example.com"));
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        // GREASE values are left out of every list
        assert_eq!(ja3_text(771, &[&[0x0a0a, 1], &[0xfafa]]), "771,1,");
    }

    /// The server's flight: a warning alert, a ServerHello choosing TLS 1.2,
    /// then ServerHelloDone ends it; JA3S from the hello.
    #[test]
    fn server_handshake_until_hello_done() {
        let mut hello = vec![0x03, 0x03];
        hello.extend_from_slice(&[0; 32]);
        hello.push(0); // session id
        hello.extend_from_slice(&[0xc0, 0x2f, 0]); // cipher 49199, compression
        hello.extend_from_slice(&[0, 4, 0xff, 0x01, 0, 0]); // renegotiation_info
        let mut flight = vec![0x15, 3, 3, 0, 2, 1, 112]; // warning: unrecognized_name
        let mut messages = vec![2, 0, 0, hello.len() as u8];
        messages.extend_from_slice(&hello);
        messages.extend_from_slice(&[14, 0, 0, 0]);
        flight.extend_from_slice(&[22, 3, 3, 0, messages.len() as u8]);
        flight.extend_from_slice(&messages);
        let mut h = ServerHandshake::default();
        for b in &flight[..flight.len() - 1] {
            h.feed(std::slice::from_ref(b));
        }
        assert!(!h.done());
        h.feed(&flight[flight.len() - 1..]);
        assert!(h.done() && h.grew());
        assert_eq!(h.info.ja3s.as_deref(), Some("771,49199,65281"));
        assert_eq!(h.info.version, Some(0x0303));
        // a fatal alert ends it at once
        let mut fatal = ServerHandshake::default();
        fatal.feed(&[0x15, 3, 3, 0, 2, 2, 40]);
        assert!(fatal.done() && fatal.info.ja3s.is_none());
    }

    #[test]
    fn ja4_of_the_test_hello() {
        let rec = client_hello("example.com");
        let hello = parse_client_hello(&rec[9..], false).unwrap();
        // TLS 1.3, SNI, 1 cipher, 3 extensions (sni, alpn, supported_versions), ALPN h2
        let ja4 = hello.ja4('t');
        assert!(ja4.starts_with("t13d0103h2_"), "{ja4}");
        // b: sha256("1301")[..12]; c: extensions without SNI/ALPN = "002b", no signature algorithms
        let sha = |s: &str| {
            use sha2::{Digest, Sha256};
            Sha256::digest(s.as_bytes())
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(ja4, format!("t13d0103h2_{}_{}", sha("1301"), sha("002b")));
    }

    /// The cipher hash of Chrome's hello, as published with JA4.
    #[test]
    fn ja4_cipher_hash_vector() {
        let hello = ClientHello {
            version: 0x0304,
            ciphers: vec![
                0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
                0xc014, 0x009c, 0x009d, 0x002f, 0x0035, 0x0a0a,
            ],
            ..ClientHello::default()
        };
        assert_eq!(hello.ja4('t').split('_').nth(1), Some("8daaf6152771"));
    }

    /// Every split of the hello's first 12 bytes over two segments (inside
    /// the record header, inside the handshake header) still gives the SNI.
    #[test]
    fn record_header_split_at_any_byte() {
        let rec = client_hello("split.example");
        for at in 1..12 {
            let mut s = Scratch::default();
            assert_eq!(
                tls(&payload(&rec[..at], 0), &mut s),
                Dissect::More,
                "split at {at}"
            );
            assert_eq!(
                tls(&payload(&rec[at..], 1), &mut s),
                Dissect::Match(Protocol::Tls, Some("split.example".into())),
                "split at {at}"
            );
        }
    }

    /// A first record that carries only the handshake type (or two bytes):
    /// the hello's length is in the next record.
    #[test]
    fn first_record_with_one_or_two_handshake_bytes() {
        let rec = client_hello("tiny.example");
        let handshake = &rec[5..];
        for first in [1, 2] {
            let mut records = Vec::new();
            for part in [&handshake[..first], &handshake[first..]] {
                records.extend_from_slice(&[22, 3, 1]);
                records.extend_from_slice(&(part.len() as u16).to_be_bytes());
                records.extend_from_slice(part);
            }
            let mut s = Scratch::default();
            assert_eq!(
                tls(&payload(&records, 0), &mut s),
                Dissect::Match(Protocol::Tls, Some("tiny.example".into())),
                "{first} byte(s) in the first record"
            );
        }
    }

    #[test]
    fn hello_split_across_segments() {
        let rec = client_hello("split.example");
        let mut s = Scratch::default();
        assert_eq!(tls(&payload(&rec[..20], 0), &mut s), Dissect::More);
        assert_eq!(
            tls(&payload(&rec[20..], 1), &mut s),
            Dissect::Match(Protocol::Tls, Some("split.example".into()))
        );
    }

    /// Fuzzer find: a DTLS handshake record whose length field (0) is shorter
    /// than the handshake header it carries.
    #[test]
    fn dtls_record_shorter_than_its_header() {
        let d = [
            0x16, 0x01, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x53, 0x53, 0x00, 0x4c, 0x32, 0xd1, 0x0d, 0x20, 0x2f, 0x20, 0x48, 0xd8, 0xd8, 0xc8,
            0xff, 0x0a, 0x0d, 0x0a, 0x25,
        ];
        let p = Payload {
            data: &d,
            from_client: true,
            src_port: 53507,
            dst_port: 53,
            index: 0,
            l4: 17,
        };
        assert_eq!(
            dtls(&p, &mut Scratch::default()),
            Dissect::Match(Protocol::Dtls, None)
        );
    }

    #[test]
    fn truncated_hellos_never_panic() {
        let rec = client_hello("a.b");
        for len in 0..rec.len() {
            let _ = parse_client_hello(&rec[9..9.max(len)], false);
            let _ = tls(&payload(&rec[..len], 0), &mut Scratch::default());
        }
    }
}
