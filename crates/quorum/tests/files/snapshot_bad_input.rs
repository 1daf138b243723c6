//! Bad input to `snapshot status` and `snapshot verify`: a clear one-line error naming what is
//! wrong and where, exit 3 for damage and 2 for usage, never a panic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::{quorum_args, run, Run};
use testkit::{Cluster, ClusterOptions, EtcdVersion, KubeKeyspace};

/// A real snapshot with a few hundred keys (taken once per test binary).
fn snapshot() -> &'static Path {
    static SNAP: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = SNAP.get_or_init(|| {
        // Statics are never dropped: keep the file under cargo's per-target scratch directory.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
        testkit::load(&c.endpoints(), &KubeKeyspace { objects: 300, ..Default::default() }).unwrap();
        let p = dir.path().join("good.db");
        c.save_snapshot(&p).unwrap();
        (dir, p)
    });
    p
}

fn variant(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(snapshot()).unwrap();
    edit(&mut bytes);
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

/// The first leaf page of the key bucket, reached from the bucket's root (so it is in use,
/// not a free page that merely looks like a leaf).
fn key_bucket_leaf(bytes: &[u8]) -> usize {
    let db = bolt::Db::open(snapshot()).unwrap();
    let root = db.bucket(&[b"key"]).unwrap().unwrap().root_page().unwrap() as usize;
    let mut leaf = root;
    while u16::from_le_bytes([bytes[leaf * 4096 + 8], bytes[leaf * 4096 + 9]]) == 0x01 {
        leaf = u64::from_le_bytes(bytes[leaf * 4096 + 24..leaf * 4096 + 32].try_into().unwrap()) as usize;
    }
    assert_ne!(leaf, root, "300 objects make the key bucket a tree");
    leaf
}

fn assert_clear_error(r: &Run, code: i32, needles: &[&str]) {
    assert_eq!(r.code, code, "exit code; stdout: {} stderr: {}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "panic: {}", r.stderr);
    let first = r.stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("Error: "), "first stderr line: {first:?}");
    for n in needles {
        assert!(first.contains(n), "{first:?} lacks {n:?}");
    }
}

fn both(file: &Path) -> (Run, Run) {
    (quorum_args(&["snapshot", "status"], file), quorum_args(&["snapshot", "verify"], file))
}

#[test]
fn good_snapshot_is_clean() {
    let (s, v) = both(snapshot());
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert!(v.stdout.contains(": OK"), "{}", v.stdout);
}

#[test]
fn truncated() {
    let (_d, p) = variant("truncated.db", |b| b.truncate(b.len() / 2 + 100));
    let (s, v) = both(&p);
    for r in [&s, &v] {
        assert_clear_error(r, 3, &["truncated", "truncated.db"]);
    }
}

#[test]
fn empty_file() {
    let (_d, p) = variant("empty.db", |b| b.clear());
    let (s, v) = both(&p);
    for r in [&s, &v] {
        assert_clear_error(r, 3, &["empty"]);
    }
}

#[test]
fn not_bolt() {
    let (_d, p) = variant("notes.txt", |b| *b = b"this is a text file, not an etcd snapshot\n".repeat(300));
    let (s, v) = both(&p);
    for r in [&s, &v] {
        assert_clear_error(r, 3, &["not a bbolt database", "meta page 0"]);
    }
}

#[test]
fn directory_and_missing_path_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let (s, v) = both(d.path());
    for r in [&s, &v] {
        assert_clear_error(r, 2, &["is a directory"]);
    }
    let missing = d.path().join("nope.db");
    let (s, v) = both(&missing);
    for r in [&s, &v] {
        assert_clear_error(r, 2, &["nope.db", "No such file"]);
    }
}

#[test]
fn flipped_byte_in_meta_page_falls_back_to_its_twin() {
    // Meta 0's page size field: meta 0 fails its checksum, meta 1 is used, as bbolt does.
    let (_d, p) = variant("meta.db", |b| b[16 + 40] ^= 0x40);
    let s = quorum_args(&["snapshot", "status", "-w", "json"], &p);
    assert_eq!(s.code, 0, "{}", s.stderr);
    let mut c = EtcdVersion::V3_5.snapshot_tool();
    c.args(["snapshot", "status", "-w", "json"]).arg(&p);
    let reference = run(c);
    assert_eq!(s.stdout, reference.stdout, "must equal etcdutl, which also falls back to meta 1");
    // verify: the trailer no longer matches (damage, exit 3) and the meta page is named.
    let v = quorum_args(&["snapshot", "verify"], &p);
    assert_eq!(v.code, 3);
    assert!(v.stdout.contains("meta page 0 (offset 0x0) is damaged: checksum mismatch"), "{}", v.stdout);
    assert!(v.stdout.contains("sha256 trailer"), "{}", v.stdout);
    // Both metas damaged: not usable.
    let (_d2, p2) = variant("meta2.db", |b| {
        b[16 + 40] ^= 0x40;
        b[4096 + 16 + 40] ^= 0x40;
    });
    let (s, v) = both(&p2);
    for r in [&s, &v] {
        assert_clear_error(r, 3, &["not a bbolt database", "checksum mismatch"]);
    }
}

#[test]
fn flipped_byte_in_leaf_page_header() {
    let bytes = std::fs::read(snapshot()).unwrap();
    let leaf = key_bucket_leaf(&bytes);
    // The page type: leaf (0x02) becomes 0x03, an invalid type.
    let (_d, p) = variant("leaf.db", |b| b[leaf * 4096 + 8] ^= 0x01);
    let s = quorum_args(&["snapshot", "status"], &p);
    assert_clear_error(&s, 3, &["integrity check failed", &format!("page {leaf} ")]);
    let v = quorum_args(&["snapshot", "verify"], &p);
    assert_eq!(v.code, 3);
    assert!(v.stdout.contains("DAMAGED"), "{}", v.stdout);
    let offset = format!("page {leaf} (offset {:#x}): invalid page type", leaf * 4096 + 8);
    assert!(v.stdout.contains(&offset), "want {offset:?} in {}", v.stdout);
    assert!(v.stdout.contains("sha256 trailer"), "{}", v.stdout);
    // The reference tool refuses it too.
    let mut c = EtcdVersion::V3_5.snapshot_tool();
    c.args(["snapshot", "status"]).arg(&p);
    assert_ne!(run(c).code, 0);
}

#[test]
fn flipped_byte_in_leaf_key_is_named() {
    let bytes = std::fs::read(snapshot()).unwrap();
    let leaf = key_bucket_leaf(&bytes);
    // Flip the low byte of the main revision of the leaf's first key: the key no longer
    // matches its parent's branch key, nor its value's mod_revision.
    let (_d, p) = variant("key.db", |b| {
        let pos = u32::from_le_bytes(b[leaf * 4096 + 16 + 4..leaf * 4096 + 16 + 8].try_into().unwrap()) as usize;
        b[leaf * 4096 + 16 + pos + 7] ^= 0xff;
    });
    let v = quorum_args(&["snapshot", "verify"], &p);
    assert_eq!(v.code, 3, "{}", v.stdout);
    assert!(v.stdout.contains(&format!("page {leaf} ")) || v.stdout.contains("bucket \"key\""), "{}", v.stdout);
}

#[test]
fn flipped_byte_in_sha256_trailer() {
    let (_d, p) = variant("trailer.db", |b| {
        let n = b.len();
        b[n - 5] ^= 0x10;
    });
    // status ignores the trailer, as etcdctl/etcdutl do.
    assert_eq!(quorum_args(&["snapshot", "status"], &p).code, 0);
    let v = quorum_args(&["snapshot", "verify"], &p);
    assert_eq!(v.code, 3);
    let size = std::fs::metadata(&p).unwrap().len();
    let want = format!("sha256 trailer (offset {:#x}) does not match the data", size - 32);
    assert!(v.stdout.contains(&want), "want {want:?} in {}", v.stdout);
}

#[test]
fn verify_json_names_faults() {
    let (_d, p) = variant("json.db", |b| {
        let n = b.len();
        b[n - 1] ^= 1;
    });
    let mut c = crate::common::quorum();
    c.args(["snapshot", "verify", "-w", "json"]).arg(&p);
    let r = run(c);
    assert_eq!(r.code, 3);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["trailer"]["state"], "mismatch");
}
