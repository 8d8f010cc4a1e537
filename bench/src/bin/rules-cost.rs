//! Cost of signature matching per packet with 10 rules and with 10,000 rules
//! (each with its own content, as in a real rule set), on the same payloads in
//! the same run. The Aho-Corasick prefilter should keep the ratio near 1.

use std::{path::Path, time::Instant};

use dpi::rules::{FlowBits, PacketView, RuleSet, Vars};

fn rules(n: usize) -> RuleSet {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "alert tcp any any -> any any (msg:\"rule {i}\"; flow:to_server; content:\"needle-{i:05}\"; nocase; content:\"|0d 0a|\"; distance:0; sid:{};)\n",
            i + 1
        ));
    }
    RuleSet::parse(&text, Path::new("generated.rules"), &Vars::default(), false)
        .expect("generated rules parse")
}

fn main() {
    // 20,000 HTTP-like requests of ~300 bytes; one in 100 carries a needle.
    let payloads: Vec<Vec<u8>> = (0..20_000)
        .map(|i| {
            let needle = if i % 100 == 0 { format!("needle-{:05}", i % 10) } else { String::new() };
            format!(
                "GET /index/{i}/{needle} HTTP/1.1\r\nHost: www{}.example.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) bench/{i}\r\nAccept: */*\r\nAccept-Language: en\r\nCookie: session={:016x}\r\n\r\n",
                i % 50,
                (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
            .into_bytes()
        })
        .collect();
    let sets = [(10usize, rules(10)), (10_000, rules(10_000))];
    let mut results = Vec::new();
    for round in 0..5 {
        for (n, set) in &sets {
            let started = Instant::now();
            let mut hits = 0usize;
            for p in &payloads {
                let view = PacketView {
                    src: "198.18.0.1".parse().expect("literal"),
                    dst: "198.18.0.2".parse().expect("literal"),
                    sport: 40000,
                    dport: 80,
                    payload: p,
                    dsize: p.len(),
                    tcp_flags: Some(0x18),
                    ..PacketView::default()
                };
                hits += set.matches(&view, &mut FlowBits::default()).hits.len();
            }
            let ns = started.elapsed().as_nanos() as f64 / payloads.len() as f64;
            results.push((round, *n, ns, hits));
        }
    }
    println!(
        "signature matching, {} payloads of ~300 B, median of 5 alternating rounds\n",
        payloads.len()
    );
    println!("| rules | ns/packet | hits |");
    println!("|---:|---:|---:|");
    let mut medians = Vec::new();
    for (n, _) in &sets {
        let mut v: Vec<f64> = results.iter().filter(|r| r.1 == *n).map(|r| r.2).collect();
        let hits = results.iter().find(|r| r.1 == *n).map_or(0, |r| r.3);
        let m = bench::median(&mut v);
        medians.push(m);
        println!("| {n} | {m:.0} | {hits} |");
    }
    println!(
        "\n10,000 rules cost {:.2}x what 10 rules cost",
        medians[1] / medians[0]
    );
}
