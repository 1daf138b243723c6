//! Native `snapshot restore` against real etcd 3.4.23 and 3.5.16: restore a loaded 3-member
//! cluster's snapshot with Quorum and with the reference tool (`etcdctl snapshot restore` in
//! 3.4, `etcdutl` in 3.5) using the same flags; the WAL and `.snap` files must be byte-identical;
//! real etcd must start on Quorum's directories and hold exactly the source's keys, values and
//! revisions; `hashkv` must agree across members and with the reference restore; the restored
//! cluster must take writes, member add and remove, compaction and defrag.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::run;
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion, KubeKeyspace, MemberPlan};

fn reference_restore(version: EtcdVersion, snap: &Path, plan: &MemberPlan, initial: &str, token: &str, extra: &[&str]) {
    let mut c = version.snapshot_tool();
    c.args(["snapshot", "restore"]).arg(snap);
    c.args(["--name", &plan.name, "--initial-cluster", initial, "--initial-cluster-token", token]);
    c.args(["--initial-advertise-peer-urls", &plan.peer_url, "--data-dir"]).arg(&plan.data_dir).args(extra);
    let r = run(c);
    assert_eq!(r.code, 0, "reference restore failed: {}", r.stderr);
}

fn quorum_restore_all(snap: &Path, dir: &Path, initial: &str, token: &str, extra: &[&str]) -> String {
    let mut c = crate::common::quorum();
    c.args(["snapshot", "restore"]).arg(snap);
    c.args(["--all-members", "--initial-cluster", initial, "--initial-cluster-token", token, "-w", "json", "--data-dir"]);
    c.arg(dir.join("{name}.etcd")).args(extra);
    let r = run(c);
    assert_eq!(r.code, 0, "quorum restore failed: {}", r.stderr);
    r.stdout
}

fn files_under(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["member/wal", "member/snap"] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(d.join(sub)).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        out.extend(names.into_iter().map(|p| p.strip_prefix(d).unwrap().to_path_buf()));
    }
    out
}

/// Same file names; WAL and .snap byte-identical; the db equal in snapshot-status figures.
fn assert_same_layout(ours: &Path, theirs: &Path, version: EtcdVersion) {
    assert_eq!(files_under(ours), files_under(theirs), "file sets differ");
    for f in files_under(ours) {
        let (a, b) = (ours.join(&f), theirs.join(&f));
        if f.ends_with("db") {
            let st = |p: &Path| {
                let mut c = version.snapshot_tool();
                c.args(["snapshot", "status", "-w", "json"]).arg(p);
                let r = run(c);
                assert_eq!(r.code, 0, "{}", r.stderr);
                let mut v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                v.as_object_mut().unwrap().remove("totalSize"); // page layout differs by design
                v
            };
            assert_eq!(st(&a), st(&b), "db figures differ for {}", f.display());
        } else {
            assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{} differs from the reference", f.display());
        }
        let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
        assert_eq!(mode(&a), mode(&b), "mode of {}", f.display());
    }
}

fn hashes(c: &Cluster, rev: i64) -> Vec<u32> {
    c.endpoints().iter().map(|e| testkit::hash_kv(e, rev).unwrap().0).collect()
}

fn exercise(c: &Cluster) {
    c.etcdctl(&["put", "/registry/after/restore", "ok"]).unwrap();
    // etcd accepts a new voting member only once every member has been connected for 5 s.
    let mut tries = 0;
    let out = loop {
        match c.etcdctl(&["member", "add", "extra", "--peer-urls=http://127.0.0.1:1"]) {
            Ok(o) => break o,
            Err(e) if tries < 30 && e.to_string().contains("unhealthy cluster") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    c.etcdctl(&["member", "remove", &id]).unwrap();
    let rev = testkit::dump(&c.endpoints(), 0).unwrap().0;
    c.etcdctl(&["compact", &rev.to_string(), "--physical"]).unwrap();
    c.etcdctl(&["defrag"]).unwrap();
    assert_eq!(c.etcdctl(&["get", "/registry/after/restore", "--print-value-only"]).unwrap().trim(), "ok");
    let members = c.etcdctl(&["member", "list"]).unwrap();
    assert_eq!(members.lines().count(), 3, "{members}");
}

fn three_members(version: EtcdVersion) {
    let source = Cluster::start(ClusterOptions::new(version, 3)).unwrap();
    let spec = KubeKeyspace { objects: 4000, seed: 11, ..Default::default() };
    testkit::load(&source.endpoints(), &spec).unwrap();
    let work = tempfile::tempdir().unwrap();
    let snap = work.path().join("snap.db");
    source.save_snapshot(&snap).unwrap();
    let (src_rev, src_kvs) = testkit::dump(&source.endpoints(), 0).unwrap();
    let src_hash = testkit::hash_kv(&source.endpoints()[0], src_rev).unwrap().0;
    drop(source);

    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let (plans, initial) = plan_members(ours.path(), 3).unwrap();
    let token = "restored-token";
    let report: serde_json::Value = serde_json::from_str(&quorum_restore_all(&snap, ours.path(), &initial, token, &[])).unwrap();
    assert_eq!(report["layout"], version.label(), "layout chosen from the snapshot's cluster version");
    assert_eq!(report["restored_revision"], src_rev);
    for p in &plans {
        let mut rp = p.clone();
        rp.data_dir = theirs.path().join(format!("{}.etcd", p.name));
        reference_restore(version, &snap, &rp, &initial, token, &[]);
        assert_same_layout(&p.data_dir, &rp.data_dir, version);
    }

    // Real etcd on Quorum's directories.
    let opts = ClusterOptions::new(version, 3);
    let restored = Cluster::start_planned(&opts, ours.path(), &plans, &initial, token).unwrap();
    let (rev, kvs) = testkit::dump(&restored.endpoints(), 0).unwrap();
    assert_eq!(rev, src_rev);
    assert_eq!(kvs.len(), src_kvs.len());
    assert!(kvs == src_kvs, "keys, values or revisions differ from the source");
    let ours_hashes = hashes(&restored, src_rev);
    assert!(ours_hashes.iter().all(|h| *h == src_hash), "hashkv {ours_hashes:?} vs source {src_hash}");
    // IDs as etcd reports them equal the reference's (from the reference's .snap/WAL equality) and ours.
    let list = restored.etcdctl(&["member", "list", "-w", "json"]).unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut ids: Vec<String> = list["members"].as_array().unwrap().iter().map(|m| format!("{:x}", m["ID"].as_u64().unwrap())).collect();
    let mut want: Vec<String> = report["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
    exercise(&restored);
    drop(restored);

    // The reference's restore, on the same ports, gives the same hashkv.
    let ref_plans: Vec<MemberPlan> = plans.iter().map(|p| MemberPlan { data_dir: theirs.path().join(format!("{}.etcd", p.name)), ..p.clone() }).collect();
    let reference = Cluster::start_planned(&opts, theirs.path(), &ref_plans, &initial, token).unwrap();
    assert!(hashes(&reference, src_rev).iter().all(|h| *h == src_hash));
}

#[test]
fn three_members_3_4() {
    three_members(EtcdVersion::V3_4)
}

#[test]
fn three_members_3_5() {
    three_members(EtcdVersion::V3_5)
}

/// On a filesystem with reflinks (XFS here), the second and third members' dbs share the first's
/// blocks instead of being written again: the report says so, the kernel shows the extents
/// shared, the files are identical, and real etcd runs on them, takes writes, compaction and
/// defrag (which unshare the blocks) and still agrees with the source.
#[test]
fn three_members_on_xfs_share_one_db() {
    let test = "restore_compat::three_members_on_xfs_share_one_db";
    let Some(fs) = testkit::Mount::xfs(test, Path::new(env!("CARGO_TARGET_TMPDIR")), 1024) else { return };
    let version = EtcdVersion::V3_5;
    let source = Cluster::start(ClusterOptions::new(version, 1)).unwrap();
    testkit::load(&source.endpoints(), &KubeKeyspace { objects: 3000, seed: 5, ..Default::default() }).unwrap();
    let snap = fs.path().join("snap.db");
    source.save_snapshot(&snap).unwrap();
    let (src_rev, src_kvs) = testkit::dump(&source.endpoints(), 0).unwrap();
    let src_hash = testkit::hash_kv(&source.endpoints()[0], src_rev).unwrap().0;
    drop(source);

    let (plans, initial) = plan_members(fs.path(), 3).unwrap();
    let report: serde_json::Value = serde_json::from_str(&quorum_restore_all(&snap, fs.path(), &initial, "t", &[])).unwrap();
    let members = report["members"].as_array().unwrap();
    let first = members[0]["name"].as_str().unwrap();
    assert!(members[0].get("db_shared_with").is_none(), "{report}");
    for m in &members[1..] {
        assert_eq!(m["db_shared_with"], first, "{report}");
    }
    let db = |name: &str| fs.path().join(format!("{name}.etcd/member/snap/db"));
    let bytes = std::fs::read(db(first)).unwrap();
    for m in members {
        let name = m["name"].as_str().unwrap();
        assert!(std::fs::read(db(name)).unwrap() == bytes, "{name}'s db differs from {first}'s");
        let extents = Command::new("filefrag").arg("-v").arg(db(name)).output().unwrap();
        let extents = String::from_utf8_lossy(&extents.stdout);
        assert!(extents.contains("shared"), "{name}'s db has no shared extent:\n{extents}");
    }

    let restored = Cluster::start_planned(&ClusterOptions::new(version, 3), fs.path(), &plans, &initial, "t").unwrap();
    let (rev, kvs) = testkit::dump(&restored.endpoints(), 0).unwrap();
    assert_eq!(rev, src_rev);
    assert!(kvs == src_kvs, "keys, values or revisions differ from the source");
    assert!(hashes(&restored, src_rev).iter().all(|h| *h == src_hash));
    exercise(&restored);
    let now = testkit::dump(&restored.endpoints(), 0).unwrap().0;
    let after = hashes(&restored, now);
    assert!(after.iter().all(|h| *h == after[0]), "members disagree after writes on shared blocks: {after:?}");
}

/// `--bump-revision N --mark-compacted` (etcdutl 3.5; etcdctl 3.4.23 predates the flag).
#[test]
fn bump_revision_marks_compacted() {
    let version = EtcdVersion::V3_5;
    let source = Cluster::start(ClusterOptions::new(version, 1)).unwrap();
    testkit::load(&source.endpoints(), &KubeKeyspace { objects: 500, seed: 5, ..Default::default() }).unwrap();
    let work = tempfile::tempdir().unwrap();
    let snap = work.path().join("snap.db");
    source.save_snapshot(&snap).unwrap();
    let (src_rev, src_kvs) = testkit::dump(&source.endpoints(), 0).unwrap();
    drop(source);

    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let (plans, initial) = plan_members(ours.path(), 1).unwrap();
    let bump = ["--bump-revision", "1000", "--mark-compacted"];
    let report: serde_json::Value = serde_json::from_str(&quorum_restore_all(&snap, ours.path(), &initial, "t", &bump)).unwrap();
    assert_eq!(report["restored_revision"], src_rev + 1000);
    let mut rp = plans[0].clone();
    rp.data_dir = theirs.path().join("m0.etcd");
    reference_restore(version, &snap, &rp, &initial, "t", &bump);
    assert_same_layout(&plans[0].data_dir, &rp.data_dir, version);

    let c = Cluster::start_planned(&ClusterOptions::new(version, 1), ours.path(), &plans, &initial, "t").unwrap();
    let (rev, kvs) = testkit::dump(&c.endpoints(), 0).unwrap();
    assert_eq!(rev, src_rev + 1000);
    assert!(kvs == src_kvs, "bump must not change keys or their revisions");
    let err = c.etcdctl(&["get", "/registry", "--prefix", "--rev", &src_rev.to_string()]).unwrap_err().to_string();
    assert!(err.contains("compacted"), "{err}");
    let mut w = c.version.etcdctl();
    w.args(["--endpoints", &c.endpoints_csv(), "watch", "/registry", "--prefix", "--rev", "2"]);
    let out = Command::new("timeout").arg("5").arg(w.get_program()).args(w.get_args()).env("ETCDCTL_API", "3").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("compacted"), "watch below the bump must fail as compacted: {text}");
    let ours_hash = testkit::hash_kv(&c.endpoints()[0], 0).unwrap();
    drop(c);
    let r = Cluster::start_planned(&ClusterOptions::new(version, 1), theirs.path(), &[rp], &initial, "t").unwrap();
    assert_eq!(testkit::hash_kv(&r.endpoints()[0], 0).unwrap(), ours_hash, "hashkv after the bump equals etcdutl's");
}
