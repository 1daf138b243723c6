//! `quorum snapshot status` against `etcdctl snapshot status` (3.4.23) and `etcdutl snapshot
//! status` (3.5.16) on snapshots of real clusters of several shapes: every output format the
//! reference prints must be identical, and `snapshot verify` must find each file clean.

use std::path::{Path, PathBuf};

use crate::common::{quorum_args, run};
use testkit::{Cluster, ClusterOptions, EtcdVersion, KubeKeyspace};

fn reference(version: EtcdVersion, file: &Path, w: &str) -> String {
    let mut c = version.snapshot_tool();
    c.args(["snapshot", "status", "-w", w]).arg(file);
    let r = run(c);
    assert_eq!(r.code, 0, "reference status failed: {}", r.stderr);
    r.stdout
}

/// Compare every format, field by field for JSON.
fn assert_same_status(version: EtcdVersion, file: &Path) -> serde_json::Value {
    let ours = quorum_args(&["snapshot", "status", "-w", "json"], file);
    assert_eq!(ours.code, 0, "quorum status failed: {}", ours.stderr);
    let ours_json: serde_json::Value = serde_json::from_str(&ours.stdout).unwrap();
    let theirs_json: serde_json::Value = serde_json::from_str(&reference(version, file, "json")).unwrap();
    for field in ["hash", "revision", "totalKey", "totalSize"] {
        assert_eq!(ours_json[field], theirs_json[field], "{field} differs on {} ({})", file.display(), version.label());
    }
    assert_eq!(ours_json, theirs_json, "JSON differs");
    for w in ["simple", "table", "fields"] {
        let ours = quorum_args(&["snapshot", "status", "-w", w], file);
        assert_eq!(ours.code, 0);
        assert_eq!(ours.stdout, reference(version, file, w), "-w {w} differs on {}", file.display());
    }
    let v = quorum_args(&["snapshot", "verify", "-w", "json"], file);
    assert_eq!(v.code, 0, "verify not clean on {}: {}", file.display(), v.stdout);
    let vj: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(vj["status"], ours_json, "verify's status figures differ from status");
    ours_json
}

fn snapshot_of(cluster: &Cluster, name: &str) -> PathBuf {
    let p = cluster.dir().join(name);
    cluster.save_snapshot(&p).unwrap();
    p
}

fn empty(version: EtcdVersion) {
    let c = Cluster::start(ClusterOptions::new(version, 1)).unwrap();
    let snap = snapshot_of(&c, "empty.db");
    let j = assert_same_status(version, &snap);
    // etcd reports revision 0 for an empty key bucket.
    assert_eq!(j["revision"], 0);
}

fn keys_10k(version: EtcdVersion) {
    let c = Cluster::start(ClusterOptions::new(version, 3)).unwrap();
    let spec = KubeKeyspace { objects: 10_000, min_value: 200, max_value: 1200, ..Default::default() };
    let load = testkit::load(&c.endpoints(), &spec).unwrap();
    let snap = snapshot_of(&c, "10k.db");
    let j = assert_same_status(version, &snap);
    assert_eq!(j["revision"], load.revision);
    // The raw db of a stopped member (no sha256 trailer, written by the server itself) too.
    let mut c = c;
    let db = c.members[2].data_dir.join("member/snap/db");
    c.members[2].kill();
    assert_same_status(version, &db);
}

fn churn_200mib(version: EtcdVersion) {
    let c = Cluster::start(ClusterOptions::new(version, 1)).unwrap();
    let spec = KubeKeyspace {
        objects: 40_000,
        min_value: 512,
        max_value: 8192,
        overwrite_fraction: 0.4,
        delete_fraction: 0.15,
        compact: true,
        seed: 7,
        ..Default::default()
    };
    let load = testkit::load(&c.endpoints(), &spec).unwrap();
    assert!(load.compacted_at.is_some());
    let snap = snapshot_of(&c, "churn.db");
    let size = std::fs::metadata(&snap).unwrap().len();
    assert!(size >= 200 << 20, "snapshot only {size} bytes");
    let j = assert_same_status(version, &snap);
    assert_eq!(j["revision"], load.revision);
    let v = quorum_args(&["snapshot", "verify", "-w", "json"], &snap);
    let vj: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert!(vj["pages_free"].as_u64().unwrap() > 0, "compaction should leave free pages");
    // Compaction drops most tombstones at or below the compaction point (3.5 keeps a few).
    let sc = &vj["schema"];
    assert!(sc["tombstones"].as_u64().unwrap() <= load.deletes);
    assert_eq!(sc["puts"].as_u64().unwrap() + sc["tombstones"].as_u64().unwrap(), sc["revisions"].as_u64().unwrap());
    assert_eq!(vj["schema"]["compact_revision"].as_i64(), load.compacted_at);
}

fn overflow_values(version: EtcdVersion) {
    let c = Cluster::start(ClusterOptions::new(version, 1)).unwrap();
    let spec = KubeKeyspace {
        objects: 60,
        min_value: 20_000,
        max_value: 900_000,
        overwrite_fraction: 0.5,
        delete_fraction: 0.1,
        compact: true,
        seed: 3,
        ..Default::default()
    };
    testkit::load(&c.endpoints(), &spec).unwrap();
    let snap = snapshot_of(&c, "overflow.db");
    assert_same_status(version, &snap);
}

macro_rules! shapes {
    ($($name:ident: $shape:ident($v:expr);)*) => {$(
        #[test]
        fn $name() { $shape($v) }
    )*};
}

shapes! {
    empty_3_4: empty(EtcdVersion::V3_4);
    empty_3_5: empty(EtcdVersion::V3_5);
    keys_10k_3_4: keys_10k(EtcdVersion::V3_4);
    keys_10k_3_5: keys_10k(EtcdVersion::V3_5);
    churn_200mib_3_4: churn_200mib(EtcdVersion::V3_4);
    churn_200mib_3_5: churn_200mib(EtcdVersion::V3_5);
    overflow_values_3_4: overflow_values(EtcdVersion::V3_4);
    overflow_values_3_5: overflow_values(EtcdVersion::V3_5);
}
