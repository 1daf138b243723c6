//! `rekey` and `encryption_status` on a snapshot built with the bbolt writer (no etcd needed):
//! every revision rewritten, tombstones and other buckets copied, the sha256 trailer written,
//! the output never overwritten, nothing left behind on failure.

use std::path::{Path, PathBuf};

use bolt::{Writer, WriterOptions};
use etcd_data::schema::{KeyValue, Revision};
use kube_data::encryption::{os_random, parse_config, EncryptionConfig};
use kube_data::encryption_status::{status, Condition};
use kube_data::rekey::{rekey, RekeyError, RekeyOptions};
use kube_data::resources::GroupResource;
use prost::Message;

const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "HxwdHhobGBkWFxQVEhMQEQ4PDA0KCwgJBgcEBQIDAAE=";

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tempdir(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("kube-data-rekey-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}

fn cfg(provider: &str, name: &str, secret: &str) -> EncryptionConfig {
    parse_config(
        &format!("resources:\n- resources: [secrets]\n  providers:\n  - {provider}: {{keys: [{{name: {name}, secret: {secret}}}]}}\n  - identity: {{}}\n"),
        "t.yaml",
    )
    .unwrap()
}

/// A snapshot with the sha256 trailer: revisions 2..=7 as listed, a lease and a meta bucket.
fn snapshot(path: &Path, a: &EncryptionConfig) -> Vec<(Vec<u8>, Vec<u8>)> {
    let t = a.transformer_for(&GroupResource::parse("secrets"));
    let s1 = b"/registry/secrets/ns/s1";
    let entries: Vec<(i64, bool, &[u8], Vec<u8>)> = vec![
        (2, false, s1, br#"{"v":"plain-1"}"#.to_vec()),
        (3, false, s1, t.write(br#"{"v":"secret-2"}"#, s1, &mut os_random).unwrap()),
        (4, false, b"/registry/pods/ns/p", b"pod".to_vec()),
        (5, false, b"/registry/secrets/ns/s2", t.write(br#"{"v":"gone"}"#, b"/registry/secrets/ns/s2", &mut os_random).unwrap()),
        (6, true, b"/registry/secrets/ns/s2", Vec::new()),
        (7, false, s1, t.write(br#"{"v":"secret-3"}"#, s1, &mut os_random).unwrap()),
    ];
    let mut w = Writer::new(std::io::Cursor::new(Vec::new()), WriterOptions::default()).unwrap();
    let mut key_bucket = Vec::new();
    w.begin_bucket(b"key").unwrap();
    for (rev, tomb, k, v) in &entries {
        let mut rk = Revision { main: *rev, sub: 0 }.to_bytes().to_vec();
        if *tomb {
            rk.push(b't');
        }
        let kv = KeyValue { key: k.to_vec(), create_revision: 2, mod_revision: *rev, version: 1, value: v.clone(), lease: if *rev == 4 { 7 } else { 0 } };
        let bytes = kv.encode_to_vec();
        w.put(&rk, &bytes).unwrap();
        key_bucket.push((rk, bytes));
    }
    w.end_bucket().unwrap();
    w.begin_bucket(b"lease").unwrap();
    w.put(&7i64.to_be_bytes(), b"lease-7").unwrap();
    w.end_bucket().unwrap();
    w.begin_bucket(b"meta").unwrap();
    w.put(b"consistent_index", &9u64.to_be_bytes()).unwrap();
    w.end_bucket().unwrap();
    let (out, _) = w.finish().unwrap();
    let mut bytes = out.into_inner();
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    std::fs::write(path, bytes).unwrap();
    key_bucket
}

fn entries(path: &Path, bucket: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = bolt::Db::open(path).unwrap();
    let b = db.bucket(&[bucket]).unwrap().unwrap();
    let mut c = b.cursor().unwrap();
    let mut out = Vec::new();
    while let Some(e) = c.next().unwrap() {
        out.push((e.key.to_vec(), e.value.to_vec()));
    }
    out
}

#[test]
fn rekey_rewrites_every_revision_and_copies_the_rest() {
    let d = tempdir("ok");
    let (a, b) = (cfg("aescbc", "k1", K1), cfg("secretbox", "k2", K2));
    let src = d.0.join("s.db");
    let before = snapshot(&src, &a);
    let st = status(&src, &a).unwrap();
    assert_eq!(st.status, Condition::EncryptionCompleted);
    assert_eq!((st.resources[0].total, st.resources[0].at_write_key), (1, 1), "s2 is deleted; s1's latest is encrypted");
    let out = d.0.join("n.db");
    let opts = RekeyOptions { snapshot: src.clone(), output: out.clone(), from: &a, to: &b, resources: vec![], skip_undecryptable: false };
    let rep = rekey(&opts).unwrap();
    assert_eq!((rep.rewritten, rep.key_entries, rep.revision), (4, 6, 7));
    assert!(etcd_data::trailer::check(&out, |_| {}).unwrap() == etcd_data::Trailer::Match { sha256: rep.sha256.clone() });
    let after = entries(&out, b"key");
    assert_eq!(after.len(), before.len());
    let (ta, tb) = (a.transformer_for(&GroupResource::parse("secrets")), b.transformer_for(&GroupResource::parse("secrets")));
    for ((rk0, v0), (rk1, v1)) in before.iter().zip(&after) {
        assert_eq!(rk0, rk1);
        let (x, y) = (KeyValue::decode(&v0[..]).unwrap(), KeyValue::decode(&v1[..]).unwrap());
        assert_eq!((&x.key, x.create_revision, x.mod_revision, x.version, x.lease), (&y.key, y.create_revision, y.mod_revision, y.version, y.lease));
        if x.key.starts_with(b"/registry/secrets/") && !x.value.is_empty() {
            assert_eq!(tb.read(&y.value, &y.key).unwrap(), ta.read(&x.value, &x.key).unwrap());
            assert!(y.value.starts_with(b"k8s:enc:secretbox:v1:k2:"));
        } else {
            assert_eq!(v0, v1, "copied byte-identical");
        }
    }
    assert_eq!(entries(&out, b"lease"), entries(&src, b"lease"));
    assert_eq!(entries(&out, b"meta"), entries(&src, b"meta"));
    assert_eq!(status(&out, &b).unwrap().status, Condition::EncryptionCompleted);
    // Never overwrites.
    assert!(matches!(rekey(&opts), Err(RekeyError::Exists(_))));
}

#[test]
fn undecryptable_values_fail_or_are_skipped() {
    let d = tempdir("bad");
    let a = cfg("aescbc", "k1", K1);
    let src = d.0.join("s.db");
    snapshot(&src, &a);
    let wrong = cfg("aescbc", "k1", K2);
    let b = cfg("aesgcm", "k2", K2);
    let out = d.0.join("n.db");
    let mut opts = RekeyOptions { snapshot: src, output: out.clone(), from: &wrong, to: &b, resources: vec![], skip_undecryptable: false };
    match rekey(&opts) {
        Err(RekeyError::Undecryptable { key, revision, .. }) => assert_eq!((key.as_str(), revision), ("/registry/secrets/ns/s1", 3)),
        other => panic!("{other:?}"),
    }
    assert!(!out.exists() && testkit::partial_leftovers(&d.0).is_empty());
    opts.skip_undecryptable = true;
    let rep = rekey(&opts).unwrap();
    assert_eq!((rep.rewritten, rep.skipped_undecryptable), (1, 3));
    // Selecting a resource neither configuration covers is refused.
    let other = d.0.join("o.db");
    let sel = RekeyOptions {
        snapshot: opts.snapshot.clone(),
        output: other.clone(),
        from: &a,
        to: &b,
        resources: vec![GroupResource::parse("configmaps")],
        skip_undecryptable: false,
    };
    assert!(matches!(rekey(&sel), Err(RekeyError::Usage(_))));
    assert!(!other.exists());
}
