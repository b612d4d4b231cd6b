//! Any bytes, any link type: decode must not panic and must stay in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netvigil::decode::{LinkType, decode};
use netvigil::base::time::Timestamp;

const DLTS: [i32; 12] = [0, 1, 9, 12, 14, 50, 101, 108, 113, 228, 229, 276];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let link = LinkType::from_dlt(DLTS[usize::from(sel) % DLTS.len()]);
    let m = decode(link, Timestamp(1), frame.len() as u32 + u32::from(sel), frame);
    // Feed the per-packet rules too: they read every decoded field.
    let mut hits = netvigil::detect::misuse::HitTable::new(16);
    hits.inspect(&m);
});
