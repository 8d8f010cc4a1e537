//! `latency-plot`: several `.hgrm` files (from `latency-sink`, `dataplane
//! --latency-hgrm`, or HdrHistogram itself) on one chart, latency by
//! percentile with a log-scaled percentile axis.
//!
//!   latency-plot --out runs.svg "10% load=a.hgrm" "90% load=b.hgrm"

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Plot .hgrm files together: latency by percentile")]
struct Args {
    /// The SVG to write.
    #[arg(long)]
    out: PathBuf,
    /// Unit of the files' values (for the axis label).
    #[arg(long, default_value = "us")]
    unit: String,
    /// Runs as LABEL=FILE.hgrm (or just FILE.hgrm, labelled by its name).
    #[arg(required = true)]
    runs: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = args
        .runs
        .iter()
        .map(|run| {
            let (label, path) = match run.split_once('=') {
                Some((label, path)) => (label.to_string(), PathBuf::from(path)),
                None => {
                    let path = PathBuf::from(run);
                    let label = path
                        .file_stem()
                        .map_or(run.clone(), |s| s.to_string_lossy().into_owned());
                    (label, path)
                }
            };
            Ok((label, bench::latency::read_hgrm(&path)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    bench::latency::plot(&runs, &args.unit, &args.out)
        .with_context(|| format!("plot to {}", args.out.display()))?;
    println!(
        "latency-plot: {} run(s) plotted to {}",
        runs.len(),
        args.out.display()
    );
    Ok(())
}
