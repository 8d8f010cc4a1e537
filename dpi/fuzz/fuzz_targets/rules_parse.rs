//! The rule parser on arbitrary text: never panics; a rule set that parses
//! can be evaluated on a packet without panicking either, and no rule takes
//! more than the inspection limit's steps.
#![no_main]

use std::path::Path;

use dpi::rules::{FlowBits, PacketView, RuleSet, Vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(set) = RuleSet::parse(text, Path::new("fuzz.rules"), &Vars::default(), true) {
        let view = PacketView {
            src: "198.18.0.1".parse().expect("literal"),
            dst: "198.18.0.2".parse().expect("literal"),
            sport: 40000,
            dport: 80,
            payload: data,
            dsize: data.len(),
            tcp_flags: Some(0x18),
            ..PacketView::default()
        };
        let matched = set.matches(&view, &mut FlowBits::default());
        assert!(matched.most_steps <= dpi::rules::INSPECTION_LIMIT);
    }
});
