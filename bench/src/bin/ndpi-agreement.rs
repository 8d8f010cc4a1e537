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
    /// Also write the full comparison as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dataset = args.dataset.unwrap_or_else(bench::ndpi::default_dataset);
    let report = bench::ndpi::compare(&dataset).map_err(|e| anyhow::anyhow!("{}: {e}", dataset.display()))?;
    print!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
