//! `k8s ls|get|export|diff --repo` and `backups get --etcd-key` through a backup's key map (issue 17): only the key map and
//! the chunks holding the selected objects are fetched, and every answer equals the one read
//! from the snapshot file itself (latest revisions, deletions, overwrites included).

use std::path::Path;

use crate::common::{quorum, run, Repo, Run};
use testkit::{Cluster, ClusterOptions, EtcdVersion, KubeKeyspace};

fn on_file(args: &[&str]) -> Run {
    let mut c = quorum();
    c.args(args);
    run(c)
}

/// Every file under `dir` with its contents, by path relative to `dir`.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = crate::common::walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| (p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// The share of the snapshot the command said it fetched, in percent.
fn fetched_share(stderr: &str) -> f64 {
    let line = stderr.lines().find(|l| l.contains("found in its key map; fetched")).unwrap_or_else(|| panic!("no key map line: {stderr}"));
    line.rsplit('(').next().unwrap().trim_end_matches("%)").parse().unwrap()
}

#[test]
fn objects_from_a_backup_read_only_their_chunks() {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let spec = KubeKeyspace { objects: 4000, namespaces: 20, min_value: 1024, max_value: 6144, ..Default::default() };
    testkit::load(&c.endpoints(), &spec).unwrap();
    let d = tempfile::tempdir().unwrap();
    let first = d.path().join("first.db");
    c.save_snapshot(&first).unwrap();
    // Changes for a diff: overwrites, a deletion and a new object in ns-003.
    let keys: Vec<String> = testkit::dump(&c.endpoints(), 0).unwrap().1.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
    let in_ns: Vec<&String> = keys.iter().filter(|k| k.contains("/ns-003/")).collect();
    testkit::put(&c.endpoints(), in_ns[0], b"{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"changed\"}}").unwrap();
    c.etcdctl(&["del", in_ns[1]]).unwrap();
    testkit::put(&c.endpoints(), "/registry/configmaps/ns-003/added", b"{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"added\",\"namespace\":\"ns-003\"}}")
        .unwrap();
    let second = d.path().join("second.db");
    c.save_snapshot(&second).unwrap();
    let (f1, f2) = (first.to_str().unwrap(), second.to_str().unwrap());

    let repo = Repo::local();
    repo.ok(&["backup", "--cluster", "prod", "--snapshot", f1]);
    repo.ok(&["backup", "--cluster", "prod", "--snapshot", f2]);
    let ids = repo.backup_ids(); // newest first
    let show = repo.json(&["backups", "show", "latest"]);
    assert_eq!(show["manifest"]["key_map"]["entries"].as_u64().unwrap() as usize, keys.len(), "{show}");
    // The second backup's key map is the first's with a patch: what follows reads through it.
    assert_eq!(show["manifest"]["key_map"]["patches"].as_array().map(Vec::len), Some(1), "{show}");
    let shown = repo.ok(&["backups", "show", "latest"]).stdout;
    assert!(shown.contains(&format!("key map:      {} live keys in 2 blobs, 1 of them patches", keys.len())), "{shown}");

    // ls -n: the same objects as from the file.
    let from_file = on_file(&["k8s", "ls", f2, "-n", "ns-003", "-w", "json"]);
    assert_eq!(from_file.code, 0, "{}", from_file.stderr);
    let from_repo = repo.q(&["k8s", "ls", "latest", "-n", "ns-003", "-w", "json"]);
    assert_eq!(from_repo.code, 0, "{}", from_repo.stderr);
    assert!(from_repo.stdout == from_file.stdout, "k8s ls --repo differs from k8s ls of the file");
    let ls_share = fetched_share(&from_repo.stderr);

    // get of one object: the same document, a small share of the snapshot.
    let listed: serde_json::Value = serde_json::from_str(&from_file.stdout).unwrap();
    let one = listed.as_array().unwrap().iter().find(|o| o["key"] == "/registry/configmaps/ns-003/added").unwrap();
    let (res, name) = (one["resource"].as_str().unwrap(), one["name"].as_str().unwrap());
    let from_file = on_file(&["k8s", "get", f2, res, name, "-n", "ns-003", "-o", "json"]);
    let from_repo = repo.q(&["k8s", "get", "latest", res, name, "-n", "ns-003", "-o", "json"]);
    assert_eq!(from_repo.code, 0, "{}", from_repo.stderr);
    assert_eq!(from_repo.stdout, from_file.stdout);
    let get_share = fetched_share(&from_repo.stderr);
    // An object that is not there: the same refusal.
    let r = repo.q(&["k8s", "get", "latest", "configmaps", "nosuch", "-n", "ns-003"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no configmaps \"nosuch\" in namespace ns-003"), "{}", r.stderr);

    // export -n and diff: the same files and the same report.
    let (ef, er) = (d.path().join("export-file"), d.path().join("export-repo"));
    assert_eq!(on_file(&["k8s", "export", f2, "-n", "ns-003", "-o", ef.to_str().unwrap()]).code, 0);
    let r = repo.q(&["k8s", "export", "latest", "-n", "ns-003", "-o", er.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(tree(&er), tree(&ef));
    let diff_file = on_file(&["k8s", "diff", f1, f2, "-n", "ns-003"]);
    let diff_repo = repo.q(&["k8s", "diff", &ids[1], &ids[0], "-n", "ns-003"]);
    assert_eq!((diff_repo.code, &diff_repo.stdout), (diff_file.code, &diff_file.stdout), "{}", diff_repo.stderr);
    assert!(diff_file.stdout.contains("1 added, 1 removed, 1 changed"), "{}", diff_file.stdout);

    // backups get --etcd-key: what etcdctl get prints, from the cluster that has not changed since.
    let ctl = |args: &[&str]| c.ctl().args(["--endpoints", &c.endpoints_csv(), "get"]).args(args).output().unwrap().stdout;
    let r = repo.q(&["backups", "get", "latest", "--etcd-key", "/registry/configmaps/ns-003/added"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.as_bytes(), ctl(&["/registry/configmaps/ns-003/added"]));
    let key_share = fetched_share(&r.stderr);
    let r = repo.q(&["backups", "get", "latest", "--etcd-key", "/registry/configmaps/ns-003/", "--prefix"]);
    assert_eq!(r.stdout.as_bytes(), ctl(&["/registry/configmaps/ns-003/", "--prefix"]));
    assert!(r.stdout.lines().count() >= 4, "{}", r.stdout);
    let r = repo.q(&["backups", "get", "latest", "--etcd-key", in_ns[1]]);
    assert!(r.code == 0 && r.stdout.is_empty(), "a deleted key prints nothing, as etcdctl: {}", r.stdout);
    let r = repo.q(&["backups", "get", "latest", "--etcd-key", "/x", "-o", "x.db"]);
    assert_eq!(r.code, 2, "--etcd-key with -o is refused: {}", r.stderr);

    // Retention keeps the kept backup's key map and drops the other's; check agrees.
    repo.ok(&["forget", "--cluster", "prod", "--keep-last", "1", "--prune"]);
    let r = repo.q(&["repo", "check", "--read-data"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let r = repo.q(&["k8s", "get", "latest", res, name, "-n", "ns-003", "-o", "json"]);
    assert_eq!(r.stdout, from_file.stdout, "{}", r.stderr);

    let size = std::fs::metadata(&second).unwrap().len();
    eprintln!("snapshot {size} bytes, {} keys: get fetched {get_share}%, ls -n fetched {ls_share}%, backups get --etcd-key {key_share}%", keys.len());
    assert!(get_share < 15.0, "one object fetched {get_share}% of the snapshot");
    assert!(ls_share < 60.0, "one namespace of 20 fetched {ls_share}% of the snapshot");
}
