//! `quorum k8s get|export|diff` on snapshots of a real etcd 3.5 holding values as
//! kube-apiserver writes them: the published protobuf objects of ../shared/fixtures/kube
//! (auger's pod and job, the P1 Namespace) and JSON-stored objects (kube-apiserver with
//! `--storage-media-type=application/json`, and custom resources), one Secret encrypted with
//! aescbc; also read from a backup in a repository.

use std::path::Path;

use kube_data::encryption::{os_random, parse_config};
use testkit::{kube_fixture as fixture, kube_vector as vector, Cluster, ClusterOptions, EtcdVersion};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn enc_config(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("enc.yaml");
    std::fs::write(&p, format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{{name: key1, secret: {KEY}}}]}}\n  - identity: {{}}\n")).unwrap();
    p
}

fn seal(conf: &Path, etcd_key: &str, plain: &[u8]) -> Vec<u8> {
    let c = parse_config(&std::fs::read_to_string(conf).unwrap(), "enc.yaml").unwrap();
    let gr = kube_data::resources::of_key(etcd_key.as_bytes()).unwrap();
    c.transformer_for(&gr).write(plain, etcd_key.as_bytes(), &mut os_random).unwrap()
}

fn json(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn q(args: &[&str]) -> crate::common::Run {
    let mut c = crate::common::quorum();
    c.args(args);
    crate::common::run(c)
}

struct World {
    c: Cluster,
    dir: tempfile::TempDir,
    conf: std::path::PathBuf,
}

fn world() -> World {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = enc_config(dir.path());
    let eps = c.endpoints();
    let strip = |mut v: Vec<u8>| {
        v.pop();
        v
    };
    let put = |k: &str, v: &[u8]| testkit::put(&eps, k, v).unwrap();
    put("/registry/namespaces/default", &vector("P1"));
    put("/registry/pods/default/pi-dqtsw", &strip(fixture("auger/storage/pod.bin")));
    put("/registry/jobs/default/pi", &strip(fixture("auger/storage/job.bin")));
    let ns = |n: &str| {
        json(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "uid": format!("uid-{n}"), "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        )
    };
    put("/registry/namespaces/shop", &ns("shop"));
    put("/registry/namespaces/other", &ns("other"));
    put(
        "/registry/services/specs/shop/web",
        &json(
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop", "uid": "s-1", "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "type": "NodePort", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP", "targetPort": 8080}], "selector": {"app": "web"}}, "status": {"loadBalancer": {}}}),
        ),
    );
    put(
        "/registry/deployments/shop/web",
        &json(
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "uid": "d-1", "generation": 4, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}, "status": {"observedGeneration": 4}}),
        ),
    );
    put(
        "/registry/pods/shop/web-abc",
        &json(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-abc", "namespace": "shop", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d", "uid": "rs-1", "controller": true}]}, "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "nginx:1.27"}]}}),
        ),
    );
    put(
        "/registry/pods/shop/standalone",
        &json(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "standalone", "namespace": "shop", "uid": "p-2"}, "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "busybox"}]}}),
        ),
    );
    put(
        "/registry/events/shop/web.1",
        &json(serde_json::json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": "shop"}, "reason": "Scheduled"})),
    );
    let secret = json(
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop", "uid": "sec-1"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
    );
    put("/registry/secrets/shop/db", &seal(&conf, "/registry/secrets/shop/db", &secret));
    put(
        "/registry/secrets/shop/default-token-x",
        &json(
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "default-token-x", "namespace": "shop"}, "type": "kubernetes.io/service-account-token", "data": {"token": "eA=="}}),
        ),
    );
    put(
        "/registry/configmaps/shop/settings",
        &json(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"}, "data": {"enabled": "yes", "mode": "0755"}}),
        ),
    );
    put(
        "/registry/machine.openshift.io/machines/openshift-machine-api/master-0",
        &json(
            serde_json::json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "Machine", "metadata": {"name": "master-0", "namespace": "openshift-machine-api", "annotations": {"machine.openshift.io/instance-state": "running"}, "labels": {"machine.openshift.io/cluster-api-machine-role": "master"}}, "spec": {"providerID": "aws:///us-east-1a/i-0abc", "providerSpec": {"value": {"instanceType": "m6i.xlarge"}}}}),
        ),
    );
    put("/registry/configmaps/other/x", &json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}})));
    World { c, dir, conf }
}

#[test]
fn get_export_diff_on_real_snapshots() {
    if !testkit::fixtures_available("k8s_objects::get_export_diff_on_real_snapshots") {
        return;
    }
    let w = world();
    let snap = w.dir.path().join("a.db");
    w.c.save_snapshot(&snap).unwrap();
    let s = snap.to_str().unwrap();
    let conf = w.conf.to_str().unwrap();

    // get: the published pod prints as auger's golden YAML, plus the resourceVersion the API
    // server would report (the key's mod revision).
    let r = q(&["k8s", "get", s, "pod", "pi-dqtsw", "-n", "default"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: serde_json::Value = yaml_serde::from_str(&r.stdout).unwrap();
    let mut want: serde_json::Value = serde_json::from_slice(&fixture("auger/json/pod.json")).unwrap();
    let rev = w.c.etcdctl(&["get", "/registry/pods/default/pi-dqtsw", "-w", "json"]).unwrap();
    let rev: serde_json::Value = serde_json::from_str(&rev).unwrap();
    want["metadata"]["resourceVersion"] = serde_json::Value::String(rev["kvs"][0]["mod_revision"].to_string());
    assert_eq!(got, want);
    // Several objects: a List; JSON output; kubectl short names.
    let r = q(&["k8s", "get", s, "deploy", "-n", "shop", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["spec"]["replicas"], 0);
    let r = q(&["k8s", "get", s, "po", "-o", "name"]);
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["pod/pi-dqtsw", "pod/standalone", "pod/web-abc"], "{}", r.stderr);
    // An encrypted Secret: named as unreadable without the key, decrypted with it; the key
    // never printed.
    let r = q(&["k8s", "get", s, "secret", "db", "-n", "shop"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("/registry/secrets/shop/db") && r.stderr.contains("aescbc:key1"), "{}", r.stderr);
    let r = q(&["k8s", "get", s, "secret", "db", "-n", "shop", "--encryption-config", conf]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("password: aHVudGVyMg==") && !r.stdout.contains(KEY) && !r.stderr.contains(KEY), "{}", r.stdout);
    // A wrong key: each failing value named, and a summary with the key and the count.
    let wrong = w.dir.path().join("wrong.yaml");
    std::fs::write(&wrong, std::fs::read_to_string(&w.conf).unwrap().replace(KEY, "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=")).unwrap();
    let r = q(&["k8s", "get", s, "secrets", "-n", "shop", "--encryption-config", wrong.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("/registry/secrets/shop/db") && r.stderr.contains("1 object(s) could not be read (named above): 1 under aescbc:key1"),
        "{}",
        r.stderr
    );
    // YAML 1.1 look-alikes stay strings.
    let r = q(&["k8s", "get", s, "cm", "settings", "-n", "shop"]);
    assert!(r.stdout.contains("enabled: \"yes\"") && r.stdout.contains("mode: \"0755\""), "{}", r.stdout);
    // Nothing matches: exit 1 with a hint.
    let r = q(&["k8s", "get", s, "pods", "nope", "-n", "shop"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no pods \"nope\" in namespace shop"), "{}", r.stderr);

    // export --sanitize: one YAML per object, ready for another cluster.
    let out = w.dir.path().join("export");
    let o = out.to_str().unwrap();
    let r = q(&["k8s", "export", s, "-n", "shop", "-o", o, "--sanitize"]);
    assert_eq!(r.code, 1, "the encrypted Secret cannot be read without the key: {}", r.stdout);
    assert!(!out.exists(), "a failed export leaves nothing");
    let r = q(&["k8s", "export", s, "-n", "shop", "-o", o, "--sanitize", "--encryption-config", conf]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let read = |p: &str| -> serde_json::Value { yaml_serde::from_str(&std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))).unwrap() };
    let svc = read("shop/services/web.yaml");
    assert_eq!(
        svc,
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "selector": {"app": "web"}}})
    );
    let dep = read("shop/deployments/web.yaml");
    assert_eq!(dep["spec"]["replicas"], 0);
    assert!(dep["metadata"].get("uid").is_none() && dep["metadata"].get("generation").is_none() && dep.get("status").is_none());
    assert!(read("shop/pods/standalone.yaml")["spec"].get("nodeName").is_none());
    assert_eq!(read("shop/secrets/db.yaml")["data"]["password"], "aHVudGVyMg==");
    assert_eq!(read("shop/00-namespace.yaml")["metadata"], serde_json::json!({"name": "shop"}));
    for gone in ["shop/pods/web-abc.yaml", "shop/events/web.1.yaml", "shop/secrets/default-token-x.yaml", "other"] {
        assert!(!out.join(gone).exists(), "{gone} should be left out");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.join("shop/secrets/db.yaml")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(r.stdout.contains("Wrote 6 objects"), "{}", r.stdout);
    // Never into an existing directory.
    let r = q(&["k8s", "export", s, "-n", "shop", "-o", o, "--sanitize", "--encryption-config", conf]);
    assert_eq!(r.code, 2);
    // Machines lose providerID and annotations (control-plane replacement runbook).
    let mout = w.dir.path().join("machines");
    let r = q(&["k8s", "export", s, "-n", "openshift-machine-api", "-o", mout.to_str().unwrap(), "--sanitize"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(mout.join("openshift-machine-api/machines.machine.openshift.io/master-0.yaml")).unwrap()).unwrap();
    assert!(m["spec"].get("providerID").is_none() && m["metadata"].get("annotations").is_none());
    assert_eq!(m["spec"]["providerSpec"]["value"]["instanceType"], "m6i.xlarge");

    // diff: change, add, delete; re-encrypt the secret with the same plaintext (not a change).
    let eps = w.c.endpoints();
    let put = |k: &str, v: &[u8]| testkit::put(&eps, k, v).unwrap();
    let mut dep_v: serde_json::Value = serde_json::from_slice(&json(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "uid": "d-1", "generation": 4, "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "x"}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}, "status": {"observedGeneration": 4}}))).unwrap();
    dep_v["spec"]["replicas"] = 3.into();
    dep_v["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28".into();
    put("/registry/deployments/shop/web", &json(dep_v));
    put("/registry/configmaps/shop/new", &json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": "shop"}})));
    w.c.etcdctl(&["del", "/registry/configmaps/shop/settings"]).unwrap();
    let secret = json(
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop", "uid": "sec-1"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
    );
    put("/registry/secrets/shop/db", &seal(&w.conf, "/registry/secrets/shop/db", &secret));
    let changed_secret = json(
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop", "uid": "sec-1"}, "type": "Opaque", "data": {"password": "bmV3LXBhc3N3b3Jk"}}),
    );
    let snap_b = w.dir.path().join("b.db");
    w.c.save_snapshot(&snap_b).unwrap();
    let b = snap_b.to_str().unwrap();
    let r = q(&["k8s", "diff", s, b, "-n", "shop", "--encryption-config", conf, "-w", "json"]);
    assert_eq!(r.code, 1, "differences exit 1: {}", r.stderr);
    let d: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(d["added"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap()).collect::<Vec<_>>(), ["/registry/configmaps/shop/new"]);
    assert_eq!(d["removed"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap()).collect::<Vec<_>>(), ["/registry/configmaps/shop/settings"]);
    let changed = d["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "only the deployment changed (managedFields and the secret's new ciphertext are not changes): {changed:?}");
    let paths: Vec<&str> = changed[0]["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["spec.replicas", "spec.template.spec.containers[0].image"]);
    // Table output; a changed Secret value is masked unless asked for.
    put("/registry/secrets/shop/db", &seal(&w.conf, "/registry/secrets/shop/db", &changed_secret));
    let snap_c = w.dir.path().join("c.db");
    w.c.save_snapshot(&snap_c).unwrap();
    let r = q(&["k8s", "diff", b, snap_c.to_str().unwrap(), "--encryption-config", conf]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("~ secrets/shop/db") && r.stdout.contains("data.password: \"(hidden)\" -> \"(hidden)\"") && !r.stdout.contains("bmV3LXBhc3N3b3Jk"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("0 added, 0 removed, 1 changed"), "{}", r.stdout);
    let r = q(&["k8s", "diff", b, snap_c.to_str().unwrap(), "--encryption-config", conf, "--show-secrets"]);
    assert!(r.stdout.contains("bmV3LXBhc3N3b3Jk"), "{}", r.stdout);
    // Without the key the secret still shows as changed, with a note.
    let r = q(&["k8s", "diff", b, snap_c.to_str().unwrap()]);
    assert!(r.stdout.contains("~ secrets/shop/db") && r.stdout.contains("could not be read"), "{}", r.stdout);
    // Same snapshot: no differences, exit 0.
    let r = q(&["k8s", "diff", s, s]);
    assert_eq!(r.code, 0, "{}", r.stdout);

    // From a backup in a repository instead of a file.
    let repo = crate::common::Repo::local();
    repo.ok(&["backup", "--cluster", "prod", "--snapshot", s]);
    let r = repo.q(&["k8s", "get", "latest", "deploy", "web", "-n", "shop", "--cluster", "prod", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(got["spec"]["replicas"], 0);
}

#[test]
fn damaged_values_are_reported_per_object() {
    if !testkit::fixtures_available("k8s_objects::damaged_values_are_reported_per_object") {
        return;
    }
    let w = world();
    let eps = w.c.endpoints();
    // A protobuf value cut short, among good ones.
    let mut pod = fixture("auger/storage/pod.bin");
    pod.truncate(pod.len() / 2);
    testkit::put(&eps, "/registry/pods/default/broken", &pod).unwrap();
    let snap = w.dir.path().join("d.db");
    w.c.save_snapshot(&snap).unwrap();
    let r = q(&["k8s", "get", snap.to_str().unwrap(), "pods", "-n", "default", "-o", "name"]);
    assert_eq!(r.code, 1, "an unreadable object makes the exit 1");
    assert_eq!(r.stdout.trim(), "pod/pi-dqtsw", "the good pod is still printed");
    assert!(r.stderr.contains("/registry/pods/default/broken"), "{}", r.stderr);
}

/// Reading goes on where the data is intact: a damaged freelist or meta page (with a good twin)
/// is a warning; a damaged key-bucket page is named, the objects on other pages are still
/// listed, and the exit is 3.
#[test]
fn tolerant_reading() {
    if !testkit::fixtures_available("k8s_objects::tolerant_reading") {
        return;
    }
    let w = world();
    // Enough keys for the key bucket to span many leaf pages.
    let eps = w.c.endpoints();
    for i in 0..150 {
        let v = json(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("fill-{i}"), "namespace": "fill"}, "data": {"x": "y".repeat(2000)}}),
        );
        testkit::put(&eps, &format!("/registry/configmaps/fill/fill-{i}"), &v).unwrap();
    }
    let snap = w.dir.path().join("t.db");
    w.c.save_snapshot(&snap).unwrap();
    // A restored member db has a synced freelist page (etcd's own snapshots often have none).
    let data = w.dir.path().join("m");
    let r = q(&["snapshot", "restore", snap.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let db = std::fs::read(data.join("member/snap/db")).unwrap();
    let ps = u32::from_le_bytes(db[24..28].try_into().unwrap()) as usize;
    let freelist = u64::from_le_bytes(db[48..56].try_into().unwrap()) as usize;
    let hw = u64::from_le_bytes(db[56..64].try_into().unwrap());
    assert!((freelist as u64) < hw, "the restored db has a freelist page");
    let ls = |bytes: &[u8], name: &str| -> (crate::common::Run, usize) {
        let f = w.dir.path().join(name);
        std::fs::write(&f, bytes).unwrap();
        let r = q(&["k8s", "ls", f.to_str().unwrap(), "-w", "json"]);
        let n = serde_json::from_str::<serde_json::Value>(&r.stdout).map(|v| v.as_array().unwrap().len()).unwrap_or(0);
        (r, n)
    };
    let (clean, all) = ls(&db, "clean.db");
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert!(clean.stderr.is_empty(), "{}", clean.stderr);
    let page_flags = |i: usize| u16::from_le_bytes(db[i * ps + 8..i * ps + 10].try_into().unwrap());

    let mut bad_type = db.clone();
    bad_type[freelist * ps + 8..freelist * ps + 10].copy_from_slice(&0x77u16.to_le_bytes());
    let (r, n) = ls(&bad_type, "fl-type.db");
    assert_eq!((r.code, n), (0, all), "{}", r.stderr);
    assert!(r.stderr.contains("freelist unusable") && r.stderr.contains("reading goes on"), "{}", r.stderr);

    let mut beyond = db.clone();
    beyond[freelist * ps + 10..freelist * ps + 12].copy_from_slice(&1u16.to_le_bytes());
    beyond[freelist * ps + 16..freelist * ps + 24].copy_from_slice(&(hw + 1000).to_le_bytes());
    let (r, n) = ls(&beyond, "fl-beyond.db");
    assert_eq!((r.code, n), (0, all), "{}", r.stderr);
    assert!(r.stderr.contains("outside 2.."), "{}", r.stderr);

    let mut meta0 = db.clone();
    meta0[40] ^= 0xff; // root bucket sequence of meta 0: checksum no longer matches
    let (r, n) = ls(&meta0, "meta0.db");
    assert_eq!((r.code, n), (0, all), "{}", r.stderr);
    assert!(r.stderr.contains("meta page 0 (offset 0x0) is damaged"), "{}", r.stderr);

    // A leaf page of the key bucket (its elements' keys are 17-byte revision keys), from the
    // middle of the file.
    let key_leaves: Vec<usize> =
        (2..db.len() / ps).filter(|&i| page_flags(i) == 0x02 && u32::from_le_bytes(db[i * ps + 24..i * ps + 28].try_into().unwrap()) == 17).collect();
    assert!(key_leaves.len() > 3, "{} key-bucket leaves", key_leaves.len());
    let leaf = key_leaves[key_leaves.len() / 2];
    let mut damaged = db.clone();
    damaged[leaf * ps + 8..leaf * ps + 10].copy_from_slice(&0x77u16.to_le_bytes());
    let (r, n) = ls(&damaged, "leaf.db");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(n > 0 && n < all, "the objects of intact pages are listed ({n} of {all})");
    assert!(r.stderr.contains(&format!("page {leaf} (offset {:#x})", leaf * ps + 8)), "{}", r.stderr);
}
