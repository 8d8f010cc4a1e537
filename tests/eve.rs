//! The eve log against what reads eve logs: the part of Suricata's eve
//! schema the events use (`dataplane/tests/data/eve-subset.schema.json`,
//! every level closed to fields Suricata's schema does not have), and a
//! real consumer, Debian's `fever` (DCSO's eve event router), which must
//! take every event without a parse error and forward every alert.
//!
//! The events come from `dataplane inspect --eve` over the rules
//! differential's real captures and rules (`bench/differential`): the same
//! engine and event code as a live run.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dataplane");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `inspect --eve` over the differential's captures; returns the eve
/// events and the flow records.
fn inspect_with_eve(dir: &testbed::Scratch) -> (Vec<Value>, Vec<Value>) {
    let eve = dir.path("eve.json");
    let captures = repo().join("bench/differential/captures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the differential's captures: {files:?}");
    let out = Command::new(BIN)
        .args(["inspect", "--format", "json", "--rules"])
        .arg(repo().join("bench/differential/differential.rules"))
        .arg("--eve")
        .arg(&eve)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parse = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let events = parse(&std::fs::read_to_string(&eve).unwrap());
    let records = parse(&String::from_utf8_lossy(&out.stdout));
    (events, records)
}

/// A flow's endpoints, either way round, and transport.
fn flow_of(l4: &str, a: (&str, u64), b: (&str, u64)) -> String {
    let (x, y) = (format!("{}:{}", a.0, a.1), format!("{}:{}", b.0, b.1));
    let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
    format!("{} {lo} {hi}", l4.to_ascii_lowercase())
}

fn event_flow(e: &Value) -> String {
    // the flow records' transport names are eve's in lower case
    flow_of(
        e["proto"].as_str().unwrap(),
        (
            e["src_ip"].as_str().unwrap(),
            e["src_port"].as_u64().unwrap_or(0),
        ),
        (
            e["dest_ip"].as_str().unwrap(),
            e["dest_port"].as_u64().unwrap_or(0),
        ),
    )
}

#[test]
fn eve_events_follow_suricatas_schema_and_agree_with_the_flow_records() {
    let dir = testbed::Scratch::new("eve-schema");
    let (events, records) = inspect_with_eve(&dir);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dataplane/tests/data/eve-subset.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for event in &events {
        if let Err(error) = validator.validate(event) {
            panic!("not an eve event as Suricata's schema has it: {error}\n{event:#}");
        }
        *kinds
            .entry(event["event_type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        kinds.get("alert").copied().unwrap_or(0) > 1000,
        "the differential's rules fire often: {kinds:?}"
    );
    for section in ["http", "tls", "dns"] {
        assert!(
            events
                .iter()
                .any(|e| e["event_type"] == "alert" && e.get(section).is_some()),
            "some alert carries its {section} fields"
        );
        assert!(
            kinds.get(section).copied().unwrap_or(0) > 10,
            "{section} events as transactions are read: {kinds:?}"
        );
    }
    // every HTTP request the flow records count has its event
    let requests: u64 = records
        .iter()
        .map(|r| r["http_requests"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        kinds.get("http").copied().unwrap_or(0) as u64 >= requests,
        "{kinds:?}, {requests} requests"
    );
    // One flow event per flow record, with the same packets and bytes.
    assert_eq!(kinds["flow"], records.len(), "{kinds:?}");
    let record_flow = |r: &Value| {
        let l4 = r["l4"].as_str().unwrap();
        let ports = |p: &str| {
            if matches!(l4, "tcp" | "udp" | "sctp") {
                r[p].as_u64().unwrap()
            } else {
                0
            }
        };
        flow_of(
            l4,
            (r["src"].as_str().unwrap(), ports("sport")),
            (r["dst"].as_str().unwrap(), ports("dport")),
        )
    };
    // (flow, sid) from the alert events and from the flow records' sids;
    // every alert's flow_id is that of its flow's `flow` event
    let mut alerted = BTreeSet::new();
    let flow_ids: std::collections::BTreeMap<u64, String> = events
        .iter()
        .filter(|e| e["event_type"] == "flow")
        .map(|e| (e["flow_id"].as_u64().unwrap(), event_flow(e)))
        .collect();
    assert_eq!(flow_ids.len(), kinds["flow"], "one flow_id per flow");
    for e in &events {
        match e["event_type"].as_str().unwrap() {
            "alert" => {
                alerted.insert((event_flow(e), e["alert"]["signature_id"].as_u64().unwrap()));
                assert_eq!(
                    flow_ids.get(&e["flow_id"].as_u64().unwrap()),
                    Some(&event_flow(e)),
                    "the alert's flow_id is its flow's: {e:#}"
                );
            }
            "flow" => {
                let f = &e["flow"];
                let n = |k: &str| f[k].as_u64().unwrap();
                let (packets, bytes) = (
                    n("pkts_toserver") + n("pkts_toclient"),
                    n("bytes_toserver") + n("bytes_toclient"),
                );
                let record = records
                    .iter()
                    .find(|r| {
                        record_flow(r) == event_flow(e)
                            && r["packets"].as_u64() == Some(packets)
                            && r["bytes"].as_u64() == Some(bytes)
                    })
                    .unwrap_or_else(|| panic!("no flow record like {e:#}"));
                assert_eq!(
                    f["alerted"].as_bool(),
                    Some(!record["sids"].as_array().unwrap().is_empty()),
                    "{e:#}\n{record:#}"
                );
            }
            "http" | "dns" | "tls" => {
                let body = &e[e["event_type"].as_str().unwrap()];
                assert!(body.is_object(), "{e:#}");
                assert_eq!(
                    flow_ids.get(&e["flow_id"].as_u64().unwrap()),
                    Some(&event_flow(e)),
                    "the transaction's flow_id is its flow's: {e:#}"
                );
            }
            other => panic!("offline there are no {other} events"),
        }
    }
    let recorded: BTreeSet<(String, u64)> = records
        .iter()
        .flat_map(|r| {
            let flow = record_flow(r);
            r["sids"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |s| (flow.clone(), s.as_u64().unwrap()))
        })
        .collect();
    assert_eq!(
        alerted.difference(&recorded).collect::<Vec<_>>(),
        Vec::<&(String, u64)>::new(),
        "alerts without the sid in their flow's record"
    );
    assert_eq!(
        recorded.difference(&alerted).collect::<Vec<_>>(),
        Vec::<&(String, u64)>::new(),
        "sids in flow records without an alert event"
    );
}

/// Debian's `fever`, or a failure that says how to get it.
fn fever() -> &'static str {
    let found = Command::new("fever")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs Debian's `fever` (an eve.json consumer): run scripts/install-deps.sh"
    );
    "fever"
}

#[test]
fn fever_takes_every_event_and_forwards_every_alert() {
    let fever = fever();
    let dir = testbed::Scratch::new("eve-fever");
    let (events, _) = inspect_with_eve(&dir);
    let alerts = events.iter().filter(|e| e["event_type"] == "alert").count();
    let (input, output, log) = (
        dir.path("in.sock"),
        dir.path("out.sock"),
        dir.path("fever.log"),
    );
    let config = dir.path("fever.yaml");
    // Forward the alerts to our socket, with a buffer that holds them all
    // (the default legacy output has none and drops what it cannot ship at once).
    std::fs::write(
        &config,
        format!(
            "multi-forward:\n  alerts:\n    socket: {}\n    all: false\n    buffer-length: {}\n    types:\n      - alert\n",
            output.display(),
            alerts + 1000
        ),
    )
    .unwrap();
    let listener = UnixListener::bind(&output).unwrap();
    let mut command = Command::new(fever);
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--in-socket")
        .arg(&input)
        .arg("--in-buffer-drop=false")
        .arg("--logfile")
        .arg(&log)
        .arg("--mgmt-socket")
        .arg(dir.path("mgmt.sock"))
        .arg("--flushtime")
        .arg("1s");
    // killed and reaped on drop, panics included
    let process = testbed::Process::spawn(command).unwrap();
    // fever connects to the forwarding socket on start
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let forwarded = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!(
                "fever did not connect to its output ({e}):\n{}",
                process.output()
            ),
        }
    };
    forwarded.set_nonblocking(false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sender = loop {
        match UnixStream::connect(&input) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("fever's input socket {}: {e}", input.display()),
        }
    };
    let eve = std::fs::read(dir.path("eve.json")).unwrap();
    sender.write_all(&eve).unwrap();
    drop(sender);
    forwarded
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(forwarded);
    let mut got = Vec::new();
    let mut line = String::new();
    while got.len() < alerts {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => got.push(serde_json::from_str::<Value>(line.trim()).unwrap()),
            Err(e) => panic!(
                "fever forwarded {} of {alerts} alerts, then nothing ({e}); its log:\n{}",
                got.len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }
    assert_eq!(got.len(), alerts, "every alert forwarded");
    assert!(got.iter().all(|e| e["event_type"] == "alert"));
    let sids = |v: &mut dyn Iterator<Item = &Value>| -> Vec<u64> {
        let mut s: Vec<u64> = v
            .map(|e| e["alert"]["signature_id"].as_u64().unwrap())
            .collect();
        s.sort_unstable();
        s
    };
    assert_eq!(
        sids(&mut got.iter()),
        sids(&mut events.iter().filter(|e| e["event_type"] == "alert")),
        "the same alerts"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text.contains("level=warning") && !log_text.contains("level=error"),
        "fever could not take some events:\n{log_text}"
    );
}
