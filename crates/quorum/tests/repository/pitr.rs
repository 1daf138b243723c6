//! Point-in-time restore with real etcd: a full backup, continuous delta capture (the agent
//! library, in process) while a writer keeps changing the cluster (puts, overwrites, deletes,
//! prefix deletes, multi-op transactions, keys under leases, a revoked and an expired lease)
//! and members are killed and restarted; then `quorum restore --at-revision R` at random
//! revisions, each started as a real etcd whose keyspace must equal the source's at R (values,
//! create and mod revisions, versions, leases), and whose history below R must equal the
//! source's too. Also `--at-time`, a target beyond the chain, a gap, and a compacted watch.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{rt, Repo};
use etcd_client::{Client, DeleteOptions, PutOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion, Kv};

const CLUSTER: &str = "prod";

/// A member restarted by the test on its existing data dir; killed on drop.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restart(c: &Cluster, i: usize) -> Restarted {
    let m = &c.members[i];
    let log = std::fs::File::create(c.dir().join(format!("{}-restarted.log", m.name))).unwrap();
    let child = Command::new(c.version.etcd())
        .args(["--name", &m.name, "--data-dir"])
        .arg(&m.data_dir)
        .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
        .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
        .args(["--initial-cluster", &c.initial_cluster, "--initial-cluster-token", &c.token, "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let r = Restarted(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = c.ctl().args(["--endpoints", &m.client_url, "--command-timeout=2s", "endpoint", "health"]).output().unwrap().status.success();
        if ok {
            return r;
        }
        assert!(Instant::now() < deadline, "{} did not come back", m.name);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster's writer: random operations, retried through member failures.
struct Writer {
    client: Client,
    rng: StdRng,
    rev: i64,
    lease: i64,
}

fn key(i: u32) -> String {
    format!("/k/{}/{:03}", i % 7, i % 240)
}

impl Writer {
    async fn connect(endpoints: &[String], seed: u64) -> Writer {
        let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(3)).with_connect_timeout(Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(opts)).await.unwrap();
        Writer { client, rng: StdRng::seed_from_u64(seed), rev: 0, lease: 0 }
    }

    fn value(&mut self) -> Vec<u8> {
        let n = if self.rng.random_ratio(1, 40) { 30_000 } else { self.rng.random_range(0..400) };
        (0..n).map(|_| self.rng.random::<u8>()).collect()
    }

    /// One random operation; retried until etcd answers.
    async fn op(&mut self) {
        let k = self.rng.random_range(0..10_000u32);
        let choice = self.rng.random_range(0..100u32);
        let v = self.value();
        let (k2, k3) = (key(k + 1), key(k + 2));
        for attempt in 0..100 {
            let r: Result<i64, etcd_client::Error> = async {
                let h = match choice {
                    0..=49 => self.client.put(key(k), v.clone(), None).await?.header().cloned(),
                    50..=64 => self.client.delete(key(k), None).await?.header().cloned(),
                    65..=76 => {
                        let t = Txn::new().and_then(vec![
                            TxnOp::put(key(k), v.clone(), None),
                            TxnOp::put(k2.clone(), b"txn".to_vec(), None),
                            TxnOp::delete(k3.clone(), None),
                        ]);
                        self.client.txn(t).await?.header().cloned()
                    }
                    77..=79 => self.client.delete(format!("/k/{}/1", k % 7), Some(DeleteOptions::new().with_prefix())).await?.header().cloned(),
                    _ if self.lease != 0 => {
                        self.client.put(format!("/lease/{}", k % 50), v.clone(), Some(PutOptions::new().with_lease(self.lease))).await?.header().cloned()
                    }
                    _ => self.client.put(key(k), v.clone(), None).await?.header().cloned(),
                };
                Ok(h.map(|h| h.revision()).unwrap_or(0))
            }
            .await;
            match r {
                Ok(rev) => {
                    self.rev = self.rev.max(rev);
                    return;
                }
                Err(e) if attempt == 99 => panic!("writer: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn ops(&mut self, n: usize) {
        for _ in 0..n {
            self.op().await;
        }
    }

    async fn grant(&mut self, ttl: i64) -> i64 {
        for _ in 0..100 {
            match self.client.lease_grant(ttl, None).await {
                Ok(r) => return r.id(),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("lease grant kept failing")
    }

    async fn revoke(&mut self, id: i64) {
        for _ in 0..100 {
            match self.client.lease_revoke(id).await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("lease revoke kept failing")
    }

    async fn current(&mut self) -> i64 {
        for _ in 0..100 {
            match self.client.get("/", None).await {
                Ok(r) => return r.header().unwrap().revision(),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("get kept failing")
    }

    /// Whether any key under `/lease/` is still attached to `id`.
    async fn has_lease_keys(&mut self, id: i64) -> bool {
        for _ in 0..100 {
            match self.client.get("/lease/", Some(etcd_client::GetOptions::new().with_prefix())).await {
                Ok(r) => return r.kvs().iter().any(|kv| kv.lease() == id),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("get kept failing")
    }
}

fn now_rfc3339_ms() -> (String, i64) {
    let now = chrono::Utc::now();
    (now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), now.timestamp_millis())
}

pub(crate) fn backup(repo: &Repo, c: &Cluster) -> (String, i64) {
    let eps = c.endpoints_csv();
    let out = repo.ok(&["backup", "--cluster", CLUSTER, "--endpoints", &eps, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    (v["id"].as_str().unwrap().to_string(), v["manifest"]["snapshot"]["revision"].as_i64().unwrap())
}

/// `quorum restore --at-revision R` (or `--at-time T`) into `dir`; returns the report and the
/// single-member cluster started on it.
fn pitr_restore(repo: &Repo, version: EtcdVersion, dir: &Path, target: &[&str]) -> (serde_json::Value, Cluster) {
    let (plans, initial) = plan_members(dir, 1).unwrap();
    let mut args = vec!["restore", "--cluster", CLUSTER];
    args.extend_from_slice(target);
    let dd = plans[0].data_dir.display().to_string();
    args.extend(["--name", "m0", "--initial-cluster", &initial, "--initial-advertise-peer-urls", &plans[0].peer_url]);
    args.extend(["--initial-cluster-token", "pitr", "--data-dir", &dd, "-w", "json"]);
    let out = repo.ok(&args);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let c = Cluster::start_planned(&ClusterOptions::new(version, 1), dir, &plans, &initial, "pitr").unwrap();
    (report, c)
}

fn diff(a: &[Kv], b: &[Kv]) -> String {
    let show = |kv: &Kv| {
        format!("{} c{} m{} v{} l{:x} {}B", String::from_utf8_lossy(&kv.key), kv.create_revision, kv.mod_revision, kv.version, kv.lease, kv.value.len())
    };
    let sa: Vec<String> = a.iter().map(show).collect();
    let sb: Vec<String> = b.iter().map(show).collect();
    let only_a: Vec<&String> = sa.iter().filter(|x| !sb.contains(x)).take(5).collect();
    let only_b: Vec<&String> = sb.iter().filter(|x| !sa.contains(x)).take(5).collect();
    format!("{} vs {} keys; only in restored: {only_a:?}; only in source: {only_b:?}", a.len(), b.len())
}

pub(crate) struct Capture {
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    pub(crate) thread: std::thread::JoinHandle<Result<agent::capture::CaptureReport, agent::capture::CaptureError>>,
}

pub(crate) fn start_capture(repo: &Repo, endpoints: Vec<String>, base: &str, from: i64, interval: Duration) -> Capture {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (url, pass) = (repo.url.clone(), repo.dir().join("repo.pass"));
    let base = base.to_string();
    let thread = std::thread::spawn(move || {
        let rt = rt();
        rt.block_on(async move {
            let loc = repo::Location::open(&url, &repo::StoreOptions::default(), false).unwrap();
            let unlock = repo::Unlock { data: Some(repo::crypto::Secret::passphrase(std::fs::read(pass).unwrap()).unwrap()), bundle: None };
            let r = Arc::new(repo::Repository::open(loc, &unlock).await.unwrap());
            let conn = etcd_cluster::ConnConfig { endpoints, ..Default::default() };
            let mut opts = agent::capture::CaptureOptions::new(CLUSTER, &base, from);
            opts.policy = agent::capture::SegmentPolicy { interval, max_bytes: 96 << 10 };
            agent::capture::capture(&conn, r, opts, rx).await
        })
    });
    Capture { stop, thread }
}

/// Wait until the stored chain reaches `rev`.
pub(crate) fn wait_chain(repo: &Repo, rt: &tokio::runtime::Runtime, base_rev: i64, rev: i64) -> repo::delta::Chain {
    let deadline = Instant::now() + Duration::from_secs(60);
    rt.block_on(async {
        let r = repo.open_lib().await;
        loop {
            let chain = repo::pitr::plan(&r, CLUSTER, base_rev, None).await.unwrap();
            if chain.contiguous_to >= rev {
                return chain;
            }
            assert!(Instant::now() < deadline, "the chain reached only {} of {rev}: {chain:?}", chain.contiguous_to);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

struct Scenario {
    repo: Repo,
    cluster: Cluster,
    /// Every member's client URL (`Cluster::endpoints` leaves out the restarted ones).
    eps: Vec<String>,
    _restarted: Vec<Restarted>,
    base_rev: i64,
    last: i64,
    /// The revision before a quiet moment, and a time inside it.
    quiet_rev: i64,
    quiet_time: String,
    report: agent::capture::CaptureReport,
    chain: repo::delta::Chain,
}

/// Backup, capture, write; with `kills`, every member is killed and restarted once while the
/// writer runs (the capture's watch loses its member at least once, and the leader changes).
fn scenario(version: EtcdVersion, members: usize, ops: usize, kills: bool, seed: u64) -> Scenario {
    let mut cluster = Cluster::start(ClusterOptions::new(version, members)).unwrap();
    let repo = Repo::local();
    let rt = rt();
    let eps = cluster.endpoints();
    let mut w = rt.block_on(Writer::connect(&eps, seed));
    // Before the backup: keys, some under a long lease that the backup will hold.
    rt.block_on(async {
        w.lease = w.grant(600).await;
        w.ops(ops / 4).await;
    });
    let (base, base_rev) = backup(&repo, &cluster);
    // Writes go on while the capture starts: it reads them from etcd's history.
    rt.block_on(w.ops(20));
    let cap = start_capture(&repo, eps.clone(), &base, base_rev + 1, Duration::from_millis(700));
    let (quiet_rev, quiet_time) = rt.block_on(async {
        w.lease = w.grant(600).await; // a lease the backup does not hold
        w.ops(ops / 4).await;
        let quiet_rev = w.current().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (t, _) = now_rfc3339_ms();
        tokio::time::sleep(Duration::from_millis(700)).await;
        (quiet_rev, t)
    });
    let mut restarted = Vec::new();
    for i in 0..members {
        rt.block_on(w.ops(ops / (2 * members)));
        if kills {
            cluster.members[i].kill();
            rt.block_on(w.ops(30));
            restarted.push(restart(&cluster, i));
        }
    }
    rt.block_on(async {
        // Revoke the lease granted after the backup: its keys go in one revision.
        let l = w.lease;
        w.revoke(l).await;
        w.lease = 0;
        w.ops(20).await;
        // A short lease that expires: the leader deletes its keys.
        let short = w.grant(2).await;
        w.lease = short;
        w.ops(20).await;
        w.lease = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.has_lease_keys(short).await {
            assert!(Instant::now() < deadline, "the short lease did not expire");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        w.ops(10).await;
    });
    let last = rt.block_on(w.current());
    let chain = wait_chain(&repo, &rt, base_rev, last);
    cap.stop.send(true).unwrap();
    let report = cap.thread.join().unwrap().unwrap_or_else(|e| panic!("capture: {e}"));
    assert_eq!(report.last_revision, last, "{report:?}");
    assert_eq!(report.from_revision, base_rev + 1);
    assert!(chain.gaps.is_empty(), "{chain:?}");
    Scenario { repo, cluster, eps, _restarted: restarted, base_rev, last, quiet_rev, quiet_time, report, chain }
}

fn check_restores(s: &Scenario, version: EtcdVersion, picks: usize, seed: u64) {
    let eps = s.eps.clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut revs = vec![s.base_rev + 1, s.quiet_rev, s.last];
    while revs.len() < picks {
        revs.push(rng.random_range(s.base_rev + 1..=s.last));
    }
    revs.sort();
    revs.dedup();
    // The source at every chosen revision (and at the backup's), read before any compaction.
    let mut want: Vec<(i64, Vec<Kv>)> = Vec::new();
    for &r in std::iter::once(&s.base_rev).chain(&revs) {
        let (at, kvs) = testkit::dump(&eps, r).unwrap();
        assert_eq!(at, r);
        want.push((r, kvs));
    }
    let started = Instant::now();
    for (i, &r) in revs.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let rs = r.to_string();
        let (report, restored) = pitr_restore(&s.repo, version, dir.path(), &["--at-revision", &rs]);
        assert_eq!(report["target_revision"].as_i64(), Some(r), "{report}");
        assert_eq!(report["base_revision"].as_i64(), Some(s.base_rev), "{report}");
        let (at, got) = testkit::dump(&restored.endpoints(), 0).unwrap();
        assert_eq!(at, r, "the restored member's revision");
        let src = &want.iter().find(|(w, _)| *w == r).unwrap().1;
        assert!(got == *src, "restore at {r}: {}", diff(&got, src));
        // The history is there too: every recorded revision up to r, the backup's included.
        if i == revs.len() - 1 || i == revs.len() / 2 {
            for (w, kvs) in want.iter().filter(|(w, _)| *w <= r) {
                let (_, old) = testkit::dump(&restored.endpoints(), *w).unwrap();
                assert!(old == *kvs, "restore at {r}, read at {w}: {}", diff(&old, kvs));
            }
        }
    }
    eprintln!("{} point-in-time restores verified in {:.1}s", revs.len(), started.elapsed().as_secs_f64());
}

/// etcd 3.5, three members killed and restarted in turn while capturing; 20 restores.
#[test]
fn pitr_etcd35_every_revision_through_member_restarts() {
    let t0 = Instant::now();
    let v = EtcdVersion::V3_5;
    let s = scenario(v, 3, 1200, true, 35);
    assert!(s.report.reconnects >= 1, "the watch never had to reconnect: {:?}", s.report);
    assert!(s.chain.segments.len() >= 3, "{:?}", s.chain);
    eprintln!("capture: {:?} ({} segments) in {:.1}s", s.report, s.chain.segments.len(), t0.elapsed().as_secs_f64());
    check_restores(&s, v, 20, 350);

    // --at-time: the last revision received at that time (a quiet moment of the writer).
    let dir = tempfile::tempdir().unwrap();
    let (report, restored) = pitr_restore(&s.repo, v, dir.path(), &["--at-time", &s.quiet_time]);
    assert_eq!(report["target_revision"].as_i64(), Some(s.quiet_rev), "{report}");
    let (at, got) = testkit::dump(&restored.endpoints(), 0).unwrap();
    assert_eq!(at, s.quiet_rev);
    let (_, src) = testkit::dump(&s.eps, s.quiet_rev).unwrap();
    assert!(got == src, "{}", diff(&got, &src));
    // Leases granted after the backup are in the restored lease table: etcd attaches their
    // keys (and will expire them), instead of logging "failed to attach a lease".
    let listed = restored.etcdctl(&["lease", "list", "-w", "json"]).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ids: Vec<i64> = listed["leases"].as_array().map(|a| a.iter().map(|l| l["id"].as_i64().unwrap()).collect()).unwrap_or_default();
    let mut attached: Vec<i64> = got.iter().map(|kv| kv.lease).filter(|l| *l != 0).collect();
    attached.sort();
    attached.dedup();
    assert!(attached.len() >= 2, "the writer put keys under the backup's lease and a later one: {attached:?}");
    for l in &attached {
        assert!(ids.contains(l), "lease {l:x} of restored keys is not in the restored lease table {ids:?}");
    }
    drop(restored);

    // Beyond the chain: refused, naming the last captured revision; nothing written.
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().join("m0.etcd");
    let beyond = (s.last + 10).to_string();
    let r = s.repo.q(&["restore", "--cluster", CLUSTER, "--at-revision", &beyond, "--data-dir", dd.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("the last captured revision is {}", s.last)), "{}", r.stderr);
    assert!(!dd.exists());

    // `backups deltas`: the chain after the backup, contiguous to the end.
    let v = s.repo.json(&["backups", "deltas", "--cluster", CLUSTER]);
    assert_eq!(v["base_revision"].as_i64(), Some(s.base_rev), "{v}");
    assert_eq!(v["chain"]["contiguous_to"].as_i64(), Some(s.last), "{v}");
    assert_eq!(v["chain"]["segments"].as_array().unwrap().len(), s.chain.segments.len());

    // A gap: one segment in the middle goes missing.
    let rt = rt();
    let mid = s.chain.segments[s.chain.segments.len() / 2].clone();
    let file = PathBuf::from(s.repo.url.trim_start_matches("file://")).join(&mid.name);
    std::fs::remove_file(&file).unwrap();
    let chain = rt.block_on(async { repo::pitr::plan(&s.repo.open_lib().await, CLUSTER, s.base_rev, None).await.unwrap() });
    assert_eq!(chain.gaps, vec![repo::delta::Gap { from: mid.first, to: mid.last }], "{chain:?}");
    assert_eq!(chain.contiguous_to, mid.first - 1);
    let r = s.repo.q(&["backups", "deltas", "--cluster", CLUSTER, "-w", "json"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["chain"]["gaps"], serde_json::json!([{ "from": mid.first, "to": mid.last }]));
    let r = s.repo.q(&["restore", "--cluster", CLUSTER, "--at-revision", &s.last.to_string(), "--data-dir", dd.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let (gap, are) = if mid.first == mid.last { (format!("revision {}", mid.first), "is") } else { (format!("revisions {}..{}", mid.first, mid.last), "are") };
    assert!(r.stderr.contains(&format!("{gap} of cluster {CLUSTER} {are} missing from the delta chain")), "{}", r.stderr);
    assert!(!dd.exists());

    // A capture that starts below etcd's compaction names the revisions it lost.
    let out = s.cluster.ctl().args(["--endpoints", &s.eps.join(","), "compact", &s.last.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cap = start_capture(&s.repo, s.eps.clone(), "x", s.base_rev + 1, Duration::from_secs(5));
    let e = cap.thread.join().unwrap().unwrap_err().to_string();
    assert!(e.contains(&format!("revisions {}..{} were never captured", s.base_rev + 1, s.last - 1)), "{e}");
    eprintln!("total {:.1}s", t0.elapsed().as_secs_f64());
}

/// etcd 3.4 (its layout), one member; a few restores.
#[test]
fn pitr_etcd34_restores_match_the_source() {
    let t0 = Instant::now();
    let v = EtcdVersion::V3_4;
    let s = scenario(v, 1, 400, false, 34);
    check_restores(&s, v, 5, 340);
    eprintln!("total {:.1}s", t0.elapsed().as_secs_f64());
}
