//! The agent's recovery point with real etcd 3.5 and an S3 repository (moto), one agent
//! capturing deltas every 0.5 s:
//! * a repository outage (the agent's connection to S3 cut for 60 s by a TCP relay in front of
//!   moto, which keeps its in-memory bucket) while a writer runs: the capture goes on into the
//!   local spool (metrics show it growing), the spool drains once S3 answers again, the chain
//!   has no gap, and a point-in-time restore at the last written revision equals the source;
//! * the recovery point after losing the whole cluster: a writer at ~1000 acknowledged puts/s,
//!   kill -9 of every member at a random moment, then a restore to the newest captured
//!   revision; the acknowledged writes missing from it must span at most 1 s.
//!
//! `RPO_OUTAGE_SECS` shortens the outage (default 60).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::Repo;
use rand::Rng;
use testkit::servers::S3Server;
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion};

const CLUSTER: &str = "rpo";

/// The two scenarios measure timing: never both at once.
static SERIAL: Mutex<()> = Mutex::new(());

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// A TCP relay in front of moto: `cut` closes every open connection and refuses new ones (accepts
// and closes them at once), `restore` relays again. moto keeps its state in memory, so it must
// stay up: only the agent's path to it goes down.

struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let done = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>> = Arc::default();
        let (up2, done2, conns2) = (up.clone(), done.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            let next = AtomicU64::new(0);
            for client in listener.incoming() {
                if done2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let id = next.fetch_add(1, Ordering::SeqCst);
                conns2.lock().unwrap().insert(id, (client.try_clone().unwrap(), server.try_clone().unwrap()));
                let left = Arc::new(AtomicU64::new(2));
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                    let (left, conns) = (left.clone(), conns2.clone());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                        if left.fetch_sub(1, Ordering::SeqCst) == 1 {
                            conns.lock().unwrap().remove(&id);
                        }
                    });
                }
            }
        });
        Relay { port, up, done, conns, thread: Some(thread) }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for (_, (a, b)) in self.conns.lock().unwrap().drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The agent.

struct Agent {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(dir: &Path, endpoints: &[String], repo: &Repo, s3_endpoint: &str) -> Agent {
        let port = free_port();
        let cfg = format!(
            "cluster: {CLUSTER}\nname: a0\nendpoints: [{}]\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: 2}}\n\
             repo: {{url: '{}', password_file: '{}', endpoint: '{s3_endpoint}', region: '{}'}}\n\
             backup: {{schedule: '0 0 1 1 *', from: endpoints}}\ndefrag: {{enabled: false}}\n\
             delta: {{interval_seconds: 0.5, spool_dir: '{}', spool_max_mib: 256}}\n",
            endpoints.join(", "),
            repo.url,
            repo.dir().join("repo.pass").display(),
            S3Server::REGION,
            dir.join("spool").display(),
        );
        let path = dir.join("agent.yaml");
        std::fs::write(&path, cfg).unwrap();
        let log = dir.join("agent.log");
        let mut c = crate::common::quorum();
        c.args(["agent", "--config", path.to_str().unwrap()]).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in &repo.envs {
            c.env(k, v);
        }
        Agent { child: c.spawn().unwrap(), port, log }
    }

    fn metrics_text(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split_once("\r\n\r\n").map(|x| x.1.to_string())
    }

    /// Unlabelled samples by name.
    fn metrics(&self) -> BTreeMap<String, f64> {
        let text = self.metrics_text().unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    fn get(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(f64::NAN)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the agent leads and captures.
    fn wait_capturing(&self) {
        let t = Instant::now();
        while self.get("quorum_capture_running") != 1.0 {
            assert!(t.elapsed() < Duration::from_secs(60), "the agent does not capture:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Prometheus' own text parser (the Python client's) accepts the spool metrics.
fn check_with_prometheus_parser(text: &str) {
    let py = testkit::servers::tools_dir().join("pyenv/bin/python");
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
names = {f.name for f in text_string_to_metric_families(sys.stdin.read())}
want = {"quorum_delta_spool_bytes", "quorum_delta_spool_segments", "quorum_delta_spool_full",
        "quorum_delta_spool_oldest_age_seconds", "quorum_delta_spool_max_bytes", "quorum_delta_spool_upload_failures",
        "quorum_rpo_lag_seconds", "quorum_last_delta_revision"}
missing = want - names
assert not missing, missing
"#;
    let mut c = std::process::Command::new(py).args(["-c", script]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "the Prometheus parser: {}\n{text}", String::from_utf8_lossy(&out.stderr));
}

fn s3_repo(s3: &S3Server, bucket: &str) -> Repo {
    s3.create_bucket(bucket).unwrap();
    let flags = vec!["--endpoint".into(), s3.endpoint(), "--region".into(), S3Server::REGION.into()];
    let envs =
        vec![("AWS_ACCESS_KEY_ID".to_string(), S3Server::ACCESS_KEY.to_string()), ("AWS_SECRET_ACCESS_KEY".to_string(), S3Server::SECRET_KEY.to_string())];
    Repo::init(format!("s3://{bucket}/etcd/{CLUSTER}"), flags, envs, tempfile::tempdir().unwrap())
}

/// `backups deltas`: (exit code, contiguous end, gaps).
fn deltas(repo: &Repo) -> (i32, i64, serde_json::Value) {
    let r = repo.q(&["backups", "deltas", "--cluster", CLUSTER, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {} {}", r.stdout, r.stderr));
    (r.code, v["chain"]["contiguous_to"].as_i64().unwrap(), v["chain"]["gaps"].clone())
}

/// `quorum restore --at-revision R` into `dir`, started as a one-member cluster.
fn pitr_restore(repo: &Repo, dir: &Path, rev: i64) -> Cluster {
    let (plans, initial) = plan_members(dir, 1).unwrap();
    let (dd, rs) = (plans[0].data_dir.display().to_string(), rev.to_string());
    let args = [
        "restore",
        "--cluster",
        CLUSTER,
        "--at-revision",
        &rs,
        "--name",
        "m0",
        "--initial-cluster",
        &initial,
        "--initial-advertise-peer-urls",
        &plans[0].peer_url,
        "--initial-cluster-token",
        "pitr",
        "--data-dir",
        &dd,
        "-w",
        "json",
    ];
    let out = repo.ok(&args);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["target_revision"].as_i64(), Some(rev), "{report}");
    Cluster::start_planned(&ClusterOptions::new(EtcdVersion::V3_5, 1), dir, &plans, &initial, "pitr").unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn client(endpoints: &[String]) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(3)).with_connect_timeout(Duration::from_secs(2));
    etcd_client::Client::connect(endpoints, Some(opts)).await.unwrap()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn repository_outage_spools_then_drains_without_gap() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let outage = Duration::from_secs(std::env::var("RPO_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let t0 = Instant::now();
    let s3 = S3Server::start().unwrap();
    let relay = Relay::start(s3.port());
    let repo = s3_repo(&s3, "outage");
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &c.endpoints(), &repo, &relay.endpoint());
    agent.wait_capturing();

    // The writer: ~200 changes/s (puts over 500 keys, every 10th a delete), until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let last_rev = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, last_rev, eps) = (stop.clone(), last_rev.clone(), c.endpoints());
        std::thread::spawn(move || {
            rt().block_on(async move {
                let mut cl = client(&eps).await;
                let mut i = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let k = format!("/outage/{:03}", (i * 7) % 500);
                    let r = if i % 10 == 9 {
                        cl.delete(k, None).await.map(|r| r.header().map(|h| h.revision()))
                    } else {
                        cl.put(k, format!("value {i}").repeat(1 + (i % 20) as usize), None).await.map(|r| r.header().map(|h| h.revision()))
                    };
                    if let Ok(Some(rev)) = r {
                        last_rev.fetch_max(rev as u64, Ordering::SeqCst);
                    }
                    i += 1;
                }
                i
            })
        })
    };

    // Before the outage: segments flow, the spool stays (nearly) empty.
    std::thread::sleep(Duration::from_secs(5));
    let m = agent.metrics();
    assert!(m["quorum_last_delta_revision"] > 1.0, "{m:?}");
    assert!(m["quorum_delta_spool_segments"] <= 3.0, "{m:?}");
    assert_eq!(m["quorum_delta_spool_max_bytes"], (256u64 << 20) as f64);

    // The outage.
    relay.cut();
    let cut = Instant::now();
    let uploaded_at_cut = agent.get("quorum_last_delta_revision");
    let mut during: Vec<(f64, f64, f64, f64)> = Vec::new(); // (s, spool bytes, spool segments, oldest age)
    while cut.elapsed() < outage {
        std::thread::sleep(Duration::from_secs(2));
        let m = agent.metrics();
        during.push((cut.elapsed().as_secs_f64(), m["quorum_delta_spool_bytes"], m["quorum_delta_spool_segments"], m["quorum_delta_spool_oldest_age_seconds"]));
        assert_eq!(m["quorum_capture_running"], 1.0, "the capture stopped during the outage:\n{}", agent.log_text());
    }
    let end = agent.metrics();
    relay.restore();
    let restored = Instant::now();
    let (first, last) = (during[1], *during.last().unwrap());
    eprintln!(
        "outage {}s: spool {} -> {} segments, {} -> {} bytes; oldest {:.1}s; rpo_lag {:.1}s; last uploaded revision {} (at the cut {uploaded_at_cut}); upload failures {}",
        outage.as_secs(),
        first.2,
        last.2,
        first.1,
        last.1,
        last.3,
        end["quorum_rpo_lag_seconds"],
        end["quorum_last_delta_revision"],
        end["quorum_delta_spool_upload_failures_total"]
    );
    assert!(last.2 >= first.2 + outage.as_secs_f64(), "the spool did not grow by about one segment per 0.5 s: {during:?}");
    assert!(last.1 > first.1, "{during:?}");
    assert!(during.windows(2).all(|w| w[1].2 >= w[0].2), "the spool shrank during the outage: {during:?}");
    assert!(last.3 >= outage.as_secs_f64() - 8.0, "oldest spooled segment age {}", last.3);
    assert!(end["quorum_delta_spool_upload_failures_total"] >= 1.0);
    assert_eq!(end["quorum_delta_spool_full"], 0.0);
    // The observer refreshes the RPO lag every 10 s: it counts the un-uploaded time.
    assert!(end["quorum_rpo_lag_seconds"] >= outage.as_secs_f64() - 15.0, "rpo lag {} after a {}s outage", end["quorum_rpo_lag_seconds"], outage.as_secs());
    assert!(end["quorum_last_delta_revision"] <= uploaded_at_cut + 2000.0);
    check_with_prometheus_parser(&agent.metrics_text().unwrap());

    // After: the spool drains (the uploader's back-off is at most 30 s).
    let mut peak = last.2;
    loop {
        let m = agent.metrics();
        peak = peak.max(m["quorum_delta_spool_segments"]);
        if m["quorum_delta_spool_segments"] == 0.0 && m["quorum_delta_spool_bytes"] == 0.0 {
            break;
        }
        assert!(restored.elapsed() < Duration::from_secs(120), "the spool does not drain: {m:?}\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    let drained = restored.elapsed();
    stop.store(true, Ordering::SeqCst);
    let ops = writer.join().unwrap();
    let last_written = last_rev.load(Ordering::SeqCst) as i64;
    let t = Instant::now();
    while (agent.get("quorum_last_delta_revision") as i64) < last_written {
        assert!(t.elapsed() < Duration::from_secs(30), "the capture does not reach revision {last_written}:\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = agent.log_text();
    assert!(log.contains("repository reachable again"), "{log}");
    eprintln!("spool drained {:.1}s after S3 came back (peak {peak} segments); writer: {ops} operations up to revision {last_written}", drained.as_secs_f64());

    // No gap; the restore at the last written revision equals the source there.
    let (code, to, gaps) = deltas(&repo);
    assert_eq!(code, 0, "backups deltas reports a gap: {gaps}");
    assert_eq!(gaps, serde_json::json!([]));
    assert!(to >= last_written, "chain to {to}, written {last_written}");
    drop(agent);
    let (at, want) = testkit::dump(&c.endpoints(), last_written).unwrap();
    assert_eq!(at, last_written);
    let rdir = tempfile::tempdir().unwrap();
    let restored = pitr_restore(&repo, rdir.path(), last_written);
    let (at, got) = testkit::dump(&restored.endpoints(), 0).unwrap();
    assert_eq!(at, last_written);
    assert!(got == want, "restore at {last_written}: {} keys, source {} keys", got.len(), want.len());
    eprintln!("restore at revision {last_written} equals the source ({} keys); total {:.1}s", got.len(), t0.elapsed().as_secs_f64());
}

/// One acknowledged put.
#[derive(Clone)]
struct Ack {
    key: String,
    revision: i64,
    ms: i64,
}

#[test]
fn rpo_after_losing_the_whole_cluster_is_under_one_second() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let s3 = S3Server::start().unwrap();
    let repo = s3_repo(&s3, "rpo");
    let mut c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &c.endpoints(), &repo, &s3.endpoint());
    agent.wait_capturing();

    // The writer: 32 concurrent streams of puts of unique keys, paced to 1000/s in total.
    const STREAMS: u64 = 32;
    const RATE: u64 = 1000;
    let killed = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let writer = {
        let (killed, acks, eps) = (killed.clone(), acks.clone(), c.endpoints());
        std::thread::spawn(move || {
            rt().block_on(async move {
                let cl = client(&eps).await;
                let start = tokio::time::Instant::now();
                let tasks: Vec<_> = (0..STREAMS)
                    .map(|s| {
                        let (mut cl, killed, acks) = (cl.clone(), killed.clone(), acks.clone());
                        tokio::spawn(async move {
                            let mut failed = 0u64;
                            for seq in 0u64.. {
                                if killed.load(Ordering::SeqCst) {
                                    break;
                                }
                                let due = start + Duration::from_micros((seq * STREAMS + s) * 1_000_000 / RATE);
                                tokio::time::sleep_until(due).await;
                                let key = format!("/rpo/{s:02}/{seq:08}");
                                match cl.put(key.clone(), vec![b'v'; 100], None).await {
                                    Ok(r) => {
                                        let revision = r.header().map(|h| h.revision()).unwrap_or(0);
                                        acks.lock().unwrap().push(Ack { key, revision, ms: now_ms() });
                                    }
                                    Err(_) => failed += 1,
                                }
                            }
                            failed
                        })
                    })
                    .collect();
                let mut failed = 0;
                for t in tasks {
                    failed += t.await.unwrap();
                }
                failed
            })
        })
    };
    let run = Duration::from_millis(20_000 + rand::rng().random_range(0..3000));
    std::thread::sleep(run);
    let before_kill = acks.lock().unwrap().len();
    for m in &mut c.members {
        m.kill();
    }
    let kill_ms = now_ms();
    killed.store(true, Ordering::SeqCst);
    let failed = writer.join().unwrap();
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let first_ms = acks.iter().map(|a| a.ms).min().unwrap();
    let rate = before_kill as f64 / run.as_secs_f64();
    eprintln!("writer: {} acknowledged puts in {:.1}s ({rate:.0}/s), {failed} failed (at the kill)", acks.len(), (kill_ms - first_ms) as f64 / 1000.0);
    assert!(rate >= 700.0, "the writer reached only {rate:.0} puts/s");

    // The agent writes what it received: wait until its spool is empty and the uploaded
    // revision stops moving, then stop it.
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let mut prev = -1.0;
    let captured = loop {
        let m = agent.metrics();
        let r = m["quorum_last_delta_revision"];
        if m["quorum_delta_spool_segments"] == 0.0 && r == prev {
            break r as i64;
        }
        prev = r;
        assert!(t.elapsed() < Duration::from_secs(60), "the agent does not settle: {m:?}\n{}", agent.log_text());
        std::thread::sleep(Duration::from_secs(1));
    };
    drop(agent);

    // The newest captured revision, restored.
    let (code, to, gaps) = deltas(&repo);
    assert_eq!(code, 0, "gap: {gaps}");
    assert_eq!(to, captured, "the chain's end and the agent's last uploaded revision");
    let rdir = tempfile::tempdir().unwrap();
    let restored = pitr_restore(&repo, rdir.path(), to);
    let (at, kvs) = testkit::dump(&restored.endpoints(), 0).unwrap();
    assert_eq!(at, to);
    let present: HashMap<String, i64> = kvs.into_iter().map(|kv| (String::from_utf8(kv.key).unwrap(), kv.mod_revision)).collect();
    let mut lost: Vec<&Ack> = Vec::new();
    for a in &acks {
        match present.get(&a.key) {
            Some(&rev) => assert_eq!(rev, a.revision, "{} restored at another revision", a.key),
            None => {
                assert!(a.revision > to, "{} (revision {}) is missing below the restored revision {to}", a.key, a.revision);
                lost.push(a);
            }
        }
    }
    assert!(acks.iter().filter(|a| a.revision > to).all(|a| !present.contains_key(&a.key)));
    let span_ms = match (lost.iter().map(|a| a.ms).min(), lost.iter().map(|a| a.ms).max()) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    let window_ms = lost.iter().map(|a| a.ms).min().map(|a| kill_ms - a).unwrap_or(0);
    let newest_ack = acks.iter().map(|a| a.revision).max().unwrap();
    eprintln!(
        "RPO: {} of {} acknowledged writes lost (revisions {}..{newest_ack}; restored to {to}); they span {span_ms} ms of acknowledgements, the first {window_ms} ms before the kill; total {:.1}s",
        lost.len(),
        acks.len(),
        to + 1,
        t0.elapsed().as_secs_f64()
    );
    assert!(span_ms <= 1000, "{} acknowledged writes over {span_ms} ms were lost", lost.len());
}
