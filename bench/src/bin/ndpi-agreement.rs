//! The DPI engine against nDPI on nDPI's own test captures: per protocol, how
//! often we agree with nDPI's master protocol and host name, and how often we
//! claim a protocol where nDPI says Unknown or something outside our list.
//!
//!   ndpi-agreement [DATASET]     (default: ../shared/data/ndpi) [--json PATH]

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Folder with pcap/ and result/ (nDPI's tests/cfgs/default layout).
    dataset: Option<PathBuf>,
    /// List the flows where we disagree with nDPI about this nDPI protocol.
    #[arg(long, value_name = "PROTO")]
    show: Vec<String>,
    /// Also write the full comparison as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dataset = args.dataset.unwrap_or_else(bench::ndpi::default_dataset);
    let report = bench::ndpi::compare(&dataset)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dataset.display()))?;
    print!("{}", report.markdown());
    for (master, line) in &report.disagreements {
        if args.show.iter().any(|s| s == master) {
            println!("{line}");
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
