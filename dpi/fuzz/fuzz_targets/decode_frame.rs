//! Every link-layer decoder on arbitrary bytes: never panics, and a decoded
//! payload always lies inside the frame.
#![no_main]

use dpi::LinkType;
use libfuzzer_sys::fuzz_target;

const LINKS: [u32; 10] = [1, 0, 108, 101, 228, 229, 113, 276, 9, 104];

fuzz_target!(|data: &[u8]| {
    let Some((selector, frame)) = data.split_first() else { return };
    let link = LinkType::from_linktype(LINKS[usize::from(*selector) % LINKS.len()]).expect("supported");
    if let Ok(decoded) = dpi::link::decode(link, frame) {
        assert!(decoded.payload_offset + decoded.payload_len <= frame.len());
        let _ = decoded.key.to_string();
    }
});
