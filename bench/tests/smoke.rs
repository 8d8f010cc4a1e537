//! Smoke runs of the load-testing tools (root, namespaces, seconds each):
//! the comparison command end to end, and the bundled pktgen scripts on a
//! machine without the kernel's pktgen module. They check that the tools
//! work and say what they measured, not how fast anything is.

use std::process::Command;

use serde_json::Value;

#[test]
fn compare_smoke_runs_every_comparison_root() {
    testbed::require_root("the comparison smoke run");
    let json = std::env::temp_dir().join(format!("compare-smoke-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--smoke", "all", "--json"])
        .arg(&json)
        .output()
        .expect("run compare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "compare failed:\n{text}");
    for heading in [
        "### Generators",
        "### Kernel path",
        "### User-space path",
        "### DPI on one capture",
        "### Load balancer",
        "### Latency through the inline bridge",
    ] {
        assert!(text.contains(heading), "missing `{heading}`:\n{text}");
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let positive = |path: &str| {
        let x = v.pointer(path).and_then(Value::as_f64).unwrap_or(0.0);
        assert!(x > 0.0 && x.is_finite(), "{path} = {x} in {v:#}");
    };
    positive("/generators/xdp_live_vs_afpacket");
    positive("/kernel/drop/ratio");
    positive("/kernel/bridge/ratio_dynamic_vs_bare");
    positive("/user/ratio");
    positive("/user/ratio_host");
    positive("/latency/kernel/max_pps");
    positive("/latency/user/at_50/p99_us");
    let files = v.pointer("/latency/files").and_then(Value::as_str).unwrap();
    let plot = std::path::Path::new(files).join("latency.svg");
    let svg = std::fs::read_to_string(&plot).expect("the latency plot");
    assert!(svg.contains("percentile (log scale"), "axis labelled");
    let _ = std::fs::remove_dir_all(files);
}

#[test]
fn pktgen_scripts_fall_back_to_the_bundled_generator_root() {
    testbed::require_root("the pktgen script smoke run");
    let tb = testbed::Testbed::up(2).expect("testbed");
    let dst_mac = tb
        .dut_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    // A sink on the far end, so the frames are counted and dropped there.
    let sink = {
        let mut cmd = tb.dut.command(env!("CARGO_BIN_EXE_xdp-baseline"));
        cmd.args(["--iface", &tb.dut_if, "--kind", "sink"]);
        let mut p = testbed::Process::spawn(cmd).unwrap();
        p.wait_for_line("xdp-baseline: attached", std::time::Duration::from_secs(20))
            .unwrap();
        p
    };
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pktgen");
    for (script, extra) in [
        ("pktgen_sample01_simple.sh", &[][..]),
        ("pktgen_sample02_multiqueue.sh", &["-t", "2", "-l", "8"][..]),
        ("pktgen_sample03_burst_single_flow.sh", &["-b", "32"][..]),
    ] {
        let out = tb
            .gen_ns
            .command(&format!("{scripts}/{script}"))
            .args([
                "-i",
                &tb.gen_if,
                "-d",
                "198.18.0.2",
                "-m",
                &dst_mac,
                "-n",
                "5000",
            ])
            .args(extra)
            .env("PKTGEN_BIN", env!("CARGO_BIN_EXE_pktgen"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{script}:\n{text}");
        if !std::path::Path::new("/proc/net/pktgen").exists() {
            assert!(
                text.contains("pktgen module is not loaded") && text.contains("pktgen: engine"),
                "{script} says it falls back, and which engine:\n{text}"
            );
            assert!(text.contains("pktgen: sent"), "{script}:\n{text}");
        }
        let help = tb
            .gen_ns
            .command(&format!("{scripts}/{script}"))
            .arg("-h")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in [
            "-i :", "-d :", "-m :", "-s :", "-t :", "-n :", "-b :", "-f :", "-6 :", "-v :", "-x :",
        ] {
            assert!(help.contains(flag), "{script} -h explains {flag}:\n{help}");
        }
    }
    let mut sink = sink;
    sink.interrupt(std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("xdp-baseline {e}"));
    let counted: Value = sink
        .output()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("the sink's count");
    // 5000 + 2 x 5000 + 5000 frames; veth may drop a few under a burst.
    let packets = counted["packets"].as_u64().unwrap();
    assert!(
        (19_000..=20_000).contains(&packets),
        "the sink counted {packets} of 20000 frames"
    );
}
