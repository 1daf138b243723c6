//! Offline `HashKV` (`etcd_data::hashkv::hash_kv`) against real etcd 3.4.23 and 3.5.16.
//!
//! One member takes puts, overwrites, deletes (single and multi-key, so several tombstones
//! share a revision), a key re-created after its delete, and keys on leases, one lease
//! revoked. At each phase a snapshot is saved and our value for the whole store and for
//! several `--rev` must equal `etcdctl endpoint hashkv --rev R -w json` (hash, header
//! revision, compact revision) and the count of `etcdctl get "" --prefix --rev R` of the live
//! member, and of a member restored from that snapshot (`etcdctl`/`etcdutl snapshot restore`):
//!
//! * a: no compaction;
//! * b: `compact C1 --physical` in the middle of history;
//! * c: more writes ending in a delete, then `compact` at the latest revision;
//! * d: every key deleted in one request (no key live: etcd's empty keep set, which hashes
//!   all remaining revisions at or below the compact revision).
//!
//! `--rev` equal to a compaction the live member ran itself: 3.4 refuses it as compacted, 3.5
//! answers from the hash it cached during that compaction (with the previous compact
//! revision), so there only the restored member is compared. 3.5 also: the restore with
//! `--bump-revision --mark-compacted`, hashed from the restored db before the member starts.

use std::path::{Path, PathBuf};

use crate::common::run;
use etcd_data::hashkv::{hash_kv, HashKv};
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion};

/// `etcdctl endpoint hashkv --rev R -w json`: (hash, compact_revision, header.revision).
fn live_hashkv(c: &Cluster, rev: i64) -> anyhow::Result<(u32, i64, i64)> {
    let out = c.etcdctl(&["endpoint", "hashkv", "--rev", &rev.to_string(), "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let h = &v[0]["HashKV"];
    // Go's JSON omits zero values.
    Ok((h["hash"].as_u64().unwrap_or(0) as u32, h["compact_revision"].as_i64().unwrap_or(0), h["header"]["revision"].as_i64().unwrap()))
}

/// The count `etcdctl get "" --prefix --count-only --rev R` reports, and header.revision.
/// (`--count-only` needs `-w fields` in 3.5 and does not exist in 3.4; `count` is the range's
/// total whatever the limit.)
fn live_count(c: &Cluster, rev: i64) -> (i64, i64) {
    let out = c.etcdctl(&["get", "", "--prefix", "--keys-only", "--limit", "1", "--rev", &rev.to_string(), "-w", "json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (v["count"].as_i64().unwrap_or(0), v["header"]["revision"].as_i64().unwrap())
}

fn current_rev(c: &Cluster) -> i64 {
    live_count(c, 0).1
}

fn put(c: &Cluster, k: &str, v: &str) {
    c.etcdctl(&["put", k, v]).unwrap();
}

/// Our values equal the member's for `None` (as `--rev 0`) and each of `revs`.
fn assert_member_agrees(c: &Cluster, db: &bolt::Db, revs: &[i64], what: &str) {
    let ours = hash_kv(db, None).unwrap();
    let (hash, compact, header) = live_hashkv(c, 0).unwrap();
    assert_eq!((ours.hash, ours.compact_revision, ours.revision), (hash, compact, header), "{what}: whole store");
    assert_eq!(ours.hashed_revision, ours.revision);
    assert_eq!(ours.live_keys, live_count(c, 0).0, "{what}: live keys");
    for &r in revs {
        let ours = hash_kv(db, Some(r)).unwrap();
        let (hash, compact, header) = live_hashkv(c, r).unwrap();
        assert_eq!((ours.hash, ours.compact_revision, ours.revision, ours.hashed_revision), (hash, compact, header, r), "{what}: --rev {r}");
        assert_eq!(ours.live_keys, live_count(c, r).0, "{what}: live keys at {r}");
    }
}

/// Restore `snap` with the version's reference tool into a new one-member cluster.
fn restore(version: EtcdVersion, snap: &Path, dir: &Path, extra: &[&str]) -> (Cluster, PathBuf) {
    let (plans, initial) = plan_members(dir, 1).unwrap();
    let p = &plans[0];
    let mut cmd = version.snapshot_tool();
    cmd.args(["snapshot", "restore"]).arg(snap);
    cmd.args(["--name", &p.name, "--initial-cluster", &initial, "--initial-cluster-token", "hashkv"]);
    cmd.args(["--initial-advertise-peer-urls", &p.peer_url, "--data-dir"]).arg(&p.data_dir).args(extra);
    let r = run(cmd);
    assert_eq!(r.code, 0, "restore failed: {}", r.stderr);
    let db = p.data_dir.join("member/snap/db");
    let copy = dir.join("restored.db");
    std::fs::copy(&db, &copy).unwrap(); // as restored, before etcd opens it
    let c = Cluster::start_planned(&ClusterOptions::new(version, 1), dir, &plans, &initial, "hashkv").unwrap();
    (c, copy)
}

struct Phase<'a> {
    name: &'a str,
    /// Revisions to compare with the live member (all above its own compactions).
    revs: Vec<i64>,
    /// The compact revision when the live member compacted there itself, and the compaction
    /// before it (what 3.5's cached answer reports).
    own_compaction: Option<(i64, i64)>,
}

fn phase(c: &Cluster, work: &Path, p: Phase<'_>) -> HashKv {
    let version = c.version;
    let snap = work.join(format!("{}.db", p.name));
    c.save_snapshot(&snap).unwrap();
    let db = bolt::Db::open(&snap).unwrap();
    eprintln!("{} {}: {:?}", version.label(), p.name, hash_kv(&db, None).unwrap());
    assert_member_agrees(c, &db, &p.revs, &format!("{} {}: live", version.label(), p.name));

    if let Some((at, prev)) = p.own_compaction {
        let ours = hash_kv(&db, Some(at)).unwrap();
        assert_eq!(ours.compact_revision, at);
        match (version, live_hashkv(c, at)) {
            (EtcdVersion::V3_4, Err(e)) => assert!(e.to_string().contains("compacted"), "{e}"),
            (EtcdVersion::V3_5, Ok((_, compact, _))) => assert_eq!(compact, prev, "3.5 answers from its compaction-time cache"),
            (_, other) => panic!("{} {}: --rev {at}: {other:?}", version.label(), p.name),
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let (restored, _) = restore(version, &snap, dir.path(), &[]);
    let mut revs = p.revs.clone();
    if let (EtcdVersion::V3_5, Some((at, _))) = (version, p.own_compaction) {
        revs.push(at); // a restored member has no cache: computed afresh, as here
    }
    assert_member_agrees(&restored, &db, &revs, &format!("{} {}: restored", version.label(), p.name));
    hash_kv(&db, None).unwrap()
}

fn compat(version: EtcdVersion) {
    let c = Cluster::start(ClusterOptions::new(version, 1)).unwrap();
    let work = tempfile::tempdir().unwrap();

    for i in 0..24 {
        put(&c, &format!("/k/{}", i % 8), &format!("v{i}"));
    }
    c.etcdctl(&["del", "/k/3"]).unwrap();
    put(&c, "/k/3", "re-created");
    c.etcdctl(&["del", "/k/5"]).unwrap();
    let grant = |ttl: &str| c.etcdctl(&["lease", "grant", ttl]).unwrap().split_whitespace().nth(1).unwrap().to_string();
    let (keep_lease, revoke_lease) = (grant("600"), grant("600"));
    c.etcdctl(&["put", "/lease/a", "x", &format!("--lease={keep_lease}")]).unwrap();
    c.etcdctl(&["put", "/lease/b", "y", &format!("--lease={revoke_lease}")]).unwrap();
    c.etcdctl(&["put", "/lease/c", "z", &format!("--lease={revoke_lease}")]).unwrap();
    let mid = current_rev(&c);
    c.etcdctl(&["lease", "revoke", &revoke_lease]).unwrap();
    for i in 0..4 {
        put(&c, &format!("/r/{i}"), "r");
    }
    c.etcdctl(&["del", "/r/", "--prefix"]).unwrap();
    for i in 0..6 {
        put(&c, &format!("/k/{i}"), &format!("w{i}"));
    }
    let cur = current_rev(&c);
    let a = phase(&c, work.path(), Phase { name: "a", revs: vec![2, mid, mid + 1, cur], own_compaction: None });
    assert_eq!(a.compact_revision, -1);

    // b: compaction in the middle of history.
    c.etcdctl(&["compact", &mid.to_string(), "--physical"]).unwrap();
    let cur = current_rev(&c);
    let b = phase(&c, work.path(), Phase { name: "b", revs: vec![mid + 1, mid + 3, cur], own_compaction: Some((mid, -1)) });
    assert_eq!((b.compact_revision, b.revision), (mid, cur));

    // c: compaction at the latest revision, which is a tombstone.
    for i in 0..5 {
        put(&c, &format!("/c/{i}"), "c");
        put(&c, "/k/7", &format!("c{i}"));
    }
    c.etcdctl(&["del", "/c/4"]).unwrap();
    let latest = current_rev(&c);
    c.etcdctl(&["compact", &latest.to_string(), "--physical"]).unwrap();
    let cc = phase(&c, work.path(), Phase { name: "c", revs: vec![], own_compaction: Some((latest, mid)) });
    assert_eq!((cc.compact_revision, cc.revision, cc.hashed_revision), (latest, latest, latest));
    // 3.4.23 compaction deletes the tombstone at the compact revision, 3.5.16 keeps it; the
    // current revision comes from finishedCompactRev in the former.
    let last_entry = etcd_data::status(&work.path().join("c.db")).unwrap().revision;
    assert_eq!(last_entry == latest, version == EtcdVersion::V3_5, "last key-bucket entry {last_entry}, latest {latest}");

    // d: nothing live any more.
    c.etcdctl(&["del", "", "--prefix"]).unwrap();
    let cur = current_rev(&c);
    assert_eq!(cur, latest + 1);
    let d = phase(&c, work.path(), Phase { name: "d", revs: vec![cur], own_compaction: Some((latest, mid)) });
    assert_eq!((d.live_keys, d.compact_revision), (0, latest));

    if version == EtcdVersion::V3_5 {
        // etcdutl's --bump-revision writes an empty value at latest+1000 and schedules a
        // compaction there, which the member resumes on start.
        let dir = tempfile::tempdir().unwrap();
        let (restored, db) = restore(version, &work.path().join("b.db"), dir.path(), &["--bump-revision", "1000", "--mark-compacted"]);
        let ours = hash_kv(&bolt::Db::open(&db).unwrap(), None).unwrap();
        assert!(ours.compaction_pending);
        assert_eq!((ours.revision, ours.compact_revision), (b.revision + 1000, b.revision + 1000));
        assert_eq!(ours.live_keys, b.live_keys, "the marker's empty key is not counted");
        let (hash, compact, header) = live_hashkv(&restored, 0).unwrap();
        assert_eq!((ours.hash, ours.compact_revision, ours.revision), (hash, compact, header), "bumped restore");
        assert_eq!(live_count(&restored, 0).0, ours.live_keys);
    }
}

#[test]
fn hashkv_matches_etcd_3_4() {
    compat(EtcdVersion::V3_4)
}

#[test]
fn hashkv_matches_etcd_3_5() {
    compat(EtcdVersion::V3_5)
}
