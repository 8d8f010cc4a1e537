//! Protocol classification by payload.
//!
//! A [`FlowClassifier`] is fed the payloads of one flow (direction and
//! bytes, lent for the call): UDP datagrams, or a TCP direction's
//! reassembled stream ([`crate::stream`]) as it comes in order. Each dissector looks at a payload
//! and says the protocol is theirs ([`Dissect::Match`]), certainly not
//! theirs ([`Dissect::No`], never asked again for this flow), or that it
//! needs more packets. The first match decides. Ports are only a hint:
//! after the give-up limit, a flow no dissector claimed gets the protocol of
//! its well-known port with [`Confidence::Port`], and the result says so.
//!
//! Protocol names are spelled as nDPI spells them, so results compare line by
//! line with `ndpiReader`.

mod binary;
mod dns;
mod quic;
mod text;
mod tls;

use std::fmt;

pub use dns::{TcpMessages as DnsTcpMessages, query_name as dns_query_name};
pub use tls::{ClientHello, ServerHandshake, ServerInfo, parse_client_hello};

use crate::flow::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

pub const PROTO_IGMP: u8 = 2;
pub const PROTO_ESP: u8 = 50;
pub const PROTO_AH: u8 = 51;

macro_rules! protocols {
    ($($(#[$attr:meta])* $variant:ident => $name:literal),+ $(,)?) => {
        /// An application protocol, named as nDPI names it.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Protocol {
            $($(#[$attr])* $variant),+
        }

        impl Protocol {
            /// Every protocol, in declaration order.
            pub const ALL: &'static [Protocol] = &[$(Protocol::$variant),+];

            /// The name nDPI uses (`TLS`, `Service_Location_Protocol`...).
            pub fn name(self) -> &'static str {
                match self {
                    $(Protocol::$variant => $name),+
                }
            }

            /// The protocol of an nDPI name.
            pub fn from_name(name: &str) -> Option<Protocol> {
                match name {
                    $($name => Some(Protocol::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

protocols! {
    #[default]
    Unknown => "Unknown",
    Http => "HTTP",
    HttpProxy => "HTTP_Proxy",
    Tls => "TLS",
    Imaps => "IMAPS",
    Pops => "POPS",
    Smtps => "SMTPS",
    Quic => "QUIC",
    Dns => "DNS",
    Mdns => "MDNS",
    Llmnr => "LLMNR",
    Dhcp => "DHCP",
    Dhcpv6 => "DHCPV6",
    Ntp => "NTP",
    Snmp => "SNMP",
    Syslog => "Syslog",
    Ssdp => "SSDP",
    NetBios => "NetBIOS",
    Slp => "Service_Location_Protocol",
    Stun => "STUN",
    Sip => "SIP",
    Rtp => "RTP",
    Ssh => "SSH",
    Smtp => "SMTP",
    Pop3 => "POP3",
    Imap => "IMAP",
    FtpControl => "FTP_CONTROL",
    Rdp => "RDP",
    SmbV1 => "SMBv1",
    SmbV23 => "SMBv23",
    Kerberos => "Kerberos",
    Ldap => "LDAP",
    Radius => "Radius",
    BitTorrent => "BitTorrent",
    OpenVpn => "OpenVPN",
    WireGuard => "WireGuard",
    IpSec => "IPSec",
    Dtls => "DTLS",
    Mqtt => "MQTT",
    PostgreSql => "PostgreSQL",
    MySql => "MySQL",
    Redis => "RESP",
    Tds => "TDS",
    Rtsp => "RTSP",
    Socks => "SOCKS",
    Icmp => "ICMP",
    Icmpv6 => "ICMPV6",
    Igmp => "IGMP",
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the protocol was found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Confidence {
    /// A dissector recognised the payload.
    Dpi,
    /// No dissector recognised it; this is the usual protocol of its port.
    Port,
    /// Nothing to go on.
    #[default]
    Unknown,
}

impl Confidence {
    pub fn name(self) -> &'static str {
        match self {
            Confidence::Dpi => "DPI",
            Confidence::Port => "port",
            Confidence::Unknown => "unknown",
        }
    }
}

/// What a classifier concluded about a flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    pub protocol: Protocol,
    pub confidence: Confidence,
    /// Host name the protocol carries: HTTP Host, TLS/QUIC SNI, DNS query name...
    pub host: Option<String>,
    /// Packets with payload that were looked at before deciding.
    pub dpi_packets: u32,
    /// Further fields the dissector read (for rules and flow records).
    pub info: AppInfo,
}

/// Application fields besides the host, as far as the dissector read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppInfo {
    pub http_method: Option<String>,
    pub http_uri: Option<String>,
    /// The request target as sent (`http.uri.raw`); `http_uri` is it
    /// normalised once the stream's HTTP parser read the request.
    pub http_uri_raw: Option<String>,
    pub http_user_agent: Option<String>,
    /// TLS/QUIC ALPN protocols offered by the client.
    pub alpn: Vec<String>,
    /// Highest TLS version the client offered.
    pub tls_version: Option<u16>,
    /// JA4 fingerprint of the TLS/QUIC/DTLS ClientHello.
    pub ja4: Option<String>,
    /// JA3 text of the TLS ClientHello (`ja3.string`), and its MD5 (`ja3.hash`).
    pub ja3: Option<String>,
    pub ja3_hash: Option<String>,
    /// The TLS/QUIC SNI as sent (the host is it in lower case).
    pub sni_raw: Option<String>,
}

/// What a dissector says about one payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dissect {
    Match(Protocol, Option<String>),
    /// Not this protocol; do not ask again for this flow.
    No,
    /// Could be; look at more packets.
    More,
}

/// One payload as a dissector sees it.
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    pub data: &'a [u8],
    /// From the flow's initiator (the side that sent the first packet).
    pub from_client: bool,
    /// Ports of this packet.
    pub src_port: u16,
    pub dst_port: u16,
    /// 0-based index among this flow's packets with payload.
    pub index: u32,
    pub l4: u8,
}

impl Payload<'_> {
    /// True if either port is `port`.
    pub fn port(&self, port: u16) -> bool {
        self.src_port == port || self.dst_port == port
    }
}

type Dissector = fn(&Payload<'_>, &mut Scratch) -> Dissect;

/// Small per-flow memory some dissectors need across packets.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    /// RTP: SSRC and sequence number of the last packet per direction.
    pub rtp: [Option<(u32, u16)>; 2],
    /// Bytes of the first client and server payloads seen (for protocols
    /// that are recognised by a request/response pair).
    pub first_len: [Option<usize>; 2],
    /// TLS handshake bytes reassembled from the client when a ClientHello
    /// spans several segments (bounded by [`tls::MAX_HELLO`]).
    pub tls_hello: Vec<u8>,
    /// DNS over TCP: the first message's bytes, length prefix included,
    /// gathered over segments (bounded by [`dns::MAX_TCP_MESSAGE`]).
    pub dns_tcp: Vec<u8>,
    /// HTTP: the client's request head gathered so far, until it is whole
    /// (bounded by [`text::MAX_HEAD`]).
    pub http_head: Vec<u8>,
    /// HTTP: the head's first line has been read.
    pub http_line_seen: bool,
    /// QUIC: CRYPTO stream bytes of the client's Initials, by offset.
    pub quic_crypto: Vec<u8>,
    /// Fields read so far, moved into the [`Classification`].
    pub info: AppInfo,
    /// TDS: the direction a login came from, while its answer is awaited.
    pub tds_login: Option<usize>,
}

struct Entry {
    dissect: Dissector,
    tcp: bool,
    udp: bool,
}

const fn tcp(dissect: Dissector) -> Entry {
    Entry {
        dissect,
        tcp: true,
        udp: false,
    }
}

const fn udp(dissect: Dissector) -> Entry {
    Entry {
        dissect,
        tcp: false,
        udp: true,
    }
}

const fn both(dissect: Dissector) -> Entry {
    Entry {
        dissect,
        tcp: true,
        udp: true,
    }
}

/// Dissectors in the order they are tried. Specific, cheap checks first.
const DISSECTORS: &[Entry] = &[
    tcp(text::http),
    both(tls::tls),
    udp(tls::dtls),
    udp(quic::quic),
    both(dns::dns),
    udp(binary::slp),
    udp(binary::netbios_ns),
    tcp(binary::netbios_session),
    udp(binary::netbios_dgm),
    udp(text::ssdp),
    udp(binary::dhcp),
    udp(binary::dhcpv6),
    udp(binary::ntp),
    udp(binary::snmp),
    udp(text::syslog),
    both(binary::stun),
    both(text::sip),
    tcp(text::rtsp),
    tcp(text::ssh),
    tcp(text::mail_and_ftp),
    tcp(binary::rdp),
    tcp(binary::smb),
    both(binary::kerberos),
    both(binary::ldap),
    udp(binary::radius),
    both(binary::bittorrent),
    both(binary::openvpn),
    udp(binary::wireguard),
    udp(binary::ike),
    tcp(binary::mqtt),
    tcp(binary::postgresql),
    tcp(binary::mysql),
    tcp(text::redis),
    tcp(binary::tds),
    tcp(binary::socks),
    udp(binary::rtp),
];

/// A decided protocol that another may still refine within the give-up
/// limit: WebRTC flows start with STUN and carry DTLS (nDPI reports DTLS).
/// A DNS query is refined by its response, whose name nDPI reports.
fn upgrade_of(protocol: Protocol) -> Option<(Protocol, Dissector)> {
    match protocol {
        Protocol::Stun => Some((Protocol::Dtls, tls::dtls)),
        Protocol::Dns | Protocol::Mdns | Protocol::Llmnr => Some((protocol, dns::response)),
        _ => None,
    }
}

/// TLS on the implicit-TLS mail ports is named for the mail protocol, as nDPI does.
fn tls_by_port(protocol: Protocol, ports: Option<(u16, u16)>) -> Protocol {
    match (protocol, ports.map(|(_, server)| server)) {
        (Protocol::Tls, Some(993)) => Protocol::Imaps,
        (Protocol::Tls, Some(995)) => Protocol::Pops,
        (Protocol::Tls, Some(465)) => Protocol::Smtps,
        _ => protocol,
    }
}

/// Default give-up limits (packets with payload), as in the original work.
pub const GIVE_UP_TCP: u32 = 10;
pub const GIVE_UP_UDP: u32 = 8;

/// Classification state of one flow.
#[derive(Clone, Debug)]
pub struct FlowClassifier {
    l4: u8,
    /// Dissectors that said No (bit i = DISSECTORS[i]).
    excluded: u64,
    seen: u32,
    give_up: u32,
    /// Allocated at the first payload, freed once the flow is decided:
    /// decided flows (nearly all of a busy table) do not carry it.
    scratch: Option<Box<Scratch>>,
    result: Option<Classification>,
    /// Ports as (client, server) once known.
    ports: Option<(u16, u16)>,
    /// Decided, but an upgrade is still being looked for.
    refining: bool,
}

impl FlowClassifier {
    /// A classifier for a flow of transport protocol `l4`, giving up after
    /// `give_up` payload packets (see [`GIVE_UP_TCP`], [`GIVE_UP_UDP`]).
    pub fn new(l4: u8, give_up: u32) -> Self {
        let result = match l4 {
            PROTO_ICMP => Some(Protocol::Icmp),
            PROTO_ICMPV6 => Some(Protocol::Icmpv6),
            PROTO_IGMP => Some(Protocol::Igmp),
            PROTO_ESP | PROTO_AH => Some(Protocol::IpSec),
            _ => None,
        }
        .map(|protocol| Classification {
            protocol,
            confidence: Confidence::Dpi,
            dpi_packets: 1,
            ..Classification::default()
        });
        FlowClassifier {
            l4,
            excluded: 0,
            seen: 0,
            give_up,
            scratch: None,
            result,
            ports: None,
            refining: false,
        }
    }

    /// With the default give-up limit for the transport.
    pub fn for_transport(l4: u8) -> Self {
        FlowClassifier::new(
            l4,
            if l4 == PROTO_TCP {
                GIVE_UP_TCP
            } else {
                GIVE_UP_UDP
            },
        )
    }

    /// The decision, once there is one.
    pub fn result(&self) -> Option<&Classification> {
        self.result.as_ref()
    }

    /// Packets with payload looked at so far.
    pub fn packets_seen(&self) -> u32 {
        self.seen
    }

    /// Feeds one packet. Returns true once the flow is decided (a decided
    /// flow may still be refined, see [`FlowClassifier::wants_more`]).
    pub fn on_packet(
        &mut self,
        data: &[u8],
        from_client: bool,
        src_port: u16,
        dst_port: u16,
    ) -> bool {
        if self.refining {
            self.refine(data, from_client, src_port, dst_port);
            return true;
        }
        if self.result.is_some() {
            return true;
        }
        if self.ports.is_none() {
            self.ports = Some(if from_client {
                (src_port, dst_port)
            } else {
                (dst_port, src_port)
            });
        }
        if data.is_empty() {
            return false;
        }
        let payload = Payload {
            data,
            from_client,
            src_port,
            dst_port,
            index: self.seen,
            l4: self.l4,
        };
        self.seen += 1;
        let is_tcp = self.l4 == PROTO_TCP;
        let is_udp = self.l4 == PROTO_UDP;
        let mut pending = false;
        let scratch = self.scratch.get_or_insert_with(Box::default);
        for (i, entry) in DISSECTORS.iter().enumerate() {
            if self.excluded & (1 << i) != 0 || !((entry.tcp && is_tcp) || (entry.udp && is_udp)) {
                continue;
            }
            match (entry.dissect)(&payload, scratch) {
                Dissect::Match(protocol, host) => {
                    let protocol = tls_by_port(protocol, self.ports);
                    let info = std::mem::take(&mut scratch.info);
                    self.result = Some(Classification {
                        protocol,
                        confidence: Confidence::Dpi,
                        host,
                        dpi_packets: self.seen,
                        info,
                    });
                    self.refining = upgrade_of(protocol).is_some() && self.seen < self.give_up;
                    if !self.refining {
                        self.scratch = None;
                    }
                    return true;
                }
                Dissect::No => self.excluded |= 1 << i,
                Dissect::More => pending = true,
            }
        }
        // A dissector gathering a message across payloads (a request head,
        // a ClientHello, a DNS message over TCP) is not cut off by the
        // give-up limit: a client sending it a few bytes per segment would
        // otherwise get its flow named Unknown before it is read. Each such
        // buffer is bounded, so this ends.
        let gathering = !scratch.http_head.is_empty()
            || !scratch.tls_hello.is_empty()
            || !scratch.dns_tcp.is_empty();
        if !pending || (self.seen >= self.give_up && !gathering) {
            self.result = Some(self.guess());
            self.scratch = None;
            return true;
        }
        false
    }

    /// True while a decided flow is still being looked at for a refinement.
    pub fn wants_more(&self) -> bool {
        self.result.is_none() || self.refining
    }

    fn refine(&mut self, data: &[u8], from_client: bool, src_port: u16, dst_port: u16) {
        if data.is_empty() {
            return;
        }
        let Some(current) = self.result.as_ref().map(|r| r.protocol) else {
            return;
        };
        let Some((better, dissect)) = upgrade_of(current) else {
            self.refining = false;
            return;
        };
        let payload = Payload {
            data,
            from_client,
            src_port,
            dst_port,
            index: self.seen,
            l4: self.l4,
        };
        self.seen += 1;
        let scratch = self.scratch.get_or_insert_with(Box::default);
        if let Dissect::Match(_, host) = dissect(&payload, scratch) {
            let host = host.or_else(|| self.result.as_ref().and_then(|r| r.host.clone()));
            let mut info = self.result.take().map(|r| r.info).unwrap_or_default();
            let fresh = std::mem::take(&mut scratch.info);
            if fresh != AppInfo::default() {
                info = fresh;
            }
            self.result = Some(Classification {
                protocol: better,
                confidence: Confidence::Dpi,
                host,
                dpi_packets: self.seen,
                info,
            });
            self.refining = false;
            self.scratch = None;
        } else if self.seen >= self.give_up {
            self.refining = false;
            self.scratch = None;
        }
    }

    /// The decision now, whether or not the give-up limit was reached: the
    /// result if there is one, else a port guess (or Unknown).
    pub fn finish(&mut self) -> Classification {
        if self.result.is_none() {
            self.result = Some(self.guess());
        }
        self.result.clone().expect("set above")
    }

    /// Last resort. Only a flow that carried no payload at all (a lone SYN,
    /// an unanswered handshake) is guessed by port: when there was payload and
    /// no dissector recognised it, the port says little (DNSCrypt on UDP/443
    /// is not QUIC), so the answer is Unknown.
    fn guess(&self) -> Classification {
        let by_port = if self.seen > 0 {
            None
        } else {
            self.ports.and_then(|(client, server)| {
                port_guess(self.l4, server).or_else(|| port_guess(self.l4, client))
            })
        };
        match by_port {
            Some(protocol) => Classification {
                protocol,
                confidence: Confidence::Port,
                dpi_packets: self.seen,
                ..Classification::default()
            },
            None => Classification {
                dpi_packets: self.seen,
                ..Classification::default()
            },
        }
    }
}

/// The protocol usually found on a well-known port: a last resort only
/// (nDPI's default ports, so a flow without payload is guessed alike).
pub fn port_guess(l4: u8, port: u16) -> Option<Protocol> {
    use Protocol::*;
    let tcp = l4 == PROTO_TCP;
    Some(match (tcp, port) {
        (true, 80) => Http,
        (true, 8080 | 3128) => HttpProxy,
        (_, 443) => {
            if tcp {
                Tls
            } else {
                Quic
            }
        }
        (_, 53) => Dns,
        (false, 5353) => Mdns,
        (false, 5355) => Llmnr,
        (false, 67 | 68) => Dhcp,
        (false, 546 | 547) => Dhcpv6,
        (false, 123) => Ntp,
        (false, 161 | 162) => Snmp,
        (false, 514) | (true, 514 | 601 | 6514) => Syslog,
        (false, 1900) => Ssdp,
        (_, 137..=139) => NetBios,
        (_, 427) => Slp,
        (_, 3478) => Stun,
        (_, 5060 | 5061) => Sip,
        (true, 22) => Ssh,
        (true, 25 | 587) => Smtp,
        (true, 110) => Pop3,
        (true, 143) => Imap,
        (true, 21) => FtpControl,
        (true, 3389) => Rdp,
        (true, 445) => SmbV23,
        (_, 88) => Kerberos,
        (_, 389) => Ldap,
        (_, 1812 | 1813) => Radius,
        (_, 1194) => OpenVpn,
        (false, 51820) => WireGuard,
        (_, 500) | (false, 4500) => IpSec,
        (true, 1883) => Mqtt,
        (true, 5432) => PostgreSql,
        (true, 3306) => MySql,
        (true, 6379) => Redis,
        (true, 1433) => Tds,
        (true, 554) => Rtsp,
        (true, 1080) => Socks,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_name(p.name()), Some(*p));
        }
        assert_eq!(Protocol::Slp.name(), "Service_Location_Protocol");
    }

    /// A request head or ClientHello a few bytes per segment is read
    /// whole, however many segments it takes.
    #[test]
    fn a_message_being_gathered_is_not_given_up_on() {
        let mut c = FlowClassifier::new(PROTO_TCP, 3);
        for b in b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n" {
            c.on_packet(&[*b], true, 40000, 80);
        }
        let r = c.finish();
        assert_eq!(
            (r.protocol, r.host.as_deref()),
            (Protocol::Http, Some("a.test"))
        );
        let mut c = FlowClassifier::new(PROTO_TCP, 3);
        for piece in testbed::frames::tls_client_hello("b.test").chunks(5) {
            c.on_packet(piece, true, 40000, 443);
        }
        let r = c.finish();
        assert_eq!(
            (r.protocol, r.host.as_deref()),
            (Protocol::Tls, Some("b.test"))
        );
    }

    #[test]
    fn icmp_is_decided_without_payload() {
        let c = FlowClassifier::for_transport(PROTO_ICMP);
        assert_eq!(c.result().unwrap().protocol, Protocol::Icmp);
    }

    #[test]
    fn only_flows_without_payload_are_guessed_by_port() {
        let mut c = FlowClassifier::new(PROTO_TCP, 3);
        c.on_packet(&[], true, 40000, 3306);
        let r = c.finish();
        assert_eq!(r.confidence, Confidence::Port);
        assert_eq!(r.protocol, Protocol::MySql);
        let mut c = FlowClassifier::new(PROTO_TCP, 3);
        for _ in 0..3 {
            c.on_packet(
                &[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05],
                true,
                40000,
                3306,
            );
        }
        assert_eq!(
            c.finish().protocol,
            Protocol::Unknown,
            "payload nobody recognised is not guessed"
        );
        let mut c = FlowClassifier::new(PROTO_UDP, 2);
        c.on_packet(&[0xde, 0xad, 0xbe, 0xef], true, 40000, 40001);
        c.on_packet(&[0xde, 0xad, 0xbe, 0xef], false, 40001, 40000);
        assert_eq!(c.finish().protocol, Protocol::Unknown);
    }
}
