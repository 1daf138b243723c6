//! `quorum k8s encryption-status` and `quorum k8s rekey` on snapshots of a real etcd 3.5 holding
//! Secret- and ConfigMap-like keys encrypted by our encryption code (aescbc, aesgcm, secretbox)
//! and plain, with several revisions per key, a deleted key and a leased key. The re-keyed
//! snapshot is restored with `quorum snapshot restore` and served by real etcd; every key at
//! every revision is read back and compared with the source. Our encryption is cross-checked
//! against the published AES-GCM vector and the generated aescbc/secretbox vectors.

use std::path::Path;

use kube_data::encryption::{cbc_encrypt, gcm_decrypt, gcm_encrypt, os_random, parse_config, secretbox_encrypt, EncryptionConfig};
use kube_data::resources::GroupResource;
use testkit::{kube_vector as vector, plan_members, Cluster, ClusterOptions, EtcdVersion, Kv};

use crate::common::b64;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn key(seed: u8, len: usize) -> String {
    b64(&(0..len as u8).map(|i| i.wrapping_mul(7).wrapping_add(seed)).collect::<Vec<u8>>())
}

/// Configuration A: secrets written with aescbc key1, also readable with aesgcm g1, secretbox b1
/// and identity; configmaps written with secretbox b1, identity readable.
fn config_a(gcm_secret: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
- resources:\n  - secrets\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: {}\n  - aesgcm:\n      keys:\n      - name: g1\n        secret: {gcm_secret}\n  - secretbox:\n      keys:\n      - name: b1\n        secret: {}\n  - identity: {{}}\n\
- resources:\n  - configmaps\n  providers:\n  - secretbox:\n      keys:\n      - name: b1\n        secret: {}\n  - identity: {{}}\n",
        key(1, 32),
        key(3, 32),
        key(3, 32)
    )
}

/// Configuration B (JSON, as OpenShift writes it): secrets written with aesgcm new1,
/// configmaps with aescbc new2 (AES-128).
fn config_b() -> String {
    format!(
        r#"{{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[
{{"resources":["secrets"],"providers":[{{"aesgcm":{{"keys":[{{"name":"new1","secret":"{}"}}]}}}},{{"identity":{{}}}}]}},
{{"resources":["configmaps"],"providers":[{{"aescbc":{{"keys":[{{"name":"new2","secret":"{}"}}]}}}},{{"identity":{{}}}}]}}]}}"#,
        key(11, 32),
        key(13, 16)
    )
}

fn gcm_a() -> String {
    key(2, 32)
}

fn parse(text: &str) -> EncryptionConfig {
    parse_config(text, "test.yaml").unwrap()
}

fn gr_of(k: &[u8]) -> Option<GroupResource> {
    kube_data::resources::of_key(k)
}

/// Encrypt `plain` for `etcd_key` with provider `which` of configuration A's secrets entry
/// (0 aescbc, 1 aesgcm, 2 secretbox), or configmaps' secretbox.
fn seal(a: &EncryptionConfig, etcd_key: &str, which: usize, plain: &[u8]) -> Vec<u8> {
    let gr = gr_of(etcd_key.as_bytes()).unwrap();
    let t = a.transformer_for(&gr);
    let one = kube_data::encryption::Transformer { rule: t.rule.clone(), providers: vec![t.providers[which]] };
    let v = one.write(plain, etcd_key.as_bytes(), &mut os_random).unwrap();
    assert_eq!(t.read(&v, etcd_key.as_bytes()).unwrap(), plain);
    v
}

fn object(kind: &str, key: &str, generation: u32) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"{kind}","metadata":{{"name":"{key}","generation":{generation}}},"data":{{"v":"{}"}}}}"#,
        b64(format!("{key}#{generation}").as_bytes())
    )
    .into_bytes()
}

struct Source {
    cluster: Cluster,
    /// Every key at every revision 1..=latest.
    history: Vec<(i64, Vec<Kv>)>,
    latest: i64,
    gcm_revisions: Vec<i64>,
}

fn load(a: &EncryptionConfig) -> Source {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    let eps = c.endpoints();
    let put = |k: &str, v: &[u8]| testkit::put(&eps, k, v).unwrap();
    let cbc = "/registry/secrets/default/cbc";
    put(cbc, &object("Secret", cbc, 1)); // plain first, then encrypted twice
    put(cbc, &seal(a, cbc, 0, &object("Secret", cbc, 2)));
    let gcm = "/registry/secrets/default/gcm";
    let mut gcm_revisions = vec![put(gcm, &seal(a, gcm, 1, &object("Secret", gcm, 1)))];
    let boxed = "/registry/secrets/kube-system/box";
    put(boxed, &seal(a, boxed, 2, &vector("P1")));
    put("/registry/secrets/default/plain", &object("Secret", "plain", 1));
    put(cbc, &seal(a, cbc, 0, &object("Secret", cbc, 3)));
    gcm_revisions.push(put(gcm, &seal(a, gcm, 1, &object("Secret", gcm, 2))));
    put(boxed, &seal(a, boxed, 2, &object("Secret", boxed, 2)));
    put("/registry/secrets/default/plain", &object("Secret", "plain", 2));
    let gone = "/registry/secrets/default/gone";
    put(gone, &seal(a, gone, 0, &object("Secret", gone, 1)));
    c.etcdctl(&["del", gone]).unwrap();
    let cm1 = "/registry/configmaps/default/cm1";
    put(cm1, &object("ConfigMap", cm1, 1));
    put(cm1, &seal(a, cm1, 0, &object("ConfigMap", cm1, 2)));
    put("/registry/configmaps/default/cm2", &object("ConfigMap", "cm2", 1));
    // Other resources and keys: plain, copied as they are.
    put("/registry/pods/default/p1", &object("Pod", "p1", 1));
    put("/registry/pods/default/p1", &object("Pod", "p1", 2));
    put("/registry/deployments/default/d1", &object("Deployment", "d1", 1));
    put("/registry/namespaces/default", &vector("P1"));
    put("compact_rev_key", b"\x00\x00\x00\x00\x00\x00\x00\x01");
    // An event with a lease, as kube-apiserver writes events.
    let lease = c.etcdctl(&["lease", "grant", "3600"]).unwrap();
    let id = lease.split_whitespace().nth(1).unwrap().to_string();
    c.etcdctl(&["put", "/registry/events/default/e1", r#"{"kind":"Event"}"#, &format!("--lease={id}")]).unwrap();
    let latest = put(cm1, &seal(a, cm1, 0, &object("ConfigMap", cm1, 3)));
    let history = (1..=latest).map(|r| testkit::dump(&eps, r).unwrap()).collect();
    Source { cluster: c, history, latest, gcm_revisions }
}

fn q(args: &[&str]) -> crate::common::Run {
    let mut c = crate::common::quorum();
    c.args(args);
    crate::common::run(c)
}

fn status_json(snap: &Path, conf: &Path) -> (i32, serde_json::Value) {
    let r = q(&["k8s", "encryption-status", snap.to_str().unwrap(), "--config", conf.to_str().unwrap(), "-w", "json"]);
    assert!(r.code == 0 || r.code == 1, "code {}: {}", r.code, r.stderr);
    (r.code, serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout)))
}

fn row<'a>(v: &'a serde_json::Value, resource: &str) -> &'a serde_json::Value {
    v["resources"].as_array().unwrap().iter().find(|r| r["resource"] == resource).unwrap()
}

#[test]
fn status_and_rekey_through_real_etcd() {
    if !testkit::fixtures_available("k8s_encryption::status_and_rekey_through_real_etcd") {
        return;
    }
    let a_text = config_a(&gcm_a());
    let a = parse(&a_text);
    let b_text = config_b();
    let b = parse(&b_text);
    let src = load(&a);
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    src.cluster.save_snapshot(&snap).unwrap();
    let (conf_a, conf_b) = (d.path().join("a.yaml"), d.path().join("b.json"));
    std::fs::write(&conf_a, &a_text).unwrap();
    std::fs::write(&conf_b, &b_text).unwrap();

    // encryption-status with A: exact counts, in progress (exit 1).
    let (code, st) = status_json(&snap, &conf_a);
    assert_eq!(code, 1);
    assert_eq!(st["status"], "EncryptionInProgress");
    assert_eq!(st["revision"], src.latest);
    let s = row(&st, "secrets");
    assert_eq!(s["write"], "aescbc:key1");
    assert_eq!((s["total"].as_u64(), s["at_write_key"].as_u64(), s["plain"].as_u64()), (Some(4), Some(1), Some(1)), "{s}");
    assert_eq!(s["encrypted"], serde_json::json!({"aescbc:key1": 1, "aesgcm:g1": 1, "secretbox:b1": 1}));
    assert_eq!(s["not_in_config"], serde_json::json!({}));
    assert_eq!(s["status"], "EncryptionInProgress");
    let cm = row(&st, "configmaps");
    assert_eq!(
        (cm["write"].as_str(), cm["total"].as_u64(), cm["at_write_key"].as_u64(), cm["plain"].as_u64()),
        (Some("secretbox:b1"), Some(2), Some(1), Some(1))
    );
    // Table output for people.
    let r = q(&["k8s", "encryption-status", snap.to_str().unwrap(), "--config", conf_a.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("EncryptionInProgress at revision") && r.stdout.contains("aesgcm:g1=1"), "{}", r.stdout);
    // A key the configuration does not have is counted as such.
    let no_gcm = a_text.replace("  - aesgcm:\n      keys:\n      - name: g1\n", "  - aesgcm:\n      keys:\n      - name: g0\n");
    let conf_no_gcm = d.path().join("a-no-g1.yaml");
    std::fs::write(&conf_no_gcm, &no_gcm).unwrap();
    let (_, st2) = status_json(&snap, &conf_no_gcm);
    assert_eq!(row(&st2, "secrets")["not_in_config"], serde_json::json!({"aesgcm:g1": 1}));
    // A wildcard catches every other resource (exact entries keep theirs).
    let wild = format!("{a_text}- resources: ['*.*']\n  providers:\n  - identity: {{}}\n");
    let conf_wild = d.path().join("wild.yaml");
    std::fs::write(&conf_wild, &wild).unwrap();
    let (_, st3) = status_json(&snap, &conf_wild);
    let w = row(&st3, "*.*");
    assert_eq!((w["write"].as_str(), w["total"].as_u64(), w["status"].as_str()), (Some("identity"), Some(4), Some("EncryptionCompleted")), "{w}");

    // rekey A → B.
    let new = d.path().join("rekeyed.db");
    let r = q(&[
        "k8s",
        "rekey",
        snap.to_str().unwrap(),
        "--from-config",
        conf_a.to_str().unwrap(),
        "--to-config",
        conf_b.to_str().unwrap(),
        "-o",
        new.to_str().unwrap(),
        "-w",
        "json",
    ]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    // secrets: cbc 3 + gcm 2 + box 2 + plain 2 + gone 1 (its put; the tombstone is copied) = 10.
    assert_eq!(rep["resources"]["secrets"]["rewritten"], 10, "{rep}");
    assert_eq!(rep["resources"]["secrets"]["written_as"], "aesgcm:new1");
    assert_eq!(rep["resources"]["configmaps"]["rewritten"], 4);
    assert_eq!(rep["revision"], src.latest);
    assert!(testkit::partial_leftovers(new.parent().unwrap()).is_empty());
    // Never overwrites.
    let before = std::fs::read(&new).unwrap();
    let r = q(&[
        "k8s",
        "rekey",
        snap.to_str().unwrap(),
        "--from-config",
        conf_a.to_str().unwrap(),
        "--to-config",
        conf_b.to_str().unwrap(),
        "-o",
        new.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("never overwrites"), "{}", r.stderr);
    assert!(std::fs::read(&new).unwrap() == before);

    // The output is a valid snapshot: our verify, etcdutl's status, and B says completed.
    let r = q(&["snapshot", "verify", new.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let mut c = EtcdVersion::V3_5.snapshot_tool();
    c.args(["snapshot", "status", "-w", "json"]).arg(&new);
    let r = crate::common::run(c);
    assert_eq!(r.code, 0, "etcdutl: {}", r.stderr);
    let etcdutl: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(etcdutl["revision"], src.latest);
    let (code, st) = status_json(&new, &conf_b);
    assert_eq!((code, st["status"].as_str()), (0, Some("EncryptionCompleted")), "{st}");
    assert_eq!(row(&st, "secrets")["encrypted"], serde_json::json!({"aesgcm:new1": 4}));
    assert_eq!(row(&st, "configmaps")["encrypted"], serde_json::json!({"aescbc:new2": 2}));

    // Restore with `quorum snapshot restore` (the trailer is checked: no --skip-hash-check) and
    // serve it with real etcd.
    let restored_dir = tempfile::tempdir().unwrap();
    let (plans, initial) = plan_members(restored_dir.path(), 1).unwrap();
    let mut cmd = crate::common::quorum();
    cmd.args(["snapshot", "restore"]).arg(&new);
    cmd.args(["--all-members", "--initial-cluster", &initial, "--initial-cluster-token", "rekeyed", "-w", "json", "--data-dir"]);
    cmd.arg(restored_dir.path().join("{name}.etcd"));
    let r = crate::common::run(cmd);
    assert_eq!(r.code, 0, "restore: {}", r.stderr);
    let restored = Cluster::start_planned(&ClusterOptions::new(EtcdVersion::V3_5, 1), restored_dir.path(), &plans, &initial, "rekeyed").unwrap();
    let mut rewritten = 0;
    for (rev, before) in &src.history {
        let (at, after) = testkit::dump(&restored.endpoints(), *rev).unwrap();
        assert_eq!(at, *rev);
        assert_eq!(before.len(), after.len(), "revision {rev}: key count");
        for (x, y) in before.iter().zip(&after) {
            let what = format!("{} at revision {rev}", String::from_utf8_lossy(&x.key));
            assert_eq!(
                (&x.key, x.create_revision, x.mod_revision, x.version, x.lease),
                (&y.key, y.create_revision, y.mod_revision, y.version, y.lease),
                "{what}"
            );
            let gr = gr_of(&x.key);
            let configured = gr.as_ref().is_some_and(|g| g.resource == "secrets" || g.resource == "configmaps");
            if !configured {
                assert!(x.value == y.value, "{what}: copied byte-identical");
                continue;
            }
            let gr = gr.unwrap();
            let (ta, tb) = (a.transformer_for(&gr), b.transformer_for(&gr));
            let original = ta.read(&x.value, &x.key).unwrap();
            assert_eq!(tb.read(&y.value, &y.key).unwrap(), original, "{what}: plaintext kept");
            assert!(ta.read(&y.value, &y.key).is_err(), "{what}: no longer readable with A");
            let prefix = if gr.resource == "secrets" { &b"k8s:enc:aesgcm:v1:new1:"[..] } else { &b"k8s:enc:aescbc:v1:new2:"[..] };
            assert!(y.value.starts_with(prefix), "{what}");
            rewritten += 1;
        }
    }
    assert!(rewritten > 20, "{rewritten}");
    let lease = restored.etcdctl(&["get", "/registry/events/default/e1", "-w", "json"]).unwrap();
    assert!(lease.contains("\"lease\""), "lease kept: {lease}");
    drop(restored);

    // Wrong key: A with another secret under the name g1. The error names the key and the
    // first revision that fails; no output (nor partial) is left.
    let wrong_text = config_a(&key(99, 32));
    let conf_wrong = d.path().join("wrong.yaml");
    std::fs::write(&conf_wrong, &wrong_text).unwrap();
    let out2 = d.path().join("never.db");
    let r = q(&[
        "k8s",
        "rekey",
        snap.to_str().unwrap(),
        "--from-config",
        conf_wrong.to_str().unwrap(),
        "--to-config",
        conf_b.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let want = format!("/registry/secrets/default/gcm at revision {}", src.gcm_revisions[0]);
    assert!(r.stderr.contains(&want) && r.stderr.contains("aesgcm key \"g1\""), "{}", r.stderr);
    assert!(!out2.exists() && testkit::partial_leftovers(out2.parent().unwrap()).is_empty());
    // --skip-undecryptable copies them as they are, counted.
    let r = q(&[
        "k8s",
        "rekey",
        snap.to_str().unwrap(),
        "--from-config",
        conf_wrong.to_str().unwrap(),
        "--to-config",
        conf_b.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
        "--skip-undecryptable",
        "-w",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rep["skipped_undecryptable"], 2);
    assert_eq!(rep["skipped"][0]["revision"], src.gcm_revisions[0]);
    // --resource limits the rewrite; a KMS write provider is refused up front.
    let out3 = d.path().join("only-cm.db");
    let r = q(&[
        "k8s",
        "rekey",
        snap.to_str().unwrap(),
        "--from-config",
        conf_a.to_str().unwrap(),
        "--to-config",
        conf_b.to_str().unwrap(),
        "-o",
        out3.to_str().unwrap(),
        "--resource",
        "configmaps",
        "-w",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(rep["resources"].get("secrets").is_none() && rep["resources"]["configmaps"]["rewritten"] == 4, "{rep}");
    let kms = d.path().join("kms.yaml");
    std::fs::write(&kms, "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {apiVersion: v2, name: vault, endpoint: 'unix:///kms.sock'}\n").unwrap();
    let r = q(&[
        "k8s",
        "rekey",
        snap.to_str().unwrap(),
        "--from-config",
        conf_a.to_str().unwrap(),
        "--to-config",
        kms.to_str().unwrap(),
        "-o",
        d.path().join("kms.db").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("KMS plugin"), "{}", r.stderr);
    assert!(!d.path().join("kms.db").exists());
}

#[test]
fn unreadable_configs_and_damaged_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("s.db");
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::put(&c.endpoints(), "/registry/secrets/default/s", b"{}").unwrap();
    c.save_snapshot(&snap).unwrap();
    drop(c);
    let conf = d.path().join("enc-bad.yaml");
    // Line 7 holds a secret that is not base64.
    std::fs::write(
        &conf,
        "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - {name: k, secret: '%%%'}\n",
    )
    .unwrap();
    let r = q(&["k8s", "encryption-status", snap.to_str().unwrap(), "--config", conf.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("enc-bad.yaml") && r.stderr.contains("line 7") && r.stderr.contains("not standard base64"), "{}", r.stderr);
    // A resource masked by an earlier wildcard: named with its line.
    std::fs::write(&conf, "kind: EncryptionConfiguration\nresources:\n- resources: ['*.*']\n  providers:\n  - identity: {}\n- resources:\n  - secrets\n  providers:\n  - identity: {}\n").unwrap();
    let r = q(&[
        "k8s",
        "rekey",
        snap.to_str().unwrap(),
        "--from-config",
        conf.to_str().unwrap(),
        "--to-config",
        conf.to_str().unwrap(),
        "-o",
        d.path().join("x.db").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("enc-bad.yaml: line 7") && r.stderr.contains("masked"), "{}", r.stderr);
    let r = q(&["k8s", "encryption-status", snap.to_str().unwrap(), "--config", d.path().join("missing.yaml").to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("missing.yaml"), "{}", r.stderr);
    // Completed: the only secret is plain and the write provider is identity.
    let ok = d.path().join("id.yaml");
    std::fs::write(&ok, "resources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n").unwrap();
    let r = q(&["k8s", "encryption-status", snap.to_str().unwrap(), "--config", ok.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("EncryptionCompleted"), "{}", r.stdout);
    // A damaged snapshot: exit 3 for both commands, no output.
    let mut bytes = std::fs::read(&snap).unwrap();
    let end = bytes.len() - 32;
    for b in &mut bytes[4096 * 2..end] {
        *b = 0xa5;
    }
    let bad = d.path().join("bad.db");
    std::fs::write(&bad, &bytes).unwrap();
    let r = q(&["k8s", "encryption-status", bad.to_str().unwrap(), "--config", ok.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{} {}", r.stdout, r.stderr);
    let out = d.path().join("from-bad.db");
    let r =
        q(&["k8s", "rekey", bad.to_str().unwrap(), "--from-config", ok.to_str().unwrap(), "--to-config", ok.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!out.exists() && testkit::partial_leftovers(out.parent().unwrap()).is_empty());
}

/// Our encryption against vectors: AES-GCM against the published upstream ciphertext
/// (kubernetes/apiserver aes_test.go `TestGCMLegacyDataCompatibility`, P3 in the research notes);
/// aescbc and secretbox against the generated G1/G3 of vectors.txt (fixed key, IV and nonce; not
/// upstream: no published aescbc or secretbox vector exists). Through the configuration's
/// writer with injected IV/nonce as well, so the prefix layout is checked too.
#[test]
fn encryption_matches_vectors() {
    if !testkit::fixtures_available("k8s_encryption::encryption_matches_vectors") {
        return;
    }
    // P3: key "snorlax_awesomes", AAD "bamboo", nonce = the first 12 bytes.
    let p3 = unhex("9f27c8fcea8a58c467d8e437dbf2d85955f9b4bd912f4ef967d788a0cb07797dac0a3f0a0845605ca85ac8562b4ae1");
    let nonce: [u8; 12] = p3[..12].try_into().unwrap();
    assert_eq!(gcm_encrypt(b"snorlax_awesomes", &nonce, b"pandas are the best", b"bamboo").unwrap(), p3);
    assert!(gcm_decrypt(b"snorlax_awesomes", &p3, b"bambooo").is_none());

    let key: Vec<u8> = (0..32).collect();
    let p1 = vector("P1");
    let prefix_len = |v: &[u8]| v.iter().enumerate().filter(|(_, b)| **b == b':').nth(4).unwrap().0 + 1;
    let g1 = vector("G1");
    let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
    assert_eq!(cbc_encrypt(&key, &iv, &p1).unwrap(), g1[prefix_len(&g1)..]);
    let g3 = vector("G3");
    let n24: [u8; 24] = core::array::from_fn(|i| i as u8);
    assert_eq!(secretbox_encrypt(&key, &n24, &p1).unwrap(), g3[prefix_len(&g3)..]);

    // Whole values through the configuration, IV/nonce 00 01 02 ...
    assert_eq!(b64(&key), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    assert_eq!(b64(b"ab"), "YWI=");
    let k = b64(&key);
    let counting = |buf: &mut [u8]| buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    for (provider, want) in [("aescbc", Some(g1)), ("secretbox", Some(g3)), ("aesgcm", None)] {
        let c = parse(&format!("resources:\n- resources: [namespaces]\n  providers:\n  - {provider}: {{keys: [{{name: key1, secret: {k}}}]}}\n"));
        let t = c.transformer_for(&GroupResource::parse("namespaces"));
        let v = t.write(&p1, b"/registry/namespaces/default", &mut { counting }).unwrap();
        if let Some(w) = want {
            assert_eq!(v, w, "{provider}");
        } else {
            // G2's ciphertext is missing from vectors.txt: round trip, and the etcd key is authenticated.
            assert!(v.starts_with(b"k8s:enc:aesgcm:v1:key1:\x00\x01\x02"));
            assert_eq!(t.read(&v, b"/registry/namespaces/default").unwrap(), p1);
            assert!(t.read(&v, b"/registry/namespaces/other").is_err());
        }
    }
}
