//! Flow lifecycle: idle timeouts, and the record written when a flow ends
//! (`--flow-log PATH`, JSON Lines in the spirit of Suricata's eve `flow`
//! events).
//!
//! Workers build [`FlowRecord`]s and hand them to one writer thread over a
//! bounded crossbeam channel, so no worker ever blocks on a file. When the
//! writer falls behind, records are dropped and counted
//! (`flow_log_dropped`), never queued without bound; records the file
//! refuses (a full disk) are counted too (`flow_log_lost`), and the file
//! never ends in half a record.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

/// Records queued between the workers and the writer.
const CHANNEL_CAPACITY: usize = 65_536;
/// The writer flushes at least this often while records arrive.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

pub use dpi::table::EndReason;

/// One ended flow, as the flow log writes it.
#[derive(Clone, Debug, Serialize)]
pub struct FlowRecord {
    pub event_type: &'static str,
    /// RFC 3339, UTC.
    pub start: String,
    pub end: String,
    /// Addresses, protocol, label and verdict: the fields and spellings of
    /// `dataplane inspect` (`dpi::engine::FlowSummary`).
    #[serde(flatten)]
    pub flow: dpi::engine::FlowSummary,
    /// What the kernel did with the rest of the flow: `"pass"`,
    /// `"forward"`, `"drop"`; None when undecided.
    pub kernel_action: Option<&'static str>,
    /// Packets and bytes of the flow seen in user space.
    pub user_packets: u64,
    pub user_bytes: u64,
    /// Packets and bytes handled by XDP after the verdict.
    pub kernel_packets: u64,
    pub kernel_bytes: u64,
    pub reason: EndReason,
    /// The worker (RX queue) that saw the flow.
    pub queue: u32,
    /// Only one direction of the flow reached this queue; the other went to
    /// another queue, whose worker decided it (asymmetric RSS hashing).
    pub split: bool,
    /// Load balancer with inspection: the backend the flow was balanced to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<std::net::IpAddr>,
}

pub use dpi::engine::l4_name;

/// Converts CLOCK_MONOTONIC nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// Wall time at monotonic zero.
    origin: SystemTime,
}

impl WallClock {
    /// Captures the offset between the two clocks now.
    pub fn new(monotonic_now_ns: u64) -> Self {
        WallClock {
            origin: SystemTime::now() - Duration::from_nanos(monotonic_now_ns),
        }
    }

    /// A clock whose instants already are wall-clock time (nanoseconds
    /// since the Unix epoch): a capture's timestamps.
    pub fn epoch() -> Self {
        WallClock {
            origin: SystemTime::UNIX_EPOCH,
        }
    }

    /// The wall-clock time of a CLOCK_MONOTONIC instant.
    pub fn at(&self, monotonic_ns: u64) -> SystemTime {
        self.origin + Duration::from_nanos(monotonic_ns)
    }

    /// RFC 3339 (UTC, microseconds) of a CLOCK_MONOTONIC instant.
    pub fn rfc3339(&self, monotonic_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.at(monotonic_ns)).to_string()
    }

    /// The same as Suricata writes it in eve.json: `+0000` instead of `Z`
    /// (`2026-12-05T23:01:02.123456+0000`).
    pub fn eve(&self, monotonic_ns: u64) -> String {
        let mut text = self.rfc3339(monotonic_ns);
        if text.ends_with('Z') {
            text.pop();
            text.push_str("+0000");
        }
        text
    }
}

/// The sending side of the flow log, one clone per worker.
pub type FlowLogSender = Sender<FlowRecord>;

/// Bytes of records gathered before they are written in one go.
const BATCH_BYTES: usize = 64 * 1024;

/// The flow log (`--flow-log`).
pub type FlowLog = JsonLog;

/// A JSON Lines file written by its own thread (the flow log, the eve
/// log). It never stops on a write error (a full disk, an I/O error): the
/// records it cannot write are counted ([`JsonLog::lost`]), the file never
/// ends in half a record, and writing resumes as soon as the file takes
/// records again.
pub struct JsonLog {
    path: PathBuf,
    handle: thread::JoinHandle<u64>,
    lost: Arc<AtomicU64>,
}

impl JsonLog {
    /// Opens `path` for appending (creating it) and starts the flow log's
    /// writer. Fails before anything is attached if the file cannot be
    /// opened.
    pub fn start(path: &Path) -> anyhow::Result<(JsonLog, FlowLogSender)> {
        Self::start_named(path, "--flow-log", "flow log")
    }

    /// The same for records of type `T`; `flag` names the option in
    /// errors, `what` the log in log lines.
    pub fn start_named<T: Serialize + Send + 'static>(
        path: &Path,
        flag: &'static str,
        what: &'static str,
    ) -> anyhow::Result<(JsonLog, Sender<T>)> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{flag}: cannot open {} for appending", path.display()))?;
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let lost = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file,
            path: path.to_path_buf(),
            what,
            batch: Vec::with_capacity(BATCH_BYTES),
            records: 0,
            written: 0,
            lost: Arc::clone(&lost),
            failing: false,
        };
        let handle = thread::Builder::new()
            .name(format!("dp-{}", flag.trim_start_matches("--")))
            .spawn(move || writer.run(rx))
            .with_context(|| format!("spawn the {what} writer"))?;
        Ok((
            JsonLog {
                path: path.to_path_buf(),
                handle,
                lost,
            },
            tx,
        ))
    }

    /// Records the writer could not write (the file refused them).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Waits for the writer to drain (every sender must be dropped first);
    /// returns the number of records written and lost.
    pub fn finish(self) -> anyhow::Result<(u64, u64)> {
        let written = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("the writer of {} panicked", self.path.display()))?;
        Ok((written, self.lost.load(Ordering::Relaxed)))
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    /// What the file is, for log lines ("flow log").
    what: &'static str,
    /// Whole lines waiting to be written.
    batch: Vec<u8>,
    /// Records in `batch`.
    records: u64,
    written: u64,
    lost: Arc<AtomicU64>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
}

impl Writer {
    fn run<T: Serialize>(mut self, rx: Receiver<T>) -> u64 {
        loop {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(record) => {
                    if serde_json::to_writer(&mut self.batch, &record).is_ok() {
                        self.batch.push(b'\n');
                        self.records += 1;
                    }
                    if self.batch.len() >= BATCH_BYTES || rx.is_empty() {
                        self.flush();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush();
        self.written
    }

    /// Appends the batch whole or not at all: a write that fails part way
    /// (the disk filled up) is cut back off, and its records are lost.
    fn flush(&mut self) {
        if self.records == 0 {
            return;
        }
        let result = self.file.metadata().and_then(|m| {
            let before = m.len();
            self.file.write_all(&self.batch).inspect_err(|_| {
                let _ = self.file.set_len(before);
            })
        });
        match result {
            Ok(()) => {
                self.written += self.records;
                if self.failing {
                    self.failing = false;
                    tracing::info!(path = %self.path.display(), "{}: writing again", self.what);
                }
            }
            Err(error) => {
                self.lost.fetch_add(self.records, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(
                        path = %self.path.display(), %error,
                        "{}: cannot write; records are counted as lost until it can",
                        self.what
                    );
                }
            }
        }
        self.batch.clear();
        self.records = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_with_the_documented_names() {
        let path = std::env::temp_dir().join(format!("flowlog-test-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (log, tx) = FlowLog::start(&path).unwrap();
        let clock = WallClock::new(0);
        for reason in [EndReason::Timeout, EndReason::Closed] {
            tx.send(FlowRecord {
                event_type: "flow",
                start: clock.rfc3339(0),
                end: clock.rfc3339(1_500_000_000),
                flow: dpi::engine::FlowSummary {
                    src: "198.18.1.1".parse().unwrap(),
                    sport: 40000,
                    dst: "198.18.1.2".parse().unwrap(),
                    dport: 80,
                    l4: l4_name(6),
                    vlan: 0,
                    label: dpi::policy::FlowLabel {
                        protocol: "HTTP",
                        host: Some("allowed.test".into()),
                        decided_by: Some("no-rules"),
                        ..Default::default()
                    },
                    verdict: "allow",
                },
                kernel_action: Some("forward"),
                user_packets: 4,
                user_bytes: 400,
                kernel_packets: 7000,
                kernel_bytes: 10_000_000,
                reason,
                queue: 1,
                split: false,
                backend: None,
            })
            .unwrap();
        }
        drop(tx);
        assert_eq!(log.finish().unwrap(), (2, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "timeout");
        assert_eq!(lines[1]["reason"], "closed");
        assert_eq!(lines[0]["l4"], "tcp");
        assert_eq!(
            lines[0]["protocol"], "HTTP",
            "the label's fields are at the top"
        );
        assert_eq!(lines[0]["decided_by"], "no-rules");
        assert_eq!(lines[0]["kernel_bytes"], 10_000_000);
        let start = humantime::parse_rfc3339(lines[0]["start"].as_str().unwrap()).unwrap();
        let end = humantime::parse_rfc3339(lines[0]["end"].as_str().unwrap()).unwrap();
        assert_eq!(
            end.duration_since(start).unwrap(),
            Duration::from_millis(1500)
        );
    }
}
