//! Whole savefiles through the replay pipeline: libpcap, decode, shards,
//! host stage, events. Must end (no panic, no hang) whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netvigil::config::Config;
use netvigil::export::EventWriter;
use netvigil::pipeline;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = std::env::temp_dir().canonicalize() else { return };
    let path = dir.join(format!("netvigil-fuzz-{}.pcap", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let sink = EventWriter::new(Box::new(std::io::sink()));
    let _ = pipeline::replay_files(vec![path.clone()], &Config::default(), 2, sink);
    let _ = std::fs::remove_file(&path);
});
