//! Events on NATS JetStream, against real `nats-server -js` processes the
//! tests start on loopback: every event arrives once, in per-episode order,
//! through a server restart, a cluster node's death and a full spool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SUBJECT: &str = "netvigil.events";

fn nats_server() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nats-server not installed: run scripts/setup.sh test (Debian package nats-server)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One nats-server with JetStream, killed on drop.
struct Server {
    child: Option<Child>,
    args: Vec<String>,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, name: &str, extra: &[String]) -> Server {
        Server::start_on(dir, name, free_port(), extra)
    }

    fn start_on(dir: &Path, name: &str, port: u16, extra: &[String]) -> Server {
        let store = dir.join(format!("{name}-store"));
        let mut args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(store.display().to_string());
        args.extend(extra.iter().cloned());
        let mut s = Server { child: None, args, port, log: dir.join(format!("{name}.log")) };
        s.run();
        s
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(nats_server())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "nats-server did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every message of the stream that takes `SUBJECT`: (message id, event).
/// Retries for a while: a cluster that just lost a node elects new leaders.
fn read_stream(urls: &[String]) -> Vec<(String, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t0 = Instant::now();
    loop {
        match rt.block_on(try_read_stream(urls)) {
            Ok(v) => return v,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(45), "cannot read the stream: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

async fn try_read_stream(urls: &[String]) -> Result<Vec<(String, Value)>, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let client = async_nats::connect(urls.to_vec()).await.map_err(|e| err(&e))?;
    let js = async_nats::jetstream::new(client);
    let name = js.stream_by_subject(SUBJECT).await.map_err(|e| err(&e))?;
    let mut stream = js.get_stream(&name).await.map_err(|e| err(&e))?;
    let last = stream.info().await.map_err(|e| err(&e))?.state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.map_err(|e| err(&e))?;
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&m.payload).map_err(|e| err(&e))?));
    }
    Ok(out)
}

/// A replica-3 stream on a cluster, made as an operator would before the sensors start.
fn create_replicated_stream(urls: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(urls.to_vec()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let t0 = Instant::now();
        loop {
            let cfg = async_nats::jetstream::stream::Config {
                name: "FLEET".into(),
                subjects: vec![SUBJECT.into()],
                num_replicas: 3,
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            };
            match js.create_stream(cfg).await {
                Ok(_) => break,
                // The cluster elects its meta leader a moment after it forms.
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(30), "cannot create the R3 stream: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    });
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// An Xmas-flags packet from a new source every half second for `n` packets:
/// `n` episodes, each a start and (at the end of input or its cool-down) an end.
fn paced_capture(path: &Path, n: u32) {
    let mut frames = Vec::new();
    for i in 0..n {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 9, (i / 200) as u8, (i % 200 + 1) as u8], [10, 9, 255, 1], 64)
            .tcp(40_000, 80, 1, 1024)
            .fin()
            .psh()
            .urg(0);
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        let len = f.len() as u32;
        frames.push((1_700_000_000_000_000 + i as i64 * 500_000, f, len));
    }
    common::write_pcap(path, &frames);
}

struct Replay {
    events_file: PathBuf,
    summary: Value,
}

fn replay(dir: &Path, targets: &[String], pcap: &Path, extra: &[&str], config: &str) -> Child {
    let cfg = dir.join("netvigil.toml");
    std::fs::write(&cfg, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .env("NETVIGIL_LOG", "info")
        .args(["replay", "-q", "--sensor-name", "lab-1", "--workers", "2"])
        .arg("--config")
        .arg(&cfg)
        .arg("--events")
        .arg(dir.join("events.jsonl"))
        .args(targets.iter().flat_map(|t| ["--events", t.as_str()]))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--summary-json")
        .arg(dir.join("summary.json"))
        .args(extra)
        .arg(pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("netvigil.log")).unwrap()))
        .spawn()
        .unwrap()
}

fn finish(dir: &Path, mut child: Child) -> Replay {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(120), "replay did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("netvigil.log")).unwrap_or_default();
    assert!(child.wait().unwrap().success(), "netvigil failed: {log}");
    let summary = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    Replay { events_file: dir.join("events.jsonl"), summary }
}

fn subject_url(servers: &[&Server]) -> String {
    let hosts: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    format!("nats://{}/{SUBJECT}", hosts.join(","))
}

/// Exactly once by message id, the same set as the file, and each
/// episode's events in the order the file has them.
fn assert_delivered(file: &[Value], stream: &[(String, Value)]) {
    let mut seen = BTreeSet::new();
    let dups: Vec<&String> = stream.iter().map(|(id, _)| id).filter(|id| !seen.insert(*id)).collect();
    assert!(dups.is_empty(), "stored twice: {dups:?}");
    let key = |v: &Value| v.to_string();
    let want: BTreeSet<String> = file.iter().map(key).collect();
    let got: BTreeSet<String> = stream.iter().map(|(_, v)| key(v)).collect();
    assert_eq!(want.len(), file.len(), "file events are distinct");
    let missing = want.difference(&got).count();
    let extra = got.difference(&want).count();
    assert!(missing == 0 && extra == 0, "{missing} events missing from the stream, {extra} not in the file");
    let by_episode = |evs: Vec<&Value>| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in evs {
            m.entry(v["episode_id"].as_str().unwrap().to_string()).or_default().push(key(v));
        }
        m
    };
    assert_eq!(
        by_episode(file.iter().collect()),
        by_episode(stream.iter().map(|(_, v)| v).collect()),
        "per-episode order differs"
    );
    for (id, v) in stream {
        assert!(id.starts_with("lab-1:"), "message id {id}");
        assert!(id.contains(v["episode_id"].as_str().unwrap()), "message id {id} names its episode");
        assert_eq!(v["sensor"], "lab-1");
    }
}

#[test]
fn a_replay_publishes_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "n1", &[]);
    let pcap = common::cap("misuse/ndpi_icmp-tunnel.pcap");
    let run = finish(dir.path(), replay(dir.path(), &[subject_url(&[&server])], &pcap, &[], ""));
    let file = lines(&run.events_file);
    assert!(file.len() >= 10, "{} events", file.len());
    let stream = read_stream(&[server.url()]);
    assert_delivered(&file, &stream);
    let n = &run.summary["nats"];
    assert_eq!(n["acknowledged"], file.len(), "{n}");
    assert_eq!(n["left_bytes"], 0, "{n}");
    // A second run of the same capture under the same sensor name sends the
    // same message ids again: the stream's duplicate window drops them all.
    let again = tempfile::tempdir().unwrap();
    finish(again.path(), replay(again.path(), &[subject_url(&[&server])], &pcap, &[], ""));
    assert_eq!(read_stream(&[server.url()]).len(), stream.len());
}

#[test]
fn a_server_restart_mid_replay_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("paced.pcap");
    paced_capture(&pcap, 160); // 80 s of packet time, replayed at 10x
    let mut server = Server::start(dir.path(), "n1", &[]);
    let child = replay(
        dir.path(),
        &[subject_url(&[&server])],
        &pcap,
        &["--speed", "10"],
        "[episodes]\ncooldown = 5\n[events]\ndrain_seconds = 30\n",
    );
    std::thread::sleep(Duration::from_secs(3));
    server.kill();
    std::thread::sleep(Duration::from_secs(3));
    server.run();
    let run = finish(dir.path(), child);
    let file = lines(&run.events_file);
    assert!(file.len() >= 300, "{} events", file.len());
    let log = std::fs::read_to_string(dir.path().join("netvigil.log")).unwrap();
    assert!(log.contains("events wait in the spool"), "the outage was noticed: {log}");
    assert_delivered(&file, &read_stream(&[server.url()]));
    assert_eq!(run.summary["nats"]["left_bytes"], 0, "the spool is empty at the end");
    assert_eq!(run.summary["nats"]["dropped"], 0);
}

#[test]
fn a_cluster_keeps_every_event_when_a_node_dies() {
    let dir = tempfile::tempdir().unwrap();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_urls: Vec<String> = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
    let mut nodes: Vec<Server> = (0..3)
        .map(|i| {
            let extra: Vec<String> = vec![
                "--name".into(),
                format!("n{i}"),
                "--cluster_name".into(),
                "fleet".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", routes[i]),
                "--routes".into(),
                route_urls.join(","),
            ];
            Server::start(dir.path(), &format!("n{i}"), &extra)
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    create_replicated_stream(&urls);
    let pcap = dir.path().join("paced.pcap");
    paced_capture(&pcap, 120);
    let target = subject_url(&nodes.iter().collect::<Vec<_>>());
    let child = replay(
        dir.path(),
        &[target],
        &pcap,
        &["--speed", "10"],
        "[episodes]\ncooldown = 5\n[events]\ndrain_seconds = 30\n",
    );
    std::thread::sleep(Duration::from_secs(3));
    nodes[0].kill();
    let run = finish(dir.path(), child);
    let file = lines(&run.events_file);
    assert_delivered(&file, &read_stream(&urls[1..]));
    assert_eq!(run.summary["nats"]["left_bytes"], 0);
}

#[test]
fn a_full_spool_counts_what_it_drops_and_sends_the_rest_later() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there yet
    let target = format!("nats://127.0.0.1:{port}/{SUBJECT}");
    let pcap = dir.path().join("burst.pcap");
    paced_capture(&pcap, 40);
    // About 4 KB of spool: a handful of the 80 events fit.
    let cfg = "[events]\nspool_mib = 0.004\ndrain_seconds = 1\n";
    let run = finish(dir.path(), replay(dir.path(), std::slice::from_ref(&target), &pcap, &[], cfg));
    let file = lines(&run.events_file);
    let n = &run.summary["nats"];
    let (spooled, dropped) = (n["spooled"].as_u64().unwrap(), n["dropped"].as_u64().unwrap());
    assert_eq!(spooled + dropped, file.len() as u64, "{n}");
    assert!(spooled >= 1 && dropped >= 1, "{n}");
    assert_eq!(n["acknowledged"], 0);
    let log = std::fs::read_to_string(dir.path().join("netvigil.log")).unwrap();
    assert!(log.contains("event spool full"), "{log}");
    // The server comes up; the next start (nothing new to say) sends what waited.
    let server = Server::start_on(dir.path(), "late", port, &[]);
    let benign = common::cap("lab/benign_curl.pcap");
    let second = finish(dir.path(), replay(dir.path(), std::slice::from_ref(&target), &benign, &[], cfg));
    assert_eq!(lines(&run.events_file).len(), file.len(), "the benign capture adds no event");
    assert_eq!(second.summary["nats"]["left_bytes"], 0, "{}", second.summary["nats"]);
    let got: Vec<Value> = read_stream(&[server.url()]).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, file[..spooled as usize].to_vec(), "the oldest events were kept, in order");
}

#[test]
fn the_example_cluster_config_is_valid() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/nats/nats-server-cluster.conf");
    let out = Command::new(nats_server()).arg("-c").arg(&conf).arg("-t").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
