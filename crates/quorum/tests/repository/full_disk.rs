//! Full disks (issue 19): every command that writes files, run where the filesystem fills up
//! midway (an 8 MiB tmpfs, 25 MB of data): a non-zero exit, an error naming the path (and the
//! space needed where the size is known first), nothing left that could pass for a result, and
//! the file already there untouched.

use std::path::Path;

use crate::common::{quorum, run, Repo, Run};
use testkit::{Cluster, ClusterOptions, EtcdVersion, Mount};

fn assert_full(r: &Run, what: &str, fs: &Mount) {
    assert_ne!(r.code, 0, "{what} succeeded on a full filesystem: {}", r.stdout);
    assert!(r.stderr.contains("No space left on device") || r.stderr.contains("not enough space"), "{what}: {}", r.stderr);
    assert!(r.stderr.contains(&fs.path().display().to_string()), "{what}: the error names the path: {}", r.stderr);
    assert_eq!(fs.entries(), ["existing"], "{what} left something on the full filesystem");
    assert_eq!(std::fs::read(fs.path().join("existing")).unwrap(), b"data that was here before", "{what} touched existing data");
    eprintln!("{what}: {}", r.stderr.trim());
}

#[test]
fn writers_on_a_full_filesystem_fail_cleanly() {
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.big_requests = true;
    let c = Cluster::start(opts).unwrap();
    testkit::bulk(&c.endpoints(), 16 << 20, 2048, 8192, 4).unwrap();
    // Kubernetes-shaped objects too, for the export and the re-key (about 10 MB of them).
    let kube = testkit::KubeKeyspace { objects: 2500, namespaces: 1, min_value: 2048, max_value: 6144, ..Default::default() };
    testkit::load(&c.endpoints(), &kube).unwrap();
    let repo = Repo::local();
    let mut cmd = repo.cmd(&["backup", "--cluster", "prod", "--endpoints", &c.endpoints_csv()]);
    cmd.env_remove("ETCDCTL_ENDPOINTS");
    let r = run(cmd);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let Some(fs) = Mount::tmpfs("full_disk::writers_on_a_full_filesystem_fail_cleanly", Path::new(env!("CARGO_TARGET_TMPDIR")), 8) else { return };
    std::fs::write(fs.path().join("existing"), b"data that was here before").unwrap();
    let p = |name: &str| fs.path().join(name).display().to_string();

    let r = repo.q(&["backups", "get", "latest", "-o", &p("snap.db")]);
    assert_full(&r, "backups get", &fs);
    let r = repo.q(&["restore", "latest", "--data-dir", &p("member")]);
    assert_full(&r, "restore --repo", &fs);
    let mut cmd = quorum();
    cmd.args(["snapshot", "save", &p("live.db"), "--endpoints", &c.endpoints_csv()]);
    let r = run(cmd);
    assert_full(&r, "snapshot save", &fs);

    // From a local snapshot: restore and the Kubernetes export.
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    c.save_snapshot(&snap).unwrap();
    let mut cmd = quorum();
    cmd.args(["snapshot", "restore"]).arg(&snap).args(["--data-dir", &p("restored")]);
    let r = run(cmd);
    assert_full(&r, "snapshot restore", &fs);
    let mut cmd = quorum();
    cmd.args(["k8s", "export"]).arg(&snap).args(["-n", "ns-000", "-o", &p("export")]);
    let r = run(cmd);
    assert_full(&r, "k8s export", &fs);
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let (from, to) = (d.path().join("from.yaml"), d.path().join("to.yaml"));
    let config = |provider: &str| {
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - configmaps\n  providers:\n{provider}")
    };
    std::fs::write(&from, config("  - identity: {}\n")).unwrap();
    std::fs::write(&to, config(&format!("  - aescbc:\n      keys:\n      - name: k1\n        secret: {key}\n  - identity: {{}}\n"))).unwrap();
    let mut cmd = quorum();
    cmd.args(["k8s", "rekey"]).arg(&snap).arg("--from-config").arg(&from).arg("--to-config").arg(&to).args(["-o", &p("rekeyed.db")]);
    let r = run(cmd);
    assert_full(&r, "k8s rekey", &fs);
}

/// A point-in-time restore and a migration's new data dirs on a full filesystem: the same
/// clean failure, nothing left that etcd could start on.
#[test]
fn pitr_restore_and_migration_data_dirs_on_a_full_filesystem_fail_cleanly() {
    let mut opts = ClusterOptions::new(EtcdVersion::V3_5, 1);
    opts.big_requests = true;
    let c = Cluster::start(opts).unwrap();
    testkit::bulk(&c.endpoints(), 16 << 20, 2048, 8192, 4).unwrap();
    let repo = Repo::local();
    let (base, base_rev) = crate::pitr::backup(&repo, &c);
    let cap = crate::pitr::start_capture(&repo, c.endpoints(), &base, base_rev + 1, std::time::Duration::from_millis(300));
    let mut last = 0;
    for k in 0..200 {
        last = testkit::put(&c.endpoints(), &format!("/after-backup/{k}"), &[b'x'; 4096]).unwrap();
    }
    crate::pitr::wait_chain(&repo, &crate::common::rt(), base_rev, last);
    cap.stop.send(true).unwrap();
    cap.thread.join().unwrap().unwrap();

    let Some(fs) = Mount::tmpfs("full_disk::pitr_restore_and_migration", Path::new(env!("CARGO_TARGET_TMPDIR")), 8) else { return };
    std::fs::write(fs.path().join("existing"), b"data that was here before").unwrap();
    let p = |name: &str| fs.path().join(name).display().to_string();
    let r = repo.q(&["restore", "--cluster", "prod", "--at-revision", &last.to_string(), "--data-dir", &p("member")]);
    assert_full(&r, "restore --at-revision", &fs);

    // A migration restores its new members from a fresh backup of the source: their data
    // dirs do not fit.
    let plans = testkit::plan_members(&fs.path().join("plan"), 1).unwrap().0;
    let initial = format!("n0={}", plans[0].peer_url);
    let r = repo.q(&[
        "migrate",
        "--cluster",
        "prod",
        "--from-endpoints",
        &c.endpoints_csv(),
        "--initial-cluster",
        &initial,
        "--initial-cluster-token",
        "moved",
        "--data-dir",
        &p("{name}.etcd"),
        "--to-endpoints",
        &plans[0].client_url,
        "--start-timeout",
        "30s",
    ]);
    assert_full(&r, "migrate (new data dirs)", &fs);
}
