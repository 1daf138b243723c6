//! The repository over time, with real etcd 3.5: delta segments under retention (forget
//! decides, prune deletes exactly what no kept backup needs, check finds gaps and damage),
//! consolidated full backups (hashkv equal to etcd's at that revision, the drill passes,
//! point-in-time restores after it replay only the segments that follow), `latest` in a
//! repository of several clusters, and drills and checks racing forget + prune.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{rt, Repo};
use testkit::{Cluster, ClusterOptions, EtcdVersion};

const CLUSTER: &str = "prod";

fn backup(repo: &Repo, c: &Cluster) -> (String, i64) {
    let v = repo.json(&["backup", "--cluster", CLUSTER, "--endpoints", &c.endpoints_csv()]);
    (v["id"].as_str().unwrap().to_string(), v["manifest"]["snapshot"]["revision"].as_i64().unwrap())
}

fn writes(c: &Cluster, n: usize, tag: &str) -> i64 {
    let mut rev = 0;
    for i in 0..n {
        rev = testkit::put(&c.endpoints(), &format!("/registry/configmaps/ns-{}/cm-{i}", i % 7), format!("{tag}-{i}-{}", "v".repeat(300)).as_bytes()).unwrap();
    }
    rev
}

fn source_hashkv(c: &Cluster, rev: i64) -> u32 {
    rt().block_on(async {
        let mut cl = etcd_client::Client::connect(c.endpoints(), None).await.unwrap();
        cl.hash_kv(rev).await.unwrap().hash()
    })
}

struct Capture {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<agent::capture::CaptureReport, agent::capture::CaptureError>>,
}

/// The agent's capture, in-process, cutting a segment every 200 ms of changes.
fn start_capture(repo: &Repo, c: &Cluster, base: &str, from: i64) -> Capture {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (url, pass) = (repo.url.clone(), repo.dir().join("repo.pass"));
    let (base, endpoints) = (base.to_string(), c.endpoints());
    let thread = std::thread::spawn(move || {
        rt().block_on(async move {
            let loc = repo::Location::open(&url, &repo::StoreOptions::default(), false).unwrap();
            let unlock = repo::Unlock { data: Some(repo::crypto::Secret::passphrase(std::fs::read(pass).unwrap()).unwrap()), bundle: None };
            let r = Arc::new(repo::Repository::open(loc, &unlock).await.unwrap());
            let conn = etcd_cluster::ConnConfig { endpoints, ..Default::default() };
            let mut opts = agent::capture::CaptureOptions::new(CLUSTER, &base, from);
            opts.policy = agent::capture::SegmentPolicy { interval: Duration::from_millis(200), max_bytes: 16 << 10 };
            agent::capture::capture(&conn, r, opts, rx).await
        })
    });
    Capture { stop, thread }
}

fn segments(repo: &Repo) -> Vec<repo::delta::SegmentRef> {
    rt().block_on(async { repo::delta::list_segments(&repo.open_lib().await, CLUSTER).await.unwrap() })
}

fn wait_captured(repo: &Repo, rev: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = segments(repo).iter().map(|s| s.last).max().unwrap_or(0);
        if last >= rev {
            return;
        }
        assert!(Instant::now() < deadline, "the capture reached {last} of {rev}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Point-in-time restore to `rev`; the restored member's hashkv at `rev`, computed offline.
fn pitr_hashkv(repo: &Repo, dir: &std::path::Path, rev: i64) -> (serde_json::Value, u32) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dd = dir.join(format!("pitr-{rev}-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let r = repo.json(&["restore", "--cluster", CLUSTER, "--at-revision", &rev.to_string(), "--data-dir", dd.to_str().unwrap()]);
    let db = bolt::Db::open(dd.join("member/snap/db")).unwrap();
    let h = etcd_data::hashkv::hash_kv(&db, Some(rev)).unwrap().hash;
    (r, h)
}

#[test]
fn deltas_under_retention_consolidation_and_latest() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let work = tempfile::tempdir().unwrap();
    writes(&c, 40, "a");
    let (b1, r1) = backup(&repo, &c);
    let cap = start_capture(&repo, &c, &b1, r1 + 1);
    let mut last = 0;
    for round in 0..6 {
        last = writes(&c, 25, &format!("r{round}"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_b2, r2) = backup(&repo, &c);
    for round in 6..10 {
        last = writes(&c, 25, &format!("r{round}"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_b3, r3) = backup(&repo, &c);
    for round in 10..14 {
        last = writes(&c, 25, &format!("r{round}"));
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_captured(&repo, last);
    let before = segments(&repo);
    eprintln!("{} segments over revisions {}..{last}; backups at {r1}, {r2}, {r3}", before.len(), r1 + 1);
    assert!(before.len() >= 10, "{before:?}");

    // forget --keep-last 2: exactly the segments ending at or before the oldest kept backup go.
    let expect: BTreeSet<String> = before.iter().filter(|s| s.last <= r2).map(|s| s.name.clone()).collect();
    assert!(!expect.is_empty());
    let dry = repo.json(&["forget", "--keep-last", "2", "--cluster", CLUSTER, "--dry-run"]);
    let listed: BTreeSet<String> = dry["deltas"][0]["remove"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, expect, "{dry}");
    assert_eq!(segments(&repo).len(), before.len(), "a dry run deletes nothing");
    let f = repo.json(&["forget", "--keep-last", "2", "--cluster", CLUSTER]);
    assert_eq!(f["removed"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(segments(&repo).len(), before.len(), "forget decides, prune deletes");
    let p = repo.json(&["prune", "--cluster", CLUSTER]);
    assert_eq!(p["segments_deleted"].as_u64().unwrap() as usize, expect.len(), "{p}");
    let after: BTreeSet<String> = segments(&repo).into_iter().map(|s| s.name).collect();
    let kept: BTreeSet<String> = before.iter().map(|s| s.name.clone()).filter(|n| !expect.contains(n)).collect();
    assert_eq!(after, kept);
    eprintln!("forget --keep-last 2 + prune: {} segments -> {}", before.len(), after.len());
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);

    // Point-in-time restores the kept window covers still equal the source.
    for rev in [r2 + 1, (r2 + r3) / 2, r3 + 3, last] {
        let (_, h) = pitr_hashkv(&repo, work.path(), rev);
        assert_eq!(h, source_hashkv(&c, rev), "hashkv at {rev}");
    }
    // Before the floor: refused, nothing written.
    let dd = work.path().join("too-old");
    let r = repo.q(&["restore", "--cluster", CLUSTER, "--at-revision", &(r2 - 1).to_string(), "--data-dir", dd.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(!dd.exists());

    // A deleted segment: check exits 3 naming the revisions lost; a tampered one: --read-data.
    let segs = segments(&repo);
    let root = PathBuf::from(repo.url.strip_prefix("file://").unwrap());
    let mid = &segs[segs.len() / 2];
    let path = root.join(&mid.name);
    let saved = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let r = repo.q(&["repo", "check", "--cluster", CLUSTER]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    // A segment of one revision is named as check names a one-revision gap.
    let lost = if mid.first == mid.last { format!("revision {} is", mid.first) } else { format!("revisions {}..{} are", mid.first, mid.last) };
    assert!(r.stdout.contains(&format!("{lost} missing")), "{}", r.stdout);
    std::fs::write(&path, &saved).unwrap();
    let mut bad = saved.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert_eq!(repo.q(&["repo", "check", "--cluster", CLUSTER]).code, 0, "names alone look fine");
    let r = repo.q(&["repo", "check", "--cluster", CLUSTER, "--read-data"]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(r.stdout.contains(&mid.name) && r.stdout.contains(&format!("revisions {}..{} lost", mid.first, mid.last)), "{}", r.stdout);
    std::fs::write(&path, &saved).unwrap();

    // Consolidation: a full backup at the end of the chain, built offline.
    let pitr_before = Instant::now();
    let (before_rep, _) = pitr_hashkv(&repo, work.path(), last);
    let pitr_before = pitr_before.elapsed();
    let cons = repo.json(&["backups", "consolidate", "--cluster", CLUSTER]);
    let m = &cons["backup"]["manifest"];
    assert_eq!(m["snapshot"]["revision"].as_i64().unwrap(), last, "{cons}");
    assert_eq!(m["consolidated"]["base_revision"].as_i64().unwrap(), r3, "{cons}");
    assert_eq!(m["snapshot"]["hash_kv"].as_u64().unwrap() as u32, source_hashkv(&c, last), "consolidated hashkv == etcd's at {last}");
    let id = cons["backup"]["id"].as_str().unwrap().to_string();
    let d = repo.json(&["drill", &id, "--etcd-bin", EtcdVersion::V3_5.etcd().to_str().unwrap()]);
    assert_eq!(d["ok"], true, "{d}");
    // More changes after it: a restore to the end replays only the segments after it.
    let mut end = last;
    for round in 14..16 {
        end = writes(&c, 25, &format!("r{round}"));
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_captured(&repo, end);
    let t = Instant::now();
    let (after_rep, h) = pitr_hashkv(&repo, work.path(), end);
    let took = t.elapsed();
    assert_eq!(h, source_hashkv(&c, end));
    assert_eq!(after_rep["base"].as_str().unwrap(), id, "{after_rep}");
    let after_segs = segments(&repo).iter().filter(|s| s.last > last).count();
    assert_eq!(after_rep["segments"].as_u64().unwrap() as usize, after_segs, "{after_rep}");
    eprintln!(
        "point-in-time restore to the end: before consolidation {} segments ({:.2}s); after it {} segments ({:.2}s)",
        before_rep["segments"],
        pitr_before.as_secs_f64(),
        after_rep["segments"],
        took.as_secs_f64()
    );
    let _ = cap.stop.send(true);
    let _ = cap.thread.join();

    // latest with several clusters: refused without --cluster; unknown clusters named.
    let snap = work.path().join("other.db");
    c.save_snapshot(&snap).unwrap();
    repo.ok(&["backup", "--cluster", "other", "--snapshot", snap.to_str().unwrap()]);
    for args in [
        vec!["backups", "show", "latest"],
        vec!["backups", "get", "latest", "-o", "/nonexistent/x.db"],
        vec!["restore", "latest", "--data-dir", "/nonexistent/d"],
    ] {
        let r = repo.q(&args);
        assert_eq!(r.code, 2, "{args:?}: {} {}", r.stdout, r.stderr);
        assert!(r.stderr.contains("2 clusters (other, prod)"), "{args:?}: {}", r.stderr);
    }
    let r = repo.q(&["restore", "--cluster", "nosuch", "latest", "--data-dir", work.path().join("n").to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("unknown cluster nosuch") && r.stderr.contains("other, prod"), "{}", r.stderr);
    let show = repo.json(&["backups", "show", "latest", "--cluster", "prod"]);
    assert_eq!(show["id"].as_str().unwrap(), id);
}

#[test]
fn drills_and_checks_racing_forget_and_prune() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Arc::new(Repo::local());
    let work = tempfile::tempdir().unwrap();
    writes(&c, 30, "base");
    backup(&repo, &c);
    let etcd = EtcdVersion::V3_5.etcd().to_str().unwrap().to_string();
    for round in 0..20 {
        writes(&c, 10, &format!("round-{round}"));
        let snap = work.path().join(format!("s{round}.db"));
        c.save_snapshot(&snap).unwrap();
        let (r1, e1) = (repo.clone(), etcd.clone());
        let drill = std::thread::spawn(move || r1.q(&["drill", "--latest", "--cluster", CLUSTER, "--etcd-bin", &e1, "--retry-lock", "120s", "-w", "json"]));
        let r2 = repo.clone();
        let check = std::thread::spawn(move || r2.q(&["repo", "check", "--read-data", "--retry-lock", "120s"]));
        repo.ok(&["backup", "--cluster", CLUSTER, "--snapshot", snap.to_str().unwrap(), "--retry-lock", "120s"]);
        repo.ok(&["forget", "--keep-last", "2", "--cluster", CLUSTER, "--prune", "--retry-lock", "120s"]);
        let d = drill.join().unwrap();
        let k = check.join().unwrap();
        // A drill whose backup was forgotten before it read it fails to run (exit 1, nothing
        // recorded); it never reports damage that is not there.
        if d.code == 0 {
            let v: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
            assert_eq!(v["ok"], true, "round {round}: {v}");
        } else {
            assert!(d.code == 1 && d.stderr.contains("was forgotten before it could be read"), "round {round}: {} {}", d.code, d.stderr);
        }
        assert_eq!(k.code, 0, "round {round}: check reported damage: {} {}", k.stdout, k.stderr);
    }
    let list = repo.json(&["backups", "list", "--cluster", CLUSTER]);
    assert!(list["backups"].as_array().unwrap().iter().all(|b| b["last_drill"].is_null() || b["last_drill"]["ok"] == true), "no failed drill recorded: {list}");
}

/// `forget --keep-pitr`: the backup a point-in-time window replays from is kept even when the
/// policy alone would drop it, the segments before it go, and restores into the window work.
#[test]
fn keep_pitr_keeps_the_window_base() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let work = tempfile::tempdir().unwrap();
    writes(&c, 20, "a");
    let (b1, r1) = backup(&repo, &c);
    let cap = start_capture(&repo, &c, &b1, r1 + 1);
    writes(&c, 30, "b");
    std::thread::sleep(Duration::from_millis(400));
    let (b2, r2) = backup(&repo, &c);
    writes(&c, 30, "c");
    std::thread::sleep(Duration::from_secs(4));
    let (b3, r3) = backup(&repo, &c);
    let last = writes(&c, 30, "d");
    wait_captured(&repo, last);
    let _ = cap.stop.send(true);
    let _ = cap.thread.join();
    // A window that starts midway between b2 and b3 (as their manifests record them, seconds
    // apart): b2 is its base. Measured now, not assumed: a loaded machine takes seconds for the
    // steps above.
    let list = repo.json(&["backups", "list", "--cluster", CLUSTER]);
    let time = |id: &str| -> chrono::DateTime<chrono::Utc> {
        let b = list["backups"].as_array().unwrap().iter().find(|b| b["id"] == id).unwrap();
        b["time"].as_str().unwrap().parse().unwrap()
    };
    let (t2, t3) = (time(&b2), time(&b3));
    assert!(t3 - t2 >= chrono::Duration::seconds(3), "b2 at {t2}, b3 at {t3}");
    let mid = t2 + (t3 - t2) / 2;
    let window = ((chrono::Utc::now() - mid).num_milliseconds() + 500) / 1000;
    let f = repo.json(&["forget", "--keep-last", "1", "--keep-pitr", &format!("{window}s"), "--cluster", CLUSTER]);
    let d = f["decisions"].as_array().unwrap();
    let of = |id: &str| d.iter().find(|x| x["id"] == id).unwrap().clone();
    assert_eq!(of(&b3)["keep"], true, "{f}");
    assert_eq!(of(&b2)["keep"], true, "{f}");
    assert!(of(&b2)["reasons"].as_array().unwrap().iter().any(|r| r == "pitr base"), "{f}");
    assert_eq!(of(&b1)["keep"], false, "{f}");
    assert_eq!(f["deltas"][0]["floor"].as_i64().unwrap(), r2, "{f}");
    repo.ok(&["prune", "--cluster", CLUSTER]);
    assert!(segments(&repo).iter().all(|s| s.last > r2), "segments up to {r2} deleted");
    for rev in [r2 + 1, (r2 + r3) / 2, last] {
        let (_, h) = pitr_hashkv(&repo, work.path(), rev);
        assert_eq!(h, source_hashkv(&c, rev), "hashkv at {rev}");
    }
    // A window reaching before every backup keeps the oldest one as its base.
    let f = repo.json(&["forget", "--keep-last", "1", "--keep-pitr", "1h", "--cluster", CLUSTER]);
    assert_eq!(f["removed"].as_array().unwrap().len(), 0, "{f}");
    assert_eq!(f["deltas"][0]["floor"].as_i64().unwrap(), r2, "{f}");
    assert_eq!(repo.q(&["repo", "check", "--read-data"]).code, 0);
}
