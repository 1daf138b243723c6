//! `quorum agent` with real etcd 3.5: three agents beside a 3-member cluster elect one leader
//! through etcd; the leader takes scheduled backups into the repository; every agent's
//! /metrics parses with Prometheus' own text parser (the Python client's) and agrees with the
//! cluster; kill -9 the leading agent and another leads within 2x the lease TTL and goes on
//! backing up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http_get, Repo};
use testkit::{Cluster, ClusterOptions, EtcdVersion};

const TTL: u64 = 2;

struct Agent {
    child: Child,
    port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parse with prometheus_client's text parser: {name{labels}: value}.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let py = testkit::servers::tools_dir().join("pyenv/bin/python");
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut c = std::process::Command::new(py).args(["-c", script]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "the Prometheus parser rejected /metrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn start_agent(dir: &Path, name: &str, c: &Cluster, repo: &Repo) -> Agent {
    let port = free_port();
    let cfg = format!(
        "cluster: t\nname: {name}\nendpoints: [{}]\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: {TTL}}}\n\
         repo: {{url: '{}', password_file: '{}'}}\nbackup: {{schedule: '*/3 * * * * *', from: follower}}\n\
         defrag: {{enabled: true, interval_seconds: 3600}}\ndelta: {{interval_seconds: 0.5}}\n",
        c.endpoints().join(", "),
        repo.url,
        repo.dir().join("repo.pass").display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = crate::common::quorum().args(["agent", "--config", path.to_str().unwrap()]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    Agent { child, port }
}

fn leaders(agents: &[Option<Agent>]) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let a = a.as_ref()?;
            let (_, _, body) = http_get(a.port, "/metrics")?;
            body.lines().any(|l| l.trim() == "quorum_agent_is_leader 1").then_some(i)
        })
        .collect()
}

#[test]
fn three_agents_one_leader_backups_metrics_failover() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    for i in 0..200 {
        testkit::put(&c.endpoints(), &format!("/registry/configmaps/default/cm-{i}"), &vec![b'x'; 1000]).unwrap();
    }
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let mut agents: Vec<Option<Agent>> = (0..3).map(|i| Some(start_agent(dir.path(), &format!("a{i}"), &c, &repo))).collect();

    // Exactly one leader.
    let t = Instant::now();
    let leader = loop {
        let l = leaders(&agents);
        if l.len() == 1 {
            break l[0];
        }
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        assert!(t.elapsed() < Duration::from_secs(30), "no leader after 30s; logs in {}", dir.path().display());
        std::thread::sleep(Duration::from_millis(100));
    };
    // Health endpoints.
    let port = agents[leader].as_ref().unwrap().port;
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    let t = Instant::now();
    while http_get(port, "/readyz").unwrap().0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Scheduled backups by the leader.
    let t = Instant::now();
    while repo.backup_ids().len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(40), "no scheduled backups; logs in {}", dir.path().display());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Metrics parse and agree with the cluster.
    let m = parse_metrics(&http_get(port, "/metrics").unwrap().2);
    assert_eq!(m["quorum_agent_is_leader"], 1.0);
    assert!(m["quorum_last_full_backup_revision"] >= 201.0, "{m:?}");
    let status = crate::common::run({
        let mut q = crate::common::quorum();
        q.args(["status", "--endpoints", &c.endpoints_csv(), "-w", "json"]);
        q
    });
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for s in status["statuses"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let db = m[&format!("quorum_etcd_db_size_bytes{{member=\"{name}\"}}")];
        let want = s["db_size"].as_f64().unwrap();
        assert!((db - want).abs() <= want * 0.1, "{name}: metrics db size {db}, status {want}");
        assert_eq!(m[&format!("quorum_etcd_quota_bytes{{member=\"{name}\"}}")], s["quota"].as_f64().unwrap());
        assert_eq!(m[&format!("quorum_etcd_member_healthy{{member=\"{name}\"}}")], 1.0);
        let frag = m[&format!("quorum_etcd_fragmentation_ratio{{member=\"{name}\"}}")];
        assert!((0.0..=1.0).contains(&frag));
    }
    assert!(m["quorum_operation_runs_total{operation=\"backup\"}"] >= 2.0, "{m:?}");
    // Followers export the cluster too, and are not leaders.
    for (i, a) in agents.iter().enumerate().filter(|(i, _)| *i != leader) {
        let fm = parse_metrics(&http_get(a.as_ref().unwrap().port, "/metrics").unwrap().2);
        assert_eq!(fm["quorum_agent_is_leader"], 0.0, "agent {i}");
    }

    // A writer through the failover, so the delta chain has something to carry across it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let eps = c.endpoints();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = testkit::put(&eps, &format!("/registry/configmaps/failover/cm-{}", i % 50), format!("v{i}").as_bytes());
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            i
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // kill -9 the leader: another leads within 2x the TTL and backs up.
    let ids_before = repo.backup_ids();
    let before = ids_before.len();
    // The chain is checked from the newest backup before the kill. Not from the oldest: two
    // backups can fall in one second (an initial and a scheduled one), and the capture starts
    // after the later of them (`latest`), so the older one's chain lacks that one revision,
    // which the later backup holds.
    let base = ids_before[0].clone();
    let mut dead = agents[leader].take().unwrap();
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let killed = Instant::now();
    let new_leader = loop {
        let l = leaders(&agents);
        if l.len() == 1 {
            break l[0];
        }
        assert!(killed.elapsed() < Duration::from_secs(TTL * 2 + 1), "no new leader within 2x TTL; logs in {}", dir.path().display());
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    assert_ne!(new_leader, leader);
    assert!(took <= Duration::from_secs(TTL * 2), "takeover took {took:?}");
    eprintln!("takeover after kill -9 of the leading agent: {took:?} (TTL {TTL}s)");
    let t = Instant::now();
    while repo.backup_ids().len() <= before {
        assert!(t.elapsed() < Duration::from_secs(30), "the new leader does not back up");
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = writer.join().unwrap();
    // Every revision up to the writer's last one must reach the chain, without a gap. Poll:
    // the capture trails etcd by its 0.5 s interval (and the agents' own election keys are
    // revisions too, so etcd's revision may move on meanwhile).
    let (written, _) = testkit::dump(&c.endpoints(), 0).unwrap();
    let t = Instant::now();
    let chain = loop {
        let chain = repo.q(&["backups", "deltas", "--cluster", "t", "--base", &base, "-w", "json"]);
        assert_eq!(chain.code, 0, "a gap in the delta chain across the failover: {} {}", chain.stdout, chain.stderr);
        let chain: serde_json::Value = serde_json::from_str(&chain.stdout).unwrap();
        if chain["chain"]["last_captured"].as_i64().unwrap_or(0) >= written || t.elapsed() > Duration::from_secs(20) {
            break chain;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let segs = chain["chain"]["segments"].as_array().unwrap().len();
    assert!(segs > 0, "no delta segments were captured: {chain}");
    let end = chain["chain"]["last_captured"].as_i64().unwrap();
    assert!(end >= written, "the chain ends at {end}, the writer's last revision is {written}");
    eprintln!("{writes} writes through the failover; {segs} delta segments, contiguous from the last backup before the failover to revision {end}");
    assert_eq!(repo.ok(&["repo", "check"]).code, 0);
}

#[test]
fn bad_config_names_the_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.yaml");
    std::fs::write(&p, "cluster: x\nrepo:\n  url: file:///tmp/x\nbackup:\n  schedule: 'sometimes'\n").unwrap();
    let r = crate::common::run({
        let mut c = crate::common::quorum();
        c.args(["agent", "--config", p.to_str().unwrap(), "--check"]);
        c
    });
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("sometimes"), "{}", r.stderr);
    std::fs::write(&p, "cluster: x\nrepo:\n  url: file:///tmp/x\nbackups: {}\n").unwrap();
    let mut c = crate::common::quorum();
    c.args(["agent", "--config", p.to_str().unwrap(), "--check"]);
    let r = crate::common::run(c);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("a.yaml:4"), "{}", r.stderr);
}

/// The leader consolidates full backups from its delta segments when the chain passes the size
/// set (here: any segment), and its retention (keep 2, a one-hour point-in-time window) keeps
/// the 2 newest plus the window's base (the first backup: every backup is younger than an
/// hour) and prunes what no kept backup needs; the consolidated backup has etcd's own hashkv at
/// its revision and the repository checks clean.
#[test]
fn agent_consolidates_and_retains_deltas() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let repo = Repo::local();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "cluster: t\nname: solo\nendpoints: [{}]\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: {TTL}}}\n\
         repo: {{url: '{}', password_file: '{}'}}\nbackup: {{schedule: '0 0 1 1 *', from: endpoints}}\n\
         retention: {{schedule: '*/3 * * * * *', keep_last: 2, keep_pitr_hours: 1, prune: true}}\n\
         delta: {{interval_seconds: 0.3, spool_dir: '{}'}}\nconsolidate: {{after_mib: 0, check_seconds: 1}}\n\
         defrag: {{enabled: false}}\n",
        c.endpoints().join(", "),
        repo.url,
        repo.dir().join("repo.pass").display(),
        dir.path().join("spool").display()
    );
    let path = dir.path().join("solo.yaml");
    std::fs::write(&path, cfg).unwrap();
    let log = std::fs::File::create(dir.path().join("solo.log")).unwrap();
    let child = crate::common::quorum().args(["agent", "--config", path.to_str().unwrap()]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let _agent = Agent { child, port };
    // The first full backup (none yet), then writes the capture turns into segments.
    let t = Instant::now();
    while repo.backup_ids().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(40), "no first backup; log {}", dir.path().join("solo.log").display());
        std::thread::sleep(Duration::from_millis(300));
    }
    let first_rev = repo.json(&["backups", "list", "--cluster", "t"])["backups"][0]["snapshot"]["revision"].as_i64().unwrap();
    let mut last = 0;
    for round in 0..5 {
        for i in 0..20 {
            last = testkit::put(&c.endpoints(), &format!("/registry/configmaps/r{round}/cm-{i}"), format!("v{round}-{i}").as_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    // A consolidated backup at the last revision.
    let t = Instant::now();
    let cons = loop {
        let list = repo.json(&["backups", "list", "--cluster", "t"]);
        if let Some(b) = list["backups"].as_array().unwrap().iter().find(|b| !b["consolidated"].is_null() && b["snapshot"]["revision"] == last) {
            break b.clone();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no consolidated backup at {last}: {list}; log {}", dir.path().join("solo.log").display());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(cons["source"].as_str().unwrap().starts_with("consolidated:"), "{cons}");
    let etcd_hash = testkit_hashkv(&c, last);
    assert_eq!(cons["snapshot"]["hash_kv"].as_u64().unwrap() as u32, etcd_hash, "{cons}");
    // Retention keeps 2 backups and the window's base; what prune left checks clean and no
    // segment ends at or before the oldest kept backup.
    let t = Instant::now();
    loop {
        let list = repo.json(&["backups", "list", "--cluster", "t"]);
        let revs: Vec<i64> = list["backups"].as_array().unwrap().iter().map(|b| b["snapshot"]["revision"].as_i64().unwrap()).collect();
        let floor = revs.iter().copied().min().unwrap_or(0);
        let chain = repo.json(&["backups", "deltas", "--cluster", "t"]);
        let pruned = chain["chain"]["segments"].as_array().unwrap().iter().all(|s| s["last"].as_i64().unwrap() > floor);
        let segs = std::fs::read_dir(PathBuf::from(repo.url.strip_prefix("file://").unwrap()).join("clusters/t/deltas")).map(|d| d.count()).unwrap_or(0);
        let all_above = crate::common::walk(&PathBuf::from(repo.url.strip_prefix("file://").unwrap()).join("clusters/t/deltas"))
            .iter()
            .all(|p| p.file_name().unwrap().to_str().unwrap()[21..41].parse::<i64>().unwrap() > floor);
        if revs.len() == 3 && revs.contains(&first_rev) && pruned && all_above {
            eprintln!("retention: {} backups (revisions {revs:?}), {segs} segments left above revision {floor}", revs.len());
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "retention did not converge: {revs:?}, {segs} segments; log {}", dir.path().join("solo.log").display());
        std::thread::sleep(Duration::from_millis(500));
    }
    let check = repo.q(&["repo", "check", "--read-data", "--retry-lock", "30s"]);
    assert_eq!(check.code, 0, "{} {}", check.stdout, check.stderr);
}

fn testkit_hashkv(c: &Cluster, rev: i64) -> u32 {
    crate::common::rt().block_on(async {
        let mut cl = etcd_client::Client::connect(c.endpoints(), None).await.unwrap();
        cl.hash_kv(rev).await.unwrap().hash()
    })
}
