//! What the load balancer benchmarks (`compare lb`, `lb-tcp`) share: the
//! sibling binaries they start, which peer tools are installed, and the
//! three balancers configured alike: VIP 198.18.70.100, backends
//! 198.18.71.1-3 weighted 5:3:2.

use anyhow::{bail, ensure};
use std::process::{Command, Stdio};

/// Path of a binary built next to the running one (`target/release/NAME`).
pub fn sibling_bin(name: &str) -> anyhow::Result<String> {
    let path = std::env::current_exe()?.with_file_name(name);
    ensure!(
        path.exists(),
        "{} not found: build first (cargo build --release -p dataplane -p bench)",
        path.display()
    );
    Ok(path.to_string_lossy().into_owned())
}

/// Whether `tool` is on the PATH.
pub fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

const BACKENDS: [(&str, u32); 3] = [("198.18.71.1", 5), ("198.18.71.2", 3), ("198.18.71.3", 2)];

/// `lb.toml` for `dataplane --lb`: one service, no health checks (the
/// benchmarks' backends are static).
pub fn xdp_config(mode: &str, proto: &str, port: u16) -> String {
    let mut s = format!(
        "mode = \"{mode}\"\n[health]\nkind = \"none\"\n[[service]]\nvip = \"198.18.70.100\"\nport = {port}\nproto = \"{proto}\"\n"
    );
    for (addr, weight) in BACKENDS {
        s += &format!("[[service.backend]]\naddr = \"{addr}\"\nweight = {weight}\n");
    }
    s
}

/// [`xdp_config`] with the service inspected first (`inspect = true`: its
/// connections' first data packets go through a worker with the run's rules).
pub fn xdp_config_inspected(mode: &str, proto: &str, port: u16) -> String {
    let proto_line = format!("proto = \"{proto}\"\n");
    xdp_config(mode, proto, port).replacen(&proto_line, &format!("{proto_line}inspect = true\n"), 1)
}

/// `dataplane --iface IFACE --no-control --stats-interval 0 --lb FILE` in
/// `ns` (more arguments can follow).
pub fn dataplane_lb(
    ns: &testbed::Netns,
    iface: &str,
    file: &std::path::Path,
) -> anyhow::Result<Command> {
    let mut cmd = ns.command(&sibling_bin("dataplane")?);
    cmd.args([
        "--iface",
        iface,
        "--no-control",
        "--stats-interval",
        "0",
        "--lb",
    ])
    .arg(file);
    Ok(cmd)
}

/// An nftables DNAT balancer with the same weights: jhash over the
/// 5-tuple, mod 10, 5:3:2 (conntrack does the replies).
pub fn nft_rules(table: &str, proto: &str, port: u16) -> String {
    format!(
        "table ip {table} {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 198.18.70.100 {proto} dport {port} dnat to jhash ip saddr . ip daddr . {proto} sport . {proto} dport mod 10 map {{ 0-4 : {}, 5-7 : {}, 8-9 : {} }}
  }}
}}
",
        BACKENDS[0].0, BACKENDS[1].0, BACKENDS[2].0
    )
}

/// Loads `rules` with `nft -f -` through `cmd` (e.g. a namespace's `nft`).
pub fn nft_load(mut cmd: Command, rules: &str) -> anyhow::Result<()> {
    let mut child = cmd.args(["-f", "-"]).stdin(Stdio::piped()).spawn()?;
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin is piped"),
        rules.as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xdp_config_reads_with_the_weights_of_the_nft_map() {
        let c = lb::Config::parse("bench", &xdp_config("ipip", "udp", 9)).unwrap();
        let weights: Vec<u32> = c.services[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [5, 3, 2]);
        assert!(
            nft_rules("t", "udp", 9)
                .contains("0-4 : 198.18.71.1, 5-7 : 198.18.71.2, 8-9 : 198.18.71.3")
        );
    }
}
