//! Repository locks: backups, restores, drills, checks and `forget` take a shared lock on their
//! cluster, `prune` an exclusive one, so a prune never deletes data a running operation is
//! about to read or reference. Locks on cluster C live in `clusters/<C>/locks/`; a
//! repository-wide lock (`repo upgrade`) lives in `locks/`, and every cluster lock checks
//! those too. Callers do not take locks: the `repo` functions that touch the repository do.
//!
//! A lock is an object `locks/<random>` (plaintext JSON: host, pid, operation, exclusive,
//! created, expires). Taking one: list the locks, drop stale ones, write ours, list again; if a
//! conflicting lock is present, remove ours and back off (random 0.5–2 s) until `retry` runs
//! out. Both sides of a race see each other and back off, so no two conflicting holders run.
//! Held locks are refreshed every 5 minutes by writing a new lock object (never rewriting one)
//! and releasing the old; a lock is stale when it expired (30 minutes after it was written)
//! or when it was written on this host by a process that no longer exists.
//! Releasing deletes the object; when the bucket refuses deletes (object lock), a
//! `locks/<random>.released` marker is written instead and readers ignore the lock.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repository::Repository;

/// What a lock covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One cluster's objects (`clusters/<C>/locks/`).
    Cluster(&'a str),
    /// The whole repository (`locks/`).
    Repository,
}

impl Scope<'_> {
    fn dir(&self) -> String {
        match self {
            Scope::Cluster(c) => crate::format::cluster_path(c, "locks"),
            Scope::Repository => "locks".into(),
        }
    }
}

pub const LIFETIME: Duration = Duration::from_secs(30 * 60);
pub const REFRESH: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub operation: String,
    pub exclusive: bool,
    pub created: String,
    pub expires: String,
    /// The kernel's boot id, the PID namespace and the process start time (clock ticks since
    /// boot): a PID is only judged on the same boot, in the same PID namespace, and must
    /// belong to the same process (PIDs are reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

fn pid_ns() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.display().to_string())
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn new_info(exclusive: bool, operation: &str) -> LockInfo {
    let now = chrono::Utc::now();
    LockInfo {
        host: crate::hostname(),
        pid: std::process::id(),
        operation: operation.to_string(),
        exclusive,
        created: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        expires: (now + chrono::Duration::from_std(LIFETIME).unwrap()).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        boot_id: boot_id(),
        pid_ns: pid_ns(),
        start_time: start_time(std::process::id()),
    }
}

impl LockInfo {
    fn describe(&self, name: &str) -> String {
        format!(
            "{} lock {} held by {} (pid {} on {}, since {})",
            if self.exclusive { "an exclusive" } else { "a shared" },
            name,
            self.operation,
            self.pid,
            self.host,
            self.created
        )
    }

    /// Stale: expired by both its own word and the store's last-modified time (a skewed
    /// clock on either side alone does not expire a live lock), or written on this boot of
    /// this host, in this PID namespace, by a process that is gone.
    pub fn is_stale(&self, last_modified: Option<chrono::DateTime<chrono::Utc>>) -> bool {
        let now = chrono::Utc::now();
        let said = chrono::DateTime::parse_from_rfc3339(&self.expires).map(|e| e < now).unwrap_or(true);
        let stored = last_modified.is_none_or(|m| m + chrono::Duration::from_std(LIFETIME).unwrap() < now);
        if said && stored {
            return true;
        }
        if self.host != crate::hostname() {
            return false;
        }
        if let (Some(theirs), Some(ours)) = (&self.boot_id, boot_id()) {
            if *theirs != ours {
                return true; // written before this host rebooted
            }
        }
        if self.pid_ns.is_some() && self.pid_ns != pid_ns() {
            return false; // another PID namespace (a container): its PIDs are not ours to see
        }
        if !process_exists(self.pid) {
            return true;
        }
        matches!((self.start_time, start_time(self.pid)), (Some(a), Some(b)) if a != b)
    }
}

fn process_exists(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for the process.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A held lock; release it with [`Lock::release`] (dropping it leaves the object, which then
/// goes stale when the process exits).
pub struct Lock {
    repo_store: Arc<dyn object_store::ObjectStore>,
    dir: String,
    current: Arc<Mutex<String>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

/// The locks under `dir` (`locks` or `clusters/<C>/locks`) that are not released, by name,
/// each with whether it is stale.
pub async fn list_in(repo: &Repository, dir: &str) -> Result<Vec<(String, LockInfo, bool)>> {
    let metas = repo.list(dir).await?;
    let names: Vec<String> = metas.iter().filter_map(|m| m.location.filename().map(str::to_string)).collect();
    let released: HashSet<&str> = names.iter().filter_map(|n| n.strip_suffix(".released")).collect();
    let modified: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        metas.iter().filter_map(|m| Some((m.location.filename()?.to_string(), m.last_modified))).collect();
    let mut out = Vec::new();
    for n in names.iter().filter(|n| !n.ends_with(".released") && !released.contains(n.as_str())) {
        let b = match repo.get(&ObjPath::from(format!("{dir}/{n}"))).await {
            Ok(b) => b,
            Err(Error::Missing(_)) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<LockInfo>(&b) {
            Ok(info) => {
                let stale = info.is_stale(modified.get(n).copied());
                out.push((n.clone(), info, stale));
            }
            Err(_) => continue,
        }
    }
    Ok(out)
}

/// Every lock of the repository: the repository-wide ones and each cluster's, with the
/// directory it is in (reads every cluster's lock directory: for `repo locks`).
pub async fn list(repo: &Repository) -> Result<Vec<(String, LockInfo, bool)>> {
    let mut out: Vec<(String, LockInfo, bool)> = list_in(repo, "locks").await?.into_iter().map(|(n, i, s)| (format!("locks/{n}"), i, s)).collect();
    for c in repo.clusters().await? {
        let dir = crate::format::cluster_path(&c, "locks");
        out.extend(list_in(repo, &dir).await?.into_iter().map(|(n, i, s)| (format!("{dir}/{n}"), i, s)));
    }
    Ok(out)
}

async fn release_name(repo_store: &Arc<dyn object_store::ObjectStore>, dir: &str, name: &str) {
    let path = ObjPath::from(format!("{dir}/{name}"));
    use object_store::ObjectStoreExt;
    match repo_store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(_) => {
            let marker = ObjPath::from(format!("{dir}/{name}.released"));
            let _ = repo_store.put(&marker, object_store::PutPayload::from(Bytes::from_static(b"{}"))).await;
        }
    }
}

async fn write_lock(repo: &Repository, dir: &str, exclusive: bool, operation: &str) -> Result<String> {
    let info = new_info(exclusive, operation);
    let name = crate::format::random_name();
    repo.put_new(&ObjPath::from(format!("{dir}/{name}")), Bytes::from(serde_json::to_vec(&info).unwrap())).await?;
    Ok(name)
}

/// Take a lock on `scope`, retrying for up to `retry`. A cluster lock also conflicts with an
/// exclusive repository-wide lock.
pub async fn acquire(repo: &Repository, scope: Scope<'_>, exclusive: bool, operation: &str, retry: Duration) -> Result<Lock> {
    let deadline = tokio::time::Instant::now() + retry;
    let dir = scope.dir();
    loop {
        let conflict = match conflicting(repo, scope, exclusive, None).await? {
            Some(c) => Some(c),
            None => {
                let mine = write_lock(repo, &dir, exclusive, operation).await?;
                match conflicting(repo, scope, exclusive, Some(&mine)).await? {
                    None => {
                        let current = Arc::new(Mutex::new(mine));
                        let refresher = spawn_refresher(repo, &dir, exclusive, operation, current.clone());
                        return Ok(Lock { repo_store: repo.store().clone(), dir, current, refresher: Some(refresher) });
                    }
                    Some(c) => {
                        release_name(repo.store(), &dir, &mine).await;
                        Some(c)
                    }
                }
            }
        };
        let c = conflict.unwrap();
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Locked(format!("the repository is locked: {c}")));
        }
        let ms = 500 + rand::random::<u64>() % 1500;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A description of a lock that conflicts with one we want on `scope`, removing stale locks on
/// the way.
async fn conflicting(repo: &Repository, scope: Scope<'_>, exclusive: bool, mine: Option<&str>) -> Result<Option<String>> {
    let dir = scope.dir();
    for (name, info, stale) in list_in(repo, &dir).await? {
        if Some(name.as_str()) == mine {
            continue;
        }
        if stale {
            release_name(repo.store(), &dir, &name).await;
            continue;
        }
        if exclusive || info.exclusive {
            return Ok(Some(info.describe(&format!("{dir}/{name}"))));
        }
    }
    if let Scope::Cluster(_) = scope {
        // A repository-wide exclusive lock (an upgrade) excludes every cluster operation.
        for (name, info, stale) in list_in(repo, "locks").await? {
            if !stale && info.exclusive {
                return Ok(Some(info.describe(&format!("locks/{name}"))));
            }
        }
    }
    Ok(None)
}

fn spawn_refresher(repo: &Repository, dir: &str, exclusive: bool, operation: &str, current: Arc<Mutex<String>>) -> tokio::task::JoinHandle<()> {
    // The refresher needs its own handle on the repository's objects only.
    let store = repo.store().clone();
    let operation = operation.to_string();
    let dir = dir.to_string();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            let info = new_info(exclusive, &operation);
            let name = crate::format::random_name();
            use object_store::ObjectStoreExt;
            let path = ObjPath::from(format!("{dir}/{name}"));
            if store.put(&path, object_store::PutPayload::from(Bytes::from(serde_json::to_vec(&info).unwrap()))).await.is_ok() {
                let old = std::mem::replace(&mut *current.lock().unwrap(), name);
                release_name(&store, &dir, &old).await;
            }
        }
    })
}

impl Lock {
    /// Fail unless our lock object is still there and not released: another process may have
    /// judged it stale (and a prune may then have removed data this operation wrote). Called
    /// before anything that makes data visible.
    pub async fn verify(&self) -> Result<()> {
        use object_store::ObjectStoreExt;
        let name = self.current.lock().unwrap().clone();
        let dir = &self.dir;
        let gone = |why: String| {
            Error::Locked(format!(
                "our lock {dir}/{name} {why}: another process judged it stale; stopping before making anything visible (run the operation again)"
            ))
        };
        match self.repo_store.head(&ObjPath::from(format!("{dir}/{name}"))).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Err(gone("disappeared".into())),
            Err(e) => return Err(Error::store(format!("check {dir}/{name}"), e)),
        }
        match self.repo_store.head(&ObjPath::from(format!("{dir}/{name}.released"))).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Ok(_) => Err(gone("was released".into())),
            Err(e) => Err(Error::store(format!("check {dir}/{name}.released"), e)),
        }
    }

    pub async fn release(mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        let name = self.current.lock().unwrap().clone();
        release_name(&self.repo_store, &self.dir, &name).await;
    }
}
