//! IPFIX export (`--ipfix HOST:PORT`, RFC 7011 over UDP): a record per
//! direction of every ended flow, and for flows that last, a record per
//! direction every active timeout with what it carried since the last one.
//!
//! Each flow gives two unidirectional records (client to server, server to
//! client; a direction that sent nothing gives none), tied together by
//! `biflowDirection` (239): 1 for the initiator's, 2 for the responder's.
//! Collectors that know nothing of RFC 5103 biflows (nfdump among them)
//! read them as two ordinary flows. The fields, all IANA standard
//! information elements:
//!
//! | IE | name | length |
//! |---:|---|---:|
//! | 8 / 27 | sourceIPv4Address / sourceIPv6Address | 4 / 16 |
//! | 12 / 28 | destinationIPv4Address / destinationIPv6Address | 4 / 16 |
//! | 7 | sourceTransportPort | 2 |
//! | 11 | destinationTransportPort | 2 |
//! | 4 | protocolIdentifier | 1 |
//! | 58 | vlanId | 2 |
//! | 1 | octetDeltaCount (layer 2 frame bytes, as the flow log counts) | 8 |
//! | 2 | packetDeltaCount | 8 |
//! | 152 | flowStartMilliseconds | 8 |
//! | 153 | flowEndMilliseconds | 8 |
//! | 136 | flowEndReason (1 idle, 2 active timeout, 3 end of flow, 4 forced, 5 lack of resources) | 1 |
//! | 239 | biflowDirection | 1 |
//! | 96 | applicationName: the nDPI protocol name (`HTTP`, `TLS`...) | variable |
//!
//! Templates 256 (IPv4) and 257 (IPv6) go in the first message and again
//! every [`TEMPLATE_REFRESH`] (RFC 7011 §8.4: a collector that started
//! later learns them). Messages stay under 1400 bytes (no IP
//! fragmentation on a 1500-byte path). Records the exporter cannot keep up
//! with are counted (`ipfix_dropped`), never queued without bound; a send
//! that fails is counted too (`ipfix_lost`).

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use dpi::{FlowKey, table::EndReason};

/// The most bytes of one message.
const MAX_MESSAGE: usize = 1400;
/// Templates are sent again this often.
pub const TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
/// A message with records is sent at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Records queued between the workers and the exporter.
const CHANNEL_CAPACITY: usize = 65_536;
/// The observation domain of every message.
pub const OBSERVATION_DOMAIN: u32 = 1;

const TEMPLATE_V4: u16 = 256;
const TEMPLATE_V6: u16 = 257;

/// (information element, length) of the template, after the addresses;
/// 65535 is a variable length.
const FIELDS: [(u16, u16); 11] = [
    (7, 2),
    (11, 2),
    (4, 1),
    (58, 2),
    (1, 8),
    (2, 8),
    (152, 8),
    (153, 8),
    (136, 1),
    (239, 1),
    (96, 65535),
];

/// Why a record is sent: flowEndReason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Idle = 1,
    Active = 2,
    EndOfFlow = 3,
    Forced = 4,
    LackOfResources = 5,
}

impl From<EndReason> for Reason {
    fn from(r: EndReason) -> Reason {
        match r {
            EndReason::Timeout => Reason::Idle,
            EndReason::Closed => Reason::EndOfFlow,
            EndReason::Shutdown => Reason::Forced,
            EndReason::Evicted => Reason::LackOfResources,
        }
    }
}

/// What a flow carried over one stretch of time, both directions.
#[derive(Clone, Debug)]
pub struct FlowExport {
    pub key: FlowKey,
    pub client_is_a: bool,
    /// Packets and bytes (to server, to client) in this stretch.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Milliseconds since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    pub reason: Reason,
    /// The nDPI name of the flow's protocol.
    pub application: &'static str,
}

/// Milliseconds since the Unix epoch of a wall-clock time.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Builds IPFIX messages: records are added until a message is full, then
/// it is handed out whole.
#[derive(Debug)]
pub struct Encoder {
    message: Vec<u8>,
    /// Offset of the open data set's header, and its template.
    open_set: Option<(usize, u16)>,
    /// Data records in `message`, and sent before it.
    records: u32,
    sequence: u32,
    last_templates: Option<Instant>,
    domain: u32,
}

impl Encoder {
    pub fn new(domain: u32) -> Self {
        Encoder {
            message: Vec::with_capacity(MAX_MESSAGE),
            open_set: None,
            records: 0,
            sequence: 0,
            last_templates: None,
            domain,
        }
    }

    /// Adds the records of `flow` (one per direction that carried
    /// packets); returns the messages that filled up, each with the number
    /// of records it holds.
    pub fn add(
        &mut self,
        flow: &FlowExport,
        export_secs: u32,
        now: Instant,
    ) -> Vec<(Vec<u8>, u32)> {
        let mut done = Vec::new();
        let (client, server) = if flow.client_is_a {
            (flow.key.a(), flow.key.b())
        } else {
            (flow.key.b(), flow.key.a())
        };
        for (dir, (src, dst)) in [(client, server), (server, client)].into_iter().enumerate() {
            if flow.packets[dir] == 0 {
                continue;
            }
            let record = self.record(flow, dir, src, dst);
            let template = if src.is_ipv4() {
                TEMPLATE_V4
            } else {
                TEMPLATE_V6
            };
            let set_header = if self.open_set.is_some_and(|(_, t)| t == template) {
                0
            } else {
                4
            };
            if !self.message.is_empty()
                && self.message.len() + set_header + record.len() > MAX_MESSAGE
            {
                done.extend(self.finish(export_secs));
            }
            if self.message.is_empty() {
                self.start(export_secs, now);
            }
            if self.open_set.is_none_or(|(_, t)| t != template) {
                self.close_set();
                self.open_set = Some((self.message.len(), template));
                self.message.extend_from_slice(&template.to_be_bytes());
                self.message.extend_from_slice(&[0, 0]);
            }
            self.message.extend_from_slice(&record);
            self.records += 1;
        }
        done
    }

    /// The message being filled, finished, with its number of records
    /// (None if it holds no record).
    pub fn finish(&mut self, export_secs: u32) -> Option<(Vec<u8>, u32)> {
        if self.records == 0 {
            return None;
        }
        self.close_set();
        let length = self.message.len() as u16;
        self.message[2..4].copy_from_slice(&length.to_be_bytes());
        self.message[4..8].copy_from_slice(&export_secs.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(self.records);
        let records = std::mem::take(&mut self.records);
        Some((std::mem::take(&mut self.message), records))
    }

    /// A message header (its length and time filled in by `finish`), and
    /// the templates when they are due.
    fn start(&mut self, export_secs: u32, now: Instant) {
        let m = &mut self.message;
        m.extend_from_slice(&10u16.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&export_secs.to_be_bytes());
        m.extend_from_slice(&self.sequence.to_be_bytes());
        m.extend_from_slice(&self.domain.to_be_bytes());
        if self
            .last_templates
            .is_none_or(|t| now.duration_since(t) >= TEMPLATE_REFRESH)
        {
            self.last_templates = Some(now);
            let set_at = m.len();
            m.extend_from_slice(&2u16.to_be_bytes());
            m.extend_from_slice(&[0, 0]);
            for (id, (src, dst, len)) in [(TEMPLATE_V4, (8, 12, 4)), (TEMPLATE_V6, (27, 28, 16))] {
                m.extend_from_slice(&id.to_be_bytes());
                m.extend_from_slice(&(FIELDS.len() as u16 + 2).to_be_bytes());
                for (ie, l) in [(src, len), (dst, len)].into_iter().chain(FIELDS) {
                    m.extend_from_slice(&u16::to_be_bytes(ie));
                    m.extend_from_slice(&u16::to_be_bytes(l));
                }
            }
            let set_len = (m.len() - set_at) as u16;
            m[set_at + 2..set_at + 4].copy_from_slice(&set_len.to_be_bytes());
        }
    }

    fn close_set(&mut self) {
        if let Some((at, _)) = self.open_set.take() {
            let len = (self.message.len() - at) as u16;
            self.message[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn record(&self, flow: &FlowExport, dir: usize, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        let mut r = Vec::with_capacity(96);
        for ip in [src.ip(), dst.ip()] {
            match ip {
                IpAddr::V4(a) => r.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => r.extend_from_slice(&a.octets()),
            }
        }
        let ports = matches!(flow.key.proto, 6 | 17 | 132);
        r.extend_from_slice(&(if ports { src.port() } else { 0 }).to_be_bytes());
        r.extend_from_slice(&(if ports { dst.port() } else { 0 }).to_be_bytes());
        r.push(flow.key.proto);
        r.extend_from_slice(&flow.key.vlan.to_be_bytes());
        r.extend_from_slice(&flow.bytes[dir].to_be_bytes());
        r.extend_from_slice(&flow.packets[dir].to_be_bytes());
        r.extend_from_slice(&flow.start_ms.to_be_bytes());
        r.extend_from_slice(&flow.end_ms.max(flow.start_ms).to_be_bytes());
        r.push(flow.reason as u8);
        r.push(if dir == 0 { 1 } else { 2 });
        // a variable-length string shorter than 255 bytes: one length byte
        let name = &flow.application.as_bytes()[..flow.application.len().min(254)];
        r.push(name.len() as u8);
        r.extend_from_slice(name);
        r
    }
}

/// The sending side, one clone per worker.
pub type IpfixSender = Sender<FlowExport>;

/// The exporter thread.
pub struct Exporter {
    handle: thread::JoinHandle<u64>,
    lost: Arc<AtomicU64>,
}

impl Exporter {
    /// Resolves `target` (`HOST:PORT`) and starts the exporter. Fails
    /// before anything is attached if the address is not one.
    pub fn start(target: &str) -> anyhow::Result<(Exporter, IpfixSender)> {
        let address = target
            .to_socket_addrs()
            .with_context(|| format!("--ipfix: `{target}` is not a HOST:PORT to export to"))?
            .next()
            .with_context(|| format!("--ipfix: `{target}` resolves to no address"))?;
        let bind: SocketAddr = if address.is_ipv4() {
            "0.0.0.0:0".parse().expect("an address")
        } else {
            "[::]:0".parse().expect("an address")
        };
        let socket = UdpSocket::bind(bind).context("--ipfix: open a UDP socket")?;
        socket
            .connect(address)
            .with_context(|| format!("--ipfix: cannot send to {address}"))?;
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let lost = Arc::new(AtomicU64::new(0));
        let lost_in = Arc::clone(&lost);
        let handle = thread::Builder::new()
            .name("dp-ipfix".into())
            .spawn(move || run(socket, address, rx, &lost_in))
            .context("spawn the IPFIX exporter")?;
        Ok((Exporter { handle, lost }, tx))
    }

    /// Records whose message could not be sent.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Waits for the exporter to send what it has (every sender must be
    /// dropped first); returns the records sent and lost.
    pub fn finish(self) -> anyhow::Result<(u64, u64)> {
        let sent = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the IPFIX exporter panicked"))?;
        Ok((sent, self.lost.load(Ordering::Relaxed)))
    }
}

fn run(socket: UdpSocket, to: SocketAddr, rx: Receiver<FlowExport>, lost: &AtomicU64) -> u64 {
    let mut encoder = Encoder::new(OBSERVATION_DOMAIN);
    let mut sent = 0u64;
    let mut failing = false;
    let mut send = |(message, records): (Vec<u8>, u32)| match socket.send(&message) {
        Ok(_) => {
            sent += u64::from(records);
            if failing {
                failing = false;
                tracing::info!(%to, "IPFIX: sending again");
            }
        }
        Err(error) => {
            lost.fetch_add(u64::from(records), Ordering::Relaxed);
            if !failing {
                failing = true;
                tracing::warn!(%to, %error, "IPFIX: cannot send; records are counted as lost (ipfix_lost) until it can");
            }
        }
    };
    let secs = || epoch_ms(SystemTime::now()).div_euclid(1000) as u32;
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(flow) => {
                for full in encoder.add(&flow, secs(), Instant::now()) {
                    send(full);
                }
                if rx.is_empty() {
                    encoder.finish(secs()).map(&mut send);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                encoder.finish(secs()).map(&mut send);
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    encoder.finish(secs()).map(&mut send);
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(sport: u16, packets: [u64; 2]) -> FlowExport {
        let (key, _) = FlowKey::new(
            SocketAddr::new("198.18.1.9".parse().unwrap(), sport),
            "198.18.1.2:80".parse().unwrap(),
            6,
            0,
        );
        FlowExport {
            key,
            client_is_a: false,
            packets,
            bytes: [packets[0] * 100, packets[1] * 1000],
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_001_500,
            reason: Reason::EndOfFlow,
            application: "HTTP",
        }
    }

    /// Walks a message: (set id, set bytes) of each set; checks lengths.
    fn sets(m: &[u8]) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10, "version");
        assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
        let mut at = 16;
        let mut out = Vec::new();
        while at < m.len() {
            let id = u16::from_be_bytes([m[at], m[at + 1]]);
            let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
            assert!(len >= 4 && at + len <= m.len(), "set length");
            out.push((id, m[at + 4..at + len].to_vec()));
            at += len;
        }
        out
    }

    #[test]
    fn a_flow_gives_a_record_per_direction_after_the_templates() {
        let mut e = Encoder::new(7);
        let now = Instant::now();
        assert!(e.add(&flow(40000, [3, 2]), 1_700_000_002, now).is_empty());
        let (m, records) = e.finish(1_700_000_002).unwrap();
        assert_eq!(records, 2);
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            0,
            "sequence"
        );
        assert_eq!(
            u32::from_be_bytes(m[12..16].try_into().unwrap()),
            7,
            "domain"
        );
        let first = sets(&m);
        assert_eq!(first[0].0, 2, "the template set first");
        assert_eq!(first[1].0, TEMPLATE_V4);
        let data = &first[1].1;
        // two records of 4+4+2+2+1+2+8+8+8+8+1+1 + 1+4 ("HTTP") bytes
        let one = 4 + 4 + 2 + 2 + 1 + 2 + 8 + 8 + 8 + 8 + 1 + 1 + 5;
        assert_eq!(data.len(), 2 * one);
        // the client's record: 198.18.1.9:40000 -> 198.18.1.2:80, 3 packets, 300 bytes
        assert_eq!(&data[..8], &[198, 18, 1, 9, 198, 18, 1, 2]);
        assert_eq!(u16::from_be_bytes([data[8], data[9]]), 40000);
        assert_eq!(u64::from_be_bytes(data[15..23].try_into().unwrap()), 300);
        assert_eq!(u64::from_be_bytes(data[23..31].try_into().unwrap()), 3);
        assert_eq!((data[47], data[48]), (3, 1), "end of flow, initiator");
        assert_eq!(&data[49..54], b"\x04HTTP");
        // the server's
        assert_eq!(&data[one..one + 8], &[198, 18, 1, 2, 198, 18, 1, 9]);
        assert_eq!(data[one + 48], 2, "reverse initiator");
        // the next message: no templates (refreshed later), sequence counted
        e.add(&flow(40001, [1, 0]), 1_700_000_003, now);
        let (m, _) = e.finish(1_700_000_003).unwrap();
        assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), 2);
        let second = sets(&m);
        assert_eq!(second.len(), 1);
        assert_eq!(
            second[0].1.len(),
            one,
            "a direction without packets gives no record"
        );
        // after the refresh time, the templates again
        e.add(&flow(40002, [1, 1]), 0, now + TEMPLATE_REFRESH);
        assert_eq!(sets(&e.finish(0).unwrap().0)[0].0, 2);
    }

    #[test]
    fn messages_stay_under_the_limit_and_carry_every_record() {
        let mut e = Encoder::new(1);
        let now = Instant::now();
        let mut messages = Vec::new();
        for i in 0..100 {
            messages.extend(e.add(&flow(40000 + i, [1, 1]), 0, now));
        }
        messages.extend(e.finish(0));
        assert!(messages.len() > 1);
        let mut records = 0;
        let counted: u32 = messages.iter().map(|(_, n)| n).sum();
        assert_eq!(counted, 200);
        for (m, _) in &messages {
            assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
            for (id, body) in sets(m) {
                if id == TEMPLATE_V4 {
                    records += body.len() / 54;
                }
            }
        }
        assert_eq!(records, 200);
    }
}
