//! The backup repository on local disk (`file://`) with real etcd 3.5.16 and 3.4.23: live
//! backup over TLS, list, exact get, restore into a real cluster, drill, the `--include` bundle
//! under its own key, deduplication, tampering, wrong secrets, retention and prune, kill -9 at
//! random points of backup and prune, and racing backups and prunes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{run, sha256_file, walk, Repo};
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion, KubeKeyspace};

fn ctl_flags(c: &Cluster) -> Vec<String> {
    let mut v = vec!["--endpoints".to_string(), c.endpoints_csv()];
    if let Some(t) = &c.tls {
        v.extend(["--cacert".into(), t.ca.display().to_string(), "--cert".into(), t.client_cert.display().to_string()]);
        v.extend(["--key".into(), t.client_key.display().to_string()]);
    }
    v
}

/// Restore `id` from the repository into `n` members, start them, return the cluster.
fn restore_and_start(repo: &Repo, id: &str, version: EtcdVersion, n: usize, dir: &Path) -> Cluster {
    let (plans, initial) = plan_members(dir, n).unwrap();
    let template = dir.join("{name}.etcd");
    let r = repo.ok(&[
        "restore",
        id,
        "--all-members",
        "--initial-cluster",
        &initial,
        "--initial-cluster-token",
        "restored",
        "--data-dir",
        template.to_str().unwrap(),
        "-w",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["members"].as_array().unwrap().len(), n);
    // The trailer was checked at backup; the restore does not hash the snapshot again.
    assert_eq!(report["hash_checked"], false);
    assert!(report["proven_by"].as_str().unwrap().contains("trailer checked at backup"), "{report}");
    // Not a terminal: each phase says when it starts and how long it took.
    for phase in ["fetching", "restoring", "writing the data dir"] {
        assert!(r.stderr.contains(&format!("{phase} ...")) && r.stderr.contains(&format!("{phase}: done in ")), "{}", r.stderr);
    }
    Cluster::start_planned(&ClusterOptions::new(version, n), dir, &plans, &initial, "restored").unwrap()
}

fn live_backup_restore_drill(version: EtcdVersion) {
    // (TLS to etcd is the `snapshot save` path, covered with real certificates in live_cluster.rs.)
    let c = Cluster::start(ClusterOptions::new(version, 3)).unwrap();
    testkit::load(&c.endpoints(), &KubeKeyspace { objects: 1500, ..Default::default() }).unwrap();
    let repo = Repo::local();

    // Files to keep with the backup: the certificates, under the bundle key.
    let include = tempfile::tempdir().unwrap();
    std::fs::write(include.path().join("ca.crt"), "-----BEGIN CERTIFICATE-----\nnot a real one\n").unwrap();
    std::fs::write(include.path().join("encryption-config.yaml"), "kind: EncryptionConfiguration\n").unwrap();

    // Without the bundle key, --include is refused and nothing is written.
    let mut args: Vec<String> = vec!["backup".into(), "--cluster".into(), "prod".into(), "--include".into(), include.path().display().to_string()];
    args.extend(ctl_flags(&c));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = repo.q(&a);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("bundle key"), "{}", refused.stderr);
    assert!(repo.backup_ids().is_empty());

    args.extend(["--from".into(), "follower".into(), "--tag".into(), "nightly".into(), "-w".into(), "json".into()]);
    args.extend(repo.bundle_flags());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let rep: serde_json::Value = serde_json::from_str(&repo.ok(&a).stdout).unwrap();
    let id = rep["id"].as_str().unwrap().to_string();
    let m = &rep["manifest"];
    assert_eq!(m["cluster"], "prod");
    assert_eq!(m["tags"][0], "nightly");
    assert!(m["member"].as_str().unwrap().starts_with('m'));
    assert_eq!(m["etcd_version"].as_str().unwrap().get(..3), Some(version.label()));
    assert_eq!(m["bundle"]["files"], 2);
    let snap_rev = m["snapshot"]["revision"].as_i64().unwrap();

    // The source as it was at the backup.
    let (_, src_kvs) = testkit::dump(&c.endpoints(), snap_rev).unwrap();
    let (src_hash, _, _) = testkit::hash_kv(&c.endpoints()[0], snap_rev).unwrap();
    assert_eq!(m["snapshot"]["hash_kv"].as_u64().unwrap() as u32, src_hash, "offline hashkv == the live member's");
    assert_eq!(m["snapshot"]["live_keys"].as_u64().unwrap() as usize, src_kvs.len());

    // list and show.
    let list = repo.json(&["backups", "list"]);
    assert_eq!(list["backups"][0]["id"], id.as_str());
    assert!(list["clusters"][0]["last_verified"].is_null());
    // show: a summary; the bundle's file names only with the bundle key.
    let shown = repo.ok(&["backups", "show", &id[..8]]);
    let rev = m["snapshot"]["revision"].as_i64().unwrap();
    assert!(shown.stdout.contains(&format!("{id} (cluster prod)")) && shown.stdout.contains(&format!("revision {rev}")), "{}", shown.stdout);
    assert!(shown.stdout.contains("2 files") && shown.stdout.contains("names need the bundle key") && !shown.stdout.contains("ca.crt"), "{}", shown.stdout);
    let mut a = vec!["backups", "show", &id[..8]];
    let bf = repo.bundle_flags();
    a.extend(bf.iter().map(String::as_str));
    let shown = repo.ok(&a);
    let ca = include.path().join("ca.crt");
    assert!(shown.stdout.lines().any(|l| l.trim_start().starts_with("0644") && l.ends_with(ca.to_str().unwrap())), "{}", shown.stdout);

    // get: the exact snapshot; the reference tool reads it.
    let out = tempfile::tempdir().unwrap();
    let got = out.path().join("snap.db");
    repo.ok(&["backups", "get", "latest", "-o", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&got), m["snapshot"]["sha256"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&got).unwrap().permissions().mode() & 0o777, 0o600, "a snapshot holds every Secret: owner-only");
    let mut st = version.snapshot_tool();
    st.args(["snapshot", "status", "-w", "json"]).arg(&got);
    let theirs: serde_json::Value = serde_json::from_str(&run(st).stdout).unwrap();
    assert_eq!(theirs["revision"].as_i64().unwrap(), snap_rev);
    assert_eq!(theirs["hash"].as_u64().unwrap(), m["snapshot"]["hash"].as_u64().unwrap());
    // get never overwrites.
    let again = repo.q(&["backups", "get", "latest", "-o", got.to_str().unwrap()]);
    assert_eq!(again.code, 2, "{}", again.stderr);

    // The bundle: files back, byte for byte; not without the bundle key.
    let bdir = out.path().join("bundle");
    let no_key = repo.q(&["backups", "get", &id, "--bundle", "-o", bdir.to_str().unwrap()]);
    assert_eq!(no_key.code, 2, "{}", no_key.stderr);
    let mut a = vec!["backups", "get", &id, "--bundle", "-o", bdir.to_str().unwrap()];
    let bf = repo.bundle_flags();
    a.extend(bf.iter().map(String::as_str));
    repo.ok(&a);
    let ca_back = bdir.join(include.path().join("ca.crt").strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(&ca_back).unwrap(), std::fs::read(include.path().join("ca.crt")).unwrap());

    // restore: a real 3-member cluster starts on it with the source's data.
    let rdir = tempfile::tempdir().unwrap();
    let restored = restore_and_start(&repo, &id, version, 3, rdir.path());
    let (rev, kvs) = testkit::dump(&restored.endpoints(), 0).unwrap();
    assert_eq!(rev, snap_rev);
    assert!(kvs == src_kvs, "restored keys differ from the source at the backup's revision");
    for e in restored.endpoints() {
        assert_eq!(testkit::hash_kv(&e, snap_rev).unwrap().0, src_hash);
    }
    drop(restored);
    // A second restore into the same directories is refused, untouched.
    let (_, initial) = plan_members(rdir.path(), 3).unwrap();
    let template = rdir.path().join("{name}.etcd");
    let refused = repo.q(&["restore", &id, "--all-members", "--initial-cluster", &initial, "--data-dir", template.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);

    // drill: with the etcd of this version; recorded and shown.
    let d = repo.ok(&["drill", "--latest", "--cluster", "prod", "--etcd-bin", version.etcd().to_str().unwrap(), "-w", "json"]);
    let drill: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(drill["ok"], true, "{drill}");
    let phases: Vec<&str> = d.stderr.lines().filter_map(|l| l.strip_suffix(" ...")).collect();
    assert_eq!(phases, ["fetching", "restoring", "writing the data dir", "checking sha256", "starting etcd", "comparing with the manifest"], "{}", d.stderr);
    assert!(drill["checks"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().contains("hashkv")));
    let list = repo.json(&["backups", "list"]);
    assert_eq!(list["clusters"][0]["last_verified"]["backup"], id.as_str());
    assert_eq!(list["backups"][0]["last_drill"]["ok"], true);
    let table = repo.ok(&["backups", "list"]);
    assert!(table.stdout.contains("cluster prod: last verified"), "{}", table.stdout);
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);

    // A drill killed with -9 takes its etcd with it.
    let mut drill = repo.cmd(&["drill", "--latest", "--cluster", "prod", "--etcd-bin", version.etcd().to_str().unwrap()]);
    let mut drill = drill.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let etcd = loop {
        if let Some(p) = child_named(drill.id(), "drill") {
            break p;
        }
        assert!(Instant::now() < deadline, "the drill's etcd did not start");
        assert!(drill.try_wait().unwrap().is_none(), "the drill ended before its etcd was seen");
        std::thread::sleep(Duration::from_millis(50));
    };
    drill.kill().unwrap();
    drill.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(etcd) {
        if Instant::now() > deadline {
            let _ = std::process::Command::new("kill").args(["-9", &etcd.to_string()]).status();
            panic!("etcd {etcd} outlived its drill by 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child of `parent` whose command line holds `--name NAME`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    let want = format!("--name\0{name}\0");
    std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit(") ").next()?.split(' ').nth(1)?.parse::<u32>().ok());
        ppid == Some(parent) && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want))
    })
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
}

#[test]
fn live_backup_restore_drill_3_5() {
    live_backup_restore_drill(EtcdVersion::V3_5);
}

#[test]
fn live_backup_restore_drill_3_4() {
    live_backup_restore_drill(EtcdVersion::V3_4);
}

/// A live backup reads the snapshot while it streams in. A stream cut half way (a relay resets
/// the connection after 8 MiB of the member's answers) fails the command with the stream
/// named: no backup is listed, nothing is left in --tmp-dir, the repository checks clean, and
/// the next backup over a healthy path holds the member's whole keyspace.
#[test]
fn live_backup_cut_mid_stream_stores_nothing() {
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.big_requests = true;
    let c = Cluster::start(opts).unwrap();
    testkit::bulk(&c.endpoints(), 32 << 20, 2048, 8192, 4).unwrap();
    let upstream: std::net::SocketAddr = c.endpoints()[0].trim_start_matches("http://").parse().unwrap();
    let relay = testkit::relay::Relay::start(upstream).unwrap();
    relay.set(testkit::relay::Fault::Truncate(8 << 20));
    let repo = Repo::local();
    let tmp = tempfile::tempdir().unwrap();
    let tmp_dir = tmp.path().to_str().unwrap();

    let r = repo.q(&["backup", "--cluster", "prod", "--endpoints", &relay.url(), "--tmp-dir", tmp_dir]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("snapshot") && r.stderr.contains(&relay.url()), "the error names the stream and the endpoint: {}", r.stderr);
    assert!(relay.stats().truncations >= 1, "{:?}", relay.stats());
    eprintln!("cut stream: {}", r.stderr.trim());
    assert!(repo.backup_ids().is_empty(), "a cut stream left a backup");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the temporary snapshot was left behind");
    assert_eq!(repo.ok(&["repo", "check"]).code, 0);

    relay.set(testkit::relay::Fault::Pass);
    let rep: serde_json::Value =
        serde_json::from_str(&repo.ok(&["backup", "--cluster", "prod", "--endpoints", &relay.url(), "--tmp-dir", tmp_dir, "-w", "json"]).stdout).unwrap();
    let saved = tmp.path().join("etcdctl.db");
    c.save_snapshot(&saved).unwrap();
    let st = etcd_data::status(&saved).unwrap();
    assert_eq!(rep["manifest"]["snapshot"]["revision"], st.revision);
    assert_eq!(rep["manifest"]["snapshot"]["total_key"], st.total_key);
    assert_eq!(rep["bytes"], std::fs::metadata(&saved).unwrap().len(), "{rep}");
    std::fs::remove_file(&saved).unwrap();
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);
}

/// A cluster to take successive snapshots from.
struct Source {
    c: Cluster,
    dir: tempfile::TempDir,
    n: usize,
    objects: usize,
}

impl Source {
    fn new(objects: usize) -> Source {
        let mut o = ClusterOptions::new(EtcdVersion::V3_5, 1);
        o.no_fsync = true;
        o.big_requests = true;
        let c = Cluster::start(o).unwrap();
        testkit::load(&c.endpoints(), &KubeKeyspace { objects, compact: false, overwrite_fraction: 0.0, delete_fraction: 0.0, ..Default::default() }).unwrap();
        Source { c, dir: tempfile::tempdir().unwrap(), n: 0, objects }
    }

    /// Change `count` objects, then save a snapshot.
    fn next(&mut self, count: usize) -> PathBuf {
        for i in 0..count {
            let k = testkit::object_key((self.n * 7919 + i * 104729) % self.objects, 10);
            testkit::put(&self.c.endpoints(), &k, format!("changed {} {i}", self.n).repeat(40).as_bytes()).unwrap();
        }
        self.n += 1;
        let p = self.dir.path().join(format!("s{}.db", self.n));
        self.c.save_snapshot(&p).unwrap();
        p
    }
}

fn backup_file(repo: &Repo, snap: &Path, cluster: &str) -> serde_json::Value {
    repo.json(&["backup", "--cluster", cluster, "--snapshot", snap.to_str().unwrap()])
}

/// Every backup the repository lists reassembles to its sha256.
fn assert_all_restorable(repo: &Repo) {
    let out = tempfile::tempdir().unwrap();
    let list = repo.json(&["backups", "list"]);
    for (i, b) in list["backups"].as_array().unwrap().iter().enumerate() {
        let p = out.path().join(format!("{i}.db"));
        let r = repo.q(&["backups", "get", b["id"].as_str().unwrap(), "-o", p.to_str().unwrap()]);
        assert_eq!(r.code, 0, "backup {} does not restore: {}", b["id"], r.stderr);
        assert_eq!(sha256_file(&p), b["snapshot"]["sha256"].as_str().unwrap());
    }
}

#[test]
fn dedup_tamper_and_wrong_secrets() {
    let mut src = Source::new(3000);
    let repo = Repo::local();
    let s1 = src.next(0);
    let first = backup_file(&repo, &s1, "c1");
    let full = first["manifest"]["added_bytes"].as_u64().unwrap();
    let s2 = src.next(30); // 1% of the objects
    let second = backup_file(&repo, &s2, "c1");
    let inc = second["manifest"]["added_bytes"].as_u64().unwrap();
    assert!(inc * 4 < full, "an increment after 1% changes added {inc} bytes of {full}");
    assert!(second["reused_chunks"].as_u64().unwrap() > 0);
    assert_all_restorable(&repo);

    // Wrong passphrase: a clear error, exit 2.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not it").unwrap();
    let mut c = crate::common::quorum();
    c.args(["backups", "list", "--repo", &repo.url, "--password-file", bad.path().to_str().unwrap()]);
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
    // No secret at all, and a missing repository.
    let mut c = crate::common::quorum();
    c.args(["backups", "list", "--repo", &repo.url]).env_remove("QUORUM_PASSWORD");
    let r = run(c);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("passphrase"), "{}", r.stderr);
    let mut c = crate::common::quorum();
    c.args(["backups", "list", "--repo", "file:///nonexistent/repo", "--password-file", bad.path().to_str().unwrap()]);
    let r = run(c);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("quorum repo init"), "{}", r.stderr);

    // Tamper with one byte of a pack: check names the pack, the blob and the backups; get and
    // restore refuse; nothing is written at the target.
    let root = PathBuf::from(repo.url.strip_prefix("file://").unwrap());
    let mut packs: Vec<PathBuf> = packs_of(&root);
    packs.sort();
    let victim = &packs[0];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let r = repo.q(&["repo", "check", "--read-data"]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(r.stdout.contains(&format!("pack {name}: content does not match its name")), "{}", r.stdout);
    assert!(r.stdout.contains("does not authenticate") && r.stdout.contains("needed by backup(s)"), "{}", r.stdout);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x.db");
    let mut refused = 0;
    let mut damaged = None;
    for id in repo.backup_ids() {
        let g = repo.q(&["backups", "get", &id, "-o", target.to_str().unwrap()]);
        if g.code != 0 {
            assert_eq!(g.code, 3, "{}", g.stderr);
            assert!(g.stderr.contains("does not authenticate"), "{}", g.stderr);
            assert!(!target.exists());
            let leftovers: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("x.db")).collect();
            assert!(leftovers.is_empty(), "a failed get left {leftovers:?}");
            refused += 1;
            damaged = Some(id);
        } else {
            std::fs::remove_file(&target).unwrap();
        }
    }
    assert!(refused >= 1, "the damaged blob is in some backup");
    let ddir = out.path().join("d");
    let skip = repo.q(&["restore", "latest", "--data-dir", ddir.to_str().unwrap(), "--skip-hash-check"]);
    assert_eq!(skip.code, 2, "--skip-hash-check does not apply to a restore from the repository: {}", skip.stderr);
    assert!(skip.stderr.contains("--skip-hash-check is for `snapshot restore`") && !ddir.exists(), "{}", skip.stderr);
    // A restore of a backup holding the damaged blob (its chunks are read while they arrive)
    // fails as `get` does, and leaves neither a data dir nor its temporary snapshot.
    let r = repo.q(&["restore", damaged.as_deref().unwrap(), "--data-dir", ddir.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("does not authenticate"), "{}", r.stderr);
    assert!(!ddir.exists());
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != "x.db").collect();
    assert!(left.is_empty(), "a failed restore left {left:?}");
}

#[test]
fn forget_and_prune() {
    let mut src = Source::new(2000);
    let repo = Repo::local();
    for _ in 0..5 {
        let s = src.next(300);
        backup_file(&repo, &s, "c1");
    }
    let other = src.next(10);
    backup_file(&repo, &other, "c2");
    let root = PathBuf::from(repo.url.strip_prefix("file://").unwrap());
    let before: u64 = packs_of(&root).iter().map(|p| p.metadata().unwrap().len()).sum();

    let dry = repo.json(&["forget", "--keep-last", "2", "--cluster", "c1", "--dry-run"]);
    assert_eq!(dry["decisions"].as_array().unwrap().iter().filter(|d| d["keep"] == false).count(), 3);
    assert_eq!(repo.backup_ids().len(), 6, "dry run removes nothing");
    let f = repo.json(&["forget", "--keep-last", "2", "--cluster", "c1"]);
    assert_eq!(f["removed"].as_array().unwrap().len(), 3);
    assert_eq!(repo.backup_ids().len(), 3, "c2's backup is not c1's policy's business");
    let p = repo.json(&["prune", "--max-unused", "0"]);
    assert!(p["packs_deleted"].as_u64().unwrap() + p["packs_repacked"].as_u64().unwrap() > 0, "{p}");
    let after: u64 = packs_of(&root).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(after < before, "prune freed nothing: {before} -> {after}");
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);
    assert_all_restorable(&repo);
    // A policy is required.
    assert_eq!(repo.q(&["forget"]).code, 2);
}

/// Increments store their chunk list and key map as patches of the newest backup's: the chain
/// shares the first backup's whole lists and key map segments and survives that backup being
/// forgotten and pruned (when a list is stored whole again: `chunk_list`'s unit tests).
#[test]
fn chunk_lists_are_patched_and_outlive_their_base() {
    let mut src = Source::new(3000);
    let repo = Repo::local();
    let first = backup_file(&repo, &src.next(0), "c1");
    let base = first["manifest"]["chunk_lists"].clone();
    assert!(first["manifest"].get("chunk_patches").is_none(), "{first}");
    let base_km = first["manifest"]["key_map"]["segments"].clone();
    let (mut chain, mut last) = (0, None);
    for _ in 0..3 {
        let snap = src.next(10);
        let b = backup_file(&repo, &snap, "c1");
        let m = &b["manifest"];
        assert_eq!(m["chunk_lists"], base, "an increment names the first backup's lists");
        assert_eq!(m["key_map"]["segments"], base_km, "and the first backup's key map segments");
        let patches = m["chunk_patches"].as_array().unwrap().len();
        assert!(patches > chain, "each increment adds a patch: {patches} after {chain}");
        assert_eq!(m["key_map"]["patches"].as_array().unwrap().len(), patches, "{m}");
        chain = patches;
        last = Some((b["id"].as_str().unwrap().to_string(), snap));
    }
    assert_all_restorable(&repo);
    // The first backup forgotten and everything unused pruned: its lists and key map stay for
    // the chain.
    let f = repo.json(&["forget", "--keep-last", "3", "--cluster", "c1"]);
    assert_eq!(f["removed"].as_array().unwrap().len(), 1, "{f}");
    repo.json(&["prune", "--max-unused", "0"]);
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);
    assert_all_restorable(&repo);
    let (id, snap) = last.unwrap();
    let mut on_file = crate::common::quorum();
    on_file.args(["k8s", "ls", snap.to_str().unwrap(), "-n", "ns-001", "-w", "json"]);
    let on_file = run(on_file);
    let from_map = repo.ok(&["k8s", "ls", &id, "-n", "ns-001", "-w", "json"]);
    assert!(from_map.stderr.contains("found in its key map"), "{}", from_map.stderr);
    assert_eq!(from_map.stdout, on_file.stdout);
    assert!(on_file.stdout.len() > 1000, "{}", on_file.stdout);
}

/// Run quorum with the repo flags, kill -9 it after `delay`; true when it finished first.
fn run_and_kill(repo: &Repo, args: &[&str], delay: Duration) -> bool {
    let mut c = repo.cmd(args);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + delay;
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn kill_9_during_backup_and_prune() {
    let mut src = Source::new(4000);
    let repo = Repo::local();
    let snaps: Vec<PathBuf> = (0..4).map(|_| src.next(200)).collect();
    backup_file(&repo, &snaps[0], "c1");
    // How long one backup takes, to spread the kills over it.
    let t = Instant::now();
    backup_file(&repo, &snaps[1], "c1");
    let span = t.elapsed().max(Duration::from_millis(100));
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut finished = 0;
    for round in 0..50 {
        let delay = Duration::from_micros(next() % (span.as_micros() as u64 * 3 / 2));
        let done = if round % 2 == 0 {
            let s = &snaps[round / 2 % snaps.len()];
            run_and_kill(&repo, &["backup", "--cluster", "c1", "--snapshot", s.to_str().unwrap()], delay)
        } else {
            repo.q(&["forget", "--keep-last", "2"]);
            run_and_kill(&repo, &["prune", "--max-unused", "0", "--retry-lock", "5s", "--keep-unindexed-for", "0s"], delay)
        };
        finished += usize::from(done);
        let check = repo.q(&["repo", "check", "--read-data"]);
        assert_eq!(check.code, 0, "round {round} (delay {delay:?}): {}", check.stdout);
        if round % 10 == 9 {
            assert_all_restorable(&repo);
        }
    }
    assert!(finished < 50, "every run finished before its kill: the kills hit nothing");
    assert_all_restorable(&repo);
    // The leftovers of killed backups go with the next prune.
    repo.ok(&["prune", "--retry-lock", "5s", "--keep-unindexed-for", "0s"]);
    let check = repo.ok(&["repo", "check", "--read-data"]);
    assert!(!check.stdout.contains("not named by any index"), "{}", check.stdout);
}

#[test]
fn racing_backups_and_prunes() {
    let mut src = Source::new(3000);
    let repo = Arc::new(Repo::local());
    let snaps: Vec<PathBuf> = (0..6).map(|_| src.next(150)).collect();
    for round in 0..20 {
        let a = snaps[round % 6].clone();
        let b = snaps[(round + 3) % 6].clone();
        let r1 = repo.clone();
        let r2 = repo.clone();
        let r3 = repo.clone();
        let t1 = std::thread::spawn(move || r1.q(&["backup", "--cluster", "a", "--snapshot", a.to_str().unwrap(), "--retry-lock", "60s", "-w", "json"]));
        let t2 = std::thread::spawn(move || r2.q(&["backup", "--cluster", "b", "--snapshot", b.to_str().unwrap(), "--retry-lock", "60s", "-w", "json"]));
        let t3 = std::thread::spawn(move || {
            r3.q(&["forget", "--keep-last", "3", "--retry-lock", "60s"]);
            r3.q(&["prune", "--max-unused", "0", "--retry-lock", "60s"])
        });
        let mut made = Vec::new();
        for t in [t1, t2] {
            let r = t.join().unwrap();
            assert_eq!(r.code, 0, "round {round}: {}", r.stderr);
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            made.push(v["id"].as_str().unwrap().to_string());
        }
        let p = t3.join().unwrap();
        assert_eq!(p.code, 0, "round {round}: prune: {}", p.stderr);
        let check = repo.q(&["repo", "check", "--read-data"]);
        assert_eq!(check.code, 0, "round {round}: {}", check.stdout);
        // This round's backups are the newest of their clusters: retention keeps them.
        let ids = repo.backup_ids();
        for m in &made {
            assert!(ids.contains(m), "round {round}: backup {m} was lost");
        }
        assert!(ids.len() <= 8, "round {round}: {} backups survive keep-last 3 per cluster", ids.len());
    }
    assert_all_restorable(&repo);
}

use std::sync::Arc;

/// Every pack file of a `file://` repository (all clusters).
fn packs_of(root: &std::path::Path) -> Vec<PathBuf> {
    walk(&root.join("clusters")).into_iter().filter(|p| p.parent().and_then(|d| d.parent()).is_some_and(|d| d.ends_with("data"))).collect()
}

/// `backup --include` on a repository made without a bundle key: one refusal that names both
/// steps (make the key, then give it), and following it as written works.
#[test]
fn include_without_a_bundle_key_names_both_steps_once() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    c.etcdctl(&["put", "/registry/configmaps/default/a", "x"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("s.db");
    c.save_snapshot(&snap).unwrap();
    let pass = dir.path().join("repo.pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let url = format!("file://{}", dir.path().join("repo").display());
    let q = |args: &[&str]| {
        let mut cmd = crate::common::quorum();
        cmd.args(args).args(["--repo", &url, "--password-file", pass.to_str().unwrap()]);
        run(cmd)
    };
    assert_eq!(q(&["repo", "init"]).code, 0);
    let include = dir.path().join("pki");
    std::fs::create_dir(&include).unwrap();
    std::fs::write(include.join("ca.crt"), "not a real certificate\n").unwrap();
    let backup = ["backup", "--cluster", "prod", "--snapshot", snap.to_str().unwrap(), "--include", include.to_str().unwrap()];
    let refused = q(&backup);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("has none yet") && refused.stderr.contains("repo key add") && refused.stderr.contains("--bundle-password-file"),
        "{}",
        refused.stderr
    );
    // The hint, as written (with the placeholders filled in).
    let bundle = dir.path().join("bundle.pass");
    std::fs::write(&bundle, "another secret\n").unwrap();
    assert_eq!(q(&["repo", "key", "add", "--bundle", "--new-password-file", bundle.to_str().unwrap()]).code, 0);
    let mut again = backup.to_vec();
    again.extend(["--bundle-password-file", bundle.to_str().unwrap()]);
    let ok = q(&again);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}

/// `repo init --compression`: the level is kept in config and used (stored bytes fall as the
/// level rises, 0 stores the data as it is), every level reads back to the same snapshot, and a
/// level zstd lacks is refused before anything is made.
#[test]
fn compression_levels_are_kept_used_and_read_back_alike() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::load(&c.endpoints(), &KubeKeyspace { objects: 600, compact: false, overwrite_fraction: 0.0, delete_fraction: 0.0, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("s.db");
    c.save_snapshot(&snap).unwrap();
    let pass = dir.path().join("repo.pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let q = |name: &str, args: &[&str]| {
        let mut cmd = crate::common::quorum();
        let url = format!("file://{}", dir.path().join(name).display());
        cmd.args(args).args(["--repo", &url, "--password-file", pass.to_str().unwrap()]);
        run(cmd)
    };
    let mut added = Vec::new();
    for (name, flag, level) in
        [("default", None, -1), ("none", Some("--compression=0"), 0), ("one", Some("--compression=1"), 1), ("three", Some("--compression=3"), 3)]
    {
        let mut init = vec!["repo", "init"];
        init.extend(flag);
        assert_eq!(q(name, &init).code, 0, "{name}");
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(name).join("config")).unwrap()).unwrap();
        assert_eq!(config["compression"], level, "{name}");
        let b = q(name, &["backup", "--cluster", "c", "--snapshot", snap.to_str().unwrap(), "-w", "json"]);
        assert_eq!(b.code, 0, "{name}: {}", b.stderr);
        let b: serde_json::Value = serde_json::from_str(&b.stdout).unwrap();
        added.push(b["manifest"]["added_bytes"].as_u64().unwrap());
        let out = dir.path().join(format!("{name}.db"));
        let got = q(name, &["backups", "get", "latest", "-o", out.to_str().unwrap()]);
        assert_eq!(got.code, 0, "{name}: {}", got.stderr);
        assert_eq!(sha256_file(&out), sha256_file(&snap), "{name}");
    }
    let [fast, none, one, three] = added[..] else { unreachable!() };
    assert!(none > fast && fast > one && one >= three, "stored bytes: 0 {none}, -1 {fast}, 1 {one}, 3 {three}");
    let refused = q("bad", &["repo", "init", "--compression=23"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(!dir.path().join("bad").exists(), "a refused init made nothing");
}
