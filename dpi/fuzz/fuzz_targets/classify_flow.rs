//! The classifier fed a flow of arbitrary payloads: never panics, always ends
//! with a decision. Input: transport (odd = TCP), two ports, then payloads
//! separated by 0xff 0x00, alternating directions.
#![no_main]

use dpi::FlowClassifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let l4 = if data[0] & 1 == 1 { 6 } else { 17 };
    let ports = [53, 443, 80, 5353, 137, 138, 139, 161, 427, 500, 4500, 1194, 3478, 5060, 21, 1812];
    let client = u16::from_be_bytes([data[1], data[2]]);
    let server = ports[usize::from(data[3]) % ports.len()];
    let mut c = FlowClassifier::for_transport(l4);
    let body = &data[4..];
    let mut start = 0;
    let mut from_client = true;
    for i in 0..=body.len() {
        if i == body.len() || (i + 1 < body.len() && body[i] == 0xff && body[i + 1] == 0x00) {
            let payload = &body[start..i];
            let (src, dst) = if from_client { (client, server) } else { (server, client) };
            c.on_packet(payload, from_client, src, dst);
            from_client = !from_client;
            start = (i + 2).min(body.len());
        }
    }
    let result = c.finish();
    assert!(result.dpi_packets <= c.packets_seen().max(1));
});
