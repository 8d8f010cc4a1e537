//! `dataplane inspect FILE...`: the DPI engine over captures, offline.
//!
//! Reads pcap (microsecond and nanosecond) and pcapng, any link type `dpi`
//! decodes, groups packets into direction-independent flows, classifies each
//! flow with the same engine the workers use, and reports one line per flow.
//! A truncated or corrupt file is reported with the byte offset where reading
//! stopped, after what was read before it.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    net::SocketAddr,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use dpi::{
    FlowKey, LinkType,
    engine::{FlowState, FlowSummary, FlowTable, InspectDecider, PacketCount},
    policy::Engine,
    table::{EndReason, Timeouts},
};

use crate::eve::EveContext;

use pcap_file::{
    DataLink, TsResolution,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
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

/// One flow of a capture, as reported: the live flow log's fields and
/// spellings (`dpi::engine::FlowSummary`), less what only a live run knows
/// (kernel counters, queue, wall-clock times).
#[derive(Clone, Debug, Serialize)]
pub struct FlowRecord {
    #[serde(flatten)]
    pub flow: FlowSummary,
    pub packets: u64,
    pub bytes: u64,
    pub reason: EndReason,
    #[serde(skip)]
    pub key: FlowKey,
}

impl FlowRecord {
    /// The client side, `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
    pub fn client(&self) -> SocketAddr {
        SocketAddr::new(self.flow.src, self.flow.sport)
    }

    pub fn server(&self) -> SocketAddr {
        SocketAddr::new(self.flow.dst, self.flow.dport)
    }
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
    /// Flows evicted to keep the table within --max-flows.
    pub evicted_flows: u64,
    pub seconds: f64,
    pub packets_per_second: f64,
}

/// How often (in packets) idle flows are looked for.
const EXPIRE_EVERY: u64 = 4096;

/// The flows of a set of captures, handed to a sink as each one ends: the
/// live workers' flow table and decider (`dpi::engine`), with capture time
/// for the clock and no kernel to hand flows to.
pub struct Inspection<'s> {
    flows: FlowTable<InspectDecider>,
    timeouts: Timeouts,
    summary: Summary,
    now_ns: u64,
    sink: Box<dyn FnMut(FlowRecord) + 's>,
    /// `--eve`: where the events go, and what they share.
    eve: Option<(EveContext, EveSink<'s>)>,
}

/// Where `dataplane inspect --eve` sends its events.
type EveSink<'s> = Box<dyn FnMut(crate::eve::Event) + 's>;

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

impl<'s> Inspection<'s> {
    /// At most `max_flows` flows are tracked at once; each ended flow goes to `sink`.
    pub fn new(
        engine: Arc<Engine>,
        max_flows: NonZeroUsize,
        timeouts: Timeouts,
        sink: impl FnMut(FlowRecord) + 's,
    ) -> Self {
        // A capture taken on a host holds what it sent with the checksum
        // left to the NIC: checksums are not checked offline.
        let decider = InspectDecider::new(PacketCount { limit: None }, Some(engine), false);
        Inspection {
            flows: FlowTable::new(max_flows, decider),
            timeouts,
            summary: Summary::default(),
            now_ns: 0,
            sink: Box::new(sink),
            eve: None,
        }
    }

    /// Also writes eve events (`alert` as rules fire, `flow` as flows
    /// end, with capture time) to `sink`. Offline nothing is enforced:
    /// alerts are `allowed` and there are no `drop` events.
    pub fn with_eve(mut self, sink: impl FnMut(crate::eve::Event) + 's) -> Self {
        self.flows.decider_mut().collect_alerts = true;
        let context = EveContext {
            in_iface: None,
            enforcing: false,
            clock: crate::flowlog::WallClock::epoch(),
        };
        self.eve = Some((context, Box::new(sink)));
        self
    }

    /// Feeds one frame of link type `link`, captured at `ts_ns`.
    pub fn frame(&mut self, link: Option<LinkType>, frame: &[u8], wire_len: u32, ts_ns: u64) {
        self.summary.packets += 1;
        self.summary.bytes += u64::from(wire_len);
        self.now_ns = self.now_ns.max(ts_ns);
        if self.summary.packets.is_multiple_of(EXPIRE_EVERY) {
            for (key, flow, reason) in self.flows.expire_idle(&self.timeouts, self.now_ns) {
                self.emit(key, flow, reason);
            }
        }
        let Some(link) = link else {
            self.summary.skipped_frames += 1;
            return;
        };
        // Through tunnels: the inner flow, as nDPI reports it.
        // (a frame cut at a snap length still gives its headers)
        let cut = wire_len as usize > frame.len();
        let Ok(decoded) = dpi::link::decode_inner(link, frame, cut) else {
            self.summary.skipped_frames += 1;
            return;
        };
        let seen = self
            .flows
            .on_packet(&decoded, frame, wire_len as usize, self.now_ns);
        if let Some((key, flow)) = seen.evicted {
            self.summary.evicted_flows += 1;
            self.emit(key, flow, EndReason::Evicted);
        }
        if let Some((context, sink)) = &mut self.eve {
            let alerts = std::mem::take(&mut self.flows.decider_mut().alerts);
            let transactions = std::mem::take(&mut self.flows.decider_mut().transactions);
            if let Some(flow) = self.flows.get(&decoded.key) {
                for tx in &transactions {
                    sink(crate::eve::transaction(
                        context,
                        &decoded.key,
                        flow,
                        decoded.from_a,
                        self.now_ns,
                        tx,
                    ));
                }
                for alert in &alerts {
                    if let Some(event) = crate::eve::alert(
                        context,
                        &decoded.key,
                        flow,
                        decoded.from_a,
                        self.now_ns,
                        alert,
                    ) {
                        sink(event);
                    }
                }
            }
        }
    }

    fn emit(&mut self, key: FlowKey, mut flow: FlowState, reason: EndReason) {
        self.summary.flows += 1;
        if let Some((context, sink)) = &mut self.eve {
            sink(crate::eve::flow(
                context,
                &key,
                &flow,
                None,
                reason,
                flow.last_ns,
            ));
        }
        (self.sink)(FlowRecord {
            flow: flow.summary(&key),
            packets: u64::from(flow.packets),
            bytes: flow.bytes,
            reason,
            key,
        });
    }

    /// Reads a whole pcap or pcapng file.
    pub fn read_file(&mut self, path: &Path) -> Result<(), InspectError> {
        self.summary.files += 1;
        let open = |source| InspectError::Open {
            path: path.to_path_buf(),
            source,
        };
        // `-` is standard input (a pipe from tcpdump -w -, say).
        let mut input: Box<dyn Read> = if path == Path::new("-") {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(path).map_err(open)?)
        };
        // The magic is read, then put back in front of the rest: the
        // readers want it, and standard input cannot be opened twice.
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic).map_err(open)?;
        let mut reader = Counting {
            inner: BufReader::with_capacity(1 << 20, io::Cursor::new(magic).chain(input)),
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
                let tick_ns = match pcap.header().ts_resolution {
                    TsResolution::MicroSecond => 1_000,
                    TsResolution::NanoSecond => 1,
                };
                // Raw records: pcap-file's checked ones refuse a packet
                // longer on the wire than the snap length, which is what a
                // snap length makes (tcpdump -s).
                while let Some(packet) = pcap.next_raw_packet() {
                    match packet {
                        Ok(p) => {
                            let ns = u64::from(p.ts_sec) * 1_000_000_000
                                + u64::from(p.ts_frac) * tick_ns;
                            let wire = p.orig_len.max(p.data.len() as u32);
                            self.frame(link, &p.data, wire, ns)
                        }
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
                // Link type and time unit of each interface of the current
                // section, by interface id.
                let mut interfaces: Vec<(Option<LinkType>, TsUnit)> = Vec::new();
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
                        Block::InterfaceDescription(idb) => {
                            let unit = idb
                                .options
                                .iter()
                                .find_map(|o| match o {
                                    InterfaceDescriptionOption::IfTsResol(r) => Some(TsUnit(*r)),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            interfaces.push((link_of(idb.linktype), unit));
                        }
                        Block::EnhancedPacket(epb) => {
                            let (link, unit) = interfaces
                                .get(epb.interface_id as usize)
                                .copied()
                                .unwrap_or((None, TsUnit::default()));
                            // pcap-file hands the raw timestamp as if it
                            // counted nanoseconds, whatever the interface's
                            // if_tsresol says
                            let ticks = epb.timestamp.as_nanos() as u64;
                            self.frame(link, &epb.data, epb.original_len, unit.to_ns(ticks));
                        }
                        Block::SimplePacket(spb) => {
                            let link = interfaces.first().and_then(|(link, _)| *link);
                            self.frame(link, &spb.data, spb.original_len, self.now_ns);
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

    /// Ends every flow still in the table (reason `shutdown`) and returns the totals.
    pub fn finish(mut self, elapsed: Duration) -> Summary {
        for key in self.flows.keys() {
            if let Some(flow) = self.flows.remove(&key) {
                self.emit(key, flow, EndReason::Shutdown);
            }
        }
        self.summary.seconds = elapsed.as_secs_f64();
        self.summary.packets_per_second =
            self.summary.packets as f64 / self.summary.seconds.max(1e-9);
        self.summary.clone()
    }
}

/// A pcapng interface's time unit, its `if_tsresol` option (RFC draft
/// pcapng §4.2): 10^-n seconds, or 2^-n with the top bit set; microseconds
/// when the option is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TsUnit(u8);

impl Default for TsUnit {
    fn default() -> Self {
        TsUnit(6)
    }
}

impl TsUnit {
    fn to_ns(self, ticks: u64) -> u64 {
        let exp = u32::from(self.0 & 0x7f);
        let ns = if self.0 & 0x80 != 0 {
            (u128::from(ticks) * 1_000_000_000) >> exp.min(127)
        } else if exp <= 9 {
            u128::from(ticks) * 10u128.pow(9 - exp)
        } else {
            u128::from(ticks) / 10u128.pow((exp - 9).min(38))
        };
        u64::try_from(ns).unwrap_or(u64::MAX)
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

/// Runs `dataplane inspect`: prints each flow as it ends, then the summary.
/// Returns an error (after printing what was read) if a file could not be
/// read to its end.
pub fn run(
    files: &[PathBuf],
    format: Format,
    max_flows: NonZeroUsize,
    engine: Arc<Engine>,
    eve: Option<&Path>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let started = Instant::now();
    let mut eve_out = match eve {
        Some(path) => Some(io::BufWriter::new(File::create(path).map_err(|e| {
            anyhow::anyhow!("--eve: cannot create {}: {e}", path.display())
        })?)),
        None => None,
    };
    let mut eve_error = None;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if format == Format::Table {
        writeln!(
            out,
            "{:<46} {:<46} {:<5} {:<26} {:<40} {:>8} {:>10} {:>4} {:<12} sids",
            "src", "dst", "l4", "protocol", "host", "packets", "bytes", "dpi", "verdict"
        )?;
    }
    let mut write_error = None;
    let mut inspection =
        Inspection::new(engine, max_flows, Timeouts::default(), |r: FlowRecord| {
            let line = match format {
                Format::Json => serde_json::to_string(&r)
                    .map_err(io::Error::other)
                    .and_then(|j| writeln!(out, "{j}")),
                Format::Table => {
                    let label = &r.flow.label;
                    let protocol = if label.confidence == "port" {
                        format!("{} (by port)", label.protocol)
                    } else {
                        label.protocol.to_string()
                    };
                    writeln!(
                        out,
                        "{:<46} {:<46} {:<5} {:<26} {:<40} {:>8} {:>10} {:>4} {:<12} {}",
                        r.client().to_string(),
                        r.server().to_string(),
                        r.flow.l4,
                        protocol,
                        label.host.as_deref().unwrap_or("-"),
                        r.packets,
                        r.bytes,
                        label.dpi_packets,
                        r.flow.verdict,
                        label
                            .sids
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
            };
            if let Err(e) = line {
                write_error.get_or_insert(e);
            }
        });
    if let Some(out) = eve_out.as_mut() {
        inspection = inspection.with_eve(|event| {
            let written = serde_json::to_writer(&mut *out, &event)
                .map_err(io::Error::other)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(e) = written {
                eve_error.get_or_insert(e);
            }
        });
    }
    // One unreadable file is reported and the others are still read; the
    // exit status says that one failed.
    let mut failures = Vec::new();
    for path in files {
        if let Err(e) = inspection.read_file(path) {
            eprintln!("dataplane inspect: {e}");
            failures.push(e);
        }
    }
    let summary = inspection.finish(started.elapsed());
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("write the flow records"));
    }
    if let Some(e) = eve_error {
        return Err(anyhow::Error::new(e).context("write the eve events"));
    }
    if let Some(mut out) = eve_out {
        anyhow::Context::context(out.flush(), "write the eve events")?;
    }
    match format {
        Format::Json => eprintln!("{}", serde_json::to_string(&summary)?),
        Format::Table => writeln!(
            out,
            "\n{} file(s), {} packets, {} bytes, {} flows ({} evicted for room), {} frames without a flow, {:.3} s, {:.0} packets/s",
            summary.files,
            summary.packets,
            summary.bytes,
            summary.flows,
            summary.evicted_flows,
            summary.skipped_frames,
            summary.seconds,
            summary.packets_per_second
        )?,
    }
    out.flush()?;
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0).into()),
        n => Err(anyhow::anyhow!(
            "{n} of {} files could not be read to their end (each reported above)",
            files.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::TsUnit;

    /// A capture taken with a snap length (caplen < len): the frames are
    /// read by their headers, not skipped, and the flow counts what was sent.
    #[test]
    fn frames_cut_at_a_snap_length_are_read() {
        use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
        let frame = testbed::frames::Packet::udp(
            testbed::frames::ip("198.18.0.1"),
            40000,
            testbed::frames::ip("198.18.0.2"),
            53,
        )
        .with_payload(&testbed::frames::dns_query("cut.example"))
        .build();
        let dir = std::env::temp_dir().join(format!("inspect-cut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cut.pcap");
        let header = PcapHeader {
            snaplen: 48,
            ..PcapHeader::default()
        };
        let mut writer =
            PcapWriter::with_header(std::fs::File::create(&path).unwrap(), header).unwrap();
        let packet = PcapPacket::new(
            std::time::Duration::from_secs(1),
            frame.len() as u32,
            &frame[..48],
        );
        writer.write_packet(&packet).unwrap();
        drop(writer);
        let mut records = Vec::new();
        let mut inspection = super::Inspection::new(
            std::sync::Arc::new(dpi::policy::Engine::default()),
            std::num::NonZeroUsize::new(16).unwrap(),
            dpi::table::Timeouts::default(),
            |r| records.push(r),
        );
        inspection.read_file(&path).unwrap();
        let summary = inspection.finish(std::time::Duration::from_secs(1));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(summary.skipped_frames, 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].bytes, frame.len() as u64);
        assert_eq!(records[0].flow.dport, 53);
    }

    #[test]
    fn pcapng_time_units() {
        // absent option: microseconds
        assert_eq!(TsUnit::default().to_ns(1_500_000), 1_500_000_000);
        assert_eq!(TsUnit(9).to_ns(42), 42);
        assert_eq!(TsUnit(3).to_ns(2), 2_000_000);
        // 2^-10 s
        assert_eq!(TsUnit(0x80 | 10).to_ns(1024), 1_000_000_000);
        // finer than nanoseconds
        assert_eq!(TsUnit(12).to_ns(5_000), 5);
    }
}
