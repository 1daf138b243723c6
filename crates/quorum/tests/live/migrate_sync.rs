//! Staged whole-cluster migration between real etcd 3.5 clusters: `--stage` while a writer
//! runs (puts, overwrites, deletes, multi-op transactions, keys on a kept-alive lease and on a
//! lease left to run out), `--sync`, `--follow` stopped by SIGTERM and by kill -9 at 12 random
//! points (each then synced again), `--status`, and `--cutover` once the writer stops (killed at
//! 5 random points first): the target's revision equals the
//! source's, hashkv matches on every revision sampled and every key reads the same at 20
//! earlier revisions. A second writer on the target is detected and stops the sync.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use crate::common::Repo;
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion};

/// Writes about 200 operations a second until `stop`: the mix of the module documentation.
/// Counts successful operations in `done`.
fn writer(endpoints: Vec<String>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut c = Client::connect(endpoints, None).await.unwrap();
            let kept = c.lease_grant(10, None).await.unwrap().id();
            let (mut keeper, mut acks) = c.lease_keep_alive(kept).await.unwrap();
            let mut short = 0i64;
            let mut last_keepalive = Instant::now();
            let mut i: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                if last_keepalive.elapsed() > Duration::from_secs(2) {
                    let _ = keeper.keep_alive().await;
                    let _ = acks.message().await;
                    last_keepalive = Instant::now();
                }
                let k = |n: u64| format!("/w/k{:03}", n % 300);
                let ok = match i % 10 {
                    0..=5 => c.put(k(i), format!("v{i}").repeat(1 + (i % 7) as usize), None).await.is_ok(),
                    6 => c.delete(k(i * 7), None).await.is_ok(),
                    7 => {
                        let ops = vec![
                            TxnOp::put(k(i + 1), format!("t{i}"), None),
                            TxnOp::put(k(i + 2), format!("t{i}"), None),
                            TxnOp::put(format!("/w/t/{i}"), "new", None),
                            TxnOp::delete(k(i + 3), None),
                        ];
                        c.txn(Txn::new().when(vec![Compare::version(k(i + 4), CompareOp::Greater, -1)]).and_then(ops)).await.is_ok()
                    }
                    8 => c.put(format!("/w/leased/{}", i % 50), format!("l{i}"), Some(PutOptions::new().with_lease(kept))).await.is_ok(),
                    _ => {
                        // A lease nobody keeps alive (4 s): its keys' deletion is a revision.
                        if short == 0 || i % 300 == 9 {
                            short = c.lease_grant(4, None).await.map(|r| r.id()).unwrap_or(0);
                        }
                        c.put(format!("/w/short/{}", i % 20), format!("s{i}"), Some(PutOptions::new().with_lease(short))).await.is_ok()
                    }
                };
                if ok {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    })
}

fn revision(endpoints: &[String]) -> i64 {
    testkit::dump(endpoints, 0).unwrap().0
}

struct Staged {
    repo: Repo,
    source: Cluster,
    target: Cluster,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Staged {
    /// A 1-member source, staged into a new 1-member target with `--stage`, the target started;
    /// with `write`, the writer runs from before the stage (the backup is taken while the
    /// source serves).
    fn new(cluster: &str, write: Option<(Arc<AtomicBool>, Arc<AtomicU64>)>) -> (Staged, Option<std::thread::JoinHandle<()>>) {
        let repo = Repo::local();
        let source = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
        testkit::load(&source.endpoints(), &testkit::KubeKeyspace { objects: 300, namespaces: 4, min_value: 100, max_value: 2000, ..Default::default() })
            .unwrap();
        let w = write.map(|(stop, done)| writer(source.endpoints(), stop, done));
        let dir = tempfile::tempdir().unwrap();
        let (mut plans, _) = plan_members(dir.path(), 1).unwrap();
        plans[0].name = "new-0".into();
        plans[0].data_dir = dir.path().join("new-0.etcd");
        let initial = format!("new-0={}", plans[0].peer_url);
        let template = dir.path().join("{name}.etcd").display().to_string();
        let args: Vec<String> = ["migrate", "--cluster", cluster, "--initial-cluster", &initial, "--initial-cluster-token", "staged", "--data-dir", &template]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut stage = args.clone();
        stage.extend(["--stage".to_string(), "--from-endpoints".into(), source.endpoints_csv()]);
        let st = repo.q(&stage.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(st.code, 0, "{} {}", st.stdout, st.stderr);
        assert!(st.stderr.contains("start:     etcd --name new-0"), "{}", st.stderr);
        let target = Cluster::start_planned(&ClusterOptions::new(EtcdVersion::V3_5, 1), dir.path(), &plans, &initial, "staged").unwrap();
        let mut args = args;
        args.extend(["--from-endpoints".to_string(), source.endpoints_csv(), "--to-endpoints".into(), target.endpoints_csv()]);
        (Staged { repo, source, target, args, _dir: dir }, w)
    }

    fn run(&self, extra: &[&str]) -> crate::common::Run {
        let mut a: Vec<&str> = self.args.iter().map(String::as_str).collect();
        a.extend(extra);
        self.repo.q(&a)
    }

    fn spawn(&self, extra: &[&str]) -> std::process::Child {
        let mut a: Vec<&str> = self.args.iter().map(String::as_str).collect();
        a.extend(extra);
        self.repo.cmd(&a).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }
}

#[test]
fn whole_cluster_staged_synced_followed_and_cut_over() {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (s, w) = Staged::new("staged-a", Some((stop.clone(), done.clone())));
    let w = w.unwrap();
    let staged_rev = {
        let st = s.repo.json(&["migrate", "--status", "--cluster", "staged-a"]);
        assert_eq!(st.as_array().unwrap().len(), 1, "{st}");
        assert_eq!(st[0]["stage"], "staged", "{st}");
        st[0]["backup_revision"].as_i64().unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));

    // --sync: up to the source's revision when it started.
    let sync = s.run(&["--sync", "-w", "json"]);
    assert_eq!(sync.code, 0, "{} {}", sync.stdout, sync.stderr);
    let rep: serde_json::Value = serde_json::from_str(&sync.stdout).unwrap();
    assert_eq!(rep["from_revision"].as_i64(), Some(staged_rev), "the target started at the backup's revision: {rep}");
    assert!(rep["revisions_applied"].as_u64().unwrap() > 50, "{rep}");
    assert_eq!(
        rep["target_revision"].as_i64().unwrap() - staged_rev,
        rep["revisions_applied"].as_i64().unwrap(),
        "one target revision per source revision: {rep}"
    );
    assert!(rep["deletes"].as_u64().unwrap() > 0 && rep["leases_granted"].as_u64().unwrap() > 0, "{rep}");

    // --follow, stopped by SIGTERM; --status while it runs shows the lag, and the follow's
    // checkpoint (hashkv equal on both sides, taken beside the sync) with the totals so far.
    let child = s.spawn(&["--follow", "-w", "json"]);
    let mut status_args: Vec<&str> = s.args.iter().map(String::as_str).collect();
    status_args.push("--status");
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        std::thread::sleep(Duration::from_secs(1));
        let st = s.repo.json(&status_args);
        if st[0]["last_sync"]["mode"] == "follow" || Instant::now() > deadline {
            break st;
        }
    };
    assert!(st[0]["lag_revisions"].as_i64().unwrap() >= 0 && st[0]["target_revision"].as_i64().unwrap() > staged_rev, "{st}");
    let note = &st[0]["last_sync"];
    assert_eq!(note["outcome"], "following, verified", "a checkpoint while following: {st}");
    assert_eq!(note["checkpoint"]["ok"], true, "{st}");
    assert!(note["checkpoint"]["revision"].as_i64().unwrap() > staged_rev && note["puts_total"].as_u64().unwrap() > 0, "{st}");
    let table = s.repo.ok(&status_args);
    assert!(table.stdout.contains("STAGE") && table.stdout.contains("staged") && table.stdout.contains("checkpoint at"), "{}", table.stdout);
    eprintln!("--status during --follow:\n{}", table.stdout);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let followed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(followed["revisions_applied"].as_u64().unwrap() > 100, "{followed}");
    // Leases live a grace longer in the target: none needs keeping alive here, and the short
    // ones the source let run out are revoked once their keys' deletion is applied.
    assert!(s.run(&["--sync", "-w", "json"]).code == 0);

    // kill -9 of a follow at twelve random points, each followed by a sync: every revision is
    // applied once (the target's revision stays the source's, checked by the next sync's hashkv).
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kill points seeded with {seed}");
    let mut rng = seed | 1;
    let mut next = |lo: u64, hi: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        lo + rng % (hi - lo)
    };
    for _ in 0..12 {
        let wait = next(100, 2500);
        let mut child = s.spawn(&["--follow"]);
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap();
        child.wait().unwrap();
        let again = s.run(&["--sync", "-w", "json"]);
        assert_eq!(again.code, 0, "after kill -9 at {wait}ms: {} {}", again.stdout, again.stderr);
    }

    // While the writer runs, a cutover (no --settle) syncs and verifies, sees the source's
    // revision move meanwhile, and is refused: the migration is not cut over.
    let early = s.run(&["--cutover"]);
    assert_eq!(early.code, 1, "{} {}", early.stdout, early.stderr);
    assert!(early.stderr.contains("still moves") && early.stderr.contains("stop every writer"), "{}", early.stderr);
    assert_eq!(s.repo.json(&["migrate", "--status", "--cluster", "staged-a"])[0]["stage"], "staged");

    // The writer stops; the cutover syncs the rest and verifies.
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    // kill -9 of the cutover at five random points; the next one finishes it.
    for _ in 0..5 {
        let wait = next(50, 900);
        let mut child = s.spawn(&["--cutover", "--settle", "10s"]);
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let t0 = Instant::now();
    let cut = s.run(&["--cutover", "--settle", "10s", "-w", "json"]);
    let window = t0.elapsed();
    assert_eq!(cut.code, 0, "{} {}", cut.stdout, cut.stderr);
    let cut: serde_json::Value = serde_json::from_str(&cut.stdout).unwrap();
    assert_eq!(cut["verification"]["ok"], true, "{cut}");
    // The cutover's revision is the target's; the source may have moved on since, as leases
    // its stopped writer held run out there (they live a grace longer in the target).
    let src_rev = cut["target_revision"].as_i64().unwrap();
    assert_eq!(revision(&s.target.endpoints()), src_rev, "the target's revision is the cutover's");
    assert!(revision(&s.source.endpoints()) >= src_rev);
    let (h, _, _) = testkit::hash_kv(&s.source.endpoints()[0], src_rev).unwrap();
    assert_eq!(testkit::hash_kv(&s.target.endpoints()[0], src_rev).unwrap().0, h);
    // 20 earlier revisions read the same (keys, values, create/mod revisions, versions, leases).
    for i in 0..20 {
        let r = staged_rev + (src_rev - staged_rev) * i / 20;
        let (_, want) = testkit::dump(&s.source.endpoints(), r).unwrap();
        let (_, got) = testkit::dump(&s.target.endpoints(), r).unwrap();
        assert_eq!(got, want, "revision {r}");
        assert_eq!(testkit::hash_kv(&s.target.endpoints()[0], r).unwrap().0, testkit::hash_kv(&s.source.endpoints()[0], r).unwrap().0, "hashkv at {r}");
    }
    let st = s.repo.json(&["migrate", "--status", "--cluster", "staged-a"]);
    assert_eq!(st[0]["stage"], "cut over", "{st}");
    let note = &st[0]["last_sync"];
    assert_eq!((note["mode"].as_str(), note["outcome"].as_str()), (Some("cutover"), Some("verified")), "{st}");
    assert_eq!(note["target_revision"].as_i64(), Some(src_rev), "{st}");
    assert!(note["puts_total"].as_u64().unwrap() > 1000 && note["deletes_total"].as_u64().unwrap() > 50, "{st}");
    // A cut-over migration is not synced again; a cutover again only verifies.
    let again = s.run(&["--sync"]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("was cut over"), "{}", again.stderr);
    let verify = s.run(&["--cutover"]);
    assert_eq!(verify.code, 0, "{} {}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains("VERIFIED"), "{}", verify.stdout);
    eprintln!(
        "staged migration: {} writes, revisions {staged_rev}..{src_rev}, cutover window {:.2}s, {:.1}s in all",
        done.load(Ordering::SeqCst),
        window.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_second_writer_on_the_target_stops_the_sync() {
    let (s, _) = Staged::new("staged-b", None);
    let put = |eps: &[String], k: &str| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = Client::connect(eps.to_vec(), None).await.unwrap();
            c.put(k, "x", None).await.unwrap();
        })
    };
    // Flags that do not apply are refused.
    let r = s.run(&["--sync", "--restart"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    put(&s.source.endpoints(), "/src/1");
    let ok = s.run(&["--sync"]);
    assert_eq!(ok.code, 0, "{} {}", ok.stdout, ok.stderr);
    // A follow takes a checkpoint once the source has moved.
    let follow = s.spawn(&["--follow"]);
    put(&s.source.endpoints(), "/src/1b");
    let deadline = Instant::now() + Duration::from_secs(30);
    let checkpoint = loop {
        std::thread::sleep(Duration::from_millis(500));
        let st = s.repo.json(&["migrate", "--status", "--cluster", "staged-b"]);
        if st[0]["last_sync"]["checkpoint"]["ok"] == true || Instant::now() > deadline {
            break st[0]["last_sync"]["checkpoint"]["revision"].as_i64();
        }
    };
    unsafe { libc::kill(follow.id() as i32, libc::SIGTERM) };
    assert_eq!(follow.wait_with_output().unwrap().status.code(), Some(0));
    let checkpoint = checkpoint.expect("a checkpoint within 30 s");
    // Someone writes to the target: ahead of the source.
    put(&s.target.endpoints(), "/intruder");
    let ahead = s.run(&["--sync"]);
    assert_eq!(ahead.code, 1, "{}", ahead.stderr);
    assert!(ahead.stderr.contains("ahead of the source"), "{}", ahead.stderr);
    // The source moves on past it: same revision number, other content; caught by hashkv.
    put(&s.source.endpoints(), "/src/2");
    put(&s.source.endpoints(), "/src/3");
    let differs = s.run(&["--sync"]);
    assert_eq!(differs.code, 1, "{}", differs.stderr);
    assert!(differs.stderr.contains("the target differs from the source"), "{}", differs.stderr);
    assert!(!testkit::dump(&s.target.endpoints(), 0).unwrap().1.iter().any(|kv| kv.key == b"/src/3"), "nothing was applied");
    // A cutover (which does not hash at its start) applies the source's last revision: the
    // revision numbers now agree, the intruder's put among them. Verifying from the follow's
    // checkpoint, the revisions since it differ event for event: the cutover fails.
    let cut = s.run(&["--cutover"]);
    assert_eq!(cut.code, 3, "{} {}", cut.stdout, cut.stderr);
    assert!(cut.stdout.contains("DIFFERS") && cut.stdout.contains(&format!("at revision {checkpoint} (the follow's checkpoint)")), "{}", cut.stdout);
    assert!(cut.stderr.contains("compared event for event"), "{}", cut.stderr);
    assert_eq!(s.repo.json(&["migrate", "--status", "--cluster", "staged-b"])[0]["stage"], "staged", "not cut over");
}

/// An agent of cluster `cluster` capturing `endpoints` into `repo` (deltas every 0.5 s, no
/// scheduled full backup); killed when dropped.
struct CapturingAgent(std::process::Child);

impl CapturingAgent {
    fn start(dir: &std::path::Path, cluster: &str, endpoints: &[String], repo: &Repo) -> CapturingAgent {
        let port = crate::common::free_port();
        let cfg = format!(
            "cluster: {cluster}\nname: a0\nendpoints: [{}]\nlisten: 127.0.0.1:{port}\nelection: {{ttl_seconds: 2}}\n\
             repo: {{url: '{}', password_file: '{}', refresh_seconds: 1}}\nbackup: {{schedule: '0 0 1 1 *', from: endpoints}}\n\
             delta: {{interval_seconds: 0.5, spool_dir: '{}'}}\ndefrag: {{enabled: false}}\n",
            endpoints.join(", "),
            repo.url,
            repo.dir().join("repo.pass").display(),
            dir.join("spool").display()
        );
        let path = dir.join("agent.yaml");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let child = crate::common::quorum().args(["agent", "--config", path.to_str().unwrap()]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        CapturingAgent(child)
    }
}

impl Drop for CapturingAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn revisions_from_an_agents_delta_chain() {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (s, w) = Staged::new("staged-c", Some((stop.clone(), done.clone())));
    let agent_dir = tempfile::tempdir().unwrap();
    // The agent's capture starts after the newest backup: the migration's.
    let _agent = CapturingAgent::start(agent_dir.path(), "staged-c", &s.source.endpoints(), &s.repo);
    std::thread::sleep(Duration::from_secs(3));
    let sync = s.run(&["--sync", "--revisions-from", "deltas", "-w", "json"]);
    assert_eq!(sync.code, 0, "{} {}\nagent: {}", sync.stdout, sync.stderr, std::fs::read_to_string(agent_dir.path().join("agent.log")).unwrap_or_default());
    let rep: serde_json::Value = serde_json::from_str(&sync.stdout).unwrap();
    assert!(rep["revisions_applied"].as_u64().unwrap() > 50, "{rep}");
    let child = s.spawn(&["--follow", "--revisions-from", "deltas", "-w", "json"]);
    std::thread::sleep(Duration::from_secs(3));
    // The agent's chain dates the revisions: the lag in seconds is known.
    let mut status_args: Vec<&str> = s.args.iter().map(String::as_str).collect();
    status_args.push("--status");
    let st = s.repo.json(&status_args);
    let lag = st[0]["lag_seconds"].as_f64().unwrap_or_else(|| panic!("no lag in seconds: {st}"));
    assert!((0.0..30.0).contains(&lag), "{st}");
    // The --sync's note, or a checkpoint the follow has taken since.
    let outcome = st[0]["last_sync"]["outcome"].as_str();
    assert!(outcome == Some("synced") || outcome == Some("following, verified"), "{st}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    stop.store(true, Ordering::SeqCst);
    w.unwrap().join().unwrap();
    let cut = s.run(&["--cutover", "--revisions-from", "deltas", "--settle", "10s", "-w", "json"]);
    assert_eq!(cut.code, 0, "{} {}", cut.stdout, cut.stderr);
    let cut: serde_json::Value = serde_json::from_str(&cut.stdout).unwrap();
    assert_eq!(cut["verification"]["ok"], true, "{cut}");
    // The agent's election writes to the source now and then: compare at the cutover's revision.
    let last = cut["target_revision"].as_i64().unwrap();
    assert_eq!(revision(&s.target.endpoints()), last);
    assert!(revision(&s.source.endpoints()) >= last);
    for r in [last / 2, last * 3 / 4, last - 1] {
        assert_eq!(testkit::dump(&s.target.endpoints(), r).unwrap().1, testkit::dump(&s.source.endpoints(), r).unwrap().1, "revision {r}");
    }
    // Not for a one-shot or a stage.
    let r = s.run(&["--revisions-from", "deltas"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    eprintln!("from deltas: {} writes, cut over at revision {last}", done.load(Ordering::SeqCst));
}

fn put_all(eps: &[String], puts: &[(&str, Option<&str>)]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = Client::connect(eps.to_vec(), None).await.unwrap();
        for (k, v) in puts {
            match v {
                Some(v) => c.put(*k, *v, None).await.map(|_| ()).unwrap(),
                None => c.delete(*k, None).await.map(|_| ()).unwrap(),
            }
        }
    })
}

fn value_of(eps: &[String], key: &str) -> Option<Vec<u8>> {
    testkit::dump(eps, 0).unwrap().1.into_iter().find(|kv| kv.key == key.as_bytes()).map(|kv| kv.value)
}

/// Three namespaces of twenty copied while the source is written to, synced twice, cut over:
/// creates, updates and deletes inside the selection reach the target, changes outside do not,
/// target-only keys are untouched, and a key changed in the target after the copy is a
/// conflict handled by --on-conflict.
#[test]
fn namespaces_copied_synced_and_cut_over() {
    let repo = Repo::local();
    let source = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let target = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::load(&source.endpoints(), &testkit::KubeKeyspace { objects: 600, namespaces: 20, min_value: 100, max_value: 800, ..Default::default() }).unwrap();
    let (s, t) = (source.endpoints(), target.endpoints());
    put_all(&t, &[("/registry/configmaps/ns-001/target-only", Some("mine"))]);
    let base: Vec<String> = [
        "migrate",
        "--cluster",
        "p",
        "-n",
        "ns-001",
        "-n",
        "ns-002",
        "-n",
        "ns-003",
        "--from-endpoints",
        &source.endpoints_csv(),
        "--to-endpoints",
        &target.endpoints_csv(),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let q = |extra: &[&str]| {
        let mut a: Vec<&str> = base.iter().map(String::as_str).collect();
        a.extend(extra);
        repo.q(&a)
    };
    // Not for namespaces.
    assert_eq!(q(&["--sync", "--revisions-from", "deltas"]).code, 2);
    assert_eq!(q(&["--sync", "--lease-grace", "1m"]).code, 2);
    // No copy yet.
    let early = q(&["--sync"]);
    assert_eq!(early.code, 1, "{}", early.stderr);
    assert!(early.stderr.contains("copy the selection first"), "{}", early.stderr);
    let stage = q(&["--stage"]);
    assert_eq!(stage.code, 0, "{} {}", stage.stdout, stage.stderr);

    // The source changes after the copy, inside and outside the selection.
    let in_sel: Vec<String> =
        testkit::dump(&s, 0).unwrap().1.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).filter(|k| k.contains("/ns-002/")).collect();
    assert!(in_sel.len() >= 4, "{in_sel:?}");
    put_all(
        &s,
        &[
            ("/registry/configmaps/ns-001/created-after", Some("new")),
            (&in_sel[0], Some("updated")),
            (&in_sel[1], None),
            (&in_sel[2], Some("first")),
            (&in_sel[2], Some("second")),
            ("/registry/configmaps/ns-010/outside", Some("not selected")),
        ],
    );
    let sync = q(&["--sync", "-w", "json"]);
    assert_eq!(sync.code, 0, "{} {}", sync.stdout, sync.stderr);
    let rep: serde_json::Value = serde_json::from_str(&sync.stdout).unwrap();
    assert_eq!((rep["written"].as_u64(), rep["deleted"].as_u64()), (Some(3), Some(1)), "{rep}");
    assert_eq!(value_of(&t, "/registry/configmaps/ns-001/created-after").as_deref(), Some(&b"new"[..]));
    assert_eq!(value_of(&t, &in_sel[0]).as_deref(), Some(&b"updated"[..]));
    assert_eq!(value_of(&t, &in_sel[1]), None, "deleted in the source after the copy");
    assert_eq!(value_of(&t, &in_sel[2]).as_deref(), Some(&b"second"[..]));
    assert_eq!(value_of(&t, "/registry/configmaps/ns-010/outside"), None, "outside the selection");
    assert_eq!(value_of(&t, "/registry/configmaps/ns-001/target-only").as_deref(), Some(&b"mine"[..]));
    // Again: nothing to do, nothing written twice.
    let again = q(&["--sync", "-w", "json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let rep: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!((rep["written"].as_u64(), rep["deleted"].as_u64()), (Some(0), Some(0)), "{rep}");

    // A key changed in the target, then in the source: a conflict.
    put_all(&t, &[(&in_sel[3], Some("changed in the target"))]);
    put_all(&s, &[(&in_sel[3], Some("changed in the source")), (&in_sel[0], Some("updated again"))]);
    let fail = q(&["--sync"]);
    assert_eq!(fail.code, 1, "{}", fail.stderr);
    assert!(fail.stderr.contains("changed in the target since the migration wrote it"), "{}", fail.stderr);
    assert!(fail.stderr.contains("what was synced before it stays") && !fail.stderr.contains("nothing was written"), "{}", fail.stderr);
    assert_eq!(value_of(&t, &in_sel[3]).as_deref(), Some(&b"changed in the target"[..]));
    let skip = q(&["--sync", "--on-conflict", "skip", "-w", "json"]);
    assert_eq!(skip.code, 0, "{}", skip.stderr);
    let rep: serde_json::Value = serde_json::from_str(&skip.stdout).unwrap();
    assert_eq!(rep["conflicts"]["ns-002"].as_u64(), Some(1), "{rep}");
    assert_eq!(value_of(&t, &in_sel[3]).as_deref(), Some(&b"changed in the target"[..]), "skipped");
    assert_eq!(value_of(&t, &in_sel[0]).as_deref(), Some(&b"updated again"[..]));
    let st = repo.json(&["migrate", "--status", "--cluster", "p"]);
    assert!(st[0]["last_sync"]["conflicts_total"].as_u64().unwrap() >= 1, "{st}");

    // The cutover: the skipped key differs, so it fails verification until it is resolved.
    put_all(&s, &[(&in_sel[3], Some("changed in the source again"))]);
    let cut = q(&["--cutover", "--on-conflict", "overwrite", "--settle", "5s", "-w", "json"]);
    assert_eq!(cut.code, 0, "{} {}", cut.stdout, cut.stderr);
    let rep: serde_json::Value = serde_json::from_str(&cut.stdout).unwrap();
    assert_eq!(rep["overwritten"].as_u64(), Some(1), "{rep}");
    assert!(rep["verification"].as_array().unwrap().iter().all(|g| g["ok"] == true), "{rep}");
    assert_eq!(value_of(&t, &in_sel[3]).as_deref(), Some(&b"changed in the source again"[..]));
    assert_eq!(value_of(&t, "/registry/configmaps/ns-001/target-only").as_deref(), Some(&b"mine"[..]));
    let after = q(&["--sync"]);
    assert_eq!(after.code, 1, "{}", after.stderr);
    assert!(after.stderr.contains("was cut over"), "{}", after.stderr);
}
