//! A flaky object store (issue 19): the S3 server (moto) behind a fault-injecting relay
//! (`testkit::relay`) that, while a command runs, keeps switching between 503 bursts,
//! connection resets, latency and responses cut off mid-body. Backups, gets, restores, forget,
//! prune and check must ride through it (retries with back-off), or fail with a clear error
//! within their deadline; whatever they report as stored must be there and restore
//! byte for byte; `repo check --read-data` must accept the repository after every command,
//! failed ones included. A store that is cut off or stalls for good ends a command within
//! `--store-timeout`; one cut off for less than that is ridden through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{sha256_file, Repo, Run};
use testkit::relay::{Fault, Relay};
use testkit::servers::S3Server;
use testkit::{Cluster, ClusterOptions, EtcdVersion};

/// Flips the relay through faults every `period` until dropped; counts what it injected.
struct Chaos {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Chaos {
    fn start(relay: Arc<Relay>, period: Duration, seed: u64) -> Chaos {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            while !s.load(Ordering::SeqCst) {
                let fault = match rng.random_range(0..6) {
                    0 => Fault::Status { code: if rng.random_bool(0.5) { 503 } else { 500 }, times: rng.random_range(1..4) },
                    1 => Fault::Reset,
                    2 => Fault::Latency(Duration::from_millis(rng.random_range(20..200))),
                    3 => Fault::Truncate(rng.random_range(100..200_000)),
                    _ => Fault::Pass,
                };
                relay.set(fault);
                std::thread::sleep(period);
                // Faults that would stop all progress get a gap of calm after them.
                relay.set(Fault::Pass);
                std::thread::sleep(period);
            }
            relay.set(Fault::Pass);
        });
        Chaos { stop, thread: Some(thread) }
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relayed_repo(s3: &S3Server, relay: &Relay, bucket: &str) -> Repo {
    s3.create_bucket(bucket).unwrap();
    let flags = vec!["--endpoint".into(), relay.url(), "--region".into(), S3Server::REGION.into()];
    let envs =
        vec![("AWS_ACCESS_KEY_ID".to_string(), S3Server::ACCESS_KEY.to_string()), ("AWS_SECRET_ACCESS_KEY".to_string(), S3Server::SECRET_KEY.to_string())];
    Repo::init(format!("s3://{bucket}/etcd"), flags, envs, tempfile::tempdir().unwrap())
}

fn check_clean(repo: &Repo, after: &str) {
    let r = repo.q(&["repo", "check", "--read-data"]);
    assert_eq!(r.code, 0, "repo check --read-data after {after}: {} {}", r.stdout, r.stderr);
}

/// Run `args` under chaos; report the outcome for the log and the table.
fn under_chaos(repo: &Repo, relay: &Arc<Relay>, seed: u64, args: &[&str]) -> Run {
    let before = relay.stats();
    let t = Instant::now();
    let r = {
        let _chaos = Chaos::start(relay.clone(), Duration::from_millis(150), seed);
        repo.q(args)
    };
    let after = relay.stats();
    eprintln!(
        "{args:?}: exit {} in {:.1}s; injected {} statuses, {} resets, {} truncations{}",
        r.code,
        t.elapsed().as_secs_f64(),
        after.statuses - before.statuses,
        after.resets - before.resets,
        after.truncations - before.truncations,
        if r.code != 0 { format!("; error: {}", r.stderr.trim()) } else { String::new() }
    );
    r
}

#[test]
fn commands_ride_through_a_flaky_store() {
    let s3 = S3Server::start().unwrap();
    let relay = Arc::new(Relay::start(format!("127.0.0.1:{}", s3.port()).parse().unwrap()).unwrap());
    let repo = relayed_repo(&s3, &relay, "flaky");
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.big_requests = true;
    let c = Cluster::start(opts).unwrap();
    let d = tempfile::tempdir().unwrap();
    let snaps: Vec<_> = (0..3)
        .map(|i| {
            testkit::bulk(&c.endpoints(), 8 << 20, 1024, 16384, 4).unwrap();
            let p = d.path().join(format!("s{i}.db"));
            c.save_snapshot(&p).unwrap();
            p
        })
        .collect();

    // Backups: each either stored (and then restorable byte for byte) or refused clearly.
    let mut stored = Vec::new();
    for (i, s) in snaps.iter().enumerate() {
        let r = under_chaos(&repo, &relay, i as u64, &["backup", "--cluster", "prod", "--snapshot", s.to_str().unwrap()]);
        if r.code == 0 {
            stored.push(s.clone());
        } else {
            assert!(r.stderr.contains("object store") || r.stderr.contains("repository"), "a failed backup says why: {}", r.stderr);
        }
        check_clean(&repo, "a backup under faults");
    }
    let ids = repo.backup_ids();
    assert_eq!(ids.len(), stored.len(), "listed backups are the ones reported stored");
    assert!(!stored.is_empty(), "retries got at least one backup through");

    // Gets and restores under faults: byte-identical, or a clear failure with nothing left.
    for (n, (id, snap)) in ids.iter().rev().zip(&stored).enumerate() {
        let out = d.path().join(format!("got{n}.db"));
        let r = under_chaos(&repo, &relay, 100 + n as u64, &["backups", "get", id, "-o", out.to_str().unwrap()]);
        if r.code == 0 {
            assert_eq!(sha256_file(&out), sha256_file(snap), "backups get {id} under faults");
        } else {
            assert!(!out.exists(), "a failed get leaves no file");
        }
    }
    let dd = d.path().join("restored");
    let r = under_chaos(&repo, &relay, 200, &["restore", "latest", "--data-dir", dd.to_str().unwrap()]);
    if r.code == 0 {
        assert!(dd.join("member/snap/db").exists());
    } else {
        assert!(!dd.exists(), "a failed restore leaves no data dir");
    }

    // Retention under faults, then a clean check.
    let r = under_chaos(&repo, &relay, 300, &["forget", "--cluster", "prod", "--keep-last", "1", "--prune"]);
    check_clean(&repo, "forget --prune under faults");
    if r.code == 0 {
        assert_eq!(repo.backup_ids().len(), 1);
    }
    let r = under_chaos(&repo, &relay, 301, &["repo", "check", "--read-data"]);
    eprintln!("check under faults: exit {}", r.code);
}

#[test]
fn a_store_cut_off_or_stalled_ends_commands_within_the_timeout() {
    let s3 = S3Server::start().unwrap();
    let relay = Relay::start(format!("127.0.0.1:{}", s3.port()).parse().unwrap()).unwrap();
    let repo = relayed_repo(&s3, &relay, "cut");
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::load(&c.endpoints(), &testkit::KubeKeyspace { objects: 300, ..Default::default() }).unwrap();
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    c.save_snapshot(&snap).unwrap();
    repo.ok(&["backup", "--cluster", "prod", "--snapshot", snap.to_str().unwrap()]);

    for fault in [Fault::Reset, Fault::Stall] {
        relay.set(fault.clone());
        for args in [
            vec!["backup", "--cluster", "prod", "--snapshot", snap.to_str().unwrap(), "--store-timeout", "8s"],
            vec!["backups", "list", "--store-timeout", "8s"],
        ] {
            let t = Instant::now();
            let r = repo.q(&args);
            let took = t.elapsed();
            eprintln!("{fault:?} {args:?}: exit {} in {:.1}s: {}", r.code, took.as_secs_f64(), r.stderr.trim());
            assert_ne!(r.code, 0, "{args:?} succeeded with the store {fault:?}");
            assert!(took < Duration::from_secs(12), "{args:?} took {took:?} with --store-timeout 8s");
            assert!(r.stderr.contains("--store-timeout"), "the error names the store and the way to wait longer: {}", r.stderr);
        }
        relay.set(Fault::Pass);
        assert_eq!(repo.backup_ids().len(), 1, "nothing reported stored while {fault:?}");
        check_clean(&repo, &format!("commands failed on {fault:?}"));
    }
    // An outage shorter than the window is ridden through: cut for 4 s while a backup starts.
    for fault in [Fault::Reset, Fault::Stall] {
        relay.set(fault.clone());
        let r = std::thread::scope(|sc| {
            let h = sc.spawn(|| repo.q(&["backup", "--cluster", "prod", "--snapshot", snap.to_str().unwrap(), "--store-timeout", "20s"]));
            std::thread::sleep(Duration::from_secs(4));
            relay.set(Fault::Pass);
            h.join().unwrap()
        });
        assert_eq!(r.code, 0, "a 4 s outage ({fault:?}) within --store-timeout 20s: {}", r.stderr);
    }
    assert_eq!(repo.backup_ids().len(), 3);
    check_clean(&repo, "backups across short outages");
    // The interrupted backups left no lock that blocks the next one.
    repo.ok(&["backup", "--cluster", "prod", "--snapshot", snap.to_str().unwrap()]);
    repo.ok(&["forget", "--cluster", "prod", "--keep-last", "1", "--prune"]);
}

/// The agent's uploads through the same faults: it captures every revision written meanwhile,
/// its spool drains once the store behaves, the chain has no gap and the repository checks
/// clean.
#[test]
fn the_agent_uploads_through_a_flaky_store() {
    let s3 = S3Server::start().unwrap();
    let relay = Arc::new(Relay::start(format!("127.0.0.1:{}", s3.port()).parse().unwrap()).unwrap());
    let repo = relayed_repo(&s3, &relay, "agent");
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let port = crate::common::free_port();
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("agent.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nname: a0\nendpoints: [{}]\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: 2}}\n\
             repo: {{url: '{}', password_file: '{}', endpoint: '{}', region: {}}}\nbackup: {{schedule: '0 0 1 1 *', from: endpoints}}\n\
             defrag: {{enabled: false}}\ndelta: {{interval_seconds: 0.3, spool_dir: '{}'}}\n",
            c.endpoints_csv(),
            repo.url,
            repo.dir().join("repo.pass").display(),
            relay.url(),
            S3Server::REGION,
            d.path().join("spool").display()
        ),
    )
    .unwrap();
    let log = d.path().join("agent.log");
    let mut cmd = crate::common::quorum();
    cmd.args(["agent", "--config", cfg.to_str().unwrap()]).stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &repo.envs {
        cmd.env(k, v);
    }
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Killed(cmd.spawn().unwrap());
    let metric = |name: &str| -> Option<i64> {
        let (_, _, body) = crate::common::http_get(port, "/metrics")?;
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).map(|v| v as i64)
    };
    let wait = |what: &str, secs: u64, cond: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(secs), "{what}: not within {secs}s; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("capturing", 60, &|| metric("quorum_capture_running") == Some(1));

    // 15 s of writes under faults.
    let before = relay.stats();
    let mut last = 0;
    {
        let _chaos = Chaos::start(relay.clone(), Duration::from_millis(150), 7);
        let t = Instant::now();
        let mut k = 0;
        while t.elapsed() < Duration::from_secs(15) {
            last = testkit::put(&c.endpoints(), &format!("/flaky/{k:05}"), b"written while the store misbehaved").unwrap();
            k += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let after = relay.stats();
    eprintln!(
        "agent under faults: {} statuses, {} resets, {} truncations injected",
        after.statuses - before.statuses,
        after.resets - before.resets,
        after.truncations - before.truncations
    );
    wait("the spool drains and the last write is stored", 120, &|| {
        metric("quorum_last_delta_revision").is_some_and(|r| r >= last) && metric("quorum_delta_spool_segments") == Some(0)
    });
    let r = repo.q(&["backups", "deltas", "--cluster", "prod", "-w", "json"]);
    assert_eq!(r.code, 0, "a gap in the chain: {} {}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["chain"]["contiguous_to"].as_i64().unwrap() >= last, "{v}");
    check_clean(&repo, "the agent's uploads under faults");
}
