//! The verdict policy: when user space has seen enough of a flow, and what
//! then happens to it. A flow gets a verdict when a rule decides it (`drop`,
//! or `pass`/`bypass`), when the policy maps its protocol and host (every
//! HTTP request's host) to `drop`, or when the kernel can take it because
//! there is nothing more to learn: the rest is encrypted, the inspection
//! depth is reached, or no rule or policy entry can match it any more. The
//! give-up limits only end the search for the flow's protocol.
//!
//! ```toml
//! give_up_tcp = 10          # payload packets looked at to name the protocol
//! give_up_udp = 8
//! default = "allow"
//! rule_limit = "drop"       # a drop rule that runs out of inspection steps,
//!                           # or an HTTP request head over 64 KiB: drop the
//!                           # flow (default), or "ignore" (no match)
//! stream_depth = 1048576    # bytes inspected per direction (0: no limit)
//! max_user_packets = 100    # optional: decide by the policy after this many
//!                           # packets whatever else (off by default)
//! [[match]]
//! protocol = "TLS"          # nDPI's name; omit for any
//! host = "*.evil.test"      # '*' matches any run of characters; omit for any
//! action = "drop"           # allow | drop
//! ```

use std::{collections::VecDeque, net::IpAddr, path::Path, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    classify::{
        Classification, DnsTcpMessages, FlowClassifier, Protocol, ServerHandshake, dns_query_name,
    },
    flow::{Decoded, PROTO_TCP, l4_checksum_ok},
    http::{HttpHead, HttpRequest, HttpRequests, HttpResponse, HttpResponses},
    reject::Reject,
    rules::{Action, FlowBits, FlowFacts, Needs, PacketView, RuleError, RuleSet},
    stream::{Anomaly, Budget, Chunk, DEFAULT_DEPTH, Segment, StreamConfig, TcpStream},
    wire::tcp::{ACK, SYN},
};

/// What one packet brought to the app-layer parsers.
#[derive(Debug, Default)]
struct Brought {
    requests: Vec<HttpRequest>,
    responses: Vec<HttpResponse>,
    dns_names: Vec<(String, u8)>,
}

/// A DNS request's name and opcode, as the rules see it.
type DnsRequest<'a> = (&'a str, u8);

/// One reading of a packet for the rules: a classification, and the DNS
/// query or HTTP transaction it comes from.
#[derive(Clone, Copy, Debug)]
struct Reading<'a> {
    app: Option<&'a Classification>,
    dns: Option<DnsRequest<'a>>,
    request: Option<&'a HttpHead>,
    response: Option<&'a HttpResponse>,
}

/// A DNS request's name and opcode (None for a response or a malformed message).
fn dns_request(message: &[u8]) -> Option<(String, u8)> {
    let opcode = (message.get(2)? >> 3) & 0x0f;
    dns_query_name(message).map(|name| (name, opcode))
}

/// What the data plane does with a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Let it through; the kernel handles the rest of it.
    Allow,
    /// Drop it, both directions, from the next packet on.
    Drop,
    /// Not decided yet: keep sending it to user space.
    InspectMore,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Drop => "drop",
            Verdict::InspectMore => "inspect-more",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchEntry {
    protocol: Option<String>,
    host: Option<String>,
    action: Verdict,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    give_up_tcp: Option<u32>,
    give_up_udp: Option<u32>,
    default: Option<Verdict>,
    rule_limit: Option<RuleLimit>,
    stream_depth: Option<u64>,
    max_user_packets: Option<u32>,
    #[serde(default, rename = "match")]
    matches: Vec<MatchEntry>,
}

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub give_up_tcp: u32,
    pub give_up_udp: u32,
    pub default: Verdict,
    pub rule_limit: RuleLimit,
    /// Bytes of each direction inspected (Suricata's
    /// `stream.reassembly.depth`); 0: no limit.
    pub stream_depth: u64,
    /// Decide by the policy after this many packets in user space,
    /// whatever else (an explicit knob; off by default).
    pub max_user_packets: Option<u32>,
    entries: Vec<(Option<Protocol>, Option<String>, Verdict)>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            give_up_tcp: crate::classify::GIVE_UP_TCP,
            give_up_udp: crate::classify::GIVE_UP_UDP,
            default: Verdict::Allow,
            rule_limit: RuleLimit::Drop,
            stream_depth: DEFAULT_DEPTH,
            max_user_packets: None,
            entries: Vec::new(),
        }
    }
}

/// What a `drop` rule whose matching ran out of steps
/// ([`crate::rules::INSPECTION_LIMIT`]) does to its flow. Such an input is
/// most likely crafted to get past the rule, so by default it is dropped
/// (fail closed); `ignore` treats it as no match, as Suricata does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleLimit {
    Drop,
    Ignore,
}

/// `*` matches any run of characters; case-insensitive.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    let first = parts[0];
    if !rest.starts_with(first) {
        return false;
    }
    rest = &rest[first.len()..];
    let last = parts[parts.len() - 1];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

impl Policy {
    /// Parses a policy file; errors name the line and the key.
    pub fn parse(text: &str, file: &Path) -> Result<Policy, RuleError> {
        let error = |line: usize, message: String| RuleError {
            file: file.into(),
            line,
            message,
        };
        let parsed: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            error(line, e.message().to_string())
        })?;
        let mut policy = Policy::default();
        if let Some(n) = parsed.give_up_tcp {
            policy.give_up_tcp = n.max(1);
        }
        if let Some(n) = parsed.give_up_udp {
            policy.give_up_udp = n.max(1);
        }
        if let Some(d) = parsed.default {
            policy.default = d;
        }
        if let Some(limit) = parsed.rule_limit {
            policy.rule_limit = limit;
        }
        if let Some(depth) = parsed.stream_depth {
            policy.stream_depth = depth;
        }
        if let Some(cap) = parsed.max_user_packets {
            policy.max_user_packets = Some(cap.max(1));
        }
        for (i, m) in parsed.matches.into_iter().enumerate() {
            let protocol = match m.protocol {
                Some(name) => Some(Protocol::from_name(&name).ok_or_else(|| {
                    error(0, format!("[[match]] #{}: unknown protocol `{name}` (use nDPI's names: TLS, HTTP, DNS, QUIC...)", i + 1))
                })?),
                None => None,
            };
            if m.action == Verdict::InspectMore {
                return Err(error(
                    0,
                    format!("[[match]] #{}: action must be allow or drop", i + 1),
                ));
            }
            policy.entries.push((protocol, m.host, m.action));
        }
        Ok(policy)
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Policy::parse(&text, path)
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Whether an entry could still drop a flow of this protocol later:
    /// one with a host, on HTTP, where every request names its host.
    pub fn could_match_later(&self, protocol: Protocol) -> bool {
        matches!(protocol, Protocol::Http | Protocol::HttpProxy)
            && self.entries.iter().any(|(p, host, verdict)| {
                *verdict == Verdict::Drop && host.is_some() && p.is_none_or(|p| p == protocol)
            })
    }

    /// The verdict for a classified flow: the first matching entry, else the default.
    pub fn decide(&self, c: &Classification) -> Verdict {
        self.entries
            .iter()
            .find(|(protocol, host, _)| {
                protocol.is_none_or(|p| p == c.protocol)
                    && host.as_deref().is_none_or(|h| {
                        c.host
                            .as_deref()
                            .is_some_and(|name| wildcard_match(h, name))
                    })
            })
            .map_or(self.default, |(_, _, verdict)| *verdict)
    }
}

/// Rules and policy, shared by every flow of a worker.
#[derive(Debug, Default)]
pub struct Engine {
    pub rules: Option<RuleSet>,
    pub policy: Policy,
    /// Reassembly limits of every TCP flow (depth from the policy; one
    /// out-of-order memory budget for all of them).
    pub stream: StreamConfig,
}

impl Engine {
    pub fn new(rules: Option<RuleSet>, policy: Policy) -> Engine {
        let stream = StreamConfig {
            depth: policy.stream_depth,
            ..StreamConfig::default()
        };
        Engine {
            rules,
            policy,
            stream,
        }
    }
}

/// One packet of a flow, for [`FlowInspector::on_packet`].
#[derive(Clone, Copy, Debug)]
pub struct FlowPacket<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub from_client: bool,
    pub payload: &'a [u8],
    /// The TCP header, for the stream (None for other transports).
    pub tcp: Option<Segment<'a>>,
    /// The IP TTL or hop limit.
    pub ttl: u8,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// When it was seen (ns, a clock that only goes forward).
    pub now_ns: u64,
}

impl<'a> FlowPacket<'a> {
    /// The packet `d` of `frame`, for a flow whose client is endpoint A of
    /// its key when `client_is_a`. `wire_len` is the frame's length: more
    /// than `frame` holds when the copy was cut at a snap length (the TCP
    /// stream then has a gap where the rest was). `check_checksum`:
    /// validate the transport checksum (inline, where what the host would
    /// discard must be dropped; a cut frame is not checked).
    pub fn from_frame(
        frame: &'a [u8],
        d: &Decoded,
        client_is_a: bool,
        wire_len: usize,
        check_checksum: bool,
        now_ns: u64,
    ) -> FlowPacket<'a> {
        let missing = wire_len.saturating_sub(frame.len());
        let (src, dst) = if d.from_a {
            (d.key.a(), d.key.b())
        } else {
            (d.key.b(), d.key.a())
        };
        let payload = frame
            .get(d.payload_offset..d.payload_offset + d.payload_len)
            .unwrap_or(&[]);
        let tcp = (d.key.proto == PROTO_TCP).then(|| Segment {
            seq: d.tcp_seq,
            ack: d.tcp.ack,
            flags: d.tcp_flags,
            window: d.tcp.window,
            urgent: d.tcp.urgent,
            window_scale: d.tcp.window_scale,
            checksum_ok: if check_checksum && missing == 0 {
                l4_checksum_ok(frame, d)
            } else {
                None
            },
            payload,
            missing,
        });
        FlowPacket {
            src: src.ip(),
            dst: dst.ip(),
            sport: src.port(),
            dport: dst.port(),
            from_client: d.from_a == client_is_a,
            payload,
            tcp,
            ttl: d.ttl,
            icmp: matches!(
                d.key.proto,
                crate::flow::PROTO_ICMP | crate::flow::PROTO_ICMPV6
            )
            .then(|| frame.get(d.l4_offset..d.l4_offset + 2))
            .flatten()
            .map(|tc| (tc[0], tc[1])),
            now_ns,
        }
    }
}

/// What a flow was and what was decided about it, spelled the same in every
/// flow record (`dataplane inspect` and the live flow log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowLabel {
    /// nDPI's protocol name; "Unknown" when not classified.
    pub protocol: &'static str,
    /// How the protocol was found: "DPI", "port" or "unknown".
    pub confidence: &'static str,
    /// The host the protocol named (HTTP Host, TLS/QUIC SNI, DNS query).
    pub host: Option<String>,
    /// JA4 of a TLS/QUIC/DTLS ClientHello.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
    /// Payloads looked at before the protocol was named.
    pub dpi_packets: u32,
    /// Signature ids that matched.
    pub sids: Vec<u32>,
    /// What handed the flow to the kernel (see [`FlowInspector::decided_by`]).
    pub decided_by: Option<&'static str>,
    /// HTTP requests read, and their anomalies (absolute URI, duplicate
    /// Host...).
    #[serde(skip_serializing_if = "is_zero")]
    pub http_requests: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_anomalies: Vec<&'static str>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for FlowLabel {
    fn default() -> Self {
        FlowLabel {
            protocol: Protocol::Unknown.name(),
            confidence: crate::Confidence::Unknown.name(),
            host: None,
            ja4: None,
            dpi_packets: 0,
            sids: Vec::new(),
            decided_by: None,
            http_requests: 0,
            http_anomalies: Vec::new(),
        }
    }
}

/// Bytes of each direction's reassembled stream kept before new data, so
/// a pattern split across the segments that bring it is still seen whole.
pub const RAW_CONTEXT: usize = 2048;

/// Whether a packet is on a DNS-family port (DNS, mDNS, LLMNR).
fn dns_port(p: &FlowPacket<'_>) -> bool {
    [53, 5353, 5355]
        .iter()
        .any(|port| p.sport == *port || p.dport == *port)
}

/// One HTTP transaction as the rules see it: the request's readings (one
/// classification per host a server might take it to be for), its head,
/// and the response once it came.
#[derive(Clone, Debug, Default)]
struct HttpTx {
    apps: Vec<Classification>,
    request: HttpHead,
    response: Option<HttpResponse>,
}

impl HttpTx {
    /// One reading per host a server might take the request to be for.
    fn readings(&self) -> impl Iterator<Item = Reading<'_>> {
        self.apps.iter().map(|c| Reading {
            app: Some(c),
            dns: None,
            request: (!self.request.start_line.is_empty()).then_some(&self.request),
            response: self.response.as_ref(),
        })
    }

    fn held(&self) -> usize {
        self.request.raw.len() * 2 + self.response.as_ref().map_or(0, |r| r.head.raw.len() * 2)
    }
}

/// Longest SSH banner kept (RFC 4253 §4.2: 255 bytes with its CR LF).
const MAX_SSH_BANNER: usize = 255;

/// Requests remembered while their responses are due; past this, the
/// oldest is forgotten (its response is read without its request).
const MAX_AWAITING: usize = 16;

/// Stream state of a TCP flow under inspection.
#[derive(Debug)]
struct TcpState {
    stream: TcpStream,
    /// Per direction: the reassembled bytes not yet matched, after up to
    /// [`RAW_CONTEXT`] bytes already matched; and the stream offset of `raw[0]`.
    raw: [Vec<u8>; 2],
    raw_base: [u64; 2],
    /// The client's requests and the server's responses, while the flow
    /// may be HTTP.
    http: Option<HttpRequests>,
    http_responses: Option<Box<HttpResponses>>,
    /// The latest request's transaction, read by the client's later packets.
    last_request: Option<Box<HttpTx>>,
    /// Requests not answered yet, oldest first (at most [`MAX_AWAITING`]).
    awaiting: VecDeque<HttpTx>,
    /// The latest response's transaction, read by the server's later packets.
    answered: Option<Box<HttpTx>>,
    /// DNS over TCP: the client's messages (on DNS-family ports).
    dns: Option<DnsTcpMessages>,
    /// Client SYN, server SYN/ACK, client ACK after it.
    handshake: [bool; 3],
    /// The server's first two bytes (a TLS record header, or not).
    server_first: Option<[u8; 2]>,
    /// Keep a raw window at all (some rule reads the raw payload).
    keep_raw: bool,
    /// Keep the HTTP heads for the rules (some rule reads one).
    keep_heads: bool,
    /// The server's TLS handshake, read when some rule needs it (the kernel
    /// takes an encrypted flow only once it is over).
    tls_server: Option<Box<ServerHandshake>>,
    /// Each side's SSH banner, and whether its first bytes were looked at.
    ssh_banners: [Option<Box<[u8]>>; 2],
    banner_checked: [bool; 2],
    /// Bytes of this flow's buffers (raw windows, a request head or DNS
    /// message being gathered) taken from the shared budget.
    charged: usize,
    budget: Arc<Budget>,
}

impl Drop for TcpState {
    fn drop(&mut self) {
        self.budget.give(self.charged);
    }
}

impl TcpState {
    fn new(config: &StreamConfig, needs: Needs) -> TcpState {
        TcpState {
            keep_raw: needs.payload,
            keep_heads: needs.http_heads,
            tls_server: needs.tls_server.then(Box::default),
            ssh_banners: [None, None],
            banner_checked: [false; 2],
            charged: 0,
            budget: Arc::clone(&config.budget),
            stream: TcpStream::new(config.clone()),
            raw: Default::default(),
            raw_base: [0; 2],
            http: Some(HttpRequests::new(needs.http_bodies, needs.http_heads)),
            http_responses: needs
                .http_responses
                .then(|| Box::new(HttpResponses::new(needs.http_bodies))),
            last_request: None,
            awaiting: VecDeque::new(),
            answered: None,
            dns: None,
            handshake: [false; 3],
            server_first: None,
        }
    }

    /// After the three-way handshake; a flow picked up mid-way (no SYN
    /// seen) is established at once, as Suricata's `stream.midstream`
    /// pick-up makes it.
    fn established(&self) -> bool {
        if self.handshake[0] || self.handshake[1] {
            self.handshake[2]
        } else {
            true
        }
    }
}

/// A rule that raised an alert on the packet just inspected, with what it
/// read: for the alert's event (eve `alert`), written when it fires.
#[derive(Clone, Debug)]
pub struct Fired {
    /// The rule's index in the engine's rule set ([`crate::rules::RuleSet::rule`]).
    pub rule: usize,
    /// The application layer the rule read (the request's, the
    /// handshake's...), if any.
    pub app: Option<Box<Classification>>,
    /// The DNS query the rule read.
    pub dns_query: Option<String>,
    /// The HTTP response status the rule read.
    pub http_status: Option<u16>,
}

/// An application-layer transaction as it was read (for eve's `http`,
/// `dns` and `tls` events): a request, a DNS query, a TLS handshake.
#[derive(Clone, Debug)]
pub enum Transaction {
    Http(Box<Classification>),
    Dns { name: String, opcode: u8 },
    Tls(Box<Classification>),
}

/// Inspection state of one flow: classifier, stream, matched rules, verdict.
#[derive(Debug)]
pub struct FlowInspector {
    /// Keep what an event log shows: the alerts raised
    /// ([`FlowInspector::take_fired`]) and the transactions read
    /// ([`FlowInspector::take_transactions`]).
    pub collect_events: bool,
    transactions_out: Vec<Transaction>,
    l4: u8,
    classifier: FlowClassifier,
    sids: Vec<u32>,
    /// Alerts raised by the last packet (see [`FlowInspector::take_fired`]).
    fired: Vec<Fired>,
    /// The flow's `flowbits`.
    flowbits: FlowBits,
    /// The flow was dropped by a `reject` rule: how to answer it.
    reject: Option<Reject>,
    /// Transactions so far (requests, DNS queries, the classification once
    /// known), and the count when each direction's packet last ran the
    /// app-layer rules: those run once per transaction and direction, as
    /// Suricata inspects a transaction once, so a threshold counts it once.
    transactions: u32,
    inspected_at: [u32; 2],
    classified: bool,
    verdict: Verdict,
    /// Why the verdict was reached (and the kernel took the flow): "rule",
    /// "policy", "rule-limit" (a drop rule ran out of inspection steps),
    /// "http-limit" (a request head past [`crate::http::MAX_HEAD`]),
    /// "memcap" (the shared memory budget could not hold its buffers),
    /// "encrypted", "depth", "no-rules" (no rule can match any more) or
    /// "packet-cap" (`max_user_packets`).
    pub decided_by: Option<&'static str>,
    /// Rules whose matching ran out of inspection steps on this flow.
    pub over_limit: u32,
    packets: u32,
    directions: [bool; 2],
    tcp: Option<Box<TcpState>>,
    /// Payload bytes per direction (transports without a stream).
    bytes: [u64; 2],
    anomaly: Option<Anomaly>,
    /// The shared memory budget could not take this flow's buffers.
    over_memcap: bool,
    /// The last `could_match` answer: (protocol, established, answer).
    could_match: Option<(Protocol, bool, bool)>,
    /// HTTP requests read, and the anomalies they showed.
    pub http_requests: u32,
    pub http_anomalies: Vec<&'static str>,
}

impl FlowInspector {
    pub fn new(l4: u8, engine: &Engine) -> Self {
        let give_up = if l4 == PROTO_TCP {
            engine.policy.give_up_tcp
        } else {
            engine.policy.give_up_udp
        };
        FlowInspector {
            collect_events: false,
            transactions_out: Vec::new(),
            l4,
            classifier: FlowClassifier::new(l4, give_up),
            sids: Vec::new(),
            fired: Vec::new(),
            flowbits: FlowBits::default(),
            reject: None,
            transactions: 0,
            inspected_at: [0; 2],
            classified: false,
            verdict: Verdict::InspectMore,
            decided_by: None,
            over_limit: 0,
            packets: 0,
            directions: [false; 2],
            tcp: None,
            bytes: [0; 2],
            anomaly: None,
            over_memcap: false,
            could_match: None,
            http_requests: 0,
            http_anomalies: Vec::new(),
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    pub fn sids(&self) -> &[u32] {
        &self.sids
    }

    /// The transactions read since the last call, oldest first.
    pub fn take_transactions(&mut self) -> Vec<Transaction> {
        std::mem::take(&mut self.transactions_out)
    }

    /// The alerts raised since the last call (by the packets inspected
    /// since), oldest first.
    pub fn take_fired(&mut self) -> Vec<Fired> {
        std::mem::take(&mut self.fired)
    }

    /// The classification so far (or, once `finish`ed, the final one).
    pub fn classification(&self) -> Option<&Classification> {
        self.classifier.result()
    }

    /// Ends the classification (port guess or Unknown if undecided).
    pub fn finish(&mut self) -> Classification {
        self.classifier.finish()
    }

    /// The flow's label: its classification (ended now if still open),
    /// rule hits and why it was decided.
    pub fn label(&mut self) -> FlowLabel {
        let c = self.classifier.finish();
        FlowLabel {
            protocol: c.protocol.name(),
            confidence: c.confidence.name(),
            host: c.host,
            ja4: c.info.ja4,
            dpi_packets: c.dpi_packets,
            sids: self.sids.clone(),
            decided_by: self.decided_by,
            http_requests: self.http_requests,
            http_anomalies: self.http_anomalies.clone(),
        }
    }

    /// How a `reject` rule that dropped the flow wants it answered.
    pub fn reject(&self) -> Option<Reject> {
        self.reject
    }

    /// Packets seen in user space up to the verdict.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// Why the last packet was not taken into its stream: the receiving
    /// host discards such a segment, so inline it is dropped.
    pub fn packet_anomaly(&self) -> Option<Anomaly> {
        self.anomaly
    }

    /// Looks at one packet; returns the verdict (which stays once reached).
    pub fn on_packet(&mut self, engine: &Engine, p: &FlowPacket<'_>) -> Verdict {
        self.anomaly = None;
        if self.verdict != Verdict::InspectMore {
            return self.verdict;
        }
        self.packets += 1;
        let dir = usize::from(!p.from_client);
        self.directions[dir] = true;
        // Learns the ports (an empty payload is not classified).
        self.classifier
            .on_packet(&[], p.from_client, p.sport, p.dport);
        let mut brought = Brought::default();
        let fresh = match p.tcp {
            Some(seg) => self.take_segment(engine, p, dir, &seg, &mut brought),
            None => {
                self.classifier
                    .on_packet(p.payload, p.from_client, p.sport, p.dport);
                self.bytes[dir] += p.payload.len() as u64;
                if dir == 0 && dns_port(p) {
                    brought.dns_names.extend(dns_request(p.payload));
                }
                !p.payload.is_empty()
            }
        };
        if self.anomaly.is_some() {
            return self.verdict;
        }
        self.match_rules(engine, p, dir, fresh, brought);
        if self.verdict == Verdict::InspectMore {
            self.hand_off(engine, p, dir);
        }
        self.verdict
    }

    /// Puts a TCP segment in its stream and hands on what is now in order:
    /// to the classifier, the HTTP request parser and the raw window.
    /// Returns whether new bytes came.
    fn take_segment(
        &mut self,
        engine: &Engine,
        p: &FlowPacket<'_>,
        dir: usize,
        seg: &Segment<'_>,
        brought: &mut Brought,
    ) -> bool {
        let Brought {
            requests,
            responses,
            dns_names,
        } = brought;
        let t = self.tcp.get_or_insert_with(|| {
            let needs = engine
                .rules
                .as_ref()
                .map(RuleSet::needs)
                .unwrap_or_default();
            Box::new(TcpState::new(&engine.stream, needs))
        });
        let syn = seg.flags & SYN != 0;
        let ack = seg.flags & ACK != 0;
        match (dir, syn, ack) {
            (0, true, false) => t.handshake[0] = true,
            (1, true, true) => t.handshake[1] = true,
            // the client's ACK ends the handshake; also when the SYN/ACK
            // was not seen (it took another path: Suricata's async-oneside)
            (0, false, true) if t.handshake[0] || t.handshake[1] => t.handshake[2] = true,
            _ => {}
        }
        if t.dns.is_none() && dns_port(p) {
            t.dns = Some(DnsTcpMessages::default());
        }
        let TcpState {
            stream,
            raw,
            raw_base,
            http,
            http_responses,
            dns,
            server_first,
            keep_raw,
            tls_server,
            ssh_banners,
            banner_checked,
            ..
        } = &mut **t;
        let keep_raw = *keep_raw;
        let classifier = &mut self.classifier;
        let mut fresh = false;
        let taken = stream.on_segment(dir, seg, |chunk| match chunk {
            Chunk::Data(d) => {
                fresh = true;
                if classifier.wants_more() {
                    classifier.on_packet(d, p.from_client, p.sport, p.dport);
                }
                if keep_raw {
                    raw[dir].extend_from_slice(d);
                }
                if dir == 0
                    && let Some(h) = http.as_mut()
                {
                    let before = requests.len();
                    h.feed(d, requests);
                    if let Some(r) = http_responses.as_mut() {
                        for request in &requests[before..] {
                            r.expect(&request.method);
                        }
                    }
                }
                if dir == 1
                    && let Some(r) = http_responses.as_mut()
                {
                    r.feed(d, responses);
                }
                if dir == 0
                    && let Some(m) = dns.as_mut()
                {
                    let mut messages = Vec::new();
                    m.feed(d, &mut messages);
                    dns_names.extend(messages.iter().filter_map(|m| dns_request(m)));
                }
                if dir == 1 && server_first.is_none() && d.len() >= 2 {
                    *server_first = Some([d[0], d[1]]);
                }
                if dir == 1
                    && let Some(h) = tls_server.as_mut()
                {
                    h.feed(d);
                }
                if !banner_checked[dir] {
                    banner_checked[dir] = true;
                    if d.starts_with(b"SSH-") {
                        let end = d.iter().position(|b| *b == b'\n').unwrap_or(d.len());
                        ssh_banners[dir] = Some(d[..end.min(MAX_SSH_BANNER)].into());
                    }
                }
            }
            Chunk::Gap(n) => {
                raw_base[dir] += raw[dir].len() as u64 + n;
                raw[dir].clear();
                if dir == 0
                    && let Some(h) = http.as_mut()
                {
                    h.gap();
                }
                if dir == 1
                    && let Some(r) = http_responses.as_mut()
                {
                    r.gap();
                }
                if dir == 0 {
                    // the message framing is lost with the bytes
                    *dns = None;
                }
            }
        });
        if let Err(anomaly) = taken {
            self.anomaly = Some(anomaly);
        }
        // The flow's buffers count against the shared memory budget.
        let now_held = t.raw[0].len()
            + t.raw[1].len()
            + t.http.as_ref().map_or(0, HttpRequests::pending)
            + t.http_responses.as_ref().map_or(0, |r| r.pending())
            + t.awaiting.iter().map(HttpTx::held).sum::<usize>()
            + t.last_request.as_ref().map_or(0, |tx| tx.held())
            + t.answered.as_ref().map_or(0, |tx| tx.held())
            + t.tls_server.as_ref().map_or(0, |h| h.pending())
            + t.dns.as_ref().map_or(0, DnsTcpMessages::pending);
        if now_held > t.charged {
            if t.budget.take(now_held - t.charged) {
                t.charged = now_held;
            } else {
                self.over_memcap = true;
            }
        } else {
            t.budget.give(t.charged - now_held);
            t.charged = now_held;
        }
        // A flow found to be something else is no longer read as HTTP.
        if let Some(c) = self.classifier.result()
            && !matches!(
                c.protocol,
                Protocol::Http | Protocol::HttpProxy | Protocol::Unknown
            )
        {
            t.http = None;
            t.http_responses = None;
        }
        fresh
    }

    /// Runs the rules on what the packet brought: each new HTTP request
    /// (once per host a server might read in it) or response (with the
    /// request it answers), each DNS query, else the flow's latest HTTP
    /// transaction of the packet's direction, else the flow as it is; raw
    /// `content` sees the direction's reassembled stream window.
    fn match_rules(
        &mut self,
        engine: &Engine,
        p: &FlowPacket<'_>,
        dir: usize,
        fresh: bool,
        brought: Brought,
    ) {
        let Brought {
            requests,
            responses,
            dns_names,
        } = brought;
        let dns_names = &dns_names[..];
        let mut http_limit = false;
        for r in &requests {
            self.http_requests += 1;
            for a in &r.anomalies {
                http_limit |= *a == "head-too-long";
                if !self.http_anomalies.contains(a) {
                    self.http_anomalies.push(a);
                }
            }
        }
        let established = match &self.tcp {
            Some(t) => t.established(),
            None => self.directions == [true, true],
        };
        // The requests the responses answer, and whether a body grew (a
        // body that grew is new to the rules of its direction too).
        let answering: Vec<Option<HttpTx>> = responses
            .iter()
            .map(|_| self.tcp.as_mut().and_then(|t| t.awaiting.pop_front()))
            .collect();
        let body_grew = self.tcp.as_mut().is_some_and(|t| match dir {
            0 => t.http.as_mut().is_some_and(HttpRequests::body_grew),
            _ => {
                // (both are asked: each flag is taken)
                let body = t.http_responses.as_mut().is_some_and(|r| r.body_grew());
                let tls = t.tls_server.as_mut().is_some_and(|h| h.grew());
                body || tls
            }
        });
        let base = self.classifier.result();
        // The transactions this packet brought: requests (one reading per
        // host), responses with the request they answer.
        let mut new_requests: Vec<HttpTx> = Vec::new();
        for r in &requests {
            let protocol = match base.map(|c| c.protocol) {
                Some(p @ (Protocol::Http | Protocol::HttpProxy)) => p,
                _ => Protocol::Http,
            };
            let hosts: Vec<Option<&String>> = if r.hosts.is_empty() {
                vec![None]
            } else {
                r.hosts.iter().map(Some).collect()
            };
            let apps = hosts
                .into_iter()
                .map(|host| {
                    let mut c = base.cloned().unwrap_or_default();
                    c.protocol = protocol;
                    c.host = host.cloned();
                    c.info.http_method = Some(r.method.clone());
                    c.info.http_uri = Some(r.uri.clone());
                    c.info.http_uri_raw = Some(r.uri_raw.clone());
                    c.info.http_user_agent = r.user_agent.clone();
                    c
                })
                .collect();
            let keep_heads = self.tcp.as_ref().is_some_and(|t| t.keep_heads);
            new_requests.push(HttpTx {
                apps,
                request: if keep_heads {
                    r.head.clone()
                } else {
                    HttpHead::default()
                },
                response: None,
            });
        }
        let mut new_responses: Vec<HttpTx> = Vec::new();
        for (response, request) in responses.into_iter().zip(answering) {
            let mut tx = request.unwrap_or_else(|| HttpTx {
                apps: vec![Classification {
                    protocol: Protocol::Http,
                    ..base.cloned().unwrap_or_default()
                }],
                ..HttpTx::default()
            });
            tx.response = Some(response);
            new_responses.push(tx);
        }
        // Every DNS request the client sent: each query's name (a later
        // query on the same flow is read too); `dns.query` sees only these.
        let dns_apps: Vec<Classification> = dns_names
            .iter()
            .map(|(name, _)| {
                let mut c = base.cloned().unwrap_or_default();
                if !matches!(c.protocol, Protocol::Dns | Protocol::Mdns | Protocol::Llmnr) {
                    c.protocol = Protocol::Dns;
                }
                c.host = Some(name.clone());
                c
            })
            .collect();
        let named = !(new_requests.is_empty() && new_responses.is_empty() && dns_apps.is_empty());
        if self.collect_events {
            for tx in &new_requests {
                for app in &tx.apps {
                    self.transactions_out
                        .push(Transaction::Http(Box::new(app.clone())));
                }
            }
            for (name, opcode) in dns_names.iter().take(dns_apps.len()) {
                self.transactions_out.push(Transaction::Dns {
                    name: name.clone(),
                    opcode: *opcode,
                });
            }
            if !self.classified
                && let Some(c) = base.filter(|c| c.protocol == Protocol::Tls)
            {
                self.transactions_out
                    .push(Transaction::Tls(Box::new(c.clone())));
            }
        }
        if named || body_grew || (base.is_some() && !self.classified) {
            self.transactions += 1;
            self.classified |= base.is_some();
        }
        let app_fresh = self.inspected_at[dir] != self.transactions;
        self.inspected_at[dir] = self.transactions;

        let t = self.tcp.as_deref();
        let (payload, payload_base) = match t {
            Some(t) if fresh => (&t.raw[dir][..], t.raw_base[dir]),
            Some(_) => (&[][..], 0),
            None => (p.payload, 0),
        };
        let request_body = t.and_then(|t| t.http.as_ref()).map(HttpRequests::body);
        let response_body = t.and_then(|t| t.http_responses.as_ref()).map(|r| r.body());
        // What the rules read: one reading per (transaction, host) and per
        // DNS query this packet brought; else the direction's latest
        // transaction; else the flow's classification.
        let stored = t.and_then(|t| match dir {
            0 => t.last_request.as_deref(),
            _ => t.answered.as_deref().or(t.last_request.as_deref()),
        });
        // (one reading, the common case, without an allocation)
        let mut many: Vec<Reading<'_>> = Vec::new();
        let one: [Reading<'_>; 1];
        let readings: &[Reading<'_>] = if named {
            for tx in new_requests.iter().chain(&new_responses) {
                many.extend(tx.readings());
            }
            for (c, (name, opcode)) in dns_apps.iter().zip(dns_names) {
                many.push(Reading {
                    app: Some(c),
                    dns: Some((name.as_str(), *opcode)),
                    request: None,
                    response: None,
                });
            }
            &many
        } else if let Some(tx) = stored.filter(|tx| tx.apps.len() != 1) {
            many = tx.readings().collect();
            &many
        } else {
            one = [match stored {
                Some(tx) => tx.readings().next().expect("one app"),
                None => Reading {
                    app: base,
                    dns: None,
                    request: None,
                    response: None,
                },
            }];
            &one
        };
        let mut decisions: Vec<(Verdict, &'static str, Option<Reject>)> = Vec::new();
        let mut hits: Vec<u32> = Vec::new();
        let mut over_limit = 0;
        for reading in readings {
            let (app, dns_query) = (reading.app, reading.dns);
            // The policy reads every request's host and query's name too.
            if named
                && let Some(c) = app
                && engine.policy.decide(c) == Verdict::Drop
            {
                decisions.push((Verdict::Drop, "policy", None));
            }
            let Some(rules) = &engine.rules else { continue };
            let view = PacketView {
                l4: self.l4,
                src: p.src,
                dst: p.dst,
                sport: p.sport,
                dport: p.dport,
                to_server: p.from_client,
                established,
                payload,
                payload_base,
                app,
                ja4: app.and_then(|a| a.info.ja4.as_deref()),
                // only a query of the DNS protocol (not mDNS or LLMNR)
                dns_query: dns_query
                    .filter(|_| app.is_some_and(|a| a.protocol == Protocol::Dns))
                    .map(|(name, _)| name),
                // a request's, or a DNS response's over UDP
                dns_opcode: dns_query.map(|(_, opcode)| opcode).or_else(|| {
                    (self.l4 != PROTO_TCP
                        && dns_port(p)
                        && p.payload.len() >= 12
                        && app.is_some_and(|a| a.protocol == Protocol::Dns))
                    .then(|| (p.payload[2] >> 3) & 0x0f)
                }),
                app_fresh,
                http_request: reading.request,
                http_response: reading.response,
                request_body: request_body.filter(|_| reading.request.is_some()),
                response_body: response_body.filter(|_| reading.response.is_some()),
                tls_server: t.and_then(|t| t.tls_server.as_ref()).map(|h| &h.info),
                ssh_banner: t.and_then(|t| t.ssh_banners[dir].as_deref()),
                dsize: p.payload.len(),
                tcp_flags: p.tcp.map(|seg| seg.flags),
                ttl: p.ttl,
                icmp: p.icmp,
                now_ns: p.now_ns,
            };
            let matched = rules.matches(&view, &mut self.flowbits);
            over_limit += matched.over_limit.len() as u32;
            if engine.policy.rule_limit == RuleLimit::Drop
                && matched.over_limit.iter().any(|h| h.action == Action::Drop)
            {
                decisions.push((Verdict::Drop, "rule-limit", None));
            }
            for hit in matched.hits {
                if hit.alert {
                    hits.push(hit.sid);
                }
                // what the alert's event shows, kept only for an event log
                // (a copy of the application fields per hit)
                if hit.alert && self.collect_events {
                    self.fired.push(Fired {
                        rule: hit.rule,
                        app: app.map(|a| Box::new(a.clone())),
                        dns_query: dns_query.map(|(name, _)| name.to_string()),
                        http_status: reading
                            .response
                            .and_then(|r| std::str::from_utf8(&r.status).ok()?.parse().ok()),
                    });
                }
                match hit.action {
                    Action::Drop => decisions.push((Verdict::Drop, "rule", None)),
                    Action::Reject(kind) => decisions.push((Verdict::Drop, "rule", Some(kind))),
                    Action::Pass | Action::Bypass => decisions.push((Verdict::Allow, "rule", None)),
                    Action::Alert => {}
                }
            }
        }
        self.over_limit += over_limit;
        for sid in hits {
            if !self.sids.contains(&sid) {
                self.sids.push(sid);
            }
        }
        for (verdict, by, reject) in decisions {
            if self.verdict == Verdict::InspectMore {
                self.reject = reject;
            }
            self.decide(verdict, by);
        }
        // The transactions stay for the packets that follow (the requests
        // also until answered, when responses are read).
        if let Some(t) = self.tcp.as_mut() {
            if t.http_responses.is_some() {
                if let Some(last) = new_requests.last() {
                    t.last_request = Some(Box::new(last.clone()));
                }
                for tx in new_requests {
                    if t.awaiting.len() == MAX_AWAITING {
                        t.awaiting.pop_front();
                    }
                    t.awaiting.push_back(tx);
                }
            } else if let Some(last) = new_requests.pop() {
                t.last_request = Some(Box::new(last));
            }
            if let Some(last) = new_responses.pop() {
                t.answered = Some(Box::new(last));
            }
        }
        if http_limit && engine.policy.rule_limit == RuleLimit::Drop {
            self.decide(Verdict::Drop, "http-limit");
        }
        if self.over_memcap {
            // No memory to inspect it further: fail closed (or, with
            // `rule_limit = "ignore"`, let it go to the kernel).
            match engine.policy.rule_limit {
                RuleLimit::Drop => self.decide(Verdict::Drop, "memcap"),
                RuleLimit::Ignore => self.decide(engine.policy.default, "memcap"),
            }
        }
        // What was matched stays only as context for the next bytes.
        if fresh && let Some(t) = self.tcp.as_mut() {
            let raw = &mut t.raw[dir];
            let cut = raw.len().saturating_sub(RAW_CONTEXT);
            raw.drain(..cut);
            t.raw_base[dir] += cut as u64;
            t.budget.give(cut.min(t.charged));
            t.charged -= cut.min(t.charged);
        }
    }

    /// The first verdict stands.
    fn decide(&mut self, verdict: Verdict, by: &'static str) {
        if self.verdict == Verdict::InspectMore {
            self.verdict = verdict;
            self.decided_by = Some(by);
        }
    }

    /// Whether the kernel can take the flow although no rule decided it:
    /// the packet cap if one is set; else once the protocol is known,
    /// because the rest is encrypted, the inspection depth is reached, or
    /// no rule or policy entry can match any more.
    fn hand_off(&mut self, engine: &Engine, p: &FlowPacket<'_>, dir: usize) {
        let policy = &engine.policy;
        if let Some(cap) = policy.max_user_packets
            && self.packets >= cap
        {
            let c = self.classifier.finish();
            self.decide(policy.decide(&c), "packet-cap");
            return;
        }
        let depth_reached = match &self.tcp {
            Some(t) => t.stream.depth_reached(0) || t.stream.depth_reached(1),
            None => policy.stream_depth != 0 && self.bytes[dir] >= policy.stream_depth,
        };
        if self.classifier.wants_more() {
            if depth_reached {
                let c = self.classifier.finish();
                self.decide(policy.decide(&c), "depth");
            }
            return;
        }
        let (protocol, verdict) = {
            let c = self.classifier.result().expect("decided");
            (c.protocol, policy.decide(c))
        };
        if verdict == Verdict::Drop {
            self.decide(verdict, "policy");
        } else if self.encrypted(protocol) {
            self.decide(verdict, "encrypted");
        } else if depth_reached {
            self.decide(verdict, "depth");
        } else {
            let (client, server) = if p.from_client {
                ((p.src, p.sport), (p.dst, p.dport))
            } else {
                ((p.dst, p.dport), (p.src, p.sport))
            };
            let facts = FlowFacts {
                l4: self.l4,
                client: client.into(),
                server: server.into(),
                // Requests read from the stream make it HTTP for the rules,
                // whatever the classifier concluded.
                protocol: match &self.tcp {
                    Some(t)
                        if protocol == Protocol::Unknown
                            && t.http.as_ref().is_some_and(HttpRequests::is_http) =>
                    {
                        Protocol::Http
                    }
                    _ => protocol,
                },
                established: match &self.tcp {
                    Some(t) => t.established(),
                    None => self.directions == [true, true],
                },
            };
            // Asked again only when its inputs change (the protocol, the
            // handshake): every rule is looked at, on the per-packet path.
            // Only a "yes" is ever reused (a "no" hands the flow over), so
            // a rules reload can at worst keep a flow inspected longer.
            let rules_may = match self.could_match {
                Some((p, e, answer)) if p == facts.protocol && e == facts.established => answer,
                _ => {
                    let answer = engine.rules.as_ref().is_some_and(|r| r.could_match(&facts));
                    self.could_match = Some((facts.protocol, facts.established, answer));
                    answer
                }
            };
            if !rules_may && !policy.could_match_later(protocol) {
                self.decide(verdict, "no-rules");
            }
        }
    }

    /// Nothing past this point can be read: TLS once the server answered
    /// with a TLS record (the ClientHello was read to classify the flow),
    /// SSH once both sides sent their banners, and protocols encrypted from
    /// their first packet on (QUIC after the Initial, DTLS, WireGuard, IPsec,
    /// OpenVPN). Suricata's `encryption-handling: bypass`.
    fn encrypted(&self, protocol: Protocol) -> bool {
        let server_tls = self
            .tcp
            .as_ref()
            .and_then(|t| t.server_first)
            .is_some_and(|[kind, major]| (20..=23).contains(&kind) && major == 3);
        match protocol {
            Protocol::Tls | Protocol::Imaps | Protocol::Pops | Protocol::Smtps => {
                // (and the server's handshake read, when a rule wants it)
                self.l4 != PROTO_TCP
                    || (server_tls
                        && self
                            .tcp
                            .as_ref()
                            .and_then(|t| t.tls_server.as_ref())
                            .is_none_or(|h| h.done()))
            }
            Protocol::Ssh => self.directions == [true, true],
            Protocol::Quic
            | Protocol::Dtls
            | Protocol::WireGuard
            | Protocol::IpSec
            | Protocol::OpenVpn => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Vars;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.evil.test", "www.Evil.test"));
        assert!(!wildcard_match("*.evil.test", "evil.test"));
        assert!(wildcard_match("evil.test", "EVIL.TEST"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*c*e", "abcde"));
        assert!(!wildcard_match("a*c*e", "abcd"));
    }

    #[test]
    fn policy_file_and_its_errors() {
        let p = Policy::parse(
            "give_up_udp = 4\ndefault = \"allow\"\n[[match]]\nprotocol = \"TLS\"\nhost = \"*.evil.test\"\naction = \"drop\"\n",
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!((p.give_up_tcp, p.give_up_udp, p.entries()), (10, 4, 1));
        let tls = |host: &str| Classification {
            protocol: Protocol::Tls,
            host: Some(host.into()),
            ..Classification::default()
        };
        assert_eq!(p.decide(&tls("a.evil.test")), Verdict::Drop);
        assert_eq!(p.decide(&tls("good.test")), Verdict::Allow);
        let e = Policy::parse("give_up_tcp = 10\nbogus = 1\n", Path::new("p.toml")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("bogus"), "{e}");
        let e = Policy::parse(
            "[[match]]\nprotocol = \"NOPE\"\naction = \"drop\"\n",
            Path::new("p.toml"),
        )
        .unwrap_err();
        assert!(e.message.contains("NOPE"), "{e}");
    }

    fn http_flow(engine: &Engine, host: &str) -> FlowInspector {
        let mut f = FlowInspector::new(PROTO_TCP, engine);
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let p = FlowPacket {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport: 40000,
            dport: 80,
            from_client: true,
            payload: req.as_bytes(),
            tcp: None,
            ttl: 64,
            icmp: None,
            now_ns: 0,
        };
        f.on_packet(engine, &p);
        f
    }

    #[test]
    fn rules_decide_before_the_policy() {
        let rules = RuleSet::parse(
            "drop http any any -> any any (http.host; content:\"blocked.test\"; sid:7;)\nalert tcp any any -> any any (content:\"GET\"; sid:8;)\n",
            Path::new("r"),
            &Vars::default(),
            false,
        )
        .unwrap();
        let engine = Engine::new(Some(rules), Policy::default());
        let blocked = http_flow(&engine, "blocked.test");
        assert_eq!(
            (blocked.verdict(), blocked.decided_by, blocked.sids()),
            (Verdict::Drop, Some("rule"), &[7, 8][..])
        );
        // The raw `content` rule may match later bytes of any TCP flow:
        // the flow stays in user space (up to the stream depth).
        let fine = http_flow(&engine, "fine.test");
        assert_eq!(
            (fine.verdict(), fine.decided_by, fine.sids()),
            (Verdict::InspectMore, None, &[8][..])
        );
    }

    /// A drop rule whose matching runs out of steps on a crafted request
    /// drops the flow (fail closed), unless the policy says to ignore it.
    #[test]
    fn a_drop_rule_out_of_steps_drops_unless_told_to_ignore() {
        let rules = || {
            RuleSet::parse(
                "drop http any any -> any any (content:\"../\"; content:\"../\"; distance:0; content:\"../\"; distance:0; content:\"../\"; distance:0; content:\"GET\"; distance:0; within:3; sid:9;)\n",
                Path::new("r"),
                &Vars::default(),
                false,
            )
            .unwrap()
        };
        let host = format!("x{}", "../".repeat(150));
        let engine = Engine::new(Some(rules()), Policy::default());
        let crafted = http_flow(&engine, &host);
        assert_eq!(
            (crafted.verdict(), crafted.decided_by, crafted.over_limit),
            (Verdict::Drop, Some("rule-limit"), 1)
        );
        let engine = Engine::new(
            Some(rules()),
            Policy::parse("rule_limit = \"ignore\"\n", Path::new("p.toml")).unwrap(),
        );
        let crafted = http_flow(&engine, &host);
        assert_eq!(
            (crafted.verdict(), crafted.decided_by, crafted.over_limit),
            (Verdict::InspectMore, None, 1)
        );
    }

    #[test]
    fn unrecognisable_flows_are_decided_at_once_and_empty_ones_only_by_the_cap() {
        let engine = Engine::default();
        let packet = |payload: &'static [u8], sport| FlowPacket {
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport,
            dport: 80,
            from_client: true,
            payload,
            tcp: None,
            ttl: 64,
            icmp: None,
            now_ns: 0,
        };
        // Every dissector rules itself out: Unknown, and nothing can match.
        let mut f = FlowInspector::new(17, &engine);
        assert_eq!(
            f.on_packet(
                &engine,
                &packet(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3], 40000)
            ),
            Verdict::Allow
        );
        assert_eq!(f.decided_by, Some("no-rules"));
        // Empty segments teach nothing: a client cannot pad its way past
        // inspection with them.
        let mut f = FlowInspector::new(PROTO_TCP, &engine);
        for _ in 0..100 {
            assert_eq!(
                f.on_packet(&engine, &packet(&[], 40001)),
                Verdict::InspectMore
            );
        }
        // Only an explicit packet cap decides such a flow.
        let capped = Engine::new(
            None,
            Policy::parse("max_user_packets = 20\n", Path::new("p.toml")).unwrap(),
        );
        let mut f = FlowInspector::new(PROTO_TCP, &capped);
        let verdicts: Vec<Verdict> = (0..20)
            .map(|_| f.on_packet(&capped, &packet(&[], 40001)))
            .collect();
        assert_eq!(verdicts[..19], [Verdict::InspectMore; 19]);
        assert_eq!(
            (verdicts[19], f.decided_by),
            (Verdict::Allow, Some("packet-cap"))
        );
        assert_eq!(
            f.finish().protocol,
            Protocol::Http,
            "guessed by port: the flow carried no payload"
        );
    }

    /// A TCP connection's packets, for the stream tests: client ISN 999,
    /// server ISN 4999, windows 65535.
    struct Conn {
        client_next: u32,
        server_next: u32,
    }

    impl Conn {
        /// Runs the handshake through `f`.
        fn open(engine: &Engine, f: &mut FlowInspector) -> Conn {
            let c = Conn {
                client_next: 1000,
                server_next: 5000,
            };
            f.on_packet(engine, &c.packet(true, 999, SYN, b""));
            f.on_packet(engine, &c.packet(false, 4999, SYN | ACK, b""));
            f.on_packet(engine, &c.packet(true, 1000, ACK, b""));
            c
        }

        fn packet<'a>(
            &self,
            from_client: bool,
            seq: u32,
            flags: u8,
            payload: &'a [u8],
        ) -> FlowPacket<'a> {
            let (a, b) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
            let (src, dst, sport, dport, ack) = if from_client {
                (a, b, 40000, 80, self.server_next)
            } else {
                (b, a, 80, 40000, self.client_next)
            };
            FlowPacket {
                src,
                dst,
                sport,
                dport,
                from_client,
                payload,
                tcp: Some(Segment {
                    seq,
                    ack: if flags & SYN != 0 && from_client {
                        0
                    } else {
                        ack
                    },
                    flags,
                    window: 65535,
                    payload,
                    ..Segment::default()
                }),
                ttl: 64,
                icmp: None,
                now_ns: 0,
            }
        }

        /// The client's next bytes, in order.
        fn send(&mut self, engine: &Engine, f: &mut FlowInspector, data: &[u8]) -> Verdict {
            let seq = self.client_next;
            self.client_next += data.len() as u32;
            f.on_packet(engine, &self.packet(true, seq, ACK | 0x08, data))
        }

        fn answer(&mut self, engine: &Engine, f: &mut FlowInspector, data: &[u8]) -> Verdict {
            let seq = self.server_next;
            self.server_next += data.len() as u32;
            f.on_packet(engine, &self.packet(false, seq, ACK | 0x08, data))
        }
    }

    fn engine(rules: &str, policy: &str) -> Engine {
        let rules = (!rules.is_empty())
            .then(|| RuleSet::parse(rules, Path::new("r"), &Vars::default(), false).unwrap());
        Engine::new(rules, Policy::parse(policy, Path::new("p.toml")).unwrap())
    }

    const BLOCK_HOST: &str =
        "drop http any any -> any any (http.host; content:\"evil.test\"; sid:1;)\n";

    #[test]
    fn a_host_in_one_byte_segments_out_of_order_is_seen_whole() {
        let e = engine(BLOCK_HOST, "");
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let c = Conn::open(&e, &mut f);
        let req = b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
        // every byte but the first, last to first; then the first
        for i in (1..req.len()).rev() {
            let p = c.packet(true, 1000 + i as u32, ACK, &req[i..=i]);
            assert_eq!(f.on_packet(&e, &p), Verdict::InspectMore);
        }
        let p = c.packet(true, 1000, ACK, &req[..1]);
        assert_eq!(
            (f.on_packet(&e, &p), f.decided_by),
            (Verdict::Drop, Some("rule"))
        );
    }

    #[test]
    fn every_request_of_a_keep_alive_connection_is_inspected() {
        let e = engine(BLOCK_HOST, "");
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        let ok = c.send(&e, &mut f, b"GET / HTTP/1.1\r\nHost: good.test\r\n\r\n");
        assert_eq!(
            ok,
            Verdict::InspectMore,
            "an HTTP rule may match a later request"
        );
        c.answer(
            &e,
            &mut f,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        // pipelined: the second request of the segment
        let v = c.send(
            &e,
            &mut f,
            b"GET /a HTTP/1.1\r\nHost: good.test\r\n\r\nGET /b HTTP/1.1\r\nHost: Evil.Test:80\r\n\r\n",
        );
        assert_eq!((v, f.http_requests), (Verdict::Drop, 3));
    }

    #[test]
    fn raw_content_is_matched_across_segments() {
        let e = engine(
            "drop tcp any any -> any any (content:\"attack-signature\"; sid:2;)\n",
            "",
        );
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        assert_eq!(c.send(&e, &mut f, b"xxxxattack-"), Verdict::InspectMore);
        assert_eq!(c.send(&e, &mut f, b"signature"), Verdict::Drop);
    }

    #[test]
    fn decoys_the_host_would_discard_are_flagged_not_inspected() {
        let e = engine(BLOCK_HOST, "");
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let c = Conn::open(&e, &mut f);
        let good = b"GET / HTTP/1.1\r\nHost: good.test\r\n\r\n";
        let evil = b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
        let mut decoy = c.packet(true, 1000, ACK, good);
        if let Some(seg) = decoy.tcp.as_mut() {
            seg.checksum_ok = Some(false);
        }
        assert_eq!(f.on_packet(&e, &decoy), Verdict::InspectMore);
        assert_eq!(f.packet_anomaly(), Some(Anomaly::BadChecksum));
        let mut no_ack = c.packet(true, 1000, 0x08, good);
        assert_eq!(f.on_packet(&e, &no_ack), Verdict::InspectMore);
        assert_eq!(f.packet_anomaly(), Some(Anomaly::NoAck));
        no_ack = c.packet(true, 1000, ACK, evil);
        assert_eq!(f.on_packet(&e, &no_ack), Verdict::Drop);
        assert_eq!(f.packet_anomaly(), None);
    }

    #[test]
    fn the_kernel_takes_a_flow_when_nothing_more_can_be_learned() {
        // TLS, only an SNI rule: once the ClientHello was read.
        let sni = "drop tls any any -> any any (tls.sni; content:\"evil.test\"; sid:3;)\n";
        let e = engine(sni, "");
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        let hello = testbed::frames::tls_client_hello("good.test");
        let v = c.send(&e, &mut f, &hello);
        assert_eq!((v, f.decided_by), (Verdict::Allow, Some("no-rules")));
        // With a raw rule too: after the server's first TLS record.
        let e = engine(
            &format!("{sni}alert tcp any any -> any any (content:\"never\"; sid:4;)\n"),
            "",
        );
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        assert_eq!(c.send(&e, &mut f, &hello), Verdict::InspectMore);
        let v = c.answer(&e, &mut f, &[22, 3, 3, 0, 2, 2, 0]);
        assert_eq!((v, f.decided_by), (Verdict::Allow, Some("encrypted")));
        // HTTP without HTTP rules: as soon as it is classified.
        let e = engine("", "");
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        let v = c.send(&e, &mut f, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert_eq!((v, f.decided_by), (Verdict::Allow, Some("no-rules")));
        // A raw content rule keeps a flow until the depth.
        let e = engine(
            "alert tcp any any -> any any (content:\"never\"; sid:4;)\n",
            "stream_depth = 100\n",
        );
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        assert_eq!(c.send(&e, &mut f, &[b'a'; 99]), Verdict::InspectMore);
        let v = c.send(&e, &mut f, b"bc");
        assert_eq!((v, f.decided_by), (Verdict::Allow, Some("depth")));
    }

    #[test]
    fn the_policy_reads_every_request_host() {
        let e = engine("", "[[match]]\nhost = \"*.evil.test\"\naction = \"drop\"\n");
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        let v = c.send(&e, &mut f, b"GET / HTTP/1.1\r\nHost: a.good.test\r\n\r\n");
        assert_eq!(
            v,
            Verdict::InspectMore,
            "a later request could name a dropped host"
        );
        let v = c.send(
            &e,
            &mut f,
            b"GET http://x.evil.test/ HTTP/1.1\r\nHost: a.good.test\r\n\r\n",
        );
        assert_eq!((v, f.decided_by), (Verdict::Drop, Some("policy")));
        assert!(f.http_anomalies.contains(&"absolute-uri"));
    }

    use testbed::frames::dns_query;

    /// A second query on a flow (UDP from one socket, or a TCP connection)
    /// is read as well as the first.
    #[test]
    fn every_dns_query_of_a_flow_is_read() {
        let e = engine(
            "drop dns any any -> any any (dns.query; content:\"blocked.test\"; sid:4;)\n",
            "",
        );
        fn udp(payload: &[u8], from_client: bool) -> FlowPacket<'_> {
            let (a, b) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
            FlowPacket {
                src: if from_client { a } else { b },
                dst: if from_client { b } else { a },
                sport: if from_client { 40000 } else { 53 },
                dport: if from_client { 53 } else { 40000 },
                from_client,
                payload,
                tcp: None,
                ttl: 64,
                icmp: None,
                now_ns: 0,
            }
        }
        let mut f = FlowInspector::new(17, &e);
        let q1 = dns_query("allowed.test");
        let mut a1 = q1.clone();
        a1[2] = 0x81;
        assert_eq!(f.on_packet(&e, &udp(&q1, true)), Verdict::InspectMore);
        assert_eq!(f.on_packet(&e, &udp(&a1, false)), Verdict::InspectMore);
        // dns.query is a request's name: a response naming it is not one
        let mut blocked_answer = dns_query("blocked.test");
        blocked_answer[2] |= 0x80;
        assert_eq!(
            f.on_packet(&e, &udp(&blocked_answer, false)),
            Verdict::InspectMore
        );
        assert_eq!(
            f.on_packet(&e, &udp(&blocked_answer, true)),
            Verdict::InspectMore
        );
        let q2 = dns_query("blocked.test");
        assert_eq!(f.on_packet(&e, &udp(&q2, true)), Verdict::Drop);
        // over TCP, both queries in one segment, the second blocked
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let c = Conn::open(&e, &mut f);
        let mut stream = Vec::new();
        for q in [dns_query("allowed.test"), dns_query("blocked.test")] {
            stream.extend_from_slice(&(q.len() as u16).to_be_bytes());
            stream.extend_from_slice(&q);
        }
        let mut p = c.packet(true, 1000, ACK, &stream);
        p.sport = 40000;
        p.dport = 53;
        assert_eq!(f.on_packet(&e, &p), Verdict::Drop);
    }

    /// Buffers of flows under inspection come out of one budget: a flow
    /// that cannot get memory is dropped (fail closed), and what it held
    /// goes back when it goes.
    #[test]
    fn the_memory_budget_bounds_buffers_and_fails_closed() {
        let mut e = engine(BLOCK_HOST, "");
        let budget = Budget::new(100);
        e.stream.budget = Arc::clone(&budget);
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        // a request head that never ends, 60 bytes at a time
        let head = [&b"GET /"[..], &[b'a'; 55]].concat();
        assert_eq!(c.send(&e, &mut f, &head), Verdict::InspectMore);
        assert_eq!(budget.held(), 60);
        let v = c.send(&e, &mut f, &[b'a'; 60]);
        assert_eq!((v, f.decided_by), (Verdict::Drop, Some("memcap")));
        drop(f);
        assert_eq!(budget.held(), 0, "given back when the flow goes");
    }

    /// `http.uri` is the target as a server reads it: percent-encoding and
    /// dot segments do not hide a path; `http.uri.raw` is what was sent.
    #[test]
    fn an_encoded_path_is_read_decoded() {
        let e = engine(
            "drop http any any -> any any (http.uri; content:\"/admin\"; sid:1;)\nalert http any any -> any any (http.uri.raw; content:\"%61\"; sid:2;)\n",
            "",
        );
        let mut f = FlowInspector::new(PROTO_TCP, &e);
        let mut c = Conn::open(&e, &mut f);
        let v = c.send(
            &e,
            &mut f,
            b"GET /x/../%61dmin/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        );
        assert_eq!((v, f.sids()), (Verdict::Drop, &[1, 2][..]));
        assert!(f.http_anomalies.contains(&"uri-normalised"));
    }
}
