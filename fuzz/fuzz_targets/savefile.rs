//! Whole savefiles through the replay pipeline: libpcap, decode, shards,
//! host stage, events. Must end (no panic, no hang) whatever the bytes.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use netvigil::config::Config;
use netvigil::export::EventWriter;
use netvigil::pipeline::{self, Backpressure, Options, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = std::env::temp_dir().canonicalize() else { return };
    let path = dir.join(format!("netvigil-fuzz-{}.pcap", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let opts = Options {
        workers: 2,
        backpressure: Backpressure::Block,
        events: EventWriter::new(Box::new(std::io::sink())),
        metrics: false,
        state_dir: None,
        reload: Arc::new(AtomicBool::new(false)),
        config_path: None,
    };
    let source = Source::Replay {
        paths: vec![path.clone()],
        speed: netvigil::capture::replay::Speed::Max,
        bpf: None,
        progress: Box::new(|_| {}),
    };
    let _ = pipeline::run(source, &Config::default(), opts, Arc::new(AtomicBool::new(false)));
    let _ = std::fs::remove_file(&path);
});
