//! `quorum k8s ls` on a snapshot of a real etcd holding values written by real Kubernetes
//! components (the published fixtures in ../shared/fixtures/kube), plain and encrypted.

use testkit::{Cluster, ClusterOptions, EtcdVersion};

use testkit::{kube_fixture as fixture, kube_vector as vector};

#[test]
fn ls_plain_encrypted_deleted_and_filtered() {
    if !testkit::fixtures_available("k8s_ls::ls_plain_encrypted_deleted_and_filtered") {
        return;
    }
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let eps = c.endpoints();
    let strip = |mut v: Vec<u8>| {
        v.pop();
        v
    };
    testkit::put(&eps, "/registry/namespaces/default", &vector("P1")).unwrap();
    testkit::put(&eps, "/registry/pods/default/pi-dqtsw", &strip(fixture("auger/storage/pod.bin"))).unwrap();
    testkit::put(&eps, "/registry/jobs/default/pi", &strip(fixture("auger/storage/job.bin"))).unwrap();
    testkit::put(&eps, "/registry/secrets/default/cbc", &vector("G1")).unwrap();
    testkit::put(&eps, "/registry/secrets/default/box", &vector("G3")).unwrap();
    testkit::put(&eps, "/registry/secrets/default/kms", &vector("P4")).unwrap();
    let cr = br#"{"apiVersion":"stable.example.com/v1","kind":"CronTab","metadata":{"name":"c1","namespace":"team-a","uid":"u-1"},"spec":{}}"#;
    testkit::put(&eps, "/registry/stable.example.com/crontabs/team-a/c1", cr).unwrap();
    testkit::put(&eps, "/registry/configmaps/default/gone", b"{\"kind\":\"ConfigMap\"}").unwrap();
    c.etcdctl(&["del", "/registry/configmaps/default/gone"]).unwrap();
    let last = testkit::put(&eps, "/registry/namespaces/default", &vector("P1")).unwrap(); // overwritten: latest wins
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    c.save_snapshot(&snap).unwrap();

    let ls = |extra: &[&str]| -> serde_json::Value {
        let mut cmd = crate::common::quorum();
        cmd.args(["k8s", "ls"]).arg(&snap).args(["-w", "json"]).args(extra);
        let r = crate::common::run(cmd);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let all = ls(&[]);
    let objs = all.as_array().unwrap();
    let names: Vec<&str> = objs.iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(!names.contains(&"/registry/configmaps/default/gone"), "deleted keys are not listed");
    let by = |k: &str| objs.iter().find(|o| o["key"] == k).unwrap().clone();
    let ns = by("/registry/namespaces/default");
    assert_eq!((ns["resource"].as_str(), ns["decoded"]["kind"].as_str(), ns["mod_revision"].as_i64()), (Some("namespaces"), Some("Namespace"), Some(last)));
    assert_eq!(ns["version"], 2);
    let pod = by("/registry/pods/default/pi-dqtsw");
    assert_eq!((pod["decoded"]["kind"].as_str(), pod["decoded"]["name"].as_str(), pod["namespace"].as_str()), (Some("Pod"), Some("pi-dqtsw"), Some("default")));
    assert_eq!(by("/registry/jobs/default/pi")["decoded"]["api_version"], "batch/v1");
    let crt = by("/registry/stable.example.com/crontabs/team-a/c1");
    assert_eq!((crt["resource"].as_str(), crt["decoded"]["encoding"].as_str()), (Some("crontabs.stable.example.com"), Some("json")));
    assert_eq!(by("/registry/secrets/default/cbc")["encryption"], "aescbc:key1");
    assert!(by("/registry/secrets/default/cbc")["decoded"].is_null(), "no config: not decrypted");

    // With the configuration: decrypted (the fixture's plaintext is the P1 Namespace), KMS named.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let conf = d.path().join("enc.yaml");
    std::fs::write(&conf, format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{{name: key1, secret: {key}}}]}}\n  - secretbox: {{keys: [{{name: key1, secret: {key}}}]}}\n  - identity: {{}}\n")).unwrap();
    let sec = ls(&["-n", "default", "--resource", "secrets", "--encryption-config", conf.to_str().unwrap()]);
    let sec = sec.as_array().unwrap();
    assert_eq!(sec.len(), 3);
    let get = |k: &str| sec.iter().find(|o| o["name"] == k).unwrap().clone();
    assert_eq!(get("cbc")["decoded"]["kind"], "Namespace");
    assert_eq!(get("box")["decoded"]["kind"], "Namespace");
    assert!(get("kms")["error"].as_str().unwrap().contains("KMS plugin"), "{:?}", get("kms"));
    // Table output for people; the secret key never appears.
    let mut cmd = crate::common::quorum();
    cmd.args(["k8s", "ls"]).arg(&snap).args(["--encryption-config", conf.to_str().unwrap()]);
    let r = crate::common::run(cmd);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("7 objects, 1 unreadable"), "{}", r.stdout);
    assert!(!r.stdout.contains(key) && !r.stderr.contains(key));
    // A bad configuration names the file.
    std::fs::write(&conf, "resources: [ {").unwrap();
    let mut cmd = crate::common::quorum();
    cmd.args(["k8s", "ls"]).arg(&snap).args(["--encryption-config", conf.to_str().unwrap()]);
    let r = crate::common::run(cmd);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("enc.yaml: not an EncryptionConfiguration"), "{}", r.stderr);
}

/// `quorum k8s ls SNAPSHOT | head`: the reader goes away after a few lines; the listing ends
/// quietly with status 0, as any Unix filter does, for the table and for JSON.
#[test]
fn ls_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::load(&c.endpoints(), &testkit::KubeKeyspace { objects: 3000, ..Default::default() }).unwrap();
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    c.save_snapshot(&snap).unwrap();
    for format in ["table", "json"] {
        let mut cmd = crate::common::quorum();
        cmd.args(["k8s", "ls"]).arg(&snap).args(["-w", format]);
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut head = [0u8; 200];
        child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "-w {format}: {stderr}");
        assert!(stderr.is_empty(), "-w {format}: nothing to say about a closed pipe: {stderr}");
    }
}
