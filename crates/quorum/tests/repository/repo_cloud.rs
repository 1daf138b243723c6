//! The backup repository on object storage servers started by the tests: S3 (moto), Azure
//! (Azurite), a write-once S3 bucket (refuses any second PUT of a key and every DELETE, as an
//! object-locked bucket does), and an HTTP proxy (tinyproxy) with --no-proxy rules.
//! Backup, list, restore into real etcd, presigned URLs fetched with curl, drills.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{sha256_file, Repo};
use testkit::servers::{AzureServer, Proxy, S3Server};
use testkit::{plan_members, Cluster, ClusterOptions, EtcdVersion, KubeKeyspace};

/// A one-member 3.5 cluster with data, and two snapshots of it (the second after changes).
struct Source {
    _c: Cluster,
    _dir: tempfile::TempDir,
    snaps: Vec<PathBuf>,
    kvs: Vec<(i64, Vec<testkit::Kv>)>,
}

fn source() -> Source {
    let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 1)).unwrap();
    testkit::load(&c.endpoints(), &KubeKeyspace { objects: 800, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut snaps = Vec::new();
    let mut kvs = Vec::new();
    for i in 0..2 {
        if i == 1 {
            for k in 0..20 {
                testkit::put(&c.endpoints(), &testkit::object_key(k * 31, 10), b"changed after the first backup").unwrap();
            }
        }
        let p = dir.path().join(format!("s{i}.db"));
        c.save_snapshot(&p).unwrap();
        kvs.push(testkit::dump(&c.endpoints(), 0).unwrap());
        snaps.push(p);
    }
    Source { _c: c, _dir: dir, snaps, kvs }
}

fn s3_repo(s3: &S3Server, bucket: &str, extra: &[&str]) -> Repo {
    s3.create_bucket(bucket).unwrap();
    let mut flags: Vec<String> = vec!["--endpoint".into(), s3.endpoint(), "--region".into(), S3Server::REGION.into()];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let envs =
        vec![("AWS_ACCESS_KEY_ID".to_string(), S3Server::ACCESS_KEY.to_string()), ("AWS_SECRET_ACCESS_KEY".to_string(), S3Server::SECRET_KEY.to_string())];
    Repo::init(format!("s3://{bucket}/etcd/prod"), flags, envs, tempfile::tempdir().unwrap())
}

fn azure_repo(az: &AzureServer, container: &str) -> Repo {
    az.create_container(container).unwrap();
    let flags = vec!["--endpoint".to_string(), az.endpoint()];
    let envs = vec![
        ("AZURE_STORAGE_ACCOUNT_NAME".to_string(), AzureServer::ACCOUNT.to_string()),
        ("AZURE_STORAGE_ACCOUNT_KEY".to_string(), AzureServer::KEY.to_string()),
    ];
    Repo::init(format!("az://{container}/etcd"), flags, envs, tempfile::tempdir().unwrap())
}

/// Back up both snapshots, list, get, restore the second into a real member and compare.
fn backup_list_restore(repo: &Repo, src: &Source) -> Vec<String> {
    let mut ids = Vec::new();
    let mut added = Vec::new();
    for s in &src.snaps {
        let v = repo.json(&["backup", "--cluster", "prod", "--snapshot", s.to_str().unwrap()]);
        ids.push(v["id"].as_str().unwrap().to_string());
        added.push(v["manifest"]["added_bytes"].as_u64().unwrap());
    }
    assert!(added[1] * 3 < added[0], "the second backup shares most chunks: {added:?}");
    let listed = repo.backup_ids();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&ids[0]) && listed.contains(&ids[1]));
    let out = tempfile::tempdir().unwrap();
    let got = out.path().join("s.db");
    repo.ok(&["backups", "get", &ids[0], "-o", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&got), sha256_file(&src.snaps[0]));

    let dir = tempfile::tempdir().unwrap();
    let (plans, initial) = plan_members(dir.path(), 1).unwrap();
    repo.ok(&[
        "restore",
        &ids[1],
        "--name",
        "m0",
        "--initial-cluster",
        &initial,
        "--initial-advertise-peer-urls",
        &plans[0].peer_url,
        "--initial-cluster-token",
        "t",
        "--data-dir",
        plans[0].data_dir.to_str().unwrap(),
    ]);
    let c = Cluster::start_planned(&ClusterOptions::new(EtcdVersion::V3_5, 1), dir.path(), &plans, &initial, "t").unwrap();
    let (rev, kvs) = testkit::dump(&c.endpoints(), 0).unwrap();
    assert_eq!(rev, src.kvs[1].0);
    assert!(kvs == src.kvs[1].1, "restored data differs from the source");
    ids
}

fn curl_sha256(url: &str, dir: &Path) -> String {
    let p = dir.join("downloaded.db");
    let out = Command::new("curl").args(["-sS", "--fail", "--noproxy", "*", "-o"]).arg(&p).arg(url).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    sha256_file(&p)
}

#[test]
fn s3_backup_restore_presigned_url_drill() {
    let s3 = S3Server::start().unwrap();
    let src = source();
    let repo = s3_repo(&s3, "backups", &[]);
    let ids = backup_list_restore(&repo, &src);
    let url = repo.ok(&["backups", "url", &ids[0], "--expires", "10m"]);
    let url = url.stdout.trim();
    assert!(url.contains("X-Amz-Signature") && url.contains("X-Amz-Expires=600"), "{url}");
    assert!(url.contains("/etcd/prod/exports/"), "{url}");
    let d = tempfile::tempdir().unwrap();
    assert_eq!(curl_sha256(url, d.path()), sha256_file(&src.snaps[0]));
    // A second call reuses the exported copy.
    let again = repo.ok(&["backups", "url", &ids[0]]);
    assert_eq!(curl_sha256(again.stdout.trim(), d.path()), sha256_file(&src.snaps[0]));
    repo.ok(&["backups", "url", &ids[0], "--remove"]);

    let drill = repo.json(&["drill", "--latest", "--etcd-bin", EtcdVersion::V3_5.etcd().to_str().unwrap()]);
    assert_eq!(drill["ok"], true, "{drill}");
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);
}

#[test]
fn azure_backup_restore_presigned_url() {
    let az = AzureServer::start().unwrap();
    let src = source();
    let repo = azure_repo(&az, "backups");
    let ids = backup_list_restore(&repo, &src);
    let url = repo.ok(&["backups", "url", &ids[1], "--expires", "1h"]);
    let url = url.stdout.trim();
    assert!(url.contains("sig="), "a SAS URL: {url}");
    let d = tempfile::tempdir().unwrap();
    assert_eq!(curl_sha256(url, d.path()), sha256_file(&src.snaps[1]));
    // Azurite checks the signature: a tampered URL is refused.
    let bad = url.replacen("sig=", "sig=AAAA", 1);
    let out = Command::new("curl").args(["-sS", "--fail", "-o", "/dev/null", "--noproxy", "*", &bad]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);
}

#[test]
fn write_once_bucket() {
    let s3 = S3Server::start_write_once().unwrap();
    let src = source();
    let repo = s3_repo(&s3, "locked", &[]);
    let ids = backup_list_restore(&repo, &src);
    // Locks could not be deleted: released markers let the next commands run.
    let drill = repo.json(&["drill", &ids[0], "--etcd-bin", EtcdVersion::V3_5.etcd().to_str().unwrap()]);
    assert_eq!(drill["ok"], true, "{drill}");
    let locks = repo.json(&["repo", "locks"]);
    assert_eq!(locks.as_array().unwrap().len(), 0, "released locks are not live: {locks}");
    // Leftovers of an interrupted backup (a pack no index names): prune must delete it, and
    // this bucket refuses. Put one there directly.
    let store = s3.store("locked").unwrap();
    let name = "0".repeat(64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(object_store::ObjectStoreExt::put(
        store.as_ref(),
        &object_store::path::Path::from(format!("etcd/prod/clusters/prod/data/00/{name}")),
        object_store::PutPayload::from(vec![1u8; 1000]),
    ))
    .unwrap();
    let check = repo.json(&["repo", "check"]);
    assert!(check["notes"][0].as_str().unwrap().contains("1 pack(s) not named by any index"), "{check}");

    // forget: the bucket refuses to delete manifests; reported, exit 1, nothing lost.
    let f = repo.q(&["forget", "--keep-last", "1", "--cluster", "prod"]);
    assert_eq!(f.code, 1, "{} {}", f.stdout, f.stderr);
    assert!(f.stderr.contains("refused to delete 1 backup manifest") && f.stderr.contains("object lock"), "{}", f.stderr);
    assert!(f.stdout.contains("REFUSED"), "{}", f.stdout);
    assert!(repo.backup_ids().len() >= 2);
    // prune: the bucket refuses the delete; reported clearly, exit 1, nothing lost.
    let p = repo.q(&["prune", "--keep-unindexed-for", "0s"]);
    assert_eq!(p.code, 1, "{} {}", p.stdout, p.stderr);
    assert!(p.stderr.contains("refused") && p.stderr.contains("object lock"), "{}", p.stderr);
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);
    let out = tempfile::tempdir().unwrap();
    for id in &ids {
        let g = out.path().join(format!("{id}.db"));
        repo.ok(&["backups", "get", id, "-o", g.to_str().unwrap()]);
    }
}

#[test]
fn proxy_and_no_proxy_rules() {
    let s3 = S3Server::start().unwrap();
    let proxy = Proxy::start().unwrap();
    s3.create_bucket("viaproxy").unwrap();
    // The endpoint by host name, so the subdomain rule can be seen.
    let ep = format!("http://localhost:{}", s3.port());
    let envs =
        vec![("AWS_ACCESS_KEY_ID".to_string(), S3Server::ACCESS_KEY.to_string()), ("AWS_SECRET_ACCESS_KEY".to_string(), S3Server::SECRET_KEY.to_string())];
    let flags = vec!["--endpoint".to_string(), ep.clone(), "--region".into(), S3Server::REGION.into(), "--proxy".into(), proxy.url()];
    let repo = Repo::init("s3://viaproxy/r".into(), flags, envs.clone(), tempfile::tempdir().unwrap());
    let n0 = proxy.requests_logged().len();
    assert!(n0 > 0, "repo init went through the proxy");
    assert!(proxy.requests_logged().iter().all(|r| r.contains(&format!("localhost:{}", s3.port()))));
    let count = |extra: &[&str], env: &[(&str, &str)]| {
        let before = proxy.requests_logged().len();
        let mut c = repo.cmd(&["backups", "list"]);
        c.args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        let r = crate::common::run(c);
        assert_eq!(r.code, 0, "{extra:?}: {}", r.stderr);
        proxy.requests_logged().len() - before
    };
    assert!(count(&[], &[]) > 0, "--proxy is used");
    assert_eq!(count(&["--no-proxy", "localhost"], &[]), 0, "a plain name matches itself");
    assert!(count(&["--no-proxy", ".localhost"], &[]) > 0, "a leading dot matches subdomains only");
    assert_eq!(count(&["--no-proxy", "*"], &[]), 0, "* bypasses the proxy for all");
    assert!(count(&["--no-proxy", "example.com,10.0.0.0/8"], &[]) > 0, "other entries do not match");
    assert_eq!(count(&["--no-proxy", &format!("localhost:{}", s3.port())], &[]), 0, "host:port");
    // From the environment, as curl reads it.
    let env_repo_flags: Vec<String> = repo.flags.iter().take_while(|f| *f != "--proxy").cloned().collect();
    let mut c = crate::common::quorum();
    c.args(["backups", "list"]).args(&env_repo_flags).env("HTTPS_PROXY", proxy.url()).env("HTTP_PROXY", proxy.url());
    for (k, v) in &envs {
        c.env(k, v);
    }
    let before = proxy.requests_logged().len();
    assert_eq!(crate::common::run(c).code, 0);
    assert!(proxy.requests_logged().len() > before, "HTTPS_PROXY is honoured");
    let mut c = crate::common::quorum();
    c.args(["backups", "list"]).args(&env_repo_flags).env("HTTP_PROXY", proxy.url()).env("NO_PROXY", ".localhost,localhost");
    for (k, v) in &envs {
        c.env(k, v);
    }
    let before = proxy.requests_logged().len();
    assert_eq!(crate::common::run(c).code, 0);
    assert_eq!(proxy.requests_logged().len(), before, "NO_PROXY is honoured");
}

/// `gs://` with `--endpoint` against gcp-storage-emulator: the repository's JSON API client
/// (`repo::gcs_json`; object_store's XML client does not work with the emulator). No
/// credentials: the emulator needs none. Presigned URLs need a service-account key to sign with.
#[test]
fn gcs_backup_restore() {
    let gcs = testkit::servers::GcsServer::start().unwrap();
    let src = source();
    let bucket = "quorumgcs"; // letters and digits only (see GcsServer)
    gcs.create_bucket(bucket).unwrap();
    let repo = Repo::init(format!("gs://{bucket}/etcd"), vec!["--endpoint".into(), gcs.endpoint()], vec![], tempfile::tempdir().unwrap());
    assert!(gcs.download(bucket, "etcd/config").unwrap().starts_with(b"{"), "objects live under the prefix");
    let ids = backup_list_restore(&repo, &src);
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);

    // No key configured: a clear error, nothing exported.
    let u = repo.q(&["backups", "url", &ids[0]]);
    assert_ne!(u.code, 0);
    assert!(u.stderr.contains("service-account key") && u.stderr.contains("GOOGLE_SERVICE_ACCOUNT"), "{}", u.stderr);
    assert!(gcs.download(bucket, &format!("etcd/exports/{}.db", ids[0])).is_err());
    // With a key: the export is uploaded (the multipart path: a temporary file, one upload) and
    // the URL is V4-signed for the endpoint. The emulator does not check signatures, so this
    // proves the URL's shape and the exported bytes, not the signature.
    let d = tempfile::tempdir().unwrap();
    let pem = d.path().join("key.pem");
    let out = Command::new("openssl").args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"]).arg(&pem).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sa = d.path().join("sa.json");
    let key = serde_json::json!({
        "type": "service_account",
        "client_email": "quorum@test.iam.gserviceaccount.com",
        "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&pem).unwrap(),
    });
    std::fs::write(&sa, key.to_string()).unwrap();
    let mut c = repo.cmd(&["backups", "url", &ids[0], "--expires", "10m"]);
    c.env("GOOGLE_SERVICE_ACCOUNT", &sa);
    let u = crate::common::run(c);
    assert_eq!(u.code, 0, "{}", u.stderr);
    let url = u.stdout.trim();
    assert!(url.starts_with(&format!("{}/{bucket}/etcd/exports/", gcs.endpoint())) && url.contains("X-Goog-Signature="), "{url}");
    assert_eq!(curl_sha256(url, d.path()), sha256_file(&src.snaps[0]));
    let mut c = repo.cmd(&["backups", "url", &ids[0], "--remove"]);
    c.env("GOOGLE_SERVICE_ACCOUNT", &sa);
    assert_eq!(crate::common::run(c).code, 0);
    assert!(gcs.download(bucket, &format!("etcd/exports/{}.db", ids[0])).is_err(), "export removed");

    // Retention and garbage collection: deletes and listings through the JSON API.
    let f = repo.json(&["forget", "--keep-last", "1", "--cluster", "prod"]);
    let removed = f["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{f}");
    let kept = repo.backup_ids();
    assert_eq!(kept.len(), 1);
    assert!(ids.contains(&kept[0]) && removed[0] != kept[0].as_str() && ids.iter().any(|i| removed[0] == i.as_str()), "{f} {kept:?}");
    repo.ok(&["prune", "--keep-unindexed-for", "0s"]);
    assert_eq!(repo.ok(&["repo", "check", "--read-data"]).code, 0);
    let drill = repo.json(&["drill", "--latest", "--etcd-bin", EtcdVersion::V3_5.etcd().to_str().unwrap()]);
    assert_eq!(drill["ok"], true, "{drill}");
    assert_eq!(repo.json(&["repo", "locks"]).as_array().unwrap().len(), 0, "locks released (deleted)");
}
