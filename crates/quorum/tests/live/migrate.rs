//! `quorum migrate` between real etcd 3.5 clusters through a repository: three namespaces out of
//! twenty with `--rekey` (the target holds exactly those keys, re-encrypted for its own keys only,
//! plaintexts equal), also staged and synced; kill -9 in the middle of the replay and a resume;
//! conflict policies and `--dry-run`; a whole cluster through moto's S3 into a new 3-member cluster
//! (identical keyspace and hashkv), with two clusters in one repository and a presigned URL for one
//! cluster's latest backup.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Repo;
use kube_data::encryption::{os_random, parse_config, EncryptionConfig, Transformer};
use testkit::servers::S3Server;
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion, Kv};

use crate::common::b64;

fn secret_key(seed: u8, len: usize) -> String {
    b64(&(0..len as u8).map(|i| i.wrapping_mul(13).wrapping_add(seed)).collect::<Vec<u8>>())
}

/// Source configuration A: secrets written with aescbc a1, also readable with aesgcm ga.
fn config_a() -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n  - aescbc:\n      keys:\n      - name: a1\n        secret: {}\n  - aesgcm:\n      keys:\n      - name: ga\n        secret: {}\n  - identity: {{}}\n",
        secret_key(1, 32),
        secret_key(2, 32)
    )
}

/// Target configuration B: secrets written with aesgcm b1, configmaps with aescbc b2.
fn config_b() -> String {
    config_named_b(7, 9)
}

/// B's providers and key names with the key bytes of seeds `secrets` and `configmaps`.
fn config_named_b(secrets: u8, configmaps: u8) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n  - aesgcm:\n      keys:\n      - name: b1\n        secret: {}\n  - identity: {{}}\n- resources:\n  - configmaps\n  providers:\n  - aescbc:\n      keys:\n      - name: b2\n        secret: {}\n  - identity: {{}}\n",
        secret_key(secrets, 32),
        secret_key(configmaps, 32)
    )
}

fn transformer<'a>(c: &'a EncryptionConfig, key: &[u8]) -> Transformer<'a> {
    c.transformer_for(&kube_data::resources::of_key(key).unwrap())
}

/// Encrypt with provider `which` of A's secrets entry (0 aescbc, 1 aesgcm).
fn seal_a(a: &EncryptionConfig, key: &str, which: usize, plain: &[u8]) -> Vec<u8> {
    let t = transformer(a, key.as_bytes());
    let one = Transformer { rule: t.rule.clone(), providers: vec![t.providers[which]] };
    one.write(plain, key.as_bytes(), &mut os_random).unwrap()
}

fn object(kind: &str, ns: &str, name: &str, pad: usize) -> Vec<u8> {
    format!(r#"{{"apiVersion":"v1","kind":"{kind}","metadata":{{"name":"{name}","namespace":"{ns}"}},"data":{{"v":"{}"}}}}"#, "x".repeat(pad)).into_bytes()
}

struct Put {
    key: String,
    value: Vec<u8>,
    leased: bool,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn put_all(endpoints: &[String], puts: &[Put]) {
    rt().block_on(async {
        let mut c = etcd_client::Client::connect(endpoints, None).await.unwrap();
        let lease = c.lease_grant(3600, None).await.unwrap().id();
        for p in puts {
            let o = p.leased.then(|| etcd_client::PutOptions::new().with_lease(lease));
            c.put(p.key.as_bytes(), p.value.clone(), o).await.unwrap();
        }
    })
}

/// 20 namespaces, each: the Namespace, 3 configmaps (plain), 3 secrets (aescbc, aesgcm, aescbc
/// under A), 2 pods, a deployment, an event on a lease; plus cluster-scoped keys and a
/// non-Kubernetes key. Secrets and configmaps are overwritten once, one pod deleted.
fn load_source(c: &Cluster, a: &EncryptionConfig) {
    let mut puts = Vec::new();
    for n in 0..20 {
        let ns = format!("ns-{n:02}");
        puts.push(Put { key: format!("/registry/namespaces/{ns}"), value: object("Namespace", "", &ns, 10), leased: false });
        for i in 0..3 {
            let k = format!("/registry/configmaps/{ns}/cm-{i}");
            puts.push(Put { value: object("ConfigMap", &ns, &k, 50 + i), key: k, leased: false });
            let k = format!("/registry/secrets/{ns}/s-{i}");
            puts.push(Put { value: seal_a(a, &k, i % 2, &object("Secret", &ns, &format!("s-{i}"), 30 + n)), key: k, leased: false });
        }
        for i in 0..2 {
            let k = format!("/registry/pods/{ns}/web-{i}");
            puts.push(Put { value: object("Pod", &ns, &k, 200), key: k, leased: false });
        }
        let k = format!("/registry/deployments/{ns}/web");
        puts.push(Put { value: object("Deployment", &ns, "web", 100), key: k, leased: false });
        let k = format!("/registry/events/{ns}/web.1");
        puts.push(Put { value: object("Event", &ns, "web.1", 20), key: k, leased: true });
    }
    puts.push(Put { key: "/registry/clusterroles/admin".into(), value: object("ClusterRole", "", "admin", 10), leased: false });
    puts.push(Put { key: "/registry/namespaces/default".into(), value: object("Namespace", "", "default", 10), leased: false });
    puts.push(Put { key: "/other/app/config".into(), value: b"not kubernetes".to_vec(), leased: false });
    put_all(&c.endpoints(), &puts);
    // Second generation of secrets and configmaps (latest revision is what moves).
    let mut again = Vec::new();
    for n in 0..20 {
        let ns = format!("ns-{n:02}");
        let k = format!("/registry/secrets/{ns}/s-0");
        again.push(Put { value: seal_a(a, &k, 1, &object("Secret", &ns, "s-0-v2", 40)), key: k, leased: false });
        let k = format!("/registry/configmaps/{ns}/cm-0");
        again.push(Put { value: object("ConfigMap", &ns, "cm-0-v2", 60), key: k, leased: false });
    }
    put_all(&c.endpoints(), &again);
    c.etcdctl(&["del", "/registry/pods/ns-03/web-1"]).unwrap();
}

fn dump(c: &Cluster) -> BTreeMap<Vec<u8>, Kv> {
    testkit::dump(&c.endpoints(), 0).unwrap().1.into_iter().map(|kv| (kv.key.clone(), kv)).collect()
}

fn namespace_of(key: &[u8]) -> Option<String> {
    let i = kube_data::keys::parse(key)?;
    i.namespace.or_else(|| (i.resource == "namespaces").then_some(i.name))
}

struct Env {
    source: Cluster,
    target: Cluster,
    repo: Repo,
    a: EncryptionConfig,
    b: EncryptionConfig,
    a_path: String,
    b_path: String,
    /// The target's own keys before any migration.
    before: BTreeMap<Vec<u8>, Kv>,
}

/// A key the target's controllers created in a selected namespace, of a resource the source
/// has there too, that the source never had.
const TARGET_ONLY: &str = "/registry/configmaps/ns-07/kube-root-ca.crt";

fn env(source_members: usize) -> Env {
    let repo = Repo::local();
    let a_path = repo.dir().join("a.yaml");
    let b_path = repo.dir().join("b.yaml");
    std::fs::write(&a_path, config_a()).unwrap();
    std::fs::write(&b_path, config_b()).unwrap();
    let a = parse_config(&config_a(), "a.yaml").unwrap();
    let b = parse_config(&config_b(), "b.yaml").unwrap();
    let source = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, source_members)).unwrap();
    let target = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    load_source(&source, &a);
    // The target runs its own control plane: keys that must stay as they are.
    put_all(
        &target.endpoints(),
        &[
            Put { key: "/registry/namespaces/default".into(), value: object("Namespace", "", "default-target", 5), leased: false },
            Put { key: "/registry/configmaps/kube-system/cfg".into(), value: object("ConfigMap", "kube-system", "cfg", 5), leased: false },
            Put { key: TARGET_ONLY.into(), value: object("ConfigMap", "ns-07", "kube-root-ca.crt", 5), leased: false },
        ],
    );
    let before = dump(&target);
    Env { source, target, repo, a, b, a_path: a_path.display().to_string(), b_path: b_path.display().to_string(), before }
}

const SELECTED: [&str; 3] = ["ns-03", "ns-07", "ns-12"];

impl Env {
    fn migrate_args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "migrate".into(),
            "--cluster".into(),
            "src".into(),
            "--from-endpoints".into(),
            self.source.endpoints_csv(),
            "--to-endpoints".into(),
            self.target.endpoints_csv(),
        ];
        for ns in SELECTED {
            v.extend(["-n".to_string(), ns.to_string()]);
        }
        v.extend(["--rekey".to_string(), format!("{}:{}", self.a_path, self.b_path)]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn migrate(&self, extra: &[&str]) -> crate::common::Run {
        let args = self.migrate_args(extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.repo.q(&a)
    }

    /// The source's selected live keys at its latest revision, and their plaintexts.
    fn selected_source(&self) -> BTreeMap<Vec<u8>, (Kv, Vec<u8>)> {
        dump(&self.source)
            .into_iter()
            .filter(|(k, _)| namespace_of(k).is_some_and(|n| SELECTED.contains(&n.as_str())))
            .map(|(k, kv)| {
                let plain = transformer(&self.a, &k).read(&kv.value, &k).unwrap();
                (k, (kv, plain))
            })
            .collect()
    }

    /// The target holds exactly its own keys plus the selected ones; every migrated value is
    /// the source's plaintext, secrets and configmaps encrypted with B only, other values
    /// byte-identical; each key written once.
    fn check_target(&self) -> usize {
        let src = self.selected_source();
        let tgt = dump(&self.target);
        let want: BTreeSet<&Vec<u8>> = src.keys().chain(self.before.keys()).collect();
        let got: BTreeSet<&Vec<u8>> = tgt.keys().collect();
        assert_eq!(got, want, "the target holds exactly its own keys and the selected namespaces' keys");
        for (k, kv) in &self.before {
            assert_eq!(&tgt[k], kv, "the target's own keys (also the one in ns-07) are untouched");
        }
        // B's key names with A's key bytes: everything but the key material is B's.
        let a_bytes_b_names: Vec<EncryptionConfig> =
            [(1, 1), (2, 2)].iter().map(|(s, c)| parse_config(&config_named_b(*s, *c), "a-as-b.yaml").unwrap()).collect();
        let mut encrypted = 0;
        for (k, (skv, plain)) in &src {
            let t = &tgt[k];
            assert_eq!(t.version, 1, "{} written once", String::from_utf8_lossy(k));
            assert_eq!(t.lease, 0, "leases are not carried");
            let res = kube_data::resources::of_key(k).unwrap().to_string();
            if res == "secrets" || res == "configmaps" {
                assert!(t.value.starts_with(if res == "secrets" { b"k8s:enc:aesgcm:v1:b1:" } else { b"k8s:enc:aescbc:v1:b2:" }), "{res} re-encrypted with B");
                assert_eq!(&transformer(&self.b, k).read(&t.value, k).unwrap(), plain, "decrypts with B to the source's plaintext");
                assert!(transformer(&self.a, k).read(&t.value, k).is_err(), "A's transformer cannot read it");
                for c in &a_bytes_b_names {
                    assert!(
                        transformer(c, k).read(&t.value, k).is_err(),
                        "{res}: A's key bytes under B's key name do not decrypt it: it is sealed with B's key material"
                    );
                }
                encrypted += 1;
            } else {
                assert_eq!(t.value, skv.value, "other values byte for byte");
            }
        }
        assert_eq!(encrypted, 3 * 6);
        src.len()
    }
}

fn per_ns_counts(src: &BTreeMap<Vec<u8>, (Kv, Vec<u8>)>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for k in src.keys() {
        *m.entry(namespace_of(k).unwrap()).or_default() += 1;
    }
    m
}

fn check_verification(report: &serde_json::Value, counts: &BTreeMap<String, u64>) {
    let v = report["verification"].as_array().unwrap();
    assert_eq!(v.len(), 3, "{report}");
    for c in v {
        let ns = c["group"].as_str().unwrap();
        assert_eq!(c["ok"], true, "{c}");
        assert_eq!(c["source_keys"].as_u64().unwrap(), counts[ns], "{c}");
        assert_eq!(c["target_keys"], c["source_keys"]);
        assert_eq!(c["source_hash"], c["target_hash"]);
    }
}

#[test]
fn three_namespaces_of_twenty_with_rekey() {
    let started = Instant::now();
    let e = env(3);
    let r = e.migrate(&["-w", "json"]);
    assert_eq!(r.code, 0, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("source:") && r.stderr.contains("3 member(s)") && r.stderr.contains("target:"), "a plan first: {}", r.stderr);
    assert!(r.stderr.contains("lease"), "leases are named: {}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let n = e.check_target();
    // 11 keys per namespace, ns-03 lost a pod.
    assert_eq!(n, 3 * 11 - 1);
    assert_eq!(report["written"].as_u64().unwrap(), n as u64);
    check_verification(&report, &per_ns_counts(&e.selected_source()));
    // The key only the target has in ns-07 is counted apart, not a difference.
    let only = |v: &serde_json::Value, ns: &str| v.as_array().unwrap().iter().find(|c| c["group"] == ns).unwrap()["target_only"].as_u64();
    assert_eq!(only(&report["verification"], "ns-07"), Some(1), "{report}");
    assert_eq!(only(&report["plan"], "ns-07"), Some(1), "{report}");
    assert_eq!((only(&report["verification"], "ns-03"), only(&report["verification"], "ns-12")), (Some(0), Some(0)));
    // No key, value or plaintext is printed.
    for out in [&r.stdout, &r.stderr] {
        assert!(!out.contains("/registry/secrets") && !out.contains("cm-0-v2") && !out.contains("web.1"), "{out}");
    }
    // The table form, and the record: the same command again resumes the same backup and writes nothing.
    let again = e.migrate(&[]);
    assert_eq!(again.code, 0, "{} {}", again.stdout, again.stderr);
    assert!(again.stderr.contains("resuming") && again.stderr.contains("completed at"), "{}", again.stderr);
    assert!(again.stdout.contains("0 key(s) written") && again.stdout.contains("verification: OK"), "{}", again.stdout);
    eprintln!("{}", again.stdout);
    assert!(again.stdout.contains("| NAMESPACE |") && again.stdout.contains("ns-07") && again.stdout.contains("TARGET ONLY"), "{}", again.stdout);
    let row = again.stdout.lines().find(|l| l.split('|').nth(1).is_some_and(|c| c.trim() == "ns-07")).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(&cells[2..6], &["11", "11", "0", "1"], "source, target, skipped, target only: {row}");
    // The same namespaces in another order, one twice: the same migration.
    let mut args = vec!["migrate", "--cluster", "src"];
    let (src_eps, dst_eps, rekey) = (e.source.endpoints_csv(), e.target.endpoints_csv(), format!("{}:{}", e.a_path, e.b_path));
    args.extend(["--from-endpoints", &src_eps, "--to-endpoints", &dst_eps, "--rekey", &rekey, "--verify-only", "-w", "json"]);
    for ns in ["ns-12", "ns-03", "ns-07", "ns-03"] {
        args.extend(["-n", ns]);
    }
    let reordered = e.repo.q(&args);
    assert_eq!(reordered.code, 0, "{} {}", reordered.stdout, reordered.stderr);
    let rr: serde_json::Value = serde_json::from_str(&reordered.stdout).unwrap();
    assert_eq!(rr["migration"], report["migration"], "-n order and repeats do not make another migration");
    assert_eq!(rr["resumed"], true);
    assert_eq!(e.check_target(), n);
    assert_eq!(e.repo.backup_ids().len(), 1, "the resume took no second snapshot");
    // A wrong FROM config is refused before anything is written (and names no key).
    let fresh = e.repo.q(&[
        "migrate",
        "--cluster",
        "src",
        "--from-endpoints",
        &e.source.endpoints_csv(),
        "--to-endpoints",
        &e.target.endpoints_csv(),
        "-n",
        "ns-05",
        "--rekey",
        &format!("{}:{}", e.b_path, e.a_path),
    ]);
    assert_eq!(fresh.code, 1, "{} {}", fresh.stdout, fresh.stderr);
    assert!(fresh.stderr.contains("do not decrypt") && fresh.stderr.contains("3 secrets in ns-05") && fresh.stderr.contains("Hint:"), "{}", fresh.stderr);
    assert!(!fresh.stderr.contains("/registry/"), "{}", fresh.stderr);
    assert!(!dump(&e.target).keys().any(|k| namespace_of(k).as_deref() == Some("ns-05")));
    eprintln!("three namespaces with rekey: {:.1}s", started.elapsed().as_secs_f64());
}

/// The staged form with `--rekey`: after the copy, the source's later changes inside the
/// selection (a new secret sealed with A's aesgcm key, a configmap updated, a secret deleted)
/// reach the target through `--sync` sealed with B, plaintexts equal; a change outside does
/// not; the cutover verifies plaintexts.
#[test]
fn namespaces_synced_with_rekey() {
    let e = env(1);
    let stage = e.migrate(&["--stage"]);
    assert_eq!(stage.code, 0, "{} {}", stage.stdout, stage.stderr);
    let new_secret = "/registry/secrets/ns-07/s-new";
    let updated = "/registry/configmaps/ns-12/cm-1";
    let outside = "/registry/secrets/ns-05/s-new";
    let deleted = "/registry/secrets/ns-03/s-2";
    assert!(dump(&e.target).contains_key(deleted.as_bytes()), "copied by the stage");
    put_all(
        &e.source.endpoints(),
        &[
            Put { key: new_secret.into(), value: seal_a(&e.a, new_secret, 1, &object("Secret", "ns-07", "s-new", 25)), leased: false },
            Put { key: updated.into(), value: object("ConfigMap", "ns-12", "cm-1-v3", 70), leased: false },
            Put { key: outside.into(), value: seal_a(&e.a, outside, 0, &object("Secret", "ns-05", "s-new", 10)), leased: false },
        ],
    );
    e.source.etcdctl(&["del", deleted]).unwrap();
    let sync = e.migrate(&["--sync", "-w", "json"]);
    assert_eq!(sync.code, 0, "{} {}", sync.stdout, sync.stderr);
    let rep: serde_json::Value = serde_json::from_str(&sync.stdout).unwrap();
    assert_eq!((rep["written"].as_u64(), rep["deleted"].as_u64()), (Some(2), Some(1)), "{rep}");
    for out in [&sync.stdout, &sync.stderr] {
        assert!(!out.contains("s-new") && !out.contains("cm-1-v3"), "no value is printed: {out}");
    }
    let tgt = dump(&e.target);
    let sealed = &tgt[new_secret.as_bytes()].value;
    assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:b1:"), "the new secret is sealed with B");
    assert_eq!(transformer(&e.b, new_secret.as_bytes()).read(sealed, new_secret.as_bytes()).unwrap(), object("Secret", "ns-07", "s-new", 25));
    assert!(transformer(&e.a, new_secret.as_bytes()).read(sealed, new_secret.as_bytes()).is_err(), "A cannot read it");
    let cm = &tgt[updated.as_bytes()].value;
    assert!(cm.starts_with(b"k8s:enc:aescbc:v1:b2:"), "B encrypts configmaps");
    assert_eq!(transformer(&e.b, updated.as_bytes()).read(cm, updated.as_bytes()).unwrap(), object("ConfigMap", "ns-12", "cm-1-v3", 70));
    assert!(!tgt.contains_key(deleted.as_bytes()), "deleted in the source after the copy");
    assert!(!tgt.contains_key(outside.as_bytes()), "outside the selection");
    for (k, kv) in &e.before {
        assert_eq!(&tgt[k], kv, "the target's own keys are untouched");
    }
    // Nothing to do again: the plaintexts compare equal although the ciphertexts differ.
    let again = e.migrate(&["--sync", "-w", "json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let rep: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!((rep["written"].as_u64(), rep["deleted"].as_u64()), (Some(0), Some(0)), "{rep}");
    let cut = e.migrate(&["--cutover", "--settle", "2s", "-w", "json"]);
    assert_eq!(cut.code, 0, "{} {}", cut.stdout, cut.stderr);
    let rep: serde_json::Value = serde_json::from_str(&cut.stdout).unwrap();
    let groups = rep["verification"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{rep}");
    assert!(groups.iter().all(|g| g["ok"] == true), "{rep}");
    let after = e.migrate(&["--sync"]);
    assert_eq!(after.code, 1, "{}", after.stderr);
    assert!(after.stderr.contains("was cut over"), "{}", after.stderr);
}

/// The selected namespaces' keys in the target that the migration wrote (not the target's own).
fn count_selected(e: &Env) -> usize {
    dump(&e.target).keys().filter(|k| !e.before.contains_key(*k) && namespace_of(k).is_some_and(|n| SELECTED.contains(&n.as_str()))).count()
}

#[test]
fn kill_9_mid_replay_then_resume() {
    let started = Instant::now();
    let e = env(1);
    let total = e.selected_source().len();
    let args = e.migrate_args(&["--txn-ops", "3", "--txn-pause", "150ms", "-w", "json"]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = e.repo.cmd(&a).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let n = count_selected(&e);
        if n >= 9 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break count_selected(&e);
        }
        assert!(child.try_wait().unwrap().is_none(), "the migration ended before it could be killed");
        assert!(Instant::now() < deadline, "no keys reached the target");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(at_kill < total, "killed mid-replay: {at_kill} of {total} keys written");
    assert_eq!(at_kill % 3, 0, "whole transactions only: {at_kill}");
    // Namespace objects are written last (29 other keys go first).
    let namespaces_there = dump(&e.target).keys().filter(|k| k.starts_with(b"/registry/namespaces/ns-")).count();
    assert!(at_kill >= 29 || namespaces_there == 0, "{namespaces_there} Namespace object(s) written among the first {at_kill} keys");
    // Verification alone now fails and names the namespaces.
    let v = e.migrate(&["--verify-only"]);
    assert_eq!(v.code, 3, "{} {}", v.stdout, v.stderr);
    assert!(v.stdout.contains("DIFFERS") && v.stderr.contains("verification failed"), "{} {}", v.stdout, v.stderr);

    let r = e.migrate(&["--txn-ops", "3", "-w", "json"]);
    assert_eq!(r.code, 0, "stdout {} stderr {}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["resumed"], true);
    assert_eq!(report["written"].as_u64().unwrap() as usize, total - at_kill, "only the missing keys are written");
    let identical: u64 = report["plan"].as_array().unwrap().iter().map(|p| p["identical"].as_u64().unwrap()).sum();
    assert_eq!(identical as usize, at_kill, "what the killed run wrote is recognised by plaintext");
    assert_eq!(e.check_target(), total);
    check_verification(&report, &per_ns_counts(&e.selected_source()));
    assert_eq!(e.repo.backup_ids().len(), 1, "the resume works from the same backup");
    eprintln!("kill -9 at {at_kill}/{total} keys, resumed: {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn conflict_policies_and_dry_run() {
    let e = env(1);
    let k = b"/registry/pods/ns-07/web-0".to_vec();
    let same = b"/registry/deployments/ns-07/web".to_vec();
    let src = e.selected_source();
    // A differing and an identical key in the target beforehand.
    put_all(
        &e.target.endpoints(),
        &[
            Put { key: String::from_utf8(k.clone()).unwrap(), value: b"{\"kind\":\"Pod\",\"target\":true}".to_vec(), leased: false },
            Put { key: String::from_utf8(same.clone()).unwrap(), value: src[&same].0.value.clone(), leased: false },
        ],
    );
    let before = dump(&e.target);

    let dry = e.migrate(&["--dry-run", "-w", "json"]);
    assert_eq!(dry.code, 0, "{} {}", dry.stdout, dry.stderr);
    let plan: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let row = plan["plan"].as_array().unwrap().iter().find(|p| p["group"] == "ns-07").unwrap().clone();
    assert_eq!(
        (row["create"].as_u64(), row["identical"].as_u64(), row["different"].as_u64(), row["target_only"].as_u64()),
        (Some(9), Some(1), Some(1), Some(1)),
        "{row}"
    );
    // A namespace the source does not have is named loudly.
    let typo = e.migrate(&["--dry-run", "-n", "ns-99", "-w", "json"]);
    assert_eq!(typo.code, 0, "{} {}", typo.stdout, typo.stderr);
    assert!(typo.stderr.contains("Warning: no keys for namespace ns-99 in the source") && typo.stderr.contains("typo?"), "{}", typo.stderr);
    assert!(!typo.stderr.contains("no keys for namespace ns-07"), "{}", typo.stderr);
    let table = e.migrate(&["--dry-run"]);
    assert!(table.stdout.contains("WOULD CREATE") && table.stdout.contains("FAIL (conflict)"), "{}", table.stdout);
    eprintln!("{}", table.stdout);
    assert_eq!(dump(&e.target), before, "a dry run writes nothing");
    assert!(e.repo.backup_ids().is_empty(), "nor into the repository");

    let fail = e.migrate(&[]);
    assert_eq!(fail.code, 1, "{} {}", fail.stdout, fail.stderr);
    assert!(fail.stderr.contains("Error: 1 selected key(s) already exist in the target with different content (1 in ns-07)"), "{}", fail.stderr);
    assert!(fail.stderr.contains("Hint:"), "{}", fail.stderr);
    eprintln!("{}", fail.stderr.lines().filter(|l| l.starts_with("Error:") || l.starts_with("Hint:")).collect::<Vec<_>>().join("\n"));
    assert_eq!(dump(&e.target), before, "fail writes nothing");

    let skip = e.migrate(&["--on-conflict", "skip", "-w", "json"]);
    assert_eq!(skip.code, 0, "{} {}", skip.stdout, skip.stderr);
    let rep: serde_json::Value = serde_json::from_str(&skip.stdout).unwrap();
    assert_eq!(rep["skipped"], 1);
    let c = rep["verification"].as_array().unwrap().iter().find(|c| c["group"] == "ns-07").unwrap().clone();
    assert_eq!((c["ok"].as_bool(), c["skipped"].as_u64(), c["source_keys"].as_u64()), (Some(true), Some(1), Some(10)), "{c}");
    let t = dump(&e.target);
    assert_eq!(t[&k].value, before[&k].value, "skip keeps the target's value");
    assert_eq!(t[&same].version, 1, "an identical key is not rewritten");

    // The skip run completed the migration: the target's apps own those keys now. Running it
    // again with overwrite only verifies; the differing key stays as the target has it.
    let after_done = e.migrate(&["--on-conflict", "overwrite", "-w", "json"]);
    assert_eq!(after_done.code, 3, "{} {}", after_done.stdout, after_done.stderr);
    assert!(after_done.stderr.contains("completed at") && after_done.stderr.contains("--restart"), "{}", after_done.stderr);
    let rep: serde_json::Value = serde_json::from_str(&after_done.stdout).unwrap();
    assert_eq!(
        (rep["overwritten"].as_u64(), rep["written"].as_u64(), rep["transactions"].as_u64(), rep["completed_before"].as_bool()),
        (Some(0), Some(0), Some(0), Some(true)),
        "{rep}"
    );
    assert_eq!(dump(&e.target), t, "a completed migration run again writes nothing");

    let over = e.migrate(&["--on-conflict", "overwrite", "--restart", "-w", "json"]);
    assert_eq!(over.code, 0, "{} {}", over.stdout, over.stderr);
    let rep: serde_json::Value = serde_json::from_str(&over.stdout).unwrap();
    assert_eq!((rep["overwritten"].as_u64(), rep["written"].as_u64(), rep["skipped"].as_u64()), (Some(1), Some(0), Some(0)), "{rep}");
    assert!(rep["verification"].as_array().unwrap().iter().all(|c| c["ok"] == true && c["skipped"] == 0), "{rep}");
    let t = dump(&e.target);
    assert_eq!(t[&k].value, src[&k].0.value, "overwrite replaces it with the source's");
    assert_eq!(t[&k].version, 2);
    assert_eq!(t[TARGET_ONLY.as_bytes()], e.before[TARGET_ONLY.as_bytes()], "the target-only key is left alone");
}

#[test]
fn whole_cluster_through_s3_into_a_new_cluster() {
    let started = Instant::now();
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("hcp").unwrap();
    let flags: Vec<String> = vec!["--endpoint".into(), s3.endpoint(), "--region".into(), S3Server::REGION.into()];
    let envs =
        vec![("AWS_ACCESS_KEY_ID".to_string(), S3Server::ACCESS_KEY.to_string()), ("AWS_SECRET_ACCESS_KEY".to_string(), S3Server::SECRET_KEY.to_string())];
    let repo = Repo::init("s3://hcp/etcd".into(), flags, envs, tempfile::tempdir().unwrap());
    let source = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3)).unwrap();
    testkit::load(&source.endpoints(), &testkit::KubeKeyspace { objects: 400, namespaces: 8, min_value: 100, max_value: 3000, ..Default::default() }).unwrap();

    // The new cluster: members etcd-0..2, data dirs from a template.
    let dir = tempfile::tempdir().unwrap();
    let (mut plans, _) = plan_members(dir.path(), 3).unwrap();
    for (i, p) in plans.iter_mut().enumerate() {
        p.name = format!("etcd-{i}");
        p.data_dir = dir.path().join(format!("etcd-{i}.etcd"));
    }
    let initial = plans.iter().map(|p| format!("{}={}", p.name, p.peer_url)).collect::<Vec<_>>().join(",");
    let clients = plans.iter().map(|p| p.client_url.clone()).collect::<Vec<_>>().join(",");
    let template = dir.path().join("{name}.etcd").display().to_string();
    let args = [
        "migrate",
        "--cluster",
        "hcp-a",
        "--from-endpoints",
        &source.endpoints_csv(),
        "--initial-cluster",
        &initial,
        "--initial-cluster-token",
        "hcp-a-new",
        "--data-dir",
        &template,
        "--to-endpoints",
        &clients,
        "--start-timeout",
        "60s",
        "-w",
        "json",
    ];
    // A non-empty data dir is refused before anything is written.
    std::fs::create_dir_all(&plans[1].data_dir).unwrap();
    std::fs::write(plans[1].data_dir.join("x"), b"x").unwrap();
    let refused = repo.q(&args);
    assert_eq!(refused.code, 1, "{} {}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("not empty") && refused.stderr.contains("etcd-1.etcd"), "{}", refused.stderr);
    assert!(!plans[0].data_dir.exists());
    std::fs::remove_dir_all(&plans[1].data_dir).unwrap();

    // kill -9 at several points (backup, record, fetch, restore, waiting), each followed by
    // the same command: it resumes from the recorded backup and never restores twice.
    let mut phases = Vec::new();
    for (i, delay) in [150u64, 300, 380, 430, 480, 530, 600, 800].into_iter().enumerate() {
        let log = dir.path().join(format!("kill-{i}.log"));
        let mut child = repo.cmd(&args).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        phases.push(format!("{delay}ms: {}", text.lines().rfind(|l| l.starts_with("==>")).unwrap_or("(before any step)")));
    }
    eprintln!("kills: {phases:#?}");

    // The command restores, prints the start commands and waits; the members start meanwhile.
    let child = repo.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !plans.iter().all(|p| p.data_dir.join("member").exists()) {
        assert!(Instant::now() < deadline, "the data dirs were not restored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = Cluster::start_planned(&ClusterOptions::new(EtcdVersion::V3_5, 3), dir.path(), &plans, &initial, "hcp-a-new").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout {stdout} stderr {stderr}");
    assert!(stderr.contains("start:     etcd --name etcd-0") && stderr.contains("3 member(s)"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let v = &report["verification"];
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    let rev = v["revision"].as_i64().unwrap();

    // The target's keyspace equals the source's at the backup's revision.
    let (_, want) = testkit::dump(&source.endpoints(), rev).unwrap();
    let (_, got) = testkit::dump(&target.endpoints(), rev).unwrap();
    assert!(want.len() > 300, "{}", want.len());
    assert_eq!(got, want, "identical keys, values, revisions and versions");
    let (h_src, _, _) = testkit::hash_kv(&source.endpoints()[0], rev).unwrap();
    for ep in target.endpoints() {
        assert_eq!(testkit::hash_kv(&ep, rev).unwrap().0, h_src, "hashkv of {ep}");
    }
    // Again: resumes, does not restore twice, verifies.
    let again = repo.q(&args[..args.len() - 2]);
    assert_eq!(again.code, 0, "{} {}", again.stdout, again.stderr);
    assert!(again.stdout.contains("was already restored") && again.stdout.contains("verification: OK"), "{}", again.stdout);
    eprintln!("{}", again.stdout);

    // Many clusters in one repository: the new cluster backs up as hcp-b.
    repo.ok(&["backup", "--cluster", "hcp-b", "--endpoints", &target.endpoints_csv()]);
    let a = repo.json(&["backups", "list", "--cluster", "hcp-a"]);
    let b = repo.json(&["backups", "list", "--cluster", "hcp-b"]);
    assert!(!a["backups"].as_array().unwrap().is_empty());
    assert_eq!(b["backups"].as_array().unwrap().len(), 1);
    assert!(a["backups"].as_array().unwrap().iter().any(|b| b["id"] == report["backup"]), "the migration's backup is hcp-a's");
    assert_eq!(a["backups"][0]["cluster"], "hcp-a");
    assert_eq!(b["backups"][0]["cluster"], "hcp-b");
    assert_eq!(repo.json(&["backups", "list"])["backups"].as_array().unwrap().len(), a["backups"].as_array().unwrap().len() + 1);
    let url = repo.ok(&["backups", "url", "latest", "--cluster", "hcp-a", "--expires", "15m"]);
    let url = url.stdout.trim();
    assert!(url.contains("X-Amz-Signature") && url.contains("X-Amz-Expires=900"), "{url}");
    let p = dir.path().join("fetched.db");
    let out = Command::new("curl").args(["-sS", "--fail", "--noproxy", "*", "-o"]).arg(&p).arg(url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(crate::common::sha256_file(&p), a["backups"][0]["snapshot"]["sha256"].as_str().unwrap(), "the URL serves hcp-a's latest snapshot");
    drop(target);
    eprintln!("whole cluster through S3: {:.1}s", started.elapsed().as_secs_f64());
}

/// Every file under `dir` (relative path, size): what a command wrote into a local repository.
fn files(dir: &std::path::Path) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.insert((e.path().strip_prefix(dir).unwrap().display().to_string(), md.len()));
            }
        }
    }
    out
}

/// Whole-cluster edge cases against a real source: a dry run writes nothing anywhere;
/// `--verify-only` without `--to-endpoints` is a usage error; an existing (empty) `--wal-dir`
/// is refused before any backup; a member whose restore was killed before its WAL segment got
/// its final name is never taken as restored (refused while its data dir is missing, finished
/// when the data dir holds the backup).
#[test]
fn whole_cluster_dry_run_verify_only_and_wal_dirs() {
    let started = Instant::now();
    let repo = Repo::local();
    let source = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::load(&source.endpoints(), &testkit::KubeKeyspace { objects: 200, namespaces: 4, min_value: 100, max_value: 1000, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("{name}.etcd").display().to_string();
    let wal = dir.path().join("{name}.wal").display().to_string();
    let (data0, wal0) = (dir.path().join("etcd-0.etcd"), dir.path().join("etcd-0.wal"));
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "migrate",
            "--cluster",
            "w",
            "--from-endpoints",
            &source.endpoints_csv(),
            "--initial-cluster",
            "etcd-0=http://127.0.0.1:1",
            "--initial-cluster-token",
            "w-new",
            "--data-dir",
            &data,
            "--wal-dir",
            &wal,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let q = |extra: &[&str]| {
        let a = base(extra);
        repo.q(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let repo_dir = repo.dir().join("repo");
    let repo_before = files(&repo_dir);

    // Dry run: exit 0, no data or WAL dir, no backup, no record, no file in the repository.
    let dry = q(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{} {}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("dry run: nothing was written") && dry.stderr.contains("1 data dir(s) are empty and would be restored"),
        "{} {}",
        dry.stdout,
        dry.stderr
    );
    let dry_json = q(&["--dry-run", "-w", "json"]);
    assert_eq!(dry_json.code, 0, "{}", dry_json.stderr);
    let rep: serde_json::Value = serde_json::from_str(&dry_json.stdout).unwrap();
    assert_eq!((rep["dry_run"].as_bool(), rep["backup"].is_null(), rep["restored_now"].as_bool()), (Some(true), true, Some(false)), "{rep}");
    assert!(rep["source_revision"].as_i64().unwrap() > 1, "the source was observed: {rep}");
    assert!(!data0.exists() && !wal0.exists(), "a dry run creates no dir");
    assert_eq!(files(&repo_dir), repo_before, "a dry run writes nothing into the repository");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nor next to the data dirs");

    // --verify-only needs the new members' client URLs.
    let v = q(&["--verify-only"]);
    assert_eq!(v.code, 2, "{} {}", v.stdout, v.stderr);
    assert!(v.stderr.contains("--verify-only needs --to-endpoints") && v.stderr.contains("Hint:"), "{}", v.stderr);

    // An existing, empty --wal-dir is refused before any backup is taken.
    std::fs::create_dir(&wal0).unwrap();
    let r = q(&[]);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("etcd-0.wal (the WAL dir exists"), "{}", r.stderr);
    assert_eq!(files(&repo_dir), repo_before, "refused before anything reached the repository");
    std::fs::remove_dir(&wal0).unwrap();

    // Killed after the WAL dir was renamed into place, before the data dir was.
    let a = base(&[]);
    let out = repo.cmd(&a.iter().map(String::as_str).collect::<Vec<_>>()).env("QUORUM_CRASH_POINT", "wal-dir-renamed").output().unwrap();
    assert_eq!(out.status.code(), None, "aborted at the crash point: {}", String::from_utf8_lossy(&out.stderr));
    let pending = wal0.join("0000000000000000-0000000000000000.wal.quorum-pending");
    let segment = wal0.join("0000000000000000-0000000000000000.wal");
    assert!(pending.is_file() && !segment.exists() && !data0.exists());
    let staged: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".etcd-0.etcd.quorum-restore-"))
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    let r = q(&[]);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("still named") && r.stderr.contains("quorum-pending") && r.stderr.contains("does not hold the backup") && r.stderr.contains("remove"),
        "{}",
        r.stderr
    );
    assert!(pending.is_file() && !data0.exists(), "nothing changed");
    assert!(!r.stderr.contains("was already restored"));

    // As if killed after the data dir rename too: the restore is complete but for the
    // segment's name; the resume finishes that rename, and only then counts it restored.
    std::fs::rename(&staged[0], &data0).unwrap();
    let r = q(&["-w", "json"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("completing that rename"), "{}", r.stderr);
    assert!(!pending.exists(), "the pending name is gone");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), 64_000_000, "the first segment has its final name");
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((rep["resumed"].as_bool(), rep["restored_now"].as_bool()), (Some(true), Some(true)), "{rep}");
    assert!(rep["restored_at"].is_string(), "{rep}");
    let again = q(&[]);
    assert_eq!(again.code, 0, "{} {}", again.stdout, again.stderr);
    assert!(again.stdout.contains("was already restored"), "{}", again.stdout);
    // A dry run now: it reports and writes nothing (no marker).
    let before = files(&repo_dir);
    let dry = q(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{} {}", dry.stdout, dry.stderr);
    assert_eq!(files(&repo_dir), before, "a dry run of a restored migration writes no marker");
    assert_eq!(repo.backup_ids().len(), 1, "one backup for every attempt");
    eprintln!("whole cluster dry run, verify-only, WAL dirs: {:.1}s", started.elapsed().as_secs_f64());
}
