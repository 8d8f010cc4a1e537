//! The rules engine against Suricata 7: the same rules over the same
//! captures, compared per (flow, sid); prints the agreement and every
//! alert only one side raised, grouped by rule.
//!
//!   suricata-agreement [--captures DIR] [--rules FILE]
//!   (default: bench/differential/captures and differential.rules)

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Folder of pcap/pcapng files.
    #[arg(long)]
    captures: Option<PathBuf>,
    /// Rule file (Suricata syntax, read by both).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Keep Suricata's logs here (default: a temporary directory).
    #[arg(long)]
    work: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (captures, rules) = bench::suricata::default_set();
    let captures = bench::suricata::captures_in(&args.captures.unwrap_or(captures))?;
    let rules = args.rules.unwrap_or(rules);
    let work = args.work.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("suricata-agreement-{}", std::process::id()))
    });
    let diff = bench::suricata::compare(&captures, &rules, &work)?;
    print!("{}", diff.markdown());
    println!(
        "\nSuricata {:.2} s, dataplane {:.2} s",
        diff.seconds_suricata, diff.seconds_ours
    );
    Ok(())
}
