//! The repository format is pinned: small repositories made by earlier versions are committed
//! under `crates/repo/tests/pinned/` (made by `make.sh` there, through the command line, with
//! real etcd 3.5: backups of two clusters, an --include bundle, delta segments captured by the
//! agent, a drill record, a migration record). Every later version must open them, pass
//! `repo check --read-data`, and give back byte-identical snapshots and bundle files.
//!
//! `v1/` is the version-1 layout (one namespace for every cluster): it must be upgraded by
//! `repo upgrade`, here killed at every step and run again. `v2/` is the per-cluster layout
//! with whole chunk lists and key maps; `v3/` is the current version, where alpha's later
//! backups store their chunk list and key map as patches of the one before.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::{quorum, run, sha256_file, walk, Run};

fn pinned(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../repo/tests/pinned").join(version)
}

/// A writable copy of a pinned repository and the flags that open it.
struct Copy {
    dir: tempfile::TempDir,
    flags: Vec<String>,
}

fn copy(version: &str) -> Copy {
    let dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp").arg("-a").arg(pinned(version)).arg(dir.path().join("p")).status().unwrap();
    assert!(st.success());
    let p = dir.path().join("p");
    let flags = vec![
        "--repo".to_string(),
        format!("file://{}", p.join("repo").display()),
        "--key-file".into(),
        p.join("data.key").display().to_string(),
        "--bundle-key-file".into(),
        p.join("bundle.key").display().to_string(),
    ];
    Copy { dir, flags }
}

impl Copy {
    fn q(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = quorum();
        c.args(args).args(&self.flags);
        for (k, v) in env {
            c.env(k, v);
        }
        run(c)
    }
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.q(args, &[]);
        assert_eq!(r.code, 0, "quorum {args:?}: {} {}", r.stdout, r.stderr);
        r
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        serde_json::from_str(&self.ok(&a).stdout).unwrap()
    }
    fn expected(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("p/expected.json")).unwrap()).unwrap()
    }
}

/// Everything a pinned repository must still give back.
fn verify(c: &Copy) {
    let exp = c.expected();
    let check = c.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["errors"].as_array().unwrap().len(), 0, "{check}");
    assert_eq!(check["clusters"], 2, "{check}");
    assert!(check["segments_read"].as_u64().unwrap() >= 2, "{check}");

    let list = c.json(&["backups", "list"]);
    let backups = list["backups"].as_array().unwrap();
    let alpha: Vec<&serde_json::Value> = backups.iter().filter(|b| b["cluster"] == "alpha").collect();
    let beta: Vec<&serde_json::Value> = backups.iter().filter(|b| b["cluster"] == "beta").collect();
    // alpha: three backups and the migration's; beta: one.
    assert_eq!((alpha.len(), beta.len()), (4, 1), "{list}");
    let last_verified = list["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == "alpha").unwrap()["last_verified"].clone();
    assert_eq!(last_verified["ok"], true, "the drill record of alpha: {list}");

    // Every snapshot byte-identical: the files the fixture was made from, by their sha256.
    let mut got = BTreeSet::new();
    for b in backups {
        let id = b["id"].as_str().unwrap();
        let out = c.dir.path().join(format!("{id}.db"));
        c.ok(&["backups", "get", id, "-o", out.to_str().unwrap()]);
        let sha = sha256_file(&out);
        assert_eq!(sha, b["snapshot"]["sha256"].as_str().unwrap());
        got.insert(sha);
    }
    for (name, sha) in exp["snapshots"].as_object().unwrap() {
        assert!(got.contains(sha.as_str().unwrap()), "snapshot {name} ({sha}) not given back");
    }
    // The bundle of alpha's first backup.
    let with_bundle = alpha.iter().find(|b| !b["bundle"].is_null()).expect("a backup with a bundle");
    let out = c.dir.path().join("bundle");
    c.ok(&["backups", "get", with_bundle["id"].as_str().unwrap(), "--bundle", "-o", out.to_str().unwrap()]);
    for (rel, sha) in exp["bundle"].as_object().unwrap() {
        let f = walk(&out).into_iter().find(|p| p.to_str().unwrap().ends_with(rel.as_str())).unwrap_or_else(|| panic!("{rel} not extracted"));
        assert_eq!(sha256_file(&f), sha.as_str().unwrap(), "{rel}");
    }
    // The delta chain after alpha's second backup reaches the last captured revision.
    let last = exp["delta_last_revision"].as_i64().unwrap();
    let oldest_after = alpha.iter().map(|b| b["snapshot"]["revision"].as_i64().unwrap()).filter(|r| *r < last).max().unwrap();
    let base = alpha.iter().find(|b| b["snapshot"]["revision"].as_i64().unwrap() == oldest_after).unwrap()["id"].as_str().unwrap().to_string();
    let chain = c.json(&["backups", "deltas", "--cluster", "alpha", "--base", &base]);
    assert_eq!(chain["chain"]["contiguous_to"].as_i64().unwrap(), last, "{chain}");
    assert_eq!(chain["chain"]["gaps"].as_array().unwrap().len(), 0);
    // A point-in-time restore in the middle of the chain, from the segments.
    let mid = (oldest_after + last) / 2;
    let dd = c.dir.path().join("pitr");
    let r = c.json(&["restore", "--cluster", "alpha", "--at-revision", &mid.to_string(), "--data-dir", dd.to_str().unwrap()]);
    assert_eq!(r["target_revision"].as_i64().unwrap(), mid, "{r}");
    assert!(r["segments"].as_u64().unwrap() >= 1, "{r}");
    // The migration record is still where the migration finds it.
    let migs = walk(&c.dir.path().join("p/repo/migrations"));
    assert_eq!(migs.len(), 2, "record and done marker: {migs:?}");
}

#[test]
fn pinned_version_2_opens_checks_and_restores() {
    verify(&copy("v2"));
}

#[test]
fn pinned_version_3_opens_checks_and_restores() {
    let c = copy("v3");
    let list = c.json(&["backups", "list"]);
    let backups = list["backups"].as_array().unwrap();
    let patched = backups.iter().filter(|b| b.get("chunk_patches").is_some_and(|p| !p.is_null())).count();
    assert!(patched >= 1, "the fixture pins chunk list patches: {list}");
    // Key map patches: what the key map gives equals what the snapshot file holds.
    let km_patched: Vec<&serde_json::Value> = backups.iter().filter(|b| !b["key_map"]["patches"].is_null()).collect();
    assert!(!km_patched.is_empty(), "the fixture pins key map patches: {list}");
    for b in km_patched {
        let id = b["id"].as_str().unwrap();
        let file = c.dir.path().join(format!("{id}.km.db"));
        c.ok(&["backups", "get", id, "-o", file.to_str().unwrap()]);
        let mut on_file = crate::common::quorum();
        on_file.args(["k8s", "ls", file.to_str().unwrap(), "-n", "ns-a", "-w", "json"]);
        let on_file = run(on_file);
        assert_eq!(on_file.code, 0, "{}", on_file.stderr);
        let from_map = c.ok(&["k8s", "ls", id, "-n", "ns-a", "-w", "json"]);
        assert!(from_map.stderr.contains("found in its key map"), "{}", from_map.stderr);
        assert_eq!(from_map.stdout, on_file.stdout, "backup {id}");
        assert!(from_map.stdout.matches("\"key\"").count() >= 40, "{}", from_map.stdout);
    }
    verify(&c);
}

/// A version-2 repository is read and written as it is (backups store whole chunk lists,
/// which version-2 binaries sharing it can read), and `repo upgrade` makes it version 3;
/// every backup still comes back byte-identical.
#[test]
fn pinned_version_2_is_used_as_is_then_upgraded() {
    let c = copy("v2");
    let backups = c.json(&["backups", "list"]);
    let alpha: Vec<&serde_json::Value> = backups["backups"].as_array().unwrap().iter().filter(|b| b["cluster"] == "alpha").collect();
    // Snapshots of alpha, newest first: backing up an older one makes a real change.
    let mut shas = BTreeSet::new();
    let snaps: Vec<std::path::PathBuf> = alpha
        .iter()
        .filter(|b| shas.insert(b["snapshot"]["sha256"].as_str().unwrap().to_string()))
        .take(2)
        .map(|b| {
            let p = c.dir.path().join(format!("{}.db", b["id"].as_str().unwrap()));
            c.ok(&["backups", "get", b["id"].as_str().unwrap(), "-o", p.to_str().unwrap()]);
            p
        })
        .collect();
    let backup = |snap: &std::path::Path| c.json(&["backup", "--cluster", "alpha", "--snapshot", snap.to_str().unwrap()]);
    let v2 = backup(&snaps[1]);
    assert!(v2["manifest"].get("chunk_patches").is_none(), "a version-2 repository gets whole lists: {v2}");
    let config = || serde_json::from_slice::<serde_json::Value>(&std::fs::read(c.dir.path().join("p/repo/config")).unwrap()).unwrap();
    assert_eq!(config()["version"], 2);
    let up = c.json(&["repo", "upgrade"]);
    assert_eq!(up["from_version"], 2, "{up}");
    assert_eq!(config()["version"], 3);
    assert!(c.ok(&["repo", "upgrade"]).stdout.contains("nothing to do"));
    // (These snapshots are too small for a patch to pay: `repo_local` tests the chains.)
    let v3 = backup(&snaps[0]);
    for (b, snap) in [(&v3, &snaps[0]), (&v2, &snaps[1])] {
        let out = c.dir.path().join("again.db");
        c.ok(&["backups", "get", b["id"].as_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_eq!(sha256_file(&out), sha256_file(snap));
        std::fs::remove_file(&out).unwrap();
    }
    let check = c.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["errors"].as_array().unwrap().len(), 0, "{check}");
}

#[test]
fn pinned_version_1_is_refused_until_upgraded_and_the_upgrade_survives_kills() {
    let c = copy("v1");
    let r = c.q(&["backups", "list"], &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("version-1 layout") && r.stderr.contains("quorum repo upgrade"), "{}", r.stderr);
    // Killed at every step, then run again: the same repository in the end.
    for point in ["upgrade-packs", "upgrade-manifests", "upgrade-before-config", "upgrade-config", "upgrade-deleting"] {
        let r = c.q(&["repo", "upgrade"], &[("QUORUM_CRASH_POINT", point)]);
        // Every step runs on every rerun (leftover version-1 objects are copied again), so
        // each point is reached: the process aborts there (no exit code).
        assert_eq!(r.code, -1, "{point}: {}", r.stderr);
    }
    // The kill after the config rewrite left it at the current version.
    let up = c.json(&["repo", "upgrade"]);
    assert_eq!(up["from_version"], 3, "{up}");
    let again = c.ok(&["repo", "upgrade"]);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    let root = c.dir.path().join("p/repo");
    for legacy in ["snapshots", "index", "data", "deltas", "verifications"] {
        assert!(walk(&root.join(legacy)).is_empty(), "{legacy}/ still holds version-1 objects");
    }
    verify(&c);
}

#[test]
fn pinned_version_1_upgrades_in_one_go() {
    let c = copy("v1");
    let up = c.json(&["repo", "upgrade"]);
    assert_eq!(up["from_version"], 1, "{up}");
    assert_eq!(up["clusters"].as_array().unwrap().len(), 2, "{up}");
    assert_eq!(up["backups"], 5, "{up}");
    assert!(up["segments_copied"].as_u64().unwrap() >= 2, "{up}");
    verify(&c);
}
