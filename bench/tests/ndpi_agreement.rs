//! Guards the DPI engine's agreement with nDPI on the development captures
//! (../shared/data/ndpi) against regressions. The floors are the figures
//! reached when this test was last raised, a little below them; the targets
//! of the DPI issue (95 % protocol, 95 % host, at most 1 % false claims) are
//! checked by `ndpi-agreement` and reported, and these floors sit above them.

#[test]
fn agreement_with_ndpi_does_not_regress() {
    let dataset = bench::ndpi::default_dataset();
    assert!(
        dataset.join("pcap").is_dir(),
        "the nDPI development captures are missing at {}: they come with ../shared/data/ndpi",
        dataset.display()
    );
    let report = bench::ndpi::compare(&dataset).expect("read the dataset");
    println!("{}", report.markdown());
    assert!(report.captures >= 390, "read {} captures", report.captures);
    assert!(
        report.matched_flows as f64 >= 0.85 * report.ndpi_flows as f64,
        "flows matched: {} of {}",
        report.matched_flows,
        report.ndpi_flows
    );
    assert!(
        report.protocol_agreement() >= 0.96,
        "protocol agreement {:.3}",
        report.protocol_agreement()
    );
    assert!(
        report.host_agreement() >= 0.98,
        "host agreement {:.3}",
        report.host_agreement()
    );
    assert!(
        report.false_claim_rate() <= 0.01,
        "false claims {:.3}",
        report.false_claim_rate()
    );
}
