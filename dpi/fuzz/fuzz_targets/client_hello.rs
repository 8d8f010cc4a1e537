//! The TLS/DTLS ClientHello parser (also used inside QUIC) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dpi::classify::parse_client_hello(data, false);
    let _ = dpi::classify::parse_client_hello(data, true);
});
