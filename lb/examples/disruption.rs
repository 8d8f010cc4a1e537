//! How many lookup-table slots a change moves, for both fill algorithms:
//! adding one backend to N equal ones, and removing one. Prints a markdown
//! table (the figures in README.md "Load balancer").
//!
//!   cargo run --release -p lb --example disruption

use lb::table::{self, Algorithm, Entry, Table};

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            id: vec![198, 18, 71, i as u8 + 1],
            weight: 1,
        })
        .collect()
}

/// One table row: the change from `old` to `new` backends, the ideal share moved.
fn row(algorithm: Algorithm, change: &str, old: &[Entry], new: &[Entry], ideal: f64) {
    let a = Table::build(algorithm, old, table::DEFAULT_SIZE);
    let b = Table::build(algorithm, new, table::DEFAULT_SIZE);
    let d = table::diff((&a, old), (&b, new));
    println!(
        "| {} | {change} | {:.2} % ({:.2} %) | {:.2} % |",
        algorithm.as_str(),
        100.0 * d.moved_fraction(),
        100.0 * ideal,
        100.0 * d.between_unchanged as f64 / d.size as f64
    );
}

fn main() {
    println!("| algorithm | change | moved (ideal) | between unchanged backends |");
    println!("|---|---|---:|---:|");
    for algorithm in [Algorithm::Maglev, Algorithm::Rendezvous] {
        for n in [2usize, 4, 8, 16] {
            let change = format!("{n} -> {} backends", n + 1);
            row(
                algorithm,
                &change,
                &entries(n),
                &entries(n + 1),
                1.0 / (n + 1) as f64,
            );
        }
        let old = entries(8);
        let mut new = old.clone();
        new[3].weight = 0;
        row(algorithm, "one of 8 down", &old, &new, 1.0 / 8.0);
    }
}
