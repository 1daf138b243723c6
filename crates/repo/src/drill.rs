//! `quorum drill`: prove a backup restores.
//!
//! Restore the snapshot natively into a temporary directory as a one-member cluster while its
//! chunks arrive (every blob authenticated, as `restore --repo` does), compare the whole
//! file's sha256 with the manifest, start a real etcd on it on loopback (free ports), and ask it: the revision, the number of
//! live keys and `HashKV` at the snapshot revision must equal what the manifest recorded at
//! backup time (computed offline from the file). Then stop etcd (SIGKILL by PID), remove the
//! directory, and write the result to `verifications/` in the repository.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path as ObjPath;

use crate::error::{Error, Result};
use crate::format::{self, Manifest, Verification};
use crate::repository::Repository;

#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The etcd binary; default: `etcd` on PATH.
    pub etcd_bin: Option<PathBuf>,
    /// Where to make the temporary directory (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
    pub start_timeout: Duration,
    pub parallel: usize,
    /// Record the result in the repository.
    pub record: bool,
    /// Told each phase: fetching, restoring, starting etcd, comparing.
    pub phases: crate::progress::Phases,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions { etcd_bin: None, work_dir: None, start_timeout: Duration::from_secs(60), parallel: 8, record: true, phases: Default::default() }
    }
}

struct Etcd(Child);

/// A child that must not outlive this process.
trait DiesWithParent {
    /// The child is killed when the thread that starts it ends (here a runtime worker, which
    /// lives as long as the process's runtime). [`Etcd`]'s drop kills it when the drill ends,
    /// but a drill killed with -9 (or a crash) runs no drop, and left its etcd running on the
    /// drill's ports, on a data dir that the next drill sweeps away.
    fn dies_with_parent(&mut self) -> &mut Self;
}

impl DiesWithParent for Command {
    fn dies_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure calls only prctl, getppid and _exit, which
        // are async-signal-safe, and touches no memory of the parent's.
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            self.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the request was made: nobody will kill the child.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            })
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn find_etcd(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(Error::Usage(format!("etcd binary {}: no such file", p.display())));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("etcd");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    Err(Error::Usage("no etcd binary found on PATH (install etcd-server, or name the binary)".into()))
}

/// `etcd --version` → "3.5.16".
pub fn etcd_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin).arg("--version").output().map_err(|e| Error::io(bin, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version:").map(|v| v.trim().to_string()))
        .ok_or_else(|| Error::Other(format!("{}: could not read its version from `--version`", bin.display())))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Other(format!("find a free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Other(e.to_string()))?.port())
}

/// Run a drill of backup `id`.
pub async fn drill(repo: Arc<Repository>, id: &str, manifest: &Manifest, opts: &DrillOptions) -> Result<Verification> {
    let started = Instant::now();
    let bin = find_etcd(opts.etcd_bin.as_deref())?;
    let version = etcd_version(&bin)?;
    let layout = etcd_data::restore::Layout::parse(&version)
        .ok_or_else(|| Error::Usage(format!("{}: etcd {version} is not a version quorum restores for (3.4, 3.5)", bin.display())))?;
    let mut checks = Vec::new();
    let result = run(repo.clone(), id, manifest, opts, &bin, layout, &mut checks).await;
    // Only a backup that does not restore, or restores to other data, is a failed drill;
    // a full disk, a network error or an etcd that did not start is the drill's own failure
    // and is reported without recording anything.
    if let Err(e) = &result {
        if !matches!(e, Error::Damaged(_) | Error::Mismatch(_)) {
            return Err(Error::Other(format!("the drill could not run: {e}")));
        }
    }
    let v = Verification {
        backup: id.to_string(),
        cluster: manifest.cluster.clone(),
        time: crate::now_rfc3339(),
        host: crate::hostname(),
        ok: result.is_ok(),
        etcd_version: version,
        seconds: started.elapsed().as_secs_f64(),
        checks,
        failure: result.as_ref().err().map(|e| e.to_string()),
    };
    if opts.record {
        let body = repo.seal_json(&v, b"verification");
        let name = format!(
            "{}/{id}-{}-{}",
            format::cluster_path(&manifest.cluster, "verifications"),
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            &format::random_name()[..8]
        );
        repo.put_new(&ObjPath::from(name), Bytes::from(body)).await?;
    }
    Ok(v)
}

async fn run(
    repo: Arc<Repository>,
    id: &str,
    manifest: &Manifest,
    opts: &DrillOptions,
    bin: &Path,
    layout: etcd_data::restore::Layout,
    checks: &mut Vec<String>,
) -> Result<()> {
    let base = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = crate::scratch::Scratch::new(&base, "quorum-drill-")?;
    let snap = tmp.path().join("snapshot.db");
    let peer = free_port()?;
    let client = free_port()?;
    let peer_url = format!("http://127.0.0.1:{peer}");
    let client_url = format!("http://127.0.0.1:{client}");
    let cluster = etcd_data::cluster::ClusterSpec::new(&format!("drill={peer_url}"), "quorum-drill").map_err(|e| Error::Other(e.to_string()))?;
    let data_dir = tmp.path().join("drill.etcd");
    let ropts = etcd_data::restore::RestoreOptions {
        snapshot: snap.clone(),
        cluster,
        targets: vec![etcd_data::restore::Target { name: "drill".into(), data_dir: data_dir.clone(), wal_dir: None }],
        skip_hash_check: false,
        proven_by: None,
        bump_revision: None,
        mark_compacted: false,
        target_version: Some(layout),
        lease_grace: None,
        source: None,
    };
    // Restored while its chunks arrive, as `restore --repo` does; under a shared lock, and only
    // if the backup is still there: a backup forgotten and pruned meanwhile is not a failed
    // drill (the error is not Damaged, so nothing is recorded).
    let restore = crate::restore::restore_arriving(repo.clone(), manifest, ropts, &snap, false, opts.parallel, &opts.phases);
    let report = crate::restore::reading_backup(&repo, id, manifest, "drill", restore).await.map_err(|e| match e {
        Error::Restore(
            e @ (etcd_data::restore::RestoreError::HashMismatch { .. }
            | etcd_data::restore::RestoreError::Damaged { .. }
            | etcd_data::restore::RestoreError::Schema { .. }
            | etcd_data::restore::RestoreError::Bolt(_)),
        ) => Error::Damaged(format!("the backup does not restore: {e}")),
        e => e,
    })?;
    // The whole snapshot (a temporary file, in the page cache) against the manifest's sha256,
    // as a phase of its own.
    let checking = opts.phases.bytes("checking sha256");
    let path = snap.clone();
    let actual = tokio::task::spawn_blocking(move || crate::restore::sha256_file_with(&path, &|d, t| checking(d, t)))
        .await
        .map_err(|e| Error::Other(format!("hash task: {e}")))??;
    if actual != manifest.snapshot.sha256 {
        return Err(Error::Damaged(format!("reassembled snapshot hashes to {actual}, the manifest says {}", manifest.snapshot.sha256)));
    }
    checks.push(format!("reassembled {} bytes; sha256 {} matches the manifest", manifest.snapshot.size, manifest.snapshot.sha256));
    let _ = std::fs::remove_file(&snap);
    checks.push(format!("restored natively ({} layout) into a temporary data dir", report.layout.label()));

    let log_path = tmp.path().join("etcd.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let quota = (manifest.snapshot.size * 2).max(2 << 30);
    let child = Command::new(bin)
        .args(["--name", "drill", "--data-dir"])
        .arg(&data_dir)
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("drill={peer_url}")])
        .args(["--quota-backend-bytes", &quota.to_string()])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io(&log_path, e))?)
        .stderr(log)
        .dies_with_parent()
        .spawn()
        .map_err(|e| Error::io(bin, e))?;
    let etcd = Etcd(child);
    let outcome = query(&client_url, manifest, opts.start_timeout, &opts.phases, checks).await;
    drop(etcd);
    if let Err(e) = outcome {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        return Err(Error::Other(format!("{e}; etcd's last log lines: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))));
    }
    Ok(())
}

async fn query(endpoint: &str, m: &Manifest, timeout: Duration, phases: &crate::progress::Phases, checks: &mut Vec<String>) -> Result<()> {
    phases.enter("starting etcd");
    let deadline = Instant::now() + timeout;
    let opts = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2)).with_timeout(Duration::from_secs(30));
    let mut client = loop {
        if let Ok(mut c) = etcd_client::Client::connect([endpoint], Some(opts.clone())).await {
            if c.status().await.is_ok() {
                break c;
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!("the restored etcd did not answer on {endpoint} within {}s", timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    checks.push(format!("etcd started on {endpoint}"));
    phases.enter("comparing with the manifest");
    let want_rev = m.snapshot.revision;
    let resp =
        client.get("", Some(etcd_client::GetOptions::new().with_all_keys().with_count_only())).await.map_err(|e| Error::Other(format!("count keys: {e}")))?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
    if rev != want_rev {
        return Err(Error::Mismatch(format!("revision {rev}, the manifest says {want_rev}")));
    }
    checks.push(format!("revision {rev} == manifest"));
    if let Some(want) = m.snapshot.live_keys {
        if resp.count() as u64 != want {
            return Err(Error::Mismatch(format!("{} keys, the manifest says {want}", resp.count())));
        }
        checks.push(format!("{} keys == manifest", resp.count()));
    }
    if let Some(want) = m.snapshot.hash_kv {
        let h = client.hash_kv(want_rev).await.map_err(|e| Error::Other(format!("hashkv: {e}")))?;
        if h.hash() != want {
            return Err(Error::Mismatch(format!("hashkv at revision {want_rev} is {}, the manifest says {want}", h.hash())));
        }
        checks.push(format!("hashkv {want} at revision {want_rev} == manifest"));
    }
    Ok(())
}

/// The drill records of `cluster`, newest first.
pub async fn verifications(repo: &Repository, cluster: &str) -> Result<Vec<Verification>> {
    let metas = repo.list(&format::cluster_path(cluster, "verifications")).await?;
    let mut out = Vec::new();
    for m in metas {
        let b = repo.get(&m.location).await?;
        match repo.open_json::<Verification>(&b, b"verification", m.location.as_ref()) {
            Ok(v) => out.push(v),
            Err(_) => continue,
        }
    }
    out.sort_by(|a, b| b.time.cmp(&a.time));
    Ok(out)
}
