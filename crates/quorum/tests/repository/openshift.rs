//! OpenShift's backup layout (issue 16): a directory laid out as `cluster-backup.sh` writes it
//! (a real etcd 3.5 snapshot saved by `etcdctl snapshot save` with Secrets encrypted under an
//! aescbc key, and the static resources tarball made by GNU tar with the script's own command,
//! `tar -cpzf ... -C /etc/kubernetes static-pod-resources/<pod>-<N> ...`, from a laid-out host
//! tree whose kube-apiserver resources hold that key's EncryptionConfiguration) is imported,
//! exported back and compared; its Secrets are read with only the key found in the bundle.
//! `backup --openshift-host --root` on the laid-out host tree picks the directories the script
//! picks and exports to the same layout.
use std::path::{Path, PathBuf};
use std::process::Command;

use kube_data::encryption::{os_random, parse_config};
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion};

use crate::common::{sha256_file, Repo};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const STAMP: &str = "2026-12-04_031500";

/// The EncryptionConfiguration as OpenShift's operator writes it (JSON).
fn encryption_config() -> String {
    format!(
        r#"{{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[{{"resources":["secrets"],"providers":[{{"aescbc":{{"keys":[{{"name":"1","secret":"{KEY}"}}]}}}},{{"identity":{{}}}}]}}]}}"#
    )
}

fn secret(name: &str, password: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")}, "type": "Opaque", "data": {"password": crate::common::b64(password.as_bytes())}}))
        .unwrap()
}

/// A control-plane host's `/etc/kubernetes/static-pod-resources` under `root`: two
/// kube-apiserver revisions (6, then 7 modified later) and one of each other static pod.
fn host_tree(root: &Path) -> PathBuf {
    let res = root.join("etc/kubernetes/static-pod-resources");
    let file = |rel: &str, body: &str, mode: u32| {
        let p = res.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let pod_files = |pod: &str, rev: u32| {
        file(
            &format!("{pod}-{rev}/{pod}.yaml"),
            &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  annotations: {{revision: \"{rev}\"}}\n"),
            0o644,
        );
        file(&format!("{pod}-{rev}/configmaps/config/config.yaml"), "apiVersion: v1\n", 0o644);
    };
    for (pod, rev) in [("kube-apiserver-pod", 6), ("kube-controller-manager-pod", 3), ("kube-scheduler-pod", 10), ("etcd-pod", 2)] {
        pod_files(pod, rev);
    }
    file("kube-apiserver-pod-6/secrets/encryption-config/encryption-config", "{}", 0o600);
    // Written later, so the directories `ls -trd` lists last: kube-apiserver-pod-7, and
    // kube-scheduler-pod-9 although 10 is the higher number.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pod_files("kube-scheduler-pod", 9);
    file("kube-apiserver-pod-7/kube-apiserver-pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n", 0o644);
    file("kube-apiserver-pod-7/secrets/encryption-config/encryption-config", &encryption_config(), 0o600);
    file("kube-apiserver-pod-7/secrets/localhost-recovery-client-token/token", "not-a-real-token", 0o600);
    std::os::unix::fs::symlink("kube-apiserver-pod.yaml", res.join("kube-apiserver-pod-7/pod.yaml")).unwrap();
    res
}

/// `tar -cpzf TARBALL -C ROOT/etc/kubernetes DIRS...`, as cluster-backup.sh runs it.
fn gnu_tar(tarball: &Path, root: &Path, dirs: &[&str]) {
    let st = Command::new("tar").arg("-cpzf").arg(tarball).arg("-C").arg(root.join("etc/kubernetes")).args(dirs).status().unwrap();
    assert!(st.success());
}

fn listing(tarball: &Path) -> String {
    let out = Command::new("tar").args(["tvzf"]).arg(tarball).env("TZ", "UTC").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn member(tarball: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("tar").arg("xzOf").arg(tarball).arg(path).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn cluster_backup_layout_round_trips_and_keys_come_from_the_bundle() {
    if testkit::setup_tool("openshift::cluster_backup_layout_round_trips", "tar").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let conf = parse_config(&encryption_config(), "encryption-config").unwrap();
    let seal =
        |k: &str, plain: &[u8]| conf.transformer_for(&kube_data::resources::of_key(k.as_bytes()).unwrap()).write(plain, k.as_bytes(), &mut os_random).unwrap();

    // The source: Secrets encrypted as kube-apiserver writes them, a plain ConfigMap.
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let eps = c.endpoints();
    testkit::put(&eps, "/registry/secrets/shop/db", &seal("/registry/secrets/shop/db", &secret("db", "hunter2"))).unwrap();
    testkit::put(&eps, "/registry/secrets/shop/api", &seal("/registry/secrets/shop/api", &secret("api", "s3cr3t"))).unwrap();
    testkit::put(
        &eps,
        "/registry/configmaps/shop/settings",
        &serde_json::to_vec(
            &serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"}, "data": {"a": "b"}}),
        )
        .unwrap(),
    )
    .unwrap();
    testkit::put(
        &eps,
        "/registry/machine.openshift.io/machines/openshift-machine-api/ocp-master-1",
        &serde_json::to_vec(&serde_json::json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine", "metadata": {"name": "ocp-master-1", "namespace": "openshift-machine-api", "uid": "m-1", "annotations": {"machine.openshift.io/instance-state": "running"}, "labels": {"machine.openshift.io/cluster-api-machine-role": "master"}}, "spec": {"providerID": "aws:///us-east-1a/i-0abc", "providerSpec": {"value": {"instanceType": "m6i.xlarge"}}}, "status": {"phase": "Running"}}))
            .unwrap(),
    )
    .unwrap();
    let src_rev = c.etcdctl(&["endpoint", "status", "-w", "json"]).unwrap();
    let src_rev: serde_json::Value = serde_json::from_str(&src_rev).unwrap();
    let src_rev = src_rev[0]["Status"]["header"]["revision"].as_i64().unwrap();
    let src_hash = testkit::hash_kv(&eps[0], src_rev).unwrap().0;

    // The directory cluster-backup.sh writes.
    let root = work.path().join("host");
    host_tree(&root);
    let bdir = work.path().join("backup");
    std::fs::create_dir(&bdir).unwrap();
    let snap = bdir.join(format!("snapshot_{STAMP}.db"));
    c.save_snapshot(&snap).unwrap();
    let tarball = bdir.join(format!("static_kuberesources_{STAMP}.tar.gz"));
    // The directories cluster-backup.sh picks (by modification time).
    let latest = [
        "static-pod-resources/kube-apiserver-pod-7",
        "static-pod-resources/kube-controller-manager-pod-3",
        "static-pod-resources/kube-scheduler-pod-9",
        "static-pod-resources/etcd-pod-2",
    ];
    gnu_tar(&tarball, &root, &latest);

    let repo = Repo::local();
    let bundle = repo.bundle_flags();
    let with_bundle = |args: &[&str]| -> Vec<String> { args.iter().map(|s| s.to_string()).chain(bundle.iter().cloned()).collect() };

    // Host-level backup on the laid-out tree: the directories the script picks, the snapshot
    // from the member.
    let r = repo.ok(&strs(&with_bundle(&["backup", "--cluster", "host", "--openshift-host", "--root", root.to_str().unwrap(), "--endpoints", &eps[0]])));
    assert!(r.stdout.contains("etcd-pod-2, kube-apiserver-pod-7, kube-controller-manager-pod-3, kube-scheduler-pod-9"), "{}", r.stdout);
    let host_out = work.path().join("host-export");
    repo.ok(&strs(&with_bundle(&["backups", "get", "latest", "--cluster", "host", "--openshift-layout", "-o", host_out.to_str().unwrap()])));
    let exported = |suffix: &str| std::fs::read_dir(&host_out).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().ends_with(suffix)).unwrap();
    let sorted = |t: &Path| {
        let mut v: Vec<String> = listing(t).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&exported(".tar.gz")), sorted(&tarball), "the host backup holds what GNU tar takes of the picked directories");
    assert!(exported(".db").file_name().unwrap().to_str().unwrap().starts_with("snapshot_"));
    // The runbook's recovery host is the one whose member answers (m0 here), not the first listed.
    let mut plan = crate::common::quorum();
    plan.args(["recover", "plan", "--openshift", "--hosts", "lost-a,m0,lost-b", "--backup", "/home/core/backup", "--endpoints", &eps[0], "-w", "json"]);
    let r = crate::common::run(plan);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let book: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(book["before"][0].as_str().unwrap().starts_with("Recovery host: m0: its etcd member m0 answered"), "{}", book["before"]);
    assert!(book["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["on"] == "recovery host m0" && s["commands"][0].as_str().unwrap().contains("cluster-restore.sh /home/core/backup")));
    assert!(book["steps"].as_array().unwrap().iter().any(|s| s["on"] == "host lost-a"));
    drop(c);

    // Without the bundle key: refused, nothing stored.
    let r = repo.q(&["backup", "--cluster", "ocp", "--openshift-backup", bdir.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("bundle"), "{}", r.stderr);
    // A damaged tarball or snapshot: refused naming the file (exit 3), nothing stored.
    for (name, damage) in [("tarball", "flip"), ("tarball", "cut"), ("snapshot", "cut"), ("snapshot", "flip")] {
        let bad = work.path().join(format!("bad-{name}-{damage}"));
        std::fs::create_dir(&bad).unwrap();
        std::fs::copy(&snap, bad.join(snap.file_name().unwrap())).unwrap();
        std::fs::copy(&tarball, bad.join(tarball.file_name().unwrap())).unwrap();
        let target = if name == "tarball" { bad.join(tarball.file_name().unwrap()) } else { bad.join(snap.file_name().unwrap()) };
        let mut bytes = std::fs::read(&target).unwrap();
        if damage == "cut" {
            bytes.truncate(bytes.len() * 2 / 3);
        } else {
            let i = bytes.len() / 2;
            bytes[i] ^= 0x20;
        }
        std::fs::write(&target, &bytes).unwrap();
        let r = repo.q(&strs(&with_bundle(&["backup", "--cluster", "ocp", "--openshift-backup", bad.to_str().unwrap()])));
        assert_ne!(r.code, 0, "{name} {damage}: {}", r.stdout);
        assert!(r.stderr.contains(target.file_name().unwrap().to_str().unwrap()), "{name} {damage}: {}", r.stderr);
    }
    let listed = repo.q(&["backups", "list", "--cluster", "ocp", "-w", "json"]);
    assert!(!listed.stdout.contains("\"id\""), "nothing stored from refused imports: {} {}", listed.stdout, listed.stderr);

    // Import; a second import of the same directory stores nothing.
    let r = repo.ok(&strs(&with_bundle(&["backup", "--cluster", "ocp", "--openshift-backup", bdir.to_str().unwrap()])));
    assert!(r.stdout.contains("kube-apiserver-pod-7") && r.stdout.contains("etcd-pod-2"), "{}", r.stdout);
    let r = repo.ok(&strs(&with_bundle(&["backup", "--cluster", "ocp", "--openshift-backup", bdir.to_str().unwrap()])));
    assert!(r.stdout.contains("already in the repository"), "{}", r.stdout);
    let ids = repo.json(&["backups", "list", "--cluster", "ocp"]);
    assert_eq!(ids["backups"].as_array().unwrap().len(), 1);
    let shown = repo.json(&["backups", "show", "latest", "--cluster", "ocp"]);
    assert_eq!(shown["manifest"]["time"], "2026-12-04T03:15:00Z", "the backup's time is the stamp's");
    assert_eq!(shown["manifest"]["openshift"]["static_pods"]["kube-apiserver-pod"], 7);
    assert_eq!(shown["manifest"]["openshift"]["encryption_config"], "static-pod-resources/kube-apiserver-pod-7/secrets/encryption-config/encryption-config");

    // Export: the same snapshot bytes, the same tar listing and member contents.
    let out = work.path().join("exported");
    let r = repo.q(&["backups", "get", "latest", "--cluster", "ocp", "--openshift-layout", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 2, "the bundle key is needed: {}", r.stderr);
    assert!(!out.exists(), "nothing written without the bundle key");
    repo.ok(&strs(&with_bundle(&["backups", "get", "latest", "--cluster", "ocp", "--openshift-layout", "-o", out.to_str().unwrap()])));
    let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [format!("snapshot_{STAMP}.db"), format!("static_kuberesources_{STAMP}.tar.gz")]);
    let out_snap = out.join(format!("snapshot_{STAMP}.db"));
    let out_tar = out.join(format!("static_kuberesources_{STAMP}.tar.gz"));
    assert_eq!(sha256_file(&out_snap), sha256_file(&snap), "byte-identical snapshot");
    let (a, b) = (listing(&tarball), listing(&out_tar));
    assert_eq!(a, b, "tar tvzf listings differ");
    assert!(a.contains("-rw------- ") && a.contains("secrets/encryption-config/encryption-config") && a.contains("pod.yaml -> kube-apiserver-pod.yaml"), "{a}");
    for line in a.lines().filter(|l| l.starts_with('-')) {
        let path = line.split_whitespace().last().unwrap();
        assert_eq!(member(&tarball, path), member(&out_tar, path), "{path}");
    }
    // A second export into the same directory is refused: cluster-restore.sh would choose.
    let r = repo.q(&strs(&with_bundle(&["backups", "get", "latest", "--cluster", "ocp", "--openshift-layout", "-o", out.to_str().unwrap()])));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cluster-restore.sh would choose"), "{}", r.stderr);

    // The exported snapshot restores natively into real etcd with the source's hashkv.
    let (plans, initial) = plan_members(work.path(), 1).unwrap();
    let mut restore = crate::common::quorum();
    restore
        .args(["snapshot", "restore"])
        .arg(&out_snap)
        .args([
            "--name",
            "m0",
            "--initial-cluster",
            &initial,
            "--initial-advertise-peer-urls",
            &plans[0].peer_url,
            "--initial-cluster-token",
            "t",
            "--data-dir",
        ])
        .arg(&plans[0].data_dir);
    let r = crate::common::run(restore);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let restored = Cluster::start_planned(&ClusterOptions::new(EtcdVersion::V3_5, 1), work.path(), &plans, &initial, "t").unwrap();
    assert_eq!(testkit::hash_kv(&restored.endpoints()[0], src_rev).unwrap().0, src_hash, "hashkv of the restored export");
    drop(restored);

    // k8s get from the repository: decrypted with the key found in the bundle only.
    let r = repo.q(&strs(&with_bundle(&["k8s", "get", "latest", "--cluster", "ocp", "secret", "db", "-n", "shop", "-o", "json"])));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(got["data"]["password"], crate::common::b64(b"hunter2"));
    assert!(r.stderr.contains("kube-apiserver-pod-7/secrets/encryption-config/encryption-config"), "stderr names the file used: {}", r.stderr);
    assert!(!r.stderr.contains(KEY), "the key is never printed");
    // Without the bundle key: a clear error naming the secret needed.
    let r = repo.q(&["k8s", "get", "latest", "--cluster", "ocp", "secret", "db", "-n", "shop"]);
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("encryption-config") && r.stderr.contains("bundle key") && r.stderr.contains("--bundle-password-file"), "{}", r.stderr);
    // encryption-status of the stored backup, with the bundle's key only.
    let r = repo.q(&strs(&with_bundle(&["k8s", "encryption-status", "latest", "--cluster", "ocp", "-w", "json"])));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(st["resources"][0]["at_write_key"], 2, "{st}");
    // ls without it warns and lists what it can.
    let r = repo.q(&["k8s", "ls", "latest", "--cluster", "ocp", "-n", "shop"]);
    assert!(r.stdout.contains("settings") && r.stderr.contains("Warning"), "{} {}", r.stdout, r.stderr);

    // k8s get on the directory itself: the key comes from the tarball beside the snapshot.
    let mut c = crate::common::quorum();
    c.args(["k8s", "get", bdir.to_str().unwrap(), "secret", "api", "-n", "shop", "-o", "json"]);
    let r = crate::common::run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(got["data"]["password"], crate::common::b64(b"s3cr3t"));
    assert!(r.stderr.contains(&format!("static_kuberesources_{STAMP}.tar.gz")), "{}", r.stderr);
    // encryption-status and rekey take the directory's configuration too.
    let k8s = |args: &[&str]| {
        let mut c = crate::common::quorum();
        c.args(["k8s"]).args(args);
        crate::common::run(c)
    };
    let r = k8s(&["encryption-status", bdir.to_str().unwrap(), "-w", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(st["resources"][0]["at_write_key"], 2, "{st}");
    let r = k8s(&["encryption-status", snap.to_str().unwrap()]);
    assert_eq!(r.code, 2, "a snapshot file needs --config: {}", r.stderr);
    let to = work.path().join("to.yaml");
    std::fs::write(
        &to,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n",
    )
    .unwrap();
    let plain = work.path().join("plain.db");
    let r = k8s(&["rekey", bdir.to_str().unwrap(), "--to-config", to.to_str().unwrap(), "-o", plain.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = k8s(&["get", plain.to_str().unwrap(), "secret", "db", "-n", "shop", "-o", "json"]);
    assert_eq!(r.code, 0, "the re-keyed snapshot reads without a key: {}", r.stderr);

    // The runbook for this cluster: every Quorum command in it runs as printed, with the
    // repository's passphrase files for REPO_PASS and BUNDLE_PASS, in a scratch directory.
    let mut c = crate::common::quorum();
    c.args(["recover", "plan", "--openshift", "--hosts", "m0,m1,m2", "--repo", &repo.url, "--cluster", "ocp", "--backup", "latest", "-w", "json"]);
    let r = crate::common::run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let book: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let scratch = work.path().join("runbook");
    std::fs::create_dir(&scratch).unwrap();
    let cmds = quorum_commands(&book);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    for cmd in &cmds {
        let cmd = cmd.replace("/home/core/backup", scratch.join("backup").to_str().unwrap());
        let r = run_printed(&cmd, &repo, &[], &scratch);
        assert_eq!(r.code, 0, "{cmd}: {}", r.stderr);
    }
    assert!(scratch.join("backup").join(format!("snapshot_{STAMP}.db")).is_file());
    let machines = crate::common::walk(&scratch.join("machines"));
    assert_eq!(machines.len(), 1, "{machines:?}");
    let m = std::fs::read_to_string(&machines[0]).unwrap();
    assert!(m.contains("ocp-master-1") && m.contains("m6i.xlarge") && !m.contains("providerID") && !m.contains("instance-state"), "{m}");
}

/// The `quorum ...` commands of a runbook printed with -w json, comments dropped.
fn quorum_commands(book: &serde_json::Value) -> Vec<String> {
    book["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["commands"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()))
        .filter(|c| c.starts_with("quorum "))
        .map(|c| c.split("   #").next().unwrap().trim().to_string())
        .collect()
}

/// Run a printed command (no quoting in Quorum's runbook commands) in `cwd`, with the
/// repository's passphrase files and its store flags.
fn run_printed(cmd: &str, repo: &Repo, store_flags: &[String], cwd: &Path) -> crate::common::Run {
    let pass = repo.dir().join("repo.pass");
    let bpass = repo.dir().join("bundle.pass");
    let words: Vec<String> =
        cmd.split_whitespace().skip(1).map(|w| w.replace("REPO_PASS", pass.to_str().unwrap()).replace("BUNDLE_PASS", bpass.to_str().unwrap())).collect();
    let mut c = crate::common::quorum();
    c.args(&words).args(store_flags).current_dir(cwd);
    for (k, v) in &repo.envs {
        c.env(k, v);
    }
    crate::common::run(c)
}

#[test]
fn hosted_cluster_runbook_commands_run_against_s3() {
    let s3 = testkit::servers::S3Server::start().unwrap();
    s3.create_bucket("hosted").unwrap();
    let store = vec!["--endpoint".to_string(), s3.endpoint(), "--region".into(), testkit::servers::S3Server::REGION.into()];
    let envs = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), testkit::servers::S3Server::ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), testkit::servers::S3Server::SECRET_KEY.to_string()),
    ];
    let repo = Repo::init("s3://hosted/etcd".into(), store.clone(), envs, tempfile::tempdir().unwrap());
    let mut c = crate::common::quorum();
    c.args(["recover", "plan", "--hosted-cluster", "clusters/hc1", "--repo", &repo.url, "-w", "json"]);
    let r = crate::common::run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let book: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let text = r.stdout.clone();
    assert!(text.contains(r#"hostedclusters/hc1 -p '{\"spec\":{\"pausedUntil\":\"true\"}}' --type=merge"#), "{text}");
    assert!(text.contains("restoreSnapshotURL") && text.contains("hc1-etcd-encryption-key"), "{text}");

    // What the steps before the Quorum commands leave in the working directory: the snapshot
    // copied out of the etcd pod, the key Secret and the HostedCluster.
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::put(&c.endpoints(), "/registry/secrets/clusters/x", b"sealed").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    c.save_snapshot(&scratch.path().join("snapshot.db")).unwrap();
    std::fs::write(
        scratch.path().join("hc1-etcd-encryption-key.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: hc1-etcd-encryption-key\ndata:\n  key: {KEY}\n"),
    )
    .unwrap();
    std::fs::write(scratch.path().join("hc1-hostedcluster.yaml"), "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\n").unwrap();
    let cmds = quorum_commands(&book);
    assert_eq!(cmds.len(), 4, "{cmds:?}");
    let mut url = String::new();
    for cmd in &cmds {
        let r = run_printed(cmd, &repo, &store, scratch.path());
        assert_eq!(r.code, 0, "{cmd}: {}", r.stderr);
        if cmd.contains("backups url") && !cmd.contains("--remove") {
            url = r.stdout.trim().to_string();
            // The URL etcd would download: the exact snapshot.
            let out = Command::new("curl").args(["-sf", "-o"]).arg(scratch.path().join("fetched.db")).arg(&url).status().unwrap();
            assert!(out.success());
            assert_eq!(sha256_file(&scratch.path().join("fetched.db")), sha256_file(&scratch.path().join("snapshot.db")));
        }
    }
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let restored = crate::common::walk(&scratch.path().join("restore"));
    assert!(restored.iter().any(|p| p.ends_with("hc1-etcd-encryption-key.yaml")), "{restored:?}");
}
