//! Events in Suricata's eve.json format (`--eve PATH`, JSON Lines), for the
//! consumers that already read Suricata's: an `alert` event when a rule
//! fires (not when its flow ends), a `drop` event for the packet at which a
//! flow was dropped, `http`, `dns` and `tls` events as requests, queries
//! and handshakes are read, and a `flow` event when a flow ends.
//!
//! Field names, types and nesting are those of Suricata's published eve
//! schema (`etc/schema.json` of Suricata's source), and only fields that
//! schema has are written: `tests/eve_schema.rs` checks every event against
//! the part of the schema these events use. What the data plane knows and
//! Suricata's eve has no field for (the nDPI label, why a flow was decided,
//! the queue) stays in the flow log (`--flow-log`).
//!
//! Flows the kernel carried after a verdict are Suricata's "capture bypass":
//! `flow.state` is `bypassed`, `flow.bypass` is `capture`, `flow.bypassed`
//! holds the kernel's per-direction counters and `pkts_toserver` and the
//! like are the totals (user space's and the kernel's), as Suricata writes
//! them for a flow its XDP filter bypassed.

use std::{
    borrow::Cow,
    hash::{Hash, Hasher},
    net::IpAddr,
};

use dpi::{
    Decoded, FlowKey, Protocol,
    engine::{Alert, FlowState, KernelEntry},
    rules::Action,
    table::EndReason,
};
use serde::Serialize;

use crate::flowlog::WallClock;

/// One eve event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub timestamp: String,
    pub flow_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_iface: Option<String>,
    pub event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<[u16; 1]>,
    pub src_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub dest_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
    pub proto: Cow<'static, str>,
    /// `to_server` or `to_client` (alerts and drops: the packet's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_proto: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// `dns`: in an alert, the queries the rule read; in a `dns` event, the
/// query (Suricata 7's version-2 forms, which the schema asks to be named).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Dns {
    Alert(DnsBody),
    Query(DnsQueryEvent),
}

/// `dns` of a `dns` event: one query.
#[derive(Clone, Debug, Serialize)]
pub struct DnsQueryEvent {
    pub version: u8,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub rrname: String,
    pub opcode: u8,
}

/// `alert`: the rule and what was done.
#[derive(Clone, Debug, Serialize)]
pub struct AlertBody {
    /// `allowed`, or `blocked` for a drop or reject rule where the data
    /// plane enforces verdicts (inline, host mode).
    pub action: &'static str,
    pub gid: u32,
    pub signature_id: u32,
    pub rev: u32,
    /// The rule's `msg`.
    pub signature: String,
    /// The description of the rule's `classtype` (empty without one, as
    /// Suricata writes it).
    pub category: &'static str,
    pub severity: u8,
}

/// `drop`: the packet at which the flow was dropped.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DropBody {
    /// The IP packet's length.
    pub len: u32,
    pub tos: u8,
    pub ttl: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipid: Option<u16>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<DropTcp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udplen: Option<u16>,
    /// Suricata's drop reasons: `rules`, `stream memcap`, `applayer error`.
    pub reason: &'static str,
}

/// The TCP header fields of a `drop` event.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DropTcp {
    pub tcpseq: u32,
    pub tcpack: u32,
    pub tcpwin: u16,
    pub syn: bool,
    pub ack: bool,
    pub psh: bool,
    pub rst: bool,
    pub urg: bool,
    pub fin: bool,
    pub tcpres: u8,
    pub tcpurgp: u16,
}

/// `flow`: in a `flow` event the whole flow; in an `alert` its counters so
/// far, its start and its endpoints (client first).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FlowBody {
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    /// What the kernel carried after the verdict (part of the totals above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypassed: Option<Bypassed>,
    pub start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<u64>,
    /// `new` (one direction seen), `established`, `closed` (FIN or RST
    /// seen), `bypassed` (the kernel carried the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// `capture`: bypassed in XDP, before the kernel's stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass: Option<&'static str>,
    /// `timeout` (idle, or closed and its closing timeout passed),
    /// `forced` (evicted from a full table), `shutdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerted: Option<bool>,
    /// `drop` for a dropped flow, `pass` for one a `pass` rule let go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// Requests read (HTTP) or queries (DNS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_cnt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
}

/// `flow.bypassed`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bypassed {
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
}

/// `http` of an alert: the request (and response status) the rule read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HttpBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// `tls` of an alert: the client's handshake.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TlsBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3: Option<Ja3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Ja3 {
    pub hash: String,
    pub string: String,
}

/// `dns` of an alert, in the form of Suricata 7's alerts (eve DNS
/// version 2, which the schema asks to be named): the queries.
#[derive(Clone, Debug, Serialize)]
pub struct DnsBody {
    pub version: u8,
    pub query: Vec<DnsQuery>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DnsQuery {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub rrname: String,
}

/// What every event of one data plane shares.
#[derive(Clone, Debug)]
pub struct EveContext {
    /// The interface the packets came in on.
    pub in_iface: Option<String>,
    /// Drops are enforced (inline and host mode): a drop rule's alert is
    /// `blocked`, and dropped flows get a `drop` event. A mirror port and
    /// offline inspection only report (`allowed`, no `drop` events).
    pub enforcing: bool,
    /// Turns the flow table's clock into wall-clock time.
    pub clock: WallClock,
}

/// Suricata's name of a transport (`proto`).
pub fn proto_name(proto: u8) -> Cow<'static, str> {
    Cow::Borrowed(match proto {
        1 => "ICMP",
        2 => "IGMP",
        6 => "TCP",
        17 => "UDP",
        47 => "GRE",
        50 => "ESP",
        51 => "AH",
        58 => "IPv6-ICMP",
        112 => "VRRP",
        132 => "SCTP",
        other => return Cow::Owned(other.to_string()),
    })
}

/// Suricata's `app_proto` for a protocol the classifier named (its nDPI
/// name): Suricata's own name where Suricata has a parser for it, else the
/// nDPI name in lower case; None while unknown.
pub fn app_proto(ndpi_name: &'static str) -> Option<Cow<'static, str>> {
    Some(Cow::Borrowed(match ndpi_name {
        "Unknown" => return None,
        "HTTP" | "HTTP_Proxy" | "HTTP_Connect" => "http",
        "TLS" => "tls",
        "DNS" => "dns",
        "SSH" => "ssh",
        "QUIC" => "quic",
        "SMTP" => "smtp",
        "IMAP" => "imap",
        "POP3" => "pop3",
        "FTP_CONTROL" => "ftp",
        "FTP_DATA" => "ftp-data",
        "SMBv1" | "SMBv23" => "smb",
        "DCE_RPC" => "dcerpc",
        "DHCP" => "dhcp",
        "NTP" => "ntp",
        "SNMP" => "snmp",
        "SIP" => "sip",
        "RDP" => "rdp",
        "Kerberos" => "krb5",
        "MQTT" => "mqtt",
        "PostgreSQL" => "pgsql",
        "LDAP" => "ldap",
        "VNC" | "RFB" => "rfb",
        "Telnet" => "telnet",
        "Modbus" => "modbus",
        "DNP3" => "dnp3",
        "TFTP" => "tftp",
        "NFS" => "nfs",
        "IPSec" => "ike",
        "BitTorrent" => "bittorrent-dht",
        "Websocket" => "websocket",
        other => return Some(Cow::Owned(other.to_ascii_lowercase())),
    }))
}

/// A flow's id, as Suricata's: one number for every event of the flow, in
/// 51 bits (exact in any JSON reader's doubles). Made from the key and the
/// time the flow began, so a reused 5-tuple is another flow.
pub fn flow_id(key: &FlowKey, first_ns: u64) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    first_ns.hash(&mut h);
    h.finish() & ((1 << 51) - 1)
}

/// Ports in events: only transports that have them.
fn ports(proto: u8, src: u16, dst: u16) -> (Option<u16>, Option<u16>) {
    match proto {
        6 | 17 | 132 => (Some(src), Some(dst)),
        _ => (None, None),
    }
}

/// The event's common part for a packet of `key` sent by endpoint A when
/// `from_a`.
fn common(
    ctx: &EveContext,
    event_type: &'static str,
    key: &FlowKey,
    flow: &FlowState,
    from_a: bool,
    now_ns: u64,
) -> Event {
    let (src, dst) = if from_a {
        (key.a(), key.b())
    } else {
        (key.b(), key.a())
    };
    let (src_port, dest_port) = ports(key.proto, src.port(), dst.port());
    Event {
        timestamp: ctx.clock.eve(now_ns),
        flow_id: flow_id(key, flow.first_ns),
        in_iface: ctx.in_iface.clone(),
        event_type,
        vlan: (key.vlan != 0).then_some([key.vlan]),
        src_ip: src.ip(),
        src_port,
        dest_ip: dst.ip(),
        dest_port,
        proto: proto_name(key.proto),
        direction: Some(if from_a == flow.client_is_a {
            "to_server"
        } else {
            "to_client"
        }),
        app_proto: flow.label.as_ref().and_then(|l| app_proto(l.protocol)),
        alert: None,
        drop: None,
        flow: None,
        http: None,
        tls: None,
        dns: None,
    }
}

/// The flow so far, for an alert: counters in user space, start, endpoints.
fn flow_so_far(ctx: &EveContext, key: &FlowKey, flow: &FlowState) -> FlowBody {
    let (packets, bytes) = flow.by_direction();
    let (client, server) = if flow.client_is_a {
        (key.a(), key.b())
    } else {
        (key.b(), key.a())
    };
    let (src_port, dest_port) = ports(key.proto, client.port(), server.port());
    FlowBody {
        pkts_toserver: packets[0],
        pkts_toclient: packets[1],
        bytes_toserver: bytes[0],
        bytes_toclient: bytes[1],
        start: ctx.clock.eve(flow.first_ns),
        src_ip: Some(client.ip()),
        dest_ip: Some(server.ip()),
        src_port,
        dest_port,
        ..FlowBody::default()
    }
}

/// An `alert` event for `alert`, raised by a packet of `key` (sent by
/// endpoint A when `from_a`) at `now_ns`. None for a `pass` rule (Suricata
/// does not alert on those).
pub fn alert(
    ctx: &EveContext,
    key: &FlowKey,
    flow: &FlowState,
    from_a: bool,
    now_ns: u64,
    alert: &Alert,
) -> Option<Event> {
    let blocked = matches!(alert.action, Action::Drop | Action::Reject(_));
    if alert.action == Action::Pass {
        return None;
    }
    let mut event = common(ctx, "alert", key, flow, from_a, now_ns);
    event.app_proto = app_proto(alert.protocol.name()).or(event.app_proto);
    event.alert = Some(AlertBody {
        action: if blocked && ctx.enforcing {
            "blocked"
        } else {
            "allowed"
        },
        gid: alert.gid,
        signature_id: alert.sid,
        rev: alert.rev,
        signature: alert.msg.clone(),
        category: alert.category.unwrap_or(""),
        severity: alert.severity,
    });
    event.flow = Some(flow_so_far(ctx, key, flow));
    let fired = &alert.fired;
    if let Some(app) = fired.app.as_deref() {
        match app.protocol {
            Protocol::Http | Protocol::HttpProxy => {
                event.http = Some(http_body(app, fired.http_status));
            }
            Protocol::Tls => event.tls = Some(tls_body(app)),
            _ => {}
        }
    }
    if let Some(name) = &fired.dns_query {
        event.dns = Some(Dns::Alert(DnsBody {
            version: 2,
            query: vec![DnsQuery {
                kind: "query",
                rrname: name.clone(),
            }],
        }));
    }
    Some(event)
}

/// The `http` fields of a request as read.
fn http_body(app: &dpi::Classification, status: Option<u16>) -> HttpBody {
    let info = &app.info;
    HttpBody {
        hostname: app.host.clone(),
        url: info.http_uri_raw.clone().or_else(|| info.http_uri.clone()),
        http_user_agent: info.http_user_agent.clone(),
        http_method: info.http_method.clone(),
        status,
    }
}

/// The `tls` fields of a client's handshake as read.
fn tls_body(app: &dpi::Classification) -> TlsBody {
    let info = &app.info;
    TlsBody {
        sni: info.sni_raw.clone().or_else(|| app.host.clone()),
        ja3: info
            .ja3
            .clone()
            .zip(info.ja3_hash.clone())
            .map(|(string, hash)| Ja3 { hash, string }),
        ja4: info.ja4.clone(),
    }
}

/// An `http`, `dns` or `tls` event for a transaction a packet of `key`
/// (sent by endpoint A when `from_a`) brought at `now_ns`.
pub fn transaction(
    ctx: &EveContext,
    key: &FlowKey,
    flow: &FlowState,
    from_a: bool,
    now_ns: u64,
    tx: &dpi::policy::Transaction,
) -> Event {
    use dpi::policy::Transaction;
    let (kind, protocol) = match tx {
        Transaction::Http(_) => ("http", "HTTP"),
        Transaction::Dns { .. } => ("dns", "DNS"),
        Transaction::Tls(_) => ("tls", "TLS"),
    };
    let mut event = common(ctx, kind, key, flow, from_a, now_ns);
    event.app_proto = app_proto(protocol);
    match tx {
        Transaction::Http(app) => event.http = Some(http_body(app, None)),
        Transaction::Tls(app) => event.tls = Some(tls_body(app)),
        Transaction::Dns { name, opcode } => {
            event.dns = Some(Dns::Query(DnsQueryEvent {
                version: 2,
                kind: "query",
                rrname: name.clone(),
                opcode: *opcode,
            }))
        }
    }
    event
}

/// A `drop` event for the packet (`frame`, decoded as `decoded`) at which
/// the flow was dropped; `decided_by` is why (the flow label's).
pub fn drop(
    ctx: &EveContext,
    flow: &FlowState,
    decoded: &Decoded,
    frame: &[u8],
    now_ns: u64,
    decided_by: Option<&str>,
) -> Event {
    let key = &decoded.key;
    let mut event = common(ctx, "drop", key, flow, decoded.from_a, now_ns);
    let ip = frame.get(decoded.l3_offset..).unwrap_or(&[]);
    let v4 = key.a().is_ipv4();
    let be16 = |at: usize| ip.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (len, tos, ipid) = if v4 {
        (
            be16(2).map_or(0, u32::from),
            ip.get(1).copied().unwrap_or(0),
            be16(4),
        )
    } else {
        (
            be16(4).map_or(0, |l| u32::from(l) + 40),
            be16(0).map_or(0, |w| ((w >> 4) & 0xff) as u8),
            None,
        )
    };
    let flags = decoded.tcp_flags;
    event.drop = Some(DropBody {
        len,
        tos,
        ttl: decoded.ttl,
        ipid,
        tcp: (key.proto == 6).then_some(DropTcp {
            tcpseq: decoded.tcp_seq,
            tcpack: decoded.tcp.ack,
            tcpwin: decoded.tcp.window,
            syn: flags & 0x02 != 0,
            ack: flags & 0x10 != 0,
            psh: flags & 0x08 != 0,
            rst: flags & 0x04 != 0,
            urg: flags & 0x20 != 0,
            fin: flags & 0x01 != 0,
            tcpres: 0,
            tcpurgp: decoded.tcp.urgent,
        }),
        udplen: (key.proto == 17).then(|| decoded.payload_len as u16 + 8),
        reason: match decided_by {
            Some("memcap") => "stream memcap",
            Some("http-limit") => "applayer error",
            _ => "rules",
        },
    });
    event
}

/// A `flow` event for a flow that ended: user space's counters plus the
/// kernel's (`kernel`, when it carried the flow after a verdict).
pub fn flow(
    ctx: &EveContext,
    key: &FlowKey,
    flow: &FlowState,
    kernel: Option<&KernelEntry>,
    reason: EndReason,
    end_ns: u64,
) -> Event {
    let mut event = common(ctx, "flow", key, flow, flow.client_is_a, end_ns);
    event.direction = None;
    let kernel_carried = kernel.filter(|k| k.packets() > 0);
    let (packets, bytes) = flow.with_kernel(kernel_carried);
    let bypassed = kernel_carried
        .map(|k| k.by_direction(flow.client_is_a))
        .map(|(p, b)| Bypassed {
            pkts_toserver: p[0],
            pkts_toclient: p[1],
            bytes_toserver: b[0],
            bytes_toclient: b[1],
        });
    let label = flow.label.as_deref();
    let closing = flow.closing || kernel.is_some_and(|k| k.closing);
    let state = if bypassed.is_some() {
        "bypassed"
    } else if closing {
        "closed"
    } else if packets[0] > 0 && packets[1] > 0 {
        "established"
    } else {
        "new"
    };
    let dropped = flow.decided == Some(dpi::policy::Verdict::Drop);
    let passed_by_rule = label.is_some_and(|l| l.decided_by == Some("rule")) && !dropped;
    let tx = label.map_or(0, |l| u64::from(l.http_requests));
    let start = ctx.clock.at(flow.first_ns);
    let end = ctx.clock.at(end_ns.max(flow.first_ns));
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    event.flow = Some(FlowBody {
        pkts_toserver: packets[0],
        pkts_toclient: packets[1],
        bytes_toserver: bytes[0],
        bytes_toclient: bytes[1],
        bypass: bypassed.is_some().then_some("capture"),
        bypassed,
        start: ctx.clock.eve(flow.first_ns),
        end: Some(ctx.clock.eve(end_ns.max(flow.first_ns))),
        age: Some(secs(end) - secs(start)),
        state: Some(state),
        reason: Some(match reason {
            EndReason::Timeout | EndReason::Closed => "timeout",
            EndReason::Evicted => "forced",
            EndReason::Shutdown => "shutdown",
        }),
        alerted: Some(label.is_some_and(|l| !l.sids.is_empty())),
        action: if dropped {
            Some("drop")
        } else if passed_by_rule {
            Some("pass")
        } else {
            None
        },
        tx_cnt: (tx > 0).then_some(tx),
        ..FlowBody::default()
    });
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (FlowKey, bool) {
        FlowKey::new(
            "198.18.1.9:40000".parse().unwrap(),
            "198.18.1.2:80".parse().unwrap(),
            6,
            0,
        )
    }

    fn ctx() -> EveContext {
        EveContext {
            in_iface: Some("dut0".into()),
            enforcing: true,
            clock: WallClock::epoch(),
        }
    }

    #[test]
    fn a_kernel_carried_flow_counts_both_directions_and_says_bypassed() {
        let (key, client_from_a) = key();
        // the client is B here (198.18.1.9 > 198.18.1.2)
        assert!(!client_from_a);
        let flow = FlowState {
            packets: 3,
            packets_from: [1, 2],
            bytes_from: [60, 500],
            client_is_a: false,
            first_ns: 1_700_000_000_000_000_000,
            decided: Some(dpi::policy::Verdict::Allow),
            ..FlowState::default()
        };
        let kernel = KernelEntry {
            verdict: dpi::policy::Verdict::Allow,
            packets_from: [700, 10],
            bytes_from: [1_000_000, 600],
            last_seen_ns: 0,
            closing: true,
        };
        let end = flow.first_ns + 2_500_000_000;
        let e = super::flow(&ctx(), &key, &flow, Some(&kernel), EndReason::Closed, end);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["src_ip"], "198.18.1.9", "the client first");
        assert_eq!(v["dest_port"], 80);
        assert_eq!(v["proto"], "TCP");
        let f = &v["flow"];
        assert_eq!(f["pkts_toserver"], 2 + 10);
        assert_eq!(f["pkts_toclient"], 1 + 700);
        assert_eq!(f["bytes_toclient"], 60 + 1_000_000);
        assert_eq!(f["bypassed"]["pkts_toclient"], 700);
        assert_eq!(
            (f["state"].as_str(), f["bypass"].as_str()),
            (Some("bypassed"), Some("capture"))
        );
        assert_eq!(f["reason"], "timeout");
        assert_eq!(f["age"], 2);
        assert_eq!(v["timestamp"], "2023-11-14T22:13:22.500000+0000");
        assert_eq!(f["start"], "2023-11-14T22:13:20.000000+0000");
        assert!(v.get("direction").is_none());
    }

    #[test]
    fn flow_ids_differ_by_flow_and_start() {
        let (key, _) = key();
        assert_eq!(flow_id(&key, 5), flow_id(&key, 5));
        assert_ne!(flow_id(&key, 5), flow_id(&key, 6));
        assert!(flow_id(&key, 5) < 1 << 51);
    }

    #[test]
    fn app_protocols_take_suricatas_names() {
        assert_eq!(app_proto("HTTP").as_deref(), Some("http"));
        assert_eq!(app_proto("Kerberos").as_deref(), Some("krb5"));
        assert_eq!(app_proto("WireGuard").as_deref(), Some("wireguard"));
        assert_eq!(app_proto("Unknown"), None);
        assert_eq!(proto_name(58), "IPv6-ICMP");
        assert_eq!(proto_name(115), "115");
    }
}
