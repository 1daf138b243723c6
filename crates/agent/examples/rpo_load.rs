//! The writer and the checker of `bench/rpo.sh` (the recovery point after losing a cluster).
//!
//! ```text
//! rpo_load write --endpoints URL[,URL..] --acks FILE [--rate 1000] [--streams 32] [--duration-secs 300] [--give-up-secs 2]
//!     puts of unique keys /rpo/<stream>/<seq> (100-byte values) paced to --rate in total; each
//!     acknowledged put is logged as "key revision unix-ms"; stops after --duration-secs, or
//!     once no put has succeeded for --give-up-secs (2; the cluster is gone). A soak sets it
//!     high so a frozen or restarting member only pauses the writer.
//! rpo_load check --endpoints URL --acks FILE --revision R [--kill-ms MS]
//!     reads /rpo/ at R from a restored member and prints one line of key=value figures:
//!     acked, lost (acknowledged puts missing), lost_span_ms (first to last lost
//!     acknowledgement), window_ms (first lost acknowledgement to the kill), rate. Exits 1 if an
//!     acknowledged put at or below R is missing or differs (that would be a capture bug).
//! ```
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, ConnectOptions, GetOptions};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn usage() -> ! {
    eprintln!("usage: rpo_load write --endpoints E --acks FILE [--rate N] [--streams N] [--duration-secs N] [--give-up-secs N]\n       rpo_load check --endpoints E --acks FILE --revision R [--kill-ms MS]");
    std::process::exit(2)
}

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| usage());
    let mut m = HashMap::new();
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else { usage() };
        m.insert(k.to_string(), it.next().unwrap_or_else(|| usage()));
    }
    (cmd, m)
}

fn num<T: std::str::FromStr>(m: &HashMap<String, String>, k: &str, default: Option<T>) -> T {
    match m.get(k) {
        Some(v) => v.parse().unwrap_or_else(|_| usage()),
        None => default.unwrap_or_else(|| usage()),
    }
}

async fn connect(m: &HashMap<String, String>) -> Client {
    let eps: Vec<String> = m.get("endpoints").unwrap_or_else(|| usage()).split(',').map(str::to_string).collect();
    let opts = ConnectOptions::new().with_timeout(Duration::from_secs(3)).with_connect_timeout(Duration::from_secs(2));
    Client::connect(eps, Some(opts)).await.unwrap_or_else(|e| {
        eprintln!("rpo_load: connect: {e}");
        std::process::exit(1)
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (cmd, m) = args();
    let acks_path = m.get("acks").cloned().unwrap_or_else(|| usage());
    match cmd.as_str() {
        "write" => write(&m, &acks_path).await,
        "check" => check(&m, &acks_path).await,
        _ => usage(),
    }
}

async fn write(m: &HashMap<String, String>, acks_path: &str) {
    let rate: u64 = num(m, "rate", Some(1000));
    let streams: u64 = num(m, "streams", Some(32));
    let duration = Duration::from_secs(num(m, "duration-secs", Some(300)));
    let give_up_ms: i64 = num::<i64>(m, "give-up-secs", Some(2)) * 1000;
    let cl = connect(m).await;
    let acks: Arc<Mutex<Vec<(String, i64, i64)>>> = Arc::default();
    let last_ok = Arc::new(AtomicI64::new(now_ms()));
    let gone = Arc::new(AtomicBool::new(false));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|s| {
            let (mut cl, acks, last_ok, gone) = (cl.clone(), acks.clone(), last_ok.clone(), gone.clone());
            tokio::spawn(async move {
                for seq in 0u64.. {
                    let due = start + Duration::from_micros((seq * streams + s) * 1_000_000 / rate);
                    if due.duration_since(start) >= duration || gone.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::time::sleep_until(due).await;
                    let key = format!("/rpo/{s:03}/{seq:09}");
                    match cl.put(key.clone(), vec![b'v'; 100], None).await {
                        Ok(r) => {
                            let ms = now_ms();
                            last_ok.store(ms, Ordering::SeqCst);
                            acks.lock().unwrap().push((key, r.header().map(|h| h.revision()).unwrap_or(0), ms));
                        }
                        Err(_) => {
                            if now_ms() - last_ok.load(Ordering::SeqCst) > give_up_ms {
                                gone.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let mut f = std::io::BufWriter::new(std::fs::File::create(acks_path).unwrap());
    for (k, r, ms) in &acks {
        writeln!(f, "{k} {r} {ms}").unwrap();
    }
    f.flush().unwrap();
    let secs = match (acks.iter().map(|a| a.2).min(), acks.iter().map(|a| a.2).max()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1000.0,
        _ => 0.0,
    };
    println!("acked={} seconds={secs:.1} rate={:.0} cluster_gone={}", acks.len(), acks.len() as f64 / secs.max(0.001), gone.load(Ordering::SeqCst));
}

async fn check(m: &HashMap<String, String>, acks_path: &str) {
    let revision: i64 = num(m, "revision", None);
    let kill_ms: i64 = num(m, "kill-ms", Some(0));
    let mut cl = connect(m).await;
    // Every /rpo/ key at `revision`, in pages (keys only: the mod revision is what counts).
    let mut present: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut from = b"/rpo/".to_vec();
    loop {
        let opts = GetOptions::new().with_range(b"/rpo0".to_vec()).with_limit(5000).with_keys_only().with_revision(revision);
        let r = cl.get(from.clone(), Some(opts)).await.unwrap_or_else(|e| {
            eprintln!("rpo_load: read: {e}");
            std::process::exit(1)
        });
        for kv in r.kvs() {
            present.insert(kv.key().to_vec(), kv.mod_revision());
        }
        match r.kvs().last() {
            Some(kv) if r.more() => {
                from = kv.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    let file = std::fs::File::open(acks_path).unwrap_or_else(|e| {
        eprintln!("rpo_load: {acks_path}: {e}");
        std::process::exit(1)
    });
    let (mut acked, mut lost, mut bad) = (0u64, Vec::new(), 0u64);
    let (mut first_ms, mut last_ms) = (i64::MAX, 0i64);
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap();
        let mut p = line.split(' ');
        let (Some(k), Some(r), Some(ms)) = (p.next(), p.next().and_then(|r| r.parse::<i64>().ok()), p.next().and_then(|m| m.parse::<i64>().ok())) else {
            continue;
        };
        acked += 1;
        first_ms = first_ms.min(ms);
        last_ms = last_ms.max(ms);
        match present.get(k.as_bytes()) {
            Some(&got) if got == r => {}
            Some(&got) => {
                bad += 1;
                eprintln!("rpo_load: {k} acknowledged at revision {r}, restored at {got}");
            }
            None if r > revision => lost.push(ms),
            None => {
                bad += 1;
                eprintln!("rpo_load: {k} (revision {r}) is missing below the restored revision {revision}");
            }
        }
    }
    let span = match (lost.iter().min(), lost.iter().max()) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    let window = match lost.iter().min() {
        Some(a) if kill_ms > 0 => kill_ms - a,
        _ => 0,
    };
    let rate = acked as f64 / ((last_ms - first_ms).max(1) as f64 / 1000.0);
    println!("acked={acked} rate={rate:.0} restored_revision={revision} lost={} lost_span_ms={span} window_ms={window} bad={bad}", lost.len());
    if bad > 0 {
        std::process::exit(1);
    }
}
