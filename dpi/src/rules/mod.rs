//! Signature rules in Suricata's syntax, so users can bring rules they have.
//!
//! `action proto src sport -> dst dport (options)`, with `<>`, `any`, lists,
//! negation and `$VARIABLES` from a vars file. Options: `msg`, `sid`, `rev`,
//! `content` (with `|hex|`), `nocase`, `depth`, `offset`, `distance`,
//! `within`, `pcre`, `flow`, `app-layer-protocol`, and the sticky buffers
//! `http.host`, `http.uri`, `http.method`, `http.user_agent`, `tls.sni`,
//! `ja4.hash`, `dns.query` (plus `pkt_data`). Informational keywords
//! (`classtype`, `reference`, `metadata`, `priority`, `gid`, `fast_pattern`)
//! are accepted. Anything else is an error naming the file, line and keyword
//! (or, leniently, a warning and that rule skipped): never silently ignored.
//!
//! Every rule's longest content goes into an Aho-Corasick automaton per
//! buffer, so a packet only runs the rules whose fast pattern it contains
//! (plus the few with no content at all): 10,000 rules cost little more than 10.

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Log, keep inspecting.
    Alert,
    /// Drop the flow.
    Drop,
    /// Stop inspecting and let the flow through (no more rules).
    Pass,
    /// Stop inspecting; the kernel handles the rest of the flow.
    Bypass,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Drop => "drop",
            Action::Pass => "pass",
            Action::Bypass => "bypass",
        }
    }
}

/// Where a content or pcre looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    Payload,
    HttpHost,
    HttpUri,
    HttpUriRaw,
    HttpMethod,
    HttpUserAgent,
    TlsSni,
    QuicSni,
    Ja4,
    DnsQuery,
}

const BUFFERS: [Buffer; 10] = [
    Buffer::Payload,
    Buffer::HttpHost,
    Buffer::HttpUri,
    Buffer::HttpUriRaw,
    Buffer::HttpMethod,
    Buffer::HttpUserAgent,
    Buffer::TlsSni,
    Buffer::QuicSni,
    Buffer::Ja4,
    Buffer::DnsQuery,
];

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

/// One `content` (or negated content) with its modifiers.
#[derive(Clone, Debug)]
pub(crate) struct Content {
    pub bytes: Vec<u8>,
    pub nocase: bool,
    pub negated: bool,
    pub offset: Option<usize>,
    pub depth: Option<usize>,
    pub distance: Option<isize>,
    pub within: Option<usize>,
    /// `endswith`: the match must end where the buffer ends.
    pub endswith: bool,
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

/// A parsed rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub sid: u32,
    pub rev: u32,
    pub msg: String,
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
    /// Matchers per buffer, in rule order.
    pub(crate) matchers: Vec<(Buffer, Matcher)>,
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
}

impl<'a> PacketView<'a> {
    fn buffer(&self, buffer: Buffer) -> Option<&'a [u8]> {
        let app = self.app;
        let proto = app.map(|a| a.protocol);
        let host = || app.and_then(|a| a.host.as_deref()).map(str::as_bytes);
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
            // As Suricata: `tls.sni` is TLS's; QUIC has `quic.sni`.
            Buffer::TlsSni
                if matches!(
                    proto,
                    Some(Protocol::Tls | Protocol::Imaps | Protocol::Pops | Protocol::Smtps)
                ) =>
            {
                host()
            }
            Buffer::QuicSni if proto == Some(Protocol::Quic) => host(),
            Buffer::DnsQuery => self.dns_query.map(str::as_bytes),
            Buffer::Ja4 => self.ja4.map(str::as_bytes),
            _ => None,
        }
    }
}

/// A rule that matched a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub sid: u32,
    pub action: Action,
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

/// A loaded set of rules with its prefilter.
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Per buffer: automaton over fast patterns, and the rule of each pattern.
    prefilters: HashMap<Buffer, (AhoCorasick, Vec<usize>)>,
    /// Rules without any positive content: always evaluated.
    unfiltered: Vec<usize>,
    /// Rules skipped in lenient mode, with why.
    pub warnings: Vec<RuleError>,
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
                    if lenient && e.unsupported {
                        warnings.push(error);
                    } else {
                        errors.push(error);
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

    fn build(rules: Vec<Rule>) -> Result<RuleSet, String> {
        let mut patterns: HashMap<Buffer, (Vec<Vec<u8>>, Vec<usize>)> = HashMap::new();
        let mut unfiltered = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let fast = rule
                .matchers
                .iter()
                .filter_map(|(b, m)| match m {
                    Matcher::Content(c) if !c.negated && !c.bytes.is_empty() => {
                        Some((*b, &c.bytes))
                    }
                    _ => None,
                })
                .max_by_key(|(_, bytes)| bytes.len());
            match fast {
                Some((buffer, bytes)) => {
                    let entry = patterns.entry(buffer).or_default();
                    entry.0.push(bytes.clone());
                    entry.1.push(i);
                }
                None => unfiltered.push(i),
            }
        }
        let mut prefilters = HashMap::new();
        for (buffer, (pats, owners)) in patterns {
            // Case-insensitive: a superset of the real matches; the full check decides.
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&pats)
                .map_err(|e| e.to_string())?;
            prefilters.insert(buffer, (ac, owners));
        }
        Ok(RuleSet {
            rules,
            prefilters,
            unfiltered,
            warnings: Vec::new(),
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

    /// The rules matching `packet`, in file order, each within
    /// [`INSPECTION_LIMIT`] steps.
    pub fn matches(&self, packet: &PacketView<'_>) -> Matched {
        let mut candidates: Vec<usize> = self.unfiltered.clone();
        for buffer in BUFFERS {
            let (Some((ac, owners)), Some(data)) =
                (self.prefilters.get(&buffer), packet.buffer(buffer))
            else {
                continue;
            };
            for m in ac.find_overlapping_iter(data) {
                candidates.push(owners[m.pattern().as_usize()]);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut matched = Matched::default();
        for i in candidates {
            let rule = &self.rules[i];
            let hit = Hit {
                sid: rule.sid,
                action: rule.action,
            };
            let mut budget = INSPECTION_LIMIT;
            let result = rule.matches(packet, &mut budget);
            matched.most_steps = matched.most_steps.max(INSPECTION_LIMIT - budget);
            match result {
                Ok(true) => matched.hits.push(hit),
                Ok(false) => {}
                Err(OverLimit) => matched.over_limit.push(hit),
            }
        }
        matched
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

impl RuleSet {
    /// Whether some rule has a `content` or `pcre` on the raw payload
    /// (else no stream window need be kept).
    pub fn has_payload_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.matchers.iter().any(|(b, _)| *b == Buffer::Payload))
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
        Buffer::HttpHost
        | Buffer::HttpUri
        | Buffer::HttpUriRaw
        | Buffer::HttpMethod
        | Buffer::HttpUserAgent => {
            matches!(protocol, Protocol::Http | Protocol::HttpProxy)
        }
        Buffer::DnsQuery => protocol == Protocol::Dns,
        Buffer::TlsSni | Buffer::QuicSni | Buffer::Ja4 => false,
    }
}

impl Rule {
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
            || self.flow.established.is_some_and(|e| e != p.established)
            || self
                .dsize
                .is_some_and(|(min, max)| !(min..=max).contains(&p.dsize))
            || self
                .flags
                .is_some_and(|f| !p.tcp_flags.is_some_and(|flags| f.holds(flags)))
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
            if !sequence_matches(&self.matchers[i..end], data, base, 0, budget)? {
                return Ok(false);
            }
            i = end;
        }
        Ok(true)
    }
}

fn is_negated(m: &(Buffer, Matcher)) -> bool {
    match &m.1 {
        Matcher::Content(c) => c.negated,
        Matcher::Pcre { negated, .. } => *negated,
        Matcher::Bsize { .. } => false,
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
/// `offset`/`depth` count from that buffer's start.
fn sequence_matches(
    matchers: &[(Buffer, Matcher)],
    data: &[u8],
    base: u64,
    prev_end: usize,
    budget: &mut u32,
) -> Result<bool, OverLimit> {
    let Some(((_, first), rest)) = matchers.split_first() else {
        return Ok(true);
    };
    *budget = budget.checked_sub(1).ok_or(OverLimit)?;
    match first {
        Matcher::Content(c) => {
            let relative = c.distance.is_some() || c.within.is_some();
            let (lo, hi) = if relative {
                let lo = (prev_end as isize + c.distance.unwrap_or(0)).max(0) as usize;
                let hi = c.within.map_or(data.len(), |w| {
                    (prev_end as isize + c.distance.unwrap_or(0)).max(0) as usize + w
                });
                (lo, hi.min(data.len()))
            } else {
                let from = c.offset.unwrap_or(0) as u64;
                let lo = from.saturating_sub(base) as usize;
                let hi = c.depth.map_or(data.len(), |d| {
                    usize::try_from((from + d as u64).saturating_sub(base)).unwrap_or(usize::MAX)
                });
                (lo, hi.min(data.len()))
            };
            if lo > hi || lo > data.len() {
                return Ok(c.negated && sequence_matches(rest, data, base, prev_end, budget)?);
            }
            let window = &data[lo..hi];
            let ends = |at: &usize| !c.endswith || lo + at + c.bytes.len() == data.len();
            if c.negated {
                return Ok(find(window, &c.bytes, c.nocase).find(ends).is_none()
                    && sequence_matches(rest, data, base, prev_end, budget)?);
            }
            for at in find(window, &c.bytes, c.nocase).filter(ends) {
                if sequence_matches(rest, data, base, lo + at + c.bytes.len(), budget)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Matcher::Bsize { min, max } => Ok((*min..=*max).contains(&data.len())
            && sequence_matches(rest, data, base, prev_end, budget)?),
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
                Some(m) if !negated => sequence_matches(rest, data, base, from + m.end(), budget),
                None if *negated => sequence_matches(rest, data, base, prev_end, budget),
                _ => Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests;
