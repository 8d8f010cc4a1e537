//! `dataplane inspect FILE...`: the DPI engine over captures, offline.
//!
//! Reads pcap (microsecond and nanosecond) and pcapng, any link type `dpi`
//! decodes, groups packets into direction-independent flows, classifies each
//! flow with the same engine the workers use, and reports one line per flow.
//! A truncated or corrupt file is reported with the byte offset where reading
//! stopped, after what was read before it.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use dpi::{Classification, FlowClassifier, FlowKey, LinkType};
use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;
use thiserror::Error;

/// Why a capture could not be read to its end.
#[derive(Debug, Error)]
pub enum InspectError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a pcap or pcapng file (magic {magic:02x?})")]
    NotACapture { path: PathBuf, magic: [u8; 4] },
    #[error(
        "{path}: unreadable at byte offset {offset}: {reason} ({packets} packets were read before it)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
        packets: u64,
    },
}

/// One flow of a capture, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct FlowRecord {
    /// The side that sent the flow's first packet, `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
    pub src: String,
    pub dst: String,
    pub l4: String,
    pub protocol: String,
    pub confidence: String,
    pub host: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets with payload looked at before the protocol was decided.
    pub dpi_packets: u32,
    pub verdict: String,
    pub sids: Vec<u32>,
    #[serde(skip)]
    pub key: FlowKey,
}

/// Totals of one inspection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub files: usize,
    pub packets: u64,
    pub bytes: u64,
    pub flows: usize,
    /// Frames without a flow (not IP, fragments, malformed, unknown link type).
    pub skipped_frames: u64,
    pub seconds: f64,
    pub packets_per_second: f64,
}

struct FlowState {
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
    packets: u64,
    bytes: u64,
    classifier: FlowClassifier,
    order: usize,
}

/// The flows of a set of captures, in order of first appearance.
#[derive(Default)]
pub struct Inspection {
    flows: HashMap<FlowKey, FlowState>,
    next_order: usize,
    summary: Summary,
}

/// Counts the bytes a reader has handed out, so errors can say where.
struct Counting<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl Inspection {
    pub fn new() -> Self {
        Inspection::default()
    }

    /// Feeds one frame of link type `link`.
    pub fn frame(&mut self, link: Option<LinkType>, frame: &[u8], wire_len: u32) {
        self.summary.packets += 1;
        self.summary.bytes += u64::from(wire_len);
        let Some(link) = link else {
            self.summary.skipped_frames += 1;
            return;
        };
        let decoded = match dpi::link::decode(link, frame) {
            Ok(d) => d,
            Err(_) => {
                self.summary.skipped_frames += 1;
                return;
            }
        };
        let next_order = &mut self.next_order;
        let flow = self.flows.entry(decoded.key).or_insert_with(|| {
            let (a, b) = (decoded.key.a(), decoded.key.b());
            let (client, server) = if decoded.from_a { (a, b) } else { (b, a) };
            *next_order += 1;
            FlowState {
                client,
                server,
                packets: 0,
                bytes: 0,
                classifier: FlowClassifier::for_transport(decoded.key.proto),
                order: *next_order,
            }
        });
        flow.packets += 1;
        flow.bytes += u64::from(wire_len);
        let from_client = if decoded.from_a {
            decoded.key.a() == flow.client
        } else {
            decoded.key.b() == flow.client
        };
        let (src_port, dst_port) = if from_client {
            (flow.client.port(), flow.server.port())
        } else {
            (flow.server.port(), flow.client.port())
        };
        let end = decoded.payload_offset + decoded.payload_len;
        if let Some(payload) = frame.get(decoded.payload_offset..end) {
            flow.classifier
                .on_packet(payload, from_client, src_port, dst_port);
        }
    }

    /// Reads a whole pcap or pcapng file.
    pub fn read_file(&mut self, path: &Path) -> Result<(), InspectError> {
        self.summary.files += 1;
        let open = |source| InspectError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(open)?;
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).map_err(open)?;
        let file = File::open(path).map_err(open)?;
        let mut reader = Counting {
            inner: BufReader::with_capacity(1 << 20, file),
            offset: 0,
        };
        let before = self.summary.packets;
        let corrupt = |offset: u64, reason: String, packets: u64| InspectError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
            packets,
        };
        match magic {
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => {
                let mut pcap =
                    PcapReader::new(&mut reader).map_err(|e| corrupt(0, e.to_string(), 0))?;
                let link = LinkType::from_linktype(u32::from(pcap.header().datalink));
                while let Some(packet) = pcap.next_packet() {
                    match packet {
                        Ok(p) => self.frame(link, &p.data, p.orig_len),
                        Err(e) => {
                            let offset = pcap.into_reader().offset;
                            return Err(corrupt(
                                offset,
                                e.to_string(),
                                self.summary.packets - before,
                            ));
                        }
                    }
                }
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let mut ng =
                    PcapNgReader::new(&mut reader).map_err(|e| corrupt(0, e.to_string(), 0))?;
                // Link type of each interface of the current section, by interface id.
                let mut interfaces: Vec<Option<LinkType>> = Vec::new();
                loop {
                    let block = match ng.next_block() {
                        None => break,
                        Some(Ok(b)) => b,
                        Some(Err(e)) => {
                            let offset = ng.into_inner().offset;
                            return Err(corrupt(
                                offset,
                                e.to_string(),
                                self.summary.packets - before,
                            ));
                        }
                    };
                    match block {
                        Block::SectionHeader(_) => interfaces.clear(),
                        Block::InterfaceDescription(idb) => interfaces.push(link_of(idb.linktype)),
                        Block::EnhancedPacket(epb) => {
                            let link = interfaces.get(epb.interface_id as usize).copied().flatten();
                            self.frame(link, &epb.data, epb.original_len);
                        }
                        Block::SimplePacket(spb) => {
                            let link = interfaces.first().copied().flatten();
                            self.frame(link, &spb.data, spb.original_len);
                        }
                        _ => {}
                    }
                }
            }
            magic => {
                return Err(InspectError::NotACapture {
                    path: path.to_path_buf(),
                    magic,
                });
            }
        }
        Ok(())
    }

    /// Decides every flow still undecided and returns the records in order
    /// of first appearance, with the totals.
    pub fn finish(mut self, elapsed: Duration) -> (Vec<FlowRecord>, Summary) {
        let mut flows: Vec<(FlowKey, FlowState)> = self.flows.drain().collect();
        flows.sort_by_key(|(_, f)| f.order);
        let records: Vec<FlowRecord> = flows
            .into_iter()
            .map(|(key, mut f)| {
                let c: Classification = f.classifier.finish();
                FlowRecord {
                    src: f.client.to_string(),
                    dst: f.server.to_string(),
                    l4: key.l4_name(),
                    protocol: c.protocol.name().to_string(),
                    confidence: c.confidence.name().to_string(),
                    host: c.host,
                    packets: f.packets,
                    bytes: f.bytes,
                    dpi_packets: c.dpi_packets,
                    verdict: "allow".to_string(),
                    sids: Vec::new(),
                    key,
                }
            })
            .collect();
        self.summary.flows = records.len();
        self.summary.seconds = elapsed.as_secs_f64();
        self.summary.packets_per_second =
            self.summary.packets as f64 / self.summary.seconds.max(1e-9);
        (records, self.summary)
    }
}

fn link_of(link: DataLink) -> Option<LinkType> {
    LinkType::from_linktype(u32::from(link))
}

/// Output format of `dataplane inspect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Runs `dataplane inspect`: prints the flows, then the summary. Returns an
/// error (after printing what was read) if a file could not be read to its end.
pub fn run(files: &[PathBuf], format: Format) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut inspection = Inspection::new();
    let mut failure = None;
    for path in files {
        if let Err(e) = inspection.read_file(path) {
            failure = Some(e);
            break;
        }
    }
    let (records, summary) = inspection.finish(started.elapsed());
    match format {
        Format::Json => {
            for r in &records {
                println!("{}", serde_json::to_string(r)?);
            }
            eprintln!("{}", serde_json::to_string(&summary)?);
        }
        Format::Table => {
            println!(
                "{:<4} {:<46} {:<46} {:<5} {:<26} {:<40} {:>8} {:>10} {:>4} {:<7}",
                "#", "src", "dst", "l4", "protocol", "host", "packets", "bytes", "dpi", "verdict"
            );
            for (i, r) in records.iter().enumerate() {
                let protocol = if r.confidence == "port" {
                    format!("{} (by port)", r.protocol)
                } else {
                    r.protocol.clone()
                };
                println!(
                    "{:<4} {:<46} {:<46} {:<5} {:<26} {:<40} {:>8} {:>10} {:>4} {:<7}",
                    i + 1,
                    r.src,
                    r.dst,
                    r.l4,
                    protocol,
                    r.host.as_deref().unwrap_or("-"),
                    r.packets,
                    r.bytes,
                    r.dpi_packets,
                    r.verdict
                );
            }
            println!(
                "\n{} file(s), {} packets, {} bytes, {} flows, {} frames without a flow, {:.3} s, {:.0} packets/s",
                summary.files,
                summary.packets,
                summary.bytes,
                summary.flows,
                summary.skipped_frames,
                summary.seconds,
                summary.packets_per_second
            );
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
