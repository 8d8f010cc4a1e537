//! Latency histograms in the formats people already read: HdrHistogram's
//! percentile distribution (the `.hgrm` text its plotter takes), a short
//! percentile table, and an SVG plot of latency by percentile with the
//! percentile axis log-scaled (1/(1-p)), several runs on one chart.

use std::path::Path;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;

/// A histogram for nanosecond latencies: 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static bounds are valid")
}

/// HdrHistogram's percentile distribution text, the `.hgrm` its plotter
/// reads (the data plane writes its own histograms with the same function).
pub use dataplane::stats::hgrm;

/// The points of `.hgrm` text: (percentile in 0..=1, value).
pub fn hgrm_points(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let value = cols.next()?.parse::<f64>().ok()?;
            let q = cols.next()?.parse::<f64>().ok()?;
            Some((q, value))
        })
        .collect()
}

/// The points of a `.hgrm` file: (percentile in 0..=1, value).
pub fn read_hgrm(path: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let points = hgrm_points(&text);
    if points.is_empty() {
        bail!(
            "{} has no percentile lines (not an .hgrm file?)",
            path.display()
        );
    }
    Ok(points)
}

/// The short table: count, p50, p90, p99, p99.9, p99.99, max (in `unit`s).
pub fn summary(h: &Histogram<u64>, scale: f64, unit: &str) -> String {
    let p = |q: f64| h.value_at_quantile(q) as f64 / scale;
    format!(
        "| count | p50 | p90 | p99 | p99.9 | p99.99 | max |\n|---:|---:|---:|---:|---:|---:|---:|\n| {} | {:.1} {unit} | {:.1} {unit} | {:.1} {unit} | {:.1} {unit} | {:.1} {unit} | {:.1} {unit} |",
        h.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        p(0.999),
        p(0.9999),
        h.max() as f64 / scale
    )
}

/// Plots several runs (label, `.hgrm` points) as latency by percentile,
/// percentile axis log-scaled as 1/(1-p) (HdrHistogram's plotter's layout).
pub fn plot(runs: &[(String, Vec<(f64, f64)>)], unit: &str, out: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    if runs.is_empty() {
        bail!("nothing to plot");
    }
    // x = log10(1/(1-p)), capped at 6 nines.
    let x_of = |q: f64| (1.0 / (1.0 - q.min(0.999_999))).log10();
    let max_x = runs
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|&(q, _)| x_of(q)))
        .fold(1.0, f64::max)
        .ceil();
    let max_y = runs
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|&(_, v)| v))
        .fold(0.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(out, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 24))
        .margin(20)
        .margin_right(60)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y.max(1.0))?;
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
    chart
        .configure_mesh()
        .x_desc("percentile (log scale: 1/(1-p))")
        .y_desc(format!("latency ({unit})"))
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&|x| {
            labels
                .get(x.round() as usize)
                .map_or_else(String::new, |s| s.to_string())
        })
        .draw()?;
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    for (i, (label, pts)) in runs.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(q, v)| (x_of(q), v)),
                color.stroke_width(2),
            ))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("write {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_round_trips_and_is_cumulative() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let text = hgrm(&h, 1000.0);
        assert!(text.starts_with("       Value     Percentile"), "{text}");
        // max is the highest value equivalent to 10 ms at 3 significant digits
        assert!(text.contains("#[Max     =    1000"), "{text}");
        assert!(text.contains("Total count    =        10000]"), "{text}");
        let dir = std::env::temp_dir().join(format!("hgrm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.hgrm");
        std::fs::write(&path, &text).unwrap();
        let points = read_hgrm(&path).unwrap();
        let (q_last, v_last) = *points.last().unwrap();
        assert_eq!(q_last, 1.0);
        assert!((v_last - 10_000.0).abs() < 10.0, "{v_last}");
        // the median is near 5000 us
        let median = points.iter().find(|(q, _)| *q >= 0.5).unwrap().1;
        assert!((median - 5000.0).abs() < 10.0, "{median}");
        // TotalCount is cumulative and ends at the total
        let last_count: u64 = text
            .lines()
            .rev()
            .find(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|c| c.parse::<f64>().is_ok())
            })
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .unwrap();
        assert_eq!(last_count, 10_000);
        let svg = dir.join("plot.svg");
        plot(&[("run".into(), points)], "us", &svg).unwrap();
        let drawn = std::fs::read_to_string(&svg).unwrap();
        assert!(drawn.contains("<svg") && drawn.contains("latency (us)"));
        assert!(drawn.contains("99.9%"), "log-scaled percentile labels");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
