//! A bounded local spool for delta segments, so the capture goes on while the repository is
//! unavailable.
//!
//! * **Write.** The capture seals each segment once and writes exactly the bytes that will be
//!   uploaded to `<spool dir>/<repository id>/<cluster>/<first:020>-<last:020>-<16 hex>` (the
//!   last component of its object name): a temporary file (`.tmp-*`), fsync, rename, fsync of
//!   the directory. A segment is in the spool before anything is uploaded.
//! * **Upload.** One uploader per spool ([`Spool::run_uploader`]) takes the segments in order,
//!   oldest first, checks each (name hash, AEAD, header: [`repo::delta::open_segment`]), writes
//!   it with a conditional create and deletes the file only after that write succeeded; a
//!   failure is retried with exponential back-off (0.5 s doubling to 30 s) on the same segment,
//!   so the repository's chain only ever grows at its end. A spooled file that does not open
//!   is renamed `damaged-*` and left (its revisions become a gap that `backups deltas` names).
//! * **Restart.** Spooled segments survive the process: a new spool on the same directory
//!   uploads them first, and the capture continues after the last spooled revision (its chain
//!   end counts spooled segments as chain pieces). Several agents on one host may share a spool
//!   directory: uploads are idempotent and the directory is re-read periodically.
//! * **Bound.** When the spool holds `max_bytes` (one segment larger than that is still
//!   accepted into an empty spool) or [`MAX_SEGMENTS`] segments, [`Spool::reserve`] waits: the capture stops reading its
//!   watch (etcd keeps the history until it compacts; a compacted watch then takes the full
//!   backup path) and `quorum_delta_spool_full` is 1 meanwhile. Memory: one segment in the
//!   uploader, at most two in the capture.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use prometheus::{Gauge, IntCounter, IntGauge, Registry};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use repo::delta::{parse_segment_file, SegmentRef};
use repo::Repository;

/// Default spool bound (`delta.spool_max_mib`).
pub const DEFAULT_MAX_BYTES: u64 = 1024 << 20;
/// Longest wait between two upload attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Temporary files older than this are left-overs of a crash.
const STALE_TMP: Duration = Duration::from_secs(600);
/// How often the directory is re-read while idle or waiting (another agent may share it).
const RESCAN: Duration = Duration::from_secs(5);
/// The spool is also full at this many segments (keeps its index in memory small: ~14 h of
/// 0.5 s segments).
pub const MAX_SEGMENTS: usize = 100_000;

/// The spool's Prometheus metrics (registered by [`crate::metrics::Metrics`]).
#[derive(Clone)]
pub struct SpoolMetrics {
    pub bytes: IntGauge,
    pub segments: IntGauge,
    pub full: IntGauge,
    pub oldest_age: Gauge,
    pub max_bytes: IntGauge,
    pub upload_failures: IntCounter,
    pub write_failing: IntGauge,
}

impl Default for SpoolMetrics {
    fn default() -> Self {
        use crate::metrics::{counter, gauge, int_gauge};
        SpoolMetrics {
            bytes: int_gauge("delta_spool_bytes", "Bytes of delta segments spooled locally and not yet uploaded"),
            segments: int_gauge("delta_spool_segments", "Delta segments spooled locally and not yet uploaded"),
            full: int_gauge("delta_spool_full", "1 while the capture waits for room in the spool (it does not read the watch meanwhile)"),
            oldest_age: gauge("delta_spool_oldest_age_seconds", "Age of the oldest spooled segment (0 when the spool is empty)"),
            max_bytes: int_gauge("delta_spool_max_bytes", "The spool's bound (delta.spool_max_mib)"),
            upload_failures: counter("delta_spool_upload_failures_total", "Failed uploads of spooled segments (each is retried)"),
            write_failing: int_gauge(
                "delta_spool_write_failing",
                "1 while segments cannot be written into the spool (a full or unwritable disk); the capture retries and resumes by itself",
            ),
        }
    }
}

impl SpoolMetrics {
    pub fn register(&self, r: &Registry) {
        use crate::metrics::register;
        register(r, &self.bytes);
        register(r, &self.segments);
        register(r, &self.full);
        register(r, &self.oldest_age);
        register(r, &self.max_bytes);
        register(r, &self.upload_failures);
        register(r, &self.write_failing);
    }
}

/// One spooled segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `<first:020>-<last:020>-<16 hex>`.
    pub file: String,
    pub first: i64,
    pub last: i64,
    pub size: u64,
    pub spooled_at: SystemTime,
}

/// One segment moved from the spool to the repository.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Object name.
    pub name: String,
    pub first_revision: i64,
    pub last_revision: i64,
    pub bytes: u64,
    /// How long it waited in the spool.
    pub spooled_for: Duration,
}

/// Called after each upload.
pub type OnUpload = Arc<dyn Fn(&Uploaded) + Send + Sync>;

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, Entry>,
    bytes: u64,
    /// The last upload error, while uploads fail.
    failing: Option<String>,
    /// The last error writing a segment into the spool, until a write succeeds.
    write_failing: Option<String>,
    scanned: Option<Instant>,
}

impl Inner {
    fn insert(&mut self, e: Entry) {
        self.bytes += e.size;
        if let Some(old) = self.entries.insert(e.file.clone(), e) {
            self.bytes -= old.size;
        }
    }

    fn remove(&mut self, file: &str) {
        if let Some(old) = self.entries.remove(file) {
            self.bytes -= old.size;
        }
    }
}

/// A spool directory of one cluster in one repository.
pub struct Spool {
    dir: PathBuf,
    cluster: String,
    max_bytes: u64,
    inner: Mutex<Inner>,
    changed: Notify,
    metrics: SpoolMetrics,
    _private: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish()
    }
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

impl Spool {
    /// Open (creating it) the spool of `cluster` for the repository `repo_id` under `root`:
    /// `root/<repo_id>/<cluster>/`. Segments already there are kept for the uploader.
    pub fn open(root: &Path, repo_id: &str, cluster: &str, max_bytes: u64, metrics: SpoolMetrics) -> Result<Arc<Spool>, String> {
        repo::delta::check_cluster_name(cluster).map_err(|e| e.to_string())?;
        if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("repository id {repo_id:?} cannot name a spool directory"));
        }
        Spool::at(root.join(repo_id).join(cluster), cluster, max_bytes, metrics, None)
    }

    /// A spool in a new temporary directory, removed when the spool is dropped (a capture run
    /// without a configured spool).
    pub fn private(cluster: &str, max_bytes: u64) -> Result<Arc<Spool>, String> {
        repo::delta::check_cluster_name(cluster).map_err(|e| e.to_string())?;
        let t = tempfile::Builder::new().prefix(&format!("quorum-spool-{cluster}-")).tempdir().map_err(|e| format!("temporary spool: {e}"))?;
        Spool::at(t.path().to_path_buf(), cluster, max_bytes, SpoolMetrics::default(), Some(t))
    }

    fn at(dir: PathBuf, cluster: &str, max_bytes: u64, metrics: SpoolMetrics, private: Option<tempfile::TempDir>) -> Result<Arc<Spool>, String> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| io_err("create spool directory", &dir, e))?;
        }
        // Left-overs of a crash between create and rename: never a segment.
        for d in std::fs::read_dir(&dir).map_err(|e| io_err("read spool directory", &dir, e))?.flatten() {
            let name = d.file_name().to_string_lossy().to_string();
            let old = d.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|a| a > STALE_TMP);
            if (name.starts_with(".tmp-") || name.contains(".partial-")) && old {
                let _ = std::fs::remove_file(d.path());
            }
        }
        metrics.max_bytes.set(max_bytes as i64);
        let s = Arc::new(Spool {
            dir,
            cluster: cluster.to_string(),
            max_bytes,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            metrics,
            _private: private,
        });
        s.rescan().map_err(|e| io_err("read spool directory", &s.dir, e))?;
        Ok(s)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a file can be created in the spool directory now (a temporary file, removed at
    /// once; a crash leaves a `.tmp-*` the next open removes).
    pub fn probe(&self) -> Result<(), String> {
        tempfile::Builder::new().prefix(".tmp-probe-").tempfile_in(&self.dir).map(drop).map_err(|e| io_err("create a file in", &self.dir, e))
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn metrics(&self) -> &SpoolMetrics {
        &self.metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-read the directory (the truth: another process may share it).
    pub fn rescan(&self) -> std::io::Result<()> {
        let mut found = Inner::default();
        for d in std::fs::read_dir(&self.dir)?.flatten() {
            let file = d.file_name().to_string_lossy().to_string();
            let Some((first, last, _)) = parse_segment_file(&file) else { continue };
            let Ok(m) = d.metadata() else { continue }; // removed meanwhile
            if !m.is_file() {
                continue;
            }
            found.insert(Entry { file, first, last, size: m.len(), spooled_at: m.modified().unwrap_or_else(|_| SystemTime::now()) });
        }
        {
            let mut g = self.lock();
            g.entries = found.entries;
            g.bytes = found.bytes;
            g.scanned = Some(Instant::now());
        }
        self.refresh_metrics();
        Ok(())
    }

    fn rescan_if_due(&self) {
        let due = self.lock().scanned.is_none_or(|t| t.elapsed() >= RESCAN);
        if due {
            if let Err(e) = self.rescan() {
                warn!(cluster = %self.cluster, operation = %"spool", error = %e, "spool {}: cannot read the directory", self.dir.display());
            }
        }
    }

    /// Spooled segments, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.values().cloned().collect()
    }

    /// Spooled segments as chain pieces (object names), after re-reading the directory.
    pub fn refs(&self) -> Vec<SegmentRef> {
        if let Err(e) = self.rescan() {
            warn!(cluster = %self.cluster, operation = %"spool", error = %e, "spool {}: cannot read the directory", self.dir.display());
        }
        self.entries()
            .into_iter()
            .map(|e| SegmentRef { name: self.object_name(&e.file), first: e.first, last: e.last, hash: e.file[42..].to_string(), size: e.size })
            .collect()
    }

    fn object_name(&self, file: &str) -> String {
        format!("{}/{file}", repo::delta::dir(&self.cluster))
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// The last upload error while uploads fail (None once one succeeds).
    pub fn failing(&self) -> Option<String> {
        self.lock().failing.clone()
    }

    /// The last error writing a segment into the spool, while no write since succeeded.
    pub fn write_failing(&self) -> Option<String> {
        self.lock().write_failing.clone()
    }

    /// Update the gauges (the oldest segment's age moves with the clock).
    pub fn refresh_metrics(&self) {
        let g = self.lock();
        self.metrics.bytes.set(g.bytes as i64);
        self.metrics.segments.set(g.entries.len() as i64);
        let oldest = g.entries.values().map(|e| e.spooled_at).min();
        self.metrics.oldest_age.set(oldest.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs_f64()).unwrap_or(0.0));
    }

    /// Wait until `size` more bytes fit (or the spool is empty). False when `stop` turned true
    /// (or its sender was dropped) first.
    pub async fn reserve(&self, size: u64, stop: &mut watch::Receiver<bool>) -> bool {
        let mut waiting = false;
        let mut since = Instant::now();
        let ok = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let g = self.lock();
                if g.entries.is_empty() || (g.bytes + size <= self.max_bytes && g.entries.len() < MAX_SEGMENTS) {
                    break true;
                }
            }
            if *stop.borrow() || stop.has_changed().is_err() {
                break false;
            }
            if !waiting {
                waiting = true;
                since = Instant::now();
                self.metrics.full.set(1);
                warn!(
                    cluster = %self.cluster,
                    operation = %"spool",
                    "spool {} is full ({} bytes, limit {}): the capture pauses until uploads make room",
                    self.dir.display(),
                    self.bytes(),
                    self.max_bytes
                );
            }
            tokio::select! {
                _ = notified => {}
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => self.rescan_if_due(),
            }
        };
        if waiting {
            self.metrics.full.set(0);
            info!(
                cluster = %self.cluster,
                operation = %"spool",
                duration = since.elapsed().as_secs_f64(),
                "spool {}: {} after {:.1}s",
                self.dir.display(),
                if ok { "room again, the capture goes on" } else { "stopped while full" },
                since.elapsed().as_secs_f64()
            );
        }
        ok
    }

    /// Write one sealed segment (`file` = the last component of its object name) through
    /// [`etcd_data::durable`]: temporary file, fsync, no-clobber rename, fsync of the directory.
    pub async fn add(&self, file: &str, stored: Vec<u8>) -> Result<(), String> {
        let (first, last, _) = parse_segment_file(file).ok_or_else(|| format!("{file}: not a segment name"))?;
        let size = stored.len() as u64;
        let dst = self.dir.join(file);
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let write = || -> std::io::Result<()> {
                let mut f = etcd_data::durable::NewFile::create(&dst)?;
                f.file().write_all(&stored)?;
                f.publish()
            };
            match write() {
                // The name carries the hash of the stored bytes: a segment already there under
                // it is this one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                r => r.map_err(|e| io_err("spool segment", &dst, e)),
            }
        })
        .await
        .map_err(|e| format!("spool task: {e}"))
        .and_then(|r| r)
        .inspect_err(|e| {
            self.lock().write_failing = Some(e.clone());
            self.metrics.write_failing.set(1);
        })?;
        self.metrics.write_failing.set(0);
        {
            let mut g = self.lock();
            g.write_failing = None;
            g.insert(Entry { file: file.to_string(), first, last, size, spooled_at: SystemTime::now() });
        }
        self.refresh_metrics();
        self.changed.notify_waiters();
        Ok(())
    }

    /// Wait until every spooled segment is uploaded; false after `timeout`.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_empty() {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.is_empty(),
                _ = tokio::time::sleep(Duration::from_secs(1)) => self.rescan_if_due(),
            }
        }
    }

    fn oldest(&self) -> Option<Entry> {
        self.lock().entries.values().next().cloned()
    }

    /// Upload spooled segments, oldest first, for as long as the task runs (spawn it and abort
    /// it to stop). Each is deleted from the spool once the repository holds it.
    pub async fn run_uploader(self: Arc<Self>, repo: Arc<Repository>, on_upload: Option<OnUpload>) {
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u64;
        loop {
            self.refresh_metrics();
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(e) = self.oldest() else {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => self.rescan_if_due(),
                }
                continue;
            };
            let name = self.object_name(&e.file);
            let path = self.dir.join(&e.file);
            // Keep the gauges moving while a slow upload runs.
            let r = {
                let upload = upload_one(&repo, &path, &name);
                tokio::pin!(upload);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        r = &mut upload => break r,
                        _ = tick.tick() => self.refresh_metrics(),
                    }
                }
            };
            match r {
                Ok(Some(bytes)) => {
                    if let Err(err) = std::fs::remove_file(&path) {
                        if err.kind() != std::io::ErrorKind::NotFound {
                            warn!(cluster = %self.cluster, operation = %"spool", segment = %name, error = %err, "spool: uploaded {name} but cannot delete {}", path.display());
                        }
                    }
                    // Reported before it leaves the spool: whoever sees the spool empty sees
                    // every upload reported.
                    if let Some(cb) = &on_upload {
                        cb(&Uploaded { name, first_revision: e.first, last_revision: e.last, bytes, spooled_for: e.spooled_at.elapsed().unwrap_or_default() });
                    }
                    let was_failing = {
                        let mut g = self.lock();
                        g.remove(&e.file);
                        g.failing.take().is_some()
                    };
                    if was_failing {
                        info!(
                            cluster = %self.cluster,
                            operation = %"spool",
                            "repository reachable again after {failures} failed upload(s); {} segment(s) left in the spool",
                            self.len()
                        );
                    }
                    failures = 0;
                    backoff = FIRST_BACKOFF;
                    self.refresh_metrics();
                    self.changed.notify_waiters();
                }
                Ok(None) => {
                    // Gone (another agent sharing the directory uploaded it).
                    self.lock().remove(&e.file);
                    self.changed.notify_waiters();
                }
                Err(UploadError::Damaged(why)) => {
                    let q = self.dir.join(format!("damaged-{}", e.file));
                    warn!(
                        cluster = %self.cluster,
                        operation = %"spool",
                        segment = %e.file,
                        error = %why,
                        "spool: a damaged segment moved to {} and skipped: its revisions {}..{} will be a gap in the chain",
                        q.display(),
                        e.first,
                        e.last
                    );
                    let _ = std::fs::rename(&path, &q);
                    self.lock().remove(&e.file);
                    self.changed.notify_waiters();
                }
                Err(UploadError::Store(why)) => {
                    failures += 1;
                    self.metrics.upload_failures.inc();
                    let first = self.lock().failing.replace(why.clone()).is_none();
                    if first || failures.is_power_of_two() {
                        warn!(
                            cluster = %self.cluster,
                            operation = %"spool",
                            segment = %name,
                            error = %why,
                            "spool: upload of {name} failed ({failures} in a row; {} segment(s), {} bytes spooled); retrying in {:.1}s",
                            self.len(),
                            self.bytes(),
                            backoff.as_secs_f64()
                        );
                    }
                    let until = tokio::time::Instant::now() + backoff;
                    while tokio::time::Instant::now() < until {
                        tokio::time::sleep_until(until.min(tokio::time::Instant::now() + Duration::from_secs(1))).await;
                        self.refresh_metrics();
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

enum UploadError {
    Damaged(String),
    Store(String),
}

/// Read, check and upload one spooled file; Ok(None) when it is gone.
async fn upload_one(repo: &Arc<Repository>, path: &Path, name: &str) -> Result<Option<u64>, UploadError> {
    let (p, n, key) = (path.to_path_buf(), name.to_string(), repo.data_key().clone());
    let checked = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, UploadError> {
        let stored = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UploadError::Damaged(io_err("read", &p, e))),
        };
        repo::delta::open_segment(&key, &n, &stored).map_err(|e| UploadError::Damaged(e.to_string()))?;
        Ok(Some(stored))
    })
    .await
    .map_err(|e| UploadError::Store(format!("check task: {e}")))??;
    let Some(stored) = checked else { return Ok(None) };
    let bytes = stored.len() as u64;
    repo.put_new(&ObjPath::from(name), Bytes::from(stored)).await.map_err(|e| UploadError::Store(e.to_string()))?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use repo::delta::{Event, Record, SegmentBuilder};

    fn seg(key: &repo::crypto::MasterKey, first: i64, last: i64, pad: usize) -> (String, Vec<u8>) {
        let mut b = SegmentBuilder::new("c", "base", first);
        let kv = etcd_data::replay::encode_kv(&etcd_data::schema::KeyValue {
            key: b"k".to_vec(),
            create_revision: last,
            mod_revision: last,
            version: 1,
            value: (0..pad).map(|i| (i * 7919 % 251) as u8).collect(),
            lease: 0,
        });
        b.push(&Record { revision: last, time_ms: 1, events: vec![Event { change: etcd_data::replay::Change::Put { kv }, prev_mod_revision: 0 }] }).unwrap();
        let (name, stored, _) = b.seal(key, 1).unwrap();
        (name.rsplit('/').next().unwrap().to_string(), stored)
    }

    async fn local_repo(dir: &Path) -> Arc<Repository> {
        let url = format!("file://{}", dir.join("repo").display());
        let secret = repo::crypto::Secret::passphrase(b"pw-for-tests".to_vec()).unwrap();
        let loc = repo::Location::open(&url, &repo::StoreOptions::default(), true).unwrap();
        let opts = repo::repository::InitOptions { argon2: repo::crypto::Argon2Params { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
        Arc::new(repo::repository::init(loc, &secret, None, &opts).await.unwrap())
    }

    #[tokio::test]
    async fn write_reopen_bound_and_stop() {
        let d = tempfile::tempdir().unwrap();
        let key = repo::crypto::MasterKey::generate();
        let m = SpoolMetrics::default();
        let (f2, b2) = seg(&key, 5, 9, 1000);
        let (f1, b1) = seg(&key, 1, 4, 1000);
        let max = (b1.len() + b2.len() + 100) as u64;
        let s = Spool::open(d.path(), "abc123", "c", max, m.clone()).unwrap();
        assert!(s.dir().ends_with("abc123/c"));
        s.add(&f2, b2.clone()).await.unwrap();
        s.add(&f1, b1.clone()).await.unwrap();
        assert_eq!(s.entries().iter().map(|e| (e.first, e.last)).collect::<Vec<_>>(), vec![(1, 4), (5, 9)]);
        assert_eq!(std::fs::read(s.dir().join(&f2)).unwrap(), b2, "exactly the sealed bytes");
        assert_eq!(m.segments.get(), 2);
        assert_eq!(m.bytes.get() as u64, (b1.len() + b2.len()) as u64);
        // Stale temporary files go; segments stay.
        let tmp = s.dir().join(".tmp-1-1");
        std::fs::write(&tmp, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(old).unwrap();
        std::fs::write(s.dir().join("notes.txt"), b"x").unwrap();
        drop(s);
        let s = Spool::open(d.path(), "abc123", "c", max, m.clone()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(s.len(), 2);
        let refs = s.refs();
        assert_eq!(refs[0].name, format!("clusters/c/deltas/{f1}"));
        assert_eq!(refs[1].hash.len(), 16);
        // Full: a third segment waits; stop ends the wait; removal makes room.
        let (f3, b3) = seg(&key, 10, 12, 1000);
        let (tx, mut rx) = watch::channel(false);
        let s2 = s.clone();
        let size = b3.len() as u64;
        let w = tokio::spawn(async move { s2.reserve(size, &mut rx).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!w.is_finished());
        assert_eq!(m.full.get(), 1);
        tx.send(true).unwrap();
        assert!(!w.await.unwrap());
        assert_eq!(m.full.get(), 0);
        let (_tx, mut rx) = watch::channel(false);
        let s2 = s.clone();
        let w = tokio::spawn(async move { s2.reserve(size, &mut rx).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!w.is_finished());
        std::fs::remove_file(s.dir().join(&f1)).unwrap();
        s.rescan().unwrap();
        s.changed.notify_waiters();
        assert!(tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap());
        s.add(&f3, b3).await.unwrap();
        // An empty spool takes one segment larger than its bound.
        let e = Spool::open(d.path(), "abc123", "other", 10, SpoolMetrics::default()).unwrap();
        let (_tx, mut rx) = watch::channel(false);
        assert!(e.reserve(5000, &mut rx).await);
        assert!(Spool::open(d.path(), "../x", "c", 10, SpoolMetrics::default()).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_in_order_retries_and_quarantines() {
        let d = tempfile::tempdir().unwrap();
        let repo = local_repo(d.path()).await;
        let key = repo.data_key().clone();
        let m = SpoolMetrics::default();
        let s = Spool::open(&d.path().join("spool"), &repo.config.id, "c", 1 << 20, m.clone()).unwrap();
        let segs: Vec<_> = (0..4).map(|i| seg(&key, i * 10 + 1, i * 10 + 10, 200)).collect();
        for (f, b) in &segs[..2] {
            s.add(f, b.clone()).await.unwrap();
        }
        // A damaged file: quarantined, not uploaded.
        let (f, mut b) = segs[2].clone();
        b[30] ^= 1;
        std::fs::write(s.dir().join(&f), &b).unwrap();
        s.rescan().unwrap();
        // The repository unavailable: its root replaced by a file.
        let root = d.path().join("repo");
        let aside = d.path().join("repo-aside");
        std::fs::rename(&root, &aside).unwrap();
        std::fs::write(&root, b"not a directory").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let cb: OnUpload = Arc::new(move |u| seen2.lock().unwrap().push((u.first_revision, u.last_revision)));
        let up = tokio::spawn(s.clone().run_uploader(repo.clone(), Some(cb)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(m.upload_failures.get() >= 1);
        assert!(s.failing().is_some());
        assert_eq!(s.len(), 3, "nothing is deleted before it is uploaded");
        assert!(m.oldest_age.get() >= 1.0);
        std::fs::remove_file(&root).unwrap();
        std::fs::rename(&aside, &root).unwrap();
        let (f4, b4) = segs[3].clone();
        s.add(&f4, b4).await.unwrap();
        assert!(s.wait_empty(Duration::from_secs(60)).await, "{:?}", s.entries());
        up.abort();
        assert_eq!(*seen.lock().unwrap(), vec![(1, 10), (11, 20), (31, 40)]);
        assert!(s.dir().join(format!("damaged-{f}")).exists());
        let listed = repo::delta::list_segments(&repo, "c").await.unwrap();
        assert_eq!(listed.iter().map(|r| (r.first, r.last)).collect::<Vec<_>>(), vec![(1, 10), (11, 20), (31, 40)]);
        for (f, b) in [&segs[0], &segs[1], &segs[3]] {
            assert_eq!(repo.get(&ObjPath::from(format!("clusters/c/deltas/{f}"))).await.unwrap().to_vec(), *b, "the spooled bytes, unchanged");
        }
        assert_eq!((m.segments.get(), m.bytes.get()), (0, 0));
        assert!(s.failing().is_none());
    }
}
