//! Signature rules in Suricata's syntax, so users can bring rules they have.
//!
//! `action proto src sport -> dst dport (options)`, with `<>`, `any`, lists,
//! negation and `$VARIABLES` from a vars file. Options, with Suricata's
//! meaning (checked against Suricata 7 by `bench/tests/suricata_agreement.rs`):
//! - `msg`, `sid`, `rev`; informational `classtype`, `reference`,
//!   `metadata`, `priority`, `gid`, `target`;
//! - payload: `content` (with `|hex|`), `nocase`, `depth`, `offset`,
//!   `distance`, `within` (numbers or `byte_extract` variables),
//!   `startswith`, `endswith`, `bsize`, `fast_pattern` (picks the
//!   prefilter's pattern), `pcre`, `isdataat`, `byte_test`, `byte_jump`,
//!   `byte_extract`, `dsize`;
//! - sticky buffers: `http.host`, `http.uri` (normalised), `http.uri.raw`,
//!   `http.method`, `http.user_agent`, `tls.sni`, `quic.sni`, `ja4.hash`,
//!   `dns.query`, `pkt_data`, and `urilen`;
//! - header and flow: `flow`, `app-layer-protocol`, `flags`, `ip_proto`,
//!   `ttl`, `itype`, `icode`, `dns.opcode`;
//! - state: `flowbits` (set, unset, toggle, isset, isnotset, noalert),
//!   `threshold`, `detection_filter`.
//!
//! Anything else is an error naming the file, line and keyword (or,
//! leniently, a warning and that rule skipped): never silently ignored.
//!
//! Every rule's longest content (or its `fast_pattern`) goes into an
//! Aho-Corasick automaton per buffer, so a packet only runs the rules whose
//! fast pattern it contains (plus the few with no content at all): 10,000
//! rules cost little more than 10.

mod parse;

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aho_corasick::AhoCorasick;

pub use parse::Vars;

use crate::classify::{Classification, Protocol};

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Log, keep inspecting.
    Alert,
    /// Drop the flow.
    Drop,
    /// Stop inspecting and let the flow through (no more rules).
    Pass,
    /// Stop inspecting; the kernel handles the rest of the flow.
    Bypass,
    /// Drop the flow and, inline, reset it (TCP) or answer ICMP
    /// unreachable (other transports): `reject`/`rejectsrc` toward the
    /// packet's sender, `rejectdst` toward its destination, `rejectboth`.
    Reject(crate::reject::Reject),
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Drop => "drop",
            Action::Pass => "pass",
            Action::Bypass => "bypass",
            Action::Reject(crate::reject::Reject::Source) => "reject",
            Action::Reject(crate::reject::Reject::Destination) => "rejectdst",
            Action::Reject(crate::reject::Reject::Both) => "rejectboth",
        }
    }
}

/// Where a content or pcre looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    Payload,
    HttpHost,
    HttpHostRaw,
    HttpUri,
    HttpUriRaw,
    HttpMethod,
    HttpUserAgent,
    HttpHeader,
    HttpHeaderRaw,
    HttpCookie,
    HttpReferer,
    HttpContentType,
    HttpContentLen,
    HttpRequestLine,
    HttpResponseLine,
    HttpProtocol,
    HttpStatCode,
    HttpStatMsg,
    HttpServer,
    HttpLocation,
    HttpAccept,
    HttpAcceptEnc,
    HttpAcceptLang,
    HttpConnection,
    HttpRequestBody,
    HttpResponseBody,
    /// `file.data`: the body of the message of the packet's direction.
    FileData,
    TlsSni,
    QuicSni,
    Ja4,
    Ja3Hash,
    Ja3String,
    Ja3sHash,
    Ja3sString,
    TlsCertSubject,
    TlsCertIssuer,
    SshProto,
    SshSoftware,
    DnsQuery,
}

const BUFFERS: [Buffer; 39] = [
    Buffer::Payload,
    Buffer::HttpHost,
    Buffer::HttpHostRaw,
    Buffer::HttpUri,
    Buffer::HttpUriRaw,
    Buffer::HttpMethod,
    Buffer::HttpUserAgent,
    Buffer::HttpHeader,
    Buffer::HttpHeaderRaw,
    Buffer::HttpCookie,
    Buffer::HttpReferer,
    Buffer::HttpContentType,
    Buffer::HttpContentLen,
    Buffer::HttpRequestLine,
    Buffer::HttpResponseLine,
    Buffer::HttpProtocol,
    Buffer::HttpStatCode,
    Buffer::HttpStatMsg,
    Buffer::HttpServer,
    Buffer::HttpLocation,
    Buffer::HttpAccept,
    Buffer::HttpAcceptEnc,
    Buffer::HttpAcceptLang,
    Buffer::HttpConnection,
    Buffer::HttpRequestBody,
    Buffer::HttpResponseBody,
    Buffer::FileData,
    Buffer::TlsSni,
    Buffer::QuicSni,
    Buffer::Ja4,
    Buffer::Ja3Hash,
    Buffer::Ja3String,
    Buffer::Ja3sHash,
    Buffer::Ja3sString,
    Buffer::TlsCertSubject,
    Buffer::TlsCertIssuer,
    Buffer::SshProto,
    Buffer::SshSoftware,
    Buffer::DnsQuery,
];

impl Buffer {
    /// The direction the buffer is read in: Some(true) the client's
    /// (request, query, ClientHello), Some(false) the server's (response),
    /// None either (the message of the packet's direction).
    pub(crate) fn to_server(self) -> Option<bool> {
        use Buffer::*;
        match self {
            HttpHost | HttpHostRaw | HttpUri | HttpUriRaw | HttpMethod | HttpUserAgent
            | HttpRequestLine | HttpReferer | HttpAccept | HttpAcceptEnc | HttpAcceptLang
            | HttpRequestBody | TlsSni | QuicSni | Ja4 | Ja3Hash | Ja3String | DnsQuery => {
                Some(true)
            }
            HttpStatCode | HttpStatMsg | HttpServer | HttpLocation | HttpResponseLine
            | HttpResponseBody | Ja3sHash | Ja3sString | TlsCertSubject | TlsCertIssuer => {
                Some(false)
            }
            _ => None,
        }
    }

    /// Whether the buffer is one of HTTP's.
    fn is_http(self) -> bool {
        use Buffer::*;
        !matches!(
            self,
            Payload
                | TlsSni
                | QuicSni
                | Ja4
                | Ja3Hash
                | Ja3String
                | Ja3sHash
                | Ja3sString
                | TlsCertSubject
                | TlsCertIssuer
                | SshProto
                | SshSoftware
                | DnsQuery
        )
    }
}

/// A rule file problem: which file, which line, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

impl std::error::Error for RuleError {}

/// A number in a rule: written out, or a `byte_extract` variable (its
/// index in the rule's variables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Num {
    Lit(i64),
    Var(usize),
}

/// Most `byte_extract` variables one rule may define (Suricata's limit).
pub(crate) const MAX_BYTE_VARS: usize = 8;

/// The values of a rule's `byte_extract` variables during one match.
type ByteVars = [i64; MAX_BYTE_VARS];

impl Num {
    fn get(self, vars: &ByteVars) -> i64 {
        match self {
            Num::Lit(n) => n,
            Num::Var(i) => vars[i],
        }
    }

    /// The value when it is written out.
    pub(crate) fn literal(self) -> Option<i64> {
        match self {
            Num::Lit(n) => Some(n),
            Num::Var(_) => None,
        }
    }
}

/// One `content` (or negated content) with its modifiers.
#[derive(Clone, Debug)]
pub(crate) struct Content {
    pub bytes: Vec<u8>,
    pub nocase: bool,
    pub negated: bool,
    pub offset: Option<Num>,
    pub depth: Option<Num>,
    pub distance: Option<Num>,
    pub within: Option<Num>,
    /// `endswith`: the match must end where the buffer ends.
    pub endswith: bool,
    /// `fast_pattern`: this content (or this part of it) feeds the prefilter.
    pub fast_pattern: Option<(usize, usize)>,
}

/// How `byte_test`, `byte_jump` and `byte_extract` read a number from the
/// buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ByteRead {
    pub nbytes: usize,
    pub offset: Num,
    /// From the end of the previous match instead of the buffer's start.
    pub relative: bool,
    pub little_endian: bool,
    /// `string,dec|hex|oct`: the bytes are digits in this base.
    pub base: Option<u32>,
    /// `bitmask`: keep these bits, shifted down to the mask's lowest.
    pub bitmask: Option<u64>,
}

impl ByteRead {
    /// The number and where the bytes read end; None when the bytes are
    /// not there (or are not digits).
    fn read(&self, data: &[u8], prev_end: usize, vars: &ByteVars) -> Option<(u64, usize)> {
        let start = if self.relative { prev_end as i64 } else { 0 } + self.offset.get(vars);
        let start = usize::try_from(start).ok()?;
        let bytes = data.get(start..start.checked_add(self.nbytes)?)?;
        let mut value = match self.base {
            None if self.little_endian => bytes
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b)),
            None => bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)),
            // As strtoull: leading blanks, then the longest run of digits.
            Some(base) => {
                let text = std::str::from_utf8(bytes).ok()?.trim_start();
                let digits = text
                    .find(|c: char| !c.is_digit(base))
                    .map_or(text, |end| &text[..end]);
                u64::from_str_radix(digits, base).ok()?
            }
        };
        if let Some(mask) = self.bitmask {
            value = (value & mask) >> mask.trailing_zeros().min(63);
        }
        Some((value, start + self.nbytes))
    }
}

/// `byte_test`'s comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteOp {
    Lt,
    Gt,
    Eq,
    Le,
    Ge,
    /// Any of the bits set.
    And,
    /// Differs in any bit.
    Xor,
}

/// Where `byte_jump` counts its jump from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JumpFrom {
    /// The end of the bytes read.
    Here,
    Beginning,
    End,
}

#[derive(Clone, Debug)]
pub(crate) enum Matcher {
    Content(Content),
    Pcre {
        regex: regex::bytes::Regex,
        negated: bool,
        relative: bool,
    },
    /// `bsize`: the buffer's length is within these bounds (inclusive).
    Bsize {
        min: usize,
        max: usize,
    },
    /// `isdataat`: there is a byte at this position (or, negated, not).
    IsDataAt {
        at: Num,
        relative: bool,
        negated: bool,
    },
    /// `byte_test`: the number read compares to the value.
    ByteTest {
        read: ByteRead,
        op: ByteOp,
        negated: bool,
        value: Num,
    },
    /// `byte_jump`: moves the position by the number read.
    ByteJump {
        read: ByteRead,
        multiplier: u64,
        align: bool,
        from: JumpFrom,
        post_offset: i64,
    },
    /// `byte_extract`: keeps the number read in a variable.
    ByteExtract {
        read: ByteRead,
        var: usize,
        multiplier: u64,
        align: u64,
    },
}

/// An address set: positive ranges (empty = any) minus negated ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddrSet {
    pub include: Vec<(IpAddr, u8)>,
    pub exclude: Vec<(IpAddr, u8)>,
}

fn in_net(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl AddrSet {
    /// As Suricata: a set made only of negations is the complement within
    /// the address families it names (`![10.0.0.0/8]` is every IPv4
    /// address but those, and no IPv6 address).
    fn contains(&self, ip: IpAddr) -> bool {
        let included = if self.include.is_empty() {
            self.exclude.is_empty()
                || self
                    .exclude
                    .iter()
                    .any(|(net, _)| net.is_ipv4() == ip.is_ipv4())
        } else {
            self.include.iter().any(|n| in_net(ip, *n))
        };
        included && !self.exclude.iter().any(|n| in_net(ip, *n))
    }
}

/// A port set: positive ranges (empty = any) minus negated ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct PortSet {
    pub include: Vec<(u16, u16)>,
    pub exclude: Vec<(u16, u16)>,
}

impl PortSet {
    fn contains(&self, port: u16) -> bool {
        let hit = |(lo, hi): &(u16, u16)| (*lo..=*hi).contains(&port);
        (self.include.is_empty() || self.include.iter().any(hit)) && !self.exclude.iter().any(hit)
    }
}

/// `flow:` constraints.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FlowOpts {
    pub to_server: Option<bool>,
    pub established: Option<bool>,
}

/// Suricata's `flags` keyword: which TCP flags, how they compare, and
/// which bits to ignore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlagsTest {
    pub bits: u8,
    pub mode: FlagsMode,
    pub ignore: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlagsMode {
    /// Exactly these (after the ignored bits are masked out).
    Exact,
    /// These and maybe others (`+`).
    All,
    /// Any of these (`*`).
    Any,
    /// None of these (`!`).
    Not,
}

impl FlagsTest {
    fn holds(&self, flags: u8) -> bool {
        let flags = flags & !self.ignore;
        match self.mode {
            FlagsMode::Exact => flags == self.bits,
            FlagsMode::All => flags & self.bits == self.bits,
            FlagsMode::Any => flags & self.bits != 0,
            FlagsMode::Not => flags & self.bits == 0,
        }
    }
}

/// A number test as Suricata writes it for `ttl`, `itype`, `icode`:
/// `N`, `!N`, `<N`, `<=N`, `>N`, `>=N`, `N-M` or `N<>M` (both exclusive),
/// kept as an inclusive range (and whether it is negated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UintTest {
    pub lo: u64,
    pub hi: u64,
    pub negated: bool,
}

impl UintTest {
    fn holds(&self, v: u64) -> bool {
        (self.lo..=self.hi).contains(&v) != self.negated
    }
}

/// What a `flowbits` option does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowbitCmd {
    Set,
    Unset,
    Toggle,
    IsSet,
    IsNotSet,
}

/// One `flowbits` option: the command and the bits it names (`a|b`: any
/// of them, for the checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Flowbit {
    pub cmd: FlowbitCmd,
    pub names: Vec<String>,
    /// The names' numbers in the rule set, given when it is built.
    pub ids: Vec<usize>,
}

impl Flowbit {
    fn is_check(&self) -> bool {
        matches!(self.cmd, FlowbitCmd::IsSet | FlowbitCmd::IsNotSet)
    }
}

/// The flowbits of one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowBits(Vec<u64>);

impl FlowBits {
    fn get(&self, id: usize) -> bool {
        self.0
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn put(&mut self, id: usize, on: bool) {
        if self.0.len() <= id / 64 {
            self.0.resize(id / 64 + 1, 0);
        }
        if on {
            self.0[id / 64] |= 1 << (id % 64);
        } else {
            self.0[id / 64] &= !(1 << (id % 64));
        }
    }
}

/// `threshold` and `detection_filter`: which matches raise an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThresholdKind {
    /// The first `count` per period.
    Limit,
    /// Every `count`th in a period.
    Threshold,
    /// Once per period, at the `count`th.
    Both,
    /// `detection_filter`: every one after the first `count` in a period.
    DetectionFilter,
}

/// What a threshold counts separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Track {
    Src,
    Dst,
    Both,
    Rule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Threshold {
    pub kind: ThresholdKind,
    pub track: Track,
    pub count: u32,
    pub seconds: u32,
}

/// Threshold counters are kept for at most this many (rule, addresses):
/// a flood of sources clears them rather than growing without bound.
const MAX_THRESHOLD_ENTRIES: usize = 65_536;

/// A parsed rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub sid: u32,
    /// Generator id: 1 unless the rule says otherwise.
    pub gid: u32,
    pub rev: u32,
    pub msg: String,
    /// `classtype`: what kind of event the rule reports.
    pub class: Option<&'static Classtype>,
    /// `priority`, overriding the classtype's.
    pub priority: Option<u8>,
    pub action: Action,
    /// File and line it came from.
    pub origin: (PathBuf, usize),
    pub(crate) l4: Option<u8>,
    /// A second transport the rule is for (`icmp`: ICMPv6 as well).
    pub(crate) l4_also: Option<u8>,
    /// The app-layer protocols the rule is for (the header's protocol and
    /// `app-layer-protocol`, intersected).
    pub(crate) app_proto: Option<Vec<Protocol>>,
    /// `app-layer-protocol:!x`: not these, and never while the protocol is
    /// still unknown (as Suricata: a negation does not match the unknown
    /// state).
    pub(crate) app_proto_not: Option<Vec<Protocol>>,
    pub(crate) src: AddrSet,
    pub(crate) sport: PortSet,
    pub(crate) dst: AddrSet,
    pub(crate) dport: PortSet,
    pub(crate) bidirectional: bool,
    pub(crate) flow: FlowOpts,
    /// `dsize`: the packet's payload length within these bounds.
    pub(crate) dsize: Option<(usize, usize)>,
    /// `flags`: the TCP flags test.
    pub(crate) flags: Option<FlagsTest>,
    /// `ttl`, `itype`, `icode`.
    pub(crate) ttl: Option<UintTest>,
    pub(crate) itype: Option<UintTest>,
    pub(crate) icode: Option<UintTest>,
    /// `dns.opcode`.
    pub(crate) dns_opcode: Option<UintTest>,
    /// `tls.version`: the version the packet's side uses.
    pub(crate) tls_version: Option<u16>,
    pub(crate) flowbits: Vec<Flowbit>,
    /// `flowbits:noalert`: a match acts (sets bits, decides) but is not
    /// reported.
    pub(crate) noalert: bool,
    pub(crate) threshold: Option<Threshold>,
    /// Matchers per buffer, in rule order.
    pub(crate) matchers: Vec<(Buffer, Matcher)>,
}

impl Rule {
    /// Severity as Suricata reports it: the rule's `priority`, else its
    /// classtype's, else 3.
    pub fn severity(&self) -> u8 {
        self.priority
            .or(self.class.map(|c| c.priority))
            .unwrap_or(3)
    }
}

/// A `classtype`: its name in rules, the description alerts carry as their
/// category, and its default priority.
#[derive(Debug, PartialEq, Eq)]
pub struct Classtype {
    pub name: &'static str,
    pub description: &'static str,
    pub priority: u8,
}

/// The classtypes of Suricata's (and Snort's) standard
/// `classification.config`, which public rule sets use.
pub const CLASSTYPES: &[Classtype] = &{
    const fn c(name: &'static str, description: &'static str, priority: u8) -> Classtype {
        Classtype {
            name,
            description,
            priority,
        }
    }
    [
        c("not-suspicious", "Not Suspicious Traffic", 3),
        c("unknown", "Unknown Traffic", 3),
        c("bad-unknown", "Potentially Bad Traffic", 2),
        c("attempted-recon", "Attempted Information Leak", 2),
        c("successful-recon-limited", "Information Leak", 2),
        c(
            "successful-recon-largescale",
            "Large Scale Information Leak",
            2,
        ),
        c("attempted-dos", "Attempted Denial of Service", 2),
        c("successful-dos", "Denial of Service", 2),
        c("attempted-user", "Attempted User Privilege Gain", 1),
        c("unsuccessful-user", "Unsuccessful User Privilege Gain", 1),
        c("successful-user", "Successful User Privilege Gain", 1),
        c(
            "attempted-admin",
            "Attempted Administrator Privilege Gain",
            1,
        ),
        c(
            "successful-admin",
            "Successful Administrator Privilege Gain",
            1,
        ),
        c("rpc-portmap-decode", "Decode of an RPC Query", 2),
        c("shellcode-detect", "Executable code was detected", 1),
        c("string-detect", "A suspicious string was detected", 3),
        c(
            "suspicious-filename-detect",
            "A suspicious filename was detected",
            2,
        ),
        c(
            "suspicious-login",
            "An attempted login using a suspicious username was detected",
            2,
        ),
        c("system-call-detect", "A system call was detected", 2),
        c("tcp-connection", "A TCP connection was detected", 4),
        c("trojan-activity", "A Network Trojan was detected", 1),
        c(
            "unusual-client-port-connection",
            "A client was using an unusual port",
            2,
        ),
        c("network-scan", "Detection of a Network Scan", 3),
        c(
            "denial-of-service",
            "Detection of a Denial of Service Attack",
            2,
        ),
        c(
            "non-standard-protocol",
            "Detection of a non-standard protocol or event",
            2,
        ),
        c(
            "protocol-command-decode",
            "Generic Protocol Command Decode",
            3,
        ),
        c(
            "web-application-activity",
            "access to a potentially vulnerable web application",
            2,
        ),
        c("web-application-attack", "Web Application Attack", 1),
        c("misc-activity", "Misc activity", 3),
        c("misc-attack", "Misc Attack", 2),
        c("icmp-event", "Generic ICMP event", 3),
        c(
            "inappropriate-content",
            "Inappropriate Content was Detected",
            1,
        ),
        c(
            "policy-violation",
            "Potential Corporate Privacy Violation",
            1,
        ),
        c(
            "default-login-attempt",
            "Attempt to login by a default username and password",
            2,
        ),
        c(
            "targeted-activity",
            "Targeted Malicious Activity was Detected",
            1,
        ),
        c("exploit-kit", "Exploit Kit Activity Detected", 1),
        c(
            "external-ip-check",
            "Device Retrieving External IP Address Detected",
            2,
        ),
        c("domain-c2", "Domain Observed Used for C2 Detected", 1),
        c("pup-activity", "Possibly Unwanted Program Detected", 2),
        c(
            "credential-theft",
            "Successful Credential Theft Detected",
            1,
        ),
        c(
            "social-engineering",
            "Possible Social Engineering Attempted",
            2,
        ),
        c("coin-mining", "Crypto Currency Mining Activity Detected", 2),
        c(
            "command-and-control",
            "Malware Command and Control Activity Detected",
            1,
        ),
    ]
};

/// The classtype of that name (case-insensitive, as Suricata looks them up).
pub fn classtype(name: &str) -> Option<&'static Classtype> {
    CLASSTYPES
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}

/// One packet as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct PacketView<'a> {
    pub l4: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// From the flow's initiator.
    pub to_server: bool,
    /// Both sides have sent something (TCP: the handshake is done).
    pub established: bool,
    /// Transport payload: the packet's, or for TCP a window of the
    /// reassembled stream of its direction.
    pub payload: &'a [u8],
    /// Stream offset of `payload[0]` (0 for a packet): `offset`/`depth`
    /// count from the stream's start.
    pub payload_base: u64,
    /// The flow's classification so far.
    pub app: Option<&'a Classification>,
    /// The flow's JA4 fingerprint, if it has one.
    pub ja4: Option<&'a str>,
    /// The name this packet's DNS request asks for (requests only, as
    /// Suricata's `dns.query`).
    pub dns_query: Option<&'a str>,
    /// The packet's own payload length (`dsize`), whatever the stream.
    pub dsize: usize,
    /// The TCP flags of the packet (None for other transports).
    pub tcp_flags: Option<u8>,
    /// The IP TTL or hop limit.
    pub ttl: u8,
    /// ICMP type and code (ICMP and ICMPv6 packets).
    pub icmp: Option<(u8, u8)>,
    /// The opcode of this packet's DNS request, with `dns_query`.
    pub dns_opcode: Option<u8>,
    /// The HTTP transaction the packet belongs to: the request's head, and
    /// the response's once it came; the bodies so far (bounded).
    pub http_request: Option<&'a crate::http::HttpHead>,
    pub http_response: Option<&'a crate::http::HttpResponse>,
    pub request_body: Option<&'a [u8]>,
    pub response_body: Option<&'a [u8]>,
    /// The server's TLS handshake as far as it was read.
    pub tls_server: Option<&'a crate::classify::ServerInfo>,
    /// The SSH banner of the packet's direction (`SSH-2.0-...`).
    pub ssh_banner: Option<&'a [u8]>,
    /// The packet's time (ns; any clock, as long as it only goes forward),
    /// for `threshold` and `detection_filter`.
    pub now_ns: u64,
    /// The app-layer fields are new in this direction (a request, a query,
    /// the classification, not yet inspected this way): rules reading them
    /// run once per transaction and direction, as Suricata's do.
    pub app_fresh: bool,
}

impl Default for PacketView<'_> {
    /// A TCP packet of an established flow to the server with nothing known
    /// of it: fill in what a caller has (`..PacketView::default()`).
    fn default() -> Self {
        let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        PacketView {
            l4: 6,
            src: unspecified,
            dst: unspecified,
            sport: 0,
            dport: 0,
            to_server: true,
            established: true,
            payload: &[],
            payload_base: 0,
            app: None,
            ja4: None,
            dns_query: None,
            dsize: 0,
            tcp_flags: None,
            ttl: 64,
            icmp: None,
            dns_opcode: None,
            app_fresh: true,
            http_request: None,
            http_response: None,
            request_body: None,
            response_body: None,
            tls_server: None,
            ssh_banner: None,
            now_ns: 0,
        }
    }
}

impl<'a> PacketView<'a> {
    /// The HTTP head of the packet's direction.
    fn head(&self) -> Option<&'a crate::http::HttpHead> {
        if self.to_server {
            self.http_request
        } else {
            self.http_response.map(|r| &r.head)
        }
    }

    fn buffer(&self, buffer: Buffer) -> Option<&'a [u8]> {
        let app = self.app;
        let proto = app.map(|a| a.protocol);
        let host = || app.and_then(|a| a.host.as_deref()).map(str::as_bytes);
        let sni = || {
            app.and_then(|a| a.info.sni_raw.as_deref())
                .map(str::as_bytes)
        };
        let tls = matches!(
            proto,
            Some(Protocol::Tls | Protocol::Imaps | Protocol::Pops | Protocol::Smtps)
        );
        match buffer {
            Buffer::Payload => Some(self.payload),
            Buffer::HttpHost if matches!(proto, Some(Protocol::Http | Protocol::HttpProxy)) => {
                host()
            }
            Buffer::HttpUri => app
                .and_then(|a| a.info.http_uri.as_deref())
                .map(str::as_bytes),
            Buffer::HttpUriRaw => app
                .and_then(|a| a.info.http_uri_raw.as_deref())
                .map(str::as_bytes),
            Buffer::HttpMethod => app
                .and_then(|a| a.info.http_method.as_deref())
                .map(str::as_bytes),
            Buffer::HttpUserAgent => app
                .and_then(|a| a.info.http_user_agent.as_deref())
                .map(str::as_bytes),
            Buffer::HttpHostRaw => self.http_request.and_then(|h| h.header("host")),
            Buffer::HttpReferer => self.http_request.and_then(|h| h.header("referer")),
            Buffer::HttpRequestLine => self.http_request.map(|h| &h.start_line[..]),
            Buffer::HttpAccept => self.http_request.and_then(|h| h.header("accept")),
            Buffer::HttpAcceptEnc => self.http_request.and_then(|h| h.header("accept-encoding")),
            Buffer::HttpAcceptLang => self.http_request.and_then(|h| h.header("accept-language")),
            Buffer::HttpResponseLine => self.http_response.map(|r| &r.head.start_line[..]),
            Buffer::HttpStatCode => self.http_response.map(|r| &r.status[..]),
            Buffer::HttpStatMsg => self.http_response.map(|r| &r.message[..]),
            Buffer::HttpServer => self.http_response.and_then(|r| r.head.header("server")),
            Buffer::HttpLocation => self.http_response.and_then(|r| r.head.header("location")),
            Buffer::HttpRequestBody => self.request_body,
            Buffer::HttpResponseBody => self.response_body,
            // The message of the packet's direction.
            Buffer::HttpHeader => self.head().map(|h| &h.normalised[..]),
            Buffer::HttpHeaderRaw => self.head().map(|h| &h.raw[..]),
            Buffer::HttpProtocol => self.head().map(|h| &h.protocol[..]),
            Buffer::HttpContentType => self.head().and_then(|h| h.header("content-type")),
            Buffer::HttpContentLen => self.head().and_then(|h| h.header("content-length")),
            Buffer::HttpConnection => self.head().and_then(|h| h.header("connection")),
            Buffer::HttpCookie if self.to_server => {
                self.http_request.and_then(|h| h.header("cookie"))
            }
            Buffer::HttpCookie => self.http_response.and_then(|r| r.head.header("set-cookie")),
            Buffer::FileData if self.to_server => self.request_body,
            Buffer::FileData => self.response_body,
            // As Suricata: `tls.sni` is TLS's, as sent; QUIC has `quic.sni`.
            Buffer::TlsSni if tls => sni(),
            Buffer::QuicSni if proto == Some(Protocol::Quic) => sni(),
            Buffer::Ja3Hash if tls => app
                .and_then(|a| a.info.ja3_hash.as_deref())
                .map(str::as_bytes),
            Buffer::Ja3String if tls => app.and_then(|a| a.info.ja3.as_deref()).map(str::as_bytes),
            Buffer::Ja3sHash => self
                .tls_server
                .and_then(|s| s.ja3s_hash.as_deref())
                .map(str::as_bytes),
            Buffer::Ja3sString => self
                .tls_server
                .and_then(|s| s.ja3s.as_deref())
                .map(str::as_bytes),
            Buffer::TlsCertSubject => self
                .tls_server
                .and_then(|s| s.cert_subject.as_deref())
                .map(str::as_bytes),
            Buffer::TlsCertIssuer => self
                .tls_server
                .and_then(|s| s.cert_issuer.as_deref())
                .map(str::as_bytes),
            // SSH-<proto>-<software>[ comments]
            Buffer::SshProto | Buffer::SshSoftware => {
                let rest = self.ssh_banner?.strip_prefix(b"SSH-")?;
                let dash = rest.iter().position(|b| *b == b'-')?;
                if buffer == Buffer::SshProto {
                    Some(&rest[..dash])
                } else {
                    let software = &rest[dash + 1..];
                    let end = software
                        .iter()
                        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
                        .unwrap_or(software.len());
                    Some(&software[..end])
                }
            }
            Buffer::DnsQuery => self.dns_query.map(str::as_bytes),
            Buffer::Ja4 => self.ja4.map(str::as_bytes),
            _ => None,
        }
    }
}

/// A rule that matched a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The rule's index in the set ([`RuleSet::rule`]).
    pub rule: usize,
    pub sid: u32,
    pub action: Action,
    /// Whether it raises an alert (not for `flowbits:noalert`).
    pub alert: bool,
}

/// Most steps matching one rule against one packet may take: each step
/// tries one content or pcre at one position (a relative chain backtracks
/// through every earlier occurrence, so a crafted input could otherwise
/// drive 5 relative contents to n^5 tries). Suricata's
/// `detect.inspection-recursion-limit` defaults to the same 3000. A rule
/// that runs out has not matched; it is reported in [`Matched::over_limit`].
pub const INSPECTION_LIMIT: u32 = 3000;

/// What the rules made of one packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matched {
    /// The rules that matched, in file order.
    pub hits: Vec<Hit>,
    /// The rules whose matching ran out of steps ([`INSPECTION_LIMIT`])
    /// before it could tell: they did not match.
    pub over_limit: Vec<Hit>,
    /// The most steps any one rule took on this packet (<= the limit).
    pub most_steps: u32,
}

/// The step budget of one rule on one packet ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OverLimit;

/// Threshold counters: (sid, the addresses tracked) to (start of the
/// period, matches in it).
type ThresholdCounters = HashMap<(u32, Option<IpAddr>, Option<IpAddr>), (u64, u32)>;

/// A loaded set of rules with its prefilter.
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Per buffer that has fast patterns: the automaton over them, and the
    /// rule of each pattern.
    prefilters: Vec<(Buffer, AhoCorasick, Vec<usize>)>,
    /// Rules without any positive content: always evaluated.
    unfiltered: Vec<usize>,
    /// Rules that check flowbits run after those that only set them, so a
    /// bit set by one packet's rule is seen by another rule on the same
    /// packet (Suricata orders them so).
    checks_flowbits: Vec<bool>,
    /// Rules reading an app-layer buffer (run only when it is fresh).
    uses_app: Vec<bool>,
    /// Shared by every worker: thresholds count across flows.
    thresholds: std::sync::Mutex<ThresholdCounters>,
    /// Rules skipped in lenient mode, with why.
    pub warnings: Vec<RuleError>,
    /// The same, by what was unsupported (`keyword base64_decode`): the
    /// lines of the rules it made skip, most frequent first.
    pub skipped: Vec<(String, Vec<usize>)>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("unfiltered", &self.unfiltered.len())
            .finish()
    }
}

impl RuleSet {
    /// Parses rule text. `file` names it in errors. Lenient: a rule with an
    /// unsupported keyword is skipped with a warning instead of failing all.
    pub fn parse(
        text: &str,
        file: &Path,
        vars: &Vars,
        lenient: bool,
    ) -> Result<RuleSet, Vec<RuleError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut skipped: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        let mut sids: HashMap<u32, usize> = HashMap::new();
        // Rules may continue over lines ending in a backslash.
        let mut pending = String::new();
        let mut start_line = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if pending.is_empty() {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                start_line = i + 1;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                pending.push_str(cont);
                continue;
            }
            pending.push_str(line);
            let rule_text = std::mem::take(&mut pending);
            match parse::rule(&rule_text, vars) {
                Ok(mut rule) => {
                    rule.origin = (file.to_path_buf(), start_line);
                    if let Some(first) = sids.insert(rule.sid, start_line) {
                        errors.push(RuleError {
                            file: file.into(),
                            line: start_line,
                            message: format!("duplicate sid {} (first on line {first})", rule.sid),
                        });
                        continue;
                    }
                    rules.push(rule);
                }
                Err(e) => {
                    let error = RuleError {
                        file: file.into(),
                        line: start_line,
                        message: e.message,
                    };
                    match e.unsupported {
                        Some(what) if lenient => {
                            skipped.entry(what).or_default().push(start_line);
                            warnings.push(error);
                        }
                        _ => errors.push(error),
                    }
                }
            }
        }
        if !pending.is_empty() {
            errors.push(RuleError {
                file: file.into(),
                line: start_line,
                message: "rule continues past the end of the file".into(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut set = RuleSet::build(rules).map_err(|message| {
            vec![RuleError {
                file: file.into(),
                line: 0,
                message,
            }]
        })?;
        set.warnings = warnings;
        set.skipped = skipped.into_iter().collect();
        set.skipped
            .sort_by_key(|(what, lines)| (std::cmp::Reverse(lines.len()), what.clone()));
        Ok(set)
    }

    /// Reads and parses a rule file (see [`RuleSet::parse`]).
    pub fn load(path: &Path, vars: &Vars, lenient: bool) -> Result<RuleSet, Vec<RuleError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![RuleError {
                file: path.into(),
                line: 0,
                message: format!("cannot read: {e}"),
            }]
        })?;
        RuleSet::parse(&text, path, vars, lenient)
    }

    fn build(mut rules: Vec<Rule>) -> Result<RuleSet, String> {
        // Flowbit names to numbers, for the whole set.
        let mut bit_ids: HashMap<String, usize> = HashMap::new();
        for rule in &mut rules {
            for fb in &mut rule.flowbits {
                fb.ids = fb
                    .names
                    .iter()
                    .map(|n| {
                        let next = bit_ids.len();
                        *bit_ids.entry(n.clone()).or_insert(next)
                    })
                    .collect();
            }
        }
        let mut patterns: HashMap<Buffer, (Vec<Vec<u8>>, Vec<usize>)> = HashMap::new();
        let mut unfiltered = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let positive = || {
                rule.matchers.iter().filter_map(|(b, m)| match m {
                    Matcher::Content(c) if !c.negated && !c.bytes.is_empty() => Some((*b, c)),
                    _ => None,
                })
            };
            // The content marked `fast_pattern` (or its part), else the longest.
            let fast = positive()
                .find_map(|(b, c)| {
                    c.fast_pattern
                        .map(|(from, len)| (b, c.bytes[from..from + len].to_vec()))
                })
                .or_else(|| {
                    positive()
                        .max_by_key(|(_, c)| c.bytes.len())
                        .map(|(b, c)| (b, c.bytes.clone()))
                });
            match fast {
                Some((buffer, bytes)) => {
                    let entry = patterns.entry(buffer).or_default();
                    entry.0.push(bytes);
                    entry.1.push(i);
                }
                None => unfiltered.push(i),
            }
        }
        let mut prefilters = Vec::new();
        for buffer in BUFFERS {
            let Some((pats, owners)) = patterns.remove(&buffer) else {
                continue;
            };
            // Case-insensitive: a superset of the real matches; the full check decides.
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&pats)
                .map_err(|e| e.to_string())?;
            prefilters.push((buffer, ac, owners));
        }
        let checks_flowbits = rules
            .iter()
            .map(|r| r.flowbits.iter().any(Flowbit::is_check))
            .collect();
        let uses_app = rules
            .iter()
            .map(|r| r.matchers.iter().any(|(b, _)| *b != Buffer::Payload))
            .collect();
        Ok(RuleSet {
            rules,
            prefilters,
            unfiltered,
            checks_flowbits,
            uses_app,
            thresholds: std::sync::Mutex::new(HashMap::new()),
            warnings: Vec::new(),
            skipped: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule at `index` ([`Hit::rule`]).
    pub fn rule(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    /// The rules matching `packet`, in file order, each within
    /// [`INSPECTION_LIMIT`] steps. `bits` are the flow's flowbits, read
    /// and changed by the rules that match.
    pub fn matches(&self, packet: &PacketView<'_>, bits: &mut FlowBits) -> Matched {
        let mut candidates: Vec<usize> = self.unfiltered.clone();
        for (buffer, ac, owners) in &self.prefilters {
            let Some(data) = packet.buffer(*buffer) else {
                continue;
            };
            for m in ac.find_overlapping_iter(data) {
                candidates.push(owners[m.pattern().as_usize()]);
            }
        }
        candidates.sort_unstable_by_key(|i| (self.checks_flowbits[*i], *i));
        candidates.dedup();
        let mut matched = Matched::default();
        for &i in &candidates {
            let rule = &self.rules[i];
            let hit = Hit {
                rule: i,
                sid: rule.sid,
                action: rule.action,
                alert: !rule.noalert,
            };
            if !rule.flowbits_hold(bits) || (self.uses_app[i] && !packet.app_fresh) {
                continue;
            }
            let mut budget = INSPECTION_LIMIT;
            let result = rule.matches(packet, &mut budget);
            matched.most_steps = matched.most_steps.max(INSPECTION_LIMIT - budget);
            match result {
                Ok(true) => {
                    rule.apply_flowbits(bits);
                    if self.threshold_passes(rule, packet) {
                        matched.hits.push(hit);
                    }
                }
                Ok(false) => {}
                Err(OverLimit) => matched.over_limit.push(hit),
            }
        }
        if candidates.iter().any(|i| self.checks_flowbits[*i]) {
            let order: HashMap<u32, usize> = candidates
                .iter()
                .map(|i| (self.rules[*i].sid, *i))
                .collect();
            matched.hits.sort_by_key(|h| order[&h.sid]);
        }
        matched
    }

    /// Whether a match of `rule` is reported, by its `threshold` or
    /// `detection_filter` (counted per period across flows, as Suricata's
    /// thresholds are).
    fn threshold_passes(&self, rule: &Rule, p: &PacketView<'_>) -> bool {
        let Some(t) = rule.threshold else {
            return true;
        };
        let (src, dst) = match t.track {
            Track::Src => (Some(p.src), None),
            Track::Dst => (None, Some(p.dst)),
            Track::Both => (Some(p.src), Some(p.dst)),
            Track::Rule => (None, None),
        };
        let mut counters = self.thresholds.lock().unwrap_or_else(|e| e.into_inner());
        if counters.len() >= MAX_THRESHOLD_ENTRIES {
            counters.clear();
        }
        let period = u64::from(t.seconds) * 1_000_000_000;
        let (start, count) = counters
            .entry((rule.sid, src, dst))
            .or_insert((p.now_ns, 0));
        if p.now_ns.saturating_sub(*start) > period {
            *start = p.now_ns;
            *count = 0;
        }
        *count += 1;
        match t.kind {
            ThresholdKind::Limit => *count <= t.count,
            ThresholdKind::Threshold => {
                let every = *count >= t.count;
                if every {
                    *count = 0;
                }
                every
            }
            ThresholdKind::Both => *count == t.count,
            ThresholdKind::DetectionFilter => *count > t.count,
        }
    }
}

/// What is known of a flow once its protocol is, for [`RuleSet::could_match`].
#[derive(Clone, Copy, Debug)]
pub struct FlowFacts {
    pub l4: u8,
    pub client: std::net::SocketAddr,
    pub server: std::net::SocketAddr,
    pub protocol: Protocol,
    pub established: bool,
}

/// What the rules read, so what need be kept of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// A window of the raw stream (`content`/`pcre` on the payload).
    pub payload: bool,
    /// HTTP heads beyond host, URI, method and agent.
    pub http_heads: bool,
    /// The responses.
    pub http_responses: bool,
    /// The bodies.
    pub http_bodies: bool,
    /// The server's TLS handshake (JA3S, certificate, version).
    pub tls_server: bool,
}

impl RuleSet {
    /// Whether some rule has a `content` or `pcre` on the raw payload
    /// (else no stream window need be kept).
    pub fn has_payload_rules(&self) -> bool {
        self.needs().payload
    }

    /// What the rules read.
    pub fn needs(&self) -> Needs {
        let mut needs = Needs {
            tls_server: self.rules.iter().any(|r| r.tls_version.is_some()),
            ..Needs::default()
        };
        for (buffer, _) in self.rules.iter().flat_map(|r| &r.matchers) {
            use Buffer::*;
            match buffer {
                Payload => needs.payload = true,
                Ja3sHash | Ja3sString | TlsCertSubject | TlsCertIssuer => needs.tls_server = true,
                HttpHost | HttpUri | HttpUriRaw | HttpMethod | HttpUserAgent => {}
                HttpRequestBody | HttpResponseBody | FileData => {
                    needs.http_bodies = true;
                    needs.http_heads = true;
                    needs.http_responses |= *buffer != HttpRequestBody;
                }
                b if b.is_http() => {
                    needs.http_heads = true;
                    // a buffer of the response, or of either message
                    needs.http_responses |= b.to_server() != Some(true);
                }
                _ => {}
            }
        }
        needs
    }

    /// Whether some rule could still match a later packet of this flow:
    /// its header fits the flow (either direction), its app-layer protocol
    /// fits, and every buffer it needs can still come (raw payload always
    /// can; HTTP fields on an HTTP flow; a DNS query on a DNS flow; the
    /// TLS SNI and JA4 come once, with the ClientHello that classified the
    /// flow). A rule with no content can only change its answer while the
    /// flow is not yet established. When none could, the kernel can take
    /// the flow: there is nothing more to learn.
    pub fn could_match(&self, flow: &FlowFacts) -> bool {
        self.rules.iter().any(|r| r.could_match(flow))
    }
}

fn buffer_can_come(buffer: Buffer, protocol: Protocol) -> bool {
    match buffer {
        Buffer::Payload => true,
        Buffer::DnsQuery => protocol == Protocol::Dns,
        Buffer::TlsSni | Buffer::QuicSni | Buffer::Ja4 | Buffer::Ja3Hash | Buffer::Ja3String => {
            false
        }
        // the server's part of the handshake is read before the kernel takes the flow
        Buffer::Ja3sHash | Buffer::Ja3sString | Buffer::TlsCertSubject | Buffer::TlsCertIssuer => {
            matches!(
                protocol,
                Protocol::Tls | Protocol::Imaps | Protocol::Pops | Protocol::Smtps
            )
        }
        Buffer::SshProto | Buffer::SshSoftware => protocol == Protocol::Ssh,
        b if b.is_http() => matches!(protocol, Protocol::Http | Protocol::HttpProxy),
        _ => false,
    }
}

impl Rule {
    fn flowbits_hold(&self, bits: &FlowBits) -> bool {
        self.flowbits.iter().all(|fb| {
            let set = |id: &usize| bits.get(*id);
            match fb.cmd {
                FlowbitCmd::IsSet => fb.ids.iter().any(set),
                // `isnotset,a|b`: one of them is not set
                FlowbitCmd::IsNotSet => !fb.ids.iter().all(set),
                _ => true,
            }
        })
    }

    fn apply_flowbits(&self, bits: &mut FlowBits) {
        for fb in &self.flowbits {
            for &id in &fb.ids {
                match fb.cmd {
                    FlowbitCmd::Set => bits.put(id, true),
                    FlowbitCmd::Unset => bits.put(id, false),
                    FlowbitCmd::Toggle => bits.put(id, !bits.get(id)),
                    FlowbitCmd::IsSet | FlowbitCmd::IsNotSet => {}
                }
            }
        }
    }

    /// The direction its buffers are read in (the parser refuses a rule
    /// whose buffers or `flow` disagree, as Suricata does).
    fn buffers_to_server(&self) -> Option<bool> {
        self.matchers.iter().find_map(|(b, _)| b.to_server())
    }

    pub(crate) fn l4_fits(&self, l4: u8) -> bool {
        self.l4.is_none_or(|only| only == l4) || self.l4_also == Some(l4)
    }

    fn could_match(&self, f: &FlowFacts) -> bool {
        if !self.l4_fits(f.l4) {
            return false;
        }
        let fits = |src: std::net::SocketAddr, dst: std::net::SocketAddr| {
            self.src.contains(src.ip())
                && self.sport.contains(src.port())
                && self.dst.contains(dst.ip())
                && self.dport.contains(dst.port())
        };
        if !(fits(f.client, f.server) || fits(f.server, f.client)) {
            return false;
        }
        if self
            .app_proto
            .as_ref()
            .is_some_and(|protos| !protos.contains(&f.protocol))
            || self
                .app_proto_not
                .as_ref()
                .is_some_and(|not| not.contains(&f.protocol))
        {
            return false;
        }
        if self.matchers.is_empty() {
            // A test of each packet (its size, its flags) can hold on any
            // later packet; one that needs a SYN only in the handshake.
            let per_packet = self.dsize.is_some()
                || self.ttl.is_some()
                || self.itype.is_some()
                || self.icode.is_some()
                || self.flowbits.iter().any(Flowbit::is_check)
                || self.flags.is_some_and(|t| {
                    !(matches!(t.mode, FlagsMode::Exact | FlagsMode::All)
                        && t.bits & crate::wire::tcp::SYN != 0)
                });
            return per_packet || !f.established;
        }
        self.matchers
            .iter()
            .filter(|m| !is_negated(m))
            .all(|(buffer, _)| buffer_can_come(*buffer, f.protocol))
    }

    fn header_matches(&self, p: &PacketView<'_>) -> bool {
        if !self.l4_fits(p.l4) {
            return false;
        }
        let forward = self.src.contains(p.src)
            && self.sport.contains(p.sport)
            && self.dst.contains(p.dst)
            && self.dport.contains(p.dport);
        let backward = self.bidirectional
            && self.src.contains(p.dst)
            && self.sport.contains(p.dport)
            && self.dst.contains(p.src)
            && self.dport.contains(p.sport);
        forward || backward
    }

    fn matches(&self, p: &PacketView<'_>, budget: &mut u32) -> Result<bool, OverLimit> {
        if !self.header_matches(p) {
            return Ok(false);
        }
        if self.flow.to_server.is_some_and(|t| t != p.to_server)
            || self.buffers_to_server().is_some_and(|t| t != p.to_server)
            || self.flow.established.is_some_and(|e| e != p.established)
            || self
                .dsize
                .is_some_and(|(min, max)| !(min..=max).contains(&p.dsize))
            || self
                .flags
                .is_some_and(|f| !p.tcp_flags.is_some_and(|flags| f.holds(flags)))
            || self.ttl.is_some_and(|t| !t.holds(u64::from(p.ttl)))
            || self
                .itype
                .is_some_and(|t| !p.icmp.is_some_and(|(ty, _)| t.holds(u64::from(ty))))
            || self
                .icode
                .is_some_and(|t| !p.icmp.is_some_and(|(_, code)| t.holds(u64::from(code))))
            || self
                .dns_opcode
                .is_some_and(|t| !p.dns_opcode.is_some_and(|op| t.holds(u64::from(op))))
            || self.tls_version.is_some_and(|want| {
                let have = if p.to_server {
                    p.app.and_then(|a| a.info.tls_version)
                } else {
                    p.tls_server.and_then(|s| s.version)
                };
                have != Some(want)
            })
        {
            return Ok(false);
        }
        let proto = p.app.map(|a| a.protocol).unwrap_or(Protocol::Unknown);
        if self
            .app_proto
            .as_ref()
            .is_some_and(|protos| !protos.contains(&proto))
        {
            return Ok(false);
        }
        if let Some(not) = &self.app_proto_not
            && (proto == Protocol::Unknown || not.contains(&proto))
        {
            return Ok(false);
        }
        // Matchers run per buffer, in order, with relative positions carried along.
        let mut i = 0;
        while i < self.matchers.len() {
            let buffer = self.matchers[i].0;
            let end = self.matchers[i..]
                .iter()
                .position(|(b, _)| *b != buffer)
                .map_or(self.matchers.len(), |n| i + n);
            let Some(data) = p.buffer(buffer) else {
                // A buffer the flow does not have: only negated matchers can hold.
                if self.matchers[i..end].iter().any(|m| !is_negated(m)) {
                    return Ok(false);
                }
                i = end;
                continue;
            };
            let base = if buffer == Buffer::Payload {
                p.payload_base
            } else {
                0
            };
            let mut vars = [0; MAX_BYTE_VARS];
            if !sequence_matches(&self.matchers[i..end], data, base, 0, &mut vars, budget)? {
                return Ok(false);
            }
            i = end;
        }
        Ok(true)
    }
}

/// Whether a matcher can hold in a buffer the flow does not have (only a
/// negated content or pcre can).
fn is_negated(m: &(Buffer, Matcher)) -> bool {
    match &m.1 {
        Matcher::Content(c) => c.negated,
        Matcher::Pcre { negated, .. } => *negated,
        _ => false,
    }
}

/// Every position of `needle` in `haystack` (the parser rejects empty contents).
fn find<'h>(
    haystack: &'h [u8],
    needle: &'h [u8],
    nocase: bool,
) -> impl Iterator<Item = usize> + 'h {
    let last = haystack.len().checked_sub(needle.len());
    (0..=last.unwrap_or(0)).filter(move |i| {
        last.is_some() && {
            let w = &haystack[*i..*i + needle.len()];
            if nocase {
                w.eq_ignore_ascii_case(needle)
            } else {
                w == needle
            }
        }
    })
}

/// Whether `matchers` all hold in `data`, the first one relative to `prev_end`
/// (end of the previous match in this buffer). Tries every occurrence, as
/// Suricata does, so a later relative match can use an earlier alternative;
/// each try is a step taken from `budget`, and an empty budget ends the
/// search ([`INSPECTION_LIMIT`]).
/// `base` is the offset of `data[0]` in a longer buffer (a stream window):
/// `offset`/`depth` count from that buffer's start. `vars` holds what
/// `byte_extract` read so far.
fn sequence_matches(
    matchers: &[(Buffer, Matcher)],
    data: &[u8],
    base: u64,
    prev_end: usize,
    vars: &mut ByteVars,
    budget: &mut u32,
) -> Result<bool, OverLimit> {
    let Some(((_, first), rest)) = matchers.split_first() else {
        return Ok(true);
    };
    *budget = budget.checked_sub(1).ok_or(OverLimit)?;
    let next = |at: usize, vars: &mut ByteVars, budget: &mut u32| {
        sequence_matches(rest, data, base, at, vars, budget)
    };
    match first {
        Matcher::Content(c) => {
            let get = |n: Option<Num>| n.map(|n| n.get(vars));
            let (distance, within) = (get(c.distance), get(c.within));
            let relative = distance.is_some() || within.is_some();
            let (lo, hi) = if relative {
                let from = (prev_end as i64 + distance.unwrap_or(0)).max(0) as u64;
                let lo = usize::try_from(from).unwrap_or(usize::MAX);
                let hi = within.map_or(data.len(), |w| {
                    usize::try_from(from.saturating_add(w.max(0) as u64)).unwrap_or(usize::MAX)
                });
                (lo, hi.min(data.len()))
            } else {
                let from = get(c.offset).unwrap_or(0).max(0) as u64;
                let lo = usize::try_from(from.saturating_sub(base)).unwrap_or(usize::MAX);
                let hi = get(c.depth).map_or(data.len(), |d| {
                    usize::try_from((from + d.max(0) as u64).saturating_sub(base))
                        .unwrap_or(usize::MAX)
                });
                (lo, hi.min(data.len()))
            };
            if lo > hi || lo > data.len() {
                return Ok(c.negated && next(prev_end, vars, budget)?);
            }
            let window = &data[lo..hi];
            let ends = |at: &usize| !c.endswith || lo + at + c.bytes.len() == data.len();
            if c.negated {
                return Ok(find(window, &c.bytes, c.nocase).find(ends).is_none()
                    && next(prev_end, vars, budget)?);
            }
            for at in find(window, &c.bytes, c.nocase).filter(ends) {
                if next(lo + at + c.bytes.len(), vars, budget)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Matcher::Bsize { min, max } => {
            Ok((*min..=*max).contains(&data.len()) && next(prev_end, vars, budget)?)
        }
        Matcher::Pcre {
            regex,
            negated,
            relative,
        } => {
            let from = if *relative {
                prev_end.min(data.len())
            } else {
                0
            };
            match regex.find(&data[from..]) {
                Some(m) if !negated => next(from + m.end(), vars, budget),
                None if *negated => next(prev_end, vars, budget),
                _ => Ok(false),
            }
        }
        Matcher::IsDataAt {
            at,
            relative,
            negated,
        } => {
            // Suricata: relative, `prev + n <= len`; absolute, `n < len`.
            let n = at.get(vars);
            let there = if *relative {
                prev_end as i64 + n <= data.len() as i64
            } else {
                n < data.len() as i64
            };
            Ok(there != *negated && next(prev_end, vars, budget)?)
        }
        Matcher::ByteTest {
            read,
            op,
            negated,
            value,
        } => {
            let Some((v, _)) = read.read(data, prev_end, vars) else {
                return Ok(false);
            };
            let want = value.get(vars) as u64;
            let holds = match op {
                ByteOp::Lt => v < want,
                ByteOp::Gt => v > want,
                ByteOp::Eq => v == want,
                ByteOp::Le => v <= want,
                ByteOp::Ge => v >= want,
                ByteOp::And => v & want != 0,
                ByteOp::Xor => v ^ want != 0,
            };
            // byte_test leaves the position where it was
            Ok(holds != *negated && next(prev_end, vars, budget)?)
        }
        Matcher::ByteJump {
            read,
            multiplier,
            align,
            from,
            post_offset,
        } => {
            let Some((v, after)) = read.read(data, prev_end, vars) else {
                return Ok(false);
            };
            let mut jump = v.saturating_mul(*multiplier);
            if *align && jump % 4 != 0 {
                jump += 4 - jump % 4;
            }
            let jump = i64::try_from(jump).unwrap_or(i64::MAX);
            let target = match from {
                JumpFrom::Here => after as i64,
                JumpFrom::Beginning => 0,
                JumpFrom::End => data.len() as i64,
            }
            .saturating_add(jump)
            .saturating_add(*post_offset);
            // Suricata: the jump must land inside the buffer
            if target < 0 || target >= data.len() as i64 {
                return Ok(false);
            }
            next(target as usize, vars, budget)
        }
        Matcher::ByteExtract {
            read,
            var,
            multiplier,
            align,
        } => {
            let Some((v, after)) = read.read(data, prev_end, vars) else {
                return Ok(false);
            };
            let mut v = v.saturating_mul(*multiplier);
            if *align > 1 && v % align != 0 {
                v += align - v % align;
            }
            let saved = vars[*var];
            vars[*var] = i64::try_from(v).unwrap_or(i64::MAX);
            let result = next(after, vars, budget);
            vars[*var] = saved;
            result
        }
    }
}

#[cfg(test)]
mod tests;
